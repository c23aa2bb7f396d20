//! The errors of connecting to a registry ([`ConnectError`]) and of the database under a
//! store operation ([`PostgresError`], carried inside the operation's `BackendError`).
//!
//! None of them prints the password of a connection URL: a server is named by its
//! [target](crate::PostgresStore::target), `user@host:port/database`.

use std::time::Duration;

use caxton_core::{AgentId, DeploymentId};

/// Why a registry could not be connected to. Nothing was written to the database, except
/// by [`ConnectError::Migrate`], whose transaction was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a PostgreSQL connection string (the URL itself is not shown: it
    /// may hold a password).
    #[error("the registry URL is not a PostgreSQL connection string: {source}")]
    BadUrl {
        /// What the parser said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The store's runtime (its threads for the connections) could not start.
    #[error("cannot start the threads of the PostgreSQL registry: {source}")]
    Runtime {
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be reached, or refused the connection.
    #[error("cannot connect to the PostgreSQL registry {target}: {source}")]
    Connect {
        /// `user@host:port/database`.
        target: String,
        /// What the driver said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server did not answer within the connect timeout.
    #[error("the PostgreSQL registry {target} did not answer within {timeout:?}")]
    Timeout {
        /// `user@host:port/database`.
        target: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The database was written by a newer Caxton whose schema this version does not
    /// know. It is left untouched: using it would silently downgrade it.
    #[error(
        "the PostgreSQL registry {target} has schema version {found}, newer than the \
         {supported} this version of caxton-postgres knows; use a newer Caxton"
    )]
    NewerSchema {
        /// `user@host:port/database`.
        target: String,
        /// The schema version in the database.
        found: i64,
        /// The newest schema version this crate knows.
        supported: i64,
    },
    /// Creating or migrating the schema failed; its transaction was rolled back.
    #[error(
        "cannot migrate the PostgreSQL registry {target} to schema version {version} \
         ({step}): {source}"
    )]
    Migrate {
        /// `user@host:port/database`.
        target: String,
        /// The version being migrated to.
        version: i64,
        /// What the step adds.
        step: &'static str,
        /// What the server said.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A failure of the database under a store operation. It is the source of the
/// operation's [`BackendError`](caxton_core::BackendError), so a caller can downcast to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// No connection could be had: the server is unreachable, or every connection of the
    /// pool stayed busy for the pool timeout. Nothing changed; worth a retry.
    #[error("no connection to the PostgreSQL registry {target}: {reason}")]
    Unavailable {
        /// `user@host:port/database`.
        target: String,
        /// Why.
        reason: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<tokio_postgres::Error>,
    },
    /// The database refused a second production for an agent (its partial unique
    /// index). Nothing changed.
    #[error(
        "the registry refused to make deployment `{deployment}` a second production of agent `{agent}`"
    )]
    ProductionConflict {
        /// The agent.
        agent: AgentId,
        /// The deployment that was to become production.
        deployment: DeploymentId,
        /// The constraint violation.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A stored row cannot be read back: a column holds what this version of Caxton
    /// cannot decode.
    #[error("the registry holds an unreadable {column} for `{record}`: {reason}")]
    BadRow {
        /// The row: a deployment id, an audit sequence number or a journal entry.
        record: String,
        /// The column.
        column: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A rollout journal entry was refused because it would not read back as it was
    /// given (a percentage that is not a finite number). Nothing was written.
    #[error(
        "the registry refused a rollout journal entry of deployment `{deployment}` of agent `{agent}`: {reason}"
    )]
    BadEntry {
        /// The agent.
        agent: AgentId,
        /// The rollout's candidate.
        deployment: DeploymentId,
        /// What is wrong with the entry.
        reason: String,
    },
    /// The store was shut down while the operation ran; whether it committed is unknown.
    #[error("the PostgreSQL registry store was shut down during the operation")]
    ShutDown,
    /// Any other failure of the server or the connection (a serialization failure, a
    /// lost connection, a full disk).
    #[error("the PostgreSQL registry: {source}")]
    Postgres {
        /// What the driver or the server said.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl From<tokio_postgres::Error> for PostgresError {
    fn from(source: tokio_postgres::Error) -> Self {
        PostgresError::Postgres { source }
    }
}

/// Whether `e` is the violation of the unique constraint or index `name`.
pub(crate) fn violates(e: &tokio_postgres::Error, name: &str) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(name)
    })
}
