//! [`SimTraffic`]: the router's semantics in memory, in virtual time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use caxton_core::{
    AgentId, Clock, DeploymentId, DrainPhase, DrainReport, DrainStatus, SessionAffinity, SessionId,
    ShadowConfig, Split, Timestamp, TrafficControl, TrafficError,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::sessions::{MoveCause, SessionModel, SessionMove, Sessions};

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

/// An agent's route. As in the router, session affinity is part of it: changing it is a
/// route change, and a rollback restores it with the rest.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Route {
    pub(super) production: Option<DeploymentId>,
    pub(super) split: Option<Split>,
    pub(super) affinity: Option<SessionAffinity>,
}

#[derive(Debug, Default)]
pub(super) struct AgentState {
    pub(super) route: Option<Route>,
    pub(super) history: Vec<Route>,
    pub(super) shadow: Option<ShadowConfig>,
    /// Splits over time, for traffic shares.
    pub(super) splits: Vec<(Timestamp, Option<Split>)>,
    /// Mirrors over time.
    pub(super) shadows: Vec<(Timestamp, Option<ShadowConfig>)>,
}

impl AgentState {
    /// Session affinity as the current route has it.
    pub(super) fn route_affinity(&self) -> Option<SessionAffinity> {
        self.route.as_ref().and_then(|r| r.affinity)
    }

    /// Whether new traffic or shadow copies may reach `deployment` under `route` (the
    /// router's `routes_to`).
    fn routes_to(&self, route: &Route, deployment: &DeploymentId) -> bool {
        route.production.as_ref() == Some(deployment)
            || route.split.as_ref().is_some_and(|s| s.contains(deployment))
            || self
                .shadow
                .as_ref()
                .is_some_and(|s| &s.deployment == deployment)
    }
}

#[derive(Debug)]
pub(super) struct DeploymentState {
    pub(super) agent: AgentId,
    pub(super) phase: DrainPhase,
}

#[derive(Debug)]
pub(super) struct TrafficState {
    pub(super) agents: HashMap<AgentId, AgentState>,
    pub(super) deployments: HashMap<DeploymentId, DeploymentState>,
    pub(super) retired: Vec<DeploymentId>,
    pub(super) explicit_pins: HashMap<SessionId, DeploymentId>,
    pub(super) sessions: Option<Sessions>,
    pub(super) moves: Vec<SessionMove>,
    pub(super) actions: Vec<(Timestamp, TrafficAction)>,
}

/// A [`TrafficControl`] in memory with the router's semantics, recording every change.
///
/// Clones share state. With a [`SessionModel`], sessions arrive and end in virtual time.
/// As in the router, a session is pinned only while session affinity is on: its first
/// message after affinity is on pins it where the route sends that message, and it stays
/// there until it ends, affinity is turned off, a rollback takes the route away from its
/// deployment, or that deployment's drain is closed. Sessions that began while affinity
/// was off follow the split, so turning affinity on and promoting at the same moment (as a
/// rainbow switch does) moves them to the new version; a host keeps them by turning
/// affinity on when it registers a sessions agent's first deployment (see
/// [`SessionMode`](super::SessionMode)). Sessions are simulated one by one for one agent:
/// the first whose affinity is on while it has a production route. Messages complete at
/// once in this model, so nothing is ever in flight.
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
        let now = self.clock.now();
        self.lock().sessions = Some(Sessions::new(model, StdRng::seed_from_u64(seed), now));
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

    /// Live sessions pinned to `deployment`, now: simulated ones and those pinned by hand.
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
        // With affinity on, traffic follows the live sessions, wherever they are pinned.
        let served = agent_state
            .route_affinity()
            .and_then(|_| state.session_share(agent, deployment))
            .unwrap_or_else(|| split_share(agent_state, deployment, start, end));
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

    /// The current route of `agent`, or an empty one.
    fn route(&self, agent: &AgentId) -> Route {
        self.agents
            .get(agent)
            .and_then(|a| a.route.clone())
            .unwrap_or(Route {
                production: None,
                split: None,
                affinity: None,
            })
    }

    /// Publishes `route` for `agent`, as the router's `change` does: an unchanged route is
    /// no change, and a route without production is not kept to roll back to.
    fn set_route(&mut self, agent: &AgentId, route: Route, at: Timestamp) {
        let state = self.agent(agent);
        let previous = state.route.replace(route.clone());
        if previous.as_ref() == Some(&route) {
            return;
        }
        let was_on = previous.as_ref().is_some_and(|r| r.affinity.is_some());
        if let Some(previous) = previous.filter(|r| r.production.is_some()) {
            state.history.push(previous);
        }
        state.splits.push((at, route.split.clone()));
        self.affinity_changed(agent, was_on, &route, at);
    }

    /// Follows an affinity change: turning it off drops every pin of the agent; with it
    /// on and a production route, the agent's sessions are simulated from now on, pinned
    /// already if affinity was on before.
    fn affinity_changed(&mut self, agent: &AgentId, was_on: bool, route: &Route, at: Timestamp) {
        let on = route.affinity.is_some();
        if was_on && !on {
            for deployment in self.deployments_of(agent) {
                self.unpin(&deployment, at, MoveCause::AffinityOff);
            }
        }
        if on && route.production.is_some() {
            self.populate(agent, at, was_on);
        }
    }

    /// The registered deployments of `agent`, in a fixed order.
    fn deployments_of(&self, agent: &AgentId) -> Vec<DeploymentId> {
        let mut ids: Vec<DeploymentId> = self
            .deployments
            .iter()
            .filter(|(_, d)| &d.agent == agent)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Where a new session of `agent` would go now.
    pub(super) fn pick(&self, agent: &AgentId, draw: f64) -> Option<DeploymentId> {
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
            ..state.route(agent)
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
        let route = Route {
            split: Some(split.clone()),
            ..state.route(agent)
        };
        state.set_route(agent, route, now);
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
        let route = Route {
            affinity,
            ..state.route(agent)
        };
        state.set_route(agent, route, now);
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
        // As in the router: pins exist only while affinity is on.
        if state
            .agents
            .get(agent)
            .is_none_or(|a| a.route_affinity().is_none())
        {
            return Err(TrafficError::NoSessionAffinity {
                agent: agent.clone(),
            });
        }
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
        let agent_state = state
            .agents
            .get(agent)
            .ok_or_else(|| TrafficError::UnknownAgent {
                agent: agent.clone(),
            })?;
        let previous =
            agent_state
                .history
                .last()
                .cloned()
                .ok_or_else(|| TrafficError::NothingToRollBack {
                    agent: agent.clone(),
                })?;
        // As in the router: a route naming a deployment that no longer runs is refused.
        let named = previous.production.iter().chain(
            previous
                .split
                .iter()
                .flat_map(|s| s.entries().iter().map(|e| &e.deployment)),
        );
        for deployment in named {
            state.routable(agent, deployment)?;
        }
        state.advance_sessions(now);
        let agent_state = state.agent(agent);
        agent_state.history.pop();
        agent_state.splits.push((now, previous.split.clone()));
        let replaced = agent_state.route.replace(previous.clone());
        // Pins on a deployment the restored route no longer names were made by the route
        // rolled back; they go with it.
        let dropped: Vec<DeploymentId> = match &replaced {
            Some(replaced) => {
                let agent_state = &state.agents[agent];
                state
                    .deployments_of(agent)
                    .into_iter()
                    .filter(|d| {
                        agent_state.routes_to(replaced, d) && !agent_state.routes_to(&previous, d)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        for deployment in dropped {
            state.unpin(&deployment, now, MoveCause::RolledBack);
        }
        let was_on = replaced.is_some_and(|r| r.affinity.is_some());
        state.affinity_changed(agent, was_on, &previous, now);
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
        let released = state.unpin(deployment, now, MoveCause::ForcedDrain);
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
        state.unpin(deployment, now, MoveCause::Retired);
        state.retired.push(deployment.clone());
        Self::record(&mut state, now, TrafficAction::Retired(deployment.clone()));
        Ok(())
    }

    fn in_flight(&self, _deployment: &DeploymentId) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use caxton_core::ManualClock;
    use futures::executor::block_on;

    use crate::sim::SessionModel;

    fn id(name: &str) -> DeploymentId {
        DeploymentId::new(name).unwrap()
    }

    /// Traffic control with sessions (one a second, five minutes long on average) and
    /// two deployments of `chat`, v1 and v2, registered.
    fn chat() -> (ManualClock, SimTraffic, AgentId) {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let traffic =
            SimTraffic::new(Arc::new(clock.clone())).with_sessions(SessionModel::default(), 7);
        let agent = AgentId::new("chat").unwrap();
        for v in ["v1", "v2"] {
            block_on(traffic.register(&agent, &id(v))).unwrap();
        }
        (clock, traffic, agent)
    }

    fn affinity() -> Option<SessionAffinity> {
        Some(SessionAffinity {
            idle_timeout: Duration::from_secs(1_800),
        })
    }

    #[test]
    fn sessions_that_began_without_affinity_are_not_pinned_when_it_turns_on() {
        let (clock, traffic, agent) = chat();
        block_on(traffic.promote(&agent, &id("v1"))).unwrap();
        clock.advance(Duration::from_secs(600));
        assert_eq!(traffic.live_sessions(&id("v1")), 0, "nothing pinned");
        // A rainbow switch of a stateless agent: affinity on and the promotion at once.
        block_on(traffic.set_session_affinity(&agent, affinity())).unwrap();
        block_on(traffic.promote(&agent, &id("v2"))).unwrap();
        clock.advance(Duration::from_secs(1));
        assert_eq!(traffic.live_sessions(&id("v1")), 0);
        // Their next message went to v2, which pinned them there.
        assert!(traffic.live_sessions(&id("v2")) > 250);
        let end = clock.now();
        let v1 = traffic.share(&agent, &id("v1"), end, end);
        assert_eq!(v1, 0.0);
    }

    #[test]
    fn a_sessions_agent_keeps_its_sessions_on_the_version_they_began_on() {
        let (clock, traffic, agent) = chat();
        // What a host does for a sessions agent: affinity on at the first registration.
        block_on(traffic.set_session_affinity(&agent, affinity())).unwrap();
        block_on(traffic.promote(&agent, &id("v1"))).unwrap();
        clock.advance(Duration::from_secs(60));
        let before = traffic.live_sessions(&id("v1"));
        assert!(before > 250, "{before}");
        block_on(traffic.promote(&agent, &id("v2"))).unwrap();
        clock.advance(Duration::from_secs(60));
        let kept = traffic.live_sessions(&id("v1"));
        // Sessions end, none arrive on v1 any more; those left have not moved.
        assert!(kept > 150 && kept < before, "{kept} of {before}");
        assert!(traffic.live_sessions(&id("v2")) > 30);
        assert!(traffic.session_moves().is_empty());
    }

    #[test]
    fn pins_need_affinity_and_go_when_it_is_turned_off() {
        let (clock, traffic, agent) = chat();
        block_on(traffic.promote(&agent, &id("v1"))).unwrap();
        let session = SessionId::new("s-1").unwrap();
        assert!(matches!(
            block_on(traffic.pin_session(&agent, &session, &id("v1"))),
            Err(TrafficError::NoSessionAffinity { .. })
        ));
        block_on(traffic.set_session_affinity(&agent, affinity())).unwrap();
        block_on(traffic.pin_session(&agent, &session, &id("v1"))).unwrap();
        clock.advance(Duration::from_secs(60));
        let pinned = traffic.live_sessions(&id("v1"));
        assert!(pinned > 250, "{pinned}");
        block_on(traffic.set_session_affinity(&agent, None)).unwrap();
        assert_eq!(traffic.live_sessions(&id("v1")), 0);
        let moves = traffic.session_moves();
        assert_eq!(
            moves.len() as u64 + 1,
            pinned,
            "every simulated pin, and the explicit one"
        );
        assert!(moves.iter().all(|m| m.cause == MoveCause::AffinityOff));
    }

    #[test]
    fn a_rollback_drops_the_pins_of_the_route_it_undoes_and_restores_affinity() {
        let (clock, traffic, agent) = chat();
        block_on(traffic.set_session_affinity(&agent, affinity())).unwrap();
        block_on(traffic.promote(&agent, &id("v1"))).unwrap();
        let half = Split::canary(id("v1"), id("v2"), "50%".parse().unwrap()).unwrap();
        block_on(traffic.set_split(&agent, &half)).unwrap();
        clock.advance(Duration::from_secs(120));
        let on_v2 = traffic.live_sessions(&id("v2"));
        assert!(on_v2 > 50, "{on_v2}");
        block_on(traffic.rollback(&agent)).unwrap();
        assert_eq!(traffic.live_sessions(&id("v2")), 0);
        let moves = traffic.session_moves();
        assert_eq!(moves.len() as u64, on_v2);
        assert!(
            moves
                .iter()
                .all(|m| m.cause == MoveCause::RolledBack && m.from == id("v2"))
        );
        // Affinity is part of the route: rolling back past it turns it off.
        block_on(traffic.rollback(&agent)).unwrap_err();
        let (clock, traffic, agent) = chat();
        block_on(traffic.promote(&agent, &id("v1"))).unwrap();
        block_on(traffic.set_session_affinity(&agent, affinity())).unwrap();
        clock.advance(Duration::from_secs(60));
        assert!(traffic.live_sessions(&id("v1")) > 250);
        block_on(traffic.rollback(&agent)).unwrap();
        assert_eq!(traffic.live_sessions(&id("v1")), 0);
    }
}
