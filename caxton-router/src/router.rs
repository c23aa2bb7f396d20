//! The router: an append-only arena of deployments and a table of agents, each agent with
//! its own atomically swapped route.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use caxton_core::{
    AgentId, Clock, DeploymentId, DrainPhase, DrainReport, DrainStatus, SessionAffinity, SessionId,
    ShadowConfig, Split, SystemClock, Timestamp, Weight,
};
use crossbeam_utils::CachePadded;
use dashmap::mapref::entry::Entry;

use crate::agent::{AgentCell, AgentTable, AgentWriter, FastHash, Pin};
use crate::decision::RouteDecision;
use crate::entry::{self, Admission, DeploymentEntry};
use crate::error::{
    ChangeError, DrainError, PreviewError, RegisterError, RetireError, RollbackError, RouteError,
};
use crate::local::{self, PointSource, ThreadSampler};
use crate::route::{AgentRoute, Picker, RouteSpec};

/// Routes kept for rollback per agent unless the builder says otherwise.
pub const DEFAULT_ROLLBACK_WINDOW: usize = 16;

/// Most in-flight counter shards per deployment.
const MAX_SHARDS: usize = 1024;

/// Configures a [`Router`].
#[derive(Debug, Clone)]
pub struct RouterBuilder {
    clock: Arc<dyn Clock>,
    rollback_window: usize,
    shards: usize,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        RouterBuilder {
            clock: Arc::new(SystemClock),
            rollback_window: DEFAULT_ROLLBACK_WINDOW,
            shards: (cores * 2).next_power_of_two().clamp(2, 64),
        }
    }
}

impl RouterBuilder {
    /// The time source for session idle timeouts and drain timings; the system clock by
    /// default. A [`ManualClock`](caxton_core::ManualClock) makes idle timeouts testable.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many earlier routes each agent keeps for [`Router::rollback`]
    /// ([`DEFAULT_ROLLBACK_WINDOW`] by default; 0 turns rollback off).
    pub fn rollback_window(mut self, routes: usize) -> Self {
        self.rollback_window = routes;
        self
    }

    /// How many in-flight counters each deployment spreads its count over. Threads pick a
    /// counter each, so more shards mean fewer cores writing the same cache line, at one
    /// padded cache line (128 bytes on x86-64) per shard per deployment ever registered.
    /// Rounded up to a power of two between 1 and 1024; by default the next power of two
    /// at or above twice the number of cores, between 2 and 64.
    pub fn in_flight_shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        self
    }

    /// The router.
    pub fn build(self) -> Router {
        Router {
            arena: CachePadded::new(boxcar::Vec::new()),
            table: ArcSwap::from_pointee(AgentTable::default()),
            adding: Mutex::new(()),
            registry: Mutex::new(HashMap::default()),
            clock: self.clock,
            rollback_window: self.rollback_window,
            shard_mask: (self.shards - 1) as u32,
        }
    }
}

/// Routes every message of every agent to a deployment, without locks on the way.
///
/// Each agent has one route (production, optional weighted split, optional shadow,
/// optional session affinity), published as a whole with one atomic swap. Changes are
/// built off the hot path and serialized per agent; a change to one agent never copies
/// the routes of the others. See the [crate documentation](crate) for an example.
///
/// Routing is [`route`](Router::route), or, for a thread that routes many messages, a
/// [`RouterReader`](crate::RouterReader) from [`reader`](Router::reader): the per-thread
/// fast path, which skips the two protected loads that `route` pays on every message. The
/// rest of the methods change routes and manage drains. The same operations are available
/// asynchronously through [`TrafficControl`](caxton_core::TrafficControl).
///
/// # Memory
///
/// Every deployment ever registered keeps an entry (its id, its agent's id, when its drain
/// started and its [in-flight shards](RouterBuilder::in_flight_shards), one padded cache
/// line each: 128 bytes on x86-64) in an append-only arena until the router is dropped,
/// retired deployments included: that is what lets a decision point at its deployment
/// without a reference count. With the default 4 shards on 2 cores that is about 600
/// bytes per registration; a host that registers and retires versions for years at a high
/// rate may rebuild its router now and then.
pub struct Router {
    /// Every deployment ever registered, at a fixed index. Padded: registrations write the
    /// arena's own counters, which must not share a line with what readers read.
    arena: CachePadded<boxcar::Vec<DeploymentEntry>>,
    pub(crate) table: ArcSwap<AgentTable>,
    /// Serializes copies of the table that add agents.
    adding: Mutex<()>,
    /// Every registered, not retired deployment, by id, with its arena index. Lock order:
    /// an agent's writer, then this.
    registry: Mutex<HashMap<DeploymentId, u32, FastHash>>,
    clock: Arc<dyn Clock>,
    rollback_window: usize,
    shard_mask: u32,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("agents", &self.table.load().len())
            .field("deployments", &self.registry().len())
            .field("entries", &self.arena.count())
            .field("rollback_window", &self.rollback_window)
            .field("in_flight_shards", &(self.shard_mask + 1))
            .finish()
    }
}

/// The error of a route that names an arena entry that was never pushed: a bug in the
/// router, since routes and pins only hold indices returned by a push.
#[cold]
#[inline(never)]
fn missing_entry(index: u32) -> ! {
    panic!("caxton-router: arena entry {index} named by a route was never registered")
}

#[cold]
fn no_production(route: &AgentRoute) -> RouteError {
    RouteError::NoProduction {
        agent: route.agent().clone(),
    }
}

impl Router {
    /// A router on the system clock with the default rollback window and shards.
    pub fn new() -> Self {
        RouterBuilder::default().build()
    }

    /// A builder to set the clock, the rollback window and the in-flight shards.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<DeploymentId, u32, FastHash>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The calling thread's counter shard.
    #[inline]
    pub(crate) fn shard(&self) -> u32 {
        local::thread_index() & self.shard_mask
    }

    /// The deployment at `index` of the arena.
    #[inline]
    pub(crate) fn entry(&self, index: u32) -> &DeploymentEntry {
        match self.arena.get(index as usize) {
            Some(entry) => entry,
            None => missing_entry(index),
        }
    }

    /// The cell of `agent`, if it has one.
    pub(crate) fn cell(&self, agent: &AgentId) -> Option<Arc<AgentCell>> {
        self.table.load().get(agent).map(Arc::clone)
    }

    fn cell_or_create(&self, agent: &AgentId) -> Arc<AgentCell> {
        loop {
            if let Some(cell) = self.cell(agent) {
                return cell;
            }
            self.create_cells(std::iter::once(agent));
        }
    }

    /// The arena index of a registered `deployment` and its agent's cell.
    fn registered(&self, deployment: &DeploymentId) -> Option<(u32, Arc<AgentCell>)> {
        let index = *self.registry().get(deployment)?;
        let cell = self.cell(self.entry(index).agent())?;
        Some((index, cell))
    }

    // ---------------------------------------------------------------- routing

    /// Routes one message of `agent`, in `session` if it has one.
    ///
    /// The primary deployment is the session's pin (when session affinity is on and the
    /// pin is live), else the sticky choice of the current split for the session, else a
    /// choice spread by weight. The decision counts the message in flight until dropped.
    ///
    /// Without session affinity this takes no lock, allocates nothing and writes only the
    /// calling thread's counter shard (and the protected-load slots of `arc_swap`, which
    /// are the thread's own). With session affinity on, a message with a session also reads
    /// the agent's pin map (sharded, read-locked per shard) and the first message of a
    /// session records its pin. A thread routing many messages does better with a
    /// [`RouterReader`](crate::RouterReader), which skips both protected loads.
    #[inline]
    pub fn route(
        &self,
        agent: &AgentId,
        session: Option<&SessionId>,
    ) -> Result<RouteDecision<'_>, RouteError> {
        let shard = self.shard();
        let table = self.table.load();
        let cell = table.get(agent).ok_or_else(|| RouteError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let route = cell.route().load();
        if (!route.picker().has_affinity() || session.is_none())
            && let Some(decision) = self.route_unpinned(&route, session, shard, &mut ThreadSampler)
        {
            return Ok(decision);
        }
        drop(route);
        self.route_slow(cell, session, shard, &mut ThreadSampler)
    }

    /// Routes one message, whatever it takes: pins, retries, errors. The common case goes
    /// through [`route_unpinned`] first.
    ///
    /// Lock-free rather than wait-free: a pass fails only when the deployment it chose
    /// stopped taking new traffic after the route was loaded, and the next pass loads a
    /// route published after that, which no longer sends traffic there.
    #[inline(never)]
    pub(crate) fn route_slow(
        &self,
        cell: &AgentCell,
        session: Option<&SessionId>,
        shard: u32,
        points: &mut impl PointSource,
    ) -> Result<RouteDecision<'_>, RouteError> {
        loop {
            let route = cell.route().load();
            if let Some(decision) = self.route_pass(cell, &route, session, shard, points)? {
                return Ok(decision);
            }
        }
    }

    /// One routing pass over `route`, counting on `shard`; `None` asks for another pass
    /// with a freshly loaded route.
    fn route_pass(
        &self,
        cell: &AgentCell,
        route: &AgentRoute,
        session: Option<&SessionId>,
        shard: u32,
        points: &mut impl PointSource,
    ) -> Result<Option<RouteDecision<'_>>, RouteError> {
        if let (Some(idle_timeout_ms), Some(session)) = (route.idle_timeout_ms(), session) {
            return self.route_with_affinity(cell, route, session, idle_timeout_ms, shard, points);
        }
        match self.route_unpinned(route, session, shard, points) {
            Some(decision) => Ok(Some(decision)),
            None if route.picker().weighted() == 0 => Err(no_production(route)),
            None => Ok(None),
        }
    }

    /// The session-affinity path: follow a live pin, or choose and record one. `None` asks
    /// the caller to reload the route and try again.
    fn route_with_affinity(
        &self,
        cell: &AgentCell,
        route: &AgentRoute,
        session: &SessionId,
        idle_timeout_ms: u64,
        shard: u32,
        points: &mut impl PointSource,
    ) -> Result<Option<RouteDecision<'_>>, RouteError> {
        let now_ms = self.now().as_millis();
        let mut dead_pin = false;
        if let Some(pin) = cell.pins.get(session)
            && pin.is_live(now_ms, idle_timeout_ms)
        {
            let pinned = self.entry(pin.entry);
            let word = pinned.counters().word(shard);
            // A drained or retired deployment refuses: the pin no longer holds.
            if entry::try_enter(word, Admission::Pinned) {
                pin.touch(now_ms);
                drop(pin);
                let shadow = self.enter_shadow(route.picker(), Some(session), shard, points);
                return Ok(Some(RouteDecision::new(
                    pinned,
                    word,
                    shadow,
                    route.picker().generation(),
                    shard,
                    true,
                )));
            }
            dead_pin = true;
        }
        if dead_pin {
            cell.pins.remove_if(session, |_, pin| !self.pin_holds(pin));
        }

        let Some(slot) = route.choose(Some(session), points) else {
            return Err(no_production(route));
        };
        let index = route.target(slot);
        let primary = self.entry(index);
        let word = primary.counters().word(shard);
        if !entry::try_enter(word, Admission::New) {
            return Ok(None);
        }
        // Pin only after the deployment admitted the message, so a pin always names a
        // deployment that served its session.
        let generation = route.generation();
        cell.will_pin();
        let new_session = match cell.pins.entry(session.clone()) {
            Entry::Occupied(mut entry) => {
                let pin = entry.get();
                let pinned_elsewhere = pin.entry != index
                    && pin.is_live(now_ms, idle_timeout_ms)
                    && self.pin_holds(pin);
                if pinned_elsewhere {
                    // A concurrent first message of the same session pinned it first.
                    drop(entry);
                    entry::exit(word);
                    return Ok(None);
                }
                entry.insert(Pin::new(index, generation, now_ms));
                false
            }
            Entry::Vacant(entry) => {
                entry.insert(Pin::new(index, generation, now_ms));
                true
            }
        };
        // A change published since `route` was loaded may have dropped pins already (a
        // rollback, affinity turned off, a retirement), and its pass over the map may have
        // gone by before this pin went in: the pin would then outlive the change. Every
        // such change publishes first and then takes each shard's lock to drop pins, and
        // the insert above took this shard's lock, so either that pass saw the pin, or this
        // load sees the change (see `AgentCell::will_pin` for an agent's very first pin).
        // On any change the pin is taken back and the message routed afresh.
        if cell.route().load().generation() != generation {
            cell.pins.remove_if(session, |_, pin| {
                pin.entry == index && pin.generation == generation
            });
            entry::exit(word);
            return Ok(None);
        }
        // Unique session ids would grow the map without end: every so many new pins, this
        // message pays for a purge of the idle ones (amortized O(1) per pin; no shard lock
        // is held here).
        if new_session && cell.inserted_pin() {
            self.purge_cell(cell, now_ms);
        }
        let shadow = self.enter_shadow(route.picker(), Some(session), shard, points);
        Ok(Some(RouteDecision::new(
            primary,
            word,
            shadow,
            route.picker().generation(),
            shard,
            false,
        )))
    }

    /// Whether the deployment a pin names still takes its session.
    fn pin_holds(&self, pin: &Pin) -> bool {
        self.entry(pin.entry).counters().admits(Admission::Pinned)
    }

    /// Routes one message of `agent` to `deployment` explicitly (preview routing): the
    /// deployment must be a running deployment of the same agent. Pins, splits and shadows
    /// do not apply; the decision counts the message in flight like any other.
    ///
    /// Another agent's deployment is [`PreviewError::UnknownDeployment`], exactly as an id
    /// that was never registered: a preview request names the agent, and must not confirm
    /// which ids other agents have.
    pub fn route_preview(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<RouteDecision<'_>, PreviewError> {
        let table = self.table.load();
        let cell = table.get(agent).ok_or_else(|| PreviewError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let route = cell.route().load();
        // Looked up among this agent's deployments only, never in the router's registry:
        // another agent's id must read exactly like an unknown one.
        let Some(index) = route.index_of(deployment) else {
            return Err(PreviewError::UnknownDeployment {
                deployment: deployment.clone(),
            });
        };
        let entry = self.entry(index);
        let shard = self.shard();
        let word = entry.counters().word(shard);
        if entry::try_enter(word, Admission::New) {
            return Ok(RouteDecision::new(
                entry,
                word,
                None,
                route.generation(),
                shard,
                false,
            ));
        }
        // Draining, drained and retired are final, so there is nothing to retry.
        if self.registry().get(deployment) != Some(&index) {
            return Err(PreviewError::UnknownDeployment {
                deployment: deployment.clone(),
            });
        }
        Err(PreviewError::NotRunning {
            deployment: deployment.clone(),
            phase: entry.phase(),
        })
    }

    // ---------------------------------------------------------------- inspection

    /// The current route of `agent`.
    pub fn agent_route(&self, agent: &AgentId) -> Result<Arc<AgentRoute>, RouteError> {
        self.table
            .load()
            .get(agent)
            .map(|cell| cell.route().load_full())
            .ok_or_else(|| RouteError::UnknownAgent {
                agent: agent.clone(),
            })
    }

    /// Messages routed to `deployment` and not yet finished (0 for an unknown deployment).
    pub fn in_flight(&self, deployment: &DeploymentId) -> u64 {
        let index = self.registry().get(deployment).copied();
        index.map_or(0, |index| self.entry(index).in_flight())
    }

    /// The drain phase of `deployment`, `None` when it is not registered.
    pub fn phase(&self, deployment: &DeploymentId) -> Option<DrainPhase> {
        let index = self.registry().get(deployment).copied();
        index.map(|index| self.entry(index).phase())
    }

    /// Removes the pins of every agent that have idled past their agent's timeout, or whose
    /// deployment no longer takes their sessions; returns how many were removed.
    ///
    /// Routing ignores idle pins, and purges an agent's idle pins on its own as new
    /// sessions are pinned (each time as many new pins as the last purge kept, and at
    /// least 4,096, have been inserted), so the pin map stays within about twice the live
    /// sessions however many unique session ids arrive. This frees the rest at once, for a
    /// host that wants the memory back after a burst.
    pub fn purge_idle_pins(&self) -> usize {
        let now_ms = self.now().as_millis();
        let table = self.table.load_full();
        table
            .values()
            .map(|cell| self.purge_cell(cell, now_ms))
            .sum()
    }

    /// Removes `cell`'s pins that idled out or whose deployment no longer takes their
    /// sessions (all of them when affinity is off); returns how many.
    fn purge_cell(&self, cell: &AgentCell, now_ms: u64) -> usize {
        let idle = cell.route().load().idle_timeout_ms();
        cell.purge_pins(|pin| {
            idle.is_some_and(|idle| pin.is_live(now_ms, idle)) && self.pin_holds(pin)
        })
    }

    // ---------------------------------------------------------------- changes

    /// Adds an entry for a new deployment to the arena. Callers hold the registry lock, so
    /// the capacity check and the push cannot interleave with another push.
    fn push_entry(&self, agent: &AgentId, deployment: &DeploymentId) -> Result<u32, RegisterError> {
        if self.arena.count() >= u32::MAX as usize {
            return Err(RegisterError::TooManyDeployments {
                deployment: deployment.clone(),
            });
        }
        let entry = DeploymentEntry::new(
            agent.clone(),
            deployment.clone(),
            self.shard_mask as usize + 1,
        );
        Ok(self.arena.push(entry) as u32)
    }

    /// Makes a running `deployment` of `agent` known, so routes may name it. It takes no
    /// traffic until a promotion, split, shadow, pin or preview sends it some.
    ///
    /// A retired deployment is forgotten; registering its id again makes a new one.
    pub fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), RegisterError> {
        let owner = self.registry().get(deployment).copied();
        if let Some(index) = owner {
            return Err(RegisterError::AlreadyRegistered {
                deployment: deployment.clone(),
                agent: self.entry(index).agent().clone(),
            });
        }
        let cell = self.cell_or_create(agent);
        let mut writer = cell.lock();
        {
            let mut registry = self.registry();
            if let Some(index) = registry.get(deployment) {
                return Err(RegisterError::AlreadyRegistered {
                    deployment: deployment.clone(),
                    agent: self.entry(*index).agent().clone(),
                });
            }
            let index = self.push_entry(agent, deployment)?;
            registry.insert(deployment.clone(), index);
            writer.add_deployment(deployment, index);
        }
        let spec = writer.current.spec().clone();
        cell.publish(&mut writer, spec);
        Ok(())
    }

    /// Registers many deployments at once, copying the agent table once for all the new
    /// agents instead of once per agent (for a host loading thousands of agents at start).
    /// Everything is checked first: if any deployment is registered already, or appears
    /// twice, nothing is registered.
    pub fn register_many(
        &self,
        deployments: impl IntoIterator<Item = (AgentId, DeploymentId)>,
    ) -> Result<(), RegisterError> {
        let deployments: Vec<(AgentId, DeploymentId)> = deployments.into_iter().collect();
        let mut by_agent: HashMap<&AgentId, Vec<&DeploymentId>, FastHash> = HashMap::default();
        {
            let registry = self.registry();
            let mut seen: HashMap<&DeploymentId, &AgentId, FastHash> = HashMap::default();
            for (agent, deployment) in &deployments {
                let owner = match registry.get(deployment) {
                    Some(index) => Some(self.entry(*index).agent()),
                    None => seen.insert(deployment, agent),
                };
                if let Some(owner) = owner {
                    return Err(RegisterError::AlreadyRegistered {
                        deployment: deployment.clone(),
                        agent: owner.clone(),
                    });
                }
                by_agent.entry(agent).or_default().push(deployment);
            }
        }
        self.create_cells(by_agent.keys().copied());
        // Registered one agent at a time under that agent's writer lock, like `register`; a
        // concurrent `register` of one of these ids can still win the race and is reported.
        for (agent, ids) in by_agent {
            let Some(cell) = self.cell(agent) else {
                continue;
            };
            let mut writer = cell.lock();
            {
                let mut registry = self.registry();
                for deployment in &ids {
                    if let Some(index) = registry.get(*deployment) {
                        return Err(RegisterError::AlreadyRegistered {
                            deployment: (*deployment).clone(),
                            agent: self.entry(*index).agent().clone(),
                        });
                    }
                }
                for deployment in ids {
                    let index = self.push_entry(agent, deployment)?;
                    registry.insert(deployment.clone(), index);
                    writer.add_deployment(deployment, index);
                }
            }
            let spec = writer.current.spec().clone();
            cell.publish(&mut writer, spec);
        }
        Ok(())
    }

    /// Adds cells for the agents that have none, with one copy of the table. The copy
    /// shares the existing cells, so a route published into a cell meanwhile is kept.
    fn create_cells<'a>(&self, agents: impl Iterator<Item = &'a AgentId>) {
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.table.load_full();
        let mut next: Option<AgentTable> = None;
        for agent in agents {
            if current.contains_key(agent) {
                continue;
            }
            next.get_or_insert_with(|| {
                let mut copy =
                    AgentTable::with_capacity_and_hasher(current.len() + 1, FastHash::default());
                copy.extend(
                    current
                        .iter()
                        .map(|(agent, cell)| (agent.clone(), Arc::clone(cell))),
                );
                copy
            })
            .entry(agent.clone())
            .or_insert_with(|| Arc::new(AgentCell::new(agent.clone())));
        }
        if let Some(next) = next {
            self.table.store(Arc::new(next));
        }
    }

    /// Sends all new traffic of `agent` to `deployment` and makes it production. A split is
    /// cleared; a shadow on the same deployment is cleared; pinned sessions stay pinned.
    pub fn promote(&self, agent: &AgentId, deployment: &DeploymentId) -> Result<(), ChangeError> {
        self.change(agent, |router, writer, current| {
            router.running(agent, writer, deployment)?;
            let mut next = current.clone();
            next.production = Some(deployment.clone());
            next.split = None;
            if next
                .shadow
                .as_ref()
                .is_some_and(|shadow| &shadow.deployment == deployment)
            {
                next.shadow = None;
            }
            Ok(next)
        })
    }

    /// Spreads new traffic of `agent` over `split`. Every deployment in it must be a
    /// running deployment of the agent, and the agent must have a production deployment.
    ///
    /// Sessions are sticky: a session's point ([`session_point`](crate::session_point))
    /// does not depend on the split, and each deployment owns a contiguous range of points
    /// in the split's order (by deployment id). With two deployments, raising one's weight
    /// only grows its range, so every session already on it stays and the fewest sessions
    /// move. With three or more, that holds for a change between two neighbours in that
    /// order; other changes may move more sessions (use session affinity to hold them).
    pub fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), ChangeError> {
        self.change(agent, |router, writer, current| {
            if current.production.is_none() {
                return Err(ChangeError::NoProduction {
                    agent: agent.clone(),
                });
            }
            for entry in split.entries() {
                router.running(agent, writer, &entry.deployment)?;
            }
            let mut next = current.clone();
            next.split = Some(split.clone());
            Ok(next)
        })
    }

    /// A canary: `weight` of new traffic to `candidate`, the rest to production.
    pub fn set_canary(
        &self,
        agent: &AgentId,
        candidate: &DeploymentId,
        weight: Weight,
    ) -> Result<(), ChangeError> {
        self.change(agent, |router, writer, current| {
            let Some(production) = current.production.clone() else {
                return Err(ChangeError::NoProduction {
                    agent: agent.clone(),
                });
            };
            let split =
                Split::canary(production.clone(), candidate.clone(), weight).map_err(|source| {
                    ChangeError::InvalidSplit {
                        agent: agent.clone(),
                        source,
                    }
                })?;
            router.running(agent, writer, &production)?;
            router.running(agent, writer, candidate)?;
            let mut next = current.clone();
            next.split = Some(split);
            Ok(next)
        })
    }

    /// Starts, changes or (with `None`) stops mirroring a sample of `agent`'s messages to a
    /// shadow deployment. The decision of a sampled message names the shadow; the host
    /// sends the copy and ignores its reply.
    pub fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), ChangeError> {
        self.change(agent, |router, writer, current| {
            if let Some(shadow) = shadow {
                router.running(agent, writer, &shadow.deployment)?;
            }
            let mut next = current.clone();
            next.shadow = shadow.cloned();
            Ok(next)
        })
    }

    /// Turns session pinning on or (with `None`) off for `agent`. While on, the first
    /// message of a session pins it to the deployment it was routed to, and later messages
    /// follow the pin until the session is released, idles past the timeout, or the
    /// deployment is rolled back, retired or its drain is closed. Turning it off drops
    /// every pin of the agent.
    pub fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), ChangeError> {
        self.change(agent, |_, _, current| {
            let mut next = current.clone();
            next.affinity = affinity;
            Ok(next)
        })
    }

    /// Pins `session` to `deployment`, a running deployment of `agent`; session affinity
    /// must be on.
    pub fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), ChangeError> {
        let cell = self.cell(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let writer = cell.lock();
        if writer.current.session_affinity().is_none() {
            return Err(ChangeError::NoSessionAffinity {
                agent: agent.clone(),
            });
        }
        let index = self.running(agent, &writer, deployment)?;
        // Under the writer lock, so no change can come between the check and the insert.
        let generation = writer.current.generation();
        let now_ms = self.now().as_millis();
        cell.will_pin();
        let new_session = cell
            .pins
            .insert(session.clone(), Pin::new(index, generation, now_ms))
            .is_none();
        if new_session && cell.inserted_pin() {
            self.purge_cell(&cell, now_ms);
        }
        Ok(())
    }

    /// Ends `session`'s pin; returns whether there was one.
    pub fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, ChangeError> {
        let cell = self.cell(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        Ok(cell.pins.remove(session).is_some())
    }

    /// Restores the route `agent` had before its last change, with one atomic swap. Pins to
    /// deployments that the restored route no longer sends traffic to are dropped. The
    /// rolled-back route is not kept: rolling back again goes one step further back.
    pub fn rollback(&self, agent: &AgentId) -> Result<(), RollbackError> {
        let cell = self
            .cell(agent)
            .ok_or_else(|| RollbackError::UnknownAgent {
                agent: agent.clone(),
            })?;
        let mut writer = cell.lock();
        let Some(previous) = writer.history.back() else {
            return Err(RollbackError::NothingToRollBack {
                agent: agent.clone(),
            });
        };
        for deployment in previous.named() {
            match writer.index_of(deployment).map(|index| self.entry(index)) {
                None => {
                    return Err(RollbackError::Retired {
                        agent: agent.clone(),
                        deployment: deployment.clone(),
                    });
                }
                Some(entry) if !entry.is_active() => {
                    return Err(RollbackError::NotRunning {
                        agent: agent.clone(),
                        deployment: deployment.clone(),
                        phase: entry.phase(),
                    });
                }
                Some(_) => {}
            }
        }
        let Some(previous) = writer.history.pop_back() else {
            return Err(RollbackError::NothingToRollBack {
                agent: agent.clone(),
            });
        };
        let replaced = Arc::clone(&writer.current);
        cell.publish(&mut writer, previous);
        // Pins on a deployment the restored route no longer names were made by the route
        // rolled back; they go with it. Checked pin by pin, so a rollback of an agent
        // without pins allocates nothing beyond its new route.
        if !cell.may_have_pins() {
            return Ok(());
        }
        let restored = writer.current.spec();
        cell.drop_pins(self.now().as_millis(), replaced.idle_timeout_ms(), |pin| {
            let deployment = self.entry(pin.entry).id();
            replaced.spec().routes_to(deployment) && !restored.routes_to(deployment)
        });
        Ok(())
    }

    /// Checks and publishes one change of `agent`'s route; an unchanged route publishes
    /// nothing and leaves the rollback window alone.
    fn change(
        &self,
        agent: &AgentId,
        build: impl FnOnce(&Router, &AgentWriter, &RouteSpec) -> Result<RouteSpec, ChangeError>,
    ) -> Result<(), ChangeError> {
        let cell = self.cell(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let mut writer = cell.lock();
        let current = writer.current.spec().clone();
        let next = build(self, &writer, &current)?;
        if next == current {
            return Ok(());
        }
        // A route without production is not one to return to.
        if self.rollback_window > 0 && current.production.is_some() {
            if writer.history.len() == self.rollback_window {
                writer.history.pop_front();
            }
            writer.history.push_back(current);
        }
        cell.publish(&mut writer, next);
        Ok(())
    }

    /// The arena index of `deployment` if it is a running deployment of `agent`.
    fn running(
        &self,
        agent: &AgentId,
        writer: &AgentWriter,
        deployment: &DeploymentId,
    ) -> Result<u32, ChangeError> {
        match writer.index_of(deployment) {
            Some(index) => {
                let entry = self.entry(index);
                if entry.is_active() {
                    Ok(index)
                } else {
                    Err(ChangeError::NotRunning {
                        deployment: deployment.clone(),
                        phase: entry.phase(),
                    })
                }
            }
            None if self.registry().contains_key(deployment) => Err(ChangeError::WrongAgent {
                deployment: deployment.clone(),
                agent: agent.clone(),
            }),
            None => Err(ChangeError::UnknownDeployment {
                deployment: deployment.clone(),
            }),
        }
    }

    // ---------------------------------------------------------------- drains

    /// Stops new sessions and unpinned messages to `deployment`; sessions pinned to it and
    /// messages in flight go on until [`close_drain`](Router::close_drain). The deployment
    /// must no longer be production, in the split or the shadow. Draining twice is fine.
    pub fn start_drain(&self, deployment: &DeploymentId) -> Result<(), DrainError> {
        let (index, cell) = self.drainable(deployment)?;
        let writer = cell.lock();
        self.check_drainable(&cell, &writer, index)?;
        self.entry(index)
            .set_phase(DrainPhase::Draining, self.now());
        Ok(())
    }

    /// Where the drain of `deployment` stands: its phase, messages in flight and live
    /// sessions pinned to it.
    pub fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, DrainError> {
        let (index, cell) = self.drainable(deployment)?;
        let idle = cell.route().load().idle_timeout_ms();
        let now_ms = self.now().as_millis();
        let pinned_sessions = cell
            .pins
            .iter()
            .filter(|pin| pin.entry == index && idle.is_none_or(|idle| pin.is_live(now_ms, idle)))
            .count() as u64;
        let entry = self.entry(index);
        Ok(DrainStatus {
            phase: entry.phase(),
            in_flight: entry.in_flight(),
            pinned_sessions,
        })
    }

    /// Stops every route to `deployment`, pinned sessions included, and reports what was
    /// left: messages still in flight finish, but nothing new arrives from the moment this
    /// returns. Starts the drain first if it was not started.
    pub fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, DrainError> {
        let (index, cell) = self.drainable(deployment)?;
        let writer = cell.lock();
        self.check_drainable(&cell, &writer, index)?;
        let entry = self.entry(index);
        let now = self.now();
        entry.set_phase(DrainPhase::Drained, now);
        // Read after the phase store: see `Counters::try_enter`.
        let still_in_flight = entry.in_flight();
        let idle = writer.current.idle_timeout_ms();
        let released_sessions = cell.drop_pins(now.as_millis(), idle, |pin| pin.entry == index);
        drop(writer);
        let waited = entry
            .drain_started()
            .map_or(Duration::ZERO, |started| now.saturating_since(started));
        Ok(DrainReport {
            deployment: deployment.clone(),
            clean: still_in_flight == 0 && released_sessions == 0,
            still_in_flight,
            released_sessions,
            waited,
        })
    }

    /// Drains `deployment` and blocks the calling thread until nothing is left (no message
    /// in flight, no live pinned session) or `deadline` has passed, then closes the drain
    /// and reports. Waiting polls, off the hot path; the deadline is real time.
    pub fn drain(
        &self,
        deployment: &DeploymentId,
        deadline: Duration,
    ) -> Result<DrainReport, DrainError> {
        let started = Instant::now();
        self.start_drain(deployment)?;
        let mut pause = Duration::from_micros(50);
        loop {
            if self.drain_status(deployment)?.is_empty() {
                break;
            }
            let elapsed = started.elapsed();
            if elapsed >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - elapsed));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        self.close_drain(deployment)
    }

    /// Forgets `deployment`: it takes nothing from now on, its pins are dropped, and later
    /// splits, shadows and rollbacks may not name it. It must no longer be production, in
    /// the split or the shadow. Messages already in flight finish. Its entry (and memory)
    /// stays with the router; see [`Router`]'s memory notes.
    pub fn retire(&self, deployment: &DeploymentId) -> Result<(), RetireError> {
        let unknown = || RetireError::UnknownDeployment {
            deployment: deployment.clone(),
        };
        let (index, cell) = self.registered(deployment).ok_or_else(unknown)?;
        let mut writer = cell.lock();
        if !writer.is_registered(index) {
            return Err(unknown());
        }
        let route = Arc::clone(&writer.current);
        if route.spec().routes_to(deployment) {
            return Err(RetireError::StillRouted {
                deployment: deployment.clone(),
                agent: cell.agent().clone(),
            });
        }
        // Retired first, then unpublished: a pin to it is refused from now on.
        let now = self.now();
        self.entry(index).set_phase(DrainPhase::Drained, now);
        writer.remove_deployment(index);
        cell.publish(&mut writer, route.spec().clone());
        cell.drop_pins(now.as_millis(), route.idle_timeout_ms(), |pin| {
            pin.entry == index
        });
        let mut registry = self.registry();
        if registry.get(deployment) == Some(&index) {
            registry.remove(deployment);
        }
        Ok(())
    }

    fn drainable(&self, deployment: &DeploymentId) -> Result<(u32, Arc<AgentCell>), DrainError> {
        self.registered(deployment)
            .ok_or_else(|| DrainError::UnknownDeployment {
                deployment: deployment.clone(),
            })
    }

    fn check_drainable(
        &self,
        cell: &AgentCell,
        writer: &AgentWriter,
        index: u32,
    ) -> Result<(), DrainError> {
        let entry = self.entry(index);
        if !writer.is_registered(index) {
            return Err(DrainError::UnknownDeployment {
                deployment: entry.id().clone(),
            });
        }
        if entry.is_active() && writer.current.spec().routes_to(entry.id()) {
            return Err(DrainError::StillRouted {
                deployment: entry.id().clone(),
                agent: cell.agent().clone(),
            });
        }
        Ok(())
    }
}

impl Router {
    /// The common routing pass: a message that follows the split, with no pin involved.
    /// `None` when the agent has no production or the chosen deployment stopped taking
    /// new traffic; [`route_slow`](Router::route_slow) then sorts out which.
    #[inline(always)]
    pub(crate) fn route_unpinned(
        &self,
        route: &AgentRoute,
        session: Option<&SessionId>,
        shard: u32,
        points: &mut impl PointSource,
    ) -> Option<RouteDecision<'_>> {
        let slot = route.choose(session, points)?;
        let primary = self.entry(route.target(slot));
        let word = primary.counters().word(shard);
        if !entry::try_enter(word, Admission::New) {
            return None;
        }
        let picker = route.picker();
        let shadow = self.enter_shadow(picker, session, shard, points);
        Some(RouteDecision::new(
            primary,
            word,
            shadow,
            picker.generation(),
            shard,
            false,
        ))
    }

    /// Counts the message in on the shadow too, if it is sampled and the shadow still
    /// takes new traffic; a shadow that stopped taking traffic is simply not mirrored to.
    #[inline]
    pub(crate) fn enter_shadow(
        &self,
        picker: &Picker,
        session: Option<&SessionId>,
        shard: u32,
        points: &mut impl PointSource,
    ) -> Option<&DeploymentEntry> {
        if !picker.sample_shadow(session, points) {
            return None;
        }
        let shadow = self.entry(picker.shadow_index()?);
        shadow
            .counters()
            .try_enter(shard, Admission::New)
            .then_some(shadow)
    }
}
