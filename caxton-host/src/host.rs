//! The host: ADR-0008's deployment API over the registry, the router, the runtime, the
//! validation pipeline and the rollout driver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use caxton_core::lease::{LeaseHolder, MemoryLeases, RolloutLeases};
use caxton_core::{
    AgentId, AgentRuntime, ArtifactKind, ArtifactStore, AuditEvent, Clock, CodeLayer,
    DefaultRiskPolicy, Deployment, DeploymentId, DeploymentStore, Digest, InMemoryMetrics,
    LifecycleEvent, LifecycleState, ListQuery, MemoryArtifactStore, MemoryJournal, MemoryStore,
    ModelLayer, NewDeployment, PromptLayer, RiskPolicy, RollbackTarget, RolloutJournal,
    RolloutRecommendation, SessionAffinity, SessionId, SystemClock, Timestamp, ToolsLayer,
    VersionTuple,
};
use caxton_router::{ChangeError, PreviewError, RegisterError, Router};
use caxton_strategies::config::{BlueGreenConfig, CanaryConfig, DirectConfig, RainbowConfig};
use caxton_strategies::{
    CandidateChecks, Command, Commands, DriverError, ReasonKind, RolloutDriver, RolloutEvent,
    RolloutReport, StrategyConfig,
};
use caxton_validate::{Pipeline, Policy, ValidationReport};
use caxton_wasm::{AgentEngine, ConfigSource, EngineConfig, PoolingConfig, WasmRuntime};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use serde::Serialize;

use crate::error::{BuildError, HostError, SendError};
use crate::joints::{HostChecks, HostSink, HostTraffic};
use crate::request::{DeployRequest, ModuleSource, PromoteMode, SessionMode};
use crate::rollout::{RolloutHandle, RolloutSlot};
use crate::send::{Delivery, HostSender};
use crate::shadow::{ShadowCounts, ShadowQueue};
use crate::spec::{LABEL_KEY, RESTORED_FROM_KEY, SPEC_KEY, StoredSpec, label_of};
use crate::status::{
    AgentReadiness, AgentStatus, DeploymentStatus, HostHealth, Role, RollbackOutcome, RolloutStatus,
};

/// How long a soft-deleted deployment is kept before it may be purged.
pub const DEFAULT_DELETE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3_600);
/// How long an operation waits for a finished rollout's cleanup before it is refused with
/// `rollout_in_progress`.
const FINISHING_WAIT: Duration = Duration::from_secs(2);
/// How long a rollout's lease lasts without a renewal, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// The shortest lease time-to-live a host takes: renewals come every third of it.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(30);
/// How long a session of a sessions agent may idle before it loses its pin.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One timed traffic change a rollout or an operator made.
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

/// One rollout event with the wall-clock time the host saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEvent {
    /// When the host saw it (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: Timestamp,
    /// The event.
    #[serde(flatten)]
    pub event: RolloutEvent,
}

fn rfc3339<S: serde::Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(at)
}

/// A stream of rollout events, from the moment it was asked for. A subscriber that falls
/// more than its buffer behind loses events (counted in `caxton_host_events_dropped_total`)
/// rather than slowing a rollout down.
pub type EventStream = mpsc::Receiver<HostEvent>;

const EVENT_BUFFER: usize = 1_024;
const RECENT_EVENTS: usize = 4_096;
const TIMED_CHANGES: usize = 4_096;

#[derive(Default)]
pub(crate) struct EventHub {
    subscribers: Mutex<Vec<mpsc::Sender<HostEvent>>>,
    recent: Mutex<VecDeque<HostEvent>>,
}

impl EventHub {
    pub(crate) fn publish(&self, now: Timestamp, event: &RolloutEvent) {
        let event = HostEvent {
            timestamp: now,
            event: event.clone(),
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain_mut(|subscriber| match subscriber.try_send(event.clone()) {
            Ok(()) => true,
            Err(error) if error.is_full() => {
                metrics::counter!("caxton_host_events_dropped_total").increment(1);
                true
            }
            Err(_) => false,
        });
    }

    fn subscribe(&self) -> EventStream {
        let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sender);
        receiver
    }
}

/// What the host knows of an agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentState {
    pub(crate) sessions: SessionMode,
    /// Whether messages are recorded as observations for the gates: while a rollout of
    /// the agent runs (shared with its slot).
    pub(crate) observed: Arc<std::sync::atomic::AtomicBool>,
    /// The agent's message metrics, registered once so a message does not build their
    /// keys. Registered with the recorder installed when the agent was first seen.
    pub(crate) meters: AgentMeters,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentMeters {
    pub(crate) ok: metrics::Counter,
    pub(crate) app_error: metrics::Counter,
    pub(crate) failed: metrics::Counter,
    pub(crate) latency: metrics::Histogram,
}

impl AgentState {
    pub(crate) fn new(agent: &AgentId, sessions: SessionMode) -> Self {
        let counter = |outcome: &'static str| {
            metrics::counter!(
                "caxton_agent_messages_total",
                "agent" => agent.to_string(),
                "outcome" => outcome
            )
        };
        AgentState {
            sessions,
            observed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            meters: AgentMeters {
                ok: counter("ok"),
                app_error: counter("app_error"),
                failed: counter("failed"),
                latency: metrics::histogram!(
                    "caxton_agent_message_duration_seconds",
                    "agent" => agent.to_string()
                ),
            },
        }
    }
}

/// What a request deploys, worked out before anything is stored.
struct Prepared {
    module: Arc<[u8]>,
    label: String,
    version: VersionTuple,
    sessions: SessionMode,
    id: DeploymentId,
}

/// A deployment that was made, and its rollout.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The deployment as recorded when its rollout started.
    pub deployment: Deployment,
    /// Its rollout: wait on it for the outcome.
    pub rollout: RolloutHandle,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn DeploymentStore>,
    pub(crate) artifacts: Arc<dyn ArtifactStore>,
    pub(crate) journal: Arc<dyn RolloutJournal>,
    pub(crate) runtime: Arc<dyn AgentRuntime>,
    pub(crate) router: Arc<Router>,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: InMemoryMetrics,
    pub(crate) clock: Arc<dyn Clock>,
    risk: Arc<dyn RiskPolicy>,
    pub(crate) agents: DashMap<AgentId, AgentState, foldhash::fast::RandomState>,
    /// Which agent each deployment loaded in the runtime belongs to.
    pub(crate) loaded: DashMap<DeploymentId, AgentId>,
    pub(crate) rollouts: DashMap<AgentId, Arc<RolloutSlot>>,
    /// Who drives which rollout, among the hosts sharing the registry.
    pub(crate) leases: Arc<dyn RolloutLeases>,
    /// This host, as the holder of rollout leases.
    pub(crate) holder: LeaseHolder,
    pub(crate) lease_ttl: Duration,
    /// The production each agent had before its current one: where a rollback goes first,
    /// without listing the agent's deployments.
    pub(crate) previous: DashMap<AgentId, DeploymentId, foldhash::fast::RandomState>,
    pub(crate) reports: DashMap<DeploymentId, Arc<ValidationReport>>,
    pub(crate) events: EventHub,
    pub(crate) shadow: ShadowQueue,
    changes: Mutex<VecDeque<TimedChange>>,
    session_idle_timeout: Duration,
    delete_retention: Duration,
    rollout_max_duration: Duration,
    ids: AtomicU64,
    /// Dropped with the host: stops the maintenance thread.
    _maintenance: Option<std_mpsc::Sender<()>>,
    /// Deployments to take out of the router and the runtime, off the caller's path.
    /// Deployments taken out of the router whose runtime instances are still to be
    /// unloaded, for the unloading worker.
    retirements: Mutex<std_mpsc::Sender<DeploymentId>>,
}

/// The host. Cheap to clone (clones share everything); every method takes `&self`.
///
/// Rollouts run on threads of the host's own, one per running rollout, and so do
/// validation (inside the rollout), compilation and unloading: no async method blocks the
/// caller's executor thread for longer than a registry call. [`send`](Host::send) and
/// [`preview`](Host::preview) are synchronous and run the agent on the calling thread,
/// for at most the runtime's per-message deadline; async callers run them where blocking is
/// allowed (e.g. `spawn_blocking`).
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("agents", &self.inner.agents.len())
            .field("loaded", &self.inner.loaded.len())
            .field("rollouts", &self.inner.rollouts.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Host`]. Every part has a default: an in-memory registry and artifact store,
/// a pooled wasmtime runtime that meters fuel, a router, the default validation pipeline,
/// the system clock and core's risk policy.
pub struct HostBuilder {
    store: Option<Arc<dyn DeploymentStore>>,
    artifacts: Option<Arc<dyn ArtifactStore>>,
    journal: Option<Arc<dyn RolloutJournal>>,
    leases: Option<Arc<dyn RolloutLeases>>,
    holder: Option<LeaseHolder>,
    lease_ttl: Duration,
    runtime: Option<Arc<dyn AgentRuntime>>,
    router: Option<Arc<Router>>,
    pipeline: Option<Pipeline>,
    policy: Policy,
    clock: Arc<dyn Clock>,
    risk: Arc<dyn RiskPolicy>,
    metrics: Option<InMemoryMetrics>,
    secrets: Option<Arc<ConfigSource>>,
    engine: Option<EngineConfig>,
    session_idle_timeout: Duration,
    delete_retention: Duration,
    shadow_queue: usize,
    maintenance_interval: Duration,
    rollout_max_duration: Duration,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field("clock", &self.clock)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("shadow_queue", &self.shadow_queue)
            .finish_non_exhaustive()
    }
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            store: None,
            artifacts: None,
            journal: None,
            leases: None,
            holder: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            runtime: None,
            router: None,
            pipeline: None,
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            risk: Arc::new(DefaultRiskPolicy),
            metrics: None,
            secrets: None,
            engine: None,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            delete_retention: DEFAULT_DELETE_RETENTION,
            shadow_queue: 1_024,
            maintenance_interval: Duration::from_secs(10),
            rollout_max_duration: Duration::from_secs(7 * 24 * 3_600),
        }
    }
}

impl HostBuilder {
    /// The deployment registry (default: a [`MemoryStore`] on the host's clock).
    pub fn store(mut self, store: Arc<dyn DeploymentStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The artifact store (default: a [`MemoryArtifactStore`]).
    pub fn artifacts(mut self, artifacts: Arc<dyn ArtifactStore>) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The rollout journal (default: a [`MemoryJournal`]). With a durable one and a
    /// durable store, [`Host::recover`] resumes the rollouts a stopped host was running.
    pub fn journal(mut self, journal: Arc<dyn RolloutJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Where the hosts sharing the registry record who drives each rollout (default:
    /// [`MemoryLeases`], for a host alone on its registry). Hosts sharing one registry
    /// share these too: exactly one of them drives a rollout, renewing its lease every
    /// third of [`lease_ttl`](HostBuilder::lease_ttl), and another takes the rollout over
    /// ([`Host::adopt_rollouts`]) once the lease has expired.
    pub fn leases(mut self, leases: Arc<dyn RolloutLeases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// This host's name as the holder of rollout leases (default:
    /// [`LeaseHolder::generate`]: host name, process id and a random suffix). It must be
    /// unique among the hosts sharing the registry.
    pub fn lease_holder(mut self, holder: LeaseHolder) -> Self {
        self.holder = Some(holder);
        self
    }

    /// How long a rollout's lease lasts without a renewal (default 10 s): how long after
    /// its host dies another host may take the rollout over. Between 30 ms and one day.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The runtime (default: a pooled [`WasmRuntime`] that meters fuel).
    pub fn runtime(mut self, runtime: Arc<dyn AgentRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The engine configuration of the default runtime (e.g. a disk cache directory).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = Some(config);
        self
    }

    /// Host-wide secrets the default runtime holds; an agent reads only those its
    /// deployment was granted.
    pub fn secrets(mut self, secrets: Arc<ConfigSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// The router (default: a new one on the host's clock).
    pub fn router(mut self, router: Arc<Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// The validation pipeline (default: the four stages under [`policy`](Self::policy)).
    pub fn pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// The policy of the default pipeline.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock every default part runs on (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How the strategy is chosen when a request has no rollout spec.
    pub fn risk_policy(mut self, risk: Arc<dyn RiskPolicy>) -> Self {
        self.risk = risk;
        self
    }

    /// Where observations of every message are kept for the gates (default: 100,000
    /// per deployment).
    pub fn metrics(mut self, metrics: InMemoryMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long a session of a sessions agent may idle before its pin and instance go.
    pub fn session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.session_idle_timeout = timeout;
        self
    }

    /// How long a soft-deleted deployment is kept.
    pub fn delete_retention(mut self, retention: Duration) -> Self {
        self.delete_retention = retention;
        self
    }

    /// How many shadow copies may wait; beyond that copies are dropped and counted.
    pub fn shadow_queue(mut self, capacity: usize) -> Self {
        self.shadow_queue = capacity;
        self
    }

    /// How often idle session pins and instances are purged (default 10 s).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// Aborts a rollout that runs longer than this (default 7 days).
    pub fn rollout_max_duration(mut self, max: Duration) -> Self {
        self.rollout_max_duration = max;
        self
    }

    /// The host.
    pub fn build(self) -> Result<Host, BuildError> {
        if !(MIN_LEASE_TTL..=caxton_core::lease::MAX_TTL).contains(&self.lease_ttl) {
            return Err(BuildError::LeaseTtl {
                ttl: self.lease_ttl,
            });
        }
        let clock = self.clock;
        let runtime: Arc<dyn AgentRuntime> = match self.runtime {
            Some(runtime) => runtime,
            None => {
                let engine = AgentEngine::new(self.engine.unwrap_or_else(|| {
                    EngineConfig::default()
                        .pooling(PoolingConfig::default().max_instances(256))
                        .fuel_metering(true)
                }))?;
                let mut builder = WasmRuntime::builder(engine)
                    .clock(clock.clone())
                    .session_idle_timeout(self.session_idle_timeout)
                    .max_pooled_instances(8);
                if let Some(secrets) = self.secrets {
                    builder = builder.shared_config(secrets);
                }
                Arc::new(builder.build())
            }
        };
        let pipeline = match self.pipeline {
            Some(pipeline) => pipeline,
            None => Pipeline::new(self.policy)?,
        };
        let metrics = self
            .metrics
            .unwrap_or_else(|| InMemoryMetrics::with_capacity(100_000));
        let shadow = ShadowQueue::start(
            self.shadow_queue,
            runtime.clone(),
            metrics.clone(),
            clock.clone(),
        );
        let leases = self
            .leases
            .unwrap_or_else(|| Arc::new(MemoryLeases::with_clock(clock.clone())));
        let (stop, stopped) = std_mpsc::channel::<()>();
        let (retire, retirements) = std_mpsc::channel::<DeploymentId>();
        let inner = Arc::new(Inner {
            store: self
                .store
                .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone()))),
            artifacts: self
                .artifacts
                .unwrap_or_else(|| Arc::new(MemoryArtifactStore::new())),
            journal: self
                .journal
                .unwrap_or_else(|| Arc::new(MemoryJournal::new())),
            runtime,
            router: self
                .router
                .unwrap_or_else(|| Arc::new(Router::builder().clock(clock.clone()).build())),
            pipeline: Arc::new(pipeline),
            metrics,
            clock,
            risk: self.risk,
            agents: DashMap::default(),
            loaded: DashMap::new(),
            rollouts: DashMap::new(),
            leases,
            holder: self.holder.unwrap_or_else(LeaseHolder::generate),
            lease_ttl: self.lease_ttl,
            previous: DashMap::default(),
            reports: DashMap::new(),
            events: EventHub::default(),
            shadow,
            changes: Mutex::new(VecDeque::new()),
            session_idle_timeout: self.session_idle_timeout,
            delete_retention: self.delete_retention,
            rollout_max_duration: self.rollout_max_duration,
            ids: AtomicU64::new(0),
            _maintenance: Some(stop),
            retirements: Mutex::new(retire),
        });
        start_maintenance(Arc::downgrade(&inner), stopped, self.maintenance_interval);
        start_unloader(Arc::downgrade(&inner), retirements);
        crate::lease::start_lease_keeper(Arc::downgrade(&inner));
        Ok(Host { inner })
    }
}

/// Purges idle session pins and instances now and then, until the host is dropped.
fn start_maintenance(inner: Weak<Inner>, stopped: std_mpsc::Receiver<()>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("caxton-maintenance".to_owned())
        .spawn(move || {
            while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(inner) = inner.upgrade() else { return };
                inner.maintain();
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "the maintenance thread could not start; idle sessions are purged only as new ones start");
    }
}

/// How long after a deployment is taken out of the router it is unloaded: unloading
/// frees instance memory, which costs every core a little; a caller that just rolled back
/// should not pay for it.
const UNLOAD_DELAY: Duration = Duration::from_millis(5);

/// Unloads deployments already taken out of the router: waiting for their messages in
/// flight happens here, never on a caller's thread.
fn start_unloader(inner: Weak<Inner>, queued: std_mpsc::Receiver<DeploymentId>) {
    let spawned = std::thread::Builder::new()
        .name("caxton-unload".to_owned())
        .spawn(move || {
            while let Ok(first) = queued.recv() {
                std::thread::sleep(UNLOAD_DELAY);
                let mut due = vec![first];
                due.extend(queued.try_iter());
                let Some(inner) = inner.upgrade() else { return };
                for deployment in due {
                    inner.unload(&deployment);
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "the unloading thread could not start; retired versions are unloaded on the caller's thread");
    }
}

/// Runs `work` on a thread of the host's own and waits for it without blocking the
/// caller's executor.
async fn off_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HostError> {
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("caxton-{name}"))
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|_| HostError::ShutDown)?;
    receiver.await.map_err(|_| HostError::ShutDown)
}

impl Inner {
    pub(crate) fn session_mode(&self, agent: &AgentId) -> SessionMode {
        self.agents
            .get(agent)
            .map(|state| state.sessions)
            .unwrap_or_default()
    }

    pub(crate) fn default_affinity(&self) -> SessionAffinity {
        SessionAffinity {
            idle_timeout: self.session_idle_timeout,
        }
    }

    /// Makes the router match the agent's session mode: a sessions agent pins from its
    /// first deployment on.
    pub(crate) fn apply_session_mode(&self, agent: &AgentId) -> Result<(), ChangeError> {
        let wanted = match self.session_mode(agent) {
            SessionMode::Sessions => Some(self.default_affinity()),
            SessionMode::Stateless => None,
        };
        let current = self
            .router
            .agent_route(agent)
            .ok()
            .and_then(|route| route.session_affinity());
        if current.is_some() != wanted.is_some() {
            self.router.set_session_affinity(agent, wanted)?;
        }
        Ok(())
    }

    /// A rollout driver over the host's joints, reporting to `slot`.
    fn driver(
        self: &Arc<Self>,
        slot: &Arc<RolloutSlot>,
        checks: HostChecks,
        recorded: Option<oneshot::Sender<()>>,
    ) -> RolloutDriver {
        let sink = Arc::new(HostSink {
            inner: Arc::clone(self),
            slot: Arc::clone(slot),
            recorded: Mutex::new(recorded),
        });
        RolloutDriver::builder(
            self.store.clone(),
            Arc::new(HostTraffic {
                inner: Arc::clone(self),
            }),
            Arc::new(self.metrics.clone()),
            self.clock.clone(),
            Arc::new(checks),
        )
        .events(sink)
        .journal(self.journal.clone())
        .max_duration(self.rollout_max_duration)
        .build()
    }

    /// Runs a rollout on a thread of the host's own: `run` drives it; afterwards the
    /// agent's retired versions are unloaded, the slot is freed and waiters are told.
    pub(crate) fn spawn_rollout(
        self: &Arc<Self>,
        agent: &AgentId,
        slot: &Arc<RolloutSlot>,
        finish: oneshot::Sender<Result<RolloutReport, DriverError>>,
        checks: HostChecks,
        recorded: Option<oneshot::Sender<()>>,
        run: impl FnOnce(&RolloutDriver) -> Result<RolloutReport, DriverError> + Send + 'static,
    ) -> std::io::Result<()> {
        let driver = self.driver(slot, checks, recorded);
        let inner = Arc::clone(self);
        let slot = Arc::clone(slot);
        let agent = agent.clone();
        // The gates read observations of the agent's messages from now until it ends.
        let observed = self
            .agents
            .get(&agent)
            .map(|state| Arc::clone(&state.observed));
        if let Some(observed) = &observed {
            observed.store(true, Ordering::Relaxed);
        }
        std::thread::Builder::new()
            .name(format!("caxton-rollout-{agent}"))
            .spawn(move || {
                let result = run(&driver);
                let handed_off = matches!(&result, Ok(report) if report.outcome.reason()
                    .is_some_and(|reason| reason.kind == ReasonKind::HandedOff));
                // Not renewed any more: the rollout is over.
                if slot.leased.swap(false, Ordering::AcqRel) && !handed_off {
                    futures::executor::block_on(inner.release_lease(&agent, &slot.deployment));
                }
                futures::executor::block_on(inner.reap(&agent));
                if let Ok(report) = &result {
                    tracing::info!(
                        agent_id = %report.agent,
                        deployment_id = %report.deployment,
                        outcome = ?report.outcome,
                        "rollout finished"
                    );
                }
                if let Some(observed) = &observed {
                    observed.store(false, Ordering::Relaxed);
                }
                // Free the slot before telling waiters, so a waiter may deploy again at once.
                inner
                    .rollouts
                    .remove_if(&agent, |_, held| Arc::ptr_eq(held, &slot));
                if handed_off {
                    // Another host drives it now: follow the registry like any follower.
                    let host = Host {
                        inner: Arc::clone(&inner),
                    };
                    if let Err(error) = futures::executor::block_on(host.sync_agent(&agent)) {
                        tracing::warn!(%error, agent_id = %agent, "cannot follow the registry after handing a rollout off");
                    }
                }
                let _ = finish.send(result);
            })
            .map(|_| ())
    }

    /// Runs a router change and records how long it took.
    pub(crate) fn timed<T>(
        &self,
        operation: &'static str,
        agent: &AgentId,
        change: impl FnOnce() -> T,
    ) -> T {
        let started = Instant::now();
        let result = change();
        self.record_change(TimedChange {
            operation,
            agent: agent.clone(),
            took: started.elapsed(),
            at: Instant::now(),
        });
        result
    }

    /// Waits a little for a rollout of `agent` that has finished (promoted or rolled back)
    /// to free its slot: its events say it is over a moment before its cleanup ends, and
    /// an operator who saw them may act at once. A cleanup that drains sessions may take
    /// long: after [`FINISHING_WAIT`] the caller is refused as usual.
    pub(crate) async fn finishing_rollout_done(&self, agent: &AgentId) {
        let finishing = self
            .rollouts
            .get(agent)
            .filter(|slot| slot.progress().phase == crate::rollout::RolloutPhase::Finishing)
            .map(|slot| slot.done.clone());
        if let Some(done) = finishing {
            let _ = select(done, futures_timer::Delay::new(FINISHING_WAIT)).await;
        }
    }

    /// Takes the agent's one rollout slot for `slot`; refused with `RolloutInProgress`
    /// while another rollout of the agent runs.
    pub(crate) fn reserve_rollout(
        &self,
        agent: &AgentId,
        slot: &Arc<RolloutSlot>,
    ) -> Result<(), HostError> {
        match self.rollouts.entry(agent.clone()) {
            Entry::Occupied(running) => Err(HostError::RolloutInProgress {
                agent: agent.clone(),
                deployment: running.get().deployment.clone(),
            }),
            Entry::Vacant(vacant) => {
                vacant.insert(Arc::clone(slot));
                Ok(())
            }
        }
    }

    /// Refused with `RolloutInProgress` while a rollout of `agent` runs.
    pub(crate) fn no_rollout_running(&self, agent: &AgentId) -> Result<(), HostError> {
        match self.rollouts.get(agent) {
            Some(slot) => Err(HostError::RolloutInProgress {
                agent: agent.clone(),
                deployment: slot.deployment.clone(),
            }),
            None => Ok(()),
        }
    }

    fn record_change(&self, change: TimedChange) {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if changes.len() == TIMED_CHANGES {
            changes.pop_front();
        }
        changes.push_back(change);
    }

    /// Loads `deployment` from its artifacts into the runtime and warms it up, unless it is
    /// loaded already. Compilation runs on a thread of the host's own.
    pub(crate) async fn load_deployment(&self, deployment: &Deployment) -> Result<(), HostError> {
        if self.runtime.health(&deployment.id).is_some_and(|h| h.ready) {
            return Ok(());
        }
        let spec = StoredSpec::of(deployment, &*self.artifacts).await?;
        let load = spec.load_spec(deployment, &*self.artifacts).await?;
        let runtime = self.runtime.clone();
        let id = deployment.id.clone();
        off_thread("load", move || {
            match runtime.load(load) {
                Ok(()) | Err(caxton_core::AgentError::AlreadyLoaded { .. }) => {}
                Err(error) => return Err(error),
            }
            runtime.warm_up(&id)
        })
        .await??;
        self.loaded
            .insert(deployment.id.clone(), deployment.agent.clone());
        Ok(())
    }

    /// Registers a running deployment with the router if it is not known there.
    pub(crate) fn ensure_registered(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), HostError> {
        match self.router.register(agent, deployment) {
            Ok(()) | Err(RegisterError::AlreadyRegistered { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        self.apply_session_mode(agent)?;
        Ok(())
    }

    /// Takes a deployment out of the router now — pinned sessions move at once, nothing
    /// new reaches it, messages in flight finish — and queues it to be unloaded from the
    /// runtime off the caller's path.
    pub(crate) fn retire_out_of_band(self: &Arc<Self>, deployment: DeploymentId) {
        self.take_out_of_router(&deployment);
        let queued = self
            .retirements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(deployment);
        if let Err(std_mpsc::SendError(deployment)) = queued {
            // No worker (it could not start): unload here.
            self.unload(&deployment);
        }
    }

    fn take_out_of_router(&self, deployment: &DeploymentId) {
        if self.router.phase(deployment).is_some() {
            let _ = self.router.close_drain(deployment);
            let _ = self.router.retire(deployment);
        }
    }

    /// Unloads `deployment` from the runtime; blocks until its messages in flight end.
    fn unload(&self, deployment: &DeploymentId) {
        let was_loaded =
            self.loaded.remove(deployment).is_some() || self.runtime.health(deployment).is_some();
        if was_loaded && let Err(error) = self.runtime.unload(deployment) {
            tracing::debug!(%error, deployment_id = %deployment, "unload");
        }
    }

    /// Closes, retires and unloads `deployment`; blocks until its messages in flight end.
    fn take_out(&self, deployment: &DeploymentId) {
        self.take_out_of_router(deployment);
        self.unload(deployment);
    }

    /// After a rollout: unloads every deployment of `agent` the registry took out of
    /// service (rolled back, retired, failed).
    async fn reap(&self, agent: &AgentId) {
        let ours: Vec<DeploymentId> = self
            .loaded
            .iter()
            .filter(|entry| entry.value() == agent)
            .map(|entry| entry.key().clone())
            .collect();
        for deployment in ours {
            let Ok(record) = self.store.get(agent, &deployment).await else {
                continue;
            };
            if record.state.is_terminal() {
                self.take_out(&deployment);
            }
        }
    }

    pub(crate) fn maintain(&self) {
        let pins = self.router.purge_idle_pins();
        let sessions = self.runtime.evict_idle_sessions();
        if pins + sessions > 0 {
            tracing::debug!(pins, sessions, "purged idle sessions");
        }
    }

    fn set_version_active(&self, agent: &AgentId, deployment: &Deployment, active: bool) {
        metrics::gauge!(
            "caxton_agent_version_active",
            "agent" => agent.to_string(),
            "version" => label_of(deployment).to_owned()
        )
        .set(if active { 1.0 } else { 0.0 });
    }

    /// A fresh id `<agent>-<label>-<hex>`: five hex digits when they are free (short for
    /// people), more when the agent already has that id (a label redeployed or restored
    /// many times), so a generated id never collides with one of the agent's.
    async fn new_id(&self, agent: &AgentId, label: &str, version: &VersionTuple) -> DeploymentId {
        for digits in [5, 5, 8, 8, 16] {
            let n = self.ids.fetch_add(1, Ordering::Relaxed);
            let seed = format!(
                "{}|{}|{}|{n}|{:?}",
                version.fingerprint(),
                self.clock.now(),
                std::process::id(),
                Instant::now()
            );
            let suffix = &Digest::of(seed.as_bytes()).to_hex()[..digits];
            let Ok(id) = DeploymentId::new(format!("{agent}-{label}-{suffix}")) else {
                break;
            };
            if matches!(
                self.store.get(agent, &id).await,
                Err(caxton_core::store::GetError::NotFound { .. })
            ) {
                return id;
            }
        }
        DeploymentId::generate()
    }

    pub(crate) async fn all_deployments(
        &self,
        agent: &AgentId,
        include_deleted: bool,
    ) -> Result<Vec<Deployment>, HostError> {
        let mut query = ListQuery::new()
            .limit(ListQuery::MAX_LIMIT)
            .include_deleted(include_deleted);
        let mut all = Vec::new();
        loop {
            let page = self.store.list(agent, &query).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => query = query.after(next),
                None => return Ok(all),
            }
        }
    }

    /// The agent's session mode as the registry remembers it: its production's.
    async fn recall_session_mode(&self, agent: &AgentId) -> Option<SessionMode> {
        if let Some(state) = self.agents.get(agent) {
            return Some(state.sessions);
        }
        let production = self.store.production(agent).await.ok()??;
        StoredSpec::of(&production, &*self.artifacts)
            .await
            .ok()
            .map(|spec| spec.sessions)
    }

    fn strategy_for(
        &self,
        production: Option<&Deployment>,
        version: &VersionTuple,
        sessions: SessionMode,
    ) -> StrategyConfig {
        let Some(production) = production else {
            return StrategyConfig::Direct(DirectConfig::default());
        };
        let assessment = self.risk.assess(&production.version.diff(version));
        match assessment.recommendation {
            RolloutRecommendation::NoRollout | RolloutRecommendation::DirectOrBlueGreen => {
                StrategyConfig::BlueGreen(BlueGreenConfig::default())
            }
            RolloutRecommendation::Progressive => match sessions {
                SessionMode::Sessions => StrategyConfig::Rainbow(RainbowConfig::default()),
                SessionMode::Stateless => StrategyConfig::Canary(CanaryConfig::default()),
            },
        }
    }
}

fn check_label(label: &str) -> Result<(), HostError> {
    let ok = !label.is_empty()
        && label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(HostError::InvalidRequest {
            field: "label",
            message: format!("{label:?} must be 1 to 40 ASCII letters, digits, `.`, `_` or `-`"),
        })
    }
}

pub(crate) fn steps_of(config: &StrategyConfig) -> u32 {
    match config {
        StrategyConfig::Canary(canary) => canary.steps.steps().len() as u32 + 1,
        _ => 1,
    }
}

impl Host {
    /// A builder with every part at its default.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The registry.
    pub fn store(&self) -> &Arc<dyn DeploymentStore> {
        &self.inner.store
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.inner.artifacts
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn AgentRuntime> {
        &self.inner.runtime
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// The observations the gates read.
    pub fn metrics(&self) -> &InMemoryMetrics {
        &self.inner.metrics
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Counters of shadow copies.
    pub fn shadow_counts(&self) -> ShadowCounts {
        self.inner.shadow.tally.counts()
    }

    /// The validation report of a deployment this host validated.
    pub fn validation_report(&self, deployment: &DeploymentId) -> Option<Arc<ValidationReport>> {
        self.inner.reports.get(deployment).map(|r| Arc::clone(&r))
    }

    /// The latest traffic changes, oldest first, with how long the router took for each.
    pub fn timed_changes(&self) -> Vec<TimedChange> {
        self.inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Stores a module as an artifact; returns its digest. Idempotent.
    pub async fn put_artifact(
        &self,
        module: &[u8],
    ) -> Result<caxton_core::StoredArtifact, HostError> {
        Ok(self
            .inner
            .artifacts
            .put(ArtifactKind::Module, module)
            .await?)
    }

    /// Deploys a new version: stores its artifacts, records it, and starts its rollout on
    /// a thread of the host's own — validation (the four stages, the request's contract
    /// tests, compatibility with production), warm-up, then the strategy of the request's
    /// spec, or the one the risk of the changed layers calls for (direct for a first
    /// deployment, blue-green for code-only changes, canary — rainbow for a sessions
    /// agent — when the model, prompt or tools changed). Returns once the deployment is
    /// recorded; wait on [`Deployed::rollout`] for the outcome.
    ///
    /// At most one rollout runs per agent: while one runs, `deploy` is refused with
    /// [`HostError::RolloutInProgress`] and nothing is stored.
    pub async fn deploy(&self, request: DeployRequest) -> Result<Deployed, HostError> {
        let inner = &self.inner;
        let agent = request.agent.clone();
        inner.finishing_rollout_done(&agent).await;
        inner.no_rollout_running(&agent)?;
        let prepared = self.prepare(&request).await?;
        let production = inner.store.production(&agent).await?;
        let config = match &request.rollout {
            Some(spec) => spec.strategy.clone(),
            None => inner.strategy_for(production.as_ref(), &prepared.version, prepared.sessions),
        };
        // Checked here so that a bad spec is refused before anything is stored; the
        // driver builds the strategy it runs from the same config.
        config.build().map_err(|source| HostError::Strategy {
            agent: agent.clone(),
            source,
        })?;
        let id = prepared.id.clone();

        // Reserve the agent's one rollout slot; released on every path below that fails.
        let (commands_sender, commands) = Commands::channel();
        let (slot, finish) = RolloutSlot::new(
            id.clone(),
            config.name(),
            steps_of(&config),
            commands_sender,
        );
        inner.reserve_rollout(&agent, &slot)?;
        let release = || {
            inner
                .rollouts
                .remove_if(&agent, |_, held| Arc::ptr_eq(held, &slot));
        };
        // Only the holder of the agent's rollout lease drives a rollout of it.
        if let Err(error) = inner.take_lease(&agent, &id).await {
            release();
            return Err(error);
        }
        slot.leased.store(true, Ordering::Release);
        let new = match self
            .record_artifacts(&request, &prepared, config.name())
            .await
        {
            Ok(new) => new,
            Err(error) => {
                release();
                inner.release_lease(&agent, &id).await;
                return Err(error);
            }
        };
        let sessions = prepared.sessions;
        let module = prepared.module;
        inner
            .agents
            .entry(agent.clone())
            .and_modify(|state| state.sessions = sessions)
            .or_insert_with(|| AgentState::new(&agent, sessions));

        let (recorded_sender, recorded) = oneshot::channel();
        let checks = HostChecks {
            inner: Arc::clone(inner),
            module,
            contract_tests: request.contract_tests.clone(),
        };
        let thread_config = config.clone();
        let spawned = inner.spawn_rollout(
            &agent,
            &slot,
            finish,
            checks,
            Some(recorded_sender),
            move |driver| {
                futures::executor::block_on(driver.run_config(new, &thread_config, commands))
            },
        );
        if spawned.is_err() {
            release();
            inner.release_lease(&agent, &id).await;
            return Err(HostError::ShutDown);
        }

        // Wait until the driver has recorded the candidate, or failed before it could.
        let done = slot.done.clone();
        match select(recorded, done).await {
            Either::Left(_) => {}
            Either::Right((Ok(Err(error)), _)) => return Err(HostError::Driver(error)),
            Either::Right((Ok(Ok(_)), _)) => {}
            Either::Right((Err(_), _)) => return Err(HostError::ShutDown),
        }
        let deployment = inner.store.get(&agent, &id).await?;
        Ok(Deployed {
            deployment,
            rollout: RolloutHandle {
                agent,
                deployment: id,
                done: slot.done.clone(),
            },
        })
    }

    /// Checks a request and works out what it deploys: module, label, version, session
    /// mode and id. Stores nothing.
    async fn prepare(&self, request: &DeployRequest) -> Result<Prepared, HostError> {
        let inner = &self.inner;
        let agent = &request.agent;
        let module: Arc<[u8]> = match &request.module {
            ModuleSource::Bytes(bytes) => bytes.clone(),
            ModuleSource::Artifact(digest) => inner.artifacts.get(digest).await?,
        };
        let label = match &request.label {
            Some(label) => label.clone(),
            None => format!("v{}", inner.all_deployments(agent, true).await?.len() + 1),
        };
        check_label(&label)?;
        if let Some(key) = request.labels.keys().find(|k| k.starts_with("caxton.")) {
            return Err(HostError::InvalidRequest {
                field: "metadata",
                message: format!("label `{key}`: keys starting with `caxton.` are the host's own"),
            });
        }
        let tools = match &request.tools {
            Some(json) => {
                ToolsLayer::from_json(json).map_err(|error| HostError::InvalidRequest {
                    field: "tools",
                    message: format!("not valid JSON: {error}"),
                })?
            }
            None => ToolsLayer::from_definitions(&serde_json::json!([])),
        };
        let version = VersionTuple::new(
            CodeLayer::from_module(&module).with_label(format!("{agent} {label}")),
            request
                .model
                .clone()
                .unwrap_or_else(|| ModelLayer::new("none", "none", "0")),
            PromptLayer::from_prompt(request.prompt.as_deref().unwrap_or(""), &[]),
            tools,
        );
        let sessions = match request.sessions {
            Some(mode) => mode,
            None => inner.recall_session_mode(agent).await.unwrap_or_default(),
        };
        let id = match &request.id {
            Some(id) => id.clone(),
            None => inner.new_id(agent, &label, &version).await,
        };
        Ok(Prepared {
            module,
            label,
            version,
            sessions,
            id,
        })
    }

    /// Stores the module, the layer payloads and the load spec; returns the record to
    /// create.
    async fn record_artifacts(
        &self,
        request: &DeployRequest,
        prepared: &Prepared,
        strategy: &str,
    ) -> Result<NewDeployment, HostError> {
        let artifacts = &self.inner.artifacts;
        let module_digest = artifacts
            .put(ArtifactKind::Module, &prepared.module)
            .await?
            .digest;
        let mut layers = [None, None];
        for (slot, text) in layers.iter_mut().zip([&request.prompt, &request.tools]) {
            if let Some(text) = text {
                *slot = Some(
                    artifacts
                        .put(ArtifactKind::Document, text.as_bytes())
                        .await?
                        .digest,
                );
            }
        }
        let [prompt, tools] = layers;
        let spec_digest = StoredSpec::new(
            module_digest,
            prompt,
            tools,
            request.config.clone(),
            request.secrets.clone(),
            prepared.sessions,
        )
        .put(&**artifacts)
        .await?;
        let mut new = NewDeployment::builder(request.agent.clone(), prepared.version.clone())
            .id(prepared.id.clone())
            .strategy(strategy)
            .label(LABEL_KEY, prepared.label.clone())
            .label(SPEC_KEY, spec_digest.to_string());
        for (key, value) in &request.labels {
            new = new.label(key.clone(), value.clone());
        }
        if let Some(commit) = &request.commit {
            new = new.commit(commit.clone());
        }
        if let Some(author) = &request.author {
            new = new.author(author.clone());
        }
        Ok(new.build())
    }

    /// Deploys a version without routing to it: stores its artifacts, validates it (the
    /// four stages, the request's contract tests, compatibility with production) and warms
    /// it up on threads of the host's own. It then waits, running and reachable by
    /// [`preview`](Host::preview), for [`promote`](Host::promote) — the atomic cutover,
    /// after which the previous production stays live so a rollback is instant. A request's
    /// rollout spec is ignored. A failed validation or warm-up leaves it `Failed` and is
    /// returned as the deployment in that state.
    pub async fn stage(&self, request: DeployRequest) -> Result<Deployment, HostError> {
        let inner = &self.inner;
        let agent = request.agent.clone();
        let prepared = self.prepare(&request).await?;
        let new = self.record_artifacts(&request, &prepared, "staged").await?;
        inner
            .agents
            .entry(agent.clone())
            .or_insert_with(|| AgentState::new(&agent, prepared.sessions));
        let created = inner.store.create(new).await?;
        let id = created.id.clone();
        inner
            .store
            .transition(
                &agent,
                &id,
                LifecycleEvent::BeginValidation,
                "staged: validation started",
            )
            .await?;
        let checks = HostChecks {
            inner: Arc::clone(inner),
            module: prepared.module,
            contract_tests: request.contract_tests.clone(),
        };
        let candidate = created.clone();
        let (verdict, checks) = off_thread("validate", move || {
            let verdict = futures::executor::block_on(checks.validate(&candidate));
            (verdict, checks)
        })
        .await?;
        if !verdict.passed {
            return Ok(inner
                .store
                .transition(
                    &agent,
                    &id,
                    LifecycleEvent::ValidationFailed,
                    &verdict.summary,
                )
                .await?);
        }
        inner
            .store
            .transition(
                &agent,
                &id,
                LifecycleEvent::ValidationPassed,
                &verdict.summary,
            )
            .await?;
        let report = checks.warm_up(&created).await;
        if !report.ready {
            return Ok(inner
                .store
                .transition(&agent, &id, LifecycleEvent::WarmUpFailed, &report.detail)
                .await?);
        }
        let running = inner
            .store
            .transition(&agent, &id, LifecycleEvent::WarmUpPassed, &report.detail)
            .await?;
        inner.ensure_registered(&agent, &id)?;
        Ok(running)
    }

    /// The running rollout of `agent` if its candidate is `deployment`.
    fn rollout_of(&self, agent: &AgentId, deployment: &DeploymentId) -> Option<Arc<RolloutSlot>> {
        self.inner
            .rollouts
            .get(agent)
            .filter(|slot| &slot.deployment == deployment)
            .map(|slot| Arc::clone(&slot))
    }

    async fn command(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: Command,
    ) -> Result<(), HostError> {
        // Not found first: another agent's deployment must not be told apart from none.
        self.inner.store.get(agent, deployment).await?;
        match self.deliver(agent, deployment, command).await? {
            None => Ok(()),
            Some(_) => Err(HostError::NoRollout {
                agent: agent.clone(),
                deployment: deployment.clone(),
            }),
        }
    }

    /// Hands `command` to the rollout of `deployment`: this host's driver, or the host
    /// that drives it (relayed). Gives the command back when no rollout of the agent runs
    /// anywhere; refused while another host drives a rollout of another deployment.
    async fn deliver(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: Command,
    ) -> Result<Option<Command>, HostError> {
        if let Some(slot) = self.rollout_of(agent, deployment) {
            slot.commands
                .send(command)
                .map_err(|_| HostError::NoRollout {
                    agent: agent.clone(),
                    deployment: deployment.clone(),
                })?;
            return Ok(None);
        }
        match self.inner.lease_elsewhere(agent).await? {
            Some(lease) if &lease.deployment == deployment => {
                self.inner.relay(agent, deployment, &command).await?;
                Ok(None)
            }
            Some(lease) => Err(crate::lease::rollout_elsewhere(agent, lease)),
            None => Ok(Some(command)),
        }
    }

    /// Promotes: moves a running rollout of `deployment` one step on, or to the end; for
    /// a running deployment outside any rollout, makes it production at once (the
    /// previous production stays loaded, so a rollback is instant). Audited.
    pub async fn promote(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        mode: PromoteMode,
    ) -> Result<Deployment, HostError> {
        let inner = &self.inner;
        let record = inner.store.get(agent, deployment).await?;
        let command = match mode {
            PromoteMode::Step => Command::PromoteStep,
            PromoteMode::Full => Command::PromoteFully,
        };
        if self.deliver(agent, deployment, command).await?.is_none() {
            return Ok(record);
        }
        inner.finishing_rollout_done(agent).await;
        inner.no_rollout_running(agent)?;
        if record.is_deleted() {
            return Err(HostError::Deleted {
                deployment: deployment.clone(),
            });
        }
        if record.state != LifecycleState::Running {
            return Err(HostError::NotPromotable {
                deployment: deployment.clone(),
                state: record.state,
            });
        }
        if record.is_production {
            return Ok(record);
        }
        inner.load_deployment(&record).await?;
        inner.ensure_registered(agent, deployment)?;
        let promotion = inner
            .store
            .promote(agent, deployment, "promoted by an operator")
            .await?;
        inner.timed("promote", agent, || inner.router.promote(agent, deployment))?;
        inner.set_version_active(agent, &promotion.promoted, true);
        if let Some(previous) = &promotion.previous {
            inner.set_version_active(agent, previous, false);
            inner.previous.insert(agent.clone(), previous.id.clone());
        }
        // The production just replaced stays live for an instant rollback; earlier ones
        // that were kept live the same way are retired now, so they do not pile up.
        let keep = promotion.previous.as_ref().map(|p| p.id.clone());
        for old in inner.all_deployments(agent, true).await? {
            if old.state == LifecycleState::Running
                && !old.is_production
                && old.promoted_at.is_some()
                && Some(&old.id) != keep.as_ref()
            {
                let reason = format!("replaced by `{deployment}`; one previous version stays live");
                inner
                    .store
                    .transition(agent, &old.id, LifecycleEvent::Drain, &reason)
                    .await?;
                inner
                    .store
                    .transition(agent, &old.id, LifecycleEvent::Retire, &reason)
                    .await?;
                inner.retire_out_of_band(old.id);
            }
        }
        Ok(promotion.promoted)
    }

    /// Holds a running rollout where it is; gates are still checked.
    pub async fn pause(&self, agent: &AgentId, deployment: &DeploymentId) -> Result<(), HostError> {
        self.command(agent, deployment, Command::Pause).await
    }

    /// Goes on after a pause.
    pub async fn resume(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), HostError> {
        self.command(agent, deployment, Command::Resume).await
    }

    /// Stops a running rollout and sends all traffic back to the baseline.
    pub async fn abort(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        reason: &str,
    ) -> Result<(), HostError> {
        self.command(
            agent,
            deployment,
            Command::Abort {
                reason: reason.to_owned(),
            },
        )
        .await
    }

    /// Rolls `deployment` back.
    ///
    /// - The candidate of a running rollout: the rollout is aborted and traffic returns to
    ///   its baseline.
    /// - The production: traffic goes to `to`, or to the most recent earlier production,
    ///   in one router swap. When that version is still live this is instant; when it was
    ///   retired, its known-good version is reloaded from its artifacts through the
    ///   compiled-module cache, warmed up and recorded as a new deployment (restored from
    ///   the old one), then routed. The rolled-back version's pinned sessions move at once;
    ///   its messages in flight finish before it is unloaded. Audited on both deployments.
    pub async fn rollback(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        to: Option<&DeploymentId>,
    ) -> Result<RollbackOutcome, HostError> {
        let inner = &self.inner;
        let started = Instant::now();
        let current = inner.store.get(agent, deployment).await?;
        if let Some(slot) = self.rollout_of(agent, deployment) {
            if to.is_some() {
                return Err(HostError::InvalidRequest {
                    field: "to",
                    message: "the candidate of a running rollout goes back to its baseline; \
                              abort it without `to`"
                        .to_owned(),
                });
            }
            let _ = slot.commands.send(Command::Abort {
                reason: "rollback requested by an operator".to_owned(),
            });
            let _ = slot.done.clone().await;
            let took = started.elapsed();
            let rolled_back = inner.store.get(agent, deployment).await?;
            let restored = inner.store.production(agent).await?.ok_or_else(|| {
                HostError::NoRollbackTarget {
                    agent: agent.clone(),
                }
            })?;
            return Ok(RollbackOutcome {
                rolled_back,
                restored,
                reloaded_from_artifact: false,
                took,
            });
        }
        inner.finishing_rollout_done(agent).await;
        inner.no_rollout_running(agent)?;
        inner.no_rollout_elsewhere(agent).await?;
        if !current.is_production {
            return Err(HostError::NotRollbackable {
                agent: agent.clone(),
                deployment: deployment.clone(),
            });
        }
        let target = match to {
            Some(to) => {
                if to == deployment {
                    return Err(HostError::InvalidRequest {
                        field: "to",
                        message: format!("`{to}` is the deployment being rolled back"),
                    });
                }
                let target = inner.store.get(agent, to).await?;
                if target.is_deleted() {
                    return Err(HostError::Deleted {
                        deployment: to.clone(),
                    });
                }
                target
            }
            None => self.previous_known_good(agent, &current).await?,
        };
        let (target, reloaded) = if target.state == LifecycleState::Running {
            inner.load_deployment(&target).await?;
            inner.ensure_registered(agent, &target.id)?;
            (target, false)
        } else if target.promoted_at.is_some()
            && matches!(
                target.state,
                LifecycleState::Retired | LifecycleState::RolledBack | LifecycleState::Draining
            )
        {
            (self.restore(agent, &target).await?, true)
        } else {
            return Err(HostError::TargetNotRestorable {
                deployment: target.id.clone(),
                state: target.state,
            });
        };
        let reason = if reloaded {
            format!(
                "rolled back to known-good version {} (restored from `{}`)",
                target.version.fingerprint().short(),
                target
                    .metadata
                    .labels
                    .get(RESTORED_FROM_KEY)
                    .map_or("?", String::as_str)
            )
        } else {
            format!(
                "rolled back to known-good version {}",
                target.version.fingerprint().short()
            )
        };
        let rollback = inner
            .store
            .rollback(agent, &RollbackTarget::To(target.id.clone()), &reason)
            .await?;
        inner.timed("rollback", agent, || {
            inner.router.promote(agent, &target.id)
        })?;
        let took = started.elapsed();
        inner.previous.remove(agent);
        inner.retire_out_of_band(deployment.clone());
        metrics::counter!("caxton_deployment_rollback_total", "reason" => "operator").increment(1);
        inner.set_version_active(agent, &rollback.rolled_back, false);
        inner.set_version_active(agent, &rollback.restored, true);
        tracing::warn!(
            agent_id = %agent,
            deployment_id = %deployment,
            restored = %rollback.restored.id,
            reloaded_from_artifact = reloaded,
            took_ms = took.as_secs_f64() * 1e3,
            "rolled back"
        );
        Ok(RollbackOutcome {
            rolled_back: rollback.rolled_back,
            restored: rollback.restored,
            reloaded_from_artifact: reloaded,
            took,
        })
    }

    /// The most recent earlier production of `agent` that is not deleted and did not end
    /// rolled back: the version to return to.
    async fn previous_known_good(
        &self,
        agent: &AgentId,
        current: &Deployment,
    ) -> Result<Deployment, HostError> {
        let hint = self.inner.previous.get(agent).map(|id| id.clone());
        if let Some(hint) = hint
            && hint != current.id
            && let Ok(previous) = self.inner.store.get(agent, &hint).await
            && previous.state == LifecycleState::Running
            && !previous.is_deleted()
            && previous.promoted_at.is_some()
        {
            return Ok(previous);
        }
        let mut candidates: Vec<Deployment> = self
            .inner
            .all_deployments(agent, false)
            .await?
            .into_iter()
            .filter(|d| {
                d.id != current.id
                    && d.promoted_at.is_some()
                    && matches!(
                        d.state,
                        LifecycleState::Running
                            | LifecycleState::Draining
                            | LifecycleState::Retired
                    )
            })
            .collect();
        candidates.sort_by_key(|d| std::cmp::Reverse((d.promoted_at, d.created_at)));
        candidates
            .into_iter()
            .next()
            .ok_or_else(|| HostError::NoRollbackTarget {
                agent: agent.clone(),
            })
    }

    /// Brings a retired known-good version back as a new running deployment: the same
    /// version, load spec and labels, reloaded from its artifacts and warmed up.
    async fn restore(&self, agent: &AgentId, from: &Deployment) -> Result<Deployment, HostError> {
        let inner = &self.inner;
        let spec_digest =
            from.metadata
                .labels
                .get(SPEC_KEY)
                .cloned()
                .ok_or_else(|| HostError::Unloadable {
                    deployment: from.id.clone(),
                    message: format!("it has no `{SPEC_KEY}` label"),
                })?;
        // Fails early, before anything is recorded, when an artifact is gone.
        let spec = StoredSpec::of(from, &*inner.artifacts).await?;
        if !inner.artifacts.contains(&spec.module).await? {
            return Err(HostError::Unloadable {
                deployment: from.id.clone(),
                message: format!("module artifact {} is missing", spec.module),
            });
        }
        let label = label_of(from).to_owned();
        let mut new = NewDeployment::builder(agent.clone(), from.version.clone())
            .id(inner.new_id(agent, &label, &from.version).await)
            .strategy("rollback")
            .label(LABEL_KEY, label)
            .label(SPEC_KEY, spec_digest)
            .label(RESTORED_FROM_KEY, from.id.to_string());
        for (key, value) in from
            .metadata
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with("caxton."))
        {
            new = new.label(key.clone(), value.clone());
        }
        if let Some(commit) = &from.metadata.commit {
            new = new.commit(commit.clone());
        }
        if let Some(author) = &from.metadata.author {
            new = new.author(author.clone());
        }
        let created = inner.store.create(new.build()).await?;
        let id = created.id.clone();
        inner
            .store
            .transition(
                agent,
                &id,
                LifecycleEvent::BeginValidation,
                &format!("restoring known-good version of `{}`", from.id),
            )
            .await?;
        inner
            .store
            .transition(
                agent,
                &id,
                LifecycleEvent::ValidationPassed,
                &format!(
                    "validated when `{}` was deployed; module {} verified by digest",
                    from.id, spec.module
                ),
            )
            .await?;
        let loaded = inner.store.get(agent, &id).await?;
        if let Err(error) = inner.load_deployment(&loaded).await {
            let _ = inner
                .store
                .transition(agent, &id, LifecycleEvent::WarmUpFailed, &error.to_string())
                .await;
            return Err(error);
        }
        let running = inner
            .store
            .transition(
                agent,
                &id,
                LifecycleEvent::WarmUpPassed,
                "reloaded from its artifacts and warmed up",
            )
            .await?;
        inner.ensure_registered(agent, &id)?;
        Ok(running)
    }

    /// Soft-deletes a deployment: hidden from listings, never promoted, previewed or
    /// restored again, purged after the retention. Refused for the production and for a
    /// running rollout's candidate. A running deployment is taken out of the router and
    /// unloaded.
    pub async fn delete(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Deployment, HostError> {
        let inner = &self.inner;
        inner.store.get(agent, deployment).await?;
        if self.rollout_of(agent, deployment).is_some() {
            return Err(HostError::RolloutInProgress {
                agent: agent.clone(),
                deployment: deployment.clone(),
            });
        }
        let deleted = inner
            .store
            .soft_delete(
                agent,
                deployment,
                inner.delete_retention,
                "deleted by an operator",
            )
            .await?;
        let route = inner.router.agent_route(agent).ok();
        let in_route = route.is_some_and(|route| route.sends_to(deployment));
        if !in_route {
            inner.retire_out_of_band(deployment.clone());
        }
        Ok(deleted)
    }

    /// The agent's deployments, newest first.
    pub async fn list(
        &self,
        agent: &AgentId,
        include_deleted: bool,
    ) -> Result<Vec<Deployment>, HostError> {
        self.inner.all_deployments(agent, include_deleted).await
    }

    /// One deployment of the agent (another agent's is "not found").
    pub async fn get(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Deployment, HostError> {
        Ok(self.inner.store.get(agent, deployment).await?)
    }

    /// The audit history of every deployment of the agent, deleted ones included, in the
    /// order it happened.
    pub async fn history(&self, agent: &AgentId) -> Result<Vec<AuditEvent>, HostError> {
        let mut history = Vec::new();
        for deployment in self.inner.all_deployments(agent, true).await? {
            history.extend(self.inner.store.history(agent, &deployment.id).await?);
        }
        history.sort_by_key(|event| (event.seq, event.at));
        Ok(history)
    }

    /// The agent's status: production, the running rollout and where it stands, and each
    /// deployment in service with its role, weight, messages in flight and pinned sessions.
    pub async fn status(&self, agent: &AgentId) -> Result<AgentStatus, HostError> {
        let inner = &self.inner;
        let deployments = inner.all_deployments(agent, false).await?;
        if deployments.is_empty() {
            return Err(HostError::UnknownAgent {
                agent: agent.clone(),
            });
        }
        let production = deployments.iter().find(|d| d.is_production).cloned();
        let route = inner.router.agent_route(agent).ok();
        let slot = inner.rollouts.get(agent).map(|s| Arc::clone(&s));
        let weight_of = |id: &DeploymentId| -> f64 {
            let Some(route) = &route else { return 0.0 };
            if let Some(split) = route.split() {
                return split.weight_of(id).percent();
            }
            if route.production() == Some(id) {
                100.0
            } else {
                0.0
            }
        };
        let mut rows = Vec::new();
        for d in deployments.iter().filter(|d| !d.state.is_terminal()) {
            let drain = inner.router.drain_status(&d.id).ok();
            let is_shadow = route
                .as_ref()
                .and_then(|r| r.shadow())
                .is_some_and(|s| s.deployment == d.id);
            let is_candidate = slot.as_ref().is_some_and(|s| s.deployment == d.id);
            let role = if d.is_production {
                Role::Production
            } else if is_shadow {
                Role::Shadow
            } else if is_candidate {
                Role::Candidate
            } else if d.state == LifecycleState::Draining
                || drain.is_some_and(|s| s.phase != caxton_core::DrainPhase::Active)
                // Out of the split but still serving the sessions pinned to it.
                || (weight_of(&d.id) == 0.0 && drain.is_some_and(|s| s.pinned_sessions > 0))
            {
                Role::Draining
            } else if d.state == LifecycleState::Running {
                Role::Preview
            } else {
                Role::Idle
            };
            let weight = if is_shadow {
                route
                    .as_ref()
                    .and_then(|r| r.shadow())
                    .map_or(0.0, |s| s.sample.percent())
            } else {
                weight_of(&d.id)
            };
            rows.push(DeploymentStatus {
                id: d.id.clone(),
                label: label_of(d).to_owned(),
                role,
                state: d.state,
                weight,
                in_flight: inner.router.in_flight(&d.id),
                pinned_sessions: drain.map_or(0, |s| s.pinned_sessions),
            });
        }
        let rollout = slot.map(|slot| {
            let progress = slot.progress();
            let now = inner.clock.now();
            let since = now.saturating_sub(Duration::from_secs(60));
            let candidate = inner
                .metrics
                .window_now(&slot.deployment, since, now)
                .requests;
            let baseline = production
                .as_ref()
                .filter(|p| p.id != slot.deployment)
                .map_or(0, |p| inner.metrics.window_now(&p.id, since, now).requests);
            let total = candidate + baseline;
            RolloutStatus {
                deployment: slot.deployment.clone(),
                strategy: slot.strategy.to_owned(),
                phase: progress.phase,
                stage: progress.stage,
                step: progress.step,
                steps: slot.steps,
                weight_set: progress.weight_set,
                weight_actual: (total > 0).then(|| candidate as f64 * 100.0 / total as f64),
                judge: progress.judge,
            }
        });
        let driven_by = match &rollout {
            Some(_) => None,
            None => inner
                .lease_elsewhere(agent)
                .await?
                .map(|lease| lease.holder),
        };
        Ok(AgentStatus {
            agent: agent.clone(),
            sessions: inner.session_mode(agent),
            production: production.map(|p| p.id),
            rollout,
            driven_by,
            deployments: rows,
        })
    }

    /// Sends one message of `agent`, in `session` when given, and returns the reply of the
    /// deployment the router chose. A shadow copy, when one is due, is queued for a worker
    /// and never delays or reaches the caller.
    pub fn send(
        &self,
        agent: &AgentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Delivery, SendError> {
        let decision = self.inner.router.route(agent, session)?;
        self.inner.deliver(agent, decision, session, message)
    }

    /// A sending handle for a thread that sends many messages (the router's per-thread
    /// fast path).
    pub fn sender(&self) -> HostSender<'_> {
        HostSender::new(&self.inner)
    }

    /// Sends one message to a named running deployment of the agent (preview routing),
    /// whatever the split. A deleted deployment or another agent's is not found.
    pub async fn preview(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Delivery, HostError> {
        let inner = &self.inner;
        let record = inner.store.get(agent, deployment).await?;
        if record.is_deleted() {
            return Err(HostError::NotFound {
                agent: agent.clone(),
                deployment: deployment.clone(),
            });
        }
        if record.state == LifecycleState::Running {
            inner.load_deployment(&record).await?;
            inner.ensure_registered(agent, deployment)?;
        }
        let decision =
            inner
                .router
                .route_preview(agent, deployment)
                .map_err(|error| match error {
                    PreviewError::NotRunning { .. } => HostError::NotPromotable {
                        deployment: deployment.clone(),
                        state: record.state,
                    },
                    _ => HostError::NotFound {
                        agent: agent.clone(),
                        deployment: deployment.clone(),
                    },
                })?;
        inner
            .deliver(agent, decision, session, message)
            .map_err(|error| match error {
                SendError::Agent(error) => HostError::Runtime(error),
                other => HostError::InvalidRequest {
                    field: "deployment",
                    message: other.to_string(),
                },
            })
    }

    /// Ends a session: releases its pin and frees its instances. Returns whether it had
    /// either.
    pub fn end_session(&self, agent: &AgentId, session: &SessionId) -> bool {
        let inner = &self.inner;
        let pinned = inner
            .router
            .release_session(agent, session)
            .unwrap_or(false);
        let mut ended = false;
        for entry in inner.loaded.iter().filter(|e| e.value() == agent) {
            ended |= inner.runtime.end_session(entry.key(), session);
        }
        pinned || ended
    }

    /// Liveness and readiness: every agent with a production has it loaded, warm and live.
    pub async fn health(&self) -> HostHealth {
        let inner = &self.inner;
        let agents: Vec<AgentId> = inner.agents.iter().map(|e| e.key().clone()).collect();
        let mut readiness = Vec::new();
        for agent in agents {
            let production = inner.store.production(&agent).await.ok().flatten();
            let ready = production.as_ref().is_none_or(|p| {
                inner
                    .runtime
                    .health(&p.id)
                    .is_some_and(|h| h.ready && h.live)
            });
            readiness.push(AgentReadiness {
                agent,
                production: production.map(|p| p.id),
                ready,
            });
        }
        readiness.sort_by(|a, b| a.agent.cmp(&b.agent));
        HostHealth {
            live: true,
            ready: readiness.iter().all(|a| a.ready),
            agents: readiness,
        }
    }

    /// Rollout events from now on.
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// The latest rollout events of `agent` the host kept, oldest first.
    pub fn recent_events(&self, agent: &AgentId) -> Vec<HostEvent> {
        self.inner
            .events
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| &e.event.agent_id == agent)
            .cloned()
            .collect()
    }

    /// This host's name as the holder of rollout leases.
    pub fn lease_holder(&self) -> &LeaseHolder {
        &self.inner.holder
    }

    /// How long a rollout's lease lasts without a renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// The running rollout of `agent`, if any: its candidate.
    pub fn running_rollout(&self, agent: &AgentId) -> Option<RolloutHandle> {
        self.inner.rollouts.get(agent).map(|slot| RolloutHandle {
            agent: agent.clone(),
            deployment: slot.deployment.clone(),
            done: slot.done.clone(),
        })
    }

    /// Purges idle session pins and instances now (the host also does it on a timer).
    pub fn maintain(&self) {
        self.inner.maintain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_never_collide_with_the_agents_own_even_for_one_label_used_thousands_of_times()
    {
        let host = Host::builder().build().unwrap();
        let inner = &host.inner;
        let agent = AgentId::new("orders").unwrap();
        let version = VersionTuple::new(
            CodeLayer::from_module(b"m"),
            ModelLayer::new("none", "none", "0"),
            PromptLayer::from_prompt("", &[]),
            ToolsLayer::from_definitions(&serde_json::json!([])),
        );
        futures::executor::block_on(async {
            // 5 hex digits alone would collide within a few thousand (birthday bound).
            for _ in 0..5_000 {
                let id = inner.new_id(&agent, "v1", &version).await;
                assert!(id.as_str().starts_with("orders-v1-"), "{id}");
                inner
                    .store
                    .create(
                        NewDeployment::builder(agent.clone(), version.clone())
                            .id(id)
                            .build(),
                    )
                    .await
                    .expect("a fresh id");
            }
        });
    }
}
