//! Sending messages: route, run, record, mirror.

use std::time::Duration;

use caxton_core::{AgentId, DeploymentId, Observation, SessionId};
use caxton_router::{RouteDecision, RouterReader};

use crate::error::SendError;
use crate::host::Inner;
use crate::request::SessionMode;
use crate::shadow::ShadowCopy;

/// Custom metric: fuel burnt by one message (when the runtime meters fuel).
pub const FUEL_METRIC: &str = "fuel_per_message";
/// Custom metric: linear memory after one message, in bytes.
pub const MEMORY_METRIC: &str = "memory_bytes";

/// A reply, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The deployment that answered. Only a primary deployment's reply reaches a caller;
    /// a shadow's never does.
    pub deployment: DeploymentId,
    /// The reply's bytes.
    pub reply: Vec<u8>,
    /// Whether the reply is of kind `error` (an application error, still a reply).
    pub app_error: bool,
    /// How long the agent took.
    pub latency: Duration,
    /// Whether the message followed a session pin.
    pub pinned: bool,
    /// The shadow a copy of the message was queued for, if any.
    pub mirrored_to: Option<DeploymentId>,
}

/// Whether a reply is a JSON object of kind `error`.
pub fn is_error_reply(reply: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: &'a str,
    }
    // Cheap first looks: an error reply is a JSON object naming "error"; most replies
    // are not, and need no parse.
    let first = reply.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') || memchr::memmem::find(reply, b"\"error\"").is_none() {
        return false;
    }
    serde_json::from_slice::<Kind<'_>>(reply).is_ok_and(|k| k.kind == "error")
}

impl Inner {
    /// Runs one routed message and does the bookkeeping. `decision` is held until the
    /// reply is back, so the message counts in flight on its deployment all along.
    pub(crate) fn deliver(
        &self,
        agent: &AgentId,
        decision: RouteDecision<'_>,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Delivery, SendError> {
        let deployment = decision.deployment();
        let (stateful, observed, meters) = match self.agents.get(agent) {
            Some(state) => (
                state.sessions == SessionMode::Sessions,
                state.observed.load(std::sync::atomic::Ordering::Relaxed),
                Some(state.meters.clone()),
            ),
            None => (false, true, None),
        };
        let runtime_session = if stateful { session } else { None };
        let result = self.runtime.handle(deployment, runtime_session, message);
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                if observed {
                    let mut observation = Observation::failed(self.clock.now(), Duration::ZERO);
                    if let Some(session) = session {
                        observation = observation.in_session(session.clone());
                    }
                    self.metrics.record(deployment, observation);
                }
                if let Some(meters) = &meters {
                    meters.failed.increment(1);
                }
                return Err(SendError::Agent(error));
            }
        };
        let app_error = is_error_reply(&reply.bytes);
        // The gates read observations only while a rollout of the agent runs; between
        // rollouts the message costs no observation (the counters below still count it).
        if observed {
            let mut observation = Observation::ok(self.clock.now(), reply.stats.latency);
            observation.error = app_error;
            if let Some(session) = session {
                observation = observation.in_session(session.clone());
            }
            if let Some(fuel) = reply.stats.fuel_consumed {
                observation = observation.with_metric(FUEL_METRIC, fuel as f64);
            }
            observation = observation.with_metric(MEMORY_METRIC, reply.stats.memory_bytes as f64);
            self.metrics.record(deployment, observation);
        }
        if let Some(meters) = &meters {
            if app_error {
                meters.app_error.increment(1);
            } else {
                meters.ok.increment(1);
            }
            meters.latency.record(reply.stats.latency.as_secs_f64());
        }
        let mirrored_to = decision.shadow().cloned();
        if let Some(shadow) = &mirrored_to {
            self.shadow.offer(ShadowCopy {
                shadow: shadow.clone(),
                message: message.to_vec(),
                primary_reply: reply.bytes.clone(),
                session: session.cloned(),
            });
        }
        let delivery = Delivery {
            deployment: deployment.clone(),
            reply: reply.bytes,
            app_error,
            latency: reply.stats.latency,
            pinned: decision.is_pinned(),
            mirrored_to,
        };
        drop(decision);
        Ok(delivery)
    }
}

/// A sending handle for one thread or task that sends many messages: the router's
/// per-thread fast path ([`RouterReader`]) instead of two protected loads per message.
/// Changes (promotions, rollbacks, drains) are seen at once all the same.
pub struct HostSender<'h> {
    inner: &'h Inner,
    reader: RouterReader<'h>,
}

impl std::fmt::Debug for HostSender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSender").finish_non_exhaustive()
    }
}

impl<'h> HostSender<'h> {
    pub(crate) fn new(inner: &'h Inner) -> Self {
        HostSender {
            inner,
            reader: inner.router.reader(),
        }
    }

    /// Sends one message of `agent`, in `session` when given, like
    /// [`Host::send`](crate::Host::send).
    pub fn send(
        &mut self,
        agent: &AgentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Delivery, SendError> {
        let decision = self.reader.route(agent, session)?;
        self.inner.deliver(agent, decision, session, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_recognised_by_kind() {
        assert!(is_error_reply(br#"{"kind":"error","reason":"x"}"#));
        assert!(is_error_reply(br#"{ "kind" : "error" }"#));
        assert!(!is_error_reply(br#"{"kind":"receipt","note":"error"}"#));
        assert!(!is_error_reply(br#"{"kind":"receipt"}"#));
        assert!(!is_error_reply(b"not json \"error\""));
    }
}
