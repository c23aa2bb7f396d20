//! Why a route or a change was refused. Every check runs before anything is swapped, so an
//! error always means nothing changed.

use caxton_core::{AgentId, BackendError, DeploymentId, DrainPhase, SplitError, TrafficError};

/// Why a message could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No deployment of the agent was ever registered.
    #[error("agent `{agent}` is not known to the router")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The agent has deployments, but none is production yet.
    #[error("agent `{agent}` has no production deployment to route to")]
    NoProduction {
        /// The agent.
        agent: AgentId,
    },
}

/// Why a preview message could not be routed to the deployment it named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreviewError {
    /// No deployment of the agent was ever registered.
    #[error("agent `{agent}` is not known to the router")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The agent has no such deployment: it was never registered, was retired, or belongs
    /// to another agent. Preview answers the same in all three cases, so a caller cannot
    /// learn through one agent which ids another agent has.
    #[error("deployment `{deployment}` is not known to the router")]
    UnknownDeployment {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment is draining or drained and takes no new messages.
    #[error(
        "deployment `{deployment}` is not running (it is {phase:?}) and takes no preview traffic"
    )]
    NotRunning {
        /// The deployment.
        deployment: DeploymentId,
        /// Where its drain stands.
        phase: DrainPhase,
    },
}

/// Why a deployment could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The deployment is registered already, for this agent or another.
    #[error("deployment `{deployment}` is already registered for agent `{agent}`")]
    AlreadyRegistered {
        /// The deployment.
        deployment: DeploymentId,
        /// The agent named in the request.
        agent: AgentId,
    },
    /// The router has registered as many deployments as its arena can index (2³² − 1,
    /// retired ones included); a new router is needed.
    #[error(
        "cannot register deployment `{deployment}`: the router has registered 4,294,967,295 \
         deployments, its limit"
    )]
    TooManyDeployments {
        /// The deployment.
        deployment: DeploymentId,
    },
}

/// Why a change to an agent's route (promote, split, shadow, affinity, pin) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// No deployment of the agent was ever registered.
    #[error("agent `{agent}` is not known to the router")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The deployment was never registered, or was retired.
    #[error("deployment `{deployment}` is not known to the router")]
    UnknownDeployment {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The deployment belongs to another agent.
    #[error("deployment `{deployment}` does not belong to agent `{agent}`")]
    WrongAgent {
        /// The deployment.
        deployment: DeploymentId,
        /// The agent named in the request.
        agent: AgentId,
    },
    /// The deployment is draining or drained and takes no new traffic.
    #[error(
        "deployment `{deployment}` is not running (it is {phase:?}) and cannot take new traffic"
    )]
    NotRunning {
        /// The deployment.
        deployment: DeploymentId,
        /// Where its drain stands.
        phase: DrainPhase,
    },
    /// A split needs a production deployment to fall back on.
    #[error("agent `{agent}` has no production deployment; promote one before splitting traffic")]
    NoProduction {
        /// The agent.
        agent: AgentId,
    },
    /// The split built for the request is malformed.
    #[error("invalid split for agent `{agent}`: {source}")]
    InvalidSplit {
        /// The agent.
        agent: AgentId,
        /// What is wrong with it.
        #[source]
        source: SplitError,
    },
    /// Sessions can be pinned only while session affinity is on.
    #[error("agent `{agent}` has session affinity off; turn it on before pinning sessions")]
    NoSessionAffinity {
        /// The agent.
        agent: AgentId,
    },
}

/// Why a rollback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// No deployment of the agent was ever registered.
    #[error("agent `{agent}` is not known to the router")]
    UnknownAgent {
        /// The agent.
        agent: AgentId,
    },
    /// The rollback window holds no earlier route.
    #[error("agent `{agent}` has no earlier route to roll back to")]
    NothingToRollBack {
        /// The agent.
        agent: AgentId,
    },
    /// The earlier route names a deployment that has since been retired.
    #[error(
        "cannot roll agent `{agent}` back: its earlier route uses deployment `{deployment}`, which was retired"
    )]
    Retired {
        /// The agent.
        agent: AgentId,
        /// The retired deployment.
        deployment: DeploymentId,
    },
    /// The earlier route names a deployment that is draining or drained.
    #[error(
        "cannot roll agent `{agent}` back: its earlier route uses deployment `{deployment}`, which is {phase:?}"
    )]
    NotRunning {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
        /// Where its drain stands.
        phase: DrainPhase,
    },
}

/// Why a drain could not be started, inspected or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DrainError {
    /// The deployment was never registered, or was retired.
    #[error("deployment `{deployment}` is not known to the router")]
    UnknownDeployment {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The current route still sends new traffic or shadow copies to the deployment.
    #[error(
        "deployment `{deployment}` still takes new traffic of agent `{agent}` (production, \
         split or shadow); route traffic away from it before draining it"
    )]
    StillRouted {
        /// The deployment.
        deployment: DeploymentId,
        /// Its agent.
        agent: AgentId,
    },
}

/// Why a deployment could not be retired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetireError {
    /// The deployment was never registered, or was retired already.
    #[error("deployment `{deployment}` is not known to the router")]
    UnknownDeployment {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The current route still sends new traffic or shadow copies to the deployment.
    #[error(
        "deployment `{deployment}` still takes new traffic of agent `{agent}` (production, \
         split or shadow); route traffic away from it before retiring it"
    )]
    StillRouted {
        /// The deployment.
        deployment: DeploymentId,
        /// Its agent.
        agent: AgentId,
    },
}

impl From<RouteError> for TrafficError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::UnknownAgent { agent } => TrafficError::UnknownAgent { agent },
            RouteError::NoProduction { agent } => TrafficError::NoProduction { agent },
        }
    }
}

impl From<PreviewError> for TrafficError {
    fn from(err: PreviewError) -> Self {
        match err {
            PreviewError::UnknownAgent { agent } => TrafficError::UnknownAgent { agent },
            PreviewError::UnknownDeployment { deployment } => {
                TrafficError::UnknownDeployment { deployment }
            }
            PreviewError::NotRunning { deployment, .. } => TrafficError::Draining { deployment },
        }
    }
}

impl From<RegisterError> for TrafficError {
    fn from(err: RegisterError) -> Self {
        match err {
            RegisterError::AlreadyRegistered { deployment, agent } => {
                TrafficError::AlreadyRegistered { deployment, agent }
            }
            err @ RegisterError::TooManyDeployments { .. } => {
                TrafficError::Backend(BackendError::new("the router refused a registration", err))
            }
        }
    }
}

impl From<ChangeError> for TrafficError {
    fn from(err: ChangeError) -> Self {
        match err {
            ChangeError::UnknownAgent { agent } => TrafficError::UnknownAgent { agent },
            ChangeError::UnknownDeployment { deployment } => {
                TrafficError::UnknownDeployment { deployment }
            }
            ChangeError::WrongAgent { deployment, agent } => {
                TrafficError::WrongAgent { deployment, agent }
            }
            ChangeError::NotRunning { deployment, .. } => TrafficError::Draining { deployment },
            ChangeError::NoProduction { agent } => TrafficError::NoProduction { agent },
            ChangeError::InvalidSplit { agent, source } => {
                TrafficError::InvalidSplit { agent, source }
            }
            ChangeError::NoSessionAffinity { agent } => TrafficError::NoSessionAffinity { agent },
        }
    }
}

impl From<RollbackError> for TrafficError {
    fn from(err: RollbackError) -> Self {
        match err {
            RollbackError::UnknownAgent { agent } => TrafficError::UnknownAgent { agent },
            RollbackError::NothingToRollBack { agent } => TrafficError::NothingToRollBack { agent },
            RollbackError::Retired { deployment, .. } => {
                TrafficError::UnknownDeployment { deployment }
            }
            RollbackError::NotRunning { deployment, .. } => TrafficError::Draining { deployment },
        }
    }
}

impl From<DrainError> for TrafficError {
    fn from(err: DrainError) -> Self {
        match err {
            DrainError::UnknownDeployment { deployment } => {
                TrafficError::UnknownDeployment { deployment }
            }
            DrainError::StillRouted { deployment, agent } => {
                TrafficError::StillRouted { deployment, agent }
            }
        }
    }
}

impl From<RetireError> for TrafficError {
    fn from(err: RetireError) -> Self {
        match err {
            RetireError::UnknownDeployment { deployment } => {
                TrafficError::UnknownDeployment { deployment }
            }
            RetireError::StillRouted { deployment, agent } => {
                TrafficError::StillRouted { deployment, agent }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_registration_over_the_limit_keeps_its_source() {
        let deployment = DeploymentId::new("processor-v2").unwrap();
        let err = TrafficError::from(RegisterError::TooManyDeployments {
            deployment: deployment.clone(),
        });
        assert!(matches!(err, TrafficError::Backend(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("traffic control failed: the router refused a registration: ")
                && text.contains("`processor-v2`"),
            "{text}"
        );
        let original = err
            .source()
            .and_then(Error::source)
            .and_then(|source| source.downcast_ref::<RegisterError>());
        assert_eq!(
            original,
            Some(&RegisterError::TooManyDeployments { deployment })
        );
    }

    #[test]
    fn messages_name_what_was_wrong_and_which_id() {
        let agent = AgentId::new("processor").unwrap();
        let deployment = DeploymentId::new("v2").unwrap();
        let err = DrainError::StillRouted {
            deployment: deployment.clone(),
            agent: agent.clone(),
        };
        let text = err.to_string();
        assert!(
            text.contains("`v2`") && text.contains("`processor`"),
            "{text}"
        );
        assert_eq!(
            TrafficError::from(err),
            TrafficError::StillRouted {
                deployment: deployment.clone(),
                agent: agent.clone()
            }
        );
        let err = ChangeError::NotRunning {
            deployment: deployment.clone(),
            phase: DrainPhase::Draining,
        };
        assert!(err.to_string().contains("Draining"));
        assert_eq!(
            TrafficError::from(err),
            TrafficError::Draining { deployment }
        );
    }
}
