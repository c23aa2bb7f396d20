//! The change feed: every committed change notifies the `caxton_changes` channel with the
//! agent's id (`pg_notify`, in the transaction that makes the change, so a notification
//! is sent exactly when the change commits); [`PostgresStore::follow`] listens on a
//! dedicated connection and hands the ids on.
//!
//! PostgreSQL does not keep notifications for a listener that is not connected. When the
//! listening connection is lost, the feed reconnects (backing off up to a few seconds),
//! listens again and then yields [`Change::Resync`]: whatever changed meanwhile was not
//! seen, and a follower re-reads the state it keeps.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use caxton_core::AgentId;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::db::{CHANNEL, Database};
use crate::{PostgresError, PostgresStore};

/// One item of the [change feed](PostgresStore::follow).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A change of this agent committed: its deployments, production or rollout journal.
    Agent(AgentId),
    /// The feed was disconnected and is listening again: changes made meanwhile were not
    /// seen. Re-read every agent.
    Resync,
}

/// The changes committed to the registry by any store on it, as a [`Stream`]. Ends only
/// when its store's runtime is gone. See [`PostgresStore::follow`].
pub struct ChangeFeed {
    changes: mpsc::UnboundedReceiver<Change>,
    // Keeps the runtime the listening connection runs on.
    _db: Arc<Database>,
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("target", &self._db.target)
            .field("pending", &self.changes.len())
            .finish()
    }
}

impl Stream for ChangeFeed {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.changes.poll_recv(cx)
    }
}

/// The longest wait between two attempts to reconnect the feed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait after the connection is lost.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);

impl PostgresStore {
    /// Follows the changes committed to the registry, by this store or any other on the
    /// same database: opens a dedicated connection, `LISTEN`s on `caxton_changes`, and
    /// returns once it listens (a change committed after this returns is in the feed).
    /// Fails when the first connection cannot be made; later losses are reconnected and
    /// reported as [`Change::Resync`].
    pub async fn follow(&self) -> Result<ChangeFeed, PostgresError> {
        let (changes, receiver) = mpsc::unbounded_channel();
        let (ready, listening) = oneshot::channel();
        let mut config = self.db.pool.config.clone();
        config.application_name("caxton-feed");
        // Notice a silently dead server within a minute or so, not hours.
        config.keepalives_idle(Duration::from_secs(30));
        let target = self.db.target.clone();
        self.db
            .handle
            .spawn(listen(config, target, changes, Some(ready)));
        match listening.await {
            Ok(Ok(())) => Ok(ChangeFeed {
                changes: receiver,
                _db: self.db.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PostgresError::ShutDown),
        }
    }
}

type Ready = oneshot::Sender<Result<(), PostgresError>>;

/// How a listening session ended.
enum Ended {
    /// The feed was dropped: stop.
    Closed,
    /// The connection was lost (or never made); `listened` says whether it got as far
    /// as listening.
    Lost {
        listened: bool,
        error: Option<tokio_postgres::Error>,
    },
}

async fn listen(
    config: Config,
    target: String,
    changes: mpsc::UnboundedSender<Change>,
    mut ready: Option<Ready>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match session(&config, &changes, &mut ready).await {
            Ended::Closed => return,
            Ended::Lost { listened, error } => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(PostgresError::Unavailable {
                        target,
                        reason: "cannot listen for changes".into(),
                        source: error,
                    }));
                    return;
                }
                if listened {
                    backoff = FIRST_BACKOFF;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = changes.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: listen, report readiness (the first time) or a resync (after a
/// reconnect), then forward notifications until the connection or the feed ends.
async fn session(
    config: &Config,
    changes: &mpsc::UnboundedSender<Change>,
    ready: &mut Option<Ready>,
) -> Ended {
    let lost = |listened, error| Ended::Lost { listened, error };
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return lost(false, Some(e)),
    };
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if notes_tx.send(note).is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(e) => return Some(e),
            }
        }
        None
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        driver.abort();
        return lost(false, Some(e));
    }
    match ready.take() {
        Some(ready) => {
            if ready.send(Ok(())).is_err() {
                return Ended::Closed;
            }
        }
        None => {
            if changes.send(Change::Resync).is_err() {
                return Ended::Closed;
            }
        }
    }
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(note) => {
                    if note.channel() != CHANNEL {
                        continue;
                    }
                    // Payloads are agent ids written by this crate; anything else on the
                    // channel is ignored.
                    if let Ok(agent) = AgentId::new(note.payload())
                        && changes.send(Change::Agent(agent)).is_err()
                    {
                        driver.abort();
                        return Ended::Closed;
                    }
                }
                None => {
                    let error = driver.await.ok().flatten();
                    drop(client);
                    return lost(true, error);
                }
            },
            () = changes.closed() => {
                driver.abort();
                return Ended::Closed;
            }
        }
    }
}
