//! Where one message goes, and the guard that counts it in flight until it is dropped.

use std::fmt;
use std::sync::Arc;

use arc_swap::Guard;
use caxton_core::{AgentId, DeploymentId};

use crate::route::AgentRoute;

/// Marks "no shadow" in [`RouteDecision::shadow_index`].
const NO_SHADOW: u32 = u32::MAX;

/// Where one message goes: the primary deployment, whether to mirror it to a shadow, and
/// the in-flight count that the message holds until this decision is dropped.
///
/// Keep the decision alive while the message is handled (and while its shadow copy runs, if
/// any); dropping it counts the message out, which is what a drain waits for.
///
/// The decision holds the route it was made with through an `arc_swap` guard rather than a
/// reference count, so routing writes no shared memory. It is `Send`: a host may move it to
/// another thread or hold it across an `.await`. Each thread has a few cheap guard slots;
/// a thread that holds more than about seven decisions at once still works, but further
/// routes on it take a shared reference count, so hosts with many messages in flight per
/// thread pay a little more per message.
#[must_use = "dropping the decision counts the message out at once"]
pub struct RouteDecision {
    route: Guard<Arc<AgentRoute>>,
    primary: u32,
    shadow_index: u32,
    shard: u32,
    pinned: bool,
}

impl RouteDecision {
    /// A decision whose counters were already counted in on `shard`.
    #[inline]
    pub(crate) fn new(
        route: Guard<Arc<AgentRoute>>,
        primary: u32,
        shadow: Option<u32>,
        shard: usize,
        pinned: bool,
    ) -> Self {
        RouteDecision {
            route,
            primary,
            shadow_index: shadow.unwrap_or(NO_SHADOW),
            shard: shard as u32,
            pinned,
        }
    }

    /// The deployment that handles the message and whose reply counts.
    #[inline]
    pub fn deployment(&self) -> &DeploymentId {
        &self.route.target(self.primary).id
    }

    /// The deployment the host should also send a copy to, if this message is sampled for
    /// the shadow. The shadow's reply never replaces the primary's.
    #[inline]
    pub fn shadow(&self) -> Option<&DeploymentId> {
        (self.shadow_index != NO_SHADOW).then(|| &self.route.target(self.shadow_index).id)
    }

    /// Whether the message followed a session pin rather than the agent's current split.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The agent the message is for.
    pub fn agent(&self) -> &AgentId {
        self.route.agent()
    }

    /// The route the decision was made with.
    pub fn agent_route(&self) -> &AgentRoute {
        &self.route
    }
}

impl Drop for RouteDecision {
    #[inline]
    fn drop(&mut self) {
        let shard = self.shard as usize;
        self.route.target(self.primary).counters.exit(shard);
        if self.shadow_index != NO_SHADOW {
            self.route.target(self.shadow_index).counters.exit(shard);
        }
    }
}

impl fmt::Debug for RouteDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteDecision")
            .field("agent", self.agent())
            .field("deployment", self.deployment())
            .field("shadow", &self.shadow())
            .field("pinned", &self.pinned)
            .field("generation", &self.route.generation())
            .finish()
    }
}
