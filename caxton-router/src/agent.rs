//! One agent as the router keeps it: its published route, its session pins and its
//! writer's state, in one cell allocated once per agent.
//!
//! Cells have stable addresses: the agent table maps ids to `Arc<AgentCell>`, and a copy
//! of the table (to add agents) copies those pointers, so a route published in a cell is
//! seen by every reader of every table version, and a reader may keep the cell for good.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{self, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use caxton_core::{AgentId, DeploymentId, SessionId};
use crossbeam_utils::CachePadded;
use dashmap::DashMap;

use crate::route::{AgentRoute, RouteSpec};

pub(crate) type FastHash = foldhash::fast::RandomState;

/// Fewest pins inserted for new sessions between two purges of an agent's idle pins.
pub(crate) const PURGE_AFTER_MIN: usize = 4_096;

/// Every agent of a router, by id.
pub(crate) type AgentTable = HashMap<AgentId, Arc<AgentCell>, FastHash>;

/// Everything the router keeps for one agent.
pub(crate) struct AgentCell {
    /// The published route. Readers load this pointer on every message; the padding keeps
    /// the writer's lock and the pins' bookkeeping off its cache line.
    route: CachePadded<ArcSwap<AgentRoute>>,
    agent: AgentId,
    /// Session pins; read on the hot path only while session affinity is on.
    pub(crate) pins: DashMap<SessionId, Pin, FastHash>,
    /// Set before the first pin is inserted and never cleared, so that a change to an agent
    /// that never pinned a session skips the pins altogether: asking a `DashMap` whether it
    /// is empty locks every shard, a cache miss each on a cold agent.
    ever_pinned: AtomicBool,
    /// Pins that routing inserted for new sessions since the map was last purged.
    inserted: AtomicUsize,
    /// How many such inserts call for the next purge: as many as the pins the last purge
    /// kept, and at least [`PURGE_AFTER_MIN`], so purging costs O(1) per insert amortized.
    purge_after: AtomicUsize,
    /// Serializes the agent's writers; readers never take it.
    writer: Mutex<AgentWriter>,
}

/// The write side of one agent, behind the cell's mutex.
pub(crate) struct AgentWriter {
    /// Every registered, not retired deployment of the agent, with its arena index. Shared
    /// with every route built from it, so publishing a route copies no ids; replaced whole
    /// on the rare registration or retirement.
    deployments: Arc<[(DeploymentId, u32)]>,
    /// Earlier routes, oldest first.
    pub(crate) history: VecDeque<RouteSpec>,
    generation: u64,
    /// The route last published.
    pub(crate) current: Arc<AgentRoute>,
}

impl AgentWriter {
    /// The arena index of `deployment`, if it is a registered deployment of the agent.
    pub(crate) fn index_of(&self, deployment: &DeploymentId) -> Option<u32> {
        self.deployments
            .iter()
            .find(|(id, _)| id == deployment)
            .map(|(_, index)| *index)
    }

    pub(crate) fn is_registered(&self, index: u32) -> bool {
        self.deployments.iter().any(|(_, i)| *i == index)
    }

    pub(crate) fn add_deployment(&mut self, deployment: &DeploymentId, index: u32) {
        self.deployments = self
            .deployments
            .iter()
            .cloned()
            .chain([(deployment.clone(), index)])
            .collect();
    }

    pub(crate) fn remove_deployment(&mut self, index: u32) {
        self.deployments = self
            .deployments
            .iter()
            .filter(|(_, i)| *i != index)
            .cloned()
            .collect();
    }
}

impl AgentCell {
    pub(crate) fn new(agent: AgentId) -> Self {
        let empty = Arc::new(AgentRoute::build(
            agent.clone(),
            0,
            RouteSpec::default(),
            Arc::from([]),
        ));
        AgentCell {
            route: CachePadded::new(ArcSwap::new(Arc::clone(&empty))),
            agent,
            pins: DashMap::with_hasher(FastHash::default()),
            ever_pinned: AtomicBool::new(false),
            inserted: AtomicUsize::new(0),
            purge_after: AtomicUsize::new(PURGE_AFTER_MIN),
            writer: Mutex::new(AgentWriter {
                deployments: Arc::from([]),
                history: VecDeque::new(),
                generation: 0,
                current: empty,
            }),
        }
    }

    pub(crate) fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The published route, to read on the hot path.
    #[inline]
    pub(crate) fn route(&self) -> &ArcSwap<AgentRoute> {
        &self.route
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, AgentWriter> {
        // Writers leave the state consistent at every step that can unwind, so a poisoned
        // lock is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the route for `spec` over the writer's deployments and swaps it in; turning
    /// session affinity off drops every pin. Callers hold the writer lock.
    pub(crate) fn publish(&self, writer: &mut AgentWriter, spec: RouteSpec) {
        writer.generation += 1;
        let affinity_off = spec.affinity.is_none();
        let route = Arc::new(AgentRoute::build(
            self.agent.clone(),
            writer.generation,
            spec,
            Arc::clone(&writer.deployments),
        ));
        writer.current = Arc::clone(&route);
        self.route.store(route);
        if affinity_off && self.may_have_pins() && !self.pins.is_empty() {
            self.pins.clear();
        }
    }

    /// Call before inserting a pin. The store comes first, so whoever sees the pin (through
    /// the map's lock, or anything that orders after the insert) also sees the mark.
    ///
    /// The fence pairs with the one in [`may_have_pins`](Self::may_have_pins): a writer
    /// that publishes a route and then finds no mark skips the pins, so a pinning thread
    /// must then see that route when it checks the generation after inserting. Between the
    /// two fences, either the writer sees the mark or the pinning thread sees the route.
    pub(crate) fn will_pin(&self) {
        if !self.ever_pinned.load(Ordering::Acquire) {
            self.ever_pinned.store(true, Ordering::Release);
        }
        atomic::fence(Ordering::SeqCst);
    }

    /// Whether a pin was ever inserted; `false` means there are none. Writers call it after
    /// publishing a route; see [`will_pin`](Self::will_pin) for the fence.
    pub(crate) fn may_have_pins(&self) -> bool {
        atomic::fence(Ordering::SeqCst);
        self.ever_pinned.load(Ordering::Acquire)
    }

    /// Counts a pin inserted for a new session; `true` when enough have been inserted since
    /// the last purge that the caller should purge now. Only one of the callers that cross
    /// the threshold together gets `true`.
    pub(crate) fn inserted_pin(&self) -> bool {
        let inserted = self.inserted.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.purge_after.load(Ordering::Relaxed);
        inserted >= due && self.inserted.swap(0, Ordering::Relaxed) >= due
    }

    /// Removes the pins for which `keep` is false; returns how many were removed. The next
    /// purge falls due after as many new pins as are left (and at least
    /// [`PURGE_AFTER_MIN`]), so the map holds at most about twice the pins the last purge
    /// kept, or that many plus [`PURGE_AFTER_MIN`], whatever the number of sessions seen.
    pub(crate) fn purge_pins(&self, mut keep: impl FnMut(&Pin) -> bool) -> usize {
        if !self.may_have_pins() {
            return 0;
        }
        let mut removed = 0;
        self.pins.retain(|_, pin| {
            let kept = keep(pin);
            removed += usize::from(!kept);
            kept
        });
        let left = self.pins.len();
        self.inserted.store(0, Ordering::Relaxed);
        self.purge_after
            .store(left.max(PURGE_AFTER_MIN), Ordering::Relaxed);
        removed
    }

    /// Removes the pins matching `drop_it`; returns how many of them were still live.
    pub(crate) fn drop_pins(
        &self,
        now_ms: u64,
        idle_timeout_ms: Option<u64>,
        mut drop_it: impl FnMut(&Pin) -> bool,
    ) -> u64 {
        if !self.may_have_pins() || self.pins.is_empty() {
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

impl fmt::Debug for AgentCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCell")
            .field("agent", &self.agent)
            .field("pins", &self.pins.len())
            .finish()
    }
}

/// An agent's cell seen as its route slot, for `arc_swap::Cache`.
#[derive(Debug, Clone)]
pub(crate) struct CellRoute(pub(crate) Arc<AgentCell>);

impl Deref for CellRoute {
    type Target = ArcSwap<AgentRoute>;

    #[inline]
    fn deref(&self) -> &ArcSwap<AgentRoute> {
        self.0.route()
    }
}

/// A session's pin to the deployment that served its first message.
pub(crate) struct Pin {
    /// The deployment's arena index.
    pub(crate) entry: u32,
    /// The generation of the route the pin was made under; with `entry`, it tells a
    /// pinning thread whether the pin it finds is still the one it inserted.
    pub(crate) generation: u64,
    last_seen_ms: AtomicU64,
}

impl Pin {
    pub(crate) fn new(entry: u32, generation: u64, now_ms: u64) -> Self {
        Pin {
            entry,
            generation,
            last_seen_ms: AtomicU64::new(now_ms),
        }
    }

    pub(crate) fn is_live(&self, now_ms: u64, idle_timeout_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)) <= idle_timeout_ms
    }

    /// Records activity; skips the write when the time has not moved, to keep the pin's
    /// cache line shared between threads serving the same session.
    pub(crate) fn touch(&self, now_ms: u64) {
        if self.last_seen_ms.load(Ordering::Relaxed) < now_ms {
            self.last_seen_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}
