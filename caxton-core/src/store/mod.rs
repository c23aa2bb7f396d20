//! The deployment registry: the trait every store implements, and its errors.
//!
//! The semantics are those of the registry in `docs/architecture.md`, and the conformance
//! suite (`conformance`, behind the `test-util` feature) checks them for any store:
//!
//! - reads are scoped to the agent: another agent's deployment is "not found";
//! - listings are newest first and hide soft-deleted deployments unless asked;
//! - every lifecycle change goes through the one transition table and is audited;
//! - at most one production per agent, always; it is `Running` and not deleted;
//! - promotion is atomic and demotes the previous production in the same step;
//! - a rollback is recorded as a rollback, not as a promotion.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::deployment::{Deployment, NewDeployment};
use crate::id::{AgentId, DeploymentId};
use crate::lifecycle::{IllegalTransition, LifecycleEvent, LifecycleState};

mod backend;
mod memory;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

pub use backend::BackendError;
pub use memory::MemoryStore;

/// Which page of a listing to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many items (1 to [`ListQuery::MAX_LIMIT`]; larger values are capped).
    pub limit: usize,
    /// Continue after the page that returned this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<ListCursor>,
    /// Include soft-deleted deployments.
    #[serde(default)]
    pub include_deleted: bool,
}

impl ListQuery {
    /// The largest page a store returns.
    pub const MAX_LIMIT: usize = 1_000;

    /// The first page of up to 50 deployments, soft-deleted ones hidden.
    pub fn new() -> Self {
        ListQuery {
            limit: 50,
            cursor: None,
            include_deleted: false,
        }
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after a previous page.
    pub fn after(mut self, cursor: ListCursor) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Includes soft-deleted deployments.
    pub fn include_deleted(mut self, include: bool) -> Self {
        self.include_deleted = include;
        self
    }

    /// The page size a store should use: at least 1, at most [`ListQuery::MAX_LIMIT`].
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery::new()
    }
}

/// Where the next page of a listing starts. Opaque: pass back what a store returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListCursor(String);

impl ListCursor {
    /// Wraps a store's cursor text.
    pub fn new(text: impl Into<String>) -> Self {
        ListCursor(text.into())
    }

    /// The cursor text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListCursor>,
}

/// The result of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The new production, as stored after the promotion.
    pub promoted: Deployment,
    /// The production it replaced, as stored after the promotion (no longer production).
    /// `None` when there was none, or when the deployment already was production.
    pub previous: Option<Deployment>,
}

/// Which deployment a rollback restores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTarget {
    /// The most recent earlier production that is still `Running` and not deleted.
    Previous,
    /// This deployment, which must be `Running`, not deleted and not production.
    To(DeploymentId),
}

/// The result of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The deployment that is production again.
    pub restored: Deployment,
    /// The production that was rolled back; its state is now `RolledBack`.
    pub rolled_back: Deployment,
}

/// The deployment registry. See the module docs for its semantics.
#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Records a new deployment in state `Pending`, not production.
    async fn create(&self, new: NewDeployment) -> Result<Deployment, CreateError>;

    /// The deployment `id` of `agent`; another agent's deployment is [`GetError::NotFound`].
    async fn get(&self, agent: &AgentId, id: &DeploymentId) -> Result<Deployment, GetError>;

    /// The agent's deployments, newest first, soft-deleted ones hidden unless asked.
    async fn list(&self, agent: &AgentId, query: &ListQuery)
    -> Result<Page<Deployment>, ListError>;

    /// Applies a lifecycle event. The production deployment must stay `Running`: take it
    /// out of service with [`promote`](Self::promote) or [`rollback`](Self::rollback).
    async fn transition(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Deployment, TransitionError>;

    /// Makes a `Running`, not deleted deployment the agent's production and demotes the
    /// previous one in the same atomic step. Promoting the production again changes nothing.
    async fn promote(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Promotion, PromoteError>;

    /// Promotes only when the agent has no production yet; `Ok(None)` when it has one.
    async fn promote_if_none(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Option<Promotion>, PromoteError>;

    /// Takes the production out of service (`RolledBack`) and makes `target` production.
    async fn rollback(
        &self,
        agent: &AgentId,
        target: &RollbackTarget,
        reason: &str,
    ) -> Result<Rollback, RollbackError>;

    /// Hides a deployment from listings and marks it for purging after `retention`.
    /// Refused for the production. Deleting again keeps the first expiry.
    async fn soft_delete(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        retention: Duration,
        reason: &str,
    ) -> Result<Deployment, DeleteError>;

    /// The deployment's audit history, oldest first.
    async fn history(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Vec<AuditEvent>, GetError>;

    /// The agent's production deployment, if any.
    async fn production(&self, agent: &AgentId) -> Result<Option<Deployment>, GetError>;

    /// Every agent with at least one deployment that is not soft-deleted, by name: what a
    /// restarted host rebuilds.
    async fn agents(&self) -> Result<Vec<AgentId>, ListError>;
}

/// Why a deployment could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The identity is taken (by this agent or another).
    #[error("deployment id `{deployment}` is already taken")]
    AlreadyExists {
        /// The identity.
        deployment: DeploymentId,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a deployment could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// No such deployment for this agent.
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent asked about.
        agent: AgentId,
        /// The deployment asked about.
        deployment: DeploymentId,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a listing could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The cursor does not come from this store and agent.
    #[error("list cursor {cursor:?} is not valid for agent `{agent}`")]
    InvalidCursor {
        /// The agent.
        agent: AgentId,
        /// The cursor text.
        cursor: String,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a lifecycle event was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// No such deployment for this agent.
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The lifecycle does not allow it.
    #[error("deployment `{deployment}`: {source}")]
    Illegal {
        /// The deployment.
        deployment: DeploymentId,
        /// The refused move.
        #[source]
        source: IllegalTransition,
    },
    /// The event would take the production deployment out of `Running`.
    #[error(
        "deployment `{deployment}` is production and must stay running: promote another \
         deployment or roll back before `{event}`"
    )]
    ProductionMustStayRunning {
        /// The deployment.
        deployment: DeploymentId,
        /// The refused event.
        event: LifecycleEvent,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a promotion was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PromoteError {
    /// No such deployment for this agent.
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// Only a `Running` deployment may become production.
    #[error("deployment `{deployment}` is {state}; only a running deployment can be promoted")]
    NotRunning {
        /// The deployment.
        deployment: DeploymentId,
        /// Its state.
        state: LifecycleState,
    },
    /// The deployment was soft-deleted.
    #[error("deployment `{deployment}` was deleted and cannot be promoted")]
    Deleted {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a rollback was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// The agent has no production to roll back.
    #[error("agent `{agent}` has no production deployment to roll back")]
    NoProduction {
        /// The agent.
        agent: AgentId,
    },
    /// No earlier production is still running.
    #[error("agent `{agent}` has no earlier production that is still running and not deleted")]
    NoRollbackTarget {
        /// The agent.
        agent: AgentId,
    },
    /// The named target does not exist for this agent.
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The named target is not `Running`.
    #[error("rollback target `{deployment}` is {state}; only a running deployment can be restored")]
    TargetNotRunning {
        /// The target.
        deployment: DeploymentId,
        /// Its state.
        state: LifecycleState,
    },
    /// The named target was soft-deleted.
    #[error("rollback target `{deployment}` was deleted")]
    TargetDeleted {
        /// The target.
        deployment: DeploymentId,
    },
    /// The named target already is production.
    #[error("rollback target `{deployment}` already is the production deployment")]
    TargetIsProduction {
        /// The target.
        deployment: DeploymentId,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

/// Why a soft delete was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// No such deployment for this agent.
    #[error("deployment `{deployment}` of agent `{agent}` not found")]
    NotFound {
        /// The agent.
        agent: AgentId,
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The production deployment cannot be deleted.
    #[error(
        "deployment `{deployment}` is production; promote another or roll back before deleting it"
    )]
    IsProduction {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The store's backend failed; the source says how.
    #[error("deployment store failed: {0}")]
    Backend(#[from] BackendError),
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database is locked")]
    struct Locked;

    fn backend() -> BackendError {
        BackendError::new("promoting deployment `v2` of agent `processor`", Locked)
    }

    #[test]
    fn backend_failures_keep_their_source() {
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(CreateError::from(backend())),
            Box::new(GetError::from(backend())),
            Box::new(ListError::from(backend())),
            Box::new(TransitionError::from(backend())),
            Box::new(PromoteError::from(backend())),
            Box::new(RollbackError::from(backend())),
            Box::new(DeleteError::from(backend())),
        ];
        for err in errors {
            assert_eq!(
                err.to_string(),
                "deployment store failed: promoting deployment `v2` of agent `processor`: \
                 database is locked"
            );
            let context = err.source().expect("the backend error");
            assert!(context.downcast_ref::<BackendError>().is_some(), "{err}");
            let original = context.source().expect("the original error");
            assert!(original.downcast_ref::<Locked>().is_some(), "{err}");
        }
    }

    #[test]
    fn backend_failures_compare_by_text() {
        assert_eq!(
            PromoteError::from(backend()),
            PromoteError::Backend(BackendError::message(
                "promoting deployment `v2` of agent `processor`: database is locked"
            ))
        );
    }
}
