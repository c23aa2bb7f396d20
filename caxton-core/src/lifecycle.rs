//! The deployment lifecycle as one total transition function.
//!
//! ```text
//! Pending → Validating → Deploying → Running → Draining → Retired
//!               │            │          │          │
//!               └→ Failed ←──┘          └→ RolledBack ←┘
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditAction, AuditEvent};
use crate::id::{AgentId, DeploymentId};
use crate::time::Timestamp;

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Created, nothing has run yet.
    Pending,
    /// The validation pipeline is running.
    Validating,
    /// Validated; instances are warming up. Takes no messages yet.
    Deploying,
    /// Warm and able to take messages.
    Running,
    /// Takes no new sessions; finishing what it has.
    Draining,
    /// Drained and gone. Terminal.
    Retired,
    /// Validation or warm-up failed. Terminal.
    Failed,
    /// Taken out of service by a rollback. Terminal.
    RolledBack,
}

impl LifecycleState {
    /// Every state, in lifecycle order.
    pub const ALL: [LifecycleState; 8] = [
        LifecycleState::Pending,
        LifecycleState::Validating,
        LifecycleState::Deploying,
        LifecycleState::Running,
        LifecycleState::Draining,
        LifecycleState::Retired,
        LifecycleState::Failed,
        LifecycleState::RolledBack,
    ];

    /// The state's snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Pending => "pending",
            LifecycleState::Validating => "validating",
            LifecycleState::Deploying => "deploying",
            LifecycleState::Running => "running",
            LifecycleState::Draining => "draining",
            LifecycleState::Retired => "retired",
            LifecycleState::Failed => "failed",
            LifecycleState::RolledBack => "rolled_back",
        }
    }

    /// Whether no event leads out of this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            LifecycleState::Retired | LifecycleState::Failed | LifecycleState::RolledBack
        )
    }

    /// Whether a deployment in this state may take messages.
    pub fn takes_messages(self) -> bool {
        matches!(self, LifecycleState::Running | LifecycleState::Draining)
    }

    /// The state `event` leads to from here, or the reason it may not happen.
    ///
    /// This is the one transition table of the lifecycle: every (state, event) pair has an
    /// answer.
    pub fn apply(self, event: LifecycleEvent) -> Result<LifecycleState, IllegalTransition> {
        use LifecycleEvent as E;
        use LifecycleState as S;
        let next = match (self, event) {
            (S::Pending, E::BeginValidation) => S::Validating,
            (S::Validating, E::ValidationPassed) => S::Deploying,
            (S::Validating, E::ValidationFailed) => S::Failed,
            (S::Deploying, E::WarmUpPassed) => S::Running,
            (S::Deploying, E::WarmUpFailed) => S::Failed,
            (S::Running, E::Drain) => S::Draining,
            (S::Draining, E::Retire) => S::Retired,
            (S::Running | S::Draining, E::RollBack) => S::RolledBack,
            (from, event) => {
                return Err(IllegalTransition {
                    from,
                    event,
                    to: event.target(),
                });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a deployment and may move it to another state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// The validation pipeline starts.
    BeginValidation,
    /// Every validation stage passed.
    ValidationPassed,
    /// A validation stage failed.
    ValidationFailed,
    /// Warm-up finished; the deployment is ready for messages.
    WarmUpPassed,
    /// Warm-up failed.
    WarmUpFailed,
    /// Stop new sessions and let the rest finish.
    Drain,
    /// Draining finished.
    Retire,
    /// Take the deployment out of service after a failed rollout.
    RollBack,
}

impl LifecycleEvent {
    /// Every event.
    pub const ALL: [LifecycleEvent; 8] = [
        LifecycleEvent::BeginValidation,
        LifecycleEvent::ValidationPassed,
        LifecycleEvent::ValidationFailed,
        LifecycleEvent::WarmUpPassed,
        LifecycleEvent::WarmUpFailed,
        LifecycleEvent::Drain,
        LifecycleEvent::Retire,
        LifecycleEvent::RollBack,
    ];

    /// The event's snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::BeginValidation => "begin_validation",
            LifecycleEvent::ValidationPassed => "validation_passed",
            LifecycleEvent::ValidationFailed => "validation_failed",
            LifecycleEvent::WarmUpPassed => "warm_up_passed",
            LifecycleEvent::WarmUpFailed => "warm_up_failed",
            LifecycleEvent::Drain => "drain",
            LifecycleEvent::Retire => "retire",
            LifecycleEvent::RollBack => "roll_back",
        }
    }

    /// The state this event leads to wherever it is legal.
    pub fn target(self) -> LifecycleState {
        match self {
            LifecycleEvent::BeginValidation => LifecycleState::Validating,
            LifecycleEvent::ValidationPassed => LifecycleState::Deploying,
            LifecycleEvent::ValidationFailed | LifecycleEvent::WarmUpFailed => {
                LifecycleState::Failed
            }
            LifecycleEvent::WarmUpPassed => LifecycleState::Running,
            LifecycleEvent::Drain => LifecycleState::Draining,
            LifecycleEvent::Retire => LifecycleState::Retired,
            LifecycleEvent::RollBack => LifecycleState::RolledBack,
        }
    }
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that may not happen in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("illegal lifecycle transition: `{event}` cannot move a `{from}` deployment to `{to}`")]
pub struct IllegalTransition {
    /// The state the deployment is in.
    pub from: LifecycleState,
    /// The event that was refused.
    pub event: LifecycleEvent,
    /// Where the event would have led.
    pub to: LifecycleState,
}

/// Applies `event` to a deployment in state `from` and writes the audit event for it.
///
/// Stores call this so the state they record and the audit entry cannot disagree.
pub fn transition(
    agent: &AgentId,
    deployment: &DeploymentId,
    from: LifecycleState,
    event: LifecycleEvent,
    reason: impl Into<String>,
    at: Timestamp,
) -> Result<(LifecycleState, AuditEvent), IllegalTransition> {
    let to = from.apply(event)?;
    let audit = AuditEvent {
        seq: 0,
        at,
        agent: agent.clone(),
        deployment: deployment.clone(),
        action: AuditAction::Transition { from, to, event },
        reason: reason.into(),
    };
    Ok((to, audit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The lifecycle of `docs/architecture.md`, written out independently of `apply`.
    fn expected(from: LifecycleState, event: LifecycleEvent) -> Option<LifecycleState> {
        use LifecycleEvent::*;
        use LifecycleState::*;
        let table = [
            (Pending, BeginValidation, Validating),
            (Validating, ValidationPassed, Deploying),
            (Validating, ValidationFailed, Failed),
            (Deploying, WarmUpPassed, Running),
            (Deploying, WarmUpFailed, Failed),
            (Running, Drain, Draining),
            (Running, RollBack, RolledBack),
            (Draining, Retire, Retired),
            (Draining, RollBack, RolledBack),
        ];
        table
            .iter()
            .find(|(f, e, _)| *f == from && *e == event)
            .map(|(_, _, to)| *to)
    }

    #[test]
    fn every_pair_has_a_defined_answer() {
        let mut legal = 0;
        for from in LifecycleState::ALL {
            for event in LifecycleEvent::ALL {
                match (from.apply(event), expected(from, event)) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want);
                        legal += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(
                            err,
                            IllegalTransition {
                                from,
                                event,
                                to: event.target()
                            }
                        )
                    }
                    (got, want) => panic!("{from} + {event}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal, 9);
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in LifecycleState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in LifecycleEvent::ALL {
                assert!(from.apply(event).is_err());
            }
        }
    }

    #[test]
    fn illegal_move_names_from_event_and_to() {
        let err = LifecycleState::Pending
            .apply(LifecycleEvent::Drain)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal lifecycle transition: `drain` cannot move a `pending` deployment to `draining`"
        );
    }

    #[test]
    fn transition_writes_a_matching_audit_event() {
        let agent = AgentId::new("a").unwrap();
        let dep = DeploymentId::new("d").unwrap();
        let at = Timestamp::from_millis(5);
        let (to, audit) = transition(
            &agent,
            &dep,
            LifecycleState::Running,
            LifecycleEvent::Drain,
            "newer version promoted",
            at,
        )
        .unwrap();
        assert_eq!(to, LifecycleState::Draining);
        assert_eq!(audit.at, at);
        assert_eq!(audit.reason, "newer version promoted");
        assert_eq!(
            audit.action,
            AuditAction::Transition {
                from: LifecycleState::Running,
                to: LifecycleState::Draining,
                event: LifecycleEvent::Drain
            }
        );
    }

    #[test]
    fn serde_uses_stable_snake_case_names() {
        for state in LifecycleState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(
                serde_json::from_str::<LifecycleState>(&json).unwrap(),
                state
            );
        }
        for event in LifecycleEvent::ALL {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
            assert_eq!(
                serde_json::from_str::<LifecycleEvent>(&json).unwrap(),
                event
            );
        }
        let err = IllegalTransition {
            from: LifecycleState::Retired,
            event: LifecycleEvent::Drain,
            to: LifecycleState::Draining,
        };
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(
            json,
            r#"{"from":"retired","event":"drain","to":"draining"}"#
        );
        assert_eq!(
            serde_json::from_str::<IllegalTransition>(&json).unwrap(),
            err
        );
    }

    fn any_event() -> impl Strategy<Value = LifecycleEvent> {
        proptest::sample::select(LifecycleEvent::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn only_legal_transitions_succeed_and_land_where_the_table_says(
            events in proptest::collection::vec(any_event(), 0..40)
        ) {
            let mut state = LifecycleState::Pending;
            for event in events {
                match (state.apply(event), expected(state, event)) {
                    (Ok(next), Some(want)) => {
                        prop_assert_eq!(next, want);
                        state = next;
                    }
                    (Err(err), None) => {
                        prop_assert_eq!(err.from, state);
                        prop_assert_eq!(err.event, event);
                    }
                    (got, want) => prop_assert!(false, "{state} + {event}: {got:?} vs {want:?}"),
                }
            }
        }
    }
}
