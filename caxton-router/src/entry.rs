//! One deployment as the router sees it: sharded in-flight counters that also carry its
//! drain phase, its id and agent, and when its drain started.
//!
//! Entries live in the router's append-only arena from registration until the router is
//! dropped, retired ones included, so a route or a decision refers to one by a plain index
//! or reference and never touches a reference count.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use caxton_core::{AgentId, DeploymentId, DrainPhase, Timestamp};
use crossbeam_utils::CachePadded;

/// Set in every shard word once the drain has started: only pinned sessions get in.
const DRAINING_BIT: u64 = 1 << 62;
/// Set in every shard word once the drain is closed or the deployment retired: nothing
/// gets in.
const DRAINED_BIT: u64 = 1 << 63;
/// The low bits of a shard word count messages in flight.
const COUNT_MASK: u64 = DRAINING_BIT - 1;

/// What kind of message asks to enter a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A message of a session pinned to the deployment: admitted while Active or Draining.
    Pinned,
    /// Anything else (new sessions, messages without a session, shadows, previews):
    /// admitted only while Active.
    New,
}

impl Admission {
    /// The phase bits that refuse this kind of message.
    #[inline]
    fn refused_by(self) -> u64 {
        match self {
            Admission::Pinned => DRAINED_BIT,
            Admission::New => DRAINED_BIT | DRAINING_BIT,
        }
    }
}

/// A deployment's in-flight counters, one per shard, each on its own cache line. A thread
/// always uses the same shard, so two cores routing to one deployment write different
/// lines. The top two bits of every shard word hold the drain phase.
///
/// Phase and count in one word make the drain handshake a single read-modify-write on each
/// side. A reader adds one to its shard and looks at the phase bits of the value it
/// replaced; a drainer sets the phase bits in every shard. Read-modify-writes of one word
/// are totally ordered, so for each shard either the reader's increment comes first (the
/// drainer's count includes the message, and the drain waits for it) or the phase bits
/// come first (the reader sees them, takes its increment back and routes elsewhere).
/// Nothing enters a deployment after its drain is closed.
///
/// Shared (`Arc`) only so that an owned decision can outlive the router; the hot path
/// reaches the counters through the router's arena and never touches the count.
#[derive(Clone)]
pub(crate) struct Counters(Arc<[CachePadded<AtomicU64>]>);

impl Counters {
    fn new(shards: usize) -> Self {
        Counters(
            (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        )
    }

    /// The counter word of `shard`, which lives as long as the counters.
    #[inline]
    pub(crate) fn word(&self, shard: u32) -> &AtomicU64 {
        &self.0[shard as usize]
    }

    /// Counts one message in on `shard`, unless the phase refuses it.
    #[inline]
    pub(crate) fn try_enter(&self, shard: u32, admission: Admission) -> bool {
        try_enter(self.word(shard), admission)
    }

    /// Counts one message out on the shard it came in on.
    #[inline]
    pub(crate) fn exit(&self, shard: u32) {
        exit(self.word(shard));
    }

    /// Messages counted in and not yet out.
    pub(crate) fn in_flight(&self) -> u64 {
        self.0
            .iter()
            .map(|word| word.load(Ordering::Acquire) & COUNT_MASK)
            .sum()
    }

    /// Whether a message of `admission` kind would be admitted now.
    pub(crate) fn admits(&self, admission: Admission) -> bool {
        self.0[0].load(Ordering::Acquire) & admission.refused_by() == 0
    }

    fn phase(&self) -> DrainPhase {
        let word = self.0[0].load(Ordering::Acquire);
        if word & DRAINED_BIT != 0 {
            DrainPhase::Drained
        } else if word & DRAINING_BIT != 0 {
            DrainPhase::Draining
        } else {
            DrainPhase::Active
        }
    }

    /// Sets `bit` in every shard. `Release` publishes the writer's route change to readers
    /// that are refused by the bit.
    fn set(&self, bit: u64) {
        for word in self.0.iter() {
            word.fetch_or(bit, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Counts one message in on a counter `word`, unless the phase refuses it.
#[inline]
pub(crate) fn try_enter(word: &AtomicU64, admission: Admission) -> bool {
    // Acquire: a reader refused here re-reads the route, and must then see the route that
    // the drainer published before it set the phase.
    let before = word.fetch_add(1, Ordering::Acquire);
    if before & admission.refused_by() == 0 {
        return true;
    }
    word.fetch_sub(1, Ordering::Relaxed);
    false
}

/// Counts one message out on the counter `word` it came in on. `Release` makes the work
/// done for the message visible to whoever later reads the count as zero.
#[inline]
pub(crate) fn exit(word: &AtomicU64) {
    word.fetch_sub(1, Ordering::Release);
}

/// One registered deployment, at a fixed index of the router's arena.
pub(crate) struct DeploymentEntry {
    counters: Counters,
    id: DeploymentId,
    agent: AgentId,
    /// Router-clock milliseconds when the drain started; 0 while Active.
    drain_started_ms: AtomicU64,
}

impl DeploymentEntry {
    /// A fresh, Active deployment with `shards` counters.
    pub(crate) fn new(agent: AgentId, id: DeploymentId, shards: usize) -> Self {
        DeploymentEntry {
            counters: Counters::new(shards),
            id,
            agent,
            drain_started_ms: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn id(&self) -> &DeploymentId {
        &self.id
    }

    #[inline]
    pub(crate) fn agent(&self) -> &AgentId {
        &self.agent
    }

    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.counters.in_flight()
    }

    pub(crate) fn phase(&self) -> DrainPhase {
        self.counters.phase()
    }

    pub(crate) fn is_active(&self) -> bool {
        self.phase() == DrainPhase::Active
    }

    /// Moves the phase forward (never back) and records when the drain started. Callers
    /// hold the agent's writer lock, so one entry's phase changes one step at a time.
    pub(crate) fn set_phase(&self, phase: DrainPhase, now: Timestamp) {
        let current = self.phase();
        let rank = |p: DrainPhase| match p {
            DrainPhase::Active => 0,
            DrainPhase::Draining => 1,
            DrainPhase::Drained => 2,
        };
        if rank(phase) <= rank(current) {
            return;
        }
        if current == DrainPhase::Active {
            // `max(1)`: 0 means "not started", even for a clock standing at the epoch.
            self.drain_started_ms
                .store(now.as_millis().max(1), Ordering::Relaxed);
        }
        match phase {
            DrainPhase::Active => {}
            DrainPhase::Draining => self.counters.set(DRAINING_BIT),
            DrainPhase::Drained => self.counters.set(DRAINED_BIT),
        }
    }

    /// When the drain started, if it has.
    pub(crate) fn drain_started(&self) -> Option<Timestamp> {
        match self.drain_started_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Timestamp::from_millis(ms)),
        }
    }
}

impl fmt::Debug for DeploymentEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeploymentEntry")
            .field("id", &self.id)
            .field("agent", &self.agent)
            .field("counters", &self.counters)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DeploymentEntry {
        DeploymentEntry::new(
            AgentId::new("a").unwrap(),
            DeploymentId::new("d").unwrap(),
            4,
        )
    }

    #[test]
    fn counts_per_shard_and_sums() {
        let e = entry();
        let counters = e.counters();
        assert!(counters.try_enter(0, Admission::New));
        assert!(counters.try_enter(3, Admission::New));
        assert!(counters.try_enter(3, Admission::Pinned));
        assert_eq!(e.in_flight(), 3);
        counters.exit(3);
        counters.exit(0);
        counters.exit(3);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn draining_admits_only_pinned_and_drained_admits_nothing() {
        let e = entry();
        let counters = e.counters();
        assert!(counters.try_enter(2, Admission::New));
        e.set_phase(DrainPhase::Draining, Timestamp::from_millis(5));
        assert_eq!(e.in_flight(), 1, "the phase bits do not count as messages");
        assert!(!counters.try_enter(1, Admission::New));
        assert_eq!(e.in_flight(), 1, "a refused message leaves no count behind");
        assert!(counters.try_enter(1, Admission::Pinned));
        counters.exit(1);
        counters.exit(2);
        e.set_phase(DrainPhase::Drained, Timestamp::from_millis(9));
        assert!(!counters.try_enter(1, Admission::Pinned));
        assert_eq!(e.phase(), DrainPhase::Drained);
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.drain_started(), Some(Timestamp::from_millis(5)));
    }

    #[test]
    fn phases_never_move_back() {
        let e = entry();
        e.set_phase(DrainPhase::Drained, Timestamp::EPOCH);
        e.set_phase(DrainPhase::Active, Timestamp::EPOCH);
        e.set_phase(DrainPhase::Draining, Timestamp::EPOCH);
        assert_eq!(e.phase(), DrainPhase::Drained);
        assert!(
            e.drain_started().is_some(),
            "a drain started at the epoch still counts"
        );
        assert!(!e.counters().admits(Admission::Pinned));
    }
}
