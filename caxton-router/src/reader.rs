//! A per-thread routing handle that keeps the agent table cached.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use caxton_core::{AgentId, SessionId};

use crate::decision::RouteDecision;
use crate::error::RouteError;
use crate::router::{AgentTable, Router};

/// A routing handle for one thread (or one task) that routes many messages.
///
/// It caches the table of agents, which changes only when an agent is added, and checks
/// with one plain atomic read that the cache is current; [`Router::route`] pays a full
/// protected load of the table on every message instead. Routes and rollbacks of existing
/// agents are seen at once either way: they live in each agent's own slot, which every
/// route reads afresh.
///
/// ```
/// # use caxton_core::{AgentId, DeploymentId, SessionId};
/// # let router = caxton_router::Router::new();
/// # let agent = AgentId::new("processor")?;
/// # let v1 = DeploymentId::new("processor-v1")?;
/// # router.register(&agent, &v1)?;
/// # router.promote(&agent, &v1)?;
/// std::thread::scope(|scope| {
///     scope.spawn(|| {
///         let mut reader = router.reader();
///         for n in 0..100 {
///             let session = SessionId::new(format!("s{n}")).unwrap();
///             let decision = reader.route(&agent, Some(&session)).unwrap();
///             assert_eq!(decision.deployment(), &v1);
///         }
///     });
/// });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RouterReader<'r> {
    router: &'r Router,
    table: Cache<&'r ArcSwap<AgentTable>, Arc<AgentTable>>,
    /// The counter shard of the thread that made the handle; a handle moved to another
    /// thread stays correct (a decision counts out where it counted in), only less spread.
    shard: usize,
}

impl<'r> RouterReader<'r> {
    pub(crate) fn new(router: &'r Router) -> Self {
        RouterReader {
            router,
            table: Cache::new(&router.table),
            shard: router.shard(),
        }
    }

    /// Routes one message; the same as [`Router::route`].
    #[inline]
    pub fn route(
        &mut self,
        agent: &AgentId,
        session: Option<&SessionId>,
    ) -> Result<RouteDecision, RouteError> {
        let router = self.router;
        loop {
            let entry = self
                .table
                .load()
                .get(agent)
                .ok_or_else(|| RouteError::UnknownAgent {
                    agent: agent.clone(),
                })?;
            if let Some(decision) = router.route_entry(entry, session, self.shard)? {
                return Ok(decision);
            }
        }
    }

    /// The router this handle reads.
    pub fn router(&self) -> &'r Router {
        self.router
    }
}

impl fmt::Debug for RouterReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterReader")
            .field("router", self.router)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A routing handle that caches the agent table for the calling thread; see
    /// [`RouterReader`].
    pub fn reader(&self) -> RouterReader<'_> {
        RouterReader::new(self)
    }
}
