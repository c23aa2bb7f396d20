//! The agent runtime as a joint: load a version, warm it up, handle messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, DeploymentId, SessionId};
use crate::version::VersionTuple;

/// Everything a runtime needs to load one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl LoadSpec {
    /// A spec with no configuration.
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
        }
    }

    /// Adds one configuration value.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }
}

/// How a loaded deployment is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// Warm-up passed; the deployment may take messages.
    pub ready: bool,
    /// Loaded and not being unloaded.
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

    /// Handles one message, inside `session` when given, and returns the reply bytes.
    fn handle(
        &self,
        deployment: &DeploymentId,
        session: Option<&SessionId>,
        message: &[u8],
    ) -> Result<Vec<u8>, AgentError>;

    /// Ends a session and frees its instance; returns whether it existed.
    fn end_session(&self, deployment: &DeploymentId, session: &SessionId) -> bool;

    /// How a deployment is doing; `None` when it is not loaded.
    fn health(&self, deployment: &DeploymentId) -> Option<AgentHealth>;

    /// Stops taking messages for a deployment, lets running ones finish, and frees it.
    fn unload(&self, deployment: &DeploymentId) -> Result<(), AgentError>;
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
