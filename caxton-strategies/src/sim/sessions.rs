//! The simulated session population: how sessions arrive and last, where they are
//! pinned, and how pinned sessions move when their deployment goes away.

use std::time::Duration;

use caxton_core::{AgentId, DeploymentId, Timestamp};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

use super::traffic::TrafficState;

/// Whether an agent keeps state per session (core's type): a sessions agent has session
/// affinity on from its first deployment, so every session stays on the version that
/// served its first message; a stateless agent's messages follow the split.
pub use caxton_core::SessionMode;

/// How simulated sessions arrive and last. Sessions matter once session affinity is on:
/// then each is pinned to the deployment that served its first message after affinity
/// was turned on, as the router pins it.
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
    /// The route was rolled back to one that no longer sends traffic to its deployment.
    RolledBack,
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

/// One simulated session.
#[derive(Debug, Clone)]
pub(super) struct SimSession {
    pub(super) id: u64,
    /// Where the session falls in a split, in `0..1`; fixed for its life, as the router's
    /// session point is.
    pub(super) point: f64,
    /// The deployment it is pinned to; `None` while it follows the split.
    pub(super) pin: Option<DeploymentId>,
    pub(super) ends_at: Timestamp,
}

/// The session population of the one agent whose sessions are simulated.
#[derive(Debug)]
pub(super) struct Sessions {
    pub(super) model: SessionModel,
    pub(super) rng: StdRng,
    /// The agent, once its population exists; see [`TrafficState::populate`].
    pub(super) agent: Option<AgentId>,
    pub(super) next_id: u64,
    pub(super) next_arrival: Option<Timestamp>,
    pub(super) simulated_to: Timestamp,
    pub(super) live: Vec<SimSession>,
}

impl Sessions {
    /// A population of `model`, not yet started.
    pub(super) fn new(model: SessionModel, rng: StdRng, now: Timestamp) -> Self {
        Sessions {
            model,
            rng,
            agent: None,
            next_id: 0,
            next_arrival: None,
            simulated_to: now,
            live: Vec::new(),
        }
    }

    fn length(&self) -> Option<Exp<f64>> {
        Exp::new(1.0 / self.model.mean_length.as_secs_f64().max(1e-3)).ok()
    }
}

impl TrafficState {
    /// Live sessions pinned to `deployment`, simulated or pinned by hand.
    pub(super) fn pinned_to(&self, deployment: &DeploymentId) -> u64 {
        let simulated = self.sessions.as_ref().map_or(0, |s| {
            s.live
                .iter()
                .filter(|x| x.pin.as_ref() == Some(deployment))
                .count()
        });
        let explicit = self
            .explicit_pins
            .values()
            .filter(|d| *d == deployment)
            .count();
        (simulated + explicit) as u64
    }

    /// The share of `agent`'s live simulated sessions that `deployment` serves now: those
    /// pinned to it and the unpinned ones the route sends to it. `None` without a
    /// population for `agent`.
    pub(super) fn session_share(&self, agent: &AgentId, deployment: &DeploymentId) -> Option<f64> {
        let sessions = self.sessions.as_ref()?;
        if sessions.agent.as_ref() != Some(agent) || sessions.live.is_empty() {
            return None;
        }
        let served = sessions
            .live
            .iter()
            .filter(|s| match &s.pin {
                Some(pin) => pin == deployment,
                None => self.pick(agent, s.point).as_ref() == Some(deployment),
            })
            .count();
        Some(served as f64 / sessions.live.len() as f64)
    }

    /// Brings the simulated population into being for `agent` at `now`, once: the
    /// steady-state population of `arrivals × mean length` sessions, each with an
    /// exponential remaining life (the same law as simulating them from long ago). They
    /// are pinned only if affinity was already on when they started, that is, when it is
    /// on now and `pinned` says it was on before: the router pins at a session's first
    /// message after affinity is on, never before.
    ///
    /// Before this, an agent's sessions are not tracked one by one: without affinity
    /// they follow the split, which the split share describes in full.
    pub(super) fn populate(&mut self, agent: &AgentId, now: Timestamp, pinned: bool) {
        let Some(mut sessions) = self.sessions.take() else {
            return;
        };
        if sessions.agent.is_none() {
            sessions.agent = Some(agent.clone());
            let population =
                sessions.model.arrivals_per_sec * sessions.model.mean_length.as_secs_f64();
            if let Some(length) = sessions.length() {
                for _ in 0..population.round() as u64 {
                    let point: f64 = sessions.rng.random();
                    let pin = if pinned {
                        self.pick(agent, point)
                    } else {
                        None
                    };
                    let ends_at = now + secs(length.sample(&mut sessions.rng));
                    sessions.live.push(SimSession {
                        id: sessions.next_id,
                        point,
                        pin,
                        ends_at,
                    });
                    sessions.next_id += 1;
                }
            }
            sessions.simulated_to = now;
            sessions.next_arrival = None;
        }
        self.sessions = Some(sessions);
    }

    /// Runs the session simulation up to `to`.
    ///
    /// The route is the same over `(simulated_to, to]`: every change runs this first. So,
    /// with affinity on, an unpinned session sends its next message under that route and
    /// is pinned where it sends it, and a session arriving then is pinned where its first
    /// message goes. Nothing is pinned at the instant affinity turns on, because changes
    /// made at that same instant (a promotion right after) come before the next message.
    pub(super) fn advance_sessions(&mut self, to: Timestamp) {
        let Some(mut sessions) = self.sessions.take() else {
            return;
        };
        if let Some(agent) = sessions.agent.clone()
            && to > sessions.simulated_to
        {
            let affinity = self
                .agents
                .get(&agent)
                .is_some_and(|a| a.route_affinity().is_some());
            let from = sessions.simulated_to;
            if affinity {
                for session in sessions
                    .live
                    .iter_mut()
                    .filter(|s| s.pin.is_none() && s.ends_at > from)
                {
                    session.pin = self.pick(&agent, session.point);
                }
            }
            let gap = Exp::new(sessions.model.arrivals_per_sec.max(1e-9)).ok();
            if let (Some(gap), Some(length)) = (gap, sessions.length()) {
                let mut next = sessions
                    .next_arrival
                    .unwrap_or_else(|| from + secs(gap.sample(&mut sessions.rng)));
                while next <= to {
                    sessions.live.retain(|s| s.ends_at > next);
                    let point: f64 = sessions.rng.random();
                    let pin = if affinity {
                        self.pick(&agent, point)
                    } else {
                        None
                    };
                    let ends_at = next + secs(length.sample(&mut sessions.rng));
                    sessions.live.push(SimSession {
                        id: sessions.next_id,
                        point,
                        pin,
                        ends_at,
                    });
                    sessions.next_id += 1;
                    next = next + secs(gap.sample(&mut sessions.rng));
                }
                sessions.next_arrival = Some(next);
            }
            sessions.simulated_to = to;
        }
        sessions.live.retain(|s| s.ends_at > to);
        self.sessions = Some(sessions);
    }

    /// Drops the pins of the sessions pinned to `deployment`, as the router does; each
    /// is recorded as a move. Their next message follows the route (and is pinned again
    /// while affinity is on). Explicit pins to it are dropped too. Returns how many pins
    /// were dropped.
    pub(super) fn unpin(
        &mut self,
        deployment: &DeploymentId,
        at: Timestamp,
        cause: MoveCause,
    ) -> u64 {
        let mut moved = 0;
        if let Some(sessions) = self.sessions.as_mut() {
            for session in sessions
                .live
                .iter_mut()
                .filter(|s| s.pin.as_ref() == Some(deployment))
            {
                session.pin = None;
                self.moves.push(SessionMove {
                    session: session.id,
                    from: deployment.clone(),
                    at,
                    cause,
                });
                moved += 1;
            }
        }
        let before = self.explicit_pins.len();
        self.explicit_pins.retain(|_, d| d != deployment);
        moved + (before - self.explicit_pins.len()) as u64
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 1e9))
}
