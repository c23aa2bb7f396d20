//! What the demo reports: its own steps, and the host's rollout events forwarded as they
//! come, each tagged with its act.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use caxton_core::{AgentId, DeploymentId};
use caxton_host::{EventStream, HostEvent};
use caxton_strategies::RolloutEvent;
use futures::StreamExt;
use futures::future::{Either, select};
use serde::Serialize;

use super::load::TallySnapshot;

/// One stage's verdict and time, for the report of a validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StageTiming {
    /// The stage.
    pub(crate) stage: String,
    /// Whether it passed.
    pub(crate) passed: bool,
    /// How long it took, in milliseconds.
    pub(crate) duration_ms: f64,
}

/// One row of the closing summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SummaryRow {
    /// What was done.
    pub(crate) step: String,
    /// How it ended.
    pub(crate) result: String,
    /// The figure that shows it.
    pub(crate) detail: String,
}

/// A demo step, as the demo reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum StepKind {
    /// An act begins.
    ActStarted {
        /// 1 to 4.
        act: u8,
        /// What it shows.
        title: String,
    },
    /// A deployment went through the validation pipeline.
    Validated {
        /// The deployment.
        deployment: DeploymentId,
        /// Whether every stage passed.
        accepted: bool,
        /// Each stage.
        stages: Vec<StageTiming>,
        /// The whole pipeline, in milliseconds.
        duration_ms: f64,
    },
    /// Synthetic order traffic started.
    TrafficStarted {
        /// The agent.
        agent: AgentId,
        /// Orders per second.
        rate: u32,
        /// Share of orders with a coupon.
        coupon_share: f64,
    },
    /// Synthetic traffic stopped; what happened to every message.
    TrafficStopped {
        /// The agent.
        agent: AgentId,
        /// The counts.
        tally: TallySnapshot,
        /// Messages neither answered nor counted as failed.
        lost: u64,
    },
    /// Traffic left the canary: how long the router took to publish the route.
    CutOver {
        /// The router operation that moved traffic back.
        operation: String,
        /// How long publishing it took, in microseconds.
        took_us: f64,
        /// Orders sent after the new route was published that the candidate answered.
        routed_to_candidate_after: u64,
    },
    /// What the rainbow deploy looks like now.
    Rainbow {
        /// Where it stands.
        phase: String,
        /// Live sessions pinned to each deployment, from the host's status.
        sessions: BTreeMap<String, u64>,
    },
    /// Every session's replies were checked for the deployment that answered.
    SessionsChecked {
        /// Sessions checked.
        sessions: u64,
        /// Sessions whose replies came from more than one deployment.
        switched: u64,
        /// Replies checked.
        replies: u64,
        /// Sessions opened before the rainbow rollout.
        opened_before_rollout: u64,
        /// Of those, sessions every reply of which came from the version they started on.
        stayed_on_first_version: u64,
        /// Sessions per deployment that answered them.
        by_deployment: BTreeMap<String, u64>,
    },
    /// The shadow comparison, as the host measured it, and what callers received.
    ShadowCompared {
        /// Copies of messages queued for the shadow.
        mirrored: u64,
        /// Copies the shadow answered, compared with production's reply.
        compared: u64,
        /// Copies dropped because the shadow's queue was full.
        dropped: u64,
        /// Shadow replies byte-identical to production's.
        exact: u64,
        /// Shadow replies equal to production's as JSON.
        equivalent: u64,
        /// Shadow copies that failed.
        failed: u64,
        /// Shadow replies thrown away after comparison.
        discarded: u64,
        /// Replies callers received from the shadow deployment while it was the shadow.
        reached_callers: u64,
        /// Production's median latency, in milliseconds.
        production_p50_ms: Option<f64>,
        /// The shadow's median latency, in milliseconds.
        shadow_p50_ms: Option<f64>,
        /// Production's median fuel per message.
        production_fuel_p50: Option<f64>,
        /// The shadow's median fuel per message.
        shadow_fuel_p50: Option<f64>,
    },
    /// The closing summary.
    Summary {
        /// One row per act.
        rows: Vec<SummaryRow>,
    },
    /// The demo is over. Always the last event.
    Finished {
        /// `completed` when every act ran as designed, `failed` otherwise.
        outcome: String,
        /// What did not go as designed.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        problems: Vec<String>,
    },
}

/// A demo step with its time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DemoStep {
    /// Seconds since the demo started.
    pub(crate) at_s: f64,
    /// The act it belongs to.
    pub(crate) act: u8,
    /// What happened.
    #[serde(flatten)]
    pub(crate) kind: StepKind,
}

/// What the demo reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum DemoEvent {
    /// A step of the demo.
    Step(DemoStep),
    /// An event of a rollout the host runs (`at_s` counts from the rollout's start).
    Rollout {
        /// The act.
        act: u8,
        /// The rollout event.
        #[serde(flatten)]
        event: RolloutEvent,
    },
}

/// Receives the demo's events as they happen.
pub(crate) trait DemoSink: Send + Sync {
    /// Called once per event, in order.
    fn emit(&self, event: &DemoEvent);
}

/// Reports the demo's steps to a sink, with the time and the act.
pub(crate) struct Reporter {
    sink: Arc<dyn DemoSink>,
    started: Instant,
    act: AtomicU8,
}

/// `x` rounded to three decimals, for times in the output.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Reporter {
    /// A reporter to `sink`; the demo's clock starts now.
    pub(crate) fn new(sink: Arc<dyn DemoSink>) -> Self {
        Reporter {
            sink,
            started: Instant::now(),
            act: AtomicU8::new(0),
        }
    }

    /// Reports one step of the current act.
    pub(crate) fn step(&self, kind: StepKind) {
        self.sink.emit(&DemoEvent::Step(DemoStep {
            at_s: round3(self.started.elapsed().as_secs_f64()),
            act: self.act.load(Ordering::Relaxed),
            kind,
        }));
    }

    /// Starts act `act`, 1 to 4.
    pub(crate) fn act(&self, act: u8, title: &str) {
        self.act.store(act, Ordering::Relaxed);
        self.step(StepKind::ActStarted {
            act,
            title: title.to_owned(),
        });
    }

    /// What follows is no act's: the summary and the end (act 0).
    pub(crate) fn acts_over(&self) {
        self.act.store(0, Ordering::Relaxed);
    }

    fn rollout(&self, event: RolloutEvent) {
        self.sink.emit(&DemoEvent::Rollout {
            act: self.act.load(Ordering::Relaxed),
            event,
        });
    }
}

/// Forwards the host's rollout events ([`Host::events`](caxton_host::Host::events)) to the
/// reporter, on the demo's own thread, whenever the demo waits: so a rollout's events and
/// the demo's steps come out in the order they happened, each tagged with its act.
pub(crate) struct Pump {
    events: EventStream,
}

impl Pump {
    /// A pump of `events`, subscribed before the first deployment.
    pub(crate) fn new(events: EventStream) -> Self {
        Pump { events }
    }

    fn forward(reporter: &Reporter, event: HostEvent) {
        reporter.rollout(event.event);
    }

    /// Forwards the events already published.
    pub(crate) fn flush(&mut self, reporter: &Reporter) {
        while let Ok(event) = self.events.try_recv() {
            Self::forward(reporter, event);
        }
    }

    /// Forwards events until `done` resolves, then those published by then. A rollout
    /// publishes all its events before its handle resolves, so after waiting on a
    /// [`RolloutHandle`](caxton_host::RolloutHandle) every event of that rollout is out.
    pub(crate) fn wait<F: Future>(&mut self, reporter: &Reporter, done: F) -> F::Output {
        let output = futures::executor::block_on(async {
            let mut done = pin!(done);
            loop {
                match select(self.events.next(), done.as_mut()).await {
                    Either::Left((Some(event), _)) => Self::forward(reporter, event),
                    // The host is gone: nothing more to forward.
                    Either::Left((None, rest)) => break rest.await,
                    Either::Right((output, _)) => break output,
                }
            }
        });
        self.flush(reporter);
        output
    }

    /// Forwards events until one for which `stop` holds is out (`true`), or `give_up`
    /// resolves first (`false`).
    pub(crate) fn until<F: Future>(
        &mut self,
        reporter: &Reporter,
        stop: impl Fn(&RolloutEvent) -> bool,
        give_up: F,
    ) -> bool {
        futures::executor::block_on(async {
            let mut give_up = pin!(give_up);
            loop {
                match select(self.events.next(), give_up.as_mut()).await {
                    Either::Left((Some(event), _)) => {
                        let matched = stop(&event.event);
                        Self::forward(reporter, event);
                        if matched {
                            return true;
                        }
                    }
                    Either::Left((None, _)) | Either::Right(_) => return false,
                }
            }
        })
    }
}
