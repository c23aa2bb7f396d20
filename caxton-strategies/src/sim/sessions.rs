//! The simulated session population: how sessions arrive and last, where they are
//! pinned, and how pinned sessions move when their deployment goes away.

use std::time::Duration;

use caxton_core::{AgentId, DeploymentId, Timestamp};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

use super::traffic::TrafficState;

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

#[derive(Debug, Clone)]
pub(super) struct SimSession {
    pub(super) id: u64,
    pub(super) deployment: DeploymentId,
    pub(super) ends_at: Timestamp,
}

#[derive(Debug)]
pub(super) struct Sessions {
    pub(super) model: SessionModel,
    pub(super) rng: StdRng,
    pub(super) next_id: u64,
    pub(super) next_arrival: Option<Timestamp>,
    pub(super) simulated_to: Timestamp,
    pub(super) live: Vec<SimSession>,
}

impl TrafficState {
    pub(super) fn pinned_to(&self, deployment: &DeploymentId) -> u64 {
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

    /// Runs the session simulation up to `to`.
    pub(super) fn advance_sessions(&mut self, to: Timestamp) {
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
    pub(super) fn seed_sessions(&mut self, agent: &AgentId, now: Timestamp) {
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
    pub(super) fn move_sessions(
        &mut self,
        deployment: &DeploymentId,
        at: Timestamp,
        cause: MoveCause,
    ) -> u64 {
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
