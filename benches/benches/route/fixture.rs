//! The routing fixture shared by `benches/route.rs` and `examples/route_instructions.rs`:
//! agents on a 95/5 canary split, sessions, a scrambled order of `(agent, session)` pairs,
//! and the same routes in `caxton-router` and in the baselines.

use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId, SessionId, Split, Weight};
use caxton_router::Router;

use crate::baselines::{DashMapRouter, Deployment, Route, RwLockRouter};

pub(crate) const AGENTS: usize = 64;
pub(crate) const SESSIONS: usize = 4_096;
/// Power of two, so the loop picks a pair with a mask.
pub(crate) const PAIRS: usize = 8_192;

pub(crate) struct Fixture {
    pub(crate) agents: Vec<AgentId>,
    pub(crate) sessions: Vec<SessionId>,
    /// `(agent, session)` indices in a scrambled order.
    pub(crate) pairs: Vec<(usize, usize)>,
}

impl Fixture {
    pub(crate) fn new(agents: usize) -> Self {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        Fixture {
            agents: (0..agents)
                .map(|n| AgentId::new(format!("agent-{n:05}")).unwrap())
                .collect(),
            sessions: (0..SESSIONS)
                .map(|n| SessionId::new(format!("session-{n:06}")).unwrap())
                .collect(),
            pairs: (0..PAIRS)
                .map(|_| (next() % agents, next() % SESSIONS))
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn pair(&self, i: usize) -> (&AgentId, &SessionId) {
        let (a, s) = self.pairs[i & (PAIRS - 1)];
        (&self.agents[a], &self.sessions[s])
    }

    pub(crate) fn versions(agent: &AgentId) -> (DeploymentId, DeploymentId) {
        (
            DeploymentId::new(format!("{agent}-v1")).unwrap(),
            DeploymentId::new(format!("{agent}-v2")).unwrap(),
        )
    }

    /// The canary weight the writer sets at its `k`-th change, and the agent it changes.
    pub(crate) fn change(&self, k: usize) -> (&AgentId, Weight) {
        let bps = if (k / self.agents.len()).is_multiple_of(2) {
            1_000
        } else {
            500
        };
        (
            &self.agents[k % self.agents.len()],
            Weight::from_bps(bps).unwrap(),
        )
    }

    pub(crate) fn caxton(&self) -> Router {
        let router = Router::new();
        router
            .register_many(self.agents.iter().flat_map(|agent| {
                let (v1, v2) = Self::versions(agent);
                [(agent.clone(), v1), (agent.clone(), v2)]
            }))
            .unwrap();
        for agent in &self.agents {
            let (v1, v2) = Self::versions(agent);
            router.promote(agent, &v1).unwrap();
            router
                .set_canary(agent, &v2, Weight::from_bps(500).unwrap())
                .unwrap();
        }
        router
    }

    /// The deployments and the 95/5 route of every agent, for the baselines.
    pub(crate) fn baseline_routes(&self) -> Vec<(AgentId, Vec<Arc<Deployment>>)> {
        self.agents
            .iter()
            .map(|agent| {
                let (v1, v2) = Self::versions(agent);
                (
                    agent.clone(),
                    vec![Deployment::new(v1), Deployment::new(v2)],
                )
            })
            .collect()
    }
}

pub(crate) fn baseline_route(
    agent: &AgentId,
    deployments: &[Arc<Deployment>],
    canary: Weight,
) -> Route {
    let split =
        Split::canary(deployments[0].id.clone(), deployments[1].id.clone(), canary).unwrap();
    Route::new(agent, &split, deployments)
}

pub(crate) fn baselines(
    fixture: &Fixture,
) -> (RwLockRouter, DashMapRouter, Vec<Vec<Arc<Deployment>>>) {
    let rwlock = RwLockRouter::default();
    let dashmap = DashMapRouter::default();
    let mut all = Vec::new();
    let canary = Weight::from_bps(500).unwrap();
    for (agent, deployments) in fixture.baseline_routes() {
        rwlock.set_route(agent.clone(), baseline_route(&agent, &deployments, canary));
        dashmap.set_route(agent.clone(), baseline_route(&agent, &deployments, canary));
        all.push(deployments);
    }
    (rwlock, dashmap, all)
}
