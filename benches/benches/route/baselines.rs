//! The routers `caxton-router` is compared against, written the way a user would first
//! write them: one map of agents behind a `std::sync::RwLock`, or in a `DashMap`. They have
//! the router's semantics for the benchmarked path: sticky weighted splits by the same
//! stable session hash, a drain phase checked on every route, and an in-flight count held
//! by a guard until the message is done.
//!
//! Both use the same fast hasher (foldhash) as the router, so the comparison measures the
//! concurrency design and not the hash function.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use caxton_core::{AgentId, DeploymentId, SessionId, Split};
use dashmap::DashMap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

type FastHash = foldhash::fast::RandomState;

/// One deployment: its drain phase and one in-flight counter.
pub(crate) struct Deployment {
    pub(crate) id: DeploymentId,
    active: AtomicU8,
    in_flight: AtomicU64,
}

impl Deployment {
    pub(crate) fn new(id: DeploymentId) -> Arc<Self> {
        Arc::new(Deployment {
            id,
            active: AtomicU8::new(1),
            in_flight: AtomicU64::new(0),
        })
    }
}

/// Counts a message in flight until dropped.
pub(crate) struct InFlight(Arc<Deployment>);

impl InFlight {
    pub(crate) fn deployment(&self) -> &DeploymentId {
        &self.0.id
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// One agent's route: cumulative ranges over a split.
#[derive(Clone)]
pub(crate) struct Route {
    seed: u64,
    ranges: Vec<(u16, Arc<Deployment>)>,
}

impl Route {
    /// `deployments` must hold every deployment the split names.
    pub(crate) fn new(agent: &AgentId, split: &Split, deployments: &[Arc<Deployment>]) -> Self {
        let mut upper = 0u16;
        let ranges = split
            .entries()
            .iter()
            .filter(|e| e.weight.bps() > 0)
            .map(|e| {
                upper += e.weight.bps();
                let d = deployments
                    .iter()
                    .find(|d| d.id == e.deployment)
                    .expect("the split names a known deployment");
                (upper, Arc::clone(d))
            })
            .collect();
        Route {
            seed: xxh3_64(agent.as_str().as_bytes()),
            ranges,
        }
    }

    fn enter(&self, session: &SessionId) -> Option<InFlight> {
        let bits = xxh3_64_with_seed(session.as_str().as_bytes(), self.seed);
        let point = ((u128::from(bits) * 10_000) >> 64) as u16;
        let (_, deployment) = self.ranges.iter().find(|(upper, _)| point < *upper)?;
        if deployment.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        deployment.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(Arc::clone(deployment)))
    }
}

/// `RwLock<HashMap<AgentId, Route>>`.
#[derive(Default)]
pub(crate) struct RwLockRouter {
    agents: RwLock<HashMap<AgentId, Route, FastHash>>,
}

impl RwLockRouter {
    pub(crate) fn set_route(&self, agent: AgentId, route: Route) {
        self.agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent, route);
    }

    pub(crate) fn route(&self, agent: &AgentId, session: &SessionId) -> Option<InFlight> {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents.get(agent)?.enter(session)
    }
}

/// `DashMap<AgentId, Route>`.
pub(crate) struct DashMapRouter {
    agents: DashMap<AgentId, Route, FastHash>,
}

impl Default for DashMapRouter {
    fn default() -> Self {
        DashMapRouter {
            agents: DashMap::with_hasher(FastHash::default()),
        }
    }
}

impl DashMapRouter {
    pub(crate) fn set_route(&self, agent: AgentId, route: Route) {
        self.agents.insert(agent, route);
    }

    pub(crate) fn route(&self, agent: &AgentId, session: &SessionId) -> Option<InFlight> {
        self.agents.get(agent)?.enter(session)
    }
}
