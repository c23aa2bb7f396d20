//! Where one message goes, and the guard that counts it in flight until it is dropped.

use std::fmt;
use std::sync::atomic::AtomicU64;

use caxton_core::{AgentId, DeploymentId};

use crate::entry::{self, Counters, DeploymentEntry};

/// Bits of [`RouteDecision::tag`] that hold the counter shard (shards are at most 1024).
const SHARD_BITS: u32 = 10;
const SHARD_MASK: u64 = (1 << SHARD_BITS) - 1;
/// Set in the tag of a pinned message.
const PINNED: u64 = 1 << SHARD_BITS;
/// The route generation sits above the shard and the pin bit.
const GENERATION_SHIFT: u32 = SHARD_BITS + 1;

/// Where one message goes: the primary deployment, whether to mirror it to a shadow, and
/// the in-flight count that the message holds until this decision is dropped.
///
/// Keep the decision alive while the message is handled (and while its shadow copy runs, if
/// any); dropping it counts the message out, which is what a drain waits for.
///
/// The decision borrows the [`Router`](crate::Router) (`'r`): it points straight at the
/// deployments' entries, which the router keeps for its whole life, so making and dropping
/// one touches no reference count and no memory shared with other cores besides the
/// in-flight counter. It is `Send`: a host may hand it to another thread that the router
/// outlives (scoped threads, or a router in a `static` or leaked for the process). A host
/// that moves work to tasks needing `'static` converts it with
/// [`into_owned`](RouteDecision::into_owned).
#[must_use = "dropping the decision counts the message out at once"]
pub struct RouteDecision<'r> {
    primary: &'r DeploymentEntry,
    /// The primary's counter word on the decision's shard, so that dropping the decision
    /// is one atomic subtract with nothing to look up first.
    word: &'r AtomicU64,
    shadow: Option<&'r DeploymentEntry>,
    /// The generation, the pin bit and the shard in one word: three words in all keep the
    /// decision cheap to return and to move.
    tag: u64,
}

impl<'r> RouteDecision<'r> {
    /// A decision whose deployments were already counted in on `shard`; `word` is the
    /// primary's counter word on that shard.
    #[inline]
    pub(crate) fn new(
        primary: &'r DeploymentEntry,
        word: &'r AtomicU64,
        shadow: Option<&'r DeploymentEntry>,
        generation: u64,
        shard: u32,
        pinned: bool,
    ) -> Self {
        debug_assert!(u64::from(shard) <= SHARD_MASK);
        debug_assert!(std::ptr::eq(word, primary.counters().word(shard)));
        RouteDecision {
            primary,
            word,
            shadow,
            tag: generation << GENERATION_SHIFT
                | if pinned { PINNED } else { 0 }
                | u64::from(shard),
        }
    }

    #[inline]
    fn shard(&self) -> u32 {
        (self.tag & SHARD_MASK) as u32
    }

    /// The deployment that handles the message and whose reply counts.
    #[inline]
    pub fn deployment(&self) -> &'r DeploymentId {
        self.primary.id()
    }

    /// The deployment the host should also send a copy to, if this message is sampled for
    /// the shadow. The shadow's reply never replaces the primary's.
    #[inline]
    pub fn shadow(&self) -> Option<&'r DeploymentId> {
        self.shadow.map(DeploymentEntry::id)
    }

    /// Whether the message followed a session pin rather than the agent's current split.
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.tag & PINNED != 0
    }

    /// The agent the message is for.
    #[inline]
    pub fn agent(&self) -> &'r AgentId {
        self.primary.agent()
    }

    /// The [generation](crate::AgentRoute::generation) of the agent's route that the
    /// decision was made with (its low 53 bits, which a route reaches after 9·10¹⁵
    /// changes).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.tag >> GENERATION_SHIFT
    }

    /// The same decision, free of the router's lifetime: `'static` and `Send`, for hosts
    /// that hand messages to tasks or threads the router does not outlive. The in-flight
    /// count moves to the owned decision, which counts the message out when dropped.
    ///
    /// Cost: the owned decision holds its own references to the deployment's id, its
    /// agent's id and its counters (and the shadow's), so converting takes three or five
    /// atomic reference-count increments and dropping it as many decrements, on memory
    /// that every thread routing to the deployment shares; a borrowed decision takes none.
    /// Convert only the decisions that must leave the router's scope.
    pub fn into_owned(self) -> OwnedRouteDecision {
        let owned = OwnedRouteDecision {
            primary: OwnedTarget::of(self.primary),
            shadow: self.shadow.map(OwnedTarget::of),
            agent: self.primary.agent().clone(),
            generation: self.generation(),
            shard: self.shard(),
            pinned: self.is_pinned(),
        };
        // The owned decision counts the message out; this one must not as well.
        std::mem::forget(self);
        owned
    }
}

impl Drop for RouteDecision<'_> {
    #[inline]
    fn drop(&mut self) {
        entry::exit(self.word);
        if let Some(shadow) = self.shadow {
            shadow.counters().exit(self.shard());
        }
    }
}

impl fmt::Debug for RouteDecision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteDecision")
            .field("agent", self.agent())
            .field("deployment", self.deployment())
            .field("shadow", &self.shadow())
            .field("pinned", &self.is_pinned())
            .field("generation", &self.generation())
            .finish()
    }
}

/// One deployment held by an [`OwnedRouteDecision`].
struct OwnedTarget {
    id: DeploymentId,
    counters: Counters,
}

impl OwnedTarget {
    fn of(entry: &DeploymentEntry) -> Self {
        OwnedTarget {
            id: entry.id().clone(),
            counters: entry.counters().clone(),
        }
    }
}

/// A [`RouteDecision`] that owns what it refers to, made by
/// [`RouteDecision::into_owned`]: `'static` and `Send`, it may outlive the router. It
/// counts the message in flight until dropped, like the decision it came from.
#[must_use = "dropping the decision counts the message out at once"]
pub struct OwnedRouteDecision {
    primary: OwnedTarget,
    shadow: Option<OwnedTarget>,
    agent: AgentId,
    generation: u64,
    shard: u32,
    pinned: bool,
}

impl OwnedRouteDecision {
    /// The deployment that handles the message and whose reply counts.
    pub fn deployment(&self) -> &DeploymentId {
        &self.primary.id
    }

    /// The deployment the host should also send a copy to, if this message is sampled for
    /// the shadow.
    pub fn shadow(&self) -> Option<&DeploymentId> {
        self.shadow.as_ref().map(|shadow| &shadow.id)
    }

    /// Whether the message followed a session pin rather than the agent's current split.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The agent the message is for.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The generation of the agent's route that the decision was made with.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for OwnedRouteDecision {
    fn drop(&mut self) {
        self.primary.counters.exit(self.shard);
        if let Some(shadow) = &self.shadow {
            shadow.counters.exit(self.shard);
        }
    }
}

impl fmt::Debug for OwnedRouteDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRouteDecision")
            .field("agent", &self.agent)
            .field("deployment", self.deployment())
            .field("shadow", &self.shadow())
            .field("pinned", &self.pinned)
            .field("generation", &self.generation)
            .finish()
    }
}
