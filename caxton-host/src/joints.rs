//! The host's side of a rollout: validation and warm-up for the driver, the router as
//! traffic control with the agent's session mode enforced, and the event sink.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use caxton_core::{
    AgentId, Deployment, DeploymentId, DrainReport, DrainStatus, SessionAffinity, SessionId,
    ShadowConfig, Split, TrafficControl, TrafficError,
};
use caxton_strategies::{
    CandidateChecks, EventKind, EventSink, RolloutEvent, ValidationVerdict, WarmUpReport,
};
use caxton_validate::{ContractTest, ModuleSource, Severity, StageStatus, ValidationInput};
use futures::channel::oneshot;

use crate::host::Inner;
use crate::request::SessionMode;
use crate::rollout::RolloutSlot;
use crate::spec::{StoredSpec, label_of};

/// Validation and warm-up of one rollout's candidate.
pub(crate) struct HostChecks {
    pub(crate) inner: Arc<Inner>,
    pub(crate) module: Arc<[u8]>,
    pub(crate) contract_tests: Vec<ContractTest>,
}

#[async_trait]
impl CandidateChecks for HostChecks {
    async fn validate(&self, candidate: &Deployment) -> ValidationVerdict {
        let mut input = ValidationInput::new(ModuleSource::from_bytes(
            format!("{} {}", candidate.agent, label_of(candidate)),
            self.module.to_vec(),
        ));
        if !self.contract_tests.is_empty() {
            input = input.contract_tests(self.contract_tests.clone());
        }
        // Compatibility against what serves now, as `caxton validate --previous` does.
        if let Ok(Some(production)) = self.inner.store.production(&candidate.agent).await
            && production.id != candidate.id
            && let Ok(spec) = StoredSpec::of(&production, &*self.inner.artifacts).await
            && let Ok(previous) = spec.module(&*self.inner.artifacts).await
        {
            input = input.previous(ModuleSource::from_bytes(
                format!("{} {}", production.agent, label_of(&production)),
                previous.to_vec(),
            ));
        }
        // Runs on the rollout's own thread (see `Host::deploy`), never a caller's executor.
        let report = self.inner.pipeline.validate(&input);
        let stages: Vec<String> = report
            .stages
            .iter()
            .map(|s| {
                let mark = if s.status == StageStatus::Passed {
                    "✓"
                } else {
                    "✗"
                };
                format!("{} {mark}", s.stage)
            })
            .collect();
        let mut verdict = if report.accepted {
            ValidationVerdict::passed(format!(
                "{} ({:.0} ms)",
                stages.join(", "),
                report.duration_ms
            ))
        } else {
            let first = report
                .findings()
                .find(|(_, f)| f.severity == Severity::Error)
                .map(|(stage, f)| format!("{stage}: {}", f.message))
                .unwrap_or_else(|| "rejected".to_owned());
            ValidationVerdict::failed(first)
        };
        if let Some(profile) = &report.profile {
            verdict.profile = BTreeMap::from([
                (
                    "fuel_per_message_p50".to_owned(),
                    profile.fuel_per_message_p50 as f64,
                ),
                (
                    "fuel_per_message_p99".to_owned(),
                    profile.fuel_per_message_p99 as f64,
                ),
                (
                    "peak_memory_bytes".to_owned(),
                    profile.peak_memory_bytes as f64,
                ),
                ("handle_us_p99".to_owned(), profile.handle_us_p99),
            ]);
        }
        self.inner
            .reports
            .insert(candidate.id.clone(), Arc::new(report));
        verdict
    }

    async fn warm_up(&self, candidate: &Deployment) -> WarmUpReport {
        let started = Instant::now();
        match self.inner.load_deployment(candidate).await {
            Ok(()) => WarmUpReport::ready(format!(
                "compiled, instantiated and initialised in {:.0} ms",
                started.elapsed().as_secs_f64() * 1e3
            )),
            Err(error) => WarmUpReport::not_ready(error.to_string()),
        }
    }
}

/// The router as a rollout's traffic control. A sessions agent keeps affinity on whatever
/// a strategy asks, and every change that moves traffic is timed.
pub(crate) struct HostTraffic {
    pub(crate) inner: Arc<Inner>,
}

#[async_trait]
impl TrafficControl for HostTraffic {
    async fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        // A candidate this host routed already (a canary it mirrored before taking the
        // rollout over) is live in the router: registering it again is not a failure.
        let router = &*self.inner.router;
        match TrafficControl::register(router, agent, deployment).await {
            Ok(()) => {}
            Err(TrafficError::AlreadyRegistered { agent: owner, .. })
                if &owner == agent
                    && router.phase(deployment) == Some(caxton_core::DrainPhase::Active) => {}
            Err(error) => return Err(error),
        }
        self.inner.apply_session_mode(agent).map_err(Into::into)
    }

    async fn promote(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        let before = self
            .inner
            .router
            .agent_route(agent)
            .ok()
            .and_then(|route| route.production().cloned());
        self.inner.timed("promote", agent, || {
            self.inner.router.promote(agent, deployment)
        })?;
        if let Some(before) = before.filter(|before| before != deployment) {
            self.inner.previous.insert(agent.clone(), before);
        }
        Ok(())
    }

    async fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), TrafficError> {
        self.inner
            .timed("set_split", agent, || {
                self.inner.router.set_split(agent, split)
            })
            .map_err(Into::into)
    }

    async fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), TrafficError> {
        TrafficControl::set_shadow(&*self.inner.router, agent, shadow).await
    }

    async fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), TrafficError> {
        // Session mode belongs to the agent: a strategy may change the idle timeout of a
        // sessions agent, never turn its pinning off.
        let affinity = match (self.inner.session_mode(agent), affinity) {
            (SessionMode::Sessions, None) => Some(self.inner.default_affinity()),
            (_, affinity) => affinity,
        };
        TrafficControl::set_session_affinity(&*self.inner.router, agent, affinity).await
    }

    async fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        TrafficControl::pin_session(&*self.inner.router, agent, session, deployment).await
    }

    async fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, TrafficError> {
        TrafficControl::release_session(&*self.inner.router, agent, session).await
    }

    async fn rollback(&self, agent: &AgentId) -> Result<(), TrafficError> {
        self.inner
            .timed("rollback", agent, || self.inner.router.rollback(agent))
            .map_err(Into::into)
    }

    async fn start_drain(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        TrafficControl::start_drain(&*self.inner.router, deployment).await
    }

    async fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, TrafficError> {
        TrafficControl::drain_status(&*self.inner.router, deployment).await
    }

    async fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, TrafficError> {
        TrafficControl::close_drain(&*self.inner.router, deployment).await
    }

    async fn retire(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        TrafficControl::retire(&*self.inner.router, deployment).await
    }

    fn in_flight(&self, deployment: &DeploymentId) -> u64 {
        self.inner.router.in_flight(deployment)
    }
}

/// Receives one rollout's events: folds them into its progress, logs each as a structured
/// event, publishes it to subscribers, and tells `deploy` once the candidate is recorded.
pub(crate) struct HostSink {
    pub(crate) inner: Arc<Inner>,
    pub(crate) slot: Arc<RolloutSlot>,
    pub(crate) recorded: Mutex<Option<oneshot::Sender<()>>>,
}

impl EventSink for HostSink {
    fn emit(&self, event: &RolloutEvent) {
        if let Some(recorded) = self
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = recorded.send(());
        }
        self.slot.observe(event);
        log_event(event);
        self.inner.events.publish(self.inner.clock.now(), event);
    }
}

/// One structured log line per rollout event, with the fields operators filter on.
fn log_event(event: &RolloutEvent) {
    let (stage, percentage) = match &event.kind {
        EventKind::StageStarted {
            stage, percentage, ..
        } => (Some(stage.as_str()), *percentage),
        EventKind::Checked { stage, .. }
        | EventKind::Metrics { stage, .. }
        | EventKind::HoldExtended { stage, .. }
        | EventKind::Judged { stage, .. } => (Some(stage.as_str()), None),
        EventKind::SplitChanged { percentage } => (None, Some(*percentage)),
        _ => (None, None),
    };
    let (error_rate, p99) = match &event.kind {
        EventKind::Metrics { candidate, .. } => (candidate.error_rate, candidate.p99_ms),
        _ => (None, None),
    };
    let warn = matches!(
        event.kind,
        EventKind::RolledBack { .. } | EventKind::Warning { .. } | EventKind::Paused { .. }
    );
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                $level,
                event = event.kind.name(),
                deployment_id = %event.deployment_id,
                agent_id = %event.agent_id,
                version = %event.version,
                stage = stage,
                percentage = percentage,
                metrics.error_rate = error_rate,
                metrics.p99_latency_ms = p99,
                "{}",
                event.kind.name()
            )
        };
    }
    if warn {
        emit!(tracing::Level::WARN);
    } else {
        emit!(tracing::Level::INFO);
    }
}
