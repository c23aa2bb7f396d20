//! Instances: one running copy of a compiled agent, its limits and its measurements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{AgentError, AgentId, Clock, DeploymentId, SessionId, SystemClock};
use wasmtime::{Extern, Memory, Store, Trap, TypedFunc};

use crate::abi::{self, guest_range, unpack_reply};
use crate::compiled::CompiledAgent;
use crate::config::ConfigLayers;
use crate::host::{self, HostState, Identity, LogGate, ResourceGuard, SharedLogGate};

/// The limits one instance runs under. Build with [`InstanceLimits::builder`].
///
/// ```
/// use std::time::Duration;
/// use caxton_wasm::InstanceLimits;
///
/// let limits = InstanceLimits::builder()
///     .memory_bytes(4 << 20)
///     .deadline(Some(Duration::from_millis(50)))
///     .build();
/// assert_eq!(limits.memory_bytes(), 4 << 20);
/// assert_eq!(limits.fuel_per_message(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLimits {
    memory_bytes: u64,
    fuel_per_message: Option<u64>,
    deadline: Option<Duration>,
    table_elements: u32,
    max_message_bytes: usize,
    log_line_bytes: usize,
    log_lines_per_second: u32,
    log_burst: u32,
}

impl Default for InstanceLimits {
    fn default() -> Self {
        InstanceLimits {
            memory_bytes: 64 << 20,
            fuel_per_message: None,
            deadline: Some(Duration::from_secs(1)),
            table_elements: 10_000,
            max_message_bytes: 16 << 20,
            log_line_bytes: 4 << 10,
            log_lines_per_second: 100,
            log_burst: 200,
        }
    }
}

impl InstanceLimits {
    /// A builder starting from the defaults: 64 MiB of memory, no fuel budget, a 1 s deadline
    /// per message, 10 000 table elements, 16 MiB messages, log lines of at most 4 KiB at
    /// 100 per second (bursts of 200).
    pub fn builder() -> InstanceLimitsBuilder {
        InstanceLimitsBuilder(InstanceLimits::default())
    }

    /// The most linear memory the instance may have, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The fuel each message (and the initialisation) may burn; `None` for no budget.
    pub fn fuel_per_message(&self) -> Option<u64> {
        self.fuel_per_message
    }

    /// The wall-clock time each message (and the initialisation) may take; `None` for none.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The most elements a table may grow to.
    pub fn table_elements(&self) -> u32 {
        self.table_elements
    }

    /// The largest message accepted, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The longest log line forwarded, in bytes; longer lines are cut.
    pub fn log_line_bytes(&self) -> usize {
        self.log_line_bytes
    }

    /// Log lines forwarded per second, on average.
    pub fn log_lines_per_second(&self) -> u32 {
        self.log_lines_per_second
    }

    /// Log lines forwarded in a burst.
    pub fn log_burst(&self) -> u32 {
        self.log_burst
    }
}

/// Builds [`InstanceLimits`].
#[derive(Debug, Clone)]
pub struct InstanceLimitsBuilder(InstanceLimits);

impl InstanceLimitsBuilder {
    /// The most linear memory the instance may have. The pool's per-memory maximum
    /// ([`PoolingConfig::max_memory_bytes`](crate::PoolingConfig)) applies too.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.0.memory_bytes = bytes;
        self
    }

    /// The fuel each message may burn. Needs an engine with fuel metering.
    pub fn fuel_per_message(mut self, fuel: Option<u64>) -> Self {
        self.0.fuel_per_message = fuel;
        self
    }

    /// The wall-clock time each message may take, enforced to within about one epoch tick.
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.0.deadline = deadline;
        self
    }

    /// The most elements a table may grow to.
    pub fn table_elements(mut self, elements: u32) -> Self {
        self.0.table_elements = elements;
        self
    }

    /// The largest message accepted, in bytes (at most `i32::MAX`).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.0.max_message_bytes = bytes.min(i32::MAX as usize);
        self
    }

    /// The longest log line forwarded, in bytes.
    pub fn log_line_bytes(mut self, bytes: usize) -> Self {
        self.0.log_line_bytes = bytes;
        self
    }

    /// How many log lines are forwarded per second on average, and in a burst. Under
    /// [`WasmRuntime`](crate::WasmRuntime) the rate is the deployment's, shared by all its
    /// instances; an instance started on its own has a rate of its own.
    pub fn log_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.0.log_lines_per_second = per_second;
        self.0.log_burst = burst;
        self
    }

    /// The limits.
    pub fn build(self) -> InstanceLimits {
        self.0
    }
}

/// Everything an instance is started with besides its code: who it runs for, its limits,
/// its configuration and its clock.
///
/// ```
/// use std::sync::Arc;
/// use caxton_core::{AgentId, DeploymentId, ManualClock, Timestamp};
/// use caxton_wasm::{ConfigLayers, ConfigSource, InstanceLimits, InstanceSetup};
///
/// let setup = InstanceSetup::new(AgentId::new("processor")?, DeploymentId::new("proc-v1")?)
///     .limits(InstanceLimits::builder().memory_bytes(1 << 20).build())
///     .config(ConfigLayers::new(Arc::new(ConfigSource::from_iter([("model", "m")]))))
///     .clock(Arc::new(ManualClock::new(Timestamp::from_millis(42))));
/// assert_eq!(setup.deployment().as_str(), "proc-v1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct InstanceSetup {
    agent: AgentId,
    deployment: DeploymentId,
    session: Option<SessionId>,
    limits: InstanceLimits,
    config: ConfigLayers,
    clock: Arc<dyn Clock>,
    /// The log rate limit to share with other instances; `None` for one of its own.
    log_gate: Option<SharedLogGate>,
}

impl InstanceSetup {
    /// A setup for `deployment` of `agent` with default limits, no configuration, the
    /// system clock and no session.
    pub fn new(agent: AgentId, deployment: DeploymentId) -> Self {
        InstanceSetup {
            agent,
            deployment,
            session: None,
            limits: InstanceLimits::default(),
            config: ConfigLayers::default(),
            clock: Arc::new(SystemClock),
            log_gate: None,
        }
    }

    /// The session the instance serves, named in its log lines.
    pub fn session(mut self, session: Option<SessionId>) -> Self {
        self.session = session;
        self
    }

    /// The limits the instance runs under.
    pub fn limits(mut self, limits: InstanceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The configuration `caxton.config` reads.
    pub fn config(mut self, config: ConfigLayers) -> Self {
        self.config = config;
        self
    }

    /// The clock `caxton.now_ms` reads; a [`ManualClock`](caxton_core::ManualClock) gives
    /// virtual time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Instances started with this setup share `gate` for their log lines, instead of a
    /// rate limit each.
    pub(crate) fn log_gate(mut self, gate: SharedLogGate) -> Self {
        self.log_gate = Some(gate);
        self
    }

    /// The agent.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The deployment.
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// The session, if any.
    pub fn session_id(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// The limits.
    pub fn instance_limits(&self) -> &InstanceLimits {
        &self.limits
    }
}

/// What one message cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageStats {
    /// Fuel burnt by `caxton_alloc` and `caxton_handle`, when the engine meters fuel.
    pub fuel_consumed: Option<u64>,
    /// The size of linear memory after the message, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time from the call of `caxton_alloc` to the reply being copied out.
    pub wall_time: Duration,
}

/// A reply and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply's bytes, copied out of the instance's memory.
    pub bytes: Vec<u8>,
    /// What the message cost.
    pub stats: MessageStats,
}

/// One running instance of a compiled agent, with its own linear memory: state kept there
/// lives as long as the instance. Messages are handled one at a time (`&mut self`).
///
/// An instance that failed (a trap, a limit, a bad reply) is never run again: every later
/// call returns an error saying so, and the owner should drop it.
pub struct AgentInstance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
    agent: Arc<CompiledAgent>,
    limits: InstanceLimits,
    deadline_ticks: u64,
    fuel_budget: Option<u64>,
    failure: Option<AgentError>,
    messages: u64,
    instantiate_time: Duration,
    last: Option<MessageStats>,
}

impl std::fmt::Debug for AgentInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.store.data().identity;
        f.debug_struct("AgentInstance")
            .field("agent", &id.agent)
            .field("deployment", &id.deployment)
            .field("session", &id.session)
            .field("digest", &self.agent.digest())
            .field("messages", &self.messages)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// Whether a wasmtime error came from running agent code or from the host refusing.
#[derive(Clone, Copy)]
enum Phase {
    Instantiate,
    Run,
}

impl AgentInstance {
    /// Starts an instance of `agent` and runs its `caxton_init`, under `setup`'s limits.
    ///
    /// Errors: [`AgentError::InitFailed`] when `caxton_init` returns non-zero, traps or
    /// hits a limit; [`AgentError::MemoryLimit`] when the initial memory is over the limit;
    /// [`AgentError::Host`] when no instance slot is free or the fuel budget cannot be
    /// honoured.
    pub fn new(agent: Arc<CompiledAgent>, setup: &InstanceSetup) -> Result<Self, AgentError> {
        let started = Instant::now();
        let core = agent.core.clone();
        let limits = setup.limits.clone();
        let deployment = || setup.deployment.clone();
        if limits.fuel_per_message.is_some() && !core.fuel_metering {
            return Err(AgentError::Host {
                deployment: deployment(),
                message: "a fuel budget was set, but the engine does not meter fuel \
                          (enable EngineConfig::fuel_metering)"
                    .to_owned(),
            });
        }
        let state = HostState {
            guard: ResourceGuard {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                table_elements: limits.table_elements as usize,
                memory_denied: None,
            },
            config: setup.config.clone(),
            clock: setup.clock.clone(),
            identity: Identity {
                agent: setup.agent.clone(),
                deployment: setup.deployment.clone(),
                session: setup.session.clone(),
            },
            log: setup
                .log_gate
                .clone()
                .unwrap_or_else(|| LogGate::shared(limits.log_lines_per_second, limits.log_burst)),
            log_line_bytes: limits.log_line_bytes,
            memory: None,
        };
        let mut store = Store::new(&core.engine, state);
        store.limiter(|state| &mut state.guard);
        let deadline_ticks = host::ticks_for(limits.deadline, core.epoch_tick);
        let fuel_budget = core
            .fuel_metering
            .then(|| limits.fuel_per_message.unwrap_or(u64::MAX));
        arm(&mut store, fuel_budget, deadline_ticks);

        let instance = agent
            .pre
            .instantiate(&mut store)
            .map_err(|err| classify(&store, &limits, err, Phase::Instantiate))?;
        let missing = |what: &str| AgentError::AbiViolation {
            deployment: deployment(),
            message: format!("the instance has no usable `{what}` export"),
        };
        let exports = &agent.exports;
        let memory = instance
            .get_module_export(&mut store, &exports.memory)
            .and_then(Extern::into_memory)
            .ok_or_else(|| missing(abi::EXPORT_MEMORY))?;
        let func = |store: &mut Store<HostState>, export, name| {
            instance
                .get_module_export(&mut *store, export)
                .and_then(Extern::into_func)
                .ok_or_else(|| missing(name))
        };
        let alloc = func(&mut store, &exports.alloc, abi::EXPORT_ALLOC)?
            .typed::<i32, i32>(&store)
            .map_err(|_| missing(abi::EXPORT_ALLOC))?;
        let handle = func(&mut store, &exports.handle, abi::EXPORT_HANDLE)?
            .typed::<(i32, i32), i64>(&store)
            .map_err(|_| missing(abi::EXPORT_HANDLE))?;
        store.data_mut().memory = Some(memory);

        if let Some(init_export) = &exports.init {
            let init = func(&mut store, init_export, abi::EXPORT_INIT)?
                .typed::<(), i32>(&store)
                .map_err(|_| missing(abi::EXPORT_INIT))?;
            arm(&mut store, fuel_budget, deadline_ticks);
            let status = init.call(&mut store, ()).map_err(|err| {
                let cause = classify(&store, &limits, err, Phase::Run);
                AgentError::InitFailed {
                    deployment: deployment(),
                    message: cause.to_string(),
                }
            })?;
            if status != 0 {
                return Err(AgentError::InitFailed {
                    deployment: deployment(),
                    message: format!("it returned {status}; 0 means ready"),
                });
            }
        }
        Ok(AgentInstance {
            store,
            memory,
            alloc,
            handle,
            agent,
            limits,
            deadline_ticks,
            fuel_budget,
            failure: None,
            messages: 0,
            instantiate_time: started.elapsed(),
            last: None,
        })
    }

    /// Handles one message and returns the reply with what it cost.
    pub fn handle(&mut self, message: &[u8]) -> Result<Reply, AgentError> {
        let mut bytes = Vec::new();
        let stats = self.handle_into(message, &mut bytes)?;
        Ok(Reply { bytes, stats })
    }

    /// Handles one message, putting the reply into `reply` (cleared first) to reuse its
    /// allocation.
    ///
    /// A failure other than [`AgentError::MessageTooLarge`] marks the instance failed.
    pub fn handle_into(
        &mut self,
        message: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<MessageStats, AgentError> {
        if let Some(failure) = &self.failure {
            return Err(AgentError::Host {
                deployment: self.deployment().clone(),
                message: format!(
                    "this instance failed earlier ({failure}) and takes no more messages"
                ),
            });
        }
        if message.len() > self.limits.max_message_bytes {
            return Err(AgentError::MessageTooLarge {
                deployment: self.deployment().clone(),
                len: message.len(),
                limit: self.limits.max_message_bytes,
            });
        }
        arm(&mut self.store, self.fuel_budget, self.deadline_ticks);
        let started = Instant::now();
        let result = self.round_trip(message, reply);
        let wall_time = started.elapsed();
        let fuel_consumed = self
            .fuel_budget
            .map(|budget| budget.saturating_sub(self.store.get_fuel().unwrap_or(0)));
        let stats = MessageStats {
            fuel_consumed,
            memory_bytes: self.memory.data_size(&self.store) as u64,
            wall_time,
        };
        self.messages += 1;
        self.last = Some(stats);
        match result {
            Ok(()) => Ok(stats),
            Err(err) => {
                self.failure = Some(err.clone());
                Err(err)
            }
        }
    }

    fn round_trip(&mut self, message: &[u8], reply: &mut Vec<u8>) -> Result<(), AgentError> {
        // `handle_into` checked the length against a limit of at most i32::MAX.
        let len = message.len() as i32;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|err| classify(&self.store, &self.limits, err, Phase::Run))?;
        let memory = self.memory.data_mut(&mut self.store);
        let memory_len = memory.len();
        let Some(range) = guest_range(ptr as u32, len as u32, memory_len) else {
            return Err(AgentError::AbiViolation {
                deployment: self.deployment().clone(),
                message: format!(
                    "caxton_alloc({len}) returned {}, which leaves no room for the message \
                     in the {memory_len}-byte memory",
                    ptr as u32
                ),
            });
        };
        memory[range].copy_from_slice(message);
        let packed = self
            .handle
            .call(&mut self.store, (ptr, len))
            .map_err(|err| classify(&self.store, &self.limits, err, Phase::Run))?;
        let (out_ptr, out_len) = unpack_reply(packed);
        let memory = self.memory.data(&self.store);
        let Some(range) = guest_range(out_ptr, out_len, memory.len()) else {
            return Err(AgentError::ReplyOutOfBounds {
                deployment: self.deployment().clone(),
                ptr: out_ptr,
                len: out_len,
                memory_bytes: memory.len() as u64,
            });
        };
        reply.clear();
        reply.extend_from_slice(&memory[range]);
        Ok(())
    }

    /// The compiled agent this is an instance of.
    pub fn agent(&self) -> &Arc<CompiledAgent> {
        &self.agent
    }

    /// The deployment the instance runs for.
    pub fn deployment(&self) -> &DeploymentId {
        &self.store.data().identity.deployment
    }

    /// The session the instance serves, if any.
    pub fn session(&self) -> Option<&SessionId> {
        self.store.data().identity.session.as_ref()
    }

    /// The limits the instance runs under.
    pub fn limits(&self) -> &InstanceLimits {
        &self.limits
    }

    /// How long instantiation took, `caxton_init` included.
    pub fn instantiate_time(&self) -> Duration {
        self.instantiate_time
    }

    /// Messages handled (successful or not).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// What the last message cost, also when it failed.
    pub fn last_stats(&self) -> Option<MessageStats> {
        self.last
    }

    /// The current size of linear memory, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.data_size(&self.store) as u64
    }

    /// The failure that ended this instance, if one did.
    pub fn failure(&self) -> Option<&AgentError> {
        self.failure.as_ref()
    }

    /// Whether the instance failed and takes no more messages.
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }
}

/// Gives the store a fresh fuel budget and deadline, and forgets earlier denied growth.
fn arm(store: &mut Store<HostState>, fuel_budget: Option<u64>, deadline_ticks: u64) {
    if let Some(budget) = fuel_budget {
        // Cannot fail: the engine meters fuel whenever a budget is present.
        let _ = store.set_fuel(budget);
    }
    store.set_epoch_deadline(deadline_ticks);
    store.data_mut().guard.memory_denied = None;
}

/// Maps a wasmtime error to the failure it stands for.
fn classify(
    store: &Store<HostState>,
    limits: &InstanceLimits,
    err: wasmtime::Error,
    phase: Phase,
) -> AgentError {
    let state = store.data();
    let deployment = state.identity.deployment.clone();
    // A denied growth explains whatever follows: a trap, or the agent's own failure.
    if state.guard.memory_denied.is_some() {
        return AgentError::MemoryLimit {
            deployment,
            limit_bytes: limits.memory_bytes,
        };
    }
    match (err.downcast_ref::<Trap>(), phase) {
        (Some(Trap::OutOfFuel), _) => AgentError::OutOfFuel {
            deployment,
            budget: limits.fuel_per_message.unwrap_or(u64::MAX),
        },
        (Some(Trap::Interrupt), _) => AgentError::DeadlineExceeded {
            deployment,
            limit: limits.deadline.unwrap_or(Duration::MAX),
        },
        (Some(Trap::StackOverflow), _) => AgentError::StackOverflow { deployment },
        (Some(trap), _) => AgentError::Trap {
            deployment,
            message: trap.to_string(),
        },
        // A host function refused the call (a bad pointer, say): the agent's fault.
        (None, Phase::Run) => AgentError::Trap {
            deployment,
            message: format!("{err:#}"),
        },
        (None, Phase::Instantiate) => AgentError::Host {
            deployment,
            message: format!("instantiation failed: {err:#}"),
        },
    }
}
