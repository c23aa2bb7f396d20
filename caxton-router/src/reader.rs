//! The per-thread fast path: a routing handle that keeps its own map of agents and a cached
//! copy of each agent's route.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::Cache;
use caxton_core::{AgentId, SessionId};

use crate::address::AddressTable;
use crate::agent::{AgentCell, CellRoute, FastHash};
use crate::decision::RouteDecision;
use crate::entry::{self, Admission, DeploymentEntry};
use crate::error::RouteError;
use crate::local::{self, Sampler};
use crate::route::{AgentRoute, INLINE, Picker};
use crate::router::Router;

/// A routing handle for one thread (or one task) that routes many messages: the fast path.
///
/// The handle keeps, for each agent it has routed for, its own copy of the agent's current
/// route, compiled down to what routing reads, with the deployments' entries and this
/// handle's in-flight counter in each already looked up. Routing one message is then a
/// lookup in the handle's own map (by the address of the `AgentId`'s text, so no text is
/// hashed or compared), one plain atomic read and a pointer compare to check that the
/// agent's published route is still the one copied, the session hash, the range lookup,
/// and one atomic add on this handle's counter, taken back when the decision is dropped.
/// No reference count is touched and nothing is written that another thread reads.
/// [`Router::route`] pays two protected loads and the lookups on every message instead.
///
/// Changes are seen at once all the same: a route, a rollback or a drain published before
/// a call is what the call routes by. When a route changed, the next message for that agent
/// recompiles the copy and takes references to the new route (a few shared atomic adds,
/// once per change and handle). The handle holds the route it last saw for each agent, so
/// an old route is freed once every handle has routed for that agent again, or is dropped.
///
/// Pass the same `AgentId` (or clones of it, which share its text) for an agent's
/// messages: an id built afresh for every message still routes correctly, through a
/// lookup by name that costs a few more nanoseconds and keeps the id alive for a while.
/// The handle's memory grows with the agents it routes for (about 300 bytes each) and is
/// freed when it is dropped.
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
    /// Agents this handle has routed for, by the address of their id's text. Every
    /// `AgentId` looked up this way is kept alive in `aliases`, so no other id can take
    /// its address while it is mapped: equal addresses mean the same id, and the lookup
    /// needs no hashing or comparing of text.
    by_address: AddressTable,
    aliases: Vec<AgentId>,
    /// The same agents by name, for ids with a new address.
    by_name: HashMap<AgentId, u32, FastHash>,
    agents: Vec<KnownAgent<'r>>,
    sampler: Sampler,
    /// The counter shard of the thread that made the handle; a handle moved to another
    /// thread stays correct (a decision counts out where it counted in), only less spread.
    shard: u32,
}

/// An agent this handle has routed for.
// `align(64)`: what a route reads (the route cache and the picker) shares one cache line,
// and the targets take the next.
#[repr(C, align(64))]
struct KnownAgent<'r> {
    route: Cache<CellRoute, Arc<AgentRoute>>,
    compiled: Compiled<'r>,
    /// For the pins, with session affinity on.
    cell: Arc<AgentCell>,
}

/// One route of an agent as this handle uses it: a copy of its picker and its
/// deployments, with this handle's counter word in each, looked up in the arena once per
/// route rather than once per message.
#[repr(C)]
struct Compiled<'r> {
    picker: Picker,
    weighted: [Option<(&'r DeploymentEntry, &'r AtomicU64)>; INLINE],
    shadow: Option<&'r DeploymentEntry>,
    /// The route this was compiled from. Held, so that no other route can take its
    /// address while this copy is in use: an equal address means the same route.
    from: Arc<AgentRoute>,
}

impl<'r> Compiled<'r> {
    #[cold]
    #[inline(never)]
    fn of(router: &'r Router, route: &Arc<AgentRoute>, shard: u32) -> Self {
        let picker = *route.picker();
        let mut weighted = [None; INLINE];
        if picker.is_inline() {
            for (slot, target) in weighted.iter_mut().enumerate().take(picker.weighted()) {
                let entry = router.entry(route.target(slot));
                *target = Some((entry, entry.counters().word(shard)));
            }
        }
        Compiled {
            picker,
            weighted,
            shadow: picker.shadow_index().map(|index| router.entry(index)),
            from: Arc::clone(route),
        }
    }

    /// [`Router::route_unpinned`] on the copy.
    #[inline(always)]
    fn route_unpinned(
        &self,
        router: &'r Router,
        session: Option<&SessionId>,
        shard: u32,
        points: &mut Sampler,
    ) -> Option<RouteDecision<'r>> {
        let picker = &self.picker;
        if !picker.is_inline() {
            return router.route_unpinned(&self.from, session, shard, points);
        }
        let slot = picker.choose_inline(session, points)?;
        let (primary, word) = self.weighted.get(slot).copied().flatten()?;
        if !entry::try_enter(word, Admission::New) {
            return None;
        }
        let shadow = match self.shadow {
            Some(shadow) if picker.sample_shadow(session, points) => shadow
                .counters()
                .try_enter(shard, Admission::New)
                .then_some(shadow),
            _ => None,
        };
        Some(RouteDecision::new(
            primary,
            word,
            shadow,
            picker.generation(),
            shard,
            false,
        ))
    }
}

impl<'r> RouterReader<'r> {
    pub(crate) fn new(router: &'r Router) -> Self {
        RouterReader {
            router,
            by_address: AddressTable::new(),
            aliases: Vec::new(),
            by_name: HashMap::default(),
            agents: Vec::new(),
            sampler: Sampler::new(local::thread_index()),
            shard: router.shard(),
        }
    }

    /// Routes one message; the same decision as [`Router::route`] would make. Session
    /// pins (with session affinity on) and retries after a concurrent drain take the
    /// router's own path.
    #[inline(always)]
    pub fn route(
        &mut self,
        agent: &AgentId,
        session: Option<&SessionId>,
    ) -> Result<RouteDecision<'r>, RouteError> {
        let known = match self.by_address.get(address(agent)) {
            Some(index) => self.agents.get_mut(index as usize),
            None => None,
        };
        let Some(known) = known else {
            return self.route_new_address(agent, session);
        };
        let route = known.route.load();
        if !Arc::ptr_eq(route, &known.compiled.from) {
            known.compiled = Compiled::of(self.router, route, self.shard);
        }
        let compiled = &known.compiled;
        if (!compiled.picker.has_affinity() || session.is_none())
            && let Some(decision) =
                compiled.route_unpinned(self.router, session, self.shard, &mut self.sampler)
        {
            return Ok(decision);
        }
        self.router
            .route_slow(&known.cell, session, self.shard, &mut self.sampler)
    }

    /// Routes for an id whose address this handle has not seen: finds the agent by name,
    /// or in the router's table the first time, and remembers the address.
    #[cold]
    #[inline(never)]
    fn route_new_address(
        &mut self,
        agent: &AgentId,
        session: Option<&SessionId>,
    ) -> Result<RouteDecision<'r>, RouteError> {
        let index = match self.by_name.get(agent) {
            Some(index) => *index,
            None => {
                // Unknown agents are not remembered: one may be registered at any time.
                let cell = self
                    .router
                    .cell(agent)
                    .ok_or_else(|| RouteError::UnknownAgent {
                        agent: agent.clone(),
                    })?;
                let index = self.agents.len() as u32;
                let mut route = Cache::new(CellRoute(Arc::clone(&cell)));
                let compiled = Compiled::of(self.router, route.load(), self.shard);
                self.agents.push(KnownAgent {
                    route,
                    compiled,
                    cell,
                });
                self.by_name.insert(agent.clone(), index);
                index
            }
        };
        // A caller that builds a new id for every message would grow the aliases without
        // end; past a bound they start over.
        if self.aliases.len() >= 2 * self.agents.len() + 64 {
            self.by_address.clear();
            self.aliases.clear();
        }
        self.aliases.push(agent.clone());
        self.by_address.insert(address(agent), index);
        self.route(agent, session)
    }

    /// The router this handle reads.
    pub fn router(&self) -> &'r Router {
        self.router
    }
}

/// Where the text of `agent` lives; ids that share it are clones of one another.
#[inline]
fn address(agent: &AgentId) -> usize {
    agent.as_str().as_ptr() as usize
}

impl fmt::Debug for RouterReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterReader")
            .field("router", self.router)
            .field("known_agents", &self.agents.len())
            .field("aliases", &self.aliases.len())
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A routing handle for the calling thread, the fast path for routing many messages;
    /// see [`RouterReader`].
    pub fn reader(&self) -> RouterReader<'_> {
        RouterReader::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_core::DeploymentId;

    #[test]
    fn aliases_stay_bounded_when_every_message_brings_a_new_id() {
        let router = Router::new();
        let name = "builds-ids";
        let agent = AgentId::new(name).unwrap();
        let v1 = DeploymentId::new("v1").unwrap();
        router.register(&agent, &v1).unwrap();
        router.promote(&agent, &v1).unwrap();
        let mut reader = router.reader();
        for _ in 0..10_000 {
            let fresh = AgentId::new(name).unwrap();
            assert_eq!(reader.route(&fresh, None).unwrap().deployment(), &v1);
            assert!(reader.aliases.len() <= 2 * reader.agents.len() + 64);
            assert_eq!(reader.aliases.len(), reader.by_address.len());
        }
        assert_eq!(
            reader.agents.len(),
            1,
            "one agent, however many ids named it"
        );
    }

    #[test]
    fn a_known_agent_fits_the_memory_the_docs_promise() {
        // The type docs promise about 300 bytes per agent, maps included.
        assert!(std::mem::size_of::<KnownAgent<'_>>() <= 256);
    }

    #[test]
    fn a_route_change_recompiles_the_copy_once() {
        let router = Router::new();
        let agent = AgentId::new("a").unwrap();
        let (v1, v2) = (
            DeploymentId::new("v1").unwrap(),
            DeploymentId::new("v2").unwrap(),
        );
        router.register(&agent, &v1).unwrap();
        router.register(&agent, &v2).unwrap();
        router.promote(&agent, &v1).unwrap();
        let mut reader = router.reader();
        drop(reader.route(&agent, None).unwrap());
        let before = Arc::clone(&reader.agents[0].compiled.from);
        drop(reader.route(&agent, None).unwrap());
        assert!(Arc::ptr_eq(&before, &reader.agents[0].compiled.from));
        router.promote(&agent, &v2).unwrap();
        assert_eq!(reader.route(&agent, None).unwrap().deployment(), &v2);
        let after = &reader.agents[0].compiled.from;
        assert!(!Arc::ptr_eq(&before, after));
        assert_eq!(after.generation(), before.generation() + 1);
    }
}
