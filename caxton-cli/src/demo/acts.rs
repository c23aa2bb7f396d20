//! The four acts of `caxton demo`, run entirely through [`caxton_host::Host`]'s public API:
//! each version is deployed with a rollout spec and its contract tests, messages go
//! through `send` and `sender`, and what the demo reports comes from the host's rollout
//! events and handles, `status`, `timed_changes`, `shadow_counts` and `metrics`, and from
//! the [`Delivery`](caxton_host::Delivery) of every message.
//!
//! 1. Validate `processor` v1 (four stages, with timings) and make it production.
//! 2. Canary `processor` v2 under live order traffic: its coupon regression trips
//!    `error_rate > 1%` and the canary rolls itself back; the cut-over time is measured and
//!    every order sent is accounted for.
//! 3. Rainbow deploy of `chat` v2 (a sessions agent from its first deployment): sessions
//!    started on v1 stay on v1 while new sessions go to v2; v1 drains as its sessions end.
//! 4. Shadow run of `processor` v3: traffic is mirrored to it; outputs, latency and fuel are
//!    compared with production's, and no shadow reply reaches a caller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId, IdError, LifecycleState, SessionId, Timestamp, Weight};
use caxton_host::{BuildError, DeployRequest, FUEL_METRIC, Host, HostError, ShadowCounts};
use caxton_strategies::config::{
    CanaryConfig, CanaryStep, CanarySteps, DirectConfig, Gates, Preflight, RainbowConfig,
};
use caxton_strategies::shadow::ShadowSettings;
use caxton_strategies::{
    Condition, EventKind, Outcome, ReasonKind, RolloutReport, RolloutSpec, StrategyConfig,
};
use caxton_validate::{ContractTest, StageStatus};
use futures_timer::Delay;

use super::events::{DemoSink, Pump, Reporter, StageTiming, StepKind, SummaryRow, round3};
use super::load::{OrderMix, OrderTraffic, TallySnapshot};
use crate::samples::{
    CHAT_V1, CHAT_V2, PROCESSOR_V1, PROCESSOR_V2, PROCESSOR_V3, processor_contract_tests,
};

/// How fast the demo moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Pace {
    /// For people: canary holds of a few seconds; the whole demo takes well under a minute.
    #[default]
    Normal,
    /// For tests: holds and timeouts cut to a quarter.
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

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The host could not start.
    #[error("the host could not start: {0}")]
    Build(#[from] BuildError),
    /// A rollout could not start or run.
    #[error("the {act} rollout could not run: {source}")]
    Rollout {
        /// Which one.
        act: &'static str,
        /// Why.
        source: HostError,
    },
    /// The demo's own setup failed.
    #[error("{0}")]
    Setup(String),
}

impl From<IdError> for DemoError {
    fn from(error: IdError) -> Self {
        DemoError::Setup(error.to_string())
    }
}

/// What did not go as designed; empty when it all did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DemoOutcome {
    problems: Vec<String>,
}

impl DemoOutcome {
    /// Whether every act ran as designed.
    pub(crate) fn as_designed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The demo.
#[derive(Debug)]
pub(crate) struct Demo {
    pace: Pace,
}

/// What the demo shares between acts: the host, its events, the reporter.
struct Stage {
    host: Host,
    pump: Pump,
    reporter: Reporter,
    /// The contract tests `processor` is deployed with.
    processor_tests: Vec<ContractTest>,
}

impl Stage {
    /// Deploys `request` and forwards the rollout's events until it ends.
    fn roll_out(
        &mut self,
        request: DeployRequest,
        act: &'static str,
    ) -> Result<RolloutReport, DemoError> {
        let deployed = futures::executor::block_on(self.host.deploy(request))
            .map_err(|source| DemoError::Rollout { act, source })?;
        self.pump
            .wait(&self.reporter, deployed.rollout.wait())
            .map_err(|source| DemoError::Rollout { act, source })
    }

    /// Reports the validation the host ran on `deployment`.
    fn report_validation(&self, deployment: &DeploymentId) {
        let Some(report) = self.host.validation_report(deployment) else {
            return;
        };
        self.reporter.step(StepKind::Validated {
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
        });
    }

    /// Live sessions pinned to each deployment of `agent`, as the host's status says.
    fn live_sessions(&self, agent: &AgentId) -> BTreeMap<String, u64> {
        futures::executor::block_on(self.host.status(agent))
            .map(|status| {
                status
                    .deployments
                    .iter()
                    .filter(|d| d.pinned_sessions > 0)
                    .map(|d| (d.id.to_string(), d.pinned_sessions))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sleeps for `hold`, forwarding rollout events meanwhile.
    fn hold(&mut self, hold: Duration) {
        self.pump.wait(&self.reporter, Delay::new(hold));
    }
}

/// The act-2 results.
struct CanaryResult {
    outcome: String,
    reason: Option<String>,
    cut_over_us: Option<f64>,
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
    counts: ShadowCounts,
    reached_callers: u64,
    orders: TallySnapshot,
    problems: Vec<String>,
}

impl Demo {
    /// A demo at `pace`.
    pub(crate) fn new(pace: Pace) -> Self {
        Demo { pace }
    }

    /// Runs the four acts, reporting to `sink`. Errors only when the demo cannot run at
    /// all; a demo that ran but not as designed says so in its outcome and in its last
    /// event.
    pub(crate) fn run(&self, sink: Arc<dyn DemoSink>) -> Result<DemoOutcome, DemoError> {
        let host = Host::builder().build()?;
        let mut stage = Stage {
            pump: Pump::new(host.events()),
            host,
            reporter: Reporter::new(sink),
            processor_tests: processor_contract_tests().map_err(DemoError::Setup)?,
        };
        let mut problems = Vec::new();

        stage
            .reporter
            .act(1, "Validate processor v1 and make it production");
        let first = stage.roll_out(
            PROCESSOR_V1
                .request()?
                .rollout(self.direct())
                .contract_tests(stage.processor_tests.clone())
                .build(),
            "first deployment",
        )?;
        stage.report_validation(&first.deployment);
        if first.outcome != Outcome::Promoted {
            problems.push(format!(
                "processor v1 was not promoted: {}",
                first.outcome.as_str()
            ));
        }

        stage
            .reporter
            .act(2, "Canary processor v2 under live order traffic");
        let canary = self.canary(&mut stage)?;
        problems.extend(canary.problems.iter().cloned());

        stage.reporter.act(
            3,
            "Rainbow deploy of chat v2: sessions stay on the version that started them",
        );
        let rainbow = self.rainbow(&mut stage)?;
        problems.extend(rainbow.problems.iter().cloned());

        stage.reporter.act(
            4,
            "Shadow run of processor v3: mirrored, compared, never served",
        );
        let shadow = self.shadow(&mut stage)?;
        problems.extend(shadow.problems.iter().cloned());

        let mut orders = canary.orders.clone();
        orders.merge(&shadow.orders);
        if orders.lost() > 0 {
            problems.push(format!("{} orders were lost", orders.lost()));
        }

        let rows = vec![
            SummaryRow {
                step: "1 validate + deploy processor v1".into(),
                result: first.outcome.as_str().into(),
                detail: stage
                    .host
                    .validation_report(&first.deployment)
                    .map(|r| format!("4 stages in {:.0} ms", r.duration_ms))
                    .unwrap_or_default(),
            },
            SummaryRow {
                step: "2 canary processor v2".into(),
                result: canary.outcome.clone(),
                detail: format!(
                    "{}; cut-over {}; {} orders, {} lost",
                    canary.reason.clone().unwrap_or_default(),
                    canary
                        .cut_over_us
                        .map(|us| format!("{us:.1} µs"))
                        .unwrap_or_else(|| "n/a".into()),
                    canary.orders.sent,
                    canary.orders.lost()
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
                    "{} mirrored, {} JSON-equal, {} byte-equal, {} served",
                    shadow.counts.mirrored,
                    shadow.counts.equivalent,
                    shadow.counts.exact,
                    shadow.reached_callers
                ),
            },
        ];
        stage.reporter.acts_over();
        stage.reporter.step(StepKind::Summary { rows });
        stage.reporter.step(StepKind::Finished {
            outcome: if problems.is_empty() {
                "completed".into()
            } else {
                "failed".into()
            },
            problems: problems.clone(),
        });
        Ok(DemoOutcome { problems })
    }

    fn pace(&self, normal: Duration) -> Duration {
        self.pace.scale(normal)
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

    /// The spec of a first deployment: validate, warm up, switch.
    fn direct(&self) -> RolloutSpec {
        RolloutSpec::new(StrategyConfig::Direct(DirectConfig {
            preflight: self.preflight(),
            drain_timeout: self.pace(Duration::from_secs(4)),
        }))
    }

    /// Act 2: 5 %, 25 % and 50 % for 4 s each under `error_rate > 1%` and
    /// `p99_latency > 100ms`, checked every second once the canary has 20 requests.
    fn canary_spec(&self) -> Result<RolloutSpec, DemoError> {
        let hold = self.pace(Duration::from_secs(4));
        let step = |percent: f64| -> Result<CanaryStep, DemoError> {
            let weight =
                Weight::from_percent(percent).map_err(|e| DemoError::Setup(e.to_string()))?;
            Ok(CanaryStep { weight, hold })
        };
        Ok(RolloutSpec::new(StrategyConfig::Canary(CanaryConfig {
            preflight: self.preflight(),
            steps: CanarySteps::new(vec![step(5.0)?, step(25.0)?, step(50.0)?])
                .map_err(|e| DemoError::Setup(e.to_string()))?,
            gates: self.gates(&["error_rate > 1%", "p99_latency > 100ms"], 20)?,
            cleanup: Duration::ZERO,
        })))
    }

    /// Act 3: at most two live versions; sessions still on v1 30 s after the switch move.
    fn rainbow_spec(&self) -> Result<RolloutSpec, DemoError> {
        Ok(RolloutSpec::new(StrategyConfig::Rainbow(RainbowConfig {
            preflight: self.preflight(),
            max_live_versions: 2,
            session_idle_timeout: Duration::from_secs(60),
            forced_drain_after: self.pace(Duration::from_secs(30)),
            gates: Gates {
                judge: None,
                ..self.gates(&["error_rate > 5%"], 5)?
            },
            // Every new session goes to v2 at once.
            steps: None,
        })))
    }

    /// Act 4: all traffic mirrored for 5 s, compared as JSON, latency and resources.
    fn shadow_spec(&self) -> Result<RolloutSpec, DemoError> {
        Ok(RolloutSpec::new(StrategyConfig::Shadow(ShadowSettings {
            preflight: self.preflight(),
            duration: self.pace(Duration::from_secs(5)),
            gates: Gates {
                judge: None,
                ..self.gates(&["error_rate > 1%"], 50)?
            },
            ..ShadowSettings::default()
        })))
    }

    fn order_mix(&self, seed: u64) -> OrderMix {
        OrderMix {
            seed,
            ..OrderMix::default()
        }
    }

    fn canary(&self, stage: &mut Stage) -> Result<CanaryResult, DemoError> {
        let agent = PROCESSOR_V1.agent()?;
        let v2 = PROCESSOR_V2.deployment()?;
        let mix = self.order_mix(11);
        stage.reporter.step(StepKind::TrafficStarted {
            agent: agent.clone(),
            rate: mix.rate,
            coupon_share: mix.coupon_share,
        });
        let traffic = OrderTraffic::start(&stage.host, &agent, mix);
        // Let production's baseline build up before the candidate arrives.
        stage.hold(self.pace(Duration::from_secs(1)));
        let report = stage.roll_out(
            PROCESSOR_V2
                .request()?
                .rollout(self.canary_spec()?)
                .contract_tests(stage.processor_tests.clone())
                .build(),
            "canary",
        )?;
        // Keep the orders flowing a moment after the cut-over, then account for all of them.
        stage.hold(self.pace(Duration::from_millis(400)));
        let sent = traffic.tally().clone();
        let tally = traffic.stop();
        let lost = tally.lost();
        stage.reporter.step(StepKind::TrafficStopped {
            agent: agent.clone(),
            tally: tally.clone(),
            lost,
        });

        let mut problems = Vec::new();
        // The last traffic change of `processor` is the one that took the canary out.
        let cut_over = stage
            .host
            .timed_changes()
            .into_iter()
            .rfind(|c| c.agent == agent);
        let routed_after = cut_over
            .as_ref()
            .map_or(0, |change| sent.sent_after(&v2, change.at));
        if let Some(change) = &cut_over {
            stage.reporter.step(StepKind::CutOver {
                operation: change.operation.to_owned(),
                took_us: round3(change.took.as_secs_f64() * 1e6),
                routed_to_candidate_after: routed_after,
            });
        }
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
        if tally
            .by_deployment
            .get(v2.as_str())
            .is_none_or(|c| c.app_errors == 0)
        {
            problems.push("processor v2's coupon regression never showed".to_owned());
        }
        if routed_after > 0 {
            problems.push(format!(
                "{routed_after} orders were routed to processor v2 after the cut-over"
            ));
        }
        if lost > 0 {
            problems.push(format!(
                "{lost} orders got neither a reply nor a counted failure"
            ));
        }
        Ok(CanaryResult {
            outcome: report.outcome.as_str().to_owned(),
            reason: report.outcome.reason().map(|r| r.message.clone()),
            cut_over_us: cut_over.map(|c| round3(c.took.as_secs_f64() * 1e6)),
            orders: tally,
            problems,
        })
    }

    fn rainbow(&self, stage: &mut Stage) -> Result<RainbowResult, DemoError> {
        let agent = CHAT_V1.agent()?;
        let (v1, v2) = (CHAT_V1.deployment()?, CHAT_V2.deployment()?);
        // Chat keeps state per session, so it is a sessions agent from its first deployment:
        // the host pins every session to the version that served its first message.
        let first = stage.roll_out(
            CHAT_V1.request()?.rollout(self.direct()).build(),
            "first deployment of chat",
        )?;
        stage.report_validation(&first.deployment);
        let mut book = SessionBook::default();
        let early = sessions("early")?;
        for s in &early {
            book.say(&stage.host, &agent, s, "Hello! I'd like to plan a trip.");
            book.say(&stage.host, &agent, s, "Somewhere warm in March.");
        }
        stage.reporter.step(StepKind::Rainbow {
            phase: "v1 serving".into(),
            sessions: stage.live_sessions(&agent),
        });

        let deployed = futures::executor::block_on(
            stage
                .host
                .deploy(CHAT_V2.request()?.rollout(self.rainbow_spec()?).build()),
        )
        .map_err(|source| DemoError::Rollout {
            act: "rainbow",
            source,
        })?;
        let mut problems = Vec::new();
        // The switch: new sessions go to v2 from the moment the host reports it promoted.
        let switched_over = stage.pump.until(
            &stage.reporter,
            |e| e.deployment_id == v2 && matches!(e.kind, EventKind::Promoted),
            futures::future::select(
                Box::pin(deployed.rollout.wait()),
                Delay::new(Duration::from_secs(60)),
            ),
        );
        if !switched_over {
            problems.push("chat v2 never took over new sessions".to_owned());
        }
        let late = sessions("late")?;
        for s in &late {
            book.say(&stage.host, &agent, s, "Hi there, what can you do?");
        }
        for s in &early {
            book.say(&stage.host, &agent, s, "Any tips for packing light?");
        }
        stage.pump.flush(&stage.reporter);
        stage.reporter.step(StepKind::Rainbow {
            phase: "both serving".into(),
            sessions: stage.live_sessions(&agent),
        });
        stage.hold(self.pace(Duration::from_secs(2)));
        for s in &early {
            book.say(&stage.host, &agent, s, "Thanks, that's all.");
            book.end(&stage.host, &agent, s);
        }
        stage.pump.flush(&stage.reporter);
        stage.reporter.step(StepKind::Rainbow {
            phase: "v1 draining".into(),
            sessions: stage.live_sessions(&agent),
        });
        for s in &late {
            book.say(&stage.host, &agent, s, "Tell me something nice.");
        }
        let report = stage
            .pump
            .wait(&stage.reporter, deployed.rollout.wait())
            .map_err(|source| DemoError::Rollout {
                act: "rainbow",
                source,
            })?;
        for s in &late {
            book.say(&stage.host, &agent, s, "Bye!");
            book.end(&stage.host, &agent, s);
        }
        stage.reporter.step(StepKind::Rainbow {
            phase: "v1 retired".into(),
            sessions: stage.live_sessions(&agent),
        });

        // Read off the deliveries: who answered each message of each session.
        let switched = book.switched();
        let stayed_on_v1 = early.iter().filter(|s| book.only(s, &v1)).count() as u64;
        let started_on_v2 = late.iter().filter(|s| book.only(s, &v2)).count() as u64;
        stage.reporter.step(StepKind::SessionsChecked {
            sessions: book.replies.len() as u64,
            switched,
            replies: book.replies.values().map(|r| r.len() as u64).sum(),
            opened_before_rollout: early.len() as u64,
            stayed_on_first_version: stayed_on_v1,
            by_deployment: book.sessions_by_deployment(),
        });
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
        if stayed_on_v1 != early.len() as u64 {
            problems.push(format!(
                "{} of {} sessions opened on chat v1 were answered by another deployment",
                early.len() as u64 - stayed_on_v1,
                early.len()
            ));
        }
        if started_on_v2 != late.len() as u64 {
            problems.push(format!(
                "{} of {} sessions opened after the switch were not answered by chat v2 alone",
                late.len() as u64 - started_on_v2,
                late.len()
            ));
        }
        if book.failures > 0 {
            problems.push(format!("{} chat messages failed", book.failures));
        }
        let v1_state = futures::executor::block_on(stage.host.get(&agent, &v1))
            .map(|d| d.state)
            .ok();
        if v1_state != Some(LifecycleState::Retired) {
            problems.push(format!(
                "chat v1 was not retired after its sessions ended: {v1_state:?}"
            ));
        }
        Ok(RainbowResult {
            outcome: report.outcome.as_str().to_owned(),
            checked: book.replies.len() as u64,
            switched,
            sessions: book.served_by_version(),
            problems,
        })
    }

    fn shadow(&self, stage: &mut Stage) -> Result<ShadowResult, DemoError> {
        let agent = PROCESSOR_V1.agent()?;
        let (v1, v3) = (PROCESSOR_V1.deployment()?, PROCESSOR_V3.deployment()?);
        let mix = self.order_mix(23);
        stage.reporter.step(StepKind::TrafficStarted {
            agent: agent.clone(),
            rate: mix.rate,
            coupon_share: mix.coupon_share,
        });
        let act_started = Instant::now();
        let traffic = OrderTraffic::start(&stage.host, &agent, mix);
        let report = stage.roll_out(
            PROCESSOR_V3
                .request()?
                .rollout(self.shadow_spec()?)
                .contract_tests(stage.processor_tests.clone())
                .build(),
            "shadow",
        )?;
        let received = traffic.tally().clone();
        let tally = traffic.stop();
        stage.reporter.step(StepKind::TrafficStopped {
            agent: agent.clone(),
            tally: tally.clone(),
            lost: tally.lost(),
        });

        // Copies run on the host's shadow worker, off the callers' threads: wait until each
        // one is accounted for before reading the comparison.
        let counts = settle(&stage.host, Duration::from_secs(10));
        let unsettled = counts
            .mirrored
            .saturating_sub(counts.compared + counts.failed + counts.dropped);
        // What callers received from v3 while it was the shadow: every reply from v3 that
        // was back before its promotion began (after it, v3 answers as production).
        let promoted = stage
            .host
            .timed_changes()
            .into_iter()
            .find(|c| c.agent == agent && c.operation == "promote" && c.at > act_started)
            .map(|c| c.at.checked_sub(c.took).unwrap_or(c.at));
        let reached_callers = match promoted {
            Some(at) => received.answered_before(&v3, at),
            None => received.replies_from(&v3),
        };
        let everything = (Timestamp::EPOCH, Timestamp::from_millis(u64::MAX));
        let production = stage
            .host
            .metrics()
            .window_now(&v1, everything.0, everything.1);
        let candidate = stage
            .host
            .metrics()
            .window_now(&v3, everything.0, everything.1);
        stage.reporter.step(StepKind::ShadowCompared {
            mirrored: counts.mirrored,
            compared: counts.compared,
            dropped: counts.dropped,
            exact: counts.exact,
            equivalent: counts.equivalent,
            failed: counts.failed,
            discarded: counts.compared,
            reached_callers,
            production_p50_ms: production.latency_quantile(0.5).map(round3),
            shadow_p50_ms: candidate.latency_quantile(0.5).map(round3),
            production_fuel_p50: production.custom_quantile(FUEL_METRIC, 0.5),
            shadow_fuel_p50: candidate.custom_quantile(FUEL_METRIC, 0.5),
        });
        let mut problems = Vec::new();
        if counts.mirrored == 0 {
            problems.push("no message was mirrored to the shadow".to_owned());
        }
        if unsettled > 0 {
            problems.push(format!(
                "{unsettled} shadow copies were neither compared, failed nor dropped after 10 s"
            ));
        }
        if counts.compared == 0 && counts.mirrored > 0 {
            problems.push("no mirrored copy was compared with production".to_owned());
        }
        if counts.equivalent != counts.compared || counts.failed > 0 {
            problems.push(format!(
                "{} of {} shadow replies differed from production, {} shadow copies failed",
                counts.compared - counts.equivalent.min(counts.compared),
                counts.compared,
                counts.failed
            ));
        }
        if reached_callers > 0 {
            problems.push(format!(
                "{reached_callers} shadow replies reached a caller while processor v3 was the shadow"
            ));
        }
        if tally.lost() > 0 {
            problems.push(format!(
                "{} orders were lost during the shadow run",
                tally.lost()
            ));
        }
        Ok(ShadowResult {
            outcome: report.outcome.as_str().to_owned(),
            counts,
            reached_callers,
            orders: tally,
            problems,
        })
    }
}

/// Waits until every shadow copy queued so far is compared, failed or dropped, or until
/// `timeout`; returns the counts then.
fn settle(host: &Host, timeout: Duration) -> ShadowCounts {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = host.shadow_counts();
        if counts.compared + counts.failed + counts.dropped >= counts.mirrored
            || Instant::now() >= deadline
        {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Four sessions named `<prefix>-1` to `<prefix>-4`.
fn sessions(prefix: &str) -> Result<Vec<SessionId>, DemoError> {
    (1..=4)
        .map(|n| SessionId::new(format!("{prefix}-{n}")).map_err(DemoError::from))
        .collect()
}

/// One chat reply: the deployment that answered, and the release the reply names.
struct Answer {
    deployment: DeploymentId,
    version: String,
}

/// Every chat reply, by session, with the deployment that answered it.
#[derive(Default)]
struct SessionBook {
    replies: BTreeMap<String, Vec<Answer>>,
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
    }

    fn send(&mut self, host: &Host, agent: &AgentId, session: &SessionId, message: &[u8]) {
        match host.send(agent, Some(session), message) {
            Ok(delivery) => {
                let version = serde_json::from_slice::<serde_json::Value>(&delivery.reply)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "?".to_owned());
                self.replies
                    .entry(session.to_string())
                    .or_default()
                    .push(Answer {
                        deployment: delivery.deployment,
                        version,
                    });
            }
            Err(_) => self.failures += 1,
        }
    }

    /// Whether every reply of `session` came from `deployment`.
    fn only(&self, session: &SessionId, deployment: &DeploymentId) -> bool {
        self.replies
            .get(session.as_str())
            .is_some_and(|r| !r.is_empty() && r.iter().all(|a| &a.deployment == deployment))
    }

    /// Sessions answered by more than one deployment, or by more than one release.
    fn switched(&self) -> u64 {
        self.replies
            .values()
            .filter(|r| {
                r.iter()
                    .any(|a| a.deployment != r[0].deployment || a.version != r[0].version)
            })
            .count() as u64
    }

    /// Sessions per deployment that answered their first message.
    fn sessions_by_deployment(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for answers in self.replies.values() {
            if let Some(first) = answers.first() {
                *counts.entry(first.deployment.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Sessions per release (`chat v1`) that answered their first message.
    fn served_by_version(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for answers in self.replies.values() {
            if let Some(first) = answers.first() {
                *counts.entry(format!("chat {}", first.version)).or_insert(0) += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::SampleAgent;

    // A spec or sample the demo cannot use shows up here, not as a demo that cannot start.
    #[test]
    fn every_spec_the_demo_uses_builds_a_strategy() {
        for pace in [Pace::Normal, Pace::Fast] {
            let demo = Demo::new(pace);
            let specs = [
                demo.direct(),
                demo.canary_spec().unwrap(),
                demo.rainbow_spec().unwrap(),
                demo.shadow_spec().unwrap(),
            ];
            for spec in specs {
                assert!(spec.strategy.build().is_ok(), "{}", spec.strategy.name());
            }
        }
        let samples: [SampleAgent; 5] =
            [PROCESSOR_V1, PROCESSOR_V2, PROCESSOR_V3, CHAT_V1, CHAT_V2];
        assert!(samples.iter().all(|s| s.request().is_ok()));
    }
}
