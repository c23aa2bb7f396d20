//! The router: a table of agents, each with its own atomically swapped route.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use caxton_core::{
    AgentId, Clock, DeploymentId, DrainPhase, DrainReport, DrainStatus, SessionAffinity, SessionId,
    ShadowConfig, Split, SystemClock, Timestamp, Weight,
};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::cell::{Admission, Counters, DeploymentCell};
use crate::decision::RouteDecision;
use crate::error::{
    ChangeError, DrainError, PreviewError, RegisterError, RetireError, RollbackError, RouteError,
};
use crate::local;
use crate::route::{AgentRoute, RouteSpec, Target};

type FastHash = foldhash::fast::RandomState;
pub(crate) type AgentTable = HashMap<AgentId, AgentEntry, FastHash>;

/// One agent in the table: its published route, inline in the table so a route reaches it
/// without another pointer hop, and the slot with everything else.
pub(crate) struct AgentEntry {
    route: ArcSwap<AgentRoute>,
    slot: Arc<AgentSlot>,
}

/// Routes kept for rollback per agent unless the builder says otherwise.
pub const DEFAULT_ROLLBACK_WINDOW: usize = 16;

/// Most in-flight counter shards per deployment.
const MAX_SHARDS: usize = 1024;

/// Everything the router keeps for one agent besides the published route. Slots are shared
/// between versions of the outer table, so adding an agent copies only pointers, and a
/// change to one agent's route touches that agent's entry alone.
pub(crate) struct AgentSlot {
    agent: AgentId,
    /// Session pins; read on the hot path only while session affinity is on.
    pins: DashMap<SessionId, Pin, FastHash>,
    /// Serializes the agent's writers; readers never take it.
    writer: Mutex<AgentWriter>,
}

/// A session's pin to the deployment that served its first message.
struct Pin {
    target: Target,
    last_seen_ms: AtomicU64,
}

impl Pin {
    fn new(target: Target, now_ms: u64) -> Self {
        Pin {
            target,
            last_seen_ms: AtomicU64::new(now_ms),
        }
    }

    fn is_to(&self, counters: &Counters) -> bool {
        self.target.counters.same(counters)
    }

    fn admits_session(&self) -> bool {
        self.target.counters.admits(Admission::Pinned)
    }

    fn is_live(&self, now_ms: u64, idle_timeout_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)) <= idle_timeout_ms
    }

    /// Records activity; skips the write when the time has not moved, to keep the pin's
    /// cache line shared between threads serving the same session.
    fn touch(&self, now_ms: u64) {
        if self.last_seen_ms.load(Ordering::Relaxed) < now_ms {
            self.last_seen_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}

/// The write side of one agent, behind the slot's mutex.
struct AgentWriter {
    /// Every registered, not retired deployment of the agent.
    cells: Vec<Arc<DeploymentCell>>,
    /// Earlier routes, oldest first.
    history: VecDeque<RouteSpec>,
    generation: u64,
    /// The route last published.
    current: Arc<AgentRoute>,
}

impl AgentSlot {
    fn new(agent: AgentId) -> Self {
        let empty = AgentRoute::build(agent.clone(), 0, RouteSpec::default(), &[]);
        AgentSlot {
            agent,
            pins: DashMap::with_hasher(FastHash::default()),
            writer: Mutex::new(AgentWriter {
                cells: Vec::new(),
                history: VecDeque::new(),
                generation: 0,
                current: Arc::new(empty),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AgentWriter> {
        // Writers leave the state consistent at every step that can unwind, so a poisoned
        // lock is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find_cell(writer: &AgentWriter, deployment: &DeploymentId) -> Option<Arc<DeploymentCell>> {
        writer
            .cells
            .iter()
            .find(|cell| cell.id() == deployment)
            .cloned()
    }

    fn is_registered(writer: &AgentWriter, cell: &Arc<DeploymentCell>) -> bool {
        writer.cells.iter().any(|c| Arc::ptr_eq(c, cell))
    }

    /// Removes the pins matching `drop_it`; returns how many of them were still live.
    fn drop_pins(
        &self,
        now_ms: u64,
        idle_timeout_ms: Option<u64>,
        mut drop_it: impl FnMut(&Pin) -> bool,
    ) -> u64 {
        if self.pins.is_empty() {
            return 0;
        }
        let mut live = 0;
        self.pins.retain(|_, pin| {
            if !drop_it(pin) {
                return true;
            }
            if idle_timeout_ms.is_none_or(|idle| pin.is_live(now_ms, idle)) {
                live += 1;
            }
            false
        });
        live
    }
}

impl fmt::Debug for AgentSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSlot")
            .field("agent", &self.agent)
            .field("pins", &self.pins.len())
            .finish()
    }
}

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
    /// counter each, so more shards mean fewer cores writing the same cache line, at 128
    /// bytes per shard per deployment. Rounded up to a power of two between 1 and 1024; by
    /// default twice the number of cores, between 2 and 64.
    pub fn in_flight_shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        self
    }

    /// The router.
    pub fn build(self) -> Router {
        Router {
            table: ArcSwap::from_pointee(AgentTable::default()),
            structure: RwLock::new(()),
            registry: Mutex::new(HashMap::default()),
            clock: self.clock,
            rollback_window: self.rollback_window,
            shard_mask: self.shards - 1,
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
/// Routing is [`route`](Router::route) (or a per-thread [`RouterReader`](crate::RouterReader),
/// which skips one atomic load per message); the rest of the methods change routes and
/// manage drains. The same operations are available asynchronously through
/// [`TrafficControl`](caxton_core::TrafficControl).
pub struct Router {
    pub(crate) table: ArcSwap<AgentTable>,
    /// Publishing a route takes it shared; copying the table to add agents takes it
    /// exclusive, so no publication is lost in a copy.
    structure: RwLock<()>,
    /// Every registered deployment, by id. Lock order: an agent's writer, then this.
    registry: Mutex<HashMap<DeploymentId, Arc<DeploymentCell>, FastHash>>,
    clock: Arc<dyn Clock>,
    rollback_window: usize,
    shard_mask: usize,
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
            .field("rollback_window", &self.rollback_window)
            .field("in_flight_shards", &(self.shard_mask + 1))
            .finish()
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

    fn registry(&self) -> MutexGuard<'_, HashMap<DeploymentId, Arc<DeploymentCell>, FastHash>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The calling thread's counter shard.
    #[inline]
    pub(crate) fn shard(&self) -> usize {
        local::thread_index() as usize & self.shard_mask
    }

    fn slot(&self, agent: &AgentId) -> Option<Arc<AgentSlot>> {
        self.table
            .load()
            .get(agent)
            .map(|entry| Arc::clone(&entry.slot))
    }

    fn slot_or_create(&self, agent: &AgentId) -> Arc<AgentSlot> {
        loop {
            if let Some(slot) = self.slot(agent) {
                return slot;
            }
            self.create_slots(std::iter::once(agent));
        }
    }

    /// The deployment's cell and its agent's slot.
    fn cell_and_slot(
        &self,
        deployment: &DeploymentId,
    ) -> Option<(Arc<DeploymentCell>, Arc<AgentSlot>)> {
        let cell = self.registry().get(deployment).cloned()?;
        let slot = self.slot(cell.agent())?;
        Some((cell, slot))
    }

    // ---------------------------------------------------------------- routing

    /// Routes one message of `agent`, in `session` if it has one.
    ///
    /// The primary deployment is the session's pin (when session affinity is on and the
    /// pin is live), else the sticky choice of the current split for the session, else a
    /// choice spread by weight. The decision counts the message in flight until dropped.
    ///
    /// Without session affinity this takes no lock, allocates nothing and writes only the
    /// calling thread's counter shard. With session affinity on, a message with a session
    /// also reads the agent's pin map (sharded, read-locked per shard) and the first
    /// message of a session records its pin.
    #[inline]
    pub fn route(
        &self,
        agent: &AgentId,
        session: Option<&SessionId>,
    ) -> Result<RouteDecision, RouteError> {
        // Lock-free rather than wait-free: a pass fails only when the deployment it chose
        // stopped taking new traffic after the route was loaded, and the next pass loads a
        // table and a route published after that, which no longer send traffic there.
        loop {
            let table = self.table.load();
            let entry = table.get(agent).ok_or_else(|| RouteError::UnknownAgent {
                agent: agent.clone(),
            })?;
            if let Some(decision) = self.route_entry(entry, session, self.shard())? {
                return Ok(decision);
            }
        }
    }

    /// One routing pass counting on `shard`; `None` asks for another with a fresh table.
    #[inline]
    pub(crate) fn route_entry(
        &self,
        entry: &AgentEntry,
        session: Option<&SessionId>,
        shard: usize,
    ) -> Result<Option<RouteDecision>, RouteError> {
        let route = entry.route.load();
        if let (Some(idle_timeout_ms), Some(session)) = (route.idle_timeout_ms(), session) {
            return self.route_with_affinity(&entry.slot, route, session, idle_timeout_ms, shard);
        }
        let Some(primary) = route.choose(session) else {
            return Err(RouteError::NoProduction {
                agent: route.agent().clone(),
            });
        };
        if !route
            .target(primary)
            .counters
            .try_enter(shard, Admission::New)
        {
            return Ok(None);
        }
        let shadow = enter_shadow(&route, session, shard);
        Ok(Some(RouteDecision::new(
            route, primary, shadow, shard, false,
        )))
    }

    /// The session-affinity path: follow a live pin, or choose and record one. `None` asks
    /// the caller to reload the route and try again.
    fn route_with_affinity(
        &self,
        slot: &AgentSlot,
        route: Guard<Arc<AgentRoute>>,
        session: &SessionId,
        idle_timeout_ms: u64,
        shard: usize,
    ) -> Result<Option<RouteDecision>, RouteError> {
        let now_ms = self.now().as_millis();
        let mut dead_pin = false;
        if let Some(pin) = slot.pins.get(session)
            && pin.is_live(now_ms, idle_timeout_ms)
        {
            match route.index_of_counters(&pin.target.counters) {
                Some(index)
                    if route
                        .target(index)
                        .counters
                        .try_enter(shard, Admission::Pinned) =>
                {
                    pin.touch(now_ms);
                    drop(pin);
                    let shadow = enter_shadow(&route, Some(session), shard);
                    return Ok(Some(RouteDecision::new(route, index, shadow, shard, true)));
                }
                // Drained or retired: the pin no longer holds.
                _ => dead_pin = true,
            }
        }
        if dead_pin {
            slot.pins.remove_if(session, |_, pin| !pin.admits_session());
        }

        let Some(primary) = route.choose(Some(session)) else {
            return Err(RouteError::NoProduction {
                agent: slot.agent.clone(),
            });
        };
        let target = route.target(primary);
        if !target.counters.try_enter(shard, Admission::New) {
            return Ok(None);
        }
        // Pin only after the deployment admitted the message, so a pin always names a
        // deployment that served its session.
        match slot.pins.entry(session.clone()) {
            Entry::Occupied(mut entry) => {
                let pin = entry.get();
                let pinned_elsewhere = !pin.is_to(&target.counters)
                    && pin.is_live(now_ms, idle_timeout_ms)
                    && pin.admits_session();
                if pinned_elsewhere {
                    // A concurrent first message of the same session pinned it first.
                    drop(entry);
                    target.counters.exit(shard);
                    return Ok(None);
                }
                entry.insert(Pin::new(target.clone(), now_ms));
            }
            Entry::Vacant(entry) => {
                entry.insert(Pin::new(target.clone(), now_ms));
            }
        }
        let shadow = enter_shadow(&route, Some(session), shard);
        Ok(Some(RouteDecision::new(
            route, primary, shadow, shard, false,
        )))
    }

    /// Routes one message of `agent` to `deployment` explicitly (preview routing): the
    /// deployment must be a running deployment of the same agent. Pins, splits and shadows
    /// do not apply; the decision counts the message in flight like any other.
    pub fn route_preview(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<RouteDecision, PreviewError> {
        let table = self.table.load();
        let entry = table.get(agent).ok_or_else(|| PreviewError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let shard = self.shard();
        let route = entry.route.load();
        let Some(index) = route.index_of(deployment) else {
            return Err(if self.registry().contains_key(deployment) {
                PreviewError::WrongAgent {
                    deployment: deployment.clone(),
                    agent: agent.clone(),
                }
            } else {
                PreviewError::UnknownDeployment {
                    deployment: deployment.clone(),
                }
            });
        };
        let counters = &route.target(index).counters;
        if counters.try_enter(shard, Admission::New) {
            return Ok(RouteDecision::new(route, index, None, shard, false));
        }
        // Draining, drained and retired are final, so there is nothing to retry.
        if !self.registry().contains_key(deployment) {
            return Err(PreviewError::UnknownDeployment {
                deployment: deployment.clone(),
            });
        }
        Err(PreviewError::NotRunning {
            deployment: deployment.clone(),
            phase: counters.phase(),
        })
    }

    // ---------------------------------------------------------------- inspection

    /// The current route of `agent`.
    pub fn agent_route(&self, agent: &AgentId) -> Result<Arc<AgentRoute>, RouteError> {
        self.table
            .load()
            .get(agent)
            .map(|entry| entry.route.load_full())
            .ok_or_else(|| RouteError::UnknownAgent {
                agent: agent.clone(),
            })
    }

    /// Messages routed to `deployment` and not yet finished (0 for an unknown deployment).
    pub fn in_flight(&self, deployment: &DeploymentId) -> u64 {
        self.registry()
            .get(deployment)
            .map_or(0, |cell| cell.in_flight())
    }

    /// The drain phase of `deployment`, `None` when it is not registered.
    pub fn phase(&self, deployment: &DeploymentId) -> Option<DrainPhase> {
        self.registry().get(deployment).map(|cell| cell.phase())
    }

    /// Removes the pins of every agent that have idled past their agent's timeout; returns
    /// how many were removed. Idle pins are already ignored by routing; this frees their
    /// memory, so a host may call it now and then.
    pub fn purge_idle_pins(&self) -> usize {
        let now_ms = self.now().as_millis();
        let table = self.table.load_full();
        let mut removed = 0;
        for entry in table.values() {
            let idle = entry.route.load().idle_timeout_ms();
            let slot = &entry.slot;
            let before = slot.pins.len();
            slot.pins.retain(|_, pin| {
                idle.is_some_and(|idle| pin.is_live(now_ms, idle)) && pin.admits_session()
            });
            removed += before.saturating_sub(slot.pins.len());
        }
        removed
    }

    // ---------------------------------------------------------------- changes

    /// Makes a running `deployment` of `agent` known, so routes may name it. It takes no
    /// traffic until a promotion, split, shadow, pin or preview sends it some.
    ///
    /// A retired deployment is forgotten; registering its id again makes a new one.
    pub fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), RegisterError> {
        if let Some(owner) = self.registry().get(deployment).map(|c| c.agent().clone()) {
            return Err(RegisterError::AlreadyRegistered {
                deployment: deployment.clone(),
                agent: owner,
            });
        }
        let slot = self.slot_or_create(agent);
        let mut writer = slot.lock();
        let cell = {
            let mut registry = self.registry();
            if let Some(existing) = registry.get(deployment) {
                return Err(RegisterError::AlreadyRegistered {
                    deployment: deployment.clone(),
                    agent: existing.agent().clone(),
                });
            }
            let cell = Arc::new(DeploymentCell::new(
                agent.clone(),
                deployment.clone(),
                self.shard_mask + 1,
            ));
            registry.insert(deployment.clone(), Arc::clone(&cell));
            cell
        };
        writer.cells.push(cell);
        let spec = writer.current.spec().clone();
        self.publish(&slot, &mut writer, spec);
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
                let owner = registry
                    .get(deployment)
                    .map(|cell| cell.agent())
                    .or_else(|| seen.insert(deployment, agent));
                if let Some(owner) = owner {
                    return Err(RegisterError::AlreadyRegistered {
                        deployment: deployment.clone(),
                        agent: owner.clone(),
                    });
                }
                by_agent.entry(agent).or_default().push(deployment);
            }
        }
        self.create_slots(by_agent.keys().copied());
        // Registered one agent at a time under that agent's writer lock, like `register`; a
        // concurrent `register` of one of these ids can still win the race and is reported.
        for (agent, ids) in by_agent {
            let Some(slot) = self.slot(agent) else {
                continue;
            };
            let mut writer = slot.lock();
            {
                let mut registry = self.registry();
                for deployment in &ids {
                    if let Some(existing) = registry.get(*deployment) {
                        return Err(RegisterError::AlreadyRegistered {
                            deployment: (*deployment).clone(),
                            agent: existing.agent().clone(),
                        });
                    }
                }
                for deployment in ids {
                    let cell = Arc::new(DeploymentCell::new(
                        agent.clone(),
                        deployment.clone(),
                        self.shard_mask + 1,
                    ));
                    registry.insert(deployment.clone(), Arc::clone(&cell));
                    writer.cells.push(cell);
                }
            }
            let spec = writer.current.spec().clone();
            self.publish(&slot, &mut writer, spec);
        }
        Ok(())
    }

    /// Adds slots for the agents that have none, with one copy of the table.
    fn create_slots<'a>(&self, agents: impl Iterator<Item = &'a AgentId>) {
        let _structure = self
            .structure
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.table.load_full();

        let mut next: Option<AgentTable> = None;
        for agent in agents {
            if current.contains_key(agent) {
                continue;
            }
            let next = next.get_or_insert_with(|| {
                let mut copy =
                    AgentTable::with_capacity_and_hasher(current.len() + 1, FastHash::default());
                // Publishers wait for this lock, so every entry holds its latest route.
                for (agent, existing) in current.iter() {
                    let entry = AgentEntry {
                        route: ArcSwap::new(existing.route.load_full()),
                        slot: Arc::clone(&existing.slot),
                    };
                    copy.insert(agent.clone(), entry);
                }
                copy
            });
            next.entry(agent.clone()).or_insert_with(|| {
                let slot = Arc::new(AgentSlot::new(agent.clone()));
                let route = Arc::clone(&slot.lock().current);
                AgentEntry {
                    route: ArcSwap::new(route),
                    slot,
                }
            });
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
        let slot = self.slot(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let writer = slot.lock();
        if writer.current.session_affinity().is_none() {
            return Err(ChangeError::NoSessionAffinity {
                agent: agent.clone(),
            });
        }
        let cell = self.running(agent, &writer, deployment)?;
        let target = Target {
            counters: cell.counters().clone(),
            id: cell.id().clone(),
        };
        slot.pins
            .insert(session.clone(), Pin::new(target, self.now().as_millis()));
        Ok(())
    }

    /// Ends `session`'s pin; returns whether there was one.
    pub fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, ChangeError> {
        let slot = self.slot(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        Ok(slot.pins.remove(session).is_some())
    }

    /// Restores the route `agent` had before its last change, with one atomic swap. Pins to
    /// deployments that the restored route no longer sends traffic to are dropped. The
    /// rolled-back route is not kept: rolling back again goes one step further back.
    pub fn rollback(&self, agent: &AgentId) -> Result<(), RollbackError> {
        let slot = self
            .slot(agent)
            .ok_or_else(|| RollbackError::UnknownAgent {
                agent: agent.clone(),
            })?;
        let mut writer = slot.lock();
        let Some(previous) = writer.history.back() else {
            return Err(RollbackError::NothingToRollBack {
                agent: agent.clone(),
            });
        };
        for deployment in previous.named() {
            match AgentSlot::find_cell(&writer, deployment) {
                None => {
                    return Err(RollbackError::Retired {
                        agent: agent.clone(),
                        deployment: deployment.clone(),
                    });
                }
                Some(cell) if !cell.is_active() => {
                    return Err(RollbackError::NotRunning {
                        agent: agent.clone(),
                        deployment: deployment.clone(),
                        phase: cell.phase(),
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
        let current = Arc::clone(&writer.current);
        let idle = current.idle_timeout_ms();
        self.publish(&slot, &mut writer, previous.clone());
        let rolled_back: Vec<&DeploymentId> = current
            .spec()
            .named()
            .filter(|deployment| !previous.routes_to(deployment))
            .collect();
        if !rolled_back.is_empty() {
            slot.drop_pins(self.now().as_millis(), idle, |pin| {
                rolled_back.contains(&&pin.target.id)
            });
        }
        Ok(())
    }

    /// Checks and publishes one change of `agent`'s route; an unchanged route publishes
    /// nothing and leaves the rollback window alone.
    fn change(
        &self,
        agent: &AgentId,
        build: impl FnOnce(&Router, &AgentWriter, &RouteSpec) -> Result<RouteSpec, ChangeError>,
    ) -> Result<(), ChangeError> {
        let slot = self.slot(agent).ok_or_else(|| ChangeError::UnknownAgent {
            agent: agent.clone(),
        })?;
        let mut writer = slot.lock();
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
        self.publish(&slot, &mut writer, next);
        Ok(())
    }

    /// The cell of `deployment` if it is a running deployment of `agent`.
    fn running(
        &self,
        agent: &AgentId,
        writer: &AgentWriter,
        deployment: &DeploymentId,
    ) -> Result<Arc<DeploymentCell>, ChangeError> {
        match AgentSlot::find_cell(writer, deployment) {
            Some(cell) if cell.is_active() => Ok(cell),
            Some(cell) => Err(ChangeError::NotRunning {
                deployment: deployment.clone(),
                phase: cell.phase(),
            }),
            None if self.registry().contains_key(deployment) => Err(ChangeError::WrongAgent {
                deployment: deployment.clone(),
                agent: agent.clone(),
            }),
            None => Err(ChangeError::UnknownDeployment {
                deployment: deployment.clone(),
            }),
        }
    }

    /// Builds the route for `spec` and swaps it in. Callers hold the agent's writer lock.
    fn publish(&self, slot: &AgentSlot, writer: &mut AgentWriter, spec: RouteSpec) {
        writer.generation += 1;
        let affinity_off = spec.affinity.is_none();
        let route = AgentRoute::build(slot.agent.clone(), writer.generation, spec, &writer.cells);
        let route = Arc::new(route);
        writer.current = Arc::clone(&route);
        {
            let _structure = self
                .structure
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = self.table.load().get(&slot.agent) {
                entry.route.store(route);
            }
        }
        if affinity_off && !slot.pins.is_empty() {
            slot.pins.clear();
        }
    }

    // ---------------------------------------------------------------- drains

    /// Stops new sessions and unpinned messages to `deployment`; sessions pinned to it and
    /// messages in flight go on until [`close_drain`](Router::close_drain). The deployment
    /// must no longer be production, in the split or the shadow. Draining twice is fine.
    pub fn start_drain(&self, deployment: &DeploymentId) -> Result<(), DrainError> {
        let (cell, slot) = self.drainable(deployment)?;
        let writer = slot.lock();
        self.check_drainable(&slot, &writer, &cell)?;
        cell.set_phase(DrainPhase::Draining, self.now());
        Ok(())
    }

    /// Where the drain of `deployment` stands: its phase, messages in flight and live
    /// sessions pinned to it.
    pub fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, DrainError> {
        let (cell, slot) = self.drainable(deployment)?;
        let idle = self
            .table
            .load()
            .get(&slot.agent)
            .and_then(|entry| entry.route.load().idle_timeout_ms());
        let now_ms = self.now().as_millis();
        let pinned_sessions = slot
            .pins
            .iter()
            .filter(|pin| {
                pin.is_to(cell.counters()) && idle.is_none_or(|idle| pin.is_live(now_ms, idle))
            })
            .count() as u64;
        Ok(DrainStatus {
            phase: cell.phase(),
            in_flight: cell.in_flight(),
            pinned_sessions,
        })
    }

    /// Stops every route to `deployment`, pinned sessions included, and reports what was
    /// left: messages still in flight finish, but nothing new arrives from the moment this
    /// returns. Starts the drain first if it was not started.
    pub fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, DrainError> {
        let (cell, slot) = self.drainable(deployment)?;
        let writer = slot.lock();
        self.check_drainable(&slot, &writer, &cell)?;
        let now = self.now();
        cell.set_phase(DrainPhase::Drained, now);
        // Read after the phase store: see `DeploymentCell::try_enter`.
        let still_in_flight = cell.in_flight();
        let idle = writer.current.idle_timeout_ms();
        let released_sessions =
            slot.drop_pins(now.as_millis(), idle, |pin| pin.is_to(cell.counters()));
        drop(writer);
        let waited = cell
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
    /// the split or the shadow. Messages already in flight finish.
    pub fn retire(&self, deployment: &DeploymentId) -> Result<(), RetireError> {
        let unknown = || RetireError::UnknownDeployment {
            deployment: deployment.clone(),
        };
        let (cell, slot) = self.cell_and_slot(deployment).ok_or_else(unknown)?;
        let mut writer = slot.lock();
        if !AgentSlot::is_registered(&writer, &cell) {
            return Err(unknown());
        }
        let route = Arc::clone(&writer.current);
        if route.spec().routes_to(deployment) {
            return Err(RetireError::StillRouted {
                deployment: deployment.clone(),
                agent: slot.agent.clone(),
            });
        }
        // Retired first, then unpublished: a reader that no longer finds the cell in a
        // newer route is then sure to see it retired, and drops its pin.
        let now = self.now();
        cell.set_phase(DrainPhase::Drained, now);
        writer.cells.retain(|c| !Arc::ptr_eq(c, &cell));
        self.publish(&slot, &mut writer, route.spec().clone());
        slot.drop_pins(now.as_millis(), route.idle_timeout_ms(), |pin| {
            pin.is_to(cell.counters())
        });
        self.registry().remove(deployment);
        Ok(())
    }

    fn drainable(
        &self,
        deployment: &DeploymentId,
    ) -> Result<(Arc<DeploymentCell>, Arc<AgentSlot>), DrainError> {
        self.cell_and_slot(deployment)
            .ok_or_else(|| DrainError::UnknownDeployment {
                deployment: deployment.clone(),
            })
    }

    fn check_drainable(
        &self,
        slot: &AgentSlot,
        writer: &AgentWriter,
        cell: &Arc<DeploymentCell>,
    ) -> Result<(), DrainError> {
        if !AgentSlot::is_registered(writer, cell) {
            return Err(DrainError::UnknownDeployment {
                deployment: cell.id().clone(),
            });
        }
        if cell.is_active() && writer.current.spec().routes_to(cell.id()) {
            return Err(DrainError::StillRouted {
                deployment: cell.id().clone(),
                agent: slot.agent.clone(),
            });
        }
        Ok(())
    }
}

/// Counts the message in on the shadow too, if it is sampled and the shadow still takes
/// new traffic; a shadow that stopped taking traffic is simply not mirrored to.
#[inline]
fn enter_shadow(route: &AgentRoute, session: Option<&SessionId>, shard: usize) -> Option<u32> {
    let index = route.sample_shadow(session)?;
    route
        .target(index)
        .counters
        .try_enter(shard, Admission::New)
        .then_some(index)
}
