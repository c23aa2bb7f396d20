//! The shared engine: wasmtime configured for agents, its epoch ticker, and the caches of
//! compiled agents.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use caxton_core::Digest;
use dashmap::DashMap;
use wasmtime::{InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig};

use crate::abi::{self, AbiViolation};
use crate::compiled::CompiledAgent;
use crate::disk_cache::{DiskCache, DiskCacheError, DiskCacheKey};
use crate::host::{self, HostState};

/// Sizes of the pooling instance allocator.
///
/// The pool reserves address space for every slot up front (about 4 GiB plus guard pages
/// per memory on 64-bit hosts), so instantiation only takes a free slot. Every live
/// instance, including each session's, holds one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolingConfig {
    /// Instances (and so memories and tables) that may be live at once.
    pub max_instances: u32,
    /// The most linear memory one instance may ever have, in bytes.
    pub max_memory_bytes: usize,
    /// The most elements one table may have.
    pub max_table_elements: usize,
    /// Slots kept warm for reuse by the module that used them last.
    pub max_unused_warm_slots: u32,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            max_instances: 1_000,
            max_memory_bytes: 256 << 20,
            max_table_elements: 20_000,
            max_unused_warm_slots: 100,
        }
    }
}

impl PoolingConfig {
    /// Sets how many instances may be live at once.
    pub fn max_instances(mut self, count: u32) -> Self {
        self.max_instances = count;
        self
    }

    /// Sets the most linear memory one instance may ever have.
    pub fn max_memory_bytes(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// Sets the most elements one table may have.
    pub fn max_table_elements(mut self, elements: usize) -> Self {
        self.max_table_elements = elements;
        self
    }

    /// Sets how many unused slots stay warm for the module that used them last.
    pub fn max_unused_warm_slots(mut self, count: u32) -> Self {
        self.max_unused_warm_slots = count;
        self
    }
}

/// How an [`AgentEngine`] is set up. Start from [`EngineConfig::default`] and change what
/// you need.
///
/// ```
/// use std::time::Duration;
/// use caxton_wasm::{EngineConfig, PoolingConfig};
///
/// let config = EngineConfig::default()
///     .pooling(PoolingConfig::default().max_instances(64))
///     .fuel_metering(true)
///     .epoch_tick(Duration::from_millis(2));
/// assert!(config.fuel_metering_enabled());
/// ```
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pooling: Option<PoolingConfig>,
    epoch_tick: Duration,
    fuel_metering: bool,
    max_wasm_stack: usize,
    disk_cache: Option<(PathBuf, DiskCacheKey)>,
    compiled_cache_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: Some(PoolingConfig::default()),
            epoch_tick: Duration::from_millis(1),
            fuel_metering: false,
            max_wasm_stack: 512 << 10,
            disk_cache: None,
            compiled_cache_capacity: 64,
        }
    }
}

impl EngineConfig {
    /// Uses the pooling allocator with these sizes (the default). When the machine cannot
    /// reserve the pool's address space, the engine falls back to on-demand allocation.
    pub fn pooling(mut self, pooling: PoolingConfig) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// Allocates every instance on demand instead of from a pool.
    pub fn on_demand(mut self) -> Self {
        self.pooling = None;
        self
    }

    /// How often the epoch advances; per-message deadlines are enforced to within about
    /// one tick. Default 1 ms.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick.max(Duration::from_micros(50));
        self
    }

    /// Counts fuel, so each message can get a deterministic budget (validation and
    /// profiling turn it on; it costs some speed). Default off.
    pub fn fuel_metering(mut self, enabled: bool) -> Self {
        self.fuel_metering = enabled;
        self
    }

    /// The most stack wasm code may use, in bytes; deeper recursion is a stack overflow.
    /// Default 512 KiB. It must stay well below the stack of the threads that run agents.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// Keeps precompiled artifacts in `dir`, authenticated with `key`, so a module compiled
    /// once is loaded from disk by later engines with the same configuration and key.
    ///
    /// A cached artifact is native code that the engine runs without compiling it again,
    /// so every file is checked before it is loaded: its header must name this module and
    /// this engine configuration, and its HMAC-SHA-256 must be the one `key` gives. A file
    /// that fails (altered, truncated, written by someone without the key, or a genuine
    /// artifact of another module put under this one's name) is never run: it is counted in
    /// [`EngineStats::disk_rejects`], logged at warn, and the module is compiled and the
    /// file rewritten. Files are opened without following symbolic links and written
    /// through a temporary file renamed into place; temporary files that a crash left behind
    /// are removed when the engine opens the folder.
    ///
    /// What must be trusted:
    ///
    /// - the key: whoever can read it can write files this engine will run. Keep it outside
    ///   `dir` (an engine refuses a key file inside it), readable only by the user that runs
    ///   Caxton ([`DiskCacheKey::load_or_create`] makes and checks such a file);
    /// - that user and root, who can read the key and write the folder;
    /// - the folders above `dir` and above the key file: whoever can rename entries in them
    ///   can put a folder or key of their own in place. The engine checks `dir` itself, not
    ///   its parents.
    ///
    /// [`AgentEngine::new`] refuses (with [`EngineError::DiskCache`], naming the path) a
    /// `dir` owned by another user or writable by its group or others. A missing `dir` is
    /// created `0700`.
    ///
    /// Why a key must be given rather than found in a default place: a default key file
    /// would sit in a place the host did not choose (and may not protect), and a silent
    /// per-process key would make the cache useless across restarts, which is what it is
    /// for. A host that wants it only within one run passes [`DiskCacheKey::ephemeral`].
    pub fn disk_cache(mut self, dir: impl Into<PathBuf>, key: DiskCacheKey) -> Self {
        self.disk_cache = Some((dir.into(), key));
        self
    }

    /// How many compiled agents no one uses any more stay in memory, for a quick reload.
    /// Agents in use are always shared. Default 64.
    pub fn compiled_cache_capacity(mut self, capacity: usize) -> Self {
        self.compiled_cache_capacity = capacity;
        self
    }

    /// Whether fuel metering is on.
    pub fn fuel_metering_enabled(&self) -> bool {
        self.fuel_metering
    }

    fn wasmtime_config(&self, pooling: Option<&PoolingConfig>) -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config
            // Exactly the documented feature set, so validation can check against the same.
            .wasm_features(wasmtime::WasmFeatures::all(), false)
            .wasm_features(AGENT_WASM_FEATURES, true)
            .epoch_interruption(true)
            .consume_fuel(self.fuel_metering)
            .max_wasm_stack(self.max_wasm_stack)
            .parallel_compilation(true);
        if let Some(pooling) = pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(pooling.max_instances)
                .total_memories(pooling.max_instances)
                .total_tables(pooling.max_instances)
                .total_component_instances(pooling.max_instances)
                .max_memory_size(pooling.max_memory_bytes)
                .table_elements(pooling.max_table_elements)
                .max_unused_warm_slots(pooling.max_unused_warm_slots);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        config
    }
}

/// The WebAssembly features every agent engine accepts: those of WebAssembly 3.0 (tail
/// calls, memory64, multi-memory, relaxed SIMD, threads, typed function references, …)
/// except garbage collection and exception handling. `caxton-validate` checks modules
/// against this same set.
///
/// GC objects (structs, arrays, `externref`, `anyref`, …) and exception objects live in a
/// garbage-collected heap beside linear memory, which neither the memory limit, nor
/// [`MessageStats::memory_bytes`](crate::MessageStats::memory_bytes), nor validation's
/// peak memory counts. Agents do not need it: the agent ABI passes bytes through the
/// exported linear memory, and agents keep their data there. So the GC proposal is off
/// (and wasmtime is built without its collector), and a module that uses GC types or
/// exceptions is refused when it is compiled ([`CompileError::UnsupportedFeature`]) and by
/// validation's static stage (decision 17 in `docs/decisions.md`).
pub const AGENT_WASM_FEATURES: wasmtime::WasmFeatures =
    wasmtime::WasmFeatures::WASM3.difference(LEFT_OUT_FEATURES);

/// What WebAssembly 3.0 has that agents may not use (see [`AGENT_WASM_FEATURES`]).
/// `GC_TYPES` is wasmparser's switch for the types that need a collector; wasmtime needs
/// one for exceptions too.
const LEFT_OUT_FEATURES: wasmtime::WasmFeatures = wasmtime::WasmFeatures::GC
    .union(wasmtime::WasmFeatures::GC_TYPES)
    .union(wasmtime::WasmFeatures::EXCEPTIONS);

/// Names what a module that failed to compile uses of [`LEFT_OUT_FEATURES`], when that is
/// why it failed: `None` when it is invalid for another reason.
fn left_out_feature(module: &[u8]) -> Option<&'static str> {
    use wasmtime::WasmFeatures;
    let valid_with = |extra: WasmFeatures| {
        wasmparser::Validator::new_with_features(AGENT_WASM_FEATURES | extra)
            .validate_all(module)
            .is_ok()
    };
    if valid_with(WasmFeatures::EXCEPTIONS) {
        Some(
            "WebAssembly exception handling (its exception objects live in a garbage-collected heap)",
        )
    } else if valid_with(WasmFeatures::GC | WasmFeatures::GC_TYPES) {
        Some("WebAssembly garbage collection (GC types such as struct, array, externref or anyref)")
    } else if valid_with(LEFT_OUT_FEATURES) {
        Some("WebAssembly garbage collection and exception handling")
    } else {
        None
    }
}

/// Which instance allocator an engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Allocation {
    /// Instances come from a pool reserved up front.
    Pooling,
    /// Instances are allocated one by one, as asked for in the configuration.
    OnDemand,
    /// Pooling was asked for, but the pool could not be reserved; instances are allocated
    /// one by one.
    OnDemandFallback {
        /// Why the pool could not be created.
        reason: String,
    },
}

impl Allocation {
    /// Whether instances come from the pool.
    pub fn is_pooling(&self) -> bool {
        matches!(self, Allocation::Pooling)
    }
}

/// Why an engine could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("the wasmtime engine could not be created: {message}")]
    Wasmtime {
        /// wasmtime's message.
        message: String,
    },
    /// The disk cache folder cannot be used: it could not be created or read, another user
    /// owns it, its group or others may write it, or its key is inside it.
    #[error(transparent)]
    DiskCache(Arc<DiskCacheError>),
}

/// Why a module could not be made into a compiled agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The bytes are not a valid WebAssembly module, or do not compile.
    #[error("module {digest} does not compile: {message}")]
    Invalid {
        /// The module's digest.
        digest: Digest,
        /// The compiler's message.
        message: String,
    },
    /// The module uses a WebAssembly feature agents may not use: garbage collection or
    /// exception handling (see [`AGENT_WASM_FEATURES`]).
    #[error(
        "module {digest} uses {feature}, which Caxton does not run: agents keep their data in \
         linear memory, where the memory limit and statistics count it ({message})"
    )]
    UnsupportedFeature {
        /// The module's digest.
        digest: Digest,
        /// The feature, for people.
        feature: &'static str,
        /// The compiler's message.
        message: String,
    },
    /// The module breaks the agent ABI v1.
    #[error("module {digest} breaks the agent ABI v1: {}", list(.violations))]
    Abi {
        /// The module's digest.
        digest: Digest,
        /// Every violation found.
        violations: Vec<AbiViolation>,
    },
    /// The module could not be linked to the host functions.
    #[error("module {digest} cannot be linked: {message}")]
    Link {
        /// The module's digest.
        digest: Digest,
        /// The linker's message.
        message: String,
    },
}

fn list(violations: &[AbiViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which caches a compilation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CachePolicy {
    /// The in-memory cache, then the disk cache, then the compiler; results are cached.
    #[default]
    Full,
    /// The disk cache, then the compiler; the in-memory cache is neither read nor written.
    DiskOnly,
    /// Always compile; no cache is read or written.
    Bypass,
}

/// Counters of an engine's compilations and cache use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Modules compiled by the compiler.
    pub compiles: u64,
    /// Compilations answered by the in-memory cache.
    pub memory_hits: u64,
    /// Compilations answered by the disk cache.
    pub disk_hits: u64,
    /// Cache files found but not loaded (corrupt, truncated, foreign, incompatible, not
    /// authenticated by the cache's key, or a symbolic link).
    pub disk_rejects: u64,
    /// Cache files written.
    pub disk_writes: u64,
    /// Cache files that could not be written.
    pub disk_write_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    compiles: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    disk_rejects: AtomicU64,
    disk_writes: AtomicU64,
    disk_write_errors: AtomicU64,
}

/// What instances and compiled agents share: the wasmtime engine, the linker of host
/// functions and the epoch ticker, which stops when the last of them is dropped.
pub(crate) struct EngineCore {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) fuel_metering: bool,
    pub(crate) epoch_tick: Duration,
    ticker: Option<Ticker>,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCore")
            .field("fuel_metering", &self.fuel_metering)
            .field("epoch_tick", &self.epoch_tick)
            .finish_non_exhaustive()
    }
}

impl Drop for EngineCore {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine, tick: Duration) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("caxton-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        // The thread only parks and ticks; it cannot panic.
        let _ = self.thread.join();
    }
}

struct Slot {
    agent: Option<Arc<CompiledAgent>>,
    last_used: u64,
}

struct EngineInner {
    core: Arc<EngineCore>,
    allocation: Allocation,
    config: EngineConfig,
    disk: Option<DiskCache>,
    compiled: DashMap<Digest, Arc<Mutex<Slot>>>,
    uses: AtomicU64,
    counters: Counters,
}

/// The shared, configured engine that compiles and runs agents. Cloning is cheap; clones
/// share the engine, its ticker and its caches.
///
/// ```
/// use caxton_wasm::{AgentEngine, EngineConfig, PoolingConfig};
///
/// let engine = AgentEngine::new(EngineConfig::default().pooling(PoolingConfig::default().max_instances(8)))?;
/// let module = wat::parse_str(r#"(module
///     (memory (export "memory") 1)
///     (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
///     (func (export "caxton_handle") (param i32 i32) (result i64) (i64.const 0)))"#)?;
/// let first = engine.compile(&module)?;
/// let second = engine.compile(&module)?;
/// assert_eq!(first.digest(), second.digest());
/// assert_eq!(engine.stats().compiles, 1);
/// assert_eq!(engine.stats().memory_hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AgentEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for AgentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEngine")
            .field("allocation", &self.inner.allocation)
            .field("config", &self.inner.config)
            .field("cached", &self.inner.compiled.len())
            .finish()
    }
}

impl AgentEngine {
    /// Creates an engine and starts its epoch ticker.
    ///
    /// When the pooling allocator cannot be created (typically because the address space
    /// cannot be reserved, e.g. under a low `ulimit -v`), the engine falls back to on-demand
    /// allocation, logs a warning and reports it in [`allocation`](AgentEngine::allocation).
    pub fn new(config: EngineConfig) -> Result<AgentEngine, EngineError> {
        let (engine, allocation) = match &config.pooling {
            None => (Self::wasmtime(&config, None)?, Allocation::OnDemand),
            Some(pooling) => match wasmtime::Engine::new(&config.wasmtime_config(Some(pooling))) {
                Ok(engine) => (engine, Allocation::Pooling),
                Err(err) => {
                    let reason = format!("{err:#}");
                    tracing::warn!(
                        target: "caxton::wasm",
                        %reason,
                        max_instances = pooling.max_instances,
                        "the pooling allocator could not be created; allocating instances on demand"
                    );
                    (
                        Self::wasmtime(&config, None)?,
                        Allocation::OnDemandFallback { reason },
                    )
                }
            },
        };
        let linker = host::linker(&engine).map_err(|err| EngineError::Wasmtime {
            message: format!("{err:#}"),
        })?;
        let disk = match &config.disk_cache {
            None => None,
            Some((dir, key)) => Some(
                DiskCache::open(dir, &engine, key)
                    .map_err(|err| EngineError::DiskCache(Arc::new(err)))?,
            ),
        };
        let ticker = Ticker::start(engine.clone(), config.epoch_tick).map_err(|err| {
            EngineError::Wasmtime {
                message: format!("the epoch ticker thread could not start: {err}"),
            }
        })?;
        let core = Arc::new(EngineCore {
            engine,
            linker,
            fuel_metering: config.fuel_metering,
            epoch_tick: config.epoch_tick,
            ticker: Some(ticker),
        });
        Ok(AgentEngine {
            inner: Arc::new(EngineInner {
                core,
                allocation,
                config,
                disk,
                compiled: DashMap::new(),
                uses: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        })
    }

    fn wasmtime(
        config: &EngineConfig,
        pooling: Option<&PoolingConfig>,
    ) -> Result<wasmtime::Engine, EngineError> {
        wasmtime::Engine::new(&config.wasmtime_config(pooling)).map_err(|err| {
            EngineError::Wasmtime {
                message: format!("{err:#}"),
            }
        })
    }

    /// Which instance allocator is in use.
    pub fn allocation(&self) -> &Allocation {
        &self.inner.allocation
    }

    /// The configuration the engine was created with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The WebAssembly features this engine accepts: [`AGENT_WASM_FEATURES`].
    pub fn wasm_features(&self) -> wasmtime::WasmFeatures {
        AGENT_WASM_FEATURES
    }

    /// Whether fuel is metered, so instances can have a per-message fuel budget.
    pub fn fuel_metering(&self) -> bool {
        self.inner.core.fuel_metering
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime_engine(&self) -> &wasmtime::Engine {
        &self.inner.core.engine
    }

    /// Counters of compilations and cache use so far.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        EngineStats {
            compiles: c.compiles.load(Ordering::Relaxed),
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            disk_rejects: c.disk_rejects.load(Ordering::Relaxed),
            disk_writes: c.disk_writes.load(Ordering::Relaxed),
            disk_write_errors: c.disk_write_errors.load(Ordering::Relaxed),
        }
    }

    /// Compiles `module` into an agent ready to instantiate, checking the ABI, with every
    /// cache ([`CachePolicy::Full`]). A module already compiled by this engine is returned
    /// from memory without compiling; concurrent compilations of one module compile once.
    pub fn compile(&self, module: &[u8]) -> Result<Arc<CompiledAgent>, CompileError> {
        self.compile_with(module, CachePolicy::Full)
    }

    /// Compiles `module` using the caches `policy` allows.
    pub fn compile_with(
        &self,
        module: &[u8],
        policy: CachePolicy,
    ) -> Result<Arc<CompiledAgent>, CompileError> {
        let digest = Digest::of(module);
        match policy {
            CachePolicy::Bypass => self.build(module, digest, false),
            CachePolicy::DiskOnly => self.build(module, digest, true),
            CachePolicy::Full => self.compile_cached(module, digest),
        }
    }

    fn compile_cached(
        &self,
        module: &[u8],
        digest: Digest,
    ) -> Result<Arc<CompiledAgent>, CompileError> {
        let inner = &self.inner;
        // Clone the slot out so the map's shard is not held while compiling: compiling
        // one module never blocks compiling or finding another.
        let slot = inner
            .compiled
            .entry(digest)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Slot {
                    agent: None,
                    last_used: 0,
                }))
            })
            .clone();
        let mut guard = lock(&slot);
        guard.last_used = inner.uses.fetch_add(1, Ordering::Relaxed);
        if let Some(agent) = &guard.agent {
            inner.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(agent.clone());
        }
        match self.build(module, digest, true) {
            Ok(agent) => {
                guard.agent = Some(agent.clone());
                drop(guard);
                self.evict_unused();
                Ok(agent)
            }
            Err(err) => {
                drop(guard);
                inner.compiled.remove_if(&digest, |_, s| {
                    Arc::ptr_eq(s, &slot) && lock(s).agent.is_none()
                });
                Err(err)
            }
        }
    }

    /// Drops the least recently used compiled agents no one else holds, down to capacity.
    fn evict_unused(&self) {
        let inner = &self.inner;
        let capacity = inner.config.compiled_cache_capacity;
        while inner.compiled.len() > capacity {
            let victim = inner
                .compiled
                .iter()
                .filter_map(|entry| {
                    let slot = entry.value().try_lock().ok()?;
                    let agent = slot.agent.as_ref()?;
                    (Arc::strong_count(agent) == 1).then(|| (*entry.key(), slot.last_used))
                })
                .min_by_key(|(_, used)| *used);
            let Some((digest, _)) = victim else {
                return;
            };
            inner.compiled.remove(&digest);
        }
    }

    /// Forgets the compiled agent of `digest` in the in-memory cache; returns whether it
    /// was there. Holders of it keep using it.
    pub fn forget(&self, digest: &Digest) -> bool {
        self.inner.compiled.remove(digest).is_some()
    }

    fn build(
        &self,
        module: &[u8],
        digest: Digest,
        use_disk: bool,
    ) -> Result<Arc<CompiledAgent>, CompileError> {
        let inner = &self.inner;
        let engine = &inner.core.engine;
        let disk = inner.disk.as_ref().filter(|_| use_disk);
        let cached = disk.and_then(|disk| match disk.load(engine, &digest) {
            Ok(found) => found,
            Err(failure) => {
                inner.counters.disk_rejects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "caxton::wasm",
                    %digest,
                    path = %disk.path(&digest).display(),
                    "cached artifact not loaded, recompiling: {failure}"
                );
                None
            }
        });
        let compiled = match cached {
            Some(module) => {
                inner.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                module
            }
            None => {
                inner.counters.compiles.fetch_add(1, Ordering::Relaxed);
                let compiled = Module::from_binary(engine, module).map_err(|err| {
                    let message = format!("{err:#}");
                    match left_out_feature(module) {
                        Some(feature) => CompileError::UnsupportedFeature {
                            digest,
                            feature,
                            message,
                        },
                        None => CompileError::Invalid { digest, message },
                    }
                })?;
                if let Some(disk) = disk {
                    self.write_artifact(disk, &digest, &compiled);
                }
                compiled
            }
        };
        let violations = abi::check(&compiled);
        if !violations.is_empty() {
            return Err(CompileError::Abi { digest, violations });
        }
        CompiledAgent::new(inner.core.clone(), compiled, digest).map(Arc::new)
    }

    fn write_artifact(&self, disk: &DiskCache, digest: &Digest, module: &Module) {
        let counters = &self.inner.counters;
        let written = module
            .serialize()
            .map_err(|err| format!("{err:#}"))
            .and_then(|artifact| disk.store(digest, &artifact).map_err(|err| err.to_string()));
        match written {
            Ok(()) => {
                counters.disk_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                counters.disk_write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "caxton::wasm",
                    %digest,
                    "could not write the cached artifact: {err}"
                );
            }
        }
    }

    /// Where the disk cache keeps the artifact of `digest`, when a disk cache is set up.
    pub fn disk_cache_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.inner.disk.as_ref().map(|disk| disk.path(digest))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Slots are consistent after every critical section; a panic elsewhere leaves them usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
