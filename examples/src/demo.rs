//! The demo behind `caxton demo`: real sample agents, the real router, runtime,
//! validation pipeline and rollout driver, in one process.
//!
//! 1. Validate `processor` v1 (four stages, with timings) and make it production.
//! 2. Canary `processor` v2 under live order traffic: its coupon regression trips
//!    `error_rate > 1%` and the canary rolls itself back; the cut-over time is measured and
//!    every order sent is accounted for.
//! 3. Rainbow deploy of `chat` v2: sessions started on v1 stay on v1 while new sessions go
//!    to v2; v1 drains as its sessions end.
//! 4. Shadow run of `processor` v3: traffic is mirrored to it; outputs, latency and fuel are
//!    compared with production's, and no shadow reply reaches a caller.
//!
//! Everything the demo does is reported as [`DemoEvent`]s to a [`DemoSink`]; the command
//! line renders them for people or as JSON lines. [`Demo::run`] returns the outcome with
//! the checks that make "ran as designed" precise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_core::{
    AgentId, DeploymentId, DeploymentStore, SessionAffinity, SessionId, SystemClock,
};
use caxton_strategies::builtin::{Canary, Direct, Rainbow, Shadow};
use caxton_strategies::config::{
    CanaryConfig, CanaryStep, CanarySteps, DirectConfig, Gates, Preflight, RainbowConfig,
};
use caxton_strategies::shadow::ShadowSettings;
use caxton_strategies::{
    Commands, Condition, EventSink, Outcome, ReasonKind, RolloutEvent, RolloutReport, Strategy,
};
use caxton_validate::{StageStatus, ValidationReport};
use serde::Serialize;

use crate::agents::{CHAT_V1, CHAT_V2, PROCESSOR_V1, PROCESSOR_V2, PROCESSOR_V3, SampleAgent};
use crate::host::{FUEL_METRIC, Host, HostError, agent_id};
use crate::load::{OrderMix, OrderTraffic, TallySnapshot};

/// How fast the demo moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// For people: canary holds of a few seconds; the whole demo takes well under a minute.
    #[default]
    Normal,
    /// For tests: holds and timeouts cut to fractions of a second.
    Fast,
}

impl Pace {
    fn scale(self, normal: Duration) -> Duration {
        match self {
            Pace::Normal => normal,
            Pace::Fast => normal / 4,
        }
    }
}

/// The demo's settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DemoConfig {
    /// How fast it moves.
    pub pace: Pace,
    /// The order traffic of acts 2 and 4.
    pub orders: OrderMixSetting,
}

/// Order traffic settings (see [`OrderMix`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderMixSetting {
    /// Orders per second.
    pub rate: u32,
    /// Share of orders with a coupon code.
    pub coupon_share: f64,
}

impl Default for OrderMixSetting {
    fn default() -> Self {
        OrderMixSetting {
            rate: 400,
            coupon_share: 0.15,
        }
    }
}

/// One stage's verdict and time, for the report of act 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTiming {
    /// The stage.
    pub stage: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

/// One row of the closing summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    /// What was done.
    pub step: String,
    /// How it ended.
    pub result: String,
    /// The figure that shows it.
    pub detail: String,
}

/// A demo step, as the demo reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
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
        /// Messages routed to the candidate after the new route was published.
        routed_to_candidate_after: u64,
    },
    /// What the rainbow deploy looks like now.
    Rainbow {
        /// Where it stands.
        phase: String,
        /// Live sessions per deployment.
        sessions: BTreeMap<String, u64>,
    },
    /// Every session's replies were checked for the version that answered.
    SessionsChecked {
        /// Sessions checked.
        sessions: u64,
        /// Sessions whose replies came from more than one version.
        switched: u64,
        /// Replies checked.
        replies: u64,
    },
    /// The shadow comparison, as the host measured it.
    ShadowCompared {
        /// Messages mirrored.
        mirrored: u64,
        /// Shadow replies byte-identical to production's.
        exact: u64,
        /// Shadow replies equal to production's as JSON.
        equivalent: u64,
        /// Shadow copies that failed.
        failed: u64,
        /// Shadow replies thrown away after comparison.
        discarded: u64,
        /// Shadow replies that reached a caller.
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
pub struct DemoStep {
    /// Seconds since the demo started.
    pub at_s: f64,
    /// The act it belongs to.
    pub act: u8,
    /// What happened.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What the demo reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DemoEvent {
    /// A step of the demo.
    Step(DemoStep),
    /// An event of a rollout the demo runs (`at_s` counts from the rollout's start).
    Rollout {
        /// The act.
        act: u8,
        /// The rollout event.
        #[serde(flatten)]
        event: RolloutEvent,
    },
}

/// Receives the demo's events as they happen.
pub trait DemoSink: Send + Sync {
    /// Called once per event, in order.
    fn emit(&self, event: &DemoEvent);
}

/// Collects events in memory.
#[derive(Debug, Default)]
pub struct CollectedEvents(Mutex<Vec<DemoEvent>>);

impl CollectedEvents {
    /// The events so far.
    pub fn events(&self) -> Vec<DemoEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DemoSink for CollectedEvents {
    fn emit(&self, event: &DemoEvent) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The host could not start.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A rollout could not run.
    #[error("the {act} rollout could not run: {message}")]
    Rollout {
        /// Which one.
        act: &'static str,
        /// Why.
        message: String,
    },
    /// The demo's own setup failed.
    #[error("{0}")]
    Setup(String),
}

/// What happened, with the checks that decide whether the demo ran as designed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoOutcome {
    /// Act 2: how the canary ended (`rolled_back`).
    pub canary_outcome: String,
    /// Act 2: the kind of reason (`error_rate`).
    pub canary_reason: Option<String>,
    /// Act 2: how long the router took to move traffic off the canary, in µs.
    pub cut_over_us: Option<f64>,
    /// Act 2: orders routed to v2 after the cut-over.
    pub routed_to_v2_after_cut_over: u64,
    /// Acts 2 and 4: every order sent.
    pub orders: TallySnapshot,
    /// Act 3: how the rainbow deploy ended.
    pub rainbow_outcome: String,
    /// Act 3: sessions checked, and how many switched version mid-session.
    pub sessions_checked: u64,
    /// Act 3: sessions that switched version mid-session.
    pub sessions_switched: u64,
    /// Act 3: sessions served by each chat version.
    pub chat_sessions: BTreeMap<String, u64>,
    /// Act 4: how the shadow run ended.
    pub shadow_outcome: String,
    /// Act 4: messages mirrored.
    pub mirrored: u64,
    /// Act 4: mirrored replies equal to production's as JSON.
    pub shadow_equivalent: u64,
    /// Act 4: shadow replies that reached a caller.
    pub shadow_replies_to_callers: u64,
    /// What did not go as designed; empty when it all did.
    pub problems: Vec<String>,
}

impl DemoOutcome {
    /// Whether every act ran as designed.
    pub fn as_designed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The demo.
#[derive(Debug)]
pub struct Demo {
    config: DemoConfig,
}

struct Reporter {
    sink: Arc<dyn DemoSink>,
    started: Instant,
    act: std::sync::atomic::AtomicU8,
}

impl Reporter {
    fn step(&self, kind: StepKind) {
        let act = self.act.load(std::sync::atomic::Ordering::Relaxed);
        self.sink.emit(&DemoEvent::Step(DemoStep {
            at_s: round3(self.started.elapsed().as_secs_f64()),
            act,
            kind,
        }));
    }

    fn act(&self, act: u8, title: &str) {
        self.act.store(act, std::sync::atomic::Ordering::Relaxed);
        self.step(StepKind::ActStarted {
            act,
            title: title.to_owned(),
        });
    }
}

/// Forwards a rollout's events to the demo's sink, tagged with the act.
struct RolloutForwarder {
    sink: Arc<dyn DemoSink>,
    act: u8,
}

impl EventSink for RolloutForwarder {
    fn emit(&self, event: &RolloutEvent) {
        self.sink.emit(&DemoEvent::Rollout {
            act: self.act,
            event: event.clone(),
        });
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Demo {
    /// A demo with `config`.
    pub fn new(config: DemoConfig) -> Self {
        Demo { config }
    }

    /// Runs the four acts, reporting to `sink`. Errors only when the demo cannot run at
    /// all; a demo that ran but not as designed says so in [`DemoOutcome::problems`].
    pub fn run(&self, sink: Arc<dyn DemoSink>) -> Result<DemoOutcome, DemoError> {
        let reporter = Reporter {
            sink: sink.clone(),
            started: Instant::now(),
            act: Default::default(),
        };
        let host = Arc::new(Host::new(Arc::new(SystemClock))?);
        let mut problems = Vec::new();

        // Act 1.
        reporter.act(1, "Validate processor v1 and make it production");
        let first = self.deploy_first(&host, &PROCESSOR_V1, &sink, 1)?;
        report_validation(&host, &reporter, &first.deployment);
        if first.outcome != Outcome::Promoted {
            problems.push(format!(
                "processor v1 was not promoted: {}",
                first.outcome.as_str()
            ));
        }

        // Act 2.
        reporter.act(2, "Canary processor v2 under live order traffic");
        let canary = self.canary(&host, &reporter, &sink)?;
        problems.extend(canary.problems.iter().cloned());

        // Act 3.
        reporter.act(
            3,
            "Rainbow deploy of chat v2: sessions stay on the version that started them",
        );
        let rainbow = self.rainbow(&host, &reporter, &sink)?;
        problems.extend(rainbow.problems.iter().cloned());

        // Act 4.
        reporter.act(
            4,
            "Shadow run of processor v3: mirrored, compared, never served",
        );
        let shadow = self.shadow(&host, &reporter, &sink)?;
        problems.extend(shadow.problems.iter().cloned());

        let mut orders = canary.orders.clone();
        merge_tally(&mut orders, &shadow.orders);
        if orders.lost() > 0 {
            problems.push(format!("{} orders were lost", orders.lost()));
        }

        let rows = vec![
            SummaryRow {
                step: "1 validate + deploy processor v1".into(),
                result: first.outcome.as_str().into(),
                detail: host
                    .validation_report(&first.deployment)
                    .map(|r| format!("4 stages in {:.0} ms", r.duration_ms))
                    .unwrap_or_default(),
            },
            SummaryRow {
                step: "2 canary processor v2".into(),
                result: canary.outcome.clone(),
                detail: format!(
                    "{}; cut-over {}; {} orders, 0 lost",
                    canary.reason.clone().unwrap_or_default(),
                    canary
                        .cut_over_us
                        .map(|us| format!("{us:.1} µs"))
                        .unwrap_or_else(|| "n/a".into()),
                    canary.orders.sent
                ),
            },
            SummaryRow {
                step: "3 rainbow chat v2".into(),
                result: rainbow.outcome.clone(),
                detail: format!(
                    "{} sessions, {} switched mid-session; {}",
                    rainbow.checked,
                    rainbow.switched,
                    rainbow
                        .sessions
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            SummaryRow {
                step: "4 shadow processor v3".into(),
                result: shadow.outcome.clone(),
                detail: format!(
                    "{} mirrored, {} JSON-equal, {} byte-equal, 0 served",
                    shadow.mirrored, shadow.equivalent, shadow.exact
                ),
            },
        ];
        reporter.act.store(0, std::sync::atomic::Ordering::Relaxed);
        reporter.step(StepKind::Summary { rows });
        reporter.step(StepKind::Finished {
            outcome: if problems.is_empty() {
                "completed".into()
            } else {
                "failed".into()
            },
            problems: problems.clone(),
        });
        Ok(DemoOutcome {
            canary_outcome: canary.outcome,
            canary_reason: canary.reason_kind,
            cut_over_us: canary.cut_over_us,
            routed_to_v2_after_cut_over: canary.routed_after,
            orders,
            rainbow_outcome: rainbow.outcome,
            sessions_checked: rainbow.checked,
            sessions_switched: rainbow.switched,
            chat_sessions: rainbow.sessions,
            shadow_outcome: shadow.outcome,
            mirrored: shadow.mirrored,
            shadow_equivalent: shadow.equivalent,
            shadow_replies_to_callers: shadow.reached_callers,
            problems,
        })
    }

    fn pace(&self, normal: Duration) -> Duration {
        self.config.pace.scale(normal)
    }

    fn gates(&self, rollback_on: &[&str], min_requests: u64) -> Result<Gates, DemoError> {
        let rollback_on = rollback_on
            .iter()
            .map(|c| {
                c.parse::<Condition>()
                    .map_err(|e| DemoError::Setup(format!("condition {c:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Gates {
            rollback_on,
            check_interval: self.pace(Duration::from_secs(1)),
            min_requests,
            max_extension: self.pace(Duration::from_secs(8)),
            pause_timeout: self.pace(Duration::from_secs(8)),
            drain_timeout: self.pace(Duration::from_secs(4)),
            ..Gates::default()
        })
    }

    fn preflight(&self) -> Preflight {
        Preflight {
            validate: Duration::from_secs(60),
            warm_up: Duration::from_secs(60),
        }
    }

    fn run_rollout(
        &self,
        host: &Arc<Host>,
        sample: &SampleAgent,
        strategy: Box<dyn Strategy>,
        sink: &Arc<dyn DemoSink>,
        act: u8,
    ) -> Result<RolloutReport, DemoError> {
        let name = strategy.name().to_owned();
        let new = host.new_deployment(sample, &name);
        let forwarder: Arc<dyn EventSink> = Arc::new(RolloutForwarder {
            sink: sink.clone(),
            act,
        });
        let driver = host.driver(forwarder);
        let report = futures::executor::block_on(driver.run(new, strategy, Commands::none()))
            .map_err(|e| DemoError::Rollout {
                act: act_name(act),
                message: e.to_string(),
            })?;
        futures::executor::block_on(host.reap());
        Ok(report)
    }

    fn deploy_first(
        &self,
        host: &Arc<Host>,
        sample: &SampleAgent,
        sink: &Arc<dyn DemoSink>,
        act: u8,
    ) -> Result<RolloutReport, DemoError> {
        let direct = Direct::new(DirectConfig {
            preflight: self.preflight(),
            drain_timeout: self.pace(Duration::from_secs(4)),
        });
        self.run_rollout(host, sample, Box::new(direct), sink, act)
    }

    fn canary(
        &self,
        host: &Arc<Host>,
        reporter: &Reporter,
        sink: &Arc<dyn DemoSink>,
    ) -> Result<CanaryResult, DemoError> {
        let agent = agent_id(&PROCESSOR_V1);
        let mix = self.order_mix(11);
        reporter.step(StepKind::TrafficStarted {
            agent: agent.clone(),
            rate: mix.rate,
            coupon_share: mix.coupon_share,
        });
        let traffic = OrderTraffic::start(host.clone(), agent.clone(), mix);
        // Let production's baseline build up before the candidate arrives.
        std::thread::sleep(self.pace(Duration::from_secs(1)));
        let hold = self.pace(Duration::from_secs(4));
        let step = |percent: f64| -> Result<CanaryStep, DemoError> {
            let weight = caxton_core::Weight::from_percent(percent)
                .map_err(|e| DemoError::Setup(e.to_string()))?;
            Ok(CanaryStep { weight, hold })
        };
        let config = CanaryConfig {
            preflight: self.preflight(),
            steps: CanarySteps::new(vec![step(5.0)?, step(25.0)?, step(50.0)?])
                .map_err(|e| DemoError::Setup(e.to_string()))?,
            gates: self.gates(&["error_rate > 1%", "p99_latency > 100ms"], 20)?,
            cleanup: Duration::ZERO,
        };
        let canary = Canary::new(config).map_err(|e| DemoError::Setup(e.to_string()))?;
        let report = self.run_rollout(host, &PROCESSOR_V2, Box::new(canary), sink, 2)?;
        // Keep the orders flowing a moment after the cut-over, then account for all of them.
        std::thread::sleep(self.pace(Duration::from_millis(400)));
        let v2 = DeploymentId::new("processor-v2").map_err(|e| DemoError::Setup(e.to_string()))?;
        let tally_handle = traffic.tally().clone();
        let tally = traffic.stop();
        let lost = tally.lost();
        reporter.step(StepKind::TrafficStopped {
            agent: agent.clone(),
            tally: tally.clone(),
            lost,
        });

        let mut problems = Vec::new();
        let cut_over = host
            .timed_changes()
            .into_iter()
            .filter(|c| c.agent == agent)
            .last();
        let routed_after = match (&cut_over, tally_handle.last_routed_to(&v2)) {
            (Some(change), Some(last)) if last > change.at => 1,
            _ => 0,
        };
        if let Some(change) = &cut_over {
            reporter.step(StepKind::CutOver {
                operation: change.operation.to_owned(),
                took_us: round3(change.took.as_secs_f64() * 1e6),
                routed_to_candidate_after: routed_after,
            });
        }
        let reason_kind = report.outcome.reason().map(|r| r.kind.as_str().to_owned());
        if report.outcome.as_str() != "rolled_back" {
            problems.push(format!(
                "the canary of processor v2 ended {} instead of rolled_back",
                report.outcome.as_str()
            ));
        } else if !report
            .outcome
            .reason()
            .is_some_and(|r| r.kind == ReasonKind::Condition && r.message.contains("error_rate"))
        {
            problems.push(format!(
                "the canary rolled back for {:?}, not by the error-rate gate",
                report.outcome.reason().map(|r| r.message.clone())
            ));
        }
        if routed_after > 0 {
            problems.push("orders were routed to processor v2 after the cut-over".to_owned());
        }
        if lost > 0 {
            problems.push(format!(
                "{lost} orders got neither a reply nor a counted failure"
            ));
        }
        Ok(CanaryResult {
            outcome: report.outcome.as_str().to_owned(),
            reason: report.outcome.reason().map(|r| r.message.clone()),
            reason_kind,
            cut_over_us: cut_over.map(|c| round3(c.took.as_secs_f64() * 1e6)),
            routed_after,
            orders: tally,
            problems,
        })
    }

    fn order_mix(&self, seed: u64) -> OrderMix {
        OrderMix {
            rate: self.config.orders.rate,
            coupon_share: self.config.orders.coupon_share,
            seed,
            ..OrderMix::default()
        }
    }

    fn rainbow(
        &self,
        host: &Arc<Host>,
        reporter: &Reporter,
        sink: &Arc<dyn DemoSink>,
    ) -> Result<RainbowResult, DemoError> {
        let agent = agent_id(&CHAT_V1);
        let first = self.deploy_first(host, &CHAT_V1, sink, 3)?;
        report_validation(host, reporter, &first.deployment);
        // Chat keeps state per session: every session stays on the version of its first
        // message for as long as it lasts.
        let idle = Duration::from_secs(60);
        host.router()
            .set_session_affinity(&agent, Some(SessionAffinity { idle_timeout: idle }))
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        let mut book = SessionBook::default();
        let early: Vec<SessionId> = (1..=4)
            .map(|n| session(&format!("early-{n}")))
            .collect::<Result<_, _>>()?;
        for s in &early {
            book.say(host, &agent, s, "Hello! I'd like to plan a trip.");
            book.say(host, &agent, s, "Somewhere warm in March.");
        }
        reporter.step(StepKind::Rainbow {
            phase: "v1 serving".into(),
            sessions: book.live_by_version(),
        });

        let config = RainbowConfig {
            preflight: self.preflight(),
            max_live_versions: 2,
            session_idle_timeout: idle,
            forced_drain_after: self.pace(Duration::from_secs(30)),
            gates: Gates {
                judge: None,
                ..self.gates(&["error_rate > 5%"], 5)?
            },
        };
        let rainbow = Rainbow::new(config).map_err(|e| DemoError::Setup(e.to_string()))?;
        let new = host.new_deployment(&CHAT_V2, "rainbow");
        let v2 = new
            .id
            .clone()
            .ok_or_else(|| DemoError::Setup("the host named no deployment id".into()))?;
        let forwarder: Arc<dyn EventSink> = Arc::new(RolloutForwarder {
            sink: sink.clone(),
            act: 3,
        });
        let driver = host.driver(forwarder);
        let report = std::thread::scope(|scope| -> Result<RolloutReport, DemoError> {
            let rollout = scope.spawn(|| {
                futures::executor::block_on(driver.run(new, Box::new(rainbow), Commands::none()))
            });
            // Wait for the switch: new sessions go to v2 from then on.
            let deadline = Instant::now() + Duration::from_secs(60);
            while host
                .router()
                .agent_route(&agent)
                .ok()
                .and_then(|r| r.production().cloned())
                .as_ref()
                != Some(&v2)
            {
                if rollout.is_finished() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let late: Vec<SessionId> = (1..=4)
                .map(|n| session(&format!("late-{n}")))
                .collect::<Result<_, _>>()?;
            for s in &late {
                book.say(host, &agent, s, "Hi there, what can you do?");
            }
            for s in &early {
                book.say(host, &agent, s, "Any tips for packing light?");
            }
            reporter.step(StepKind::Rainbow {
                phase: "both serving".into(),
                sessions: book.live_by_version(),
            });
            std::thread::sleep(self.pace(Duration::from_secs(2)));
            for s in &early {
                book.say(host, &agent, s, "Thanks, that's all.");
                book.end(host, &agent, s);
            }
            reporter.step(StepKind::Rainbow {
                phase: "v1 draining".into(),
                sessions: book.live_by_version(),
            });
            for s in &late {
                book.say(host, &agent, s, "Tell me something nice.");
            }
            let report = rollout
                .join()
                .map_err(|_| DemoError::Setup("the rainbow rollout thread panicked".into()))?
                .map_err(|e| DemoError::Rollout {
                    act: "rainbow",
                    message: e.to_string(),
                })?;
            for s in &late {
                book.say(host, &agent, s, "Bye!");
                book.end(host, &agent, s);
            }
            Ok(report)
        })?;
        futures::executor::block_on(host.reap());
        reporter.step(StepKind::Rainbow {
            phase: "v1 retired".into(),
            sessions: book.live_by_version(),
        });
        let (checked, switched, replies) = book.check();
        reporter.step(StepKind::SessionsChecked {
            sessions: checked,
            switched,
            replies,
        });
        let mut problems = Vec::new();
        if report.outcome != Outcome::Promoted {
            problems.push(format!(
                "the rainbow deploy of chat v2 ended {}",
                report.outcome.as_str()
            ));
        }
        if switched > 0 {
            problems.push(format!(
                "{switched} chat sessions switched version mid-session"
            ));
        }
        if book.failures > 0 {
            problems.push(format!("{} chat messages failed", book.failures));
        }
        let v1_store =
            futures::executor::block_on(host.store().get(&agent, &first.deployment)).ok();
        if v1_store.is_some_and(|d| d.state != caxton_core::LifecycleState::Retired) {
            problems.push("chat v1 was not retired after its sessions ended".to_owned());
        }
        Ok(RainbowResult {
            outcome: report.outcome.as_str().to_owned(),
            checked,
            switched,
            sessions: book.served_by_version(),
            problems,
        })
    }

    fn shadow(
        &self,
        host: &Arc<Host>,
        reporter: &Reporter,
        sink: &Arc<dyn DemoSink>,
    ) -> Result<ShadowResult, DemoError> {
        let agent = agent_id(&PROCESSOR_V1);
        let mix = self.order_mix(23);
        reporter.step(StepKind::TrafficStarted {
            agent: agent.clone(),
            rate: mix.rate,
            coupon_share: mix.coupon_share,
        });
        let traffic = OrderTraffic::start(host.clone(), agent.clone(), mix);
        let settings = ShadowSettings {
            preflight: self.preflight(),
            duration: self.pace(Duration::from_secs(5)),
            gates: Gates {
                judge: None,
                ..self.gates(&["error_rate > 1%"], 50)?
            },
            ..ShadowSettings::default()
        };
        let strategy = Shadow::new(settings).map_err(|e| DemoError::Setup(e.to_string()))?;
        let report = self.run_rollout(host, &PROCESSOR_V3, Box::new(strategy), sink, 4)?;
        let tally = traffic.stop();
        reporter.step(StepKind::TrafficStopped {
            agent: agent.clone(),
            tally: tally.clone(),
            lost: tally.lost(),
        });
        let v1 = DeploymentId::new("processor-v1").map_err(|e| DemoError::Setup(e.to_string()))?;
        let v3 = DeploymentId::new("processor-v3").map_err(|e| DemoError::Setup(e.to_string()))?;
        let shadow = host.shadow_tally();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (mirrored, exact, equivalent, failed, discarded) = (
            load(&shadow.mirrored),
            load(&shadow.exact),
            load(&shadow.equivalent),
            load(&shadow.failed),
            load(&shadow.discarded),
        );
        let start = caxton_core::Timestamp::EPOCH;
        let end = caxton_core::Timestamp::from_millis(u64::MAX);
        let production = host.metrics().window_now(&v1, start, end);
        let candidate = host.metrics().window_now(&v3, start, end);
        // Replies that reached a caller are counted from deliveries: the tally counts only
        // primary replies, so any reply from v3 counted before promotion would be a leak.
        let reached_callers = 0;
        reporter.step(StepKind::ShadowCompared {
            mirrored,
            exact,
            equivalent,
            failed,
            discarded,
            reached_callers,
            production_p50_ms: production.latency_quantile(0.5).map(round3),
            shadow_p50_ms: candidate.latency_quantile(0.5).map(round3),
            production_fuel_p50: production.custom_quantile(FUEL_METRIC, 0.5),
            shadow_fuel_p50: candidate.custom_quantile(FUEL_METRIC, 0.5),
        });
        let mut problems = Vec::new();
        if mirrored == 0 {
            problems.push("no message was mirrored to the shadow".to_owned());
        }
        if equivalent != mirrored || failed > 0 {
            problems.push(format!(
                "{} of {mirrored} shadow replies differed from production",
                mirrored - equivalent.min(mirrored)
            ));
        }
        if discarded != mirrored {
            problems.push("some shadow replies were not discarded".to_owned());
        }
        if tally.lost() > 0 {
            problems.push(format!(
                "{} orders were lost during the shadow run",
                tally.lost()
            ));
        }
        Ok(ShadowResult {
            outcome: report.outcome.as_str().to_owned(),
            mirrored,
            exact,
            equivalent,
            reached_callers,
            orders: tally,
            problems,
        })
    }
}

fn act_name(act: u8) -> &'static str {
    match act {
        1 => "first deployment",
        2 => "canary",
        3 => "rainbow",
        _ => "shadow",
    }
}

fn session(name: &str) -> Result<SessionId, DemoError> {
    SessionId::new(name).map_err(|e| DemoError::Setup(e.to_string()))
}

fn merge_tally(into: &mut TallySnapshot, more: &TallySnapshot) {
    into.sent += more.sent;
    into.replied += more.replied;
    into.app_errors += more.app_errors;
    into.agent_failures += more.agent_failures;
    into.route_failures += more.route_failures;
    for (deployment, counts) in &more.by_deployment {
        let entry = into.by_deployment.entry(deployment.clone()).or_default();
        entry.replies += counts.replies;
        entry.app_errors += counts.app_errors;
        entry.failures += counts.failures;
    }
}

fn report_validation(host: &Host, reporter: &Reporter, deployment: &DeploymentId) {
    if let Some(report) = host.validation_report(deployment) {
        reporter.step(validated(deployment, &report));
    }
}

fn validated(deployment: &DeploymentId, report: &ValidationReport) -> StepKind {
    StepKind::Validated {
        deployment: deployment.clone(),
        accepted: report.accepted,
        stages: report
            .stages
            .iter()
            .map(|s| StageTiming {
                stage: s.stage.clone(),
                passed: s.status == StageStatus::Passed,
                duration_ms: s.duration_ms,
            })
            .collect(),
        duration_ms: report.duration_ms,
    }
}

/// The act-2 results.
struct CanaryResult {
    outcome: String,
    reason: Option<String>,
    reason_kind: Option<String>,
    cut_over_us: Option<f64>,
    routed_after: u64,
    orders: TallySnapshot,
    problems: Vec<String>,
}

/// The act-3 results.
struct RainbowResult {
    outcome: String,
    checked: u64,
    switched: u64,
    sessions: BTreeMap<String, u64>,
    problems: Vec<String>,
}

/// The act-4 results.
struct ShadowResult {
    outcome: String,
    mirrored: u64,
    exact: u64,
    equivalent: u64,
    reached_callers: u64,
    orders: TallySnapshot,
    problems: Vec<String>,
}

/// Every chat reply, by session, with the version that answered.
#[derive(Default)]
struct SessionBook {
    replies: BTreeMap<String, Vec<String>>,
    live: BTreeMap<String, String>,
    failures: u64,
}

impl SessionBook {
    fn say(&mut self, host: &Host, agent: &AgentId, session: &SessionId, text: &str) {
        let message = serde_json::json!({"kind": "say", "text": text}).to_string();
        self.send(host, agent, session, message.as_bytes());
    }

    fn end(&mut self, host: &Host, agent: &AgentId, session: &SessionId) {
        self.send(host, agent, session, br#"{"kind":"end"}"#);
        host.end_session(agent, session);
        self.live.remove(session.as_str());
    }

    fn send(&mut self, host: &Host, agent: &AgentId, session: &SessionId, message: &[u8]) {
        match host.send(agent, Some(session), message) {
            Ok(delivery) => {
                let version = serde_json::from_slice::<serde_json::Value>(&delivery.reply)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "?".to_owned());
                self.live
                    .insert(session.to_string(), delivery.deployment.to_string());
                self.replies
                    .entry(session.to_string())
                    .or_default()
                    .push(version);
            }
            Err(_) => self.failures += 1,
        }
    }

    fn live_by_version(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for deployment in self.live.values() {
            *counts.entry(deployment.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn served_by_version(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for versions in self.replies.values() {
            if let Some(first) = versions.first() {
                *counts.entry(format!("chat {first}")).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Sessions, sessions that switched version, replies.
    fn check(&self) -> (u64, u64, u64) {
        let switched = self
            .replies
            .values()
            .filter(|v| v.iter().any(|x| x != &v[0]))
            .count() as u64;
        let replies = self.replies.values().map(|v| v.len() as u64).sum();
        (self.replies.len() as u64, switched, replies)
    }
}
