//! The rollout driver: runs a [`Strategy`] against `caxton-core`'s joints.
//!
//! The driver asks the [`MetricsSource`] for windows, applies directives through
//! [`TrafficControl`], records every lifecycle move through the [`DeploymentStore`] and
//! takes time from the [`Clock`], so the same rollout runs for real or, on a
//! [`ManualClock`](caxton_core::ManualClock), in virtual time. It emits the spans
//! `deployment.create`, one per stage (`canary.5_percent`, …) and `deployment.finalize`,
//! the metrics `caxton_deployment_duration_seconds{strategy,status}`,
//! `caxton_deployment_rollback_total{reason}` and
//! `caxton_agent_version_active{agent,version}`, and a [`RolloutEvent`] for everything
//! that happens. Once a rollout has started it always ends in promoted, rolled back or
//! aborted: a failing joint aborts it and sends traffic back to the baseline.

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caxton_core::store::{CreateError, GetError};
use caxton_core::{
    AgentId, Clock, Deployment, DeploymentId, DeploymentStore, JournalEntry, JournalRecord,
    LifecycleEvent, LifecycleState, ListQuery, MetricsSource, NewDeployment, RollbackTarget,
    RolloutJournal, Split, Timestamp, TrafficControl,
};
use futures::channel::mpsc;
use futures::future::{Either, select};
use futures::{FutureExt, StreamExt};
use tracing::{Instrument, Span};

use crate::builtin::StrategyConfig;
use crate::event::{EventKind, EventSink, RolloutEvent};
use crate::strategy::{
    Command, Directive, Observations, Outcome, Reason, ReasonKind, RolloutContext, StepInput,
    Strategy, ValidationVerdict, WarmUpReport,
};
use crate::telemetry;

/// Validates and warms up a candidate. Hosts implement it with `caxton-validate` and
/// their [`AgentRuntime`](caxton_core::AgentRuntime).
#[async_trait]
pub trait CandidateChecks: Send + Sync {
    /// Runs the validation pipeline on `candidate`.
    async fn validate(&self, candidate: &Deployment) -> ValidationVerdict;

    /// Loads and warms `candidate` until it can take messages.
    async fn warm_up(&self, candidate: &Deployment) -> WarmUpReport;
}

/// Operator commands for one rollout: sent through a channel while it runs, scheduled
/// at offsets from its start (for virtual time), or both.
#[derive(Debug, Default)]
pub struct Commands {
    receiver: Option<mpsc::UnboundedReceiver<Message>>,
    schedule: Vec<(Duration, Command)>,
}

/// What a [`CommandSender`] sends: an operator's command, or the host's word that another
/// host drives the rollout now.
#[derive(Debug)]
enum Message {
    Command(Command),
    HandOff,
}

/// Sends commands to a running rollout. Clones send to the same rollout.
#[derive(Debug, Clone)]
pub struct CommandSender(mpsc::UnboundedSender<Message>);

impl CommandSender {
    /// Sends `command`; gives it back if the rollout is over.
    pub fn send(&self, command: Command) -> Result<(), Command> {
        let copy = command.clone();
        self.0
            .unbounded_send(Message::Command(command))
            .map_err(|_| copy)
    }

    /// Stops the rollout where it is without changing anything more: another host drives
    /// it now (this host lost its lease). The driver writes nothing to the registry or the
    /// journal and moves no traffic; its report says
    /// [`Aborted`](Outcome::Aborted) with [`ReasonKind::HandedOff`]. Returns `false` if the
    /// rollout is over.
    pub fn hand_off(&self) -> bool {
        self.0.unbounded_send(Message::HandOff).is_ok()
    }
}

impl Commands {
    /// No commands.
    pub fn none() -> Self {
        Commands::default()
    }

    /// A channel for commands while the rollout runs.
    pub fn channel() -> (CommandSender, Commands) {
        let (sender, receiver) = mpsc::unbounded();
        (
            CommandSender(sender),
            Commands {
                receiver: Some(receiver),
                schedule: Vec::new(),
            },
        )
    }

    /// Adds `command`, delivered `after` the rollout started.
    pub fn at(mut self, after: Duration, command: Command) -> Self {
        self.schedule.push((after, command));
        self
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutReport {
    /// The agent.
    pub agent: AgentId,
    /// The candidate deployment.
    pub deployment: DeploymentId,
    /// The production deployment when the rollout started.
    pub baseline: Option<DeploymentId>,
    /// The strategy's name.
    pub strategy: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started, on the driver's clock.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How many times the strategy was stepped.
    pub steps: u64,
}

impl RolloutReport {
    /// How long the rollout took on the driver's clock.
    pub fn duration(&self) -> Duration {
        self.finished_at - self.started_at
    }
}

/// Why a rollout could not start. Nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The candidate could not be recorded.
    #[error("could not record the candidate of agent `{agent}`: {source}")]
    Create {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        source: CreateError,
    },
    /// The agent's production deployment could not be read.
    #[error("could not read the production deployment of agent `{agent}`: {source}")]
    Production {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        source: GetError,
    },
    /// The strategy's configuration does not make a strategy.
    #[error("the rollout of agent `{agent}` has an invalid strategy configuration: {source}")]
    Strategy {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        source: crate::config::ConfigError,
    },
}

/// Runs rollouts. Build one with [`RolloutDriver::builder`].
pub struct RolloutDriver {
    store: Arc<dyn DeploymentStore>,
    traffic: Arc<dyn TrafficControl>,
    metrics: Arc<dyn MetricsSource>,
    clock: Arc<dyn Clock>,
    checks: Arc<dyn CandidateChecks>,
    events: Option<Arc<dyn EventSink>>,
    journal: Option<Arc<dyn RolloutJournal>>,
    max_duration: Duration,
}

impl fmt::Debug for RolloutDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolloutDriver")
            .field("clock", &self.clock)
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RolloutDriver`].
pub struct RolloutDriverBuilder {
    driver: RolloutDriver,
}

impl fmt::Debug for RolloutDriverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolloutDriverBuilder")
            .field("driver", &self.driver)
            .finish()
    }
}

impl RolloutDriverBuilder {
    /// Sends every event to `sink`.
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.driver.events = Some(sink);
        self
    }

    /// Records each rollout's progress in `journal` (its spec, each stage with its
    /// absolute deadline, the weights set, its end), so a restarted host can
    /// [`resume`](RolloutDriver::resume) it.
    pub fn journal(mut self, journal: Arc<dyn RolloutJournal>) -> Self {
        self.driver.journal = Some(journal);
        self
    }

    /// Aborts a rollout that runs longer than this (default 7 days): a safety net for
    /// strategies that would otherwise never finish.
    pub fn max_duration(mut self, max: Duration) -> Self {
        self.driver.max_duration = max;
        self
    }

    /// The driver.
    pub fn build(self) -> RolloutDriver {
        self.driver
    }
}

/// At most this many steps in a row without time passing; then the driver waits 1 ms,
/// so that a strategy asking to be stepped "now" forever still lets time run out.
const MAX_IMMEDIATE_STEPS: u32 = 16;

impl RolloutDriver {
    /// A driver over these joints.
    pub fn builder(
        store: Arc<dyn DeploymentStore>,
        traffic: Arc<dyn TrafficControl>,
        metrics: Arc<dyn MetricsSource>,
        clock: Arc<dyn Clock>,
        checks: Arc<dyn CandidateChecks>,
    ) -> RolloutDriverBuilder {
        RolloutDriverBuilder {
            driver: RolloutDriver {
                store,
                traffic,
                metrics,
                clock,
                checks,
                events: None,
                journal: None,
                max_duration: Duration::from_secs(7 * 24 * 3_600),
            },
        }
    }

    /// Records `new` and rolls it out with `strategy` over the agent's current
    /// production. Returns once the rollout is over, however it ended; an error means it
    /// could not start and nothing changed.
    pub async fn run(
        &self,
        new: NewDeployment,
        strategy: Box<dyn Strategy>,
        commands: Commands,
    ) -> Result<RolloutReport, DriverError> {
        self.run_inner(new, strategy, serde_json::Value::Null, commands)
            .await
    }

    /// Like [`run`](RolloutDriver::run) with a built-in strategy, whose `config` the
    /// journal keeps so that the rollout can be resumed after a restart.
    pub async fn run_config(
        &self,
        new: NewDeployment,
        config: &StrategyConfig,
        commands: Commands,
    ) -> Result<RolloutReport, DriverError> {
        let strategy = config.build().map_err(|source| DriverError::Strategy {
            agent: new.agent.clone(),
            source,
        })?;
        let spec = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
        self.run_inner(new, strategy, spec, commands).await
    }

    /// Resumes a rollout a host was running when it stopped: `candidate` is running and
    /// not production (a host reconciles the other cases itself), `config` is what is
    /// left of its rollout ([`StrategyConfig::resumed_at`]), `started_at` when it first
    /// began. Validation is not repeated (it passed before); the candidate is loaded and
    /// warmed up again, registered, and the strategy goes on. Its journal stays open and
    /// takes the new entries.
    pub async fn resume(
        &self,
        candidate: Deployment,
        config: &StrategyConfig,
        started_at: Timestamp,
        commands: Commands,
    ) -> Result<RolloutReport, DriverError> {
        let agent = candidate.agent.clone();
        let strategy = config.build().map_err(|source| DriverError::Strategy {
            agent: agent.clone(),
            source,
        })?;
        let baseline =
            self.store
                .production(&agent)
                .await
                .map_err(|source| DriverError::Production {
                    agent: agent.clone(),
                    source,
                })?;
        let root = tracing::info_span!(
            "deployment.create",
            agent_id = %agent,
            deployment_id = %candidate.id,
            strategy = strategy.name(),
            resumed = true
        );
        let older = self
            .older_versions(&agent, &candidate.id, baseline.as_ref())
            .await;
        let mut run = Run::new(
            self,
            candidate,
            baseline.as_ref(),
            older,
            strategy,
            started_at,
            root,
            true,
        );
        // The journal numbers stages across the whole rollout: the stage being resumed
        // is journaled again under the number it had.
        if let Some(journal) = &self.journal
            && let Ok(entries) = journal.entries(&agent, &run.context.candidate).await
        {
            run.journal_steps = entries
                .iter()
                .rev()
                .take_while(|e| !matches!(e.record, JournalRecord::Started { .. }))
                .find_map(|e| match &e.record {
                    JournalRecord::Stage { step, .. } => Some(step.saturating_sub(1)),
                    _ => None,
                })
                .unwrap_or(0);
        }
        run.emit(EventKind::Warning {
            message: "resumed from the journal (the host that drove it stopped); validation \
                      is not repeated"
                .to_owned(),
        });
        Ok(run.drive(commands).await)
    }

    async fn run_inner(
        &self,
        new: NewDeployment,
        strategy: Box<dyn Strategy>,
        spec: serde_json::Value,
        commands: Commands,
    ) -> Result<RolloutReport, DriverError> {
        let agent = new.agent.clone();
        let create_span = tracing::info_span!(
            "deployment.create",
            agent_id = %agent,
            deployment_id = tracing::field::Empty,
            strategy = strategy.name()
        );
        let (candidate, baseline, older) =
            async {
                let baseline = self.store.production(&agent).await.map_err(|source| {
                    DriverError::Production {
                        agent: agent.clone(),
                        source,
                    }
                })?;
                let mut new = new;
                new.strategy = strategy.name().to_owned();
                let candidate =
                    self.store
                        .create(new)
                        .await
                        .map_err(|source| DriverError::Create {
                            agent: agent.clone(),
                            source,
                        })?;
                let older = self
                    .older_versions(&agent, &candidate.id, baseline.as_ref())
                    .await;
                tracing::Span::current()
                    .record("deployment_id", tracing::field::display(&candidate.id));
                tracing::info!(deployment_id = %candidate.id, "candidate recorded");
                Ok::<_, DriverError>((candidate, baseline, older))
            }
            .instrument(create_span.clone())
            .await?;
        let start = self.clock.now();
        let mut run = Run::new(
            self,
            candidate,
            baseline.as_ref(),
            older,
            strategy,
            start,
            create_span,
            false,
        );
        run.journal(JournalRecord::Started {
            strategy: run.strategy.name().to_owned(),
            spec,
            baseline: run.context.baseline.clone(),
        })
        .await;
        Ok(run.drive(commands).await)
    }

    /// Deployments of `agent` other than the candidate and the baseline that still serve.
    async fn older_versions(
        &self,
        agent: &AgentId,
        candidate: &DeploymentId,
        baseline: Option<&Deployment>,
    ) -> Vec<DeploymentId> {
        let Ok(page) = self
            .store
            .list(agent, &ListQuery::new().limit(ListQuery::MAX_LIMIT))
            .await
        else {
            return Vec::new();
        };
        let mut older: Vec<DeploymentId> = page
            .items
            .into_iter()
            .filter(|d| {
                d.state.takes_messages()
                    && &d.id != candidate
                    && baseline.is_none_or(|b| b.id != d.id)
            })
            .map(|d| d.id)
            .collect();
        // Listings are newest first; the strategy wants oldest first.
        older.reverse();
        older
    }
}

/// One rollout under way.
struct Run<'a> {
    driver: &'a RolloutDriver,
    candidate: Deployment,
    version: String,
    /// The candidate's label, which names it in metrics.
    label: String,
    baseline_label: Option<String>,
    context: RolloutContext,
    strategy: Box<dyn Strategy>,
    start: Timestamp,
    registered: bool,
    promoted: bool,
    mirroring: bool,
    taken_out: bool,
    stage_span: Span,
    /// The rollout's one root span, `deployment.create`: validation, warm-up, every stage
    /// and `deployment.finalize` are its children, so a rollout is one trace.
    root: Span,
    steps: u64,
    /// Resumed after a host restart: validation passed before, the candidate is running.
    resumed: bool,
    /// Stages journaled so far.
    journal_steps: u32,
}

impl<'a> Run<'a> {
    /// A rollout of `candidate` over `baseline`, begun at `start`, traced under `root`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        driver: &'a RolloutDriver,
        candidate: Deployment,
        baseline: Option<&Deployment>,
        older: Vec<DeploymentId>,
        strategy: Box<dyn Strategy>,
        start: Timestamp,
        root: Span,
        resumed: bool,
    ) -> Self {
        let context = RolloutContext::new(
            candidate.agent.clone(),
            candidate.id.clone(),
            baseline.map(|d| d.id.clone()),
        )
        .with_older(older);
        Run {
            driver,
            version: candidate.version.fingerprint().short(),
            label: candidate.label().to_owned(),
            baseline_label: baseline.map(|b| b.label().to_owned()),
            candidate,
            context,
            strategy,
            start,
            registered: false,
            promoted: false,
            mirroring: false,
            taken_out: false,
            stage_span: root.clone(),
            root,
            steps: 0,
            resumed,
            journal_steps: 0,
        }
    }
}

impl Run<'_> {
    fn agent(&self) -> &AgentId {
        &self.context.agent
    }

    /// Appends to the journal, if the driver keeps one. A failure is a warning: the
    /// registry, not the journal, is the authority on the rollout's state.
    async fn journal(&self, record: JournalRecord) {
        let Some(journal) = &self.driver.journal else {
            return;
        };
        let entry = JournalEntry {
            seq: 0,
            at: self.driver.clock.now(),
            agent: self.context.agent.clone(),
            deployment: self.context.candidate.clone(),
            record,
        };
        if let Err(error) = journal.append(entry).await {
            self.emit(EventKind::Warning {
                message: format!("rollout journal: {error}"),
            });
        }
    }

    fn emit(&self, kind: EventKind) {
        let at = self.driver.clock.now();
        let event = RolloutEvent {
            at_s: (at - self.start).as_secs_f64(),
            kind,
            agent_id: self.context.agent.clone(),
            deployment_id: self.context.candidate.clone(),
            version: self.version.clone(),
        };
        self.stage_span.in_scope(|| {
            tracing::info!(
                event = event.kind.name(),
                at_s = event.at_s,
                agent_id = %event.agent_id,
                deployment_id = %event.deployment_id,
                version = %event.version,
                "rollout event"
            );
        });
        if let Some(sink) = &self.driver.events {
            sink.emit(&event);
        }
    }

    async fn drive(&mut self, mut commands: Commands) -> RolloutReport {
        let clock = Arc::clone(&self.driver.clock);
        let mut schedule: VecDeque<(Timestamp, Command)> = {
            let mut items: Vec<(Timestamp, Command)> = commands
                .schedule
                .drain(..)
                .map(|(after, command)| (self.start + after, command))
                .collect();
            items.sort_by_key(|(at, _)| *at);
            items.into()
        };
        self.emit(EventKind::Started {
            strategy: self.strategy.name().to_owned(),
            baseline_id: self.context.baseline.clone(),
        });
        if let Some(label) = &self.baseline_label {
            telemetry::set_version_active(self.agent().as_str(), label, true);
        }
        let mut observations = Observations::default();
        let mut last_observed = self.start;
        let mut immediate_steps = 0u32;
        loop {
            let now = clock.now();
            if now - self.start > self.driver.max_duration {
                let reason = Reason::new(
                    ReasonKind::Timeout,
                    format!(
                        "the rollout ran longer than {}",
                        crate::duration::HumanDuration(self.driver.max_duration)
                    ),
                );
                return self.finish(Outcome::Aborted { reason }).await;
            }
            let mut due = Vec::new();
            while schedule.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, command)) = schedule.pop_front() {
                    due.push(command);
                }
            }
            if let Some(receiver) = commands.receiver.as_mut() {
                while let Some(Some(message)) = receiver.next().now_or_never() {
                    match message {
                        Message::Command(command) => due.push(command),
                        Message::HandOff => return self.hand_off(),
                    }
                }
            }
            for command in &due {
                self.emit(EventKind::CommandReceived {
                    command: command.to_string(),
                });
            }
            if now > last_observed {
                self.observe(last_observed, now, &mut observations).await;
                last_observed = now;
            }
            self.observe_drains(&mut observations).await;
            self.steps += 1;
            let directives = self.strategy.step(StepInput {
                now,
                context: &self.context,
                observations: &observations,
                commands: &due,
            });
            observations = Observations::default();
            let mut wake = None;
            let mut again = false;
            for directive in directives {
                match directive {
                    Directive::WaitUntil(at) => wake = Some(at),
                    Directive::Finish(outcome) => return self.finish(outcome).await,
                    Directive::Validate { timeout } => {
                        observations.validation = Some(self.validate(timeout).await);
                        again = true;
                    }
                    Directive::WarmUp { timeout } => {
                        observations.warm_up = Some(self.warm_up(timeout).await);
                        again = true;
                    }
                    other => {
                        if let Err(problem) = self.apply(other).await {
                            let reason = Reason::new(ReasonKind::Infrastructure, problem);
                            return self.finish(Outcome::Aborted { reason }).await;
                        }
                    }
                }
            }
            if again {
                continue;
            }
            let now = clock.now();
            let wake = match wake {
                Some(at) if at > now => {
                    immediate_steps = 0;
                    at
                }
                _ => {
                    immediate_steps += 1;
                    if immediate_steps <= MAX_IMMEDIATE_STEPS {
                        continue;
                    }
                    immediate_steps = 0;
                    now + Duration::from_millis(1)
                }
            };
            let wake = schedule.front().map_or(wake, |(at, _)| wake.min(*at));
            match commands.receiver.as_mut() {
                Some(receiver) => {
                    let sleep = pin!(clock.sleep_until(wake));
                    let next = receiver.next();
                    match select(sleep, next).await {
                        // Handled at the next step, together with any others.
                        Either::Right((Some(Message::Command(command)), _)) => {
                            schedule.push_front((clock.now(), command));
                        }
                        Either::Right((Some(Message::HandOff), _)) => return self.hand_off(),
                        _ => {}
                    }
                }
                None => clock.sleep_until(wake).await,
            }
        }
    }

    async fn observe(&self, start: Timestamp, end: Timestamp, observations: &mut Observations) {
        let mut deployments: Vec<DeploymentId> = Vec::new();
        if self.registered {
            deployments.push(self.context.candidate.clone());
        }
        deployments.extend(self.context.baseline.iter().cloned());
        deployments.extend(self.context.older.iter().cloned());
        for deployment in deployments {
            match self.driver.metrics.window(&deployment, start, end).await {
                Ok(window) => {
                    observations.windows.insert(deployment, window);
                }
                Err(error) => self.emit(EventKind::Warning {
                    message: error.to_string(),
                }),
            }
        }
    }

    async fn observe_drains(&self, observations: &mut Observations) {
        let old = self
            .context
            .baseline
            .iter()
            .chain(self.context.older.iter());
        for deployment in old {
            if let Ok(status) = self.driver.traffic.drain_status(deployment).await {
                observations.drains.insert(deployment.clone(), status);
            }
        }
    }

    async fn transition(
        &self,
        id: &DeploymentId,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Deployment, String> {
        self.driver
            .store
            .transition(self.agent(), id, event, reason)
            .await
            .map_err(|e| e.to_string())
    }

    async fn validate(&mut self, timeout: Duration) -> ValidationVerdict {
        if self.resumed {
            let verdict = ValidationVerdict::passed(
                "validated before the host restarted; not repeated".to_owned(),
            );
            self.emit(EventKind::ValidationFinished {
                passed: true,
                summary: verdict.summary.clone(),
                duration_s: 0.0,
            });
            return verdict;
        }
        let started = self.driver.clock.now();
        let span = self.root.clone();
        let verdict = async {
            if let Err(problem) = self
                .transition(
                    &self.context.candidate,
                    LifecycleEvent::BeginValidation,
                    "validation started",
                )
                .await
            {
                return ValidationVerdict::failed(format!("could not start validation: {problem}"));
            }
            let checks = Arc::clone(&self.driver.checks);
            let candidate = self.candidate.clone();
            let work = pin!(checks.validate(&candidate));
            let deadline = pin!(self.driver.clock.sleep(timeout));
            let verdict = match select(work, deadline).await {
                Either::Left((verdict, _)) => verdict,
                Either::Right(_) => ValidationVerdict::failed(format!(
                    "validation took longer than {}",
                    crate::duration::HumanDuration(timeout)
                )),
            };
            let event = if verdict.passed {
                LifecycleEvent::ValidationPassed
            } else {
                LifecycleEvent::ValidationFailed
            };
            match self
                .transition(&self.context.candidate, event, &verdict.summary)
                .await
            {
                Ok(_) => verdict,
                Err(problem) => {
                    ValidationVerdict::failed(format!("could not record validation: {problem}"))
                }
            }
        }
        .instrument(span)
        .await;
        let duration = self.driver.clock.now() - started;
        self.emit(EventKind::ValidationFinished {
            passed: verdict.passed,
            summary: verdict.summary.clone(),
            duration_s: duration.as_secs_f64(),
        });
        verdict
    }

    async fn warm_up(&mut self, timeout: Duration) -> WarmUpReport {
        let started = self.driver.clock.now();
        let span = self.root.clone();
        let report = async {
            let checks = Arc::clone(&self.driver.checks);
            let candidate = self.candidate.clone();
            let work = pin!(checks.warm_up(&candidate));
            let deadline = pin!(self.driver.clock.sleep(timeout));
            let report = match select(work, deadline).await {
                Either::Left((report, _)) => report,
                Either::Right(_) => WarmUpReport::not_ready(format!(
                    "warm-up took longer than {}",
                    crate::duration::HumanDuration(timeout)
                )),
            };
            // A resumed candidate is already running: a failed warm-up takes it out.
            let (passed, failed) = if self.resumed {
                (None, LifecycleEvent::RollBack)
            } else {
                (
                    Some(LifecycleEvent::WarmUpPassed),
                    LifecycleEvent::WarmUpFailed,
                )
            };
            if !report.ready {
                let _ = self
                    .transition(&self.context.candidate, failed, &report.detail)
                    .await;
                return report;
            }
            if let Some(passed) = passed
                && let Err(problem) = self
                    .transition(&self.context.candidate, passed, &report.detail)
                    .await
            {
                return WarmUpReport::not_ready(format!("could not record warm-up: {problem}"));
            }
            if let Err(error) = self
                .driver
                .traffic
                .register(self.agent(), &self.context.candidate)
                .await
            {
                let _ = self
                    .transition(
                        &self.context.candidate,
                        LifecycleEvent::RollBack,
                        "traffic control refused it",
                    )
                    .await;
                return WarmUpReport::not_ready(format!(
                    "traffic control refused the candidate: {error}"
                ));
            }
            report
        }
        .instrument(span)
        .await;
        if report.ready {
            self.registered = true;
            telemetry::set_version_active(self.agent().as_str(), &self.label, true);
        }
        self.emit(EventKind::WarmUpFinished {
            ready: report.ready,
            detail: report.detail.clone(),
            duration_s: (self.driver.clock.now() - started).as_secs_f64(),
        });
        report
    }

    /// Applies a directive that changes traffic or the registry.
    async fn apply(&mut self, directive: Directive) -> Result<(), String> {
        let traffic = Arc::clone(&self.driver.traffic);
        let agent = self.agent().clone();
        match directive {
            Directive::SetSplit(split) => {
                let span = self.stage_span.clone();
                traffic
                    .set_split(&agent, &split)
                    .instrument(span)
                    .await
                    .map_err(|e| e.to_string())?;
                let percentage = split.weight_of(&self.context.candidate).percent();
                self.emit(EventKind::SplitChanged { percentage });
                self.journal(JournalRecord::Split { percentage }).await;
            }
            Directive::Mirror(shadow) => {
                traffic
                    .set_shadow(&agent, shadow.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                self.mirroring = shadow.is_some();
                self.emit(EventKind::MirrorChanged {
                    percentage: shadow.map(|s| s.sample.percent()),
                });
            }
            Directive::SessionAffinity(affinity) => {
                traffic
                    .set_session_affinity(&agent, affinity)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Directive::Promote => self.promote().await?,
            Directive::RollBack { reason } => self.take_out(&reason).await,
            Directive::Drain { deployment } => self.drain(&deployment).await,
            Directive::Retire { deployment, forced } => self.retire(&deployment, forced).await,
            Directive::Emit(kind) => {
                let stage_started = match &kind {
                    EventKind::StageStarted {
                        stage,
                        percentage,
                        hold_s,
                    } => {
                        self.stage_span = telemetry::stage_span(
                            &self.root,
                            stage,
                            self.context.agent.as_str(),
                            self.context.candidate.as_str(),
                        );
                        self.journal_steps += 1;
                        let until = hold_s
                            .and_then(|h| Duration::try_from_secs_f64(h).ok())
                            .map(|h| self.driver.clock.now().saturating_add(h));
                        Some(JournalRecord::Stage {
                            stage: stage.clone(),
                            step: self.journal_steps,
                            percentage: *percentage,
                            until,
                        })
                    }
                    _ => None,
                };
                self.emit(kind);
                if let Some(record) = stage_started {
                    self.journal(record).await;
                }
            }
            // Handled by the loop.
            Directive::Validate { .. }
            | Directive::WarmUp { .. }
            | Directive::WaitUntil(_)
            | Directive::Finish(_) => {}
        }
        Ok(())
    }

    async fn promote(&mut self) -> Result<(), String> {
        if self.promoted {
            return Ok(());
        }
        if !self.registered {
            return Err(
                "the candidate cannot be promoted before it is validated and warm".to_owned(),
            );
        }
        let agent = self.agent().clone();
        let candidate = self.context.candidate.clone();
        let reason = format!("promoted by the {} rollout", self.strategy.name());
        match &self.context.baseline {
            Some(_) => {
                self.driver
                    .store
                    .promote(&agent, &candidate, &reason)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            None => {
                let promoted = self
                    .driver
                    .store
                    .promote_if_none(&agent, &candidate, &reason)
                    .await
                    .map_err(|e| e.to_string())?;
                if promoted.is_none() {
                    return Err(format!(
                        "agent `{agent}` gained a production deployment during the rollout"
                    ));
                }
            }
        }
        self.promoted = true;
        self.driver
            .traffic
            .promote(&agent, &candidate)
            .instrument(self.stage_span.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.emit(EventKind::Promoted);
        Ok(())
    }

    /// Takes the candidate out and sends traffic back to the baseline, as far as the
    /// joints allow; what fails is reported as a warning.
    async fn take_out(&mut self, reason: &Reason) {
        if self.taken_out {
            return;
        }
        self.taken_out = true;
        let agent = self.agent().clone();
        let candidate = self.context.candidate.clone();
        let traffic = Arc::clone(&self.driver.traffic);
        let store = Arc::clone(&self.driver.store);
        let mut problems: Vec<String> = Vec::new();
        if self.mirroring {
            if let Err(error) = traffic.set_shadow(&agent, None).await {
                problems.push(error.to_string());
            }
            self.mirroring = false;
        }
        let serving = self.registered;
        match (&self.context.baseline, self.promoted) {
            (Some(baseline), true) => {
                if let Err(error) = store
                    .rollback(
                        &agent,
                        &RollbackTarget::To(baseline.clone()),
                        &reason.message,
                    )
                    .await
                {
                    problems.push(error.to_string());
                }
                if let Err(error) = traffic.promote(&agent, baseline).await {
                    problems.push(error.to_string());
                }
                self.promoted = false;
            }
            (None, true) => problems.push(
                "a first deployment has no earlier version to roll back to; it stays production"
                    .to_owned(),
            ),
            (baseline, false) => {
                if serving
                    && let Some(baseline) = baseline
                    && let Err(error) = traffic
                        .set_split(&agent, &Split::single(baseline.clone()))
                        .await
                {
                    problems.push(error.to_string());
                }
                match store.get(&agent, &candidate).await {
                    Ok(current) => {
                        let event = match current.state {
                            LifecycleState::Running | LifecycleState::Draining => {
                                Some(LifecycleEvent::RollBack)
                            }
                            LifecycleState::Validating => Some(LifecycleEvent::ValidationFailed),
                            LifecycleState::Deploying => Some(LifecycleEvent::WarmUpFailed),
                            LifecycleState::Pending => {
                                // Never validated: hide it rather than pretend it failed.
                                if let Err(error) = store
                                    .soft_delete(
                                        &agent,
                                        &candidate,
                                        Duration::from_secs(7 * 86_400),
                                        &reason.message,
                                    )
                                    .await
                                {
                                    problems.push(error.to_string());
                                }
                                None
                            }
                            _ => None,
                        };
                        if let Some(event) = event
                            && let Err(error) = store
                                .transition(&agent, &candidate, event, &reason.message)
                                .await
                        {
                            problems.push(error.to_string());
                        }
                    }
                    Err(error) => problems.push(error.to_string()),
                }
            }
        }
        if serving {
            // Pinned sessions and mirrors of the candidate end now.
            let closed = async {
                traffic.start_drain(&candidate).await?;
                traffic.close_drain(&candidate).await?;
                traffic.retire(&candidate).await
            };
            if let Err(error) = closed.await {
                problems.push(error.to_string());
            }
            telemetry::set_version_active(agent.as_str(), &self.label, false);
            self.registered = false;
            telemetry::count_rollback(reason.kind.as_str());
            self.emit(EventKind::RolledBack {
                reason: reason.message.clone(),
                kind: reason.kind,
            });
        }
        for problem in problems {
            self.emit(EventKind::Warning {
                message: format!("while rolling back: {problem}"),
            });
        }
    }

    fn is_old(&self, deployment: &DeploymentId) -> bool {
        self.context.baseline.as_ref() == Some(deployment)
            || self.context.older.contains(deployment)
    }

    async fn drain(&mut self, deployment: &DeploymentId) {
        if !self.is_old(deployment) {
            self.emit(EventKind::Warning {
                message: format!("drain of {deployment} ignored: only old versions are drained"),
            });
            return;
        }
        let agent = self.agent().clone();
        let reason = format!("replaced by {}", self.context.candidate);
        if let Ok(current) = self.driver.store.get(&agent, deployment).await
            && current.state == LifecycleState::Running
            && let Err(problem) = self
                .transition(deployment, LifecycleEvent::Drain, &reason)
                .await
        {
            self.emit(EventKind::Warning { message: problem });
        }
        if let Err(error) = self.driver.traffic.start_drain(deployment).await {
            self.emit(EventKind::Warning {
                message: error.to_string(),
            });
        }
        self.emit(EventKind::DrainStarted {
            target_id: deployment.clone(),
        });
    }

    async fn retire(&mut self, deployment: &DeploymentId, forced: bool) {
        if !self.is_old(deployment) {
            self.emit(EventKind::Warning {
                message: format!("retire of {deployment} ignored: only old versions are retired"),
            });
            return;
        }
        let agent = self.agent().clone();
        let traffic = Arc::clone(&self.driver.traffic);
        let released_sessions = match traffic.close_drain(deployment).await {
            Ok(report) => report.released_sessions,
            Err(error) => {
                self.emit(EventKind::Warning {
                    message: error.to_string(),
                });
                0
            }
        };
        if let Err(error) = traffic.retire(deployment).await {
            self.emit(EventKind::Warning {
                message: error.to_string(),
            });
        }
        let reason = if forced {
            format!("closed after draining for {}", self.context.candidate)
        } else {
            format!("drained for {}", self.context.candidate)
        };
        match self.driver.store.get(&agent, deployment).await {
            Ok(current) => {
                if current.state == LifecycleState::Running
                    && let Err(problem) = self
                        .transition(deployment, LifecycleEvent::Drain, &reason)
                        .await
                {
                    self.emit(EventKind::Warning { message: problem });
                }
                if let Err(problem) = self
                    .transition(deployment, LifecycleEvent::Retire, &reason)
                    .await
                {
                    self.emit(EventKind::Warning { message: problem });
                }
                telemetry::set_version_active(agent.as_str(), current.label(), false);
            }
            Err(error) => self.emit(EventKind::Warning {
                message: error.to_string(),
            }),
        }
        self.emit(EventKind::Retired {
            target_id: deployment.clone(),
            forced,
            released_sessions,
        });
    }

    /// Stops driving without changing anything: another host drives the rollout now.
    fn hand_off(&mut self) -> RolloutReport {
        let message = "another host drives the rollout now; this host stopped driving it \
                       and changed nothing more";
        // The event is the record (a host's sink logs it, as every event).
        self.emit(EventKind::Warning {
            message: message.to_owned(),
        });
        let outcome = Outcome::Aborted {
            reason: Reason::new(ReasonKind::HandedOff, message),
        };
        self.report(outcome, self.driver.clock.now())
    }

    /// How the rollout ended, for its caller.
    fn report(&self, outcome: Outcome, finished_at: Timestamp) -> RolloutReport {
        RolloutReport {
            agent: self.context.agent.clone(),
            deployment: self.context.candidate.clone(),
            baseline: self.context.baseline.clone(),
            strategy: self.strategy.name().to_owned(),
            outcome,
            started_at: self.start,
            finished_at,
            steps: self.steps,
        }
    }

    async fn finish(&mut self, outcome: Outcome) -> RolloutReport {
        let span = tracing::info_span!(
            parent: &self.root,
            "deployment.finalize",
            agent_id = %self.context.agent,
            deployment_id = %self.context.candidate,
            outcome = outcome.as_str()
        );
        self.stage_span = span.clone();
        let outcome = async {
            match &outcome {
                Outcome::Promoted if !self.promoted => {
                    if let Err(problem) = self.promote().await {
                        let reason = Reason::new(ReasonKind::Infrastructure, problem);
                        self.take_out(&reason).await;
                        return Outcome::Aborted { reason };
                    }
                    outcome
                }
                Outcome::Promoted => outcome,
                Outcome::RolledBack { reason } | Outcome::Aborted { reason } => {
                    self.take_out(reason).await;
                    outcome
                }
            }
        }
        .instrument(span)
        .await;
        let finished_at = self.driver.clock.now();
        telemetry::record_duration(
            self.strategy.name(),
            telemetry::status_of(&outcome),
            (finished_at - self.start).as_secs_f64(),
        );
        self.journal(JournalRecord::Finished {
            outcome: outcome.as_str().to_owned(),
            reason: outcome.reason().map(|r| r.message.clone()),
        })
        .await;
        self.emit(EventKind::Finished {
            outcome: outcome.as_str().to_owned(),
            reason: outcome.reason().map(|r| r.message.clone()),
        });
        self.report(outcome, finished_at)
    }
}
