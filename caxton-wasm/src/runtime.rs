//! [`WasmRuntime`]: core's `AgentRuntime` on wasmtime, with sessions, pooling, health and
//! hot reload.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use caxton_core::{
    AgentError, AgentHealth, AgentId, AgentReply, AgentRuntime, Clock, DeploymentId, Digest,
    LoadSpec, ReplyStats, SessionId, SystemClock, Timestamp,
};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::compiled::CompiledAgent;
use crate::config::{ConfigLayers, ConfigSource};
use crate::engine::{AgentEngine, CompileError};
use crate::host::LogGate;
use crate::instance::{AgentInstance, InstanceLimits, InstanceSetup, Reply};

/// Configuration keys the runtime sets for every deployment, before the spec's own values
/// (which may override them).
pub mod config_keys {
    /// The agent's id.
    pub const AGENT: &str = "caxton.agent";
    /// The deployment's id.
    pub const DEPLOYMENT: &str = "caxton.deployment";
    /// The code layer: `sha256:<hex>` of the module.
    pub const CODE: &str = "caxton.code";
    /// The model layer: `provider/name@revision`.
    pub const MODEL: &str = "caxton.model";
    /// The prompt layer: `sha256:<hex>` of the prompt and examples.
    pub const PROMPT: &str = "caxton.prompt";
    /// The tools layer: `sha256:<hex>` of the canonical tool definitions.
    pub const TOOLS: &str = "caxton.tools";
}

/// Builds a [`WasmRuntime`].
#[derive(Debug)]
pub struct WasmRuntimeBuilder {
    engine: AgentEngine,
    limits: InstanceLimits,
    clock: Arc<dyn Clock>,
    shared_config: Option<Arc<ConfigSource>>,
    session_idle_timeout: Duration,
    max_sessions_per_deployment: usize,
    max_pooled_instances: usize,
    max_consecutive_failures: u32,
}

impl WasmRuntimeBuilder {
    /// The limits every instance runs under. Default: [`InstanceLimits::default`].
    pub fn limits(mut self, limits: InstanceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The clock agents read through `caxton.now_ms`, also used for session idleness.
    /// Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Host-wide settings and secrets. A deployment reads, after its own values, only the
    /// keys its [`LoadSpec::granted_secrets`] names; every other key reads as absent (`-1`)
    /// to it. Values may change while agents run.
    pub fn shared_config(mut self, shared: Arc<ConfigSource>) -> Self {
        self.shared_config = Some(shared);
        self
    }

    /// Sessions idle this long lose their instance. Default: 30 minutes.
    pub fn session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.session_idle_timeout = timeout;
        self
    }

    /// The most sessions (each with its own instance) one deployment keeps, at least 1. A
    /// new session over the bound takes the place of the least recently used idle one,
    /// whose state is lost; a new session finding every one busy is refused with
    /// [`AgentError::TooManySessions`]. Default 1024.
    pub fn max_sessions_per_deployment(mut self, count: usize) -> Self {
        self.max_sessions_per_deployment = count.max(1);
        self
    }

    /// How many idle session-less instances each deployment keeps for reuse. Default 4.
    pub fn max_pooled_instances(mut self, count: usize) -> Self {
        self.max_pooled_instances = count;
        self
    }

    /// After this many consecutive failures of a deployment that were the agent's fault
    /// (traps and limits, see [`AgentError::is_agent_fault`]) with no success in between,
    /// its health reports it not live; a success makes it live again. `0` never reports
    /// a deployment down for its failures. Default 5.
    pub fn max_consecutive_failures(mut self, count: u32) -> Self {
        self.max_consecutive_failures = count;
        self
    }

    /// The runtime.
    pub fn build(self) -> WasmRuntime {
        WasmRuntime {
            inner: Arc::new(RuntimeInner {
                engine: self.engine,
                limits: self.limits,
                clock: self.clock,
                shared_config: self.shared_config,
                session_idle_timeout: self.session_idle_timeout,
                max_sessions_per_deployment: self.max_sessions_per_deployment,
                max_pooled_instances: self.max_pooled_instances,
                max_consecutive_failures: self.max_consecutive_failures,
                deployments: DashMap::default(),
            }),
        }
    }
}

/// Counters of one loaded deployment, beyond [`AgentHealth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStats {
    /// The health, as [`AgentRuntime::health`] reports it.
    pub health: AgentHealth,
    /// The module's digest.
    pub digest: Digest,
    /// Instances started, warm-up included.
    pub instances_started: u64,
    /// Sessions whose instance failed and was discarded, losing the session's state.
    pub sessions_reset: u64,
    /// Sessions the deployment keeps: with an instance, or waiting for a fresh one after
    /// a failure.
    pub sessions_open: usize,
    /// Idle sessions dropped, least recently used first, to make room for new ones under
    /// [`max_sessions_per_deployment`](WasmRuntimeBuilder::max_sessions_per_deployment).
    pub sessions_evicted: u64,
    /// Sessions dropped because they were idle past the timeout.
    pub sessions_expired: u64,
    /// Idle session-less instances waiting for reuse.
    pub pooled_instances: usize,
    /// Messages being handled right now.
    pub in_flight: usize,
}

/// The wasmtime implementation of [`AgentRuntime`].
///
/// - Each session gets its own instance, so state the agent keeps in linear memory lasts
///   across the session's messages; messages of one session run one at a time. A message
///   without a session takes an idle pooled instance or a fresh one.
/// - Sessions are bounded per deployment: a new session over the bound takes the place of
///   the least recently used idle one, so one deployment cannot take every instance of the
///   engine from the others. Sessions idle past the timeout are dropped as new sessions
///   start and on [`evict_idle_sessions`](AgentRuntime::evict_idle_sessions). A session
///   whose instance could not start is not kept.
/// - A failed instance (trap, limit, bad reply) is discarded. When it served a session, the
///   session's next message starts a fresh instance: the session goes on, its earlier state
///   is lost, a warning is logged and [`DeploymentStats::sessions_reset`] counts it.
/// - A deployment whose last [`max_consecutive_failures`](WasmRuntimeBuilder::max_consecutive_failures)
///   messages (or warm-ups) all failed by the agent's fault is reported not live by
///   [`health`](AgentRuntime::health) until one succeeds.
/// - Loading compiles outside any lock, so versions already loaded keep serving; versions
///   serve side by side. [`unload`](AgentRuntime::unload) refuses new messages at once and
///   returns when the messages in flight have finished.
///
/// The configuration of a deployment holds the [`config_keys`] the runtime derives from its
/// version, then the spec's values; [`config`](WasmRuntime::config) changes it live.
#[derive(Debug, Clone)]
pub struct WasmRuntime {
    inner: Arc<RuntimeInner>,
}

#[derive(Debug)]
struct RuntimeInner {
    engine: AgentEngine,
    limits: InstanceLimits,
    clock: Arc<dyn Clock>,
    shared_config: Option<Arc<ConfigSource>>,
    session_idle_timeout: Duration,
    max_sessions_per_deployment: usize,
    max_pooled_instances: usize,
    max_consecutive_failures: u32,
    /// Looked up on every message: a fast hasher, randomly seeded per process.
    deployments: DashMap<DeploymentId, Arc<Loaded>, foldhash::fast::RandomState>,
}

type Slot = Arc<Mutex<SessionSlot>>;

struct SessionSlot {
    instance: Option<AgentInstance>,
    /// For the idle timeout, on the runtime's clock.
    last_used: Timestamp,
    /// For least-recently-used eviction: a per-deployment sequence, exact where clock
    /// readings tie.
    recency: u64,
    /// The session's instance failed; its next message starts afresh.
    reset: bool,
    /// Taken out of the session map (ended, evicted, or its instance could not start): a
    /// message that looked it up before then must look again.
    closed: bool,
}

impl SessionSlot {
    /// Marks the slot out of the map and hands back its instance, to drop outside locks.
    fn close(&mut self) -> Option<AgentInstance> {
        self.closed = true;
        self.instance.take()
    }
}

/// The slot when no message holds it. A poisoned slot is idle too: the panic that
/// poisoned it is over.
fn try_lock_idle(slot: &Mutex<SessionSlot>) -> Option<MutexGuard<'_, SessionSlot>> {
    match slot.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

struct Loaded {
    agent: AgentId,
    compiled: Arc<CompiledAgent>,
    config: Arc<ConfigSource>,
    setup: InstanceSetup,
    ready: AtomicBool,
    unloading: AtomicBool,
    in_flight: AtomicUsize,
    drained_lock: Mutex<()>,
    drained: Condvar,
    sessions: DashMap<SessionId, Slot>,
    /// Held while a new session is added, so the bound on sessions holds exactly.
    admission: Mutex<()>,
    /// The source of [`SessionSlot::recency`].
    uses: AtomicU64,
    pool: Mutex<Vec<AgentInstance>>,
    messages: AtomicU64,
    traps: AtomicU64,
    /// Agent-fault failures since the last success.
    consecutive_failures: AtomicU64,
    /// The run of [`consecutive_failures`](Loaded::consecutive_failures) that makes the
    /// deployment not live; 0 for never.
    max_consecutive_failures: u32,
    instances_started: AtomicU64,
    sessions_reset: AtomicU64,
    sessions_evicted: AtomicU64,
    sessions_expired: AtomicU64,
    last_sweep: Mutex<Timestamp>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("agent", &self.agent)
            .field("deployment", self.setup.deployment())
            .field("digest", &self.compiled.digest())
            .field("ready", &self.ready)
            .field("unloading", &self.unloading)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks a message in flight until dropped.
struct InFlight<'a>(&'a Loaded);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let loaded = self.0;
        if loaded.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && loaded.unloading.load(Ordering::SeqCst)
        {
            let _guard = lock(&loaded.drained_lock);
            loaded.drained.notify_all();
        }
    }
}

impl Loaded {
    fn deployment(&self) -> &DeploymentId {
        self.setup.deployment()
    }

    fn enter(&self) -> Result<InFlight<'_>, AgentError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        // Checked after counting ourselves in: `unload` sets the flag, then waits for the
        // count to reach zero, so it either sees us or we see the flag.
        if self.unloading.load(Ordering::SeqCst) {
            return Err(AgentError::Unloading {
                deployment: self.deployment().clone(),
            });
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(AgentError::NotReady {
                deployment: self.deployment().clone(),
            });
        }
        Ok(guard)
    }

    fn instantiate(&self, session: Option<&SessionId>) -> Result<AgentInstance, AgentError> {
        self.instances_started.fetch_add(1, Ordering::Relaxed);
        let setup = match session {
            None => self.setup.clone(),
            Some(session) => self.setup.clone().session(Some(session.clone())),
        };
        self.compiled.instantiate(&setup)
    }

    fn record(&self, result: &Result<Reply, AgentError>) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => self.record_success(),
            Err(err) => {
                if err.is_agent_fault() || matches!(err, AgentError::AbiViolation { .. }) {
                    self.traps.fetch_add(1, Ordering::Relaxed);
                }
                self.record_failure(err);
            }
        }
    }

    fn record_success(&self) {
        // Read first: the common case writes nothing to this shared line.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    fn record_failure(&self, err: &AgentError) {
        // Refusals by the host say nothing about the agent: they neither count nor reset.
        if err.is_agent_fault() {
            let run = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let limit = u64::from(self.max_consecutive_failures);
            if limit > 0 && run == limit {
                tracing::warn!(
                    target: "caxton::wasm",
                    agent = %self.agent,
                    deployment = %self.deployment(),
                    failures = run,
                    error = %err,
                    "deployment failed this many times in a row and is reported not live"
                );
            }
        }
        *lock(&self.last_error) = Some(err.to_string());
    }

    fn failing(&self) -> bool {
        let limit = u64::from(self.max_consecutive_failures);
        limit > 0 && self.consecutive_failures.load(Ordering::Relaxed) >= limit
    }

    fn handle_pooled(&self, message: &[u8], max_pooled: usize) -> Result<Reply, AgentError> {
        let pooled = lock(&self.pool).pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate(None)?,
        };
        let result = instance.handle(message);
        if !instance.is_failed() {
            let mut pool = lock(&self.pool);
            if pool.len() < max_pooled {
                pool.push(instance);
            }
        }
        result
    }

    fn handle_in_session(
        &self,
        session: &SessionId,
        message: &[u8],
        runtime: &RuntimeInner,
    ) -> Result<Reply, AgentError> {
        let now = runtime.clock.now();
        loop {
            let slot = self.session_slot(session, now, runtime)?;
            let mut guard = lock(&slot);
            // Ended or evicted between the lookup and the lock: look again.
            if !guard.closed {
                return self.handle_in_slot(session, message, now, &slot, &mut guard);
            }
        }
    }

    fn handle_in_slot(
        &self,
        session: &SessionId,
        message: &[u8],
        now: Timestamp,
        slot: &Slot,
        guard: &mut SessionSlot,
    ) -> Result<Reply, AgentError> {
        guard.last_used = now;
        guard.recency = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut instance = match guard.instance.take() {
            Some(instance) => instance,
            None => match self.instantiate(Some(session)) {
                Ok(instance) => {
                    if std::mem::take(&mut guard.reset) {
                        tracing::info!(
                            target: "caxton::wasm",
                            agent = %self.agent,
                            deployment = %self.deployment(),
                            session = %session,
                            "session continues on a fresh instance; its earlier state is lost"
                        );
                    }
                    instance
                }
                Err(err) => {
                    // Nothing is left to keep: a slot without an instance would only hold
                    // a place under the bound.
                    guard.closed = true;
                    self.sessions
                        .remove_if(session, |_, current| Arc::ptr_eq(current, slot));
                    return Err(err);
                }
            },
        };
        let result = instance.handle(message);
        match instance.failure() {
            None => guard.instance = Some(instance),
            Some(failure) => {
                guard.reset = true;
                self.sessions_reset.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "caxton::wasm",
                    agent = %self.agent,
                    deployment = %self.deployment(),
                    session = %session,
                    error = %failure,
                    "session instance failed and was discarded; the session's state is lost"
                );
            }
        }
        result
    }

    /// The slot of `session`, added when new; room is made under the bound first.
    fn session_slot(
        &self,
        session: &SessionId,
        now: Timestamp,
        runtime: &RuntimeInner,
    ) -> Result<Slot, AgentError> {
        if let Some(slot) = self.sessions.get(session) {
            return Ok(slot.value().clone());
        }
        let _admission = lock(&self.admission);
        // Another message of the same session may have added it meanwhile.
        if let Some(slot) = self.sessions.get(session) {
            return Ok(slot.value().clone());
        }
        self.sweep_if_due(now, runtime.session_idle_timeout);
        let limit = runtime.max_sessions_per_deployment;
        while self.sessions.len() >= limit {
            if !self.evict_least_recently_used() {
                return Err(AgentError::TooManySessions {
                    deployment: self.deployment().clone(),
                    limit,
                });
            }
        }
        let slot = Arc::new(Mutex::new(SessionSlot {
            instance: None,
            last_used: now,
            // As recent as any: not the first to go before its first message runs.
            recency: self.uses.fetch_add(1, Ordering::Relaxed),
            reset: false,
            closed: false,
        }));
        self.sessions.insert(session.clone(), slot.clone());
        Ok(slot)
    }

    /// Drops the least recently used idle session; false when every session is busy.
    fn evict_least_recently_used(&self) -> bool {
        loop {
            let oldest = self
                .sessions
                .iter()
                .filter_map(|entry| {
                    let recency = try_lock_idle(entry.value())?.recency;
                    Some((recency, entry.key().clone(), entry.value().clone()))
                })
                .min_by_key(|(recency, ..)| *recency);
            let Some((_, session, slot)) = oldest else {
                return false;
            };
            // It may have turned busy or been ended since the scan: then look again.
            let Some(mut guard) = try_lock_idle(&slot) else {
                continue;
            };
            if guard.closed {
                continue;
            }
            let instance = guard.close();
            self.sessions
                .remove_if(&session, |_, current| Arc::ptr_eq(current, &slot));
            drop(guard);
            drop(instance);
            self.sessions_evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "caxton::wasm",
                agent = %self.agent,
                deployment = %self.deployment(),
                session = %session,
                "least recently used session evicted to make room for a new one; its state is lost"
            );
            return true;
        }
    }

    fn sweep_if_due(&self, now: Timestamp, timeout: Duration) {
        {
            let mut last = lock(&self.last_sweep);
            if now.saturating_since(*last) < timeout / 4 {
                return;
            }
            *last = now;
        }
        self.evict_idle(now, timeout);
    }

    /// Drops sessions idle for `timeout`; returns how many.
    fn evict_idle(&self, now: Timestamp, timeout: Duration) -> usize {
        let mut dropped = Vec::new();
        self.sessions.retain(|session, slot| {
            // A session busy with a message is not idle.
            let Some(mut slot) = try_lock_idle(slot) else {
                return true;
            };
            if now.saturating_since(slot.last_used) < timeout {
                return true;
            }
            tracing::debug!(
                target: "caxton::wasm",
                agent = %self.agent,
                deployment = %self.deployment(),
                session = %session,
                "idle session expired; its state is lost"
            );
            dropped.push(slot.close());
            false
        });
        // Instances are dropped here, with no lock of the session map held.
        let expired = dropped.len();
        drop(dropped);
        self.sessions_expired
            .fetch_add(expired as u64, Ordering::Relaxed);
        expired
    }

    fn live_sessions(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|entry| match try_lock_idle(entry.value()) {
                Some(slot) => slot.instance.is_some(),
                // Busy with a message, so it has (or is starting) an instance.
                None => true,
            })
            .count() as u64
    }

    fn health(&self) -> AgentHealth {
        AgentHealth {
            ready: self.ready.load(Ordering::Acquire),
            live: !self.unloading.load(Ordering::SeqCst) && !self.failing(),
            messages: self.messages.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            sessions: self.live_sessions(),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

impl WasmRuntime {
    /// A runtime on `engine` with default settings.
    pub fn new(engine: AgentEngine) -> WasmRuntime {
        WasmRuntime::builder(engine).build()
    }

    /// A builder for a runtime on `engine`.
    pub fn builder(engine: AgentEngine) -> WasmRuntimeBuilder {
        WasmRuntimeBuilder {
            engine,
            limits: InstanceLimits::default(),
            clock: Arc::new(SystemClock),
            shared_config: None,
            session_idle_timeout: Duration::from_secs(30 * 60),
            max_sessions_per_deployment: 1024,
            max_pooled_instances: 4,
            max_consecutive_failures: 5,
        }
    }

    /// The engine the runtime compiles and runs agents with.
    pub fn engine(&self) -> &AgentEngine {
        &self.inner.engine
    }

    fn get(&self, deployment: &DeploymentId) -> Result<Arc<Loaded>, AgentError> {
        self.inner
            .deployments
            .get(deployment)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| AgentError::NotLoaded {
                deployment: deployment.clone(),
            })
    }

    /// The live configuration of a loaded deployment: a change is seen by its next
    /// `caxton.config` call.
    pub fn config(&self, deployment: &DeploymentId) -> Option<Arc<ConfigSource>> {
        self.get(deployment)
            .ok()
            .map(|loaded| loaded.config.clone())
    }

    /// Counters of a loaded deployment.
    pub fn stats(&self, deployment: &DeploymentId) -> Option<DeploymentStats> {
        let loaded = self.get(deployment).ok()?;
        Some(DeploymentStats {
            health: loaded.health(),
            digest: loaded.compiled.digest(),
            instances_started: loaded.instances_started.load(Ordering::Relaxed),
            sessions_reset: loaded.sessions_reset.load(Ordering::Relaxed),
            sessions_open: loaded.sessions.len(),
            sessions_evicted: loaded.sessions_evicted.load(Ordering::Relaxed),
            sessions_expired: loaded.sessions_expired.load(Ordering::Relaxed),
            pooled_instances: lock(&loaded.pool).len(),
            in_flight: loaded.in_flight.load(Ordering::SeqCst),
        })
    }

    fn version_config(spec: &LoadSpec) -> BTreeMap<String, String> {
        let version = &spec.version;
        let mut values = BTreeMap::from([
            (config_keys::AGENT.to_owned(), spec.agent.to_string()),
            (
                config_keys::DEPLOYMENT.to_owned(),
                spec.deployment.to_string(),
            ),
            (
                config_keys::CODE.to_owned(),
                version.code.digest.to_string(),
            ),
            (config_keys::MODEL.to_owned(), version.model.reference()),
            (
                config_keys::PROMPT.to_owned(),
                version.prompt.digest.to_string(),
            ),
            (
                config_keys::TOOLS.to_owned(),
                version.tools.digest.to_string(),
            ),
        ]);
        values.extend(spec.config.clone());
        values
    }
}

impl WasmRuntime {
    /// Loads a deployment like [`AgentRuntime::load`], with its own instance limits instead
    /// of the runtime's.
    pub fn load_with_limits(
        &self,
        spec: LoadSpec,
        limits: InstanceLimits,
    ) -> Result<(), AgentError> {
        let deployment = spec.deployment.clone();
        let actual = Digest::of(&spec.module);
        if actual != spec.version.code.digest {
            return Err(AgentError::DigestMismatch {
                deployment,
                expected: spec.version.code.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.inner.deployments.contains_key(&deployment) {
            return Err(AgentError::AlreadyLoaded { deployment });
        }
        // Compiled with no lock held: other deployments keep serving meanwhile.
        let compiled = self
            .inner
            .engine
            .compile(&spec.module)
            .map_err(|err| match err {
                CompileError::Invalid { message, .. } => AgentError::Compile {
                    deployment: deployment.clone(),
                    message,
                },
                // The whole text: it says which feature and why agents may not use it.
                err @ CompileError::UnsupportedFeature { .. } => AgentError::Compile {
                    deployment: deployment.clone(),
                    message: err.to_string(),
                },
                other => AgentError::AbiViolation {
                    deployment: deployment.clone(),
                    message: other.to_string(),
                },
            })?;
        let config = Arc::new(ConfigSource::from_map(Self::version_config(&spec)));
        let mut layers = ConfigLayers::new(config.clone());
        if let Some(shared) = &self.inner.shared_config {
            layers = layers.with_shared(shared.clone(), spec.granted_secrets.iter().cloned());
        }
        // One log rate limit for the deployment, shared by every instance it starts.
        let log_gate = LogGate::shared(limits.log_lines_per_second(), limits.log_burst());
        let setup = InstanceSetup::new(spec.agent.clone(), deployment.clone())
            .log_gate(log_gate)
            .limits(limits)
            .config(layers)
            .clock(self.inner.clock.clone());
        let loaded = Arc::new(Loaded {
            agent: spec.agent.clone(),
            compiled,
            config,
            setup,
            ready: AtomicBool::new(false),
            unloading: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            drained_lock: Mutex::new(()),
            drained: Condvar::new(),
            sessions: DashMap::new(),
            admission: Mutex::new(()),
            uses: AtomicU64::new(0),
            pool: Mutex::new(Vec::new()),
            messages: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            max_consecutive_failures: self.inner.max_consecutive_failures,
            instances_started: AtomicU64::new(0),
            sessions_reset: AtomicU64::new(0),
            sessions_evicted: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            last_sweep: Mutex::new(self.inner.clock.now()),
            last_error: Mutex::new(None),
        });
        match self.inner.deployments.entry(deployment.clone()) {
            Entry::Occupied(_) => return Err(AgentError::AlreadyLoaded { deployment }),
            Entry::Vacant(entry) => {
                entry.insert(loaded);
            }
        }
        tracing::info!(
            target: "caxton::wasm",
            agent = %spec.agent,
            deployment = %deployment,
            digest = %actual,
            "deployment loaded"
        );
        Ok(())
    }
}

impl AgentRuntime for WasmRuntime {
    fn load(&self, spec: LoadSpec) -> Result<(), AgentError> {
        self.load_with_limits(spec, self.inner.limits.clone())
    }

    fn warm_up(&self, deployment: &DeploymentId) -> Result<(), AgentError> {
        let loaded = self.get(deployment)?;
        if loaded.unloading.load(Ordering::SeqCst) {
            return Err(AgentError::Unloading {
                deployment: deployment.clone(),
            });
        }
        match loaded.instantiate(None) {
            Ok(instance) => {
                let mut pool = lock(&loaded.pool);
                if pool.len() < self.inner.max_pooled_instances {
                    pool.push(instance);
                }
                loaded.ready.store(true, Ordering::Release);
                loaded.record_success();
                Ok(())
            }
            Err(err) => {
                loaded.traps.fetch_add(1, Ordering::Relaxed);
                loaded.record_failure(&err);
                Err(err)
            }
        }
    }

    fn handle(
        &self,
        deployment: &DeploymentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<AgentReply, AgentError> {
        let started = Instant::now();
        let loaded = self.get(deployment)?;
        let _in_flight = loaded.enter()?;
        let result = match session {
            Some(session) => loaded.handle_in_session(session, message, &self.inner),
            None => loaded.handle_pooled(message, self.inner.max_pooled_instances),
        };
        loaded.record(&result);
        let reply = result?;
        Ok(AgentReply {
            bytes: reply.bytes,
            stats: ReplyStats {
                latency: started.elapsed(),
                fuel_consumed: reply.stats.fuel_consumed,
                memory_bytes: reply.stats.memory_bytes,
            },
        })
    }

    fn end_session(&self, deployment: &DeploymentId, session: &SessionId) -> bool {
        let Ok(loaded) = self.get(deployment) else {
            return false;
        };
        match loaded.sessions.remove(session) {
            Some((_, slot)) => {
                // Waits for a message of the session still running, then frees the instance.
                let instance = lock(&slot).close();
                drop(instance);
                true
            }
            None => false,
        }
    }

    fn health(&self, deployment: &DeploymentId) -> Option<AgentHealth> {
        self.get(deployment).ok().map(|loaded| loaded.health())
    }

    fn loaded(&self) -> Vec<DeploymentId> {
        self.inner
            .deployments
            .iter()
            .map(|entry| entry.key().clone())
            .collect()
    }

    fn unload(&self, deployment: &DeploymentId) -> Result<(), AgentError> {
        let loaded = self.get(deployment)?;
        if loaded.unloading.swap(true, Ordering::SeqCst) {
            return Err(AgentError::Unloading {
                deployment: deployment.clone(),
            });
        }
        {
            let mut guard = lock(&loaded.drained_lock);
            while loaded.in_flight.load(Ordering::SeqCst) > 0 {
                // The timeout only guards against a wake-up lost to a race; the count decides.
                guard = match loaded
                    .drained
                    .wait_timeout(guard, Duration::from_millis(10))
                {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
        self.inner
            .deployments
            .remove_if(deployment, |_, current| Arc::ptr_eq(current, &loaded));
        loaded.sessions.clear();
        lock(&loaded.pool).clear();
        tracing::info!(
            target: "caxton::wasm",
            agent = %loaded.agent,
            deployment = %deployment,
            "deployment unloaded"
        );
        Ok(())
    }

    /// Drops the instances of sessions idle for the configured timeout (sessions busy with
    /// a message are never idle); returns how many. Also done now and then as new sessions
    /// start.
    fn evict_idle_sessions(&self) -> usize {
        let timeout = self.inner.session_idle_timeout;
        let now = self.inner.clock.now();
        let loaded: Vec<Arc<Loaded>> = self
            .inner
            .deployments
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        loaded
            .iter()
            .map(|loaded| loaded.evict_idle(now, timeout))
            .sum()
    }
}
