//! The sandboxed WebAssembly runtime of Caxton: agents compiled to core WebAssembly modules
//! run on wasmtime behind the agent ABI v1, under limits, side by side across versions.
//!
//! Two levels:
//!
//! - The building blocks, for hosts and for `caxton-validate`: an [`AgentEngine`] (wasmtime
//!   configured for agents: pooling allocator with on-demand fallback, epoch ticker for
//!   per-message deadlines, optional fuel metering, caches of compiled agents in memory and on
//!   disk) compiles a module once into a shareable [`CompiledAgent`] (ABI checked, linked),
//!   which starts [`AgentInstance`]s under explicit [`InstanceLimits`], with a configuration
//!   ([`ConfigSource`], [`ConfigLayers`]) and a clock. An instance handles messages and
//!   reports what each cost ([`MessageStats`]: fuel, memory, wall time).
//! - [`WasmRuntime`], core's [`AgentRuntime`](caxton_core::AgentRuntime) on top of them:
//!   deployments loaded and unloaded while others serve, one instance per session, pooled
//!   instances for session-less messages, health per deployment.
//!
//! Failures are [`caxton_core::AgentError`]s: `OutOfFuel`, `DeadlineExceeded`,
//! `MemoryLimit`, `StackOverflow`, `Trap`, `ReplyOutOfBounds`, `AbiViolation`, `InitFailed`.
//! A failed instance is discarded; the host and every other agent keep serving.
//!
//! # The agent ABI v1
//!
//! Exports `memory`, `caxton_alloc (i32) -> i32`, `caxton_handle (i32, i32) -> i64` (the
//! reply as `(ptr << 32) | len`) and optionally `caxton_init () -> i32` (`0` = ready).
//! Imports only from `caxton`: `log (level, ptr, len)` (lines capped, rate-limited per
//! deployment, and escaped so that line breaks and control characters cannot forge a host
//! log line), `config (key_ptr, key_len, out_ptr, out_cap) -> i32` (the value's length, `-1`
//! when absent or a host-wide key not granted to the deployment, nothing copied when it
//! exceeds `out_cap`) and `now_ms () -> i64`. See
//! [`abi`].
//!
//! # Example: load an agent from WAT and send it a message
//!
//! ```
//! use caxton_core::{
//!     AgentId, AgentRuntime, CodeLayer, DeploymentId, LoadSpec, ModelLayer, PromptLayer,
//!     SessionId, ToolsLayer, VersionTuple,
//! };
//! use caxton_wasm::{AgentEngine, EngineConfig, PoolingConfig, WasmRuntime};
//!
//! // An agent that greets: it replies "hello, " followed by the message.
//! let module = wat::parse_str(r#"
//!     (module
//!       (memory (export "memory") 1)
//!       (data (i32.const 0) "hello, ")
//!       ;; The host writes the message right after the greeting.
//!       (func (export "caxton_alloc") (param $len i32) (result i32)
//!         (if (i32.gt_u (local.get $len) (i32.const 60000)) (then unreachable))
//!         (i32.const 7))
//!       ;; The reply starts at 0 and spans the greeting and the message.
//!       (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
//!         (i64.extend_i32_u (i32.add (local.get $len) (i32.const 7)))))
//! "#)?;
//!
//! let engine = AgentEngine::new(EngineConfig::default().pooling(PoolingConfig::default().max_instances(16)))?;
//! let runtime = WasmRuntime::new(engine);
//! let version = VersionTuple::new(
//!     CodeLayer::from_module(&module),
//!     ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
//!     PromptLayer::from_prompt("You greet people.", &[]),
//!     ToolsLayer::from_json("[]")?,
//! );
//! let deployment = DeploymentId::new("greeter-v1")?;
//! runtime.load(LoadSpec::new(AgentId::new("greeter")?, deployment.clone(), version, module))?;
//! runtime.warm_up(&deployment)?;
//!
//! let session = SessionId::new("s-1")?;
//! let reply = runtime.handle(&deployment, Some(&session), b"Ada")?;
//! assert_eq!(reply.bytes, b"hello, Ada");
//! assert!(runtime.health(&deployment).unwrap().ready);
//! runtime.unload(&deployment)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// `unsafe_code` is denied workspace-wide; the one exception is the function that loads a
// verified artifact from the disk cache (`disk_cache::deserialize`), with its safety argument.

pub mod abi;
mod compiled;
mod config;
mod disk_cache;
mod engine;
#[cfg(feature = "test-util")]
pub mod fixtures;
mod host;
mod instance;
mod runtime;

pub use abi::AbiViolation;
pub use compiled::CompiledAgent;
pub use config::{ConfigLayers, ConfigSource};
pub use disk_cache::{DiskCacheError, DiskCacheKey};
pub use engine::{
    AGENT_WASM_FEATURES, AgentEngine, Allocation, CachePolicy, CompileError, EngineConfig,
    EngineError, EngineStats, PoolingConfig,
};
pub use instance::{
    AgentInstance, InstanceLimits, InstanceLimitsBuilder, InstanceSetup, MessageStats, Reply,
};
pub use runtime::{DeploymentStats, WasmRuntime, WasmRuntimeBuilder, config_keys};
