//! A fleet of `caxton serve` processes on one PostgreSQL registry: each follows the
//! registry's change feed and brings its router and runtime in line with what another
//! host changed ([`Host::sync_agent`]), and takes over the rollouts whose host stopped
//! driving them ([`Host::adopt_rollouts`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use caxton_host::Host;
use caxton_postgres::{Change, PostgresStore};
use futures::StreamExt;

/// How often a follower re-reads every agent even when the feed says nothing: a safety
/// net for a change whose reconciliation failed.
const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts to start listening.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps a host in line with the changes other hosts commit to their shared PostgreSQL
/// registry. Made by [`Registry::follower`](crate::Registry::follower); run it with
/// [`Follower::run`] on a Tokio runtime, beside the server.
pub struct Follower {
    store: PostgresStore,
    host: Arc<Host>,
}

impl fmt::Debug for Follower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follower")
            .field("registry", &self.store.target())
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower of `store`'s change feed for `host`.
    pub fn new(store: PostgresStore, host: Arc<Host>) -> Follower {
        Follower { store, host }
    }

    /// Follows the feed for as long as the future is polled; never returns. Every change
    /// of an agent reconciles that agent; a resync (the feed reconnected after missing
    /// changes), the start, and a timer every minute reconcile every agent. Four times
    /// per lease time-to-live it looks for rollouts whose lease expired and takes them
    /// over. Errors are logged and the follower goes on; a feed that cannot listen is
    /// retried, backing off up to a few seconds.
    pub async fn run(self) {
        let adopter = tokio::spawn(adopt_orphans(Arc::clone(&self.host)));
        let _stop_adopting = AbortOnDrop(adopter);
        self.follow().await;
    }

    async fn follow(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut feed = match self.store.follow().await {
                Ok(feed) => feed,
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the registry's changes; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            tracing::info!("following the registry's changes");
            // Changes committed before the feed listened were not seen.
            self.sync_all().await;
            let mut timer = tokio::time::interval(RESYNC_EVERY);
            timer.tick().await;
            loop {
                tokio::select! {
                    change = feed.next() => match change {
                        Some(Change::Agent(agent)) => self.sync_agent(&agent).await,
                        Some(_) => {
                            tracing::info!("the change feed reconnected; re-reading every agent");
                            self.sync_all().await;
                        }
                        None => break,
                    },
                    _ = timer.tick() => self.sync_all().await,
                }
            }
            tracing::warn!("the registry's change feed ended; listening again");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn sync_agent(&self, agent: &caxton_core::AgentId) {
        if let Err(error) = self.host.sync_agent(agent).await {
            tracing::warn!(%error, agent_id = %agent, "cannot follow the registry's change");
        }
    }

    async fn sync_all(&self) {
        match self.host.sync_all().await {
            Ok(outcomes) => {
                for (agent, outcome) in outcomes {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, agent_id = %agent, "cannot follow the registry");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the registry's agents"),
        }
    }
}

/// Aborts the task when dropped: the adopter stops with the follower.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes over rollouts whose lease expired, four times per lease time-to-live.
async fn adopt_orphans(host: Arc<Host>) {
    let mut timer = tokio::time::interval((host.lease_ttl() / 4).max(Duration::from_millis(10)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        match host.adopt_rollouts().await {
            Ok(adopted) => {
                for handle in &adopted.resumed {
                    tracing::warn!(deployment_id = %handle.deployment(),
                        "took over a rollout whose host stopped driving it");
                }
                for settled in &adopted.settled {
                    tracing::info!(deployment_id = %settled.deployment, outcome = %settled.outcome,
                        reason = %settled.reason, "closed a rollout whose host stopped");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot look for rollouts to take over"),
        }
    }
}
