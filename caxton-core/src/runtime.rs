//! The agent runtime as a joint: load a version, warm it up, handle messages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, DeploymentId, SessionId};
use crate::version::{Digest, VersionTuple};

/// Everything a runtime needs to load one deployment.
///
/// Its `Debug` output shows the configuration's keys but never its values (they may be
/// secrets), and the module's length and digest instead of its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct LoadSpec {
    /// The agent.
    pub agent: AgentId,
    /// The deployment being loaded.
    pub deployment: DeploymentId,
    /// The version it runs.
    pub version: VersionTuple,
    /// The module bytes; their SHA-256 must be `version.code.digest`.
    pub module: Arc<[u8]>,
    /// Configuration the agent reads through `caxton.config`: the model, prompt and tools
    /// layers and host settings.
    pub config: BTreeMap<String, String>,
    /// Names of host-wide secrets (the runtime's shared configuration) this deployment may
    /// read through `caxton.config`; every other host-wide key reads as absent to it.
    pub granted_secrets: BTreeSet<String>,
}

impl LoadSpec {
    /// A spec with no configuration and no secrets granted.
    pub fn new(
        agent: AgentId,
        deployment: DeploymentId,
        version: VersionTuple,
        module: impl Into<Arc<[u8]>>,
    ) -> Self {
        LoadSpec {
            agent,
            deployment,
            version,
            module: module.into(),
            config: BTreeMap::new(),
            granted_secrets: BTreeSet::new(),
        }
    }

    /// Adds one configuration value.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Lets the deployment read the host-wide secret `name`.
    pub fn grant_secret(mut self, name: impl Into<String>) -> Self {
        self.granted_secrets.insert(name.into());
        self
    }
}

impl fmt::Debug for LoadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config values may be secrets and the module may be megabytes: neither is printed.
        f.debug_struct("LoadSpec")
            .field("agent", &self.agent)
            .field("deployment", &self.deployment)
            .field("version", &self.version)
            .field("module_bytes", &self.module.len())
            .field(
                "module_digest",
                &format_args!("{}", Digest::of(&self.module)),
            )
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .field("granted_secrets", &self.granted_secrets)
            .finish()
    }
}

/// What one message cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyStats {
    /// Wall-clock time the runtime spent on the message, from the call to the reply,
    /// starting an instance included.
    pub latency: Duration,
    /// Fuel the agent burnt, when the runtime meters fuel.
    pub fuel_consumed: Option<u64>,
    /// The agent's memory after the message, in bytes.
    pub memory_bytes: u64,
}

/// A reply and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReply {
    /// The reply's bytes.
    pub bytes: Vec<u8>,
    /// What the message cost.
    pub stats: ReplyStats,
}

/// How a loaded deployment is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// Warm-up passed; the deployment may take messages.
    pub ready: bool,
    /// Loaded, not being unloaded, and not failing every message: see
    /// [`AgentRuntime::health`].
    pub live: bool,
    /// Messages handled, successful or not.
    pub messages: u64,
    /// Messages that ended in a trap or a limit.
    pub traps: u64,
    /// Sessions with a live instance.
    pub sessions: u64,
    /// The last failure, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Runs agents. `caxton-wasm` implements it on wasmtime; a host may run agents elsewhere.
/// Hosts hold it as `Arc<dyn AgentRuntime>`.
///
/// Methods block for at most the runtime's per-message deadline; async hosts call them
/// from a blocking-capable thread.
pub trait AgentRuntime: Send + Sync {
    /// Compiles and prepares a deployment. It takes no messages until [`warm_up`] passes.
    ///
    /// [`warm_up`]: AgentRuntime::warm_up
    fn load(&self, spec: LoadSpec) -> Result<(), AgentError>;

    /// Starts an instance and runs the agent's initialisation; on success the deployment
    /// is ready for messages.
    fn warm_up(&self, deployment: &DeploymentId) -> Result<(), AgentError>;

    /// Handles one message, inside `session` when given, and returns the reply with what
    /// it cost.
    fn handle(
        &self,
        deployment: &DeploymentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<AgentReply, AgentError>;

    /// Ends a session and frees its instance; returns whether it existed.
    fn end_session(&self, deployment: &DeploymentId, session: &SessionId) -> bool;

    /// How a deployment is doing; `None` when it is not loaded.
    ///
    /// `ready` turns true once warm-up passes. `live` is false while the deployment is
    /// being unloaded, and after a run of consecutive failures that were the agent's
    /// fault ([`AgentError::is_agent_fault`]: traps and limits, in warm-up or on
    /// messages) with no success in between; the length of that run is the runtime's
    /// to set. Other failures (refusals by the host) neither count nor break the run. A
    /// deployment that is not live still takes messages, and one success makes it live
    /// again; a host that sees it stay down replaces or unloads it.
    fn health(&self, deployment: &DeploymentId) -> Option<AgentHealth>;

    /// The deployments loaded, in no particular order.
    fn loaded(&self) -> Vec<DeploymentId>;

    /// Stops taking messages for a deployment, lets running ones finish, and frees it.
    fn unload(&self, deployment: &DeploymentId) -> Result<(), AgentError>;

    /// Drops instances of sessions idle past the runtime's timeout; returns how many.
    /// Default: 0.
    fn evict_idle_sessions(&self) -> usize {
        0
    }
}

/// Why a runtime could not load, warm up or run a deployment. The failed instance is
/// discarded; the runtime and every other deployment keep serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The deployment is not loaded.
    #[error("deployment `{deployment}` is not loaded")]
    NotLoaded {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment is already loaded.
    #[error("deployment `{deployment}` is already loaded")]
    AlreadyLoaded {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment is loaded but has not passed warm-up.
    #[error("deployment `{deployment}` has not passed warm-up and takes no messages")]
    NotReady {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment is being unloaded.
    #[error("deployment `{deployment}` is being unloaded")]
    Unloading {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The module bytes do not match the version's code digest.
    #[error(
        "module of deployment `{deployment}` has digest {actual}, but its version names {expected}"
    )]
    DigestMismatch {
        /// The deployment.
        deployment: DeploymentId,
        /// The digest in the version tuple.
        expected: String,
        /// The digest of the bytes given.
        actual: String,
    },
    /// The module could not be compiled.
    #[error("module of deployment `{deployment}` does not compile: {message}")]
    Compile {
        /// The deployment.
        deployment: DeploymentId,
        /// The compiler's message.
        message: String,
    },
    /// The module breaks the agent ABI.
    #[error("module of deployment `{deployment}` breaks the agent ABI: {message}")]
    AbiViolation {
        /// The deployment.
        deployment: DeploymentId,
        /// What is missing or wrong.
        message: String,
    },
    /// `caxton_init` returned non-zero or trapped.
    #[error("`caxton_init` of deployment `{deployment}` failed: {message}")]
    InitFailed {
        /// The deployment.
        deployment: DeploymentId,
        /// The status it returned or the trap.
        message: String,
    },
    /// The message used up its fuel budget.
    #[error("deployment `{deployment}` ran out of fuel (budget {budget})")]
    OutOfFuel {
        /// The deployment.
        deployment: DeploymentId,
        /// The per-message budget.
        budget: u64,
    },
    /// The message ran past its wall-clock deadline.
    #[error("deployment `{deployment}` exceeded its deadline of {limit:?}")]
    DeadlineExceeded {
        /// The deployment.
        deployment: DeploymentId,
        /// The per-message deadline.
        limit: Duration,
    },
    /// The instance tried to grow memory past its limit.
    #[error("deployment `{deployment}` hit its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        /// The deployment.
        deployment: DeploymentId,
        /// The limit.
        limit_bytes: u64,
    },
    /// The wasm stack overflowed.
    #[error("deployment `{deployment}` overflowed its stack")]
    StackOverflow {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The agent trapped (`unreachable`, out-of-bounds access, division by zero…).
    #[error("deployment `{deployment}` trapped: {message}")]
    Trap {
        /// The deployment.
        deployment: DeploymentId,
        /// The trap.
        message: String,
    },
    /// The reply pointer and length fall outside linear memory.
    #[error(
        "deployment `{deployment}` returned a reply at {ptr}+{len}, outside its {memory_bytes}-byte memory"
    )]
    ReplyOutOfBounds {
        /// The deployment.
        deployment: DeploymentId,
        /// The reply pointer.
        ptr: u32,
        /// The reply length.
        len: u32,
        /// The size of linear memory.
        memory_bytes: u64,
    },
    /// The message was larger than the runtime accepts.
    #[error("message of {len} bytes to deployment `{deployment}` is over the {limit}-byte limit")]
    MessageTooLarge {
        /// The deployment.
        deployment: DeploymentId,
        /// The message size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A new session found the deployment at its bound of sessions, every one of them
    /// busy with a message, so none could make room.
    #[error(
        "deployment `{deployment}` has {limit} sessions, all busy; a new session must wait for one"
    )]
    TooManySessions {
        /// The deployment.
        deployment: DeploymentId,
        /// The most sessions it keeps.
        limit: usize,
    },
    /// The runtime failed for a reason of its own.
    #[error("runtime failed for deployment `{deployment}`: {message}")]
    Host {
        /// The deployment.
        deployment: DeploymentId,
        /// What went wrong.
        message: String,
    },
}

impl AgentError {
    /// A stable snake_case name of the failure, for metrics and findings.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NotLoaded { .. } => "not_loaded",
            AgentError::AlreadyLoaded { .. } => "already_loaded",
            AgentError::NotReady { .. } => "not_ready",
            AgentError::Unloading { .. } => "unloading",
            AgentError::DigestMismatch { .. } => "digest_mismatch",
            AgentError::Compile { .. } => "compile_failed",
            AgentError::AbiViolation { .. } => "abi_violation",
            AgentError::InitFailed { .. } => "init_failed",
            AgentError::OutOfFuel { .. } => "out_of_fuel",
            AgentError::DeadlineExceeded { .. } => "deadline_exceeded",
            AgentError::MemoryLimit { .. } => "memory_limit",
            AgentError::StackOverflow { .. } => "stack_overflow",
            AgentError::Trap { .. } => "trap",
            AgentError::ReplyOutOfBounds { .. } => "reply_out_of_bounds",
            AgentError::MessageTooLarge { .. } => "message_too_large",
            AgentError::TooManySessions { .. } => "too_many_sessions",
            AgentError::Host { .. } => "host_error",
        }
    }

    /// Whether the failure was the agent's doing while handling a message (a trap or a
    /// limit), as opposed to a refusal by the host.
    pub fn is_agent_fault(&self) -> bool {
        matches!(
            self,
            AgentError::InitFailed { .. }
                | AgentError::OutOfFuel { .. }
                | AgentError::DeadlineExceeded { .. }
                | AgentError::MemoryLimit { .. }
                | AgentError::StackOverflow { .. }
                | AgentError::Trap { .. }
                | AgentError::ReplyOutOfBounds { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_deployment_and_have_stable_codes() {
        let deployment = DeploymentId::new("proc-v2").unwrap();
        let err = AgentError::ReplyOutOfBounds {
            deployment,
            ptr: 70_000,
            len: 10,
            memory_bytes: 65_536,
        };
        assert_eq!(err.code(), "reply_out_of_bounds");
        assert!(err.is_agent_fault());
        let text = err.to_string();
        assert!(
            text.contains("proc-v2") && text.contains("70000") && text.contains("65536"),
            "{text}"
        );
    }

    #[test]
    fn load_spec_debug_hides_config_values_and_module_bytes() {
        use crate::version::{CodeLayer, ModelLayer, PromptLayer, ToolsLayer};
        let module = b"\0asm-module-bytes-0123456789".to_vec();
        let version = VersionTuple::new(
            CodeLayer::from_module(&module),
            ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
            PromptLayer::from_prompt("You process orders.", &[]),
            ToolsLayer::from_json("[]").unwrap(),
        );
        let spec = LoadSpec::new(
            AgentId::new("processor").unwrap(),
            DeploymentId::new("proc-v1").unwrap(),
            version,
            module.clone(),
        )
        .with_config("api_token", "hunter2-value")
        .grant_secret("api-key");
        assert!(spec.granted_secrets.contains("api-key"));
        let text = format!("{spec:?}");
        for shown in [
            "proc-v1",
            "api_token",
            "api-key",
            &module.len().to_string(),
            &Digest::of(&module).to_string(),
        ] {
            assert!(text.contains(shown), "`{shown}` missing in {text}");
        }
        assert!(!text.contains("hunter2"), "a config value leaked: {text}");
        assert!(
            !text.contains("module-bytes"),
            "module bytes leaked: {text}"
        );
        // The bytes as a list of numbers (the derived form) must not appear either.
        assert!(!text.contains("[0, 97"), "module bytes leaked: {text}");
    }

    #[test]
    fn health_round_trips() {
        let health = AgentHealth {
            ready: true,
            live: true,
            messages: 3,
            traps: 1,
            sessions: 2,
            last_error: Some("trap".into()),
        };
        let json = serde_json::to_string(&health).unwrap();
        assert_eq!(serde_json::from_str::<AgentHealth>(&json).unwrap(), health);
    }
}
