//! The errors of opening a registry ([`OpenError`]) and of the database under a store
//! operation ([`SqliteError`], carried inside the operation's `BackendError`).

use std::path::PathBuf;
use std::time::Duration;

use caxton_core::{AgentId, DeploymentId};

/// Why a registry file could not be opened. Nothing was written to the file.
///
/// Every variant names the file; the text says what is wrong with it and, where there is
/// one, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be created or opened for reading and writing (a missing or
    /// read-only directory, a file without write permission, a path that is a directory).
    #[error("cannot create or open the registry file {path} for reading and writing: {source}")]
    File {
        /// The registry file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file exists and other users may read or write it; the registry refuses to use it
    /// unless [`allow_shared_file`](crate::SqliteStoreBuilder::allow_shared_file) is set.
    #[error(
        "the registry file {path} has mode {mode:04o}: group or others may access it; \
         `chmod 600` it, or open it with allow_shared_file(true)"
    )]
    SharedFile {
        /// The registry file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an SQLite database at all.
    #[error("the registry file {path} is not an SQLite database: {source}")]
    NotADatabase {
        /// The registry file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is an SQLite database of another application.
    #[error("the registry file {path} is an SQLite database, but not a Caxton registry: {what}")]
    Foreign {
        /// The registry file.
        path: PathBuf,
        /// What gave it away.
        what: String,
    },
    /// The file is damaged: truncated, or with pages that do not read back as written.
    #[error("the registry file {path} is damaged (truncated or corrupt): {detail}")]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// What SQLite found.
        detail: String,
        /// SQLite's error, when it reported one (a failed integrity check reports none).
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// The file was written by a newer Caxton whose schema this version does not know.
    /// It is left untouched: opening it would silently downgrade it.
    #[error(
        "the registry file {path} has schema version {found}, newer than the {supported} \
         this version of caxton-sqlite knows; use a newer Caxton to open it"
    )]
    NewerSchema {
        /// The registry file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this crate knows.
        supported: i64,
    },
    /// Another connection held the database locked for longer than the busy timeout.
    #[error(
        "the registry file {path} is locked by another connection or process \
         (gave up after the {busy_timeout:?} busy timeout)"
    )]
    Locked {
        /// The registry file.
        path: PathBuf,
        /// How long the open waited.
        busy_timeout: Duration,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file or its directory is write-protected: SQLite could open the file only for
    /// reading, and the registry writes it (and its `-wal` and `-shm` files beside it).
    #[error("the registry file {path} cannot be written: {detail}")]
    ReadOnly {
        /// The registry file.
        path: PathBuf,
        /// What is write-protected.
        detail: String,
        /// SQLite's error, when it reported one.
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// Any other failure of SQLite while opening or migrating the file.
    #[error("cannot open the registry file {path}: {context}: {source}")]
    Sqlite {
        /// The registry file.
        path: PathBuf,
        /// The step that failed.
        context: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

/// A failure of the database under a store operation. It is the source of the
/// operation's [`BackendError`](caxton_core::BackendError), so a caller can downcast to it:
///
/// ```
/// # use caxton_core::store::PromoteError;
/// use caxton_sqlite::SqliteError;
/// # fn handle(err: &PromoteError) {
/// use std::error::Error;
/// let cause = err.source().and_then(|e| e.source()).and_then(|e| e.downcast_ref::<SqliteError>());
/// if let Some(SqliteError::Locked { .. }) = cause {
///     // worth a retry
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// Another connection or process held the write lock for longer than the busy
    /// timeout. Nothing changed; the operation may be retried.
    #[error(
        "the registry file {path} is locked by another connection or process \
         (gave up after the {busy_timeout:?} busy timeout)"
    )]
    Locked {
        /// The registry file.
        path: PathBuf,
        /// How long the operation waited.
        busy_timeout: Duration,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database refused a second production for an agent (its partial unique index).
    /// Nothing changed.
    #[error(
        "the registry file {path} refused to make deployment `{deployment}` a second \
         production of agent `{agent}`"
    )]
    ProductionConflict {
        /// The registry file.
        path: PathBuf,
        /// The agent.
        agent: AgentId,
        /// The deployment that was to become production.
        deployment: DeploymentId,
        /// The constraint violation.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored deployment, audit entry or rollout journal entry cannot be read back: a
    /// column holds what this version of Caxton cannot decode.
    #[error("the registry file {path} holds an unreadable {column} for `{record}`: {reason}")]
    BadRow {
        /// The registry file.
        path: PathBuf,
        /// The row: a deployment id, an audit sequence number or a rollout journal entry.
        record: String,
        /// The column.
        column: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A rollout journal entry was refused because it would not read back as it was
    /// given (a percentage that is not a finite number). Nothing was written.
    #[error(
        "the registry file {path} refused a rollout journal entry of deployment \
         `{deployment}` of agent `{agent}`: {reason}"
    )]
    BadEntry {
        /// The registry file.
        path: PathBuf,
        /// The agent.
        agent: AgentId,
        /// The rollout's candidate.
        deployment: DeploymentId,
        /// What is wrong with the entry.
        reason: String,
    },
    /// An integrity check of the file found problems.
    #[error("the registry file {path} failed its integrity check: {}", problems.join("; "))]
    IntegrityCheck {
        /// The registry file.
        path: PathBuf,
        /// What the check reported (at most the first hundred problems).
        problems: Vec<String>,
    },
    /// The file is damaged (SQLite reports corruption).
    #[error("the registry file {path} is damaged: {source}")]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Any other failure of SQLite (a full disk, an I/O error).
    #[error("the registry file {path}: {source}")]
    Sqlite {
        /// The registry file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

impl SqliteError {
    /// Classifies an error of SQLite on the registry at `path`.
    pub(crate) fn from_sqlite(
        path: PathBuf,
        busy_timeout: Duration,
        source: rusqlite::Error,
    ) -> Self {
        use rusqlite::ErrorCode;
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqliteError::Locked {
                path,
                busy_timeout,
                source,
            },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                SqliteError::Corrupt { path, source }
            }
            _ => SqliteError::Sqlite { path, source },
        }
    }
}
