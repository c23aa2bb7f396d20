//! Why an operation of the host was refused or failed. A refused operation changed nothing.

use caxton_core::store::{
    CreateError, DeleteError, GetError, ListError, PromoteError,
    RollbackError as StoreRollbackError, TransitionError,
};
use caxton_core::{
    AgentError, AgentId, ArtifactError, DeploymentId, JournalError, LeaseError, LeaseHolder,
    LifecycleState,
};
use caxton_router::{ChangeError, PreviewError, RegisterError, RouteError};
use caxton_strategies::DriverError;
use caxton_strategies::config::ConfigError;

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The default runtime's engine could not be created.
    #[error("the agent runtime could not start: {0}")]
    Engine(#[from] caxton_wasm::EngineError),
    /// The default validation pipeline could not be created.
    #[error("the validation pipeline could not start: {0}")]
    Pipeline(#[from] caxton_validate::PipelineError),
    /// The rollout lease time-to-live is out of bounds.
    #[error("a rollout lease's time-to-live must be between 30 ms and one day, not {ttl:?}")]
    LeaseTtl {
        /// The time-to-live asked for.
        ttl: std::time::Duration,
    },
}

/// A failure of the deployment registry, by the operation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Creating a deployment.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Reading a deployment.
    #[error(transparent)]
    Get(#[from] GetError),
    /// Listing deployments.
    #[error(transparent)]
    List(#[from] ListError),
    /// A lifecycle transition.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A promotion.
    #[error(transparent)]
    Promote(#[from] PromoteError),
    /// A rollback.
    #[error(transparent)]
    Rollback(#[from] StoreRollbackError),
    /// A soft delete.
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

/// Why an operation of the host was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The request is malformed.
    #[error("invalid request: {field}: {message}")]
    InvalidRequest {
        /// The field at fault, e.g. `label`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The agent has no deployments.
    #[error("agent `{agent}` has no deployments")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// No such deployment for this agent (another agent's deployment is "not found" too).
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent asked about.
        agent: AgentId,
        /// The deployment asked about.
        deployment: DeploymentId,
    },
    /// A rollout of the agent is running; at most one runs per agent.
    #[error(
        "agent `{agent}` already has a rollout in progress (deployment `{deployment}`): wait for it, \
         promote it or abort it before deploying again"
    )]
    RolloutInProgress {
        /// The agent.
        agent: AgentId,
        /// The candidate of the running rollout.
        deployment: DeploymentId,
    },
    /// Another host on the same registry drives the agent's rollout (it holds the
    /// rollout's lease): this host neither starts another rollout of the agent nor
    /// changes its production meanwhile.
    #[error(
        "the rollout of deployment `{deployment}` of agent `{agent}` is driven by host \
         `{holder}`: promote, pause, resume and abort it (any host relays them), or wait \
         for it to end before deploying or rolling back (should that host stop, another \
         takes the rollout over)"
    )]
    RolloutElsewhere {
        /// The agent.
        agent: AgentId,
        /// The candidate of that rollout.
        deployment: DeploymentId,
        /// The host that holds the rollout's lease.
        holder: LeaseHolder,
    },
    /// The operation needs a running rollout of this deployment and there is none.
    #[error("deployment `{deployment}` of agent `{agent}` has no rollout in progress")]
    NoRollout {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment cannot be promoted in its state.
    #[error("deployment `{deployment}` is {state}; only a running deployment can be promoted")]
    NotPromotable {
        /// The deployment.
        deployment: DeploymentId,
        /// Its state.
        state: LifecycleState,
    },
    /// A rollback must name the production or a rollout's candidate.
    #[error(
        "deployment `{deployment}` is neither the production of agent `{agent}` nor a candidate \
         of a running rollout, so there is nothing to roll back"
    )]
    NotRollbackable {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The agent has no earlier known-good version to return to.
    #[error("agent `{agent}` has no earlier known-good deployment to roll back to")]
    NoRollbackTarget {
        /// The agent.
        agent: AgentId,
    },
    /// The named rollback target never ran as a known-good version.
    #[error(
        "rollback target `{deployment}` is {state} and was never known-good; only a version that \
         ran can be restored"
    )]
    TargetNotRestorable {
        /// The target.
        deployment: DeploymentId,
        /// Its state.
        state: LifecycleState,
    },
    /// The deployment was deleted.
    #[error("deployment `{deployment}` was deleted")]
    Deleted {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment's stored load spec is missing or unreadable, so it cannot be loaded.
    #[error("deployment `{deployment}` cannot be loaded from its artifacts: {message}")]
    Unloadable {
        /// The deployment.
        deployment: DeploymentId,
        /// What is wrong.
        message: String,
    },
    /// The rollout spec does not make a strategy.
    #[error("rollout spec of agent `{agent}` is not valid: {source}")]
    Strategy {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// The rollout could not start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The artifact store failed or lacks an artifact.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The registry failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rollout journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The rollout leases could not be read or written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The runtime could not load or warm up a version.
    #[error(transparent)]
    Runtime(#[from] AgentError),
    /// The router refused a change.
    #[error(transparent)]
    Traffic(#[from] ChangeError),
    /// The router refused a registration.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShutDown,
}

macro_rules! store_from {
    ($($source:ty),*) => {
        $(impl From<$source> for HostError {
            fn from(error: $source) -> Self {
                HostError::Store(StoreError::from(error))
            }
        })*
    };
}

store_from!(
    CreateError,
    GetError,
    ListError,
    TransitionError,
    PromoteError,
    StoreRollbackError,
    DeleteError
);

impl HostError {
    /// A stable snake_case code, for APIs (`not_found`, `rollout_in_progress`, …).
    pub fn code(&self) -> &'static str {
        match self {
            HostError::InvalidRequest { .. } => "invalid_request",
            HostError::UnknownAgent { .. } => "unknown_agent",
            HostError::NotFound { .. }
            | HostError::Store(StoreError::Get(GetError::NotFound { .. })) => "not_found",
            HostError::RolloutInProgress { .. } => "rollout_in_progress",
            HostError::RolloutElsewhere { .. } => "rollout_elsewhere",
            HostError::NoRollout { .. } => "no_rollout",
            HostError::NotPromotable { .. } => "not_promotable",
            HostError::NotRollbackable { .. } => "not_rollbackable",
            HostError::NoRollbackTarget { .. } => "no_rollback_target",
            HostError::TargetNotRestorable { .. } => "target_not_restorable",
            HostError::Deleted { .. } => "deleted",
            HostError::Unloadable { .. } => "unloadable",
            HostError::Strategy { .. } => "invalid_rollout_spec",
            HostError::Driver(_) => "rollout_failed_to_start",
            HostError::Artifact(ArtifactError::NotFound { .. }) => "artifact_not_found",
            HostError::Artifact(_) => "artifact_store_failed",
            HostError::Store(StoreError::Delete(DeleteError::IsProduction { .. })) => {
                "is_production"
            }
            HostError::Store(_) => "registry_failed",
            HostError::Journal(_) => "journal_failed",
            HostError::Lease(_) => "lease_failed",
            HostError::Runtime(_) => "runtime_failed",
            HostError::Traffic(_) | HostError::Register(_) => "routing_failed",
            HostError::ShutDown => "shutting_down",
        }
    }

    /// Whether the error says a named thing does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            HostError::NotFound { .. }
                | HostError::UnknownAgent { .. }
                | HostError::Artifact(ArtifactError::NotFound { .. })
                | HostError::Store(StoreError::Get(GetError::NotFound { .. }))
                | HostError::Store(StoreError::Transition(TransitionError::NotFound { .. }))
                | HostError::Store(StoreError::Promote(PromoteError::NotFound { .. }))
                | HostError::Store(StoreError::Delete(DeleteError::NotFound { .. }))
                | HostError::Store(StoreError::Rollback(StoreRollbackError::NotFound { .. }))
        )
    }

    /// Whether the operation conflicts with the current state (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            HostError::RolloutInProgress { .. }
                | HostError::RolloutElsewhere { .. }
                | HostError::NoRollout { .. }
                | HostError::NotPromotable { .. }
                | HostError::NotRollbackable { .. }
                | HostError::NoRollbackTarget { .. }
                | HostError::TargetNotRestorable { .. }
                | HostError::Deleted { .. }
                | HostError::Store(StoreError::Delete(DeleteError::IsProduction { .. }))
                | HostError::Store(StoreError::Promote(_))
                | HostError::Store(StoreError::Rollback(_))
                | HostError::Store(StoreError::Transition(_))
        )
    }
}

/// Why a message got no reply. Every such message is counted on its agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The router had nowhere to send it (unknown agent, no production).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Preview routing refused the named deployment.
    #[error(transparent)]
    Preview(#[from] PreviewError),
    /// The agent failed on it (a trap or a limit); recorded on the deployment's metrics.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl SendError {
    /// A stable snake_case code: `unknown_agent`, `no_production`, `not_found`,
    /// `agent_failed`, `not_ready`.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Route(RouteError::UnknownAgent { .. }) => "unknown_agent",
            SendError::Route(RouteError::NoProduction { .. }) => "no_production",
            SendError::Route(_) => "not_routable",
            SendError::Preview(PreviewError::NotRunning { .. }) => "not_running",
            SendError::Preview(_) => "not_found",
            SendError::Agent(error) if error.is_agent_fault() => "agent_failed",
            SendError::Agent(_) => "not_ready",
        }
    }
}
