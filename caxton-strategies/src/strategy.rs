//! The [`Strategy`] trait: a rollout as a pure state machine.
//!
//! A strategy does no I/O and has no clock. Each [`step`](Strategy::step) gets the time,
//! what was observed since the previous step and the operator's commands, and answers
//! with [`Directive`]s: change the split, mirror, promote, roll back, drain, retire, wait,
//! finish. The [`RolloutDriver`](crate::RolloutDriver) carries them out through
//! `caxton-core`'s joints; a host may drive a strategy itself, or write its own strategy
//! and hand it to the driver.

use std::collections::BTreeMap;
use std::fmt;

use caxton_core::{
    AgentId, DeploymentId, DrainStatus, MetricWindow, SessionAffinity, ShadowConfig, Split,
    Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::event::EventKind;

/// The deployments a rollout is about. Fixed for the whole rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutContext {
    /// The agent.
    pub agent: AgentId,
    /// The new deployment being rolled out.
    pub candidate: DeploymentId,
    /// The production deployment when the rollout started; `None` for a first deployment.
    pub baseline: Option<DeploymentId>,
    /// Older deployments of the agent still serving pinned sessions, oldest first.
    pub older: Vec<DeploymentId>,
}

impl RolloutContext {
    /// A context for rolling `candidate` out over `baseline`.
    pub fn new(agent: AgentId, candidate: DeploymentId, baseline: Option<DeploymentId>) -> Self {
        RolloutContext {
            agent,
            candidate,
            baseline,
            older: Vec::new(),
        }
    }

    /// Adds older deployments still serving sessions, oldest first.
    pub fn with_older(mut self, older: Vec<DeploymentId>) -> Self {
        self.older = older;
        self
    }
}

/// The validation pipeline's verdict on the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationVerdict {
    /// Whether every stage passed.
    pub passed: bool,
    /// One line for people: what passed or what failed.
    pub summary: String,
    /// Resource figures measured during validation (e.g. `fuel_per_message_p99`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, f64>,
}

impl ValidationVerdict {
    /// A passing verdict.
    pub fn passed(summary: impl Into<String>) -> Self {
        ValidationVerdict {
            passed: true,
            summary: summary.into(),
            profile: BTreeMap::new(),
        }
    }

    /// A failing verdict.
    pub fn failed(summary: impl Into<String>) -> Self {
        ValidationVerdict {
            passed: false,
            summary: summary.into(),
            profile: BTreeMap::new(),
        }
    }
}

/// How the candidate's warm-up went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmUpReport {
    /// Whether the candidate is ready for messages.
    pub ready: bool,
    /// One line for people.
    pub detail: String,
}

impl WarmUpReport {
    /// A ready candidate.
    pub fn ready(detail: impl Into<String>) -> Self {
        WarmUpReport {
            ready: true,
            detail: detail.into(),
        }
    }

    /// A candidate that did not become ready.
    pub fn not_ready(detail: impl Into<String>) -> Self {
        WarmUpReport {
            ready: false,
            detail: detail.into(),
        }
    }
}

/// What happened since the previous step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Each deployment's metrics over `[previous step, this step)`.
    pub windows: BTreeMap<DeploymentId, MetricWindow>,
    /// The verdict of a validation asked for by [`Directive::Validate`].
    pub validation: Option<ValidationVerdict>,
    /// The result of a warm-up asked for by [`Directive::WarmUp`].
    pub warm_up: Option<WarmUpReport>,
    /// Drain status of the baseline and older deployments.
    pub drains: BTreeMap<DeploymentId, DrainStatus>,
}

impl Observations {
    /// The window of `deployment`, if one was observed.
    pub fn window(&self, deployment: &DeploymentId) -> Option<&MetricWindow> {
        self.windows.get(deployment)
    }
}

/// What an operator may tell a running rollout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Hold traffic where it is; rollback conditions are still checked.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Skip the rest of the current step and go to the next one.
    PromoteStep,
    /// Skip every remaining step and promote the candidate now.
    PromoteFully,
    /// Stop the rollout and send all traffic back to the baseline.
    Abort {
        /// Why, for the audit history.
        reason: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Pause => f.write_str("pause"),
            Command::Resume => f.write_str("resume"),
            Command::PromoteStep => f.write_str("promote to the next step"),
            Command::PromoteFully => f.write_str("promote fully"),
            Command::Abort { reason } => write!(f, "abort ({reason})"),
        }
    }
}

/// Why a rollout rolled back or was aborted, by kind; the kind is the `reason` label of
/// `caxton_deployment_rollback_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReasonKind {
    /// Validation rejected the candidate.
    Validation,
    /// The candidate did not become ready.
    WarmUp,
    /// A rollback condition held.
    Condition,
    /// The statistical judge found a regression.
    Judge,
    /// Shadow outputs differed from production's too often.
    OutputMismatch,
    /// An operator aborted the rollout.
    Operator,
    /// A pause went unanswered past its timeout.
    PauseTimeout,
    /// The rollout ran past the driver's time limit.
    Timeout,
    /// Traffic control, the registry or another joint failed.
    Infrastructure,
    /// Another host drives the rollout now (this host lost its lease); nothing was
    /// changed, and the rollout goes on there.
    HandedOff,
}

impl ReasonKind {
    /// The snake_case name, as serialized and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Validation => "validation",
            ReasonKind::WarmUp => "warm_up",
            ReasonKind::Condition => "condition",
            ReasonKind::Judge => "judge",
            ReasonKind::OutputMismatch => "output_mismatch",
            ReasonKind::Operator => "operator",
            ReasonKind::PauseTimeout => "pause_timeout",
            ReasonKind::Timeout => "timeout",
            ReasonKind::Infrastructure => "infrastructure",
            ReasonKind::HandedOff => "handed_off",
        }
    }
}

/// Why a rollout did not promote: a kind for machines and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reason {
    /// The kind.
    pub kind: ReasonKind,
    /// What happened, e.g. `error_rate 2.1% > 1% at canary 25%`.
    pub message: String,
}

impl Reason {
    /// A reason of `kind`.
    pub fn new(kind: ReasonKind, message: impl Into<String>) -> Self {
        Reason {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate is production.
    Promoted,
    /// The candidate was refused or taken out; the baseline serves again.
    RolledBack {
        /// Why.
        reason: Reason,
    },
    /// The rollout was stopped without a negative verdict (operator, timeout, failure of a
    /// joint); the baseline serves again.
    Aborted {
        /// Why.
        reason: Reason,
    },
}

impl Outcome {
    /// `promoted`, `rolled_back` or `aborted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::Aborted { .. } => "aborted",
        }
    }

    /// The reason, unless promoted.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Promoted => None,
            Outcome::RolledBack { reason } | Outcome::Aborted { reason } => Some(reason),
        }
    }
}

/// What a strategy asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Directive {
    /// Run the validation pipeline on the candidate within `timeout`; the verdict arrives
    /// in [`Observations::validation`] at the next step, which follows at once.
    Validate {
        /// The longest validation may take.
        timeout: std::time::Duration,
    },
    /// Warm the candidate up within `timeout`; the result arrives in
    /// [`Observations::warm_up`] at the next step, which follows at once. A ready candidate
    /// is registered with traffic control.
    WarmUp {
        /// The longest warm-up may take.
        timeout: std::time::Duration,
    },
    /// Spread new traffic over this split.
    SetSplit(Split),
    /// Start, change or (with `None`) stop mirroring traffic to a shadow.
    Mirror(Option<ShadowConfig>),
    /// Turn session pinning on or (with `None`) off, or change its idle timeout. A
    /// session is pinned at its first message after pinning is on, so turning it on does
    /// not hold sessions already running where they are; a sessions agent has it on from
    /// its first deployment.
    SessionAffinity(Option<SessionAffinity>),
    /// Make the candidate production, in the registry and in traffic.
    Promote,
    /// Take the candidate out: all traffic back to the baseline, the candidate rolled back
    /// in the registry and closed in traffic control.
    RollBack {
        /// Why.
        reason: Reason,
    },
    /// Stop new sessions to `deployment` and let the rest finish.
    Drain {
        /// An old deployment (never the candidate).
        deployment: DeploymentId,
    },
    /// Close `deployment` in traffic control and retire it in the registry. With
    /// `forced`, pinned sessions are moved off before they end.
    Retire {
        /// An old deployment (never the candidate).
        deployment: DeploymentId,
        /// Whether sessions may still be pinned to it.
        forced: bool,
    },
    /// Tell observers something (a stage began, a check ran, a hold was extended).
    Emit(EventKind),
    /// Call `step` again at this instant, or earlier if a command arrives.
    WaitUntil(Timestamp),
    /// The rollout is over.
    Finish(Outcome),
}

/// What a strategy is given at each step.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    /// The current time.
    pub now: Timestamp,
    /// The deployments involved.
    pub context: &'a RolloutContext,
    /// What happened since the previous step.
    pub observations: &'a Observations,
    /// Operator commands received since the previous step, oldest first.
    pub commands: &'a [Command],
}

/// A rollout strategy: a pure state machine from observations and commands to directives.
///
/// The driver calls [`step`](Strategy::step) once to start, then again at the time of each
/// [`Directive::WaitUntil`], as soon as a validation or warm-up result is in, and whenever a
/// command arrives. A strategy must eventually answer [`Directive::Finish`]: every wait it
/// asks for should be bounded, so that the rollout ends in promoted, rolled back or
/// aborted. After `Finish` the driver stops calling it.
///
/// The trait is object safe; the driver takes a `Box<dyn Strategy>`.
pub trait Strategy: Send + fmt::Debug {
    /// The strategy's name, e.g. `canary`; recorded on the deployment.
    fn name(&self) -> &str;

    /// Advances the state machine.
    fn step(&mut self, input: StepInput<'_>) -> Vec<Directive>;
}

/// Adds one window of observations to an accumulated one: counts and costs add up,
/// samples are appended and the span widens. Distinct sessions are summed, so a session
/// seen in two windows counts twice. Counts saturate at `u64::MAX`: a metrics source is
/// outside input, and a sum it overflows must not panic.
pub fn merge_window(into: &mut MetricWindow, window: &MetricWindow) {
    if into.requests == 0 && into.latency_ms.is_empty() && into.custom.is_empty() {
        into.start = window.start;
    } else {
        into.start = into.start.min(window.start);
    }
    into.end = into.end.max(window.end);
    into.requests = into.requests.saturating_add(window.requests);
    into.errors = into.errors.saturating_add(window.errors);
    into.sessions = into.sessions.saturating_add(window.sessions);
    into.latency_ms.extend_from_slice(&window.latency_ms);
    into.cost += window.cost;
    for (name, samples) in &window.custom {
        into.custom
            .entry(name.clone())
            .or_default()
            .extend_from_slice(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_appends_samples() {
        let mut acc = MetricWindow::empty(Timestamp::from_millis(100), Timestamp::from_millis(100));
        let mut w1 = MetricWindow::empty(Timestamp::from_millis(100), Timestamp::from_millis(200));
        w1.requests = 10;
        w1.errors = 1;
        w1.latency_ms = vec![1.0, 2.0];
        w1.custom.insert("fuel".into(), vec![5.0]);
        let mut w2 = MetricWindow::empty(Timestamp::from_millis(200), Timestamp::from_millis(300));
        w2.requests = 5;
        w2.cost = 1.5;
        w2.latency_ms = vec![3.0];
        w2.custom.insert("fuel".into(), vec![7.0]);
        merge_window(&mut acc, &w1);
        merge_window(&mut acc, &w2);
        assert_eq!((acc.requests, acc.errors), (15, 1));
        assert_eq!(acc.latency_ms, vec![1.0, 2.0, 3.0]);
        assert_eq!(acc.custom["fuel"], vec![5.0, 7.0]);
        assert_eq!(acc.cost, 1.5);
        assert_eq!(
            (acc.start, acc.end),
            (Timestamp::from_millis(100), Timestamp::from_millis(300))
        );
    }

    // Found by the `sim_metrics` fuzz target (`rps=1e18`): the third window's requests
    // overflowed the step's sum.
    #[test]
    fn merged_counts_saturate_instead_of_overflowing() {
        let mut acc = MetricWindow::empty(Timestamp::from_millis(0), Timestamp::from_millis(0));
        let mut huge = MetricWindow::empty(Timestamp::from_millis(0), Timestamp::from_millis(10));
        huge.requests = u64::MAX / 2 + 1;
        huge.errors = u64::MAX / 2 + 1;
        huge.sessions = u64::MAX / 2 + 1;
        for _ in 0..3 {
            merge_window(&mut acc, &huge);
        }
        assert_eq!(
            (acc.requests, acc.errors, acc.sessions),
            (u64::MAX, u64::MAX, u64::MAX)
        );
        assert_eq!(acc.error_rate(), Some(1.0));
    }

    #[test]
    fn outcomes_serialize_with_their_names() {
        let outcome = Outcome::RolledBack {
            reason: Reason::new(ReasonKind::Condition, "error_rate 2% > 1%"),
        };
        assert_eq!(outcome.as_str(), "rolled_back");
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["outcome"], "rolled_back");
        assert_eq!(json["reason"]["kind"], "condition");
        assert_eq!(Outcome::Promoted.reason(), None);
        let command = serde_json::to_value(Command::Abort {
            reason: "stop".into(),
        })
        .unwrap();
        assert_eq!(command["command"], "abort");
    }
}
