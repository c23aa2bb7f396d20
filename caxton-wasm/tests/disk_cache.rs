//! The disk cache against someone who can write files where it looks: artifacts are
//! authenticated with the host's key, links are not followed, an unsafe folder is refused,
//! and a crash's leftovers are cleaned up.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use caxton_core::Digest;
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{
    AgentEngine, DiskCacheError, DiskCacheKey, EngineConfig, EngineError, EngineStats,
};
use common::*;
use sha2::{Digest as _, Sha256};

/// Offsets in the cache file's header that anyone can read off the format's documentation.
const SOURCE: std::ops::Range<usize> = 12..44;
const TAG: std::ops::Range<usize> = 84..116;
const HEADER_LEN: usize = 116;

/// One key for every engine of a test run, as one host would have: a forger's file fails
/// for want of the key, not because two engines disagree on it.
fn key() -> DiskCacheKey {
    static KEY: std::sync::OnceLock<DiskCacheKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DiskCacheKey::ephemeral().unwrap())
        .clone()
}

fn disk_engine(dir: &Path) -> AgentEngine {
    disk_engine_with(dir, key())
}

fn disk_engine_with(dir: &Path, key: DiskCacheKey) -> AgentEngine {
    engine_with(EngineConfig::default().disk_cache(dir, key))
}

fn try_disk_engine(dir: &Path) -> Result<AgentEngine, caxton_wasm::EngineError> {
    AgentEngine::new(EngineConfig::default().on_demand().disk_cache(dir, key()))
}

/// The cache file `engine` wrote for `module`.
fn artifact_of(engine: &AgentEngine, module: &[u8]) -> (PathBuf, Vec<u8>) {
    engine.compile(module).unwrap();
    let path = engine.disk_cache_path(&Digest::of(module)).unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, bytes)
}

/// Rewrites the checksum field as the SHA-256 of the body: all a forger without the key
/// can compute.
fn recompute_checksum(file: &mut [u8]) {
    let checksum = Sha256::digest(&file[HEADER_LEN..]);
    file[TAG].copy_from_slice(&checksum);
}

fn rejected_once(stats: EngineStats) -> bool {
    (stats.disk_hits, stats.disk_rejects, stats.compiles) == (0, 1, 1)
}

#[test]
fn another_modules_artifact_relabelled_as_this_one_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = Fixture::Counter.wasm();
    let m2 = Fixture::Echo.wasm();
    let writer = disk_engine(dir.path());
    let (_, mut forged) = artifact_of(&writer, &m2);
    // A genuine artifact of M2 made to claim M1, stored under M1's name.
    forged[SOURCE].copy_from_slice(Digest::of(&m1).as_bytes());
    recompute_checksum(&mut forged);
    let m1_path = writer.disk_cache_path(&Digest::of(&m1)).unwrap();
    fs::write(&m1_path, &forged).unwrap();

    let reader = disk_engine(dir.path());
    let agent = reader.compile(&m1).unwrap();
    // M1 was compiled and answers as M1 (the counter), not as M2 (the echo).
    let mut instance = agent.instantiate(&setup()).unwrap();
    assert_eq!(instance.handle(b"x").unwrap().bytes, b"1");
    assert!(rejected_once(reader.stats()), "{:?}", reader.stats());
}

#[test]
fn another_modules_artifact_copied_under_this_digest_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = Fixture::Counter.wasm();
    let m2 = Fixture::Echo.wasm();
    let writer = disk_engine(dir.path());
    let (_, genuine) = artifact_of(&writer, &m2);
    fs::write(writer.disk_cache_path(&Digest::of(&m1)).unwrap(), genuine).unwrap();

    let reader = disk_engine(dir.path());
    let mut instance = reader.compile(&m1).unwrap().instantiate(&setup()).unwrap();
    assert_eq!(instance.handle(b"x").unwrap().bytes, b"1");
    assert!(rejected_once(reader.stats()), "{:?}", reader.stats());
}

#[test]
fn an_artifact_with_a_forged_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = Fixture::Counter.wasm();
    let writer = disk_engine(dir.path());
    let (path, mut forged) = artifact_of(&writer, &m1);
    // The header is M1's own and looks valid; the body is another module's compiled code
    // of the same engine, with the length and checksum made to match.
    let other_dir = tempfile::tempdir().unwrap();
    let other = disk_engine(other_dir.path());
    let (_, m2_file) = artifact_of(&other, &Fixture::Echo.wasm());
    forged.truncate(HEADER_LEN);
    forged.extend_from_slice(&m2_file[HEADER_LEN..]);
    let body_len = (forged.len() - HEADER_LEN) as u64;
    forged[76..84].copy_from_slice(&body_len.to_le_bytes());
    recompute_checksum(&mut forged);
    fs::write(&path, &forged).unwrap();

    let reader = disk_engine(dir.path());
    let mut instance = reader.compile(&m1).unwrap().instantiate(&setup()).unwrap();
    assert_eq!(instance.handle(b"x").unwrap().bytes, b"1");
    assert!(rejected_once(reader.stats()), "{:?}", reader.stats());
}

#[test]
fn a_symlink_in_the_cache_is_not_followed() {
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let module = Fixture::Counter.wasm();
    // A genuine, valid artifact outside the cache, and a link to it in the cache.
    let (target, original) = artifact_of(&disk_engine(elsewhere.path()), &module);
    let reader = disk_engine(cache.path());
    let link = reader.disk_cache_path(&Digest::of(&module)).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();

    reader.compile(&module).unwrap();
    assert!(rejected_once(reader.stats()), "{:?}", reader.stats());
    // The link was replaced by a file of the cache's own; its target was not touched.
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
    assert_eq!(fs::read(&target).unwrap(), original);
}

#[test]
fn a_group_or_world_writable_cache_directory_is_refused() {
    for mode in [0o770, 0o707, 0o777] {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        let err = try_disk_engine(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().display().to_string()) && err.contains(&format!("{mode:04o}")),
            "{mode:o}: {err}"
        );
    }
}

#[test]
fn a_cache_directory_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = 65534;
    if std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).is_err() {
        eprintln!("skipped: only root can give a folder to another user");
        return;
    }
    assert_eq!(fs::metadata(dir.path()).unwrap().uid(), nobody);
    let err = try_disk_engine(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("65534"),
        "{err}"
    );
}

#[test]
fn a_leftover_temporary_file_is_removed_when_the_cache_opens() {
    let dir = tempfile::tempdir().unwrap();
    // What a writer that crashed between creating and renaming its file leaves behind.
    let leftover = dir.path().join(".cxart-Xy12ab");
    fs::write(&leftover, b"half an artifact").unwrap();
    let unrelated = dir.path().join("notes.txt");
    fs::write(&unrelated, b"not the cache's").unwrap();

    let _engine = disk_engine(dir.path());
    assert!(!leftover.exists());
    assert!(unrelated.exists());
}

#[test]
fn a_temporary_file_still_being_written_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let writing = dir.path().join(".cxart-Zz34cd");
    let file = fs::File::create(&writing).unwrap();
    // A live writer holds a lock on its file.
    file.lock().unwrap();
    let _engine = disk_engine(dir.path());
    assert!(writing.exists());
}

#[test]
fn the_key_file_is_created_0600_and_read_back_by_the_next_engine() {
    let keys = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let path = keys.path().join("caxton").join("cache.key");
    let module = Fixture::Echo.wasm();

    let first = DiskCacheKey::load_or_create(&path).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.len(), DiskCacheKey::LEN as u64);
    disk_engine_with(cache.path(), first)
        .compile(&module)
        .unwrap();

    // A restarted host loads the same key, and so the artifact.
    let again = disk_engine_with(cache.path(), DiskCacheKey::load_or_create(&path).unwrap());
    again.compile(&module).unwrap();
    assert_eq!((again.stats().disk_hits, again.stats().compiles), (1, 0));
}

#[test]
fn an_artifact_written_under_another_key_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let module = Fixture::Echo.wasm();
    disk_engine(cache.path()).compile(&module).unwrap();
    let other = disk_engine_with(cache.path(), DiskCacheKey::ephemeral().unwrap());
    other.compile(&module).unwrap();
    assert!(rejected_once(other.stats()), "{:?}", other.stats());
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("cache.key");
    DiskCacheKey::load_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = DiskCacheKey::load_or_create(&path).unwrap_err();
    assert!(
        matches!(&err, DiskCacheError::KeyExposed { path: p, mode: 0o644 } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("0644"), "{err}");
}

#[test]
fn a_key_file_that_is_a_link_or_the_wrong_length_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let real = keys.path().join("real.key");
    DiskCacheKey::load_or_create(&real).unwrap();
    let link = keys.path().join("link.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(matches!(
        DiskCacheKey::load_or_create(&link),
        Err(DiskCacheError::KeyNotAFile { .. })
    ));

    let short = keys.path().join("short.key");
    fs::write(&short, b"too short").unwrap();
    fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        DiskCacheKey::load_or_create(&short),
        Err(DiskCacheError::KeyLength { len: 9, .. })
    ));
}

#[test]
fn a_key_kept_inside_the_cache_folder_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let key = DiskCacheKey::load_or_create(cache.path().join("cache.key")).unwrap();
    let err = AgentEngine::new(
        EngineConfig::default()
            .on_demand()
            .disk_cache(cache.path(), key),
    )
    .unwrap_err();
    assert!(
        matches!(&err, EngineError::DiskCache(inner) if matches!(**inner, DiskCacheError::KeyInsideCache { .. })),
        "{err}"
    );
}

#[test]
fn a_missing_cache_folder_is_created_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("a").join("cache");
    let _engine = disk_engine(&dir);
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
}
