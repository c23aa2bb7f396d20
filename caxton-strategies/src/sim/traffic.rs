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

#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) production: Option<DeploymentId>,
    pub(super) split: Option<Split>,
}

#[derive(Debug, Default)]
pub(super) struct AgentState {
    pub(super) route: Option<Route>,
    pub(super) history: Vec<Route>,
    pub(super) shadow: Option<ShadowConfig>,
    pub(super) affinity: Option<SessionAffinity>,
    /// Splits over time, for traffic shares.
    pub(super) splits: Vec<(Timestamp, Option<Split>)>,
    /// Mirrors over time.
    pub(super) shadows: Vec<(Timestamp, Option<ShadowConfig>)>,
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
}
