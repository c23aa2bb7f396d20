//! The shared registry of a fleet of Caxton hosts: deployments, their audit history, the
//! artifacts they run and the journal of their rollouts in one PostgreSQL database, with
//! a change feed that tells every host what another one changed.
//!
//! [`PostgresStore`] implements [`DeploymentStore`] and [`ArtifactStore`] with exactly the
//! semantics of [`MemoryStore`](caxton_core::MemoryStore), and [`RolloutJournal`] with
//! those of [`MemoryJournal`](caxton_core::MemoryJournal) (it passes the same conformance
//! suites), as `caxton-sqlite` does on one machine, and keeps their rules in the database:
//!
//! - at most one production per agent is a partial unique index
//!   (`ON deployments (agent_id) WHERE is_production`), and the production being running
//!   and not deleted is a `CHECK`; a violation is the typed
//!   [`PostgresError::ProductionConflict`];
//! - every change and its audit entry are one transaction, and every write of an agent
//!   first locks the agent's row (`SELECT … FOR UPDATE`), so the writes of one agent take
//!   turns across every host: promotes racing from many processes leave exactly one
//!   production, and the audit trail leads to each deployment's state;
//! - each deployment's revision counts its audit entries: a conflict token;
//! - artifacts are addressed by their SHA-256, stored once, and checked on every read;
//! - at most one open rollout per agent is a partial unique index, and triggers keep each
//!   rollout's journal in order;
//! - [`RolloutLeases`](caxton_core::RolloutLeases): one lease per agent's rollout in
//!   `rollout_leases`, taken, renewed and released by single statements and expiring on
//!   the database's clock, so exactly one host drives a rollout;
//! - each committed change notifies the `caxton_changes` channel with the agent's id, in
//!   the transaction that makes it; [`PostgresStore::follow`] reads them.
//!
//! The schema is versioned (the table `caxton_schema`) and migrated on connect, under an
//! advisory lock so that hosts starting together migrate once; a database written by a
//! newer schema is refused ([`ConnectError::NewerSchema`]), never downgraded.
//!
//! # Example
//!
//! ```no_run
//! use caxton_core::{
//!     AgentId, ArtifactKind, ArtifactStore, CodeLayer, DeploymentStore, LifecycleEvent,
//!     ModelLayer, NewDeployment, PromptLayer, ToolsLayer, VersionTuple,
//! };
//! use caxton_postgres::{Change, PostgresStore};
//! use futures::StreamExt;
//!
//! # futures::executor::block_on(async {
//! let store = PostgresStore::connect("postgres://caxton@127.0.0.1:5432/caxton")?;
//! // Another host follows the changes.
//! let mut changes = store.follow().await?;
//!
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
//!
//! match changes.next().await {
//!     Some(Change::Agent(changed)) => assert_eq!(changed, agent),
//!     // After a reconnect: notifications may have been lost; re-read everything.
//!     Some(Change::Resync) => {}
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Executors
//!
//! The connections run on a small tokio runtime the store owns (two worker threads); each
//! operation is handed to it and awaited through its join handle. The store may therefore
//! be called from any executor: tokio, `futures::executor::block_on` on a thread of the
//! host's, or another. [`PostgresStore::connect`] blocks its thread until the schema is
//! ready.
//!
//! [`DeploymentStore`]: caxton_core::DeploymentStore
//! [`ArtifactStore`]: caxton_core::ArtifactStore
//! [`RolloutJournal`]: caxton_core::RolloutJournal
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use caxton_core::{Clock, SystemClock};
use tokio_postgres::Config;

mod artifacts;
mod db;
mod deployments;
mod error;
mod feed;
mod journal;
mod leases;
mod schema;
mod scratch;

pub use deployments::Versioned;
pub use error::{ConnectError, PostgresError};
pub use feed::{Change, ChangeFeed};
pub use schema::SCHEMA_VERSION;
pub use scratch::ScratchDatabase;

use db::{Database, Pool};

/// A [`DeploymentStore`](caxton_core::DeploymentStore),
/// [`ArtifactStore`](caxton_core::ArtifactStore) and
/// [`RolloutJournal`](caxton_core::RolloutJournal) in one PostgreSQL database. See the
/// crate docs.
///
/// Cloning is cheap and shares the runtime and the connections.
#[derive(Clone)]
pub struct PostgresStore {
    db: Arc<Database>,
    max_artifact_size: u64,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.db.target)
            .field("pool", &self.db.pool)
            .field("clock", &self.db.clock)
            .field("max_artifact_size", &self.max_artifact_size)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the registry at `url` (`postgres://user:password@host:port/database`,
    /// or a key-value connection string) with the default options, creating or migrating
    /// its schema. See [`PostgresStore::builder`].
    pub fn connect(url: &str) -> Result<PostgresStore, ConnectError> {
        PostgresStore::builder(url).connect()
    }

    /// Options for connecting to the registry at `url`.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            pool_size: PostgresStoreBuilder::DEFAULT_POOL_SIZE,
            connect_timeout: PostgresStoreBuilder::DEFAULT_CONNECT_TIMEOUT,
            pool_timeout: PostgresStoreBuilder::DEFAULT_POOL_TIMEOUT,
            clock: Arc::new(SystemClock),
            max_artifact_size: PostgresStoreBuilder::DEFAULT_MAX_ARTIFACT_SIZE,
        }
    }

    /// The server and database, as `user@host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.db.target
    }
}

/// Options for [`PostgresStore`]; finish with [`connect`](PostgresStoreBuilder::connect).
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    connect_timeout: Duration,
    pool_timeout: Duration,
    clock: Arc<dyn Clock>,
    max_artifact_size: u64,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            // The URL may hold a password.
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .field("clock", &self.clock)
            .field("max_artifact_size", &self.max_artifact_size)
            .finish()
    }
}

impl PostgresStoreBuilder {
    /// How many connections the store keeps for its operations, by default.
    pub const DEFAULT_POOL_SIZE: usize = 4;
    /// How long connecting to the server may take, by default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long an operation waits for a free connection, by default.
    pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(30);
    /// The largest artifact stored, by default: 256 MiB.
    pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 256 << 20;

    /// How many connections the store keeps for its operations (default 4; at least 1).
    /// The change feed has its own connection besides.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long connecting to the server may take (default ten seconds), unless the URL
    /// sets `connect_timeout` itself.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an operation waits for a free connection before it fails with
    /// [`PostgresError::Unavailable`] (default 30 seconds).
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// Stamps deployments and audit entries with times from `clock` (default: the system
    /// clock). Times never go back from the agent's last audit entry's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Refuses artifacts larger than `bytes` (default 256 MiB; PostgreSQL itself stores
    /// at most 1 GB in one value).
    pub fn max_artifact_size(mut self, bytes: u64) -> Self {
        self.max_artifact_size = bytes;
        self
    }

    /// Starts the store's runtime, connects, and creates or migrates the schema in one
    /// transaction. Blocks the calling thread until done (it may be a thread of any
    /// runtime).
    pub fn connect(self) -> Result<PostgresStore, ConnectError> {
        let mut config: Config = self
            .url
            .parse()
            .map_err(|source| ConnectError::BadUrl { source })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("caxton");
        }
        let target = target(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("caxton-postgres")
            .enable_all()
            .build()
            .map_err(|source| ConnectError::Runtime { source })?;
        // Waited for on a plain channel: this thread may be inside any executor, or none.
        let (done, migrated) = std::sync::mpsc::sync_channel(1);
        let schema = schema_ready(config.clone(), target.clone(), self.connect_timeout);
        runtime.spawn(async move {
            let _ = done.send(schema.await);
        });
        migrated.recv().map_err(|_| ConnectError::Runtime {
            source: std::io::Error::other("the store's runtime stopped while connecting"),
        })??;
        let pool = Arc::new(Pool::new(
            config,
            target.clone(),
            self.pool_size,
            self.pool_timeout,
        ));
        Ok(PostgresStore {
            db: Arc::new(Database::new(runtime, pool, self.clock, target)),
            max_artifact_size: self.max_artifact_size,
        })
    }
}

/// `user@host:port/database` of a connection configuration.
fn target(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// Connects once and brings the schema to [`SCHEMA_VERSION`] in one transaction, under
/// an advisory lock so that concurrent connects migrate once.
async fn schema_ready(
    config: Config,
    target: String,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let client = match tokio::time::timeout(timeout, db::connect(&config)).await {
        Err(_) => return Err(ConnectError::Timeout { target, timeout }),
        Ok(Err(source)) => return Err(ConnectError::Connect { target, source }),
        Ok(Ok(client)) => client,
    };
    let migrate_error = |version: i64| {
        let target = target.clone();
        let step = usize::try_from(version - 1)
            .ok()
            .and_then(|i| schema::MIGRATIONS.get(i))
            .map_or("the schema version table", |m| m.name);
        move |source| ConnectError::Migrate {
            target,
            version,
            step,
            source,
        }
    };
    client
        .batch_execute("BEGIN")
        .await
        .map_err(migrate_error(0))?;
    client
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await
        .map_err(migrate_error(0))?;
    client
        .batch_execute(schema::VERSION_TABLE)
        .await
        .map_err(migrate_error(0))?;
    let found: i64 = client
        .query_opt("SELECT version FROM caxton_schema", &[])
        .await
        .map_err(migrate_error(0))?
        .map_or(0, |row| row.get(0));
    if found > SCHEMA_VERSION {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(ConnectError::NewerSchema {
            target,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in schema::MIGRATIONS.iter().filter(|m| m.version > found) {
        client
            .batch_execute(migration.sql)
            .await
            .map_err(migrate_error(migration.version))?;
    }
    client
        .execute(
            "INSERT INTO caxton_schema (version) VALUES ($1) \
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(migrate_error(SCHEMA_VERSION))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(migrate_error(SCHEMA_VERSION))?;
    Ok(())
}
