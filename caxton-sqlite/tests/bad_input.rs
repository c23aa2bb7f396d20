//! Bad files and bad conditions: each is a clear error naming the file and what is wrong
//! with it, never a panic, and never a half-written state.

mod common;

use std::error::Error;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caxton_core::{
    ArtifactError, ArtifactKind, ArtifactStore, DeploymentStore, Digest, store::PromoteError,
};
use caxton_sqlite::{OpenError, SCHEMA_VERSION, SqliteError, SqliteStore};
use common::{agent, contents, running};
use futures::executor::block_on;
use rusqlite::Connection;

/// A registry with a few deployments and a large artifact, closed.
fn populated(path: &Path) {
    let store = SqliteStore::open(path).unwrap();
    block_on(async {
        let a = agent("processor");
        for i in 0..20 {
            running(&store, &a, &format!("d{i}")).await;
        }
        store
            .promote(&a, &common::dep("d3"), "first")
            .await
            .unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        store.put(ArtifactKind::Module, &big).await.unwrap();
    });
}

fn text(err: &OpenError) -> String {
    err.to_string()
}

#[test]
fn a_new_registry_file_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    block_on(running(&store, &agent("a"), "d")); // writes the -wal and -shm files too
    for file in [path.clone(), dir.path().join("registry.db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
}

#[test]
fn a_file_others_can_read_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    drop(SqliteStore::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = contents(&path);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, OpenError::SharedFile { mode: 0o644, .. }),
        "{err:?}"
    );
    assert_eq!(
        text(&err),
        format!(
            "the registry file {} has mode 0644: group or others may access it; `chmod 600` \
             it, or open it with allow_shared_file(true)",
            path.display()
        )
    );
    assert_eq!(contents(&path), before);
    SqliteStore::builder(&path)
        .allow_shared_file(true)
        .open()
        .unwrap();
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let junk: Vec<u8> = b"not a database, just notes\n".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        text(&err),
        format!(
            "the registry file {} is not an SQLite database: file is not a database",
            path.display()
        )
    );
    assert!(err.source().is_some(), "keeps SQLite's error");
    assert_eq!(contents(&path), junk, "the file is left as it was");
}

#[test]
fn a_truncated_registry_is_refused_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    populated(&path);
    let full = contents(&path);
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        text(&err),
        format!(
            "the registry file {} is damaged (truncated or corrupt): database disk image is \
             malformed",
            path.display()
        )
    );
    assert_eq!(contents(&path), &full[..full.len() / 2], "nothing written");
}

#[test]
fn a_damaged_page_is_found_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    populated(&path);
    let mut bytes = contents(&path);
    // Scribble over the middle pages (the artifact's overflow pages and the tables').
    let page = 4096;
    let half = bytes.len() / 2;
    for b in &mut bytes[2 * page..half] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteStore::builder(&path)
        .check_integrity_on_open(true)
        .open()
        .unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    let message = text(&err);
    assert!(
        message.starts_with(&format!(
            "the registry file {} is damaged (truncated or corrupt): ",
            path.display()
        )),
        "{message}"
    );
    // Opened without the check, every operation still answers with an error, not a panic.
    if let Ok(store) = SqliteStore::open(&path) {
        let listed = block_on(store.list(&agent("processor"), &Default::default()));
        let checked = store.check_integrity();
        assert!(listed.is_err() || checked.is_err());
        if let Err(e) = checked {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }
}

#[test]
fn a_registry_from_a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    populated(&path);
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let before = contents(&path);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerSchema { found, supported, .. }
            if found == newer && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(
        text(&err),
        format!(
            "the registry file {} has schema version {newer}, newer than the {SCHEMA_VERSION} \
             this version of caxton-sqlite knows; use a newer Caxton to open it",
            path.display()
        )
    );
    assert_eq!(contents(&path), before, "not downgraded, not touched");
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, newer);
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .unwrap();
    drop(other);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    assert_eq!(
        text(&err),
        format!(
            "the registry file {} is an SQLite database, but not a Caxton registry: it is \
             not empty (schema objects: 1) and has no Caxton application id",
            path.display()
        )
    );
}

#[test]
fn a_missing_directory_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("registry.db");
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::File { .. }), "{err:?}");
    assert_eq!(
        text(&err),
        format!(
            "cannot create or open the registry file {} for reading and writing: No such \
             file or directory (os error 2)",
            path.display()
        )
    );
}

/// Whether this process runs as root, whom permissions do not stop.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The read-only cases, run in `dir` by a user that permissions apply to.
fn read_only_cases(dir: &Path) {
    // A new registry in a directory nobody may write.
    let locked_dir = dir.join("read-only");
    std::fs::create_dir(&locked_dir).unwrap();
    std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let path = locked_dir.join("registry.db");
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::File { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create or open the registry file {} for reading and writing: Permission \
             denied (os error 13)",
            path.display()
        )
    );
    assert!(!path.exists());

    // An existing registry whose directory became read-only: SQLite cannot create its
    // -wal and -shm files beside it.
    let was_writable = dir.join("was-writable");
    std::fs::create_dir(&was_writable).unwrap();
    let path = was_writable.join("registry.db");
    populated(&path);
    let before = contents(&path);
    std::fs::set_permissions(&was_writable, std::fs::Permissions::from_mode(0o555)).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the registry file {} cannot be written: its directory is write-protected, so \
             SQLite cannot create the -wal and -shm files beside it",
            path.display()
        )
    );
    assert_eq!(contents(&path), before);

    // A registry file without write permission.
    std::fs::set_permissions(&was_writable, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the registry file {} cannot be written: the file is write-protected",
            path.display()
        )
    );
}

const UNPRIVILEGED_DIR: &str = "CAXTON_SQLITE_TEST_DIR";

#[test]
fn read_only_directories_and_files_are_reported_with_the_path() {
    if common::role().as_deref() == Some("unprivileged") {
        let dir = PathBuf::from(std::env::var(UNPRIVILEGED_DIR).unwrap());
        read_only_cases(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !is_root() {
        read_only_cases(dir.path());
        return;
    }
    // Root writes anywhere: run the cases as `nobody` in a child process.
    const NOBODY: u32 = 65_534;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mut child = common::child(
        "read_only_directories_and_files_are_reported_with_the_path",
        "unprivileged",
    );
    std::os::unix::process::CommandExt::uid(&mut child, NOBODY);
    std::os::unix::process::CommandExt::gid(&mut child, NOBODY);
    child.env(UNPRIVILEGED_DIR, dir.path());
    match child.output() {
        Ok(out) => assert!(
            out.status.success(),
            "the unprivileged child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        // The test binary is not reachable by `nobody` (a private checkout): run what
        // root can, and say so.
        Err(e) => eprintln!("read-only cases not run as nobody ({e}); root ignores permissions"),
    }
}

#[test]
fn a_locked_registry_fails_the_open_after_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let holder = Connection::open(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let err = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the registry file {} is locked by another connection or process (gave up after \
             the 200ms busy timeout)",
            path.display()
        )
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    SqliteStore::open(&path).expect("opens once the lock is gone");
}

#[test]
fn a_write_on_a_locked_registry_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(150))
        .open()
        .unwrap();
    let a = agent("processor");
    let (v1, v2) = block_on(async {
        let v1 = running(&store, &a, "v1").await;
        let v2 = running(&store, &a, "v2").await;
        store.promote(&a, &v1.id, "first").await.unwrap();
        (v1, v2)
    });
    let history_before = block_on(store.history(&a, &v2.id)).unwrap();

    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = block_on(store.promote(&a, &v2.id, "second")).unwrap_err();
    assert!(matches!(err, PromoteError::Backend(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "deployment store failed: promoting deployment `v2` of agent `processor`: the \
             registry file {} is locked by another connection or process (gave up after the \
             150ms busy timeout)",
            path.display()
        )
    );
    let cause = err
        .source()
        .and_then(|backend| backend.source())
        .and_then(|e| e.downcast_ref::<SqliteError>());
    assert!(
        matches!(cause, Some(SqliteError::Locked { .. })),
        "{cause:?}"
    );
    // Reads go on while the lock is held (WAL).
    let production = block_on(store.production(&a)).unwrap().unwrap();
    assert_eq!(production.id, v1.id);
    holder.execute_batch("ROLLBACK").unwrap();

    assert_eq!(block_on(store.history(&a, &v2.id)).unwrap(), history_before);
    assert_eq!(
        block_on(store.production(&a)).unwrap().map(|d| d.id),
        Some(v1.id.clone())
    );
    block_on(store.promote(&a, &v2.id, "second")).expect("works once the lock is gone");
}

#[test]
fn a_corrupt_artifact_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    let bytes = b"\0asm\x01\0\0\0 module".to_vec();
    let stored = block_on(store.put(ArtifactKind::Module, &bytes)).unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE artifacts SET bytes = ?1 WHERE digest = ?2",
        rusqlite::params![
            b"\0asm\x01\0\0\0 modulE".to_vec(),
            stored.digest.to_string()
        ],
    )
    .unwrap();
    let err = block_on(ArtifactStore::get(&store, &stored.digest)).unwrap_err();
    let actual = Digest::of(b"\0asm\x01\0\0\0 modulE");
    assert_eq!(
        err,
        ArtifactError::Corrupt {
            digest: stored.digest,
            actual
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "artifact {} is corrupt: its bytes hash to {actual}",
            stored.digest
        )
    );
}

#[test]
fn an_artifact_over_the_limit_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("registry.db"))
        .max_artifact_size(4)
        .open()
        .unwrap();
    let err = block_on(store.put(ArtifactKind::Module, b"12345")).unwrap_err();
    assert_eq!(err, ArtifactError::TooLarge { size: 5, limit: 4 });
    assert!(!block_on(store.contains(&Digest::of(b"12345"))).unwrap());
}
