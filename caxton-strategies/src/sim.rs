//! In-memory joints for running rollouts in virtual time: [`SimTraffic`], a complete
//! [`TrafficControl`] that also simulates sessions; [`SyntheticMetrics`], a
//! [`MetricsSource`] that generates observations from rates such as
//! `error_rate=0.2%,p99=40ms,rps=50` with a seeded random generator; [`SimChecks`] for
//! validation and warm-up; and [`Simulation`], which wires them to the
//! [`RolloutDriver`] as `caxton simulate` does.
//!
//! A deployment's traffic follows the routing the rollout sets: its share of the split
//! (time-weighted over the window), the mirrored sample when it is a shadow, or, with
//! session affinity on, the share of live sessions pinned to it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use caxton_core::{
    AgentId, Clock, CodeLayer, Deployment, DeploymentId, DeploymentStore, DrainPhase, DrainReport,
    DrainStatus, LifecycleEvent, ManualClock, MemoryStore, MetricWindow, MetricsError,
    MetricsSource, ModelLayer, NewDeployment, PromptLayer, SessionAffinity, SessionId,
    ShadowConfig, Split, Timestamp, ToolsLayer, TrafficControl, TrafficError, VersionTuple,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Exp, LogNormal, Normal, Poisson};

use crate::condition::edit_distance;
use crate::driver::{CandidateChecks, Commands, DriverError, RolloutDriver, RolloutReport};
use crate::event::EventSink;
use crate::shadow::OUTPUT_MATCH_METRIC;
use crate::spec::RolloutSpec;
use crate::strategy::{ValidationVerdict, WarmUpReport};

/// How simulated sessions arrive and last. Sessions only matter with session affinity on
/// (rainbow): then each is pinned to the deployment that served its first message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionModel {
    /// New sessions per second (Poisson arrivals).
    pub arrivals_per_sec: f64,
    /// Mean session length (exponentially distributed).
    pub mean_length: Duration,
}

impl Default for SessionModel {
    /// One new session a second, five minutes long on average.
    fn default() -> Self {
        SessionModel {
            arrivals_per_sec: 1.0,
            mean_length: Duration::from_secs(300),
        }
    }
}

/// Why a pinned session moved to another deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveCause {
    /// Its deployment's drain was closed.
    ForcedDrain,
    /// Its deployment was retired.
    Retired,
    /// Session affinity was turned off.
    AffinityOff,
}

/// A pinned session that moved before it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMove {
    /// The session.
    pub session: u64,
    /// Where it was pinned.
    pub from: DeploymentId,
    /// When it moved.
    pub at: Timestamp,
    /// Why.
    pub cause: MoveCause,
}

/// One change made through [`TrafficControl`], as [`SimTraffic`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrafficAction {
    /// A deployment became known.
    Registered(DeploymentId),
    /// A deployment became the production route.
    Promoted(DeploymentId),
    /// The split changed.
    Split(Split),
    /// Mirroring changed.
    Shadow(Option<ShadowConfig>),
    /// Session affinity changed.
    Affinity(Option<SessionAffinity>),
    /// The previous route was restored.
    RolledBack,
    /// A drain started.
    DrainStarted(DeploymentId),
    /// A drain was closed.
    DrainClosed(DeploymentId),
    /// A deployment was retired.
    Retired(DeploymentId),
}

#[derive(Debug, Clone)]
struct Route {
    production: Option<DeploymentId>,
    split: Option<Split>,
}

#[derive(Debug, Default)]
struct AgentState {
    route: Option<Route>,
    history: Vec<Route>,
    shadow: Option<ShadowConfig>,
    affinity: Option<SessionAffinity>,
    /// Splits over time, for traffic shares.
    splits: Vec<(Timestamp, Option<Split>)>,
    /// Mirrors over time.
    shadows: Vec<(Timestamp, Option<ShadowConfig>)>,
}

#[derive(Debug)]
struct DeploymentState {
    agent: AgentId,
    phase: DrainPhase,
}

#[derive(Debug, Clone)]
struct SimSession {
    id: u64,
    deployment: DeploymentId,
    ends_at: Timestamp,
}

#[derive(Debug)]
struct Sessions {
    model: SessionModel,
    rng: StdRng,
    next_id: u64,
    next_arrival: Option<Timestamp>,
    simulated_to: Timestamp,
    live: Vec<SimSession>,
}

#[derive(Debug)]
struct TrafficState {
    agents: HashMap<AgentId, AgentState>,
    deployments: HashMap<DeploymentId, DeploymentState>,
    retired: Vec<DeploymentId>,
    explicit_pins: HashMap<SessionId, DeploymentId>,
    sessions: Option<Sessions>,
    moves: Vec<SessionMove>,
    actions: Vec<(Timestamp, TrafficAction)>,
}

/// A [`TrafficControl`] in memory with the router's semantics, recording every change.
///
/// Clones share state. With a [`SessionModel`], sessions arrive and end in virtual time;
/// while session affinity is on, each stays on the deployment it started on until it
/// ends or that deployment's drain is closed. Messages complete at once in this model,
/// so nothing is ever in flight.
#[derive(Clone)]
pub struct SimTraffic {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<TrafficState>>,
}

impl fmt::Debug for SimTraffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimTraffic")
            .field("agents", &state.agents.len())
            .field("deployments", &state.deployments.len())
            .field("actions", &state.actions.len())
            .finish()
    }
}

impl SimTraffic {
    /// Traffic control on `clock`, without sessions.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        SimTraffic {
            clock,
            state: Arc::new(Mutex::new(TrafficState {
                agents: HashMap::new(),
                deployments: HashMap::new(),
                retired: Vec::new(),
                explicit_pins: HashMap::new(),
                sessions: None,
                moves: Vec::new(),
                actions: Vec::new(),
            })),
        }
    }

    /// Simulates sessions arriving and ending as `model` says, from a seeded generator.
    pub fn with_sessions(self, model: SessionModel, seed: u64) -> Self {
        self.lock().sessions = Some(Sessions {
            model,
            rng: StdRng::seed_from_u64(seed),
            next_id: 0,
            next_arrival: None,
            simulated_to: self.clock.now(),
            live: Vec::new(),
        });
        self
    }

    fn lock(&self) -> MutexGuard<'_, TrafficState> {
        // Every operation checks before it changes anything.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current split of `agent`, if it has one.
    pub fn split(&self, agent: &AgentId) -> Option<Split> {
        self.lock()
            .agents
            .get(agent)
            .and_then(|a| a.route.as_ref())
            .and_then(|r| r.split.clone())
    }

    /// The production route of `agent`.
    pub fn production(&self, agent: &AgentId) -> Option<DeploymentId> {
        self.lock()
            .agents
            .get(agent)
            .and_then(|a| a.route.as_ref())
            .and_then(|r| r.production.clone())
    }

    /// The current mirror of `agent`.
    pub fn shadow(&self, agent: &AgentId) -> Option<ShadowConfig> {
        self.lock().agents.get(agent).and_then(|a| a.shadow.clone())
    }

    /// Every change so far, with its time.
    pub fn actions(&self) -> Vec<(Timestamp, TrafficAction)> {
        self.lock().actions.clone()
    }

    /// Every pinned session that moved before it ended.
    pub fn session_moves(&self) -> Vec<SessionMove> {
        self.lock().moves.clone()
    }

    /// Live simulated sessions pinned to `deployment`, now.
    pub fn live_sessions(&self, deployment: &DeploymentId) -> u64 {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        state.pinned_to(deployment)
    }

    /// The share of `agent`'s traffic `deployment` handled over `[start, end)`, in `0..=1`,
    /// counting the mirrored sample when it is a shadow.
    pub fn share(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> f64 {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let Some(agent_state) = state.agents.get(agent) else {
            return 0.0;
        };
        let mirrored = time_weighted(&agent_state.shadows, start, end, |shadow| {
            shadow
                .as_ref()
                .filter(|s| &s.deployment == deployment)
                .map_or(0.0, |s| s.sample.fraction())
        });
        let served = if agent_state.affinity.is_some() && state.sessions.is_some() {
            let total = state.sessions.as_ref().map_or(0, |s| s.live.len()) as f64;
            if total > 0.0 {
                state.pinned_to(deployment) as f64 / total
            } else {
                split_share(agent_state, deployment, start, end)
            }
        } else {
            split_share(agent_state, deployment, start, end)
        };
        (served + mirrored).min(1.0)
    }

    fn record(state: &mut TrafficState, at: Timestamp, action: TrafficAction) {
        state.actions.push((at, action));
    }
}

fn split_share(
    agent: &AgentState,
    deployment: &DeploymentId,
    start: Timestamp,
    end: Timestamp,
) -> f64 {
    time_weighted(&agent.splits, start, end, |split| {
        split
            .as_ref()
            .map_or(0.0, |s| s.weight_of(deployment).fraction())
    })
}

/// The time-weighted mean of `value` over `[start, end)` for a step function given as
/// `(from, state)` changes in time order.
fn time_weighted<T>(
    changes: &[(Timestamp, T)],
    start: Timestamp,
    end: Timestamp,
    value: impl Fn(&T) -> f64,
) -> f64 {
    let span = end.as_millis().saturating_sub(start.as_millis());
    if span == 0 {
        return changes
            .iter()
            .rev()
            .find(|(at, _)| *at <= start)
            .map_or(0.0, |(_, state)| value(state));
    }
    let mut total = 0.0;
    for (i, (from, state)) in changes.iter().enumerate() {
        let until = changes.get(i + 1).map_or(end, |(next, _)| *next);
        let lo = (*from).max(start);
        let hi = until.min(end);
        if hi > lo {
            total += value(state) * (hi.as_millis() - lo.as_millis()) as f64;
        }
    }
    total / span as f64
}

impl TrafficState {
    fn deployment(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<&DeploymentState, TrafficError> {
        let state =
            self.deployments
                .get(deployment)
                .ok_or_else(|| TrafficError::UnknownDeployment {
                    deployment: deployment.clone(),
                })?;
        if &state.agent != agent {
            return Err(TrafficError::WrongAgent {
                deployment: deployment.clone(),
                agent: agent.clone(),
            });
        }
        Ok(state)
    }

    fn routable(&self, agent: &AgentId, deployment: &DeploymentId) -> Result<(), TrafficError> {
        if self.deployment(agent, deployment)?.phase != DrainPhase::Active {
            return Err(TrafficError::Draining {
                deployment: deployment.clone(),
            });
        }
        Ok(())
    }

    fn agent(&mut self, agent: &AgentId) -> &mut AgentState {
        self.agents.entry(agent.clone()).or_default()
    }

    fn set_route(&mut self, agent: &AgentId, route: Route, at: Timestamp) {
        let state = self.agent(agent);
        if let Some(previous) = state.route.replace(route.clone()) {
            state.history.push(previous);
        }
        state.splits.push((at, route.split));
    }

    fn pinned_to(&self, deployment: &DeploymentId) -> u64 {
        let simulated = self.sessions.as_ref().map_or(0, |s| {
            s.live
                .iter()
                .filter(|x| &x.deployment == deployment)
                .count()
        });
        let explicit = self
            .explicit_pins
            .values()
            .filter(|d| *d == deployment)
            .count();
        (simulated + explicit) as u64
    }

    /// Where a new session of `agent` would go now.
    fn pick(&self, agent: &AgentId, draw: f64) -> Option<DeploymentId> {
        let route = self.agents.get(agent)?.route.as_ref()?;
        let active = |d: &DeploymentId| {
            self.deployments
                .get(d)
                .is_some_and(|s| s.phase == DrainPhase::Active)
        };
        if let Some(split) = &route.split {
            let entries: Vec<_> = split
                .entries()
                .iter()
                .filter(|e| active(&e.deployment))
                .collect();
            let total: f64 = entries.iter().map(|e| e.weight.fraction()).sum();
            if total > 0.0 {
                let mut left = draw * total;
                for entry in &entries {
                    left -= entry.weight.fraction();
                    if left < 0.0 {
                        return Some(entry.deployment.clone());
                    }
                }
                return entries.last().map(|e| e.deployment.clone());
            }
        }
        route.production.clone().filter(|d| active(d))
    }

    /// Runs the session simulation up to `to`.
    fn advance_sessions(&mut self, to: Timestamp) {
        let Some(mut sessions) = self.sessions.take() else {
            return;
        };
        let affinity_agents: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.affinity.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(agent) = affinity_agents.first() {
            let gap = Exp::new(sessions.model.arrivals_per_sec.max(1e-9)).ok();
            let length = Exp::new(1.0 / sessions.model.mean_length.as_secs_f64().max(1e-3)).ok();
            if let (Some(gap), Some(length)) = (gap, length) {
                let mut next = sessions
                    .next_arrival
                    .unwrap_or_else(|| sessions.simulated_to + secs(gap.sample(&mut sessions.rng)));
                while next <= to {
                    sessions.live.retain(|s| s.ends_at > next);
                    let draw: f64 = sessions.rng.random();
                    if let Some(deployment) = self.pick(agent, draw) {
                        let ends_at = next + secs(length.sample(&mut sessions.rng));
                        sessions.live.push(SimSession {
                            id: sessions.next_id,
                            deployment,
                            ends_at,
                        });
                        sessions.next_id += 1;
                    }
                    next = next + secs(gap.sample(&mut sessions.rng));
                }
                sessions.next_arrival = Some(next);
            }
        }
        sessions.live.retain(|s| s.ends_at > to);
        sessions.simulated_to = sessions.simulated_to.max(to);
        self.sessions = Some(sessions);
    }

    /// Sessions already running when affinity turns on are pinned where they are: the
    /// steady-state population of `arrivals × mean length` sessions, each with an
    /// exponential remaining life.
    fn seed_sessions(&mut self, agent: &AgentId, now: Timestamp) {
        let Some(mut sessions) = self.sessions.take() else {
            return;
        };
        let population = sessions.model.arrivals_per_sec * sessions.model.mean_length.as_secs_f64();
        if let Ok(length) = Exp::new(1.0 / sessions.model.mean_length.as_secs_f64().max(1e-3)) {
            for _ in 0..population.round() as u64 {
                let draw: f64 = sessions.rng.random();
                if let Some(deployment) = self.pick(agent, draw) {
                    sessions.live.push(SimSession {
                        id: sessions.next_id,
                        deployment,
                        ends_at: now + secs(length.sample(&mut sessions.rng)),
                    });
                    sessions.next_id += 1;
                }
            }
        }
        sessions.simulated_to = now;
        sessions.next_arrival = None;
        self.sessions = Some(sessions);
    }

    /// Moves the sessions pinned to `deployment` to wherever new sessions go now.
    fn move_sessions(&mut self, deployment: &DeploymentId, at: Timestamp, cause: MoveCause) -> u64 {
        let agent = self.deployments.get(deployment).map(|d| d.agent.clone());
        let mut moved = 0;
        if let Some(mut sessions) = self.sessions.take() {
            for i in 0..sessions.live.len() {
                if &sessions.live[i].deployment != deployment {
                    continue;
                }
                let draw: f64 = sessions.rng.random();
                let target = agent.as_ref().and_then(|a| self.pick(a, draw));
                self.moves.push(SessionMove {
                    session: sessions.live[i].id,
                    from: deployment.clone(),
                    at,
                    cause,
                });
                moved += 1;
                match target {
                    Some(target) if &target != deployment => sessions.live[i].deployment = target,
                    _ => sessions.live[i].ends_at = at,
                }
            }
            sessions.live.retain(|s| s.ends_at > at);
            self.sessions = Some(sessions);
        }
        let before = self.explicit_pins.len();
        self.explicit_pins.retain(|_, d| d != deployment);
        moved + (before - self.explicit_pins.len()) as u64
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 1e9))
}

#[async_trait]
impl TrafficControl for SimTraffic {
    async fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(existing) = state.deployments.get(deployment) {
            return Err(TrafficError::AlreadyRegistered {
                deployment: deployment.clone(),
                agent: existing.agent.clone(),
            });
        }
        state.deployments.insert(
            deployment.clone(),
            DeploymentState {
                agent: agent.clone(),
                phase: DrainPhase::Active,
            },
        );
        state.retired.retain(|d| d != deployment);
        state.agent(agent);
        Self::record(
            &mut state,
            now,
            TrafficAction::Registered(deployment.clone()),
        );
        Ok(())
    }

    async fn promote(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.routable(agent, deployment)?;
        state.advance_sessions(now);
        let route = Route {
            production: Some(deployment.clone()),
            split: Some(Split::single(deployment.clone())),
        };
        state.set_route(agent, route, now);
        Self::record(&mut state, now, TrafficAction::Promoted(deployment.clone()));
        Ok(())
    }

    async fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if !state.agents.contains_key(agent) {
            return Err(TrafficError::UnknownAgent {
                agent: agent.clone(),
            });
        }
        for entry in split.entries() {
            if entry.weight.bps() > 0 {
                state.routable(agent, &entry.deployment)?;
            } else {
                state.deployment(agent, &entry.deployment)?;
            }
        }
        state.advance_sessions(now);
        let production = state
            .agents
            .get(agent)
            .and_then(|a| a.route.as_ref())
            .and_then(|r| r.production.clone());
        state.set_route(
            agent,
            Route {
                production,
                split: Some(split.clone()),
            },
            now,
        );
        Self::record(&mut state, now, TrafficAction::Split(split.clone()));
        Ok(())
    }

    async fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(shadow) = shadow {
            state.routable(agent, &shadow.deployment)?;
        }
        let agent_state = state.agent(agent);
        agent_state.shadow = shadow.cloned();
        agent_state.shadows.push((now, shadow.cloned()));
        Self::record(&mut state, now, TrafficAction::Shadow(shadow.cloned()));
        Ok(())
    }

    async fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let was_on = state.agent(agent).affinity.is_some();
        state.agent(agent).affinity = affinity;
        match (was_on, affinity.is_some()) {
            (false, true) => state.seed_sessions(agent, now),
            (true, false) => {
                let pinned: Vec<DeploymentId> = state
                    .deployments
                    .iter()
                    .filter(|(_, d)| &d.agent == agent)
                    .map(|(id, _)| id.clone())
                    .collect();
                for deployment in pinned {
                    state.move_sessions(&deployment, now, MoveCause::AffinityOff);
                }
            }
            _ => {}
        }
        Self::record(&mut state, now, TrafficAction::Affinity(affinity));
        Ok(())
    }

    async fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        let mut state = self.lock();
        state.routable(agent, deployment)?;
        state
            .explicit_pins
            .insert(session.clone(), deployment.clone());
        Ok(())
    }

    async fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, TrafficError> {
        let mut state = self.lock();
        match state.explicit_pins.get(session) {
            Some(deployment) => {
                state.deployment(agent, deployment)?;
                state.explicit_pins.remove(session);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn rollback(&self, agent: &AgentId) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let agent_state =
            state
                .agents
                .get_mut(agent)
                .ok_or_else(|| TrafficError::UnknownAgent {
                    agent: agent.clone(),
                })?;
        let previous =
            agent_state
                .history
                .pop()
                .ok_or_else(|| TrafficError::NothingToRollBack {
                    agent: agent.clone(),
                })?;
        agent_state.splits.push((now, previous.split.clone()));
        agent_state.route = Some(previous);
        Self::record(&mut state, now, TrafficAction::RolledBack);
        Ok(())
    }

    async fn start_drain(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let entry = state.deployments.get_mut(deployment).ok_or_else(|| {
            TrafficError::UnknownDeployment {
                deployment: deployment.clone(),
            }
        })?;
        if entry.phase == DrainPhase::Active {
            entry.phase = DrainPhase::Draining;
        }
        Self::record(
            &mut state,
            now,
            TrafficAction::DrainStarted(deployment.clone()),
        );
        Ok(())
    }

    async fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let phase = state
            .deployments
            .get(deployment)
            .map(|d| d.phase)
            .ok_or_else(|| TrafficError::UnknownDeployment {
                deployment: deployment.clone(),
            })?;
        Ok(DrainStatus {
            phase,
            in_flight: 0,
            pinned_sessions: state.pinned_to(deployment),
        })
    }

    async fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        let entry = state.deployments.get_mut(deployment).ok_or_else(|| {
            TrafficError::UnknownDeployment {
                deployment: deployment.clone(),
            }
        })?;
        entry.phase = DrainPhase::Drained;
        let released = state.move_sessions(deployment, now, MoveCause::ForcedDrain);
        Self::record(
            &mut state,
            now,
            TrafficAction::DrainClosed(deployment.clone()),
        );
        Ok(DrainReport {
            deployment: deployment.clone(),
            clean: released == 0,
            still_in_flight: 0,
            released_sessions: released,
            waited: Duration::ZERO,
        })
    }

    async fn retire(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.advance_sessions(now);
        if state.deployments.remove(deployment).is_none() {
            return Err(TrafficError::UnknownDeployment {
                deployment: deployment.clone(),
            });
        }
        state.move_sessions(deployment, now, MoveCause::Retired);
        state.retired.push(deployment.clone());
        Self::record(&mut state, now, TrafficAction::Retired(deployment.clone()));
        Ok(())
    }

    fn in_flight(&self, _deployment: &DeploymentId) -> u64 {
        0
    }
}

/// How a simulated deployment behaves: `error_rate=0.2%,p99=40ms,rps=50`.
///
/// Keys: `error_rate` (`0.2%` or `0.002`), `p50` and `p99` latency (`40ms`, `0.1s`; with
/// one of them the spread is a log-normal σ of 0.5), `rps` (requests per second the agent
/// receives; a deployment gets its share), `cost_per_request`, `cost_per_session`,
/// `messages_per_session` (default 10), `mismatch` (share of shadow replies that differ
/// from production's, `0.5%`), and any other name for a custom metric sampled around the
/// value (`fuel_per_message=1e6`).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticProfile {
    /// Errors per request.
    pub error_rate: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// Log-normal σ of latency.
    pub latency_sigma: f64,
    /// Requests per second at full traffic; `None` takes the other deployment's.
    pub rps: Option<f64>,
    /// Cost of each request.
    pub cost_per_request: f64,
    /// Cost of each session.
    pub cost_per_session: f64,
    /// Messages in a session.
    pub messages_per_session: f64,
    /// Share of shadow replies that differ from production's.
    pub mismatch: f64,
    /// Custom metrics and their mean values.
    pub custom: BTreeMap<String, f64>,
}

impl Default for SyntheticProfile {
    fn default() -> Self {
        SyntheticProfile {
            error_rate: 0.0,
            p50_ms: 20.0,
            latency_sigma: 0.5,
            rps: None,
            cost_per_request: 0.0,
            cost_per_session: 0.0,
            messages_per_session: 10.0,
            mismatch: 0.0,
            custom: BTreeMap::new(),
        }
    }
}

/// The z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326_347_874_040_841;

/// Why a `METRICS` text is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics {input:?}, byte {position}: {message}")]
pub struct ProfileError {
    /// The whole text.
    pub input: String,
    /// Byte offset of the problem.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

const PROFILE_KEYS: [&str; 10] = [
    "error_rate",
    "p50",
    "p99",
    "p99_latency",
    "p50_latency",
    "rps",
    "cost_per_request",
    "cost_per_session",
    "messages_per_session",
    "mismatch",
];

impl FromStr for SyntheticProfile {
    type Err = ProfileError;

    fn from_str(text: &str) -> Result<Self, ProfileError> {
        let mut profile = SyntheticProfile::default();
        let (mut p50, mut p99) = (None, None);
        let mut offset = 0;
        for piece in text.split(',') {
            let error = |at: usize, message: String| ProfileError {
                input: text.to_owned(),
                position: offset + at,
                message,
            };
            let lead = piece.len() - piece.trim_start().len();
            let Some((key, value)) = piece.split_once('=') else {
                return Err(error(
                    lead,
                    format!("expected `name=value`, found {:?}", piece.trim()),
                ));
            };
            let name = key.trim();
            let value_at = key.len() + 1;
            let value_text = value.trim();
            let number = |suffix_scale: &[(&str, f64)]| -> Result<f64, ProfileError> {
                for (suffix, scale) in suffix_scale {
                    if let Some(n) = value_text.strip_suffix(suffix)
                        && let Ok(v) = n.trim().parse::<f64>()
                    {
                        return Ok(v * scale);
                    }
                }
                Err(error(
                    value_at,
                    format!(
                        "`{name}` takes {}, found {value_text:?}",
                        suffix_scale
                            .iter()
                            .map(|(s, _)| if s.is_empty() {
                                "a number".to_owned()
                            } else {
                                format!("`{s}`")
                            })
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ))
            };
            let ratio = || -> Result<f64, ProfileError> {
                let v = number(&[("%", 0.01), ("", 1.0)])?;
                if (0.0..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    Err(error(
                        value_at,
                        format!("`{name}` must be between 0% and 100%"),
                    ))
                }
            };
            let time = || number(&[("ms", 1.0), ("us", 0.001), ("s", 1_000.0)]);
            let plain = || -> Result<f64, ProfileError> {
                let v = number(&[("", 1.0)])?;
                if v.is_finite() && v >= 0.0 {
                    Ok(v)
                } else {
                    Err(error(
                        value_at,
                        format!("`{name}` must be a number of 0 or more"),
                    ))
                }
            };
            match name {
                "error_rate" => profile.error_rate = ratio()?,
                "p50" | "p50_latency" => p50 = Some(time()?),
                "p99" | "p99_latency" => p99 = Some(time()?),
                "rps" => profile.rps = Some(plain()?),
                "cost_per_request" => profile.cost_per_request = plain()?,
                "cost_per_session" => profile.cost_per_session = plain()?,
                "messages_per_session" => profile.messages_per_session = plain()?.max(1.0),
                "mismatch" => profile.mismatch = ratio()?,
                custom => {
                    let valid = custom
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && custom
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(error(lead, format!("{custom:?} is not a metric name")));
                    }
                    if let Some(known) = PROFILE_KEYS
                        .iter()
                        .find(|k| custom.len() > 3 && edit_distance(custom, k) <= 2)
                    {
                        return Err(error(
                            lead,
                            format!("unknown metric `{custom}`; did you mean `{known}`?"),
                        ));
                    }
                    let v = plain()?;
                    profile.custom.insert(custom.to_owned(), v);
                }
            }
            offset += piece.len() + 1;
        }
        for (name, value) in [("p50", p50), ("p99", p99)] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(ProfileError {
                    input: text.to_owned(),
                    position: 0,
                    message: format!("`{name}` must be above 0ms"),
                });
            }
        }
        match (p50, p99) {
            (Some(p50), Some(p99)) if p99 < p50 => {
                return Err(ProfileError {
                    input: text.to_owned(),
                    position: 0,
                    message: format!("p99 ({p99}ms) is below p50 ({p50}ms)"),
                });
            }
            (Some(p50), Some(p99)) => {
                profile.p50_ms = p50;
                profile.latency_sigma = ((p99 / p50).ln() / Z99).max(1e-6);
            }
            (Some(p50), None) => profile.p50_ms = p50,
            (None, Some(p99)) => profile.p50_ms = p99 / (profile.latency_sigma * Z99).exp(),
            (None, None) => {}
        }
        Ok(profile)
    }
}

/// A [`MetricsSource`] that makes windows up from [`SyntheticProfile`]s, following the
/// routing in a [`SimTraffic`]. Deterministic for a given seed and order of queries.
///
/// Requests are Poisson, errors binomial, latency log-normal; at most `max_samples`
/// latency and custom samples are kept per window (a uniform subsample).
pub struct SyntheticMetrics {
    traffic: SimTraffic,
    agent: AgentId,
    profiles: HashMap<DeploymentId, SyntheticProfile>,
    default_rps: f64,
    max_samples: usize,
    rng: Mutex<StdRng>,
}

impl fmt::Debug for SyntheticMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticMetrics")
            .field("agent", &self.agent)
            .field("profiles", &self.profiles.len())
            .field("max_samples", &self.max_samples)
            .finish()
    }
}

impl SyntheticMetrics {
    /// Metrics for `agent`'s deployments, following `traffic`.
    pub fn new(traffic: SimTraffic, agent: AgentId, seed: u64) -> Self {
        SyntheticMetrics {
            traffic,
            agent,
            profiles: HashMap::new(),
            default_rps: 10.0,
            max_samples: 50,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Sets how `deployment` behaves.
    pub fn with_profile(mut self, deployment: DeploymentId, profile: SyntheticProfile) -> Self {
        if let Some(rps) = profile.rps {
            self.default_rps = rps;
        }
        self.profiles.insert(deployment, profile);
        self
    }

    /// Keeps at most `max` samples per window (default 50).
    pub fn with_max_samples(mut self, max: usize) -> Self {
        self.max_samples = max.max(1);
        self
    }

    fn generate(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> MetricWindow {
        let mut window = MetricWindow::empty(start, end);
        let Some(profile) = self.profiles.get(deployment) else {
            return window;
        };
        let share = self.traffic.share(&self.agent, deployment, start, end);
        let seconds = (end - start).as_secs_f64();
        let expected = profile.rps.unwrap_or(self.default_rps) * seconds * share;
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let requests = match Poisson::new(expected) {
            Ok(poisson) if expected > 0.0 => poisson.sample(&mut *rng) as u64,
            _ => 0,
        };
        window.requests = requests;
        if requests == 0 {
            return window;
        }
        window.errors = Binomial::new(requests, profile.error_rate.clamp(0.0, 1.0))
            .map_or(0, |b| b.sample(&mut *rng));
        let sessions = (requests as f64 / profile.messages_per_session).ceil() as u64;
        window.sessions = sessions;
        window.cost =
            profile.cost_per_request * requests as f64 + profile.cost_per_session * sessions as f64;
        let samples = (requests as usize).min(self.max_samples);
        if let Ok(latency) = LogNormal::new(profile.p50_ms.ln(), profile.latency_sigma) {
            window.latency_ms = (0..samples).map(|_| latency.sample(&mut *rng)).collect();
        }
        for (name, mean) in &profile.custom {
            if let Ok(normal) = Normal::new(*mean, mean.abs() * 0.05) {
                let values = (0..samples)
                    .map(|_| normal.sample(&mut *rng).max(0.0))
                    .collect();
                window.custom.insert(name.clone(), values);
            }
        }
        let mirrored = self
            .traffic
            .shadow(&self.agent)
            .is_some_and(|s| &s.deployment == deployment);
        if mirrored {
            let matches = (0..samples)
                .map(|_| {
                    if rng.random::<f64>() < profile.mismatch {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect();
            window
                .custom
                .insert(OUTPUT_MATCH_METRIC.to_owned(), matches);
        }
        window
    }
}

#[async_trait]
impl MetricsSource for SyntheticMetrics {
    async fn window(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MetricWindow, MetricsError> {
        Ok(self.generate(deployment, start, end))
    }
}

/// Validation and warm-up that take a set time on the clock and give a set answer.
#[derive(Debug, Clone)]
pub struct SimChecks {
    clock: Arc<dyn Clock>,
    verdict: ValidationVerdict,
    validation_time: Duration,
    warm_up: WarmUpReport,
    warm_up_time: Duration,
}

impl SimChecks {
    /// Checks that pass, taking no time.
    pub fn passing(clock: Arc<dyn Clock>) -> Self {
        SimChecks {
            clock,
            verdict: ValidationVerdict::passed("assumed: simulations do not run validation"),
            validation_time: Duration::ZERO,
            warm_up: WarmUpReport::ready("simulated"),
            warm_up_time: Duration::ZERO,
        }
    }

    /// Answers validation with `verdict` after `time`.
    pub fn with_validation(mut self, verdict: ValidationVerdict, time: Duration) -> Self {
        self.verdict = verdict;
        self.validation_time = time;
        self
    }

    /// Answers warm-up with `report` after `time`.
    pub fn with_warm_up(mut self, report: WarmUpReport, time: Duration) -> Self {
        self.warm_up = report;
        self.warm_up_time = time;
        self
    }
}

#[async_trait]
impl CandidateChecks for SimChecks {
    async fn validate(&self, _candidate: &Deployment) -> ValidationVerdict {
        self.clock.sleep(self.validation_time).await;
        self.verdict.clone()
    }

    async fn warm_up(&self, _candidate: &Deployment) -> WarmUpReport {
        self.clock.sleep(self.warm_up_time).await;
        self.warm_up.clone()
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// The strategy's configuration is invalid.
    #[error("invalid strategy: {0}")]
    Strategy(#[from] crate::config::ConfigError),
    /// The driver could not start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Setting up the baseline failed.
    #[error("could not set up the simulated baseline: {0}")]
    Setup(String),
}

/// A rollout in virtual time against synthetic metrics, as `caxton simulate` runs it.
///
/// ```
/// use caxton_strategies::{RolloutSpec, Outcome};
/// use caxton_strategies::sim::Simulation;
///
/// let spec = RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%,p99>100ms"))?;
/// let good = Simulation::new(spec.clone(), "error_rate=0.2%,p99=40ms,rps=50".parse()?, "error_rate=0.2%,p99=40ms".parse()?);
/// assert_eq!(good.run_blocking(None)?.outcome, Outcome::Promoted);
/// let bad = Simulation::new(spec, "error_rate=0.2%,p99=40ms,rps=50".parse()?, "error_rate=5%,p99=40ms".parse()?);
/// assert_eq!(bad.run_blocking(None)?.outcome.as_str(), "rolled_back");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Simulation {
    spec: RolloutSpec,
    baseline: SyntheticProfile,
    candidate: SyntheticProfile,
    seed: u64,
    sessions: SessionModel,
    commands: Vec<(Duration, crate::strategy::Command)>,
    validation: Option<ValidationVerdict>,
}

/// A finished simulation and the joints it ran on.
#[derive(Debug)]
pub struct SimulationRun {
    /// How the rollout ended.
    pub report: RolloutReport,
    /// The registry, with every deployment and its audit history.
    pub store: Arc<MemoryStore>,
    /// Traffic control, with every change it recorded.
    pub traffic: SimTraffic,
    /// The simulated agent.
    pub agent: AgentId,
    /// The production deployment the rollout started from.
    pub baseline: DeploymentId,
    /// The candidate.
    pub candidate: DeploymentId,
}

impl Simulation {
    /// A simulation of `spec` with these behaviours and seed 0.
    pub fn new(spec: RolloutSpec, baseline: SyntheticProfile, candidate: SyntheticProfile) -> Self {
        Simulation {
            spec,
            baseline,
            candidate,
            seed: 0,
            sessions: SessionModel::default(),
            commands: Vec::new(),
            validation: None,
        }
    }

    /// Sets the random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets how sessions arrive and last (they matter for rainbow).
    pub fn sessions(mut self, model: SessionModel) -> Self {
        self.sessions = model;
        self
    }

    /// Delivers an operator command `after` the rollout starts.
    pub fn command(mut self, after: Duration, command: crate::strategy::Command) -> Self {
        self.commands.push((after, command));
        self
    }

    /// Answers validation with `verdict` (by default every candidate passes).
    pub fn validation(mut self, verdict: ValidationVerdict) -> Self {
        self.validation = Some(verdict);
        self
    }

    /// Runs the rollout to its end in virtual time.
    pub async fn run(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<RolloutReport, SimulationError> {
        Ok(self.run_with_joints(events).await?.report)
    }

    /// Runs the rollout and hands back the registry and traffic control it ran on, for
    /// inspection.
    pub async fn run_with_joints(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<SimulationRun, SimulationError> {
        let strategy = self.spec.strategy.build()?;
        // A fixed start keeps timelines and audit times the same from run to run.
        let clock = ManualClock::auto_advancing(Timestamp::from_millis(1_767_225_600_000));
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let store = Arc::new(MemoryStore::with_clock(Arc::clone(&clock)));
        let traffic = SimTraffic::new(Arc::clone(&clock))
            .with_sessions(self.sessions, self.seed ^ 0x5e55_1035);
        let agent =
            AgentId::new("simulated-agent").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let baseline_id =
            DeploymentId::new("baseline").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let candidate_id =
            DeploymentId::new("candidate").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let version = |code: &[u8]| {
            VersionTuple::new(
                CodeLayer::from_module(code),
                ModelLayer::new("simulated", "model", "1"),
                PromptLayer::from_prompt("simulated", &[]),
                ToolsLayer::from_definitions(&serde_json::json!([])),
            )
        };
        let setup = |e: &dyn fmt::Display| SimulationError::Setup(e.to_string());
        let baseline = store
            .create(
                NewDeployment::builder(agent.clone(), version(b"simulated baseline"))
                    .id(baseline_id.clone())
                    .build(),
            )
            .await
            .map_err(|e| setup(&e))?;
        for event in [
            LifecycleEvent::BeginValidation,
            LifecycleEvent::ValidationPassed,
            LifecycleEvent::WarmUpPassed,
        ] {
            store
                .transition(&agent, &baseline.id, event, "simulated baseline")
                .await
                .map_err(|e| setup(&e))?;
        }
        store
            .promote_if_none(&agent, &baseline.id, "simulated baseline")
            .await
            .map_err(|e| setup(&e))?;
        traffic
            .register(&agent, &baseline.id)
            .await
            .map_err(|e| setup(&e))?;
        traffic
            .promote(&agent, &baseline.id)
            .await
            .map_err(|e| setup(&e))?;
        let metrics = SyntheticMetrics::new(traffic.clone(), agent.clone(), self.seed)
            .with_profile(candidate_id.clone(), self.candidate.clone())
            .with_profile(baseline_id.clone(), self.baseline.clone());
        let mut checks = SimChecks::passing(Arc::clone(&clock));
        if let Some(verdict) = &self.validation {
            checks = checks.with_validation(verdict.clone(), Duration::ZERO);
        }
        let mut builder = RolloutDriver::builder(
            store.clone(),
            Arc::new(traffic.clone()),
            Arc::new(metrics),
            Arc::clone(&clock),
            Arc::new(checks),
        );
        if let Some(events) = events {
            builder = builder.events(events);
        }
        let driver = builder.build();
        let commands = self
            .commands
            .iter()
            .cloned()
            .fold(Commands::none(), |c, (after, command)| c.at(after, command));
        let new = NewDeployment::builder(agent.clone(), version(b"simulated candidate"))
            .id(candidate_id.clone())
            .build();
        let report = driver.run(new, strategy, commands).await?;
        Ok(SimulationRun {
            report,
            store,
            traffic,
            agent,
            baseline: baseline_id,
            candidate: candidate_id,
        })
    }

    /// [`run`](Simulation::run) on the current thread.
    pub fn run_blocking(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<RolloutReport, SimulationError> {
        futures::executor::block_on(self.run(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_units_and_name_the_position_of_errors() {
        let p: SyntheticProfile = "error_rate=0.2%,p99=40ms,rps=50".parse().unwrap();
        assert!((p.error_rate - 0.002).abs() < 1e-12);
        assert_eq!(p.rps, Some(50.0));
        let p99 = (p.p50_ms.ln() + p.latency_sigma * Z99).exp();
        assert!((p99 - 40.0).abs() < 1e-9);
        let both: SyntheticProfile = "p50=10ms,p99=0.1s,fuel_per_message=1e6".parse().unwrap();
        assert!((both.p50_ms - 10.0).abs() < 1e-12);
        assert!((both.latency_sigma - (10f64.ln() / Z99)).abs() < 1e-12);
        assert_eq!(both.custom["fuel_per_message"], 1e6);

        let err = "error_rate=0.2%,p99=40"
            .parse::<SyntheticProfile>()
            .unwrap_err();
        assert_eq!(err.position, 20, "{err}");
        assert!(err.message.contains("`ms`"), "{err}");
        let err = "error_rate=0.2%,eror_rate=1%"
            .parse::<SyntheticProfile>()
            .unwrap_err();
        assert_eq!(err.position, 16);
        assert!(err.message.contains("did you mean `error_rate`"));
        let err = "rps".parse::<SyntheticProfile>().unwrap_err();
        assert!(err.message.contains("name=value"));
        assert!("error_rate=150%".parse::<SyntheticProfile>().is_err());
        assert!("p50=50ms,p99=10ms".parse::<SyntheticProfile>().is_err());
    }

    #[test]
    fn time_weighted_shares_follow_the_changes() {
        let changes = vec![
            (Timestamp::from_millis(0), 0.0),
            (Timestamp::from_millis(50), 1.0),
        ];
        let share = time_weighted(
            &changes,
            Timestamp::from_millis(0),
            Timestamp::from_millis(100),
            |v| *v,
        );
        assert!((share - 0.5).abs() < 1e-12);
        let later = time_weighted(
            &changes,
            Timestamp::from_millis(60),
            Timestamp::from_millis(60),
            |v| *v,
        );
        assert_eq!(later, 1.0);
    }
}
