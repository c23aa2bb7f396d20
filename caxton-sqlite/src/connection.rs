//! Opening the file: creating it `0600`, the connection settings, the schema check and
//! migrations; and the transactions every operation runs in.

use std::convert::Infallible;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use caxton_core::{AgentId, BackendError, Clock, DeploymentId, Timestamp};
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::Durability;
use crate::error::{OpenError, SqliteError};
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// Idle read connections kept for reuse.
const IDLE_READERS: usize = 4;

/// Serializes opens within the process: creating the file closes a descriptor of it, and
/// closing any descriptor drops every POSIX lock this process holds on the file, so no
/// other open of the same file may be half-way through SQLite's locking meanwhile.
static OPENING: Mutex<()> = Mutex::new(());

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The one connection of a store that writes.
    Writer,
    /// A connection for reads only (`query_only`), one per concurrent reader.
    Reader,
}

/// The open database: one writer connection behind a mutex (writes of one store are
/// serialized here rather than by SQLite's busy loop) and a pool of read connections
/// (WAL lets them read while the writer writes).
pub(crate) struct Database {
    pub(crate) path: PathBuf,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) clock: std::sync::Arc<dyn Clock>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// Options of [`Database::open`].
#[derive(Debug, Clone)]
pub(crate) struct OpenOptionsSet {
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) allow_shared_file: bool,
    pub(crate) check_integrity: bool,
}

impl Database {
    /// Creates (mode `0600`) or opens the file, checks it is a Caxton registry of a schema
    /// this crate knows, and migrates it to [`SCHEMA_VERSION`].
    pub(crate) fn open(
        path: &Path,
        options: &OpenOptionsSet,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Database, OpenError> {
        let _opening = OPENING.lock().unwrap_or_else(PoisonError::into_inner);
        prepare_file(path, options.allow_shared_file)?;
        let busy = options.busy_timeout;
        let fail = |context: &str, e: rusqlite::Error| open_error(path, busy, context, e);
        let mut writer = connect(path, busy, options.durability, Role::Writer)
            .map_err(|e| fail("opening the file", e))?;
        initialize(&mut writer, path, busy)?;
        if options.check_integrity {
            let problems =
                integrity_problems(&writer, "quick_check").map_err(|e| fail("checking", e))?;
            if !problems.is_empty() {
                return Err(OpenError::Corrupt {
                    path: path.to_owned(),
                    detail: problems.join("; "),
                    source: None,
                });
            }
        }
        Ok(Database {
            path: path.to_owned(),
            busy_timeout: busy,
            durability: options.durability,
            clock,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: it commits when `body` returns
    /// `Ok`, and rolls back (nothing written) on a refusal or a failure. `body` gets the
    /// time to stamp, which never goes back from the last audit entry's.
    pub(crate) fn write<T, E: Refusal>(
        &self,
        context: impl FnOnce() -> String,
        body: impl FnOnce(&Transaction<'_>, Timestamp) -> Result<T, Outcome<E>>,
    ) -> Result<T, E> {
        self.transact(body)
            .map_err(|outcome| self.settle(outcome, context))
    }

    /// [`write`](Self::write) for maintenance, which refuses nothing.
    pub(crate) fn maintain<T>(
        &self,
        body: impl FnOnce(&Transaction<'_>, Timestamp) -> Result<T, Failure>,
    ) -> Result<T, SqliteError> {
        self.transact::<T, Infallible>(|tx, at| body(tx, at).map_err(Outcome::Failed))
            .map_err(|outcome| match outcome {
                Outcome::Failed(failure) => self.failure(failure),
                Outcome::Refused(never) => match never {},
            })
    }

    fn transact<T, E>(
        &self,
        body: impl FnOnce(&Transaction<'_>, Timestamp) -> Result<T, Outcome<E>>,
    ) -> Result<T, Outcome<E>> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = stamp(&tx, self.clock.now())?;
        let value = body(&tx, at)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `body` in one read transaction on a read connection, so that its statements
    /// see one snapshot.
    pub(crate) fn read<T, E: Refusal>(
        &self,
        context: impl FnOnce() -> String,
        body: impl FnOnce(&Transaction<'_>) -> Result<T, Outcome<E>>,
    ) -> Result<T, E> {
        let result = (|| {
            let conn = self.reader()?;
            let value = (|| {
                let tx = conn.unchecked_transaction()?;
                let value = body(&tx)?;
                tx.commit()?;
                Ok(value)
            })();
            self.give_back(conn);
            value
        })();
        result.map_err(|outcome| self.settle(outcome, context))
    }

    /// Runs `PRAGMA integrity_check` (`full`) or `quick_check`; the problems it reports.
    pub(crate) fn check(&self, full: bool) -> Result<(), SqliteError> {
        let pragma = if full {
            "integrity_check"
        } else {
            "quick_check"
        };
        let conn = self.reader().map_err(|e| self.failure(e.into()))?;
        let problems = integrity_problems(&conn, pragma);
        self.give_back(conn);
        let problems = problems.map_err(|e| self.failure(e.into()))?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SqliteError::IntegrityCheck {
                path: self.path.clone(),
                problems,
            })
        }
    }

    fn reader(&self) -> Result<Connection, rusqlite::Error> {
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        connect(&self.path, self.busy_timeout, self.durability, Role::Reader)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }

    fn settle<E: Refusal>(&self, outcome: Outcome<E>, context: impl FnOnce() -> String) -> E {
        match outcome {
            Outcome::Refused(refusal) => refusal,
            Outcome::Failed(failure) => {
                E::backend(BackendError::new(context(), self.failure(failure)))
            }
        }
    }

    /// The error of `failure` on this file.
    pub(crate) fn failure(&self, failure: Failure) -> SqliteError {
        let path = self.path.clone();
        match failure {
            Failure::Sql(source) => SqliteError::from_sqlite(path, self.busy_timeout, source),
            Failure::BadRow {
                record,
                column,
                reason,
            } => SqliteError::BadRow {
                path,
                record,
                column,
                reason,
            },
            Failure::ProductionConflict {
                agent,
                deployment,
                source,
            } => SqliteError::ProductionConflict {
                path,
                agent,
                deployment,
                source,
            },
            Failure::BadEntry {
                agent,
                deployment,
                reason,
            } => SqliteError::BadEntry {
                path,
                agent,
                deployment,
                reason,
            },
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a transaction rolled it back while unwinding, so the connection is
    // still in a clean state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time to stamp on a write: the clock's, but never before the last audit entry, so
/// audit times follow audit order even when clocks of two processes disagree.
fn stamp(tx: &Transaction<'_>, now: Timestamp) -> Result<Timestamp, rusqlite::Error> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT at FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let last = last.map_or(Timestamp::EPOCH, |at| {
        Timestamp::from_millis(u64::try_from(at).unwrap_or(0))
    });
    Ok(now.max(last))
}

/// How a store operation ended other than successfully.
#[derive(Debug)]
pub(crate) enum Outcome<E> {
    /// The operation's own refusal (not found, illegal, …); nothing was written.
    Refused(E),
    /// The database failed.
    Failed(Failure),
}

impl<E> From<rusqlite::Error> for Outcome<E> {
    fn from(e: rusqlite::Error) -> Self {
        Outcome::Failed(Failure::Sql(e))
    }
}

impl<E> From<Failure> for Outcome<E> {
    fn from(failure: Failure) -> Self {
        Outcome::Failed(failure)
    }
}

/// A failure of the database, before the path is attached ([`Database::failure`]).
#[derive(Debug)]
pub(crate) enum Failure {
    Sql(rusqlite::Error),
    BadRow {
        record: String,
        column: &'static str,
        reason: String,
    },
    ProductionConflict {
        agent: AgentId,
        deployment: DeploymentId,
        source: rusqlite::Error,
    },
    BadEntry {
        agent: AgentId,
        deployment: DeploymentId,
        reason: String,
    },
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

/// The error types of the store operations: each wraps a backend failure its own way.
pub(crate) trait Refusal: Sized {
    /// The error for a failure of the database.
    fn backend(err: BackendError) -> Self;
}

macro_rules! refusal_from_backend {
    ($($error:ty),*) => {$(
        impl Refusal for $error {
            fn backend(err: BackendError) -> Self {
                err.into()
            }
        }
    )*};
}

refusal_from_backend!(
    caxton_core::store::CreateError,
    caxton_core::store::GetError,
    caxton_core::store::ListError,
    caxton_core::store::TransitionError,
    caxton_core::store::PromoteError,
    caxton_core::store::RollbackError,
    caxton_core::store::DeleteError
);

impl Refusal for caxton_core::ArtifactError {
    fn backend(err: BackendError) -> Self {
        caxton_core::ArtifactError::Backend(err)
    }
}

impl Refusal for caxton_core::JournalError {
    fn backend(err: BackendError) -> Self {
        caxton_core::JournalError::Backend(err)
    }
}

/// Creates the file with mode `0600` when it does not exist, so SQLite never creates it
/// with its default `0644`; refuses an existing file that group or others may access.
fn prepare_file(path: &Path, allow_shared_file: bool) -> Result<(), OpenError> {
    let file_error = |source: io::Error| OpenError::File {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            if !meta.is_file() {
                return Err(file_error(io::Error::other("it is not a regular file")));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && !allow_shared_file {
                return Err(OpenError::SharedFile {
                    path: path.to_owned(),
                    mode,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // `create_new`: if another process creates it first, that one is opened below.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    prepare_file(path, allow_shared_file)
                }
                Err(e) => Err(file_error(e)),
            }
        }
        Err(e) => Err(file_error(e)),
    }
}

/// A connection with the registry's settings: a busy timeout, foreign keys on, schema
/// code untrusted, `synchronous` as `durability` says; readers are `query_only`.
pub(crate) fn connect(
    path: &Path,
    busy_timeout: Duration,
    durability: Durability,
    role: Role,
) -> Result<Connection, rusqlite::Error> {
    // No SQLITE_OPEN_CREATE: the file was created 0600 by `prepare_file`.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "trusted_schema", false)?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Deferred => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // Every statement of the store fits, so none is prepared twice.
    conn.set_prepared_statement_cache_capacity(64);
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

/// Checks the file is a Caxton registry this crate can read, turns on WAL and applies the
/// missing migrations, all before any operation runs.
fn initialize(conn: &mut Connection, path: &Path, busy: Duration) -> Result<(), OpenError> {
    let fail = |context: &str, e: rusqlite::Error| open_error(path, busy, context, e);
    if conn.is_readonly("main").map_err(|e| fail("opening", e))? {
        return Err(OpenError::ReadOnly {
            path: path.to_owned(),
            detail: "the file is write-protected".into(),
            source: None,
        });
    }
    let (application_id, version) =
        header(conn).map_err(|e| fail("reading the schema version", e))?;
    check_header(conn, path, busy, application_id, version)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| fail("turning on write-ahead logging", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::ReadOnly {
            path: path.to_owned(),
            detail: format!("SQLite kept journal mode `{mode}` instead of `wal`"),
            source: None,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // Migrate under the write lock; another process may have migrated meanwhile.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| fail("locking the file to migrate it", e))?;
    let (application_id, version) = header(&tx).map_err(|e| fail("reading the schema", e))?;
    check_header(&tx, path, busy, application_id, version)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
        tx.execute_batch(migration.sql).map_err(|e| {
            fail(
                &format!(
                    "applying migration {} ({})",
                    migration.version, migration.name
                ),
                e,
            )
        })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
        .and_then(|()| tx.commit())
        .map_err(|e| fail("recording the schema version", e))
}

fn header(conn: &Connection) -> Result<(i32, i64), rusqlite::Error> {
    let application_id = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok((application_id, version))
}

fn check_header(
    conn: &Connection,
    path: &Path,
    busy: Duration,
    application_id: i32,
    version: i64,
) -> Result<(), OpenError> {
    let foreign = |what: String| OpenError::Foreign {
        path: path.to_owned(),
        what,
    };
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(foreign(format!(
            "its application id is {application_id:#010x}, a registry's is {APPLICATION_ID:#010x}"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if application_id == 0 {
        // Not marked as a registry: only an empty database may become one.
        if version != 0 {
            return Err(foreign(format!(
                "it has schema version {version} but no Caxton application id"
            )));
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|e| open_error(path, busy, "reading the schema", e))?;
        if tables > 0 {
            return Err(foreign(format!(
                "it is not empty (schema objects: {tables}) and has no Caxton application id"
            )));
        }
    } else if version < 0 {
        return Err(foreign(format!("its schema version is {version}")));
    }
    Ok(())
}

/// What `PRAGMA integrity_check` or `quick_check` reports; empty when the file is sound.
fn integrity_problems(conn: &Connection, pragma: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}(100)"))?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

/// The [`OpenError`] for SQLite's `source` while `context`.
fn open_error(
    path: &Path,
    busy_timeout: Duration,
    context: &str,
    source: rusqlite::Error,
) -> OpenError {
    let path = path.to_owned();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => OpenError::NotADatabase { path, source },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path,
            detail: source.to_string(),
            source: Some(source),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OpenError::Locked {
            path,
            busy_timeout,
            source,
        },
        Some(ErrorCode::ReadOnly) => {
            let detail = match &source {
                rusqlite::Error::SqliteFailure(e, _)
                    if e.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY =>
                {
                    "its directory is write-protected, so SQLite cannot create the -wal and \
                     -shm files beside it"
                        .to_owned()
                }
                _ => format!("{context}: {source}"),
            };
            OpenError::ReadOnly {
                path,
                detail,
                source: Some(source),
            }
        }
        _ => OpenError::Sqlite {
            path,
            context: context.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_use_wal_and_the_durability_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let options = OpenOptionsSet {
            busy_timeout: Duration::from_secs(1),
            durability: Durability::Full,
            allow_shared_file: false,
            check_integrity: true,
        };
        let db = Database::open(
            &path,
            &options,
            std::sync::Arc::new(caxton_core::SystemClock),
        )
        .unwrap();
        let writer = lock(&db.writer);
        let mode: String = writer
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        for (durability, level) in [(Durability::Full, 2), (Durability::Deferred, 1)] {
            for role in [Role::Writer, Role::Reader] {
                let conn = connect(&path, Duration::from_secs(1), durability, role).unwrap();
                let synchronous: i64 = conn
                    .pragma_query_value(None, "synchronous", |r| r.get(0))
                    .unwrap();
                assert_eq!(synchronous, level, "{durability:?} {role:?}");
                let foreign_keys: bool = conn
                    .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                    .unwrap();
                assert!(foreign_keys);
                let query_only: bool = conn
                    .pragma_query_value(None, "query_only", |r| r.get(0))
                    .unwrap();
                assert_eq!(query_only, role == Role::Reader);
            }
        }
        let ids: (i32, i64) = header(&writer).unwrap();
        assert_eq!(ids, (APPLICATION_ID, SCHEMA_VERSION));
    }

    #[test]
    fn a_reader_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        prepare_file(&path, false).unwrap();
        let reader = connect(
            &path,
            Duration::from_secs(1),
            Durability::Full,
            Role::Reader,
        )
        .unwrap();
        assert!(reader.execute_batch("CREATE TABLE t (x)").is_err());
    }
}
