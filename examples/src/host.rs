//! A host: the glue an application writes around Caxton's crates. It owns a registry, a
//! router, a runtime, a metrics store and a validation pipeline, sends messages through the
//! router into the runtime, records what each reply tells about its deployment, runs shadow
//! copies, and gives rollouts their joints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use caxton_core::{
    AgentError, AgentId, AgentRuntime, Clock, Deployment, DeploymentId, DeploymentStore,
    DrainReport, DrainStatus, InMemoryMetrics, LifecycleState, LoadSpec, MemoryStore,
    NewDeployment, Observation, SessionAffinity, SessionId, ShadowConfig, Split, TrafficControl,
    TrafficError,
};
use caxton_router::{RouteError, Router};
use caxton_strategies::shadow::{Equivalence, OUTPUT_MATCH_METRIC, outputs_equivalent};
use caxton_strategies::{
    CandidateChecks, EventSink, RolloutDriver, ValidationVerdict, WarmUpReport,
};
use caxton_validate::{
    ContractTest, ModuleSource, Pipeline, Policy, ValidationInput, ValidationReport,
};
use caxton_wasm::{AgentEngine, EngineConfig, PoolingConfig, WasmRuntime};
use dashmap::DashMap;

use crate::agents::{PROCESSOR_CONTRACT_TESTS, SampleAgent};

/// Custom metric: fuel burnt by one message (the runtime meters fuel).
pub const FUEL_METRIC: &str = "fuel_per_message";
/// Custom metric: linear memory after one message, in bytes.
pub const MEMORY_METRIC: &str = "memory_bytes";

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The runtime's engine could not be created.
    #[error("the agent runtime could not start: {0}")]
    Engine(#[from] caxton_wasm::EngineError),
    /// The validation pipeline could not be created.
    #[error("the validation pipeline could not start: {0}")]
    Pipeline(#[from] caxton_validate::PipelineError),
}

/// Why a message got no reply. Every such message is counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The router had nowhere to send it.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The agent failed on it (a trap or a limit); the failure is recorded on the
    /// deployment's metrics.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// A reply, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The deployment that answered.
    pub deployment: DeploymentId,
    /// The reply's bytes. Only the primary deployment's reply ever reaches a caller.
    pub reply: Vec<u8>,
    /// Whether the reply is of kind `error` (an application error).
    pub app_error: bool,
    /// How long the agent took.
    pub latency: Duration,
    /// Whether the message followed a session pin.
    pub pinned: bool,
    /// The shadow deployment the message was also mirrored to, if any.
    pub mirrored_to: Option<DeploymentId>,
    /// When the router chose the deployment.
    pub routed_at: Instant,
}

/// Counters of mirrored messages.
#[derive(Debug, Default)]
pub struct ShadowTally {
    /// Messages mirrored to a shadow.
    pub mirrored: AtomicU64,
    /// Shadow replies byte-identical to production's.
    pub exact: AtomicU64,
    /// Shadow replies equivalent to production's as JSON.
    pub equivalent: AtomicU64,
    /// Shadow copies that failed (a trap or a limit).
    pub failed: AtomicU64,
    /// Shadow replies thrown away after comparison: every one of them.
    pub discarded: AtomicU64,
}

/// One timed traffic change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedChange {
    /// `set_split`, `promote` or `rollback`.
    pub operation: &'static str,
    /// The agent.
    pub agent: AgentId,
    /// How long the router took to publish the change.
    pub took: Duration,
    /// When it was published.
    pub at: Instant,
}

/// What the host knows of a deployment it may run.
#[derive(Debug, Clone)]
struct Staged {
    sample: SampleAgent,
}

/// The host. Cheap to share (`Arc<Host>`); every method takes `&self`.
pub struct Host {
    store: Arc<MemoryStore>,
    router: Arc<Router>,
    runtime: Arc<WasmRuntime>,
    metrics: InMemoryMetrics,
    pipeline: Arc<Pipeline>,
    clock: Arc<dyn Clock>,
    staged: DashMap<DeploymentId, Staged>,
    reports: DashMap<DeploymentId, ValidationReport>,
    sessions: DashMap<(AgentId, SessionId), DeploymentId>,
    changes: Mutex<Vec<TimedChange>>,
    shadow: ShadowTally,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("staged", &self.staged.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host on `clock`: a pooled runtime that meters fuel, a router, an in-memory
    /// registry and metrics, and the default validation pipeline.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, HostError> {
        let engine = AgentEngine::new(
            EngineConfig::default()
                .pooling(PoolingConfig::default().max_instances(256))
                .fuel_metering(true),
        )?;
        let runtime = WasmRuntime::builder(engine)
            .clock(clock.clone())
            .max_pooled_instances(8)
            .build();
        Ok(Host {
            store: Arc::new(MemoryStore::with_clock(clock.clone())),
            router: Arc::new(Router::builder().clock(clock.clone()).build()),
            runtime: Arc::new(runtime),
            metrics: InMemoryMetrics::with_capacity(200_000),
            pipeline: Arc::new(Pipeline::new(Policy::default())?),
            clock,
            staged: DashMap::new(),
            reports: DashMap::new(),
            sessions: DashMap::new(),
            changes: Mutex::new(Vec::new()),
            shadow: ShadowTally::default(),
        })
    }

    /// The registry.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// The metrics every reply is recorded in.
    pub fn metrics(&self) -> &InMemoryMetrics {
        &self.metrics
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Counters of mirrored messages.
    pub fn shadow_tally(&self) -> &ShadowTally {
        &self.shadow
    }

    /// The validation report of a deployment the host validated.
    pub fn validation_report(&self, deployment: &DeploymentId) -> Option<ValidationReport> {
        self.reports.get(deployment).map(|r| r.clone())
    }

    /// The traffic changes the router published for rollouts, in order, with their timing.
    pub fn timed_changes(&self) -> Vec<TimedChange> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new deployment of `sample` with the id `<name>-<release>`, staged so the host
    /// knows which module and configuration to validate and load for it.
    pub fn new_deployment(&self, sample: &SampleAgent, strategy: &str) -> NewDeployment {
        let id = DeploymentId::new(format!("{}-{}", sample.name, sample.release))
            .unwrap_or_else(|_| DeploymentId::generate());
        self.staged.insert(id.clone(), Staged { sample: *sample });
        NewDeployment::builder(agent_id(sample), sample.version())
            .id(id)
            .strategy(strategy)
            .label("release", sample.release)
            .build()
    }

    /// A rollout driver whose joints are this host's registry, router, metrics and clock,
    /// and whose checks are the validation pipeline and the runtime.
    pub fn driver(self: &Arc<Self>, events: Arc<dyn EventSink>) -> RolloutDriver {
        RolloutDriver::builder(
            self.store.clone(),
            Arc::new(TimedTraffic {
                host: Arc::clone(self),
            }),
            Arc::new(self.metrics.clone()),
            self.clock.clone(),
            Arc::new(HostChecks {
                host: Arc::clone(self),
            }),
        )
        .events(events)
        .build()
    }

    /// Validates a staged deployment with the pipeline, its contract tests and, when the
    /// agent has a production, that production as the previous version.
    pub async fn validate(&self, candidate: &Deployment) -> ValidationReport {
        let Some(staged) = self.staged.get(&candidate.id).map(|s| s.sample) else {
            let report = self
                .pipeline
                .validate(&ValidationInput::new(ModuleSource::from_bytes(
                    candidate.id.as_str(),
                    Vec::new(),
                )));
            return report;
        };
        let mut input = ValidationInput::new(ModuleSource::from_bytes(
            staged.label(),
            staged.wasm.to_vec(),
        ));
        if staged.name == "processor" {
            input = input.contract_tests(host_contract_suite());
        }
        if let Ok(Some(production)) = self.store.production(&candidate.agent).await
            && let Some(previous) = self.staged.get(&production.id).map(|s| s.sample)
        {
            input = input.previous(ModuleSource::from_bytes(
                previous.label(),
                previous.wasm.to_vec(),
            ));
        }
        let report = self.pipeline.validate(&input);
        self.reports.insert(candidate.id.clone(), report.clone());
        report
    }

    /// Loads a staged deployment into the runtime and warms it up.
    pub fn load(&self, candidate: &Deployment) -> Result<(), AgentError> {
        let Some(staged) = self.staged.get(&candidate.id).map(|s| s.sample) else {
            return Err(AgentError::Host {
                deployment: candidate.id.clone(),
                message: "the host has no module staged for this deployment".to_owned(),
            });
        };
        let mut spec = LoadSpec::new(
            candidate.agent.clone(),
            candidate.id.clone(),
            candidate.version.clone(),
            staged.module(),
        );
        spec.config = staged.config();
        self.runtime.load(spec)?;
        self.runtime.warm_up(&candidate.id)
    }

    /// Sends one message of `agent`, in `session` when given, and returns the primary
    /// deployment's reply. A mirrored copy runs after the primary; its reply is compared
    /// with the primary's, recorded on the shadow's metrics and thrown away.
    pub fn send(
        &self,
        agent: &AgentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Delivery, SendError> {
        let routed_at = Instant::now();
        let decision = self.router.route(agent, session)?;
        let deployment = decision.deployment().clone();
        let stateful = self
            .staged
            .get(&deployment)
            .is_some_and(|s| s.sample.stateful);
        let runtime_session = if stateful { session } else { None };
        let started = Instant::now();
        let result = self.runtime.handle(&deployment, runtime_session, message);
        let latency = started.elapsed();
        let now = self.clock.now();
        let mut observation = Observation::ok(now, latency);
        if let Some(session) = session {
            observation = observation.in_session(session.clone());
        }
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                observation.error = true;
                self.metrics.record(&deployment, observation);
                return Err(SendError::Agent(error));
            }
        };
        let app_error = is_error_reply(&reply.bytes);
        observation.error = app_error;
        observation = observation
            .with_metric(FUEL_METRIC, reply.stats.fuel_consumed.unwrap_or(0) as f64)
            .with_metric(MEMORY_METRIC, reply.stats.memory_bytes as f64);
        self.metrics.record(&deployment, observation);
        if stateful && let Some(session) = session {
            self.sessions
                .insert((agent.clone(), session.clone()), deployment.clone());
        }
        let mirrored_to = decision.shadow().cloned();
        if let Some(shadow) = &mirrored_to {
            self.mirror(shadow, message, &reply.bytes, session);
        }
        let pinned = decision.is_pinned();
        drop(decision);
        Ok(Delivery {
            deployment,
            reply: reply.bytes,
            app_error,
            latency,
            pinned,
            mirrored_to,
            routed_at,
        })
    }

    fn mirror(
        &self,
        shadow: &DeploymentId,
        message: &[u8],
        primary: &[u8],
        session: Option<&SessionId>,
    ) {
        self.shadow.mirrored.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.runtime.handle(shadow, None, message);
        let mut observation = Observation::ok(self.clock.now(), started.elapsed());
        if let Some(session) = session {
            observation = observation.in_session(session.clone());
        }
        match result {
            Ok(reply) => {
                let exact = outputs_equivalent(primary, &reply.bytes, Equivalence::Exact);
                let equivalent = outputs_equivalent(primary, &reply.bytes, Equivalence::Json);
                self.shadow
                    .exact
                    .fetch_add(u64::from(exact), Ordering::Relaxed);
                self.shadow
                    .equivalent
                    .fetch_add(u64::from(equivalent), Ordering::Relaxed);
                observation.error = is_error_reply(&reply.bytes);
                observation = observation
                    .with_metric(OUTPUT_MATCH_METRIC, if equivalent { 1.0 } else { 0.0 })
                    .with_metric(FUEL_METRIC, reply.stats.fuel_consumed.unwrap_or(0) as f64)
                    .with_metric(MEMORY_METRIC, reply.stats.memory_bytes as f64);
            }
            Err(_) => {
                self.shadow.failed.fetch_add(1, Ordering::Relaxed);
                observation.error = true;
                observation = observation.with_metric(OUTPUT_MATCH_METRIC, 0.0);
            }
        }
        self.metrics.record(shadow, observation);
        // The shadow's reply ends here: it never reaches the caller.
        self.shadow.discarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a session: releases its pin and frees its instance. Returns the deployment
    /// that served it.
    pub fn end_session(&self, agent: &AgentId, session: &SessionId) -> Option<DeploymentId> {
        let _ = self.router.release_session(agent, session);
        let (_, deployment) = self.sessions.remove(&(agent.clone(), session.clone()))?;
        self.runtime.end_session(&deployment, session);
        Some(deployment)
    }

    /// Unloads from the runtime every deployment the registry took out of service
    /// (rolled back, retired or failed), after its running messages finish. Returns them.
    pub async fn reap(&self) -> Vec<DeploymentId> {
        let mut reaped = Vec::new();
        for deployment in self.runtime.loaded() {
            let Some(staged) = self.staged.get(&deployment).map(|s| s.sample) else {
                continue;
            };
            let Ok(record) = self.store.get(&agent_id(&staged), &deployment).await else {
                continue;
            };
            if matches!(
                record.state,
                LifecycleState::RolledBack | LifecycleState::Retired | LifecycleState::Failed
            ) && self.runtime.unload(&deployment).is_ok()
            {
                reaped.push(deployment);
            }
        }
        reaped
    }

    fn record_change(&self, operation: &'static str, agent: &AgentId, took: Duration) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TimedChange {
                operation,
                agent: agent.clone(),
                took,
                at: Instant::now(),
            });
    }
}

/// The contract tests this host runs on `processor` before a rollout: the vectors of
/// `examples/agents/processor/contract_tests.json` without the coupon orders. Like many
/// real suites it covers the common path only, so v2's coupon regression gets past
/// validation and it is the canary, on live traffic, that catches it. (`caxton validate
/// --contract-tests` with the whole file catches it before any traffic.)
pub fn host_contract_suite() -> Vec<ContractTest> {
    ContractTest::parse_all(PROCESSOR_CONTRACT_TESTS)
        .unwrap_or_default()
        .into_iter()
        .filter(|test| !test.input.contains_key("coupon"))
        .collect()
}

/// The agent id of a sample agent.
pub fn agent_id(sample: &SampleAgent) -> AgentId {
    AgentId::new(sample.name)
        .unwrap_or_else(|_| AgentId::new("agent").unwrap_or_else(|_| unreachable!()))
}

/// Whether a reply is a JSON object of kind `error`.
pub fn is_error_reply(reply: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: &'a str,
    }
    serde_json::from_slice::<Kind<'_>>(reply).is_ok_and(|k| k.kind == "error")
}

/// The host's validation and warm-up, for the rollout driver.
struct HostChecks {
    host: Arc<Host>,
}

#[async_trait]
impl CandidateChecks for HostChecks {
    async fn validate(&self, candidate: &Deployment) -> ValidationVerdict {
        let report = self.host.validate(candidate).await;
        let stages: Vec<String> = report
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.stage,
                    if s.status == caxton_validate::StageStatus::Passed {
                        "✓"
                    } else {
                        "✗"
                    }
                )
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
                .find(|(_, f)| f.severity == caxton_validate::Severity::Error)
                .map(|(stage, f)| format!("{stage}: {}", f.message))
                .unwrap_or_else(|| "rejected".to_owned());
            ValidationVerdict::failed(first)
        };
        if let Some(profile) = report.profile {
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
        verdict
    }

    async fn warm_up(&self, candidate: &Deployment) -> WarmUpReport {
        let started = Instant::now();
        match self.host.load(candidate) {
            Ok(()) => WarmUpReport::ready(format!(
                "compiled, instantiated and initialised in {:.0} ms",
                started.elapsed().as_secs_f64() * 1e3
            )),
            Err(error) => WarmUpReport::not_ready(error.to_string()),
        }
    }
}

/// The router as the rollouts' traffic control, timing every change it publishes.
struct TimedTraffic {
    host: Arc<Host>,
}

impl TimedTraffic {
    fn timed<T>(
        &self,
        operation: &'static str,
        agent: &AgentId,
        change: impl FnOnce(&Router) -> T,
    ) -> T {
        let started = Instant::now();
        let result = change(&self.host.router);
        self.host.record_change(operation, agent, started.elapsed());
        result
    }
}

#[async_trait]
impl TrafficControl for TimedTraffic {
    async fn register(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        TrafficControl::register(&*self.host.router, agent, deployment).await
    }

    async fn promote(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        self.timed("promote", agent, |r| r.promote(agent, deployment))
            .map_err(Into::into)
    }

    async fn set_split(&self, agent: &AgentId, split: &Split) -> Result<(), TrafficError> {
        self.timed("set_split", agent, |r| r.set_split(agent, split))
            .map_err(Into::into)
    }

    async fn set_shadow(
        &self,
        agent: &AgentId,
        shadow: Option<&ShadowConfig>,
    ) -> Result<(), TrafficError> {
        TrafficControl::set_shadow(&*self.host.router, agent, shadow).await
    }

    async fn set_session_affinity(
        &self,
        agent: &AgentId,
        affinity: Option<SessionAffinity>,
    ) -> Result<(), TrafficError> {
        TrafficControl::set_session_affinity(&*self.host.router, agent, affinity).await
    }

    async fn pin_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
        deployment: &DeploymentId,
    ) -> Result<(), TrafficError> {
        TrafficControl::pin_session(&*self.host.router, agent, session, deployment).await
    }

    async fn release_session(
        &self,
        agent: &AgentId,
        session: &SessionId,
    ) -> Result<bool, TrafficError> {
        TrafficControl::release_session(&*self.host.router, agent, session).await
    }

    async fn rollback(&self, agent: &AgentId) -> Result<(), TrafficError> {
        self.timed("rollback", agent, |r| r.rollback(agent))
            .map_err(Into::into)
    }

    async fn start_drain(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        TrafficControl::start_drain(&*self.host.router, deployment).await
    }

    async fn drain_status(&self, deployment: &DeploymentId) -> Result<DrainStatus, TrafficError> {
        TrafficControl::drain_status(&*self.host.router, deployment).await
    }

    async fn close_drain(&self, deployment: &DeploymentId) -> Result<DrainReport, TrafficError> {
        TrafficControl::close_drain(&*self.host.router, deployment).await
    }

    async fn retire(&self, deployment: &DeploymentId) -> Result<(), TrafficError> {
        TrafficControl::retire(&*self.host.router, deployment).await
    }

    fn in_flight(&self, deployment: &DeploymentId) -> u64 {
        self.host.router.in_flight(deployment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_recognised_by_kind() {
        assert!(is_error_reply(br#"{"kind":"error","reason":"x"}"#));
        assert!(!is_error_reply(br#"{"kind":"receipt"}"#));
        assert!(!is_error_reply(b"not json"));
    }
}
