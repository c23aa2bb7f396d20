//! The embedded durable registry of Caxton: deployments, their audit history, the
//! artifacts they run and the journal of their rollouts, in one SQLite file that survives
//! a crash (even `SIGKILL`) at any moment.
//!
//! [`SqliteStore`] implements [`DeploymentStore`] and [`ArtifactStore`] with exactly the
//! semantics of [`MemoryStore`](caxton_core::MemoryStore), and [`RolloutJournal`] with
//! those of [`MemoryJournal`](caxton_core::MemoryJournal) (it passes the same conformance
//! suites; [the rollout journal](#the-rollout-journal) says where it is stricter), and
//! keeps their rules in the database itself:
//!
//! - at most one production per agent is a partial unique index of the database, and the
//!   production being running and not deleted is a `CHECK`;
//! - every change and its audit entry are one transaction (`BEGIN IMMEDIATE`, WAL,
//!   `synchronous = FULL`): after a crash the file holds each operation whole or not at
//!   all, and a deployment's state is always the one its audit trail leads to;
//! - artifacts are addressed by their SHA-256, stored once, and checked on every read;
//! - at most one open rollout per agent is a partial unique index, and triggers keep each
//!   rollout's journal in order.
//!
//! The schema is versioned (`PRAGMA user_version`) and migrated on open; a file written
//! by a newer schema is refused, never downgraded. The file is created with mode `0600`.
//!
//! # Example
//!
//! ```
//! use caxton_core::{
//!     AgentId, ArtifactKind, ArtifactStore, CodeLayer, DeploymentStore, LifecycleEvent,
//!     ModelLayer, NewDeployment, PromptLayer, ToolsLayer, VersionTuple,
//! };
//! use caxton_sqlite::SqliteStore;
//!
//! # futures::executor::block_on(async {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("registry.db");
//! let store = SqliteStore::open(&path)?;
//!
//! // Store the module, then record a deployment of it and walk it to running.
//! let module = b"\0asm\x01\0\0\0";
//! store.put(ArtifactKind::Module, module).await?;
//! let version = VersionTuple::new(
//!     CodeLayer::from_module(module),
//!     ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
//!     PromptLayer::from_prompt("You process orders.", &[]),
//!     ToolsLayer::from_json("[]")?,
//! );
//! let agent = AgentId::new("processor")?;
//! let v1 = store.create(NewDeployment::builder(agent.clone(), version).build()).await?;
//! for event in [
//!     LifecycleEvent::BeginValidation,
//!     LifecycleEvent::ValidationPassed,
//!     LifecycleEvent::WarmUpPassed,
//! ] {
//!     store.transition(&agent, &v1.id, event, "pipeline").await?;
//! }
//! store.promote_if_none(&agent, &v1.id, "first deployment").await?;
//! drop(store);
//!
//! // Another process, or this one after a crash, finds it all where it was.
//! let store = SqliteStore::open(&path)?;
//! let production = store.production(&agent).await?.expect("a production");
//! assert_eq!(production.id, v1.id);
//! // Both traits have a `get`: name the one meant.
//! let code = ArtifactStore::get(&store, &production.version.code.digest).await?;
//! assert_eq!(&code[..], module);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # The rollout journal
//!
//! A rollout records its progress (how it began, each stage with its deadline, the
//! weights it set, its end) so that a restarted host resumes it where it was. Schema
//! version 2 keeps it in two tables:
//!
//! - `rollout_journal`, one row per entry, append-only: `seq` (`INTEGER PRIMARY KEY
//!   AUTOINCREMENT`: the entry's sequence number, increasing across all rollouts and never
//!   reused), `at` (the entry's time on the host's clock, in milliseconds since the epoch),
//!   `agent_id`, `deployment_id` (the candidate), `kind` (`started`, `stage`, `split` or
//!   `finished`), `record` (the whole [`JournalRecord`](caxton_core::JournalRecord) as
//!   JSON, tagged with the same kind; `CHECK`ed) and `rollout_id`, its rollout;
//! - `rollouts`, one row per rollout: `agent_id`, `deployment_id`, `started_at` and
//!   `finished_at`, which is `NULL` while the rollout is open. A partial unique index
//!   `ON rollouts (agent_id) WHERE finished_at IS NULL` makes "at most one open rollout
//!   per agent" the database's rule, and a composite foreign key makes an entry's agent
//!   and candidate its rollout's.
//!
//! Triggers keep every rollout's entries in order: `started` comes first and nowhere
//! else, nothing comes after `finished`, and the statement that records `finished`
//! closes the rollout. Each append is one `BEGIN IMMEDIATE` transaction, so after a crash
//! the journal holds whole entries and the rollouts agree with them.
//!
//! The candidate is not a foreign key to `deployments` (a journal may be written apart
//! from the registry); [`SqliteStore::purge_expired`] removes the rollouts of the
//! deployments it purges, entries and all.
//!
//! Where it is stricter than the journal in memory: a percentage that is not a finite
//! number is refused ([`SqliteError::BadEntry`]), since JSON would store it as `null` and
//! the entry could not be read back when the host restarts; and should a deployment be
//! rolled out a second time, `open_rollouts` gives the open rollout's entries from its own
//! `started`, without the finished rollout before it (`entries` gives both).
//!
//! ```
//! use caxton_core::{
//!     AgentId, DeploymentId, JournalEntry, JournalRecord, RolloutJournal, Timestamp,
//! };
//! use caxton_sqlite::SqliteStore;
//!
//! # futures::executor::block_on(async {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("registry.db");
//! let store = SqliteStore::open(&path)?;
//! let entry = |at, record| JournalEntry {
//!     seq: 0,
//!     at: Timestamp::from_millis(at),
//!     agent: AgentId::new("processor").unwrap(),
//!     deployment: DeploymentId::new("processor-v2").unwrap(),
//!     record,
//! };
//! let spec = serde_json::json!({"strategy": "canary"});
//! let started = JournalRecord::Started { strategy: "canary".into(), spec, baseline: None };
//! store.append(entry(1_000, started)).await?;
//! let stage = JournalRecord::Stage {
//!     stage: "canary.5_percent".into(),
//!     step: 1,
//!     percentage: Some(5.0),
//!     until: Some(Timestamp::from_millis(301_000)),
//! };
//! store.append(entry(1_000, stage.clone())).await?;
//! drop(store);
//!
//! // After a restart: the rollout is open, and its last stage holds until 301 s.
//! let store = SqliteStore::open(&path)?;
//! let open = store.open_rollouts().await?;
//! assert_eq!(open.len(), 1);
//! assert_eq!(open[0].last().unwrap().record, stage);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Blocking
//!
//! The trait methods are `async` but run their SQL on the calling thread: each is one
//! short transaction, microseconds for a read and one `fsync` (a few milliseconds on a
//! disk) for a write. A write waits for the write lock when another process holds it, up
//! to the busy timeout (five seconds by default); a host that cannot let its executor
//! wait that long calls the store from a blocking thread.
//!
//! # Concurrency
//!
//! A store is one handle for many threads ([`Clone`] shares it): writes of one store take
//! turns on its one write connection, reads run on a small pool of read connections, and
//! WAL lets reads proceed while a write commits. Several processes may open the same file;
//! SQLite's locks serialize their writes.
//!
//! [`DeploymentStore`]: caxton_core::DeploymentStore
//! [`ArtifactStore`]: caxton_core::ArtifactStore
//! [`RolloutJournal`]: caxton_core::RolloutJournal
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use caxton_core::{Clock, SystemClock};

mod artifacts;
mod connection;
mod deployments;
mod error;
mod journal;
mod schema;

pub use deployments::Versioned;
pub use error::{OpenError, SqliteError};
pub use schema::SCHEMA_VERSION;

use connection::{Database, OpenOptionsSet};

/// A [`DeploymentStore`](caxton_core::DeploymentStore),
/// [`ArtifactStore`](caxton_core::ArtifactStore) and
/// [`RolloutJournal`](caxton_core::RolloutJournal) in one SQLite file. See the crate docs.
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Database>,
    max_artifact_size: u64,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path)
            .field("busy_timeout", &self.db.busy_timeout)
            .field("clock", &self.db.clock)
            .field("max_artifact_size", &self.max_artifact_size)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the registry at `path` with the default options, creating the file (mode
    /// `0600`) and its schema if it does not exist. See [`SqliteStore::builder`].
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, OpenError> {
        SqliteStore::builder(path).open()
    }

    /// Options for opening the registry at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            busy_timeout: SqliteStoreBuilder::DEFAULT_BUSY_TIMEOUT,
            durability: Durability::Full,
            clock: Arc::new(SystemClock),
            max_artifact_size: SqliteStoreBuilder::DEFAULT_MAX_ARTIFACT_SIZE,
            allow_shared_file: false,
            check_integrity: false,
        }
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Runs SQLite's full integrity check (`PRAGMA integrity_check`), which reads the
    /// whole file; [`SqliteError::IntegrityCheck`] lists what it found.
    pub fn check_integrity(&self) -> Result<(), SqliteError> {
        self.db.check(true)
    }
}

/// When a committed write reaches the disk. Either way every operation is atomic and the
/// file is consistent after a crash of the process; they differ after a power loss or a
/// crash of the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is on disk when the operation returns (`synchronous = FULL`: the
    /// write-ahead log is flushed with `fsync` on each commit). The default.
    #[default]
    Full,
    /// Commits reach the disk at the next checkpoint (`synchronous = NORMAL`): much faster
    /// writes; a power loss may lose the last commits, never leave half of one. For tests,
    /// bulk loads and registries that can be rebuilt.
    Deferred,
}

/// Options for [`SqliteStore`]; finish with [`open`](SqliteStoreBuilder::open).
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    busy_timeout: Duration,
    durability: Durability,
    clock: Arc<dyn Clock>,
    max_artifact_size: u64,
    allow_shared_file: bool,
    check_integrity: bool,
}

impl SqliteStoreBuilder {
    /// How long an operation waits for a lock another connection holds, by default.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// The largest artifact stored, by default: 256 MiB.
    pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 256 << 20;

    /// How long an operation waits for a lock held by another connection or process
    /// before it fails with [`SqliteError::Locked`] (default five seconds).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// When a commit reaches the disk (default [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Stamps deployments and audit entries with times from `clock` (default: the system
    /// clock). Times never go back from the last audit entry's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Refuses artifacts larger than `bytes` (default 256 MiB; SQLite itself stores at most
    /// about 1 GB in one value).
    pub fn max_artifact_size(mut self, bytes: u64) -> Self {
        self.max_artifact_size = bytes;
        self
    }

    /// Accepts an existing file that group or others may access (refused by default).
    pub fn allow_shared_file(mut self, allow: bool) -> Self {
        self.allow_shared_file = allow;
        self
    }

    /// Runs SQLite's quick integrity check on open, which reads the whole file (off by
    /// default; a truncated file or a damaged header is found without it).
    pub fn check_integrity_on_open(mut self, check: bool) -> Self {
        self.check_integrity = check;
        self
    }

    /// Opens the registry: creates the file (mode `0600`) when missing, checks that it is
    /// a Caxton registry of a schema this crate knows, and applies missing migrations in
    /// one transaction.
    pub fn open(self) -> Result<SqliteStore, OpenError> {
        let options = OpenOptionsSet {
            busy_timeout: self.busy_timeout,
            durability: self.durability,
            allow_shared_file: self.allow_shared_file,
            check_integrity: self.check_integrity,
        };
        let db = Database::open(&self.path, &options, self.clock)?;
        Ok(SqliteStore {
            db: Arc::new(db),
            max_artifact_size: self.max_artifact_size,
        })
    }
}
