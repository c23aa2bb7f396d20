//! Shadow copies, run off the caller's path: a bounded queue and a worker thread of the
//! host's own. A full queue drops the copy and counts it; a caller never waits for a shadow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use caxton_core::{AgentRuntime, Clock, DeploymentId, InMemoryMetrics, Observation, SessionId};
use caxton_strategies::shadow::{Equivalence, OUTPUT_MATCH_METRIC, outputs_equivalent};
use serde::Serialize;

use crate::send::{FUEL_METRIC, MEMORY_METRIC, is_error_reply};

/// Counters of mirrored messages, for status and for tests.
#[derive(Debug, Default)]
pub struct ShadowTally {
    mirrored: AtomicU64,
    dropped: AtomicU64,
    compared: AtomicU64,
    exact: AtomicU64,
    equivalent: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of [`ShadowTally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ShadowCounts {
    /// Copies queued for a shadow.
    pub mirrored: u64,
    /// Copies dropped because the queue was full.
    pub dropped: u64,
    /// Copies the shadow answered, compared with production's reply.
    pub compared: u64,
    /// Shadow replies byte-identical to production's.
    pub exact: u64,
    /// Shadow replies equivalent to production's as JSON.
    pub equivalent: u64,
    /// Copies the shadow failed on (a trap or a limit).
    pub failed: u64,
}

impl ShadowTally {
    /// The counts now.
    pub fn counts(&self) -> ShadowCounts {
        ShadowCounts {
            mirrored: self.mirrored.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            compared: self.compared.load(Ordering::Relaxed),
            exact: self.exact.load(Ordering::Relaxed),
            equivalent: self.equivalent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct ShadowCopy {
    pub(crate) shadow: DeploymentId,
    pub(crate) message: Vec<u8>,
    pub(crate) primary_reply: Vec<u8>,
    pub(crate) session: Option<SessionId>,
}

/// The sending side; the worker stops when it is dropped.
pub(crate) struct ShadowQueue {
    sender: SyncSender<ShadowCopy>,
    pub(crate) tally: Arc<ShadowTally>,
}

impl ShadowQueue {
    pub(crate) fn start(
        capacity: usize,
        runtime: Arc<dyn AgentRuntime>,
        metrics: InMemoryMetrics,
        clock: Arc<dyn Clock>,
    ) -> ShadowQueue {
        let (sender, receiver) = sync_channel(capacity.max(1));
        let tally = Arc::new(ShadowTally::default());
        let worker_tally = Arc::clone(&tally);
        let spawned = std::thread::Builder::new()
            .name("caxton-shadow".to_owned())
            .spawn(move || run(receiver, runtime, metrics, clock, worker_tally));
        if let Err(error) = spawned {
            // Without a worker every copy is dropped and counted; callers are unaffected.
            tracing::error!(%error, "the shadow worker could not start; copies will be dropped");
        }
        ShadowQueue { sender, tally }
    }

    /// Queues a copy; never blocks.
    pub(crate) fn offer(&self, copy: ShadowCopy) {
        self.tally.mirrored.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(copy) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.tally.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("caxton_shadow_dropped_total").increment(1);
            }
        }
    }
}

fn run(
    receiver: Receiver<ShadowCopy>,
    runtime: Arc<dyn AgentRuntime>,
    metrics: InMemoryMetrics,
    clock: Arc<dyn Clock>,
    tally: Arc<ShadowTally>,
) {
    while let Ok(copy) = receiver.recv() {
        let started = Instant::now();
        // Copies run without a session: a shadow keeps no state a caller could see.
        let result = runtime.handle(&copy.shadow, None, &copy.message);
        let mut observation = Observation::ok(clock.now(), started.elapsed());
        if let Some(session) = copy.session {
            observation = observation.in_session(session);
        }
        match result {
            Ok(reply) => {
                let exact =
                    outputs_equivalent(&copy.primary_reply, &reply.bytes, Equivalence::Exact);
                let equivalent =
                    outputs_equivalent(&copy.primary_reply, &reply.bytes, Equivalence::Json);
                tally.compared.fetch_add(1, Ordering::Relaxed);
                tally.exact.fetch_add(u64::from(exact), Ordering::Relaxed);
                tally
                    .equivalent
                    .fetch_add(u64::from(equivalent), Ordering::Relaxed);
                observation.latency = reply.stats.latency;
                observation.error = is_error_reply(&reply.bytes);
                observation = observation
                    .with_metric(OUTPUT_MATCH_METRIC, if equivalent { 1.0 } else { 0.0 })
                    .with_metric(FUEL_METRIC, reply.stats.fuel_consumed.unwrap_or(0) as f64)
                    .with_metric(MEMORY_METRIC, reply.stats.memory_bytes as f64);
            }
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                observation.error = true;
                observation = observation.with_metric(OUTPUT_MATCH_METRIC, 0.0);
            }
        }
        metrics.record(&copy.shadow, observation);
        // The shadow's reply ends here: it is never returned to anyone.
    }
}
