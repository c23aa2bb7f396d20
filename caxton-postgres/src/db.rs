//! The connections: a tokio runtime owned by the store, a small pool of clients on it, and
//! the transaction every operation runs in.
//!
//! An operation is spawned onto the store's runtime and its [`JoinHandle`] awaited by the
//! caller: a `JoinHandle` can be awaited from any executor, so the store works from
//! `futures::executor::block_on` on a thread of the host's as well as from tokio. Once
//! spawned, an operation runs to its commit or rollback even if its caller goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use caxton_core::store::{
    CreateError, DeleteError, GetError, ListError, PromoteError, RollbackError, TransitionError,
};
use caxton_core::{
    AgentId, ArtifactError, BackendError, Clock, JournalError, LeaseError, Timestamp,
};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls};

use crate::PostgresError;

/// The channel of the change feed: each committed change notifies it with the agent's id.
pub(crate) const CHANNEL: &str = "caxton_changes";

/// A boxed future borrowing the transaction's client.
pub(crate) type Body<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, Outcome<E>>> + Send + 'a>>;

/// What an operation ends with when it does not succeed: a refusal the caller gets as it
/// is (nothing changed), or a failure of the database, reported as the operation's
/// backend error.
#[derive(Debug)]
pub(crate) enum Outcome<E> {
    Refused(E),
    Failed(PostgresError),
}

impl<E> From<PostgresError> for Outcome<E> {
    fn from(e: PostgresError) -> Self {
        Outcome::Failed(e)
    }
}

impl<E> From<tokio_postgres::Error> for Outcome<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Outcome::Failed(e.into())
    }
}

/// An operation's error type, which wraps a [`BackendError`].
pub(crate) trait Refusal {
    fn backend(err: BackendError) -> Self;
}

macro_rules! refusal {
    ($($error:ty),*) => {$(
        impl Refusal for $error {
            fn backend(err: BackendError) -> Self {
                <$error>::Backend(err)
            }
        }
    )*};
}
refusal!(
    CreateError,
    GetError,
    ListError,
    TransitionError,
    PromoteError,
    RollbackError,
    DeleteError,
    ArtifactError,
    JournalError,
    LeaseError
);

/// The runtime, the pool and the clock of a store.
pub(crate) struct Database {
    runtime: Option<Runtime>,
    pub(crate) handle: Handle,
    pub(crate) pool: Arc<Pool>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) target: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which is refused inside another
        // runtime; shutting down in the background never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Database {
    pub(crate) fn new(
        runtime: Runtime,
        pool: Arc<Pool>,
        clock: Arc<dyn Clock>,
        target: String,
    ) -> Self {
        Database {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            clock,
            target,
        }
    }

    /// Runs `task` on the store's runtime and waits for it from whatever executor calls.
    pub(crate) async fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = Result<T, PostgresError>> + Send + 'static,
    ) -> Result<T, PostgresError> {
        match self.handle.spawn(task).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(PostgresError::ShutDown),
        }
    }

    /// Runs `body` in a read-only transaction (`REPEATABLE READ`: one snapshot).
    pub(crate) async fn read<T, E>(
        &self,
        context: impl FnOnce() -> String,
        body: impl for<'a> FnOnce(&'a Client) -> Body<'a, T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Refusal + Send + 'static,
    {
        let pool = self.pool.clone();
        let task = async move {
            let mut conn = pool.get().await?;
            let result = conn
                .transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
                .await;
            Ok(result)
        };
        settle(self.spawn(task).await, context)
    }

    /// Runs `body` in a write transaction of `agent`: the agent's row is locked first
    /// (`SELECT … FOR UPDATE`), so the writes of one agent take turns across every
    /// process, and the change feed is notified of the agent when the transaction
    /// commits. `body` gets the time to stamp, which never goes back from the agent's last
    /// audit entry.
    pub(crate) async fn write<T, E>(
        &self,
        agent: &AgentId,
        context: impl FnOnce() -> String,
        body: impl for<'a> FnOnce(&'a Client, Timestamp) -> Body<'a, T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Refusal + Send + 'static,
    {
        let pool = self.pool.clone();
        let clock = self.clock.clone();
        let agent = agent.to_string();
        let task = async move {
            let mut conn = pool.get().await?;
            let result = conn
                .transaction("BEGIN ISOLATION LEVEL READ COMMITTED", move |client| {
                    Box::pin(async move {
                        let at = lock_agent(client, &agent, &*clock).await?;
                        client
                            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &agent])
                            .await?;
                        body(client, at).await
                    })
                })
                .await;
            Ok(result)
        };
        settle(self.spawn(task).await, context)
    }

    /// Runs `body` in a transaction not scoped to an agent (artifacts, maintenance).
    pub(crate) async fn unscoped<T, E>(
        &self,
        context: impl FnOnce() -> String,
        body: impl for<'a> FnOnce(&'a Client, Timestamp) -> Body<'a, T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Refusal + Send + 'static,
    {
        let pool = self.pool.clone();
        let now = self.clock.now();
        let task = async move {
            let mut conn = pool.get().await?;
            Ok(conn
                .transaction("BEGIN ISOLATION LEVEL READ COMMITTED", move |client| {
                    body(client, now)
                })
                .await)
        };
        settle(self.spawn(task).await, context)
    }
}

impl Database {
    /// Runs `body` in a transaction for store-wide maintenance; its failure is the
    /// database's error itself.
    pub(crate) async fn maintain<T: Send + 'static>(
        &self,
        body: impl for<'a> FnOnce(&'a Client, Timestamp) -> Body<'a, T, std::convert::Infallible>
        + Send
        + 'static,
    ) -> Result<T, PostgresError> {
        let pool = self.pool.clone();
        let now = self.clock.now();
        let task = async move {
            let mut conn = pool.get().await?;
            match conn
                .transaction("BEGIN ISOLATION LEVEL READ COMMITTED", move |client| {
                    body(client, now)
                })
                .await
            {
                Ok(value) => Ok(value),
                Err(Outcome::Failed(e)) => Err(e),
                Err(Outcome::Refused(never)) => match never {},
            }
        };
        self.spawn(task).await
    }
}

/// Locks the agent's row (making it on the agent's first write) and returns the time to
/// stamp: the clock's, read once the lock is held, but never before the agent's last
/// audit entry, so audit times follow audit order even when the clocks of two hosts
/// disagree.
async fn lock_agent(
    client: &Client,
    agent: &str,
    clock: &dyn Clock,
) -> Result<Timestamp, PostgresError> {
    client
        .execute(
            "INSERT INTO agents (agent_id) VALUES ($1) ON CONFLICT (agent_id) DO NOTHING",
            &[&agent],
        )
        .await?;
    client
        .execute(
            "SELECT 1 FROM agents WHERE agent_id = $1 FOR UPDATE",
            &[&agent],
        )
        .await?;
    let last: Option<i64> = client
        .query_one("SELECT max(at) FROM audit WHERE agent_id = $1", &[&agent])
        .await?
        .get(0);
    // Read after the lock is held: the time of this write, not of its wait.
    let now = clock.now();
    let last = Timestamp::from_millis(last.and_then(|at| u64::try_from(at).ok()).unwrap_or(0));
    Ok(now.max(last))
}

fn settle<T, E: Refusal>(
    result: Result<Result<T, Outcome<E>>, PostgresError>,
    context: impl FnOnce() -> String,
) -> Result<T, E> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Outcome::Refused(e))) => Err(e),
        Ok(Err(Outcome::Failed(e))) | Err(e) => Err(E::backend(BackendError::new(context(), e))),
    }
}

/// A small pool of clients; each client's connection is driven by a task on the store's
/// runtime.
pub(crate) struct Pool {
    pub(crate) config: Config,
    pub(crate) target: String,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Pool {
    pub(crate) fn new(config: Config, target: String, size: usize, wait: Duration) -> Self {
        Pool {
            config,
            target,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            wait,
        }
    }

    /// A client: an idle one whose connection is still open, or a new one. Waits up to
    /// the pool timeout when all are in use. Must run on the store's runtime.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Pooled, PostgresError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                self.unavailable(
                    format!("every connection stayed busy for {:?}", self.wait),
                    None,
                )
            })?
            .map_err(|_| PostgresError::ShutDown)?;
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some(client) if !client.is_closed() => {
                    return Ok(Pooled {
                        client: Some(client),
                        pool: self.clone(),
                        _permit: permit,
                    });
                }
                Some(_closed) => continue,
                None => break,
            }
        }
        let client = connect(&self.config)
            .await
            .map_err(|e| self.unavailable("cannot connect".into(), Some(e)))?;
        Ok(Pooled {
            client: Some(client),
            pool: self.clone(),
            _permit: permit,
        })
    }

    fn unavailable(&self, reason: String, source: Option<tokio_postgres::Error>) -> PostgresError {
        PostgresError::Unavailable {
            target: self.target.clone(),
            reason,
            source,
        }
    }
}

/// Connects a client and drives its connection on the current runtime.
pub(crate) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; the client then
        // reports the error on its next use.
        let _ = connection.await;
    });
    Ok(client)
}

/// A client of the pool, given back when dropped, unless it was left inside a
/// transaction (its task was cancelled) or its connection is closed.
pub(crate) struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// Runs `body` between `begin` and `COMMIT`, rolling back when it fails. A client
    /// whose transaction could not be closed is not given back to the pool.
    pub(crate) async fn transaction<T, E>(
        &mut self,
        begin: &str,
        body: impl for<'a> FnOnce(&'a Client) -> Body<'a, T, E>,
    ) -> Result<T, Outcome<E>> {
        let client = self.client.take().expect("a pooled client until dropped");
        client.batch_execute(begin).await?;
        let result = match body(&client).await {
            Ok(value) => client
                .batch_execute("COMMIT")
                .await
                .map(|()| value)
                .map_err(Outcome::from),
            Err(e) => match client.batch_execute("ROLLBACK").await {
                Ok(()) => Err(e),
                Err(_) => {
                    // The connection is unusable; drop it rather than give it back.
                    return Err(e);
                }
            },
        };
        if result.is_ok() || !client.is_closed() {
            self.client = Some(client);
        }
        result
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}
