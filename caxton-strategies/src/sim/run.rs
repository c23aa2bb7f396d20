//! [`Simulation`]: a whole rollout in virtual time, wired as `caxton simulate` runs it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caxton_core::{
    AgentId, Clock, CodeLayer, Deployment, DeploymentId, DeploymentStore, LifecycleEvent,
    ManualClock, MemoryStore, ModelLayer, NewDeployment, PromptLayer, SessionAffinity, Timestamp,
    ToolsLayer, TrafficControl, VersionTuple,
};

use super::metrics::{SyntheticMetrics, SyntheticProfile};
use super::sessions::{SessionMode, SessionModel};
use super::traffic::SimTraffic;
use crate::builtin::StrategyConfig;
use crate::config::RainbowConfig;
use crate::driver::{CandidateChecks, Commands, DriverError, RolloutDriver, RolloutReport};
use crate::duration::HumanDuration;
use crate::event::EventSink;
use crate::spec::RolloutSpec;
use crate::strategy::{ValidationVerdict, WarmUpReport};

/// Validation and warm-up that take a set time on the clock and give a set answer.
#[derive(Debug, Clone)]
pub struct SimChecks {
    clock: Arc<dyn Clock>,
    verdict: ValidationVerdict,
    validation_time: Duration,
    warm_up: WarmUpReport,
    warm_up_time: Duration,
}

impl SimChecks {
    /// Checks that pass, taking no time.
    pub fn passing(clock: Arc<dyn Clock>) -> Self {
        SimChecks {
            clock,
            verdict: ValidationVerdict::passed("assumed: simulations do not run validation"),
            validation_time: Duration::ZERO,
            warm_up: WarmUpReport::ready("simulated"),
            warm_up_time: Duration::ZERO,
        }
    }

    /// Answers validation with `verdict` after `time`.
    pub fn with_validation(mut self, verdict: ValidationVerdict, time: Duration) -> Self {
        self.verdict = verdict;
        self.validation_time = time;
        self
    }

    /// Answers warm-up with `report` after `time`.
    pub fn with_warm_up(mut self, report: WarmUpReport, time: Duration) -> Self {
        self.warm_up = report;
        self.warm_up_time = time;
        self
    }
}

#[async_trait]
impl CandidateChecks for SimChecks {
    async fn validate(&self, _candidate: &Deployment) -> ValidationVerdict {
        self.clock.sleep(self.validation_time).await;
        self.verdict.clone()
    }

    async fn warm_up(&self, _candidate: &Deployment) -> WarmUpReport {
        self.clock.sleep(self.warm_up_time).await;
        self.warm_up.clone()
    }
}

/// The most condition checks a simulation may take: 100,000, a few seconds of work in a
/// release build.
///
/// A gated rollout wakes once per `check_interval` while it holds, extends, pauses or
/// cleans up, and a simulation runs every one of those checks, with synthetic metrics for
/// each. A spec checked every millisecond over a 100-day hold would take 8.6 × 10⁹ of
/// them (hours), so [`Simulation::run`] works out the most a rollout could take before it
/// starts and refuses a spec above this limit with
/// [`SimulationError::TooMuchWork`], naming the fields to change. The bound is an upper
/// one: every hold, every extension up to `max_extension`, and a pause up to
/// `pause_timeout` per pause the simulation could see (one, plus one for each operator
/// command it is given).
pub const MAX_SIMULATED_CHECKS: u64 = 100_000;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// The rollout could take more than [`MAX_SIMULATED_CHECKS`] condition checks.
    #[error(
        "simulating this rollout could take up to {checks} condition checks, one every \
         {check_interval} (`check_interval`) over up to {span}, most of it {largest} \
         ({largest_span}); a simulation runs at most {limit}: raise `check_interval` or \
         shorten {largest}"
    )]
    TooMuchWork {
        /// The most checks the rollout could take.
        checks: u64,
        /// The limit, [`MAX_SIMULATED_CHECKS`].
        limit: u64,
        /// How often conditions are checked.
        check_interval: HumanDuration,
        /// The longest the rollout could spend checking conditions.
        span: HumanDuration,
        /// The setting that contributes most to it, as written in a spec, e.g.
        /// `` `hold` of canary step 1 ``.
        largest: String,
        /// How much it contributes.
        largest_span: HumanDuration,
    },
    /// The strategy's configuration is invalid.
    #[error("invalid strategy: {0}")]
    Strategy(#[from] crate::config::ConfigError),
    /// The driver could not start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Setting up the baseline failed.
    #[error("could not set up the simulated baseline: {0}")]
    Setup(String),
}

/// A rollout in virtual time against synthetic metrics, as `caxton simulate` runs it.
///
/// ```
/// use caxton_strategies::{RolloutSpec, Outcome};
/// use caxton_strategies::sim::Simulation;
///
/// let spec = RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%,p99>100ms"))?;
/// let good = Simulation::new(spec.clone(), "error_rate=0.2%,p99=40ms,rps=50".parse()?, "error_rate=0.2%,p99=40ms".parse()?);
/// assert_eq!(good.run_blocking(None)?.outcome, Outcome::Promoted);
/// let bad = Simulation::new(spec, "error_rate=0.2%,p99=40ms,rps=50".parse()?, "error_rate=5%,p99=40ms".parse()?);
/// assert_eq!(bad.run_blocking(None)?.outcome.as_str(), "rolled_back");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Simulation {
    spec: RolloutSpec,
    baseline: SyntheticProfile,
    candidate: SyntheticProfile,
    seed: u64,
    sessions: SessionModel,
    session_mode: SessionMode,
    commands: Vec<(Duration, crate::strategy::Command)>,
    validation: Option<ValidationVerdict>,
}

/// A finished simulation and the joints it ran on.
#[derive(Debug)]
pub struct SimulationRun {
    /// How the rollout ended.
    pub report: RolloutReport,
    /// The registry, with every deployment and its audit history.
    pub store: Arc<MemoryStore>,
    /// Traffic control, with every change it recorded.
    pub traffic: SimTraffic,
    /// The simulated agent.
    pub agent: AgentId,
    /// The production deployment the rollout started from.
    pub baseline: DeploymentId,
    /// The candidate.
    pub candidate: DeploymentId,
}

impl Simulation {
    /// A simulation of `spec` with these behaviours and seed 0.
    pub fn new(spec: RolloutSpec, baseline: SyntheticProfile, candidate: SyntheticProfile) -> Self {
        Simulation {
            spec,
            baseline,
            candidate,
            seed: 0,
            sessions: SessionModel::default(),
            session_mode: SessionMode::default(),
            commands: Vec::new(),
            validation: None,
        }
    }

    /// Sets the random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The random seed (the first one of a batch).
    pub(super) fn seed_value(&self) -> u64 {
        self.seed
    }

    /// Sets how sessions arrive and last (they matter once session affinity is on).
    pub fn sessions(mut self, model: SessionModel) -> Self {
        self.sessions = model;
        self
    }

    /// Sets whether the simulated agent keeps state per session (default
    /// [`Stateless`](SessionMode::Stateless)). For a sessions agent the simulation does
    /// what a host does when it registers the agent's first deployment: it turns session
    /// affinity on, so sessions that began before the rollout stay on the baseline.
    pub fn session_mode(mut self, mode: SessionMode) -> Self {
        self.session_mode = mode;
        self
    }

    /// Delivers an operator command `after` the rollout starts.
    pub fn command(mut self, after: Duration, command: crate::strategy::Command) -> Self {
        self.commands.push((after, command));
        self
    }

    /// Answers validation with `verdict` (by default every candidate passes).
    pub fn validation(mut self, verdict: ValidationVerdict) -> Self {
        self.validation = Some(verdict);
        self
    }

    /// Runs the rollout to its end in virtual time.
    pub async fn run(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<RolloutReport, SimulationError> {
        Ok(self.run_with_joints(events).await?.report)
    }

    /// Runs the rollout and hands back the registry and traffic control it ran on, for
    /// inspection.
    pub async fn run_with_joints(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<SimulationRun, SimulationError> {
        let strategy = self.spec.strategy.build()?;
        self.check_work()?;
        // A fixed start keeps timelines and audit times the same from run to run.
        let clock = ManualClock::auto_advancing(Timestamp::from_millis(1_767_225_600_000));
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let store = Arc::new(MemoryStore::with_clock(Arc::clone(&clock)));
        let traffic = SimTraffic::new(Arc::clone(&clock))
            .with_sessions(self.sessions, self.seed ^ 0x5e55_1035);
        let agent =
            AgentId::new("simulated-agent").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let baseline_id =
            DeploymentId::new("baseline").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let candidate_id =
            DeploymentId::new("candidate").map_err(|e| SimulationError::Setup(e.to_string()))?;
        let version = |code: &[u8]| {
            VersionTuple::new(
                CodeLayer::from_module(code),
                ModelLayer::new("simulated", "model", "1"),
                PromptLayer::from_prompt("simulated", &[]),
                ToolsLayer::from_definitions(&serde_json::json!([])),
            )
        };
        let setup = |e: &dyn fmt::Display| SimulationError::Setup(e.to_string());
        let baseline = store
            .create(
                NewDeployment::builder(agent.clone(), version(b"simulated baseline"))
                    .id(baseline_id.clone())
                    .build(),
            )
            .await
            .map_err(|e| setup(&e))?;
        for event in [
            LifecycleEvent::BeginValidation,
            LifecycleEvent::ValidationPassed,
            LifecycleEvent::WarmUpPassed,
        ] {
            store
                .transition(&agent, &baseline.id, event, "simulated baseline")
                .await
                .map_err(|e| setup(&e))?;
        }
        store
            .promote_if_none(&agent, &baseline.id, "simulated baseline")
            .await
            .map_err(|e| setup(&e))?;
        traffic
            .register(&agent, &baseline.id)
            .await
            .map_err(|e| setup(&e))?;
        if self.session_mode == SessionMode::Sessions {
            traffic
                .set_session_affinity(&agent, Some(self.affinity()))
                .await
                .map_err(|e| setup(&e))?;
        }
        traffic
            .promote(&agent, &baseline.id)
            .await
            .map_err(|e| setup(&e))?;
        let metrics = SyntheticMetrics::new(traffic.clone(), agent.clone(), self.seed)
            .with_profile(candidate_id.clone(), self.candidate.clone())
            .with_profile(baseline_id.clone(), self.baseline.clone());
        let mut checks = SimChecks::passing(Arc::clone(&clock));
        if let Some(verdict) = &self.validation {
            checks = checks.with_validation(verdict.clone(), Duration::ZERO);
        }
        let mut builder = RolloutDriver::builder(
            store.clone(),
            Arc::new(traffic.clone()),
            Arc::new(metrics),
            Arc::clone(&clock),
            Arc::new(checks),
        );
        if let Some(events) = events {
            builder = builder.events(events);
        }
        let driver = builder.build();
        let commands = self
            .commands
            .iter()
            .cloned()
            .fold(Commands::none(), |c, (after, command)| c.at(after, command));
        let new = NewDeployment::builder(agent.clone(), version(b"simulated candidate"))
            .id(candidate_id.clone())
            .build();
        let report = driver.run(new, strategy, commands).await?;
        Ok(SimulationRun {
            report,
            store,
            traffic,
            agent,
            baseline: baseline_id,
            candidate: candidate_id,
        })
    }

    /// Whether the simulation would run: the strategy's configuration is valid and the
    /// rollout could take at most [`MAX_SIMULATED_CHECKS`] condition checks (see there for
    /// the bound). [`run`](Simulation::run) checks the same first; a caller may ask before
    /// it prints anything.
    pub fn check(&self) -> Result<(), SimulationError> {
        self.spec.strategy.build()?;
        self.check_work()
    }

    /// Refuses the simulation if the rollout could take more than
    /// [`MAX_SIMULATED_CHECKS`] condition checks.
    fn check_work(&self) -> Result<(), SimulationError> {
        let strategy = &self.spec.strategy;
        let Some(gates) = strategy.gates() else {
            // Direct: no gates, nothing checked at an interval.
            return Ok(());
        };
        let pauses = 1 + self.commands.len() as u32;
        let mut spans: Vec<(String, Duration)> = Vec::new();
        let mut holds = |steps: Option<&crate::config::CanarySteps>| {
            let steps = steps.map_or(&[][..], |steps| steps.steps());
            for (index, step) in steps.iter().enumerate() {
                spans.push((format!("`hold` of canary step {}", index + 1), step.hold));
            }
            steps.len() as u32
        };
        let (holding_stages, settle) = match strategy {
            StrategyConfig::Canary(canary) => {
                (holds(Some(&canary.steps)), ("`cleanup`", canary.cleanup))
            }
            StrategyConfig::Rainbow(rainbow) => (
                holds(rainbow.steps.as_ref()),
                ("`forced_drain_after`", rainbow.forced_drain_after),
            ),
            StrategyConfig::Shadow(shadow) => (1, ("`duration`", shadow.duration)),
            StrategyConfig::BlueGreen(blue_green) => (0, ("`cleanup`", blue_green.cleanup)),
            StrategyConfig::Direct(_) => return Ok(()),
        };
        spans.push((settle.0.to_owned(), settle.1));
        spans.push((
            format!("`max_extension` ({holding_stages} holds)"),
            gates.max_extension.saturating_mul(holding_stages),
        ));
        spans.push((
            format!("`pause_timeout` ({pauses} pauses)"),
            gates.pause_timeout.saturating_mul(pauses),
        ));
        let span = spans.iter().fold(Duration::ZERO, |total, (_, span)| {
            total.saturating_add(*span)
        });
        // One check per interval, and one more at each stage's end.
        let interval = gates.check_interval.max(Duration::from_nanos(1));
        let checks = u64::try_from(span.as_nanos() / interval.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(spans.len() as u64);
        if checks <= MAX_SIMULATED_CHECKS {
            return Ok(());
        }
        let (largest, largest_span) = spans
            .into_iter()
            .max_by_key(|(_, span)| *span)
            .unwrap_or_default();
        Err(SimulationError::TooMuchWork {
            checks,
            limit: MAX_SIMULATED_CHECKS,
            check_interval: HumanDuration(gates.check_interval),
            span: HumanDuration(span),
            largest,
            largest_span: HumanDuration(largest_span),
        })
    }

    /// The affinity a host sets for a sessions agent: the rainbow's idle timeout when the
    /// spec is a rainbow, else the rainbow default.
    fn affinity(&self) -> SessionAffinity {
        let idle_timeout = match &self.spec.strategy {
            StrategyConfig::Rainbow(rainbow) => rainbow.session_idle_timeout,
            _ => RainbowConfig::default().session_idle_timeout,
        };
        SessionAffinity { idle_timeout }
    }

    /// [`run`](Simulation::run) on the current thread.
    pub fn run_blocking(
        &self,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<RolloutReport, SimulationError> {
        futures::executor::block_on(self.run(events))
    }
}
