//! The audit history: one entry for everything that happens to a deployment.

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, DeploymentId};
use crate::lifecycle::{LifecycleEvent, LifecycleState};
use crate::time::Timestamp;

/// One entry of a deployment's audit history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the store's history, increasing across all deployments of the store;
    /// `0` until a store records the event.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The agent the deployment belongs to.
    pub agent: AgentId,
    /// The deployment it happened to.
    pub deployment: DeploymentId,
    /// What happened.
    pub action: AuditAction,
    /// Why, as given by whoever caused it.
    pub reason: String,
}

/// What an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditAction {
    /// The deployment was created in `state`.
    Created {
        /// Its first state.
        state: LifecycleState,
    },
    /// The lifecycle moved.
    Transition {
        /// The state before.
        from: LifecycleState,
        /// The state after.
        to: LifecycleState,
        /// The event that moved it.
        event: LifecycleEvent,
    },
    /// The deployment became the agent's production.
    Promoted {
        /// The production it replaced, if any.
        previous: Option<DeploymentId>,
    },
    /// The deployment stopped being production because another was promoted.
    Demoted {
        /// The deployment that took over.
        replaced_by: DeploymentId,
    },
    /// A rollback made this earlier deployment production again.
    RestoredByRollback {
        /// The production it replaced, which was rolled back.
        rolled_back: DeploymentId,
    },
    /// The deployment was hidden from listings and will be purged after `expires_at`.
    SoftDeleted {
        /// When it may be purged.
        expires_at: Timestamp,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_with_a_stable_tag() {
        let d = DeploymentId::new("d2").unwrap();
        let actions = [
            (
                AuditAction::Created {
                    state: LifecycleState::Pending,
                },
                "created",
            ),
            (
                AuditAction::Transition {
                    from: LifecycleState::Running,
                    to: LifecycleState::RolledBack,
                    event: LifecycleEvent::RollBack,
                },
                "transition",
            ),
            (
                AuditAction::Promoted {
                    previous: Some(d.clone()),
                },
                "promoted",
            ),
            (
                AuditAction::Demoted {
                    replaced_by: d.clone(),
                },
                "demoted",
            ),
            (
                AuditAction::RestoredByRollback {
                    rolled_back: d.clone(),
                },
                "restored_by_rollback",
            ),
            (
                AuditAction::SoftDeleted {
                    expires_at: Timestamp::from_millis(9),
                },
                "soft_deleted",
            ),
        ];
        for (action, tag) in actions {
            let event = AuditEvent {
                seq: 3,
                at: Timestamp::from_millis(1),
                agent: AgentId::new("a").unwrap(),
                deployment: DeploymentId::new("d1").unwrap(),
                action,
                reason: "because".into(),
            };
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["action"]["action"], tag);
            assert_eq!(serde_json::from_value::<AuditEvent>(json).unwrap(), event);
        }
    }
}
