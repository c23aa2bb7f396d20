//! Structured rollout events: what the driver and the strategies tell observers.
//!
//! Every event carries the time since the rollout started, the agent, the candidate
//! deployment and its version. Serialized, an event is one JSON object
//! `{"at_s": …, "event": "<kind>", …}`; the last one of a rollout is
//! `{"event": "finished", "outcome": "promoted"|"rolled_back"|"aborted", "reason"?}`.

use std::fmt;
use std::sync::{Arc, Mutex};

use caxton_core::{AgentId, DeploymentId, MetricWindow};
use serde::{Deserialize, Serialize};

use crate::condition::{Check, CheckStatus, Metric, Quantity, format_quantity};
use crate::duration::HumanDuration;
use crate::judge::{Judgement, Verdict};
use crate::shadow::ShadowReport;
use crate::strategy::ReasonKind;

/// A few figures of one deployment's window, for events and people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// Requests handled.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Errors per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Median latency in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Cost per session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_session: Option<f64>,
}

impl MetricsSummary {
    /// The summary of `window`.
    pub fn of(window: &MetricWindow) -> Self {
        MetricsSummary {
            requests: window.requests,
            errors: window.errors,
            error_rate: window.error_rate(),
            p50_ms: crate::condition::nearest_rank(&window.latency_ms, 0.5),
            p99_ms: crate::condition::nearest_rank(&window.latency_ms, 0.99),
            cost_per_session: window.cost_per_session(),
        }
    }
}

/// What happened. Serialized with the tag `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The rollout began.
    Started {
        /// The strategy's name.
        strategy: String,
        /// The production deployment it starts from.
        #[serde(skip_serializing_if = "Option::is_none")]
        baseline_id: Option<DeploymentId>,
    },
    /// Validation finished.
    ValidationFinished {
        /// Whether it passed.
        passed: bool,
        /// What passed or failed.
        summary: String,
        /// How long it took.
        duration_s: f64,
    },
    /// Warm-up finished.
    WarmUpFinished {
        /// Whether the candidate is ready.
        ready: bool,
        /// Detail for people.
        detail: String,
        /// How long it took.
        duration_s: f64,
    },
    /// A stage began.
    StageStarted {
        /// The stage, e.g. `canary.5_percent` or `blue_green.cleanup`.
        stage: String,
        /// The candidate's share of traffic during the stage, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        percentage: Option<f64>,
        /// How long the stage holds, when it has a hold.
        #[serde(skip_serializing_if = "Option::is_none")]
        hold_s: Option<f64>,
    },
    /// The candidate's share of new traffic changed.
    SplitChanged {
        /// The candidate's share.
        percentage: f64,
    },
    /// Mirroring to the candidate started, changed or (without a percentage) stopped.
    MirrorChanged {
        /// The share of traffic copied.
        #[serde(skip_serializing_if = "Option::is_none")]
        percentage: Option<f64>,
    },
    /// A rollback condition was checked.
    Checked {
        /// The stage.
        stage: String,
        /// The condition, in canonical form.
        condition: String,
        /// What was found.
        status: CheckStatus,
        /// The candidate's value, in the metric's canonical unit.
        #[serde(skip_serializing_if = "Option::is_none")]
        observed: Option<f64>,
        /// The limit, in the same unit.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<f64>,
        /// What the data show of the candidate's value at the gates' confidence: its
        /// lower bound, in the same unit, when the data give one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<f64>,
        /// Its upper bound, when the data give one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upper: Option<f64>,
        /// The check for people, e.g. `Error rate: 0.2% (rollback if > 1%)`.
        description: String,
    },
    /// Metrics at the end of a stage.
    Metrics {
        /// The stage.
        stage: String,
        /// The candidate's figures during the stage.
        candidate: MetricsSummary,
        /// The baseline's figures during the stage.
        #[serde(skip_serializing_if = "Option::is_none")]
        baseline: Option<MetricsSummary>,
    },
    /// The statistical judge compared candidate with baseline.
    Judged {
        /// The stage.
        stage: String,
        /// The sampled metric compared, e.g. `latency`.
        metric: String,
        /// The verdict and its numbers.
        #[serde(flatten)]
        judgement: Judgement,
    },
    /// A stage's hold was extended.
    HoldExtended {
        /// The stage.
        stage: String,
        /// By how long.
        extended_by_s: f64,
        /// Why.
        reason: String,
    },
    /// The rollout paused and waits for a person.
    Paused {
        /// Why.
        reason: String,
    },
    /// The rollout goes on after a pause.
    Resumed,
    /// An operator command arrived.
    CommandReceived {
        /// The command.
        command: String,
    },
    /// A shadow run ended with a comparison report.
    ShadowReport {
        /// The report.
        report: ShadowReport,
    },
    /// The candidate became production.
    Promoted,
    /// The candidate was taken out and the baseline serves again.
    RolledBack {
        /// Why.
        reason: String,
        /// The kind of reason.
        kind: ReasonKind,
    },
    /// An old deployment stopped taking new sessions.
    DrainStarted {
        /// The draining deployment.
        target_id: DeploymentId,
    },
    /// An old deployment was closed and retired.
    Retired {
        /// The retired deployment.
        target_id: DeploymentId,
        /// Whether sessions were moved off it before they ended.
        forced: bool,
        /// Sessions moved off.
        released_sessions: u64,
    },
    /// Something went wrong that the rollout could live with.
    Warning {
        /// What.
        message: String,
    },
    /// The rollout is over. Always the last event.
    Finished {
        /// `promoted`, `rolled_back` or `aborted`.
        outcome: String,
        /// Why, unless promoted.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl EventKind {
    /// A `checked` event for `check` during `stage`.
    pub fn checked(stage: &str, check: &Check) -> Self {
        EventKind::Checked {
            stage: stage.to_owned(),
            condition: check.condition.to_string(),
            status: check.status,
            observed: check.observed,
            limit: check.limit,
            lower: check
                .bounds
                .and_then(|[lower, _]| lower.filter(|v| v.is_finite())),
            upper: check
                .bounds
                .and_then(|[_, upper]| upper.filter(|v| v.is_finite())),
            description: check.describe(),
        }
    }

    /// The event's tag, e.g. `stage_started`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::ValidationFinished { .. } => "validation_finished",
            EventKind::WarmUpFinished { .. } => "warm_up_finished",
            EventKind::StageStarted { .. } => "stage_started",
            EventKind::SplitChanged { .. } => "split_changed",
            EventKind::MirrorChanged { .. } => "mirror_changed",
            EventKind::Checked { .. } => "checked",
            EventKind::Metrics { .. } => "metrics",
            EventKind::Judged { .. } => "judged",
            EventKind::HoldExtended { .. } => "hold_extended",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed => "resumed",
            EventKind::CommandReceived { .. } => "command_received",
            EventKind::ShadowReport { .. } => "shadow_report",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack { .. } => "rolled_back",
            EventKind::DrainStarted { .. } => "drain_started",
            EventKind::Retired { .. } => "retired",
            EventKind::Warning { .. } => "warning",
            EventKind::Finished { .. } => "finished",
        }
    }
}

/// One event of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// Seconds since the rollout started, on the rollout's clock.
    pub at_s: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The agent.
    pub agent_id: AgentId,
    /// The candidate deployment.
    pub deployment_id: DeploymentId,
    /// The candidate's version: the first 12 hex digits of its fingerprint.
    pub version: String,
}

/// The mark a line for people starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// `✓`: something finished well.
    Done,
    /// `✗`: something failed.
    Failed,
    /// `→`: something is under way.
    Progress,
}

/// One line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanLine {
    /// The mark.
    pub mark: Mark,
    /// The text after the mark.
    pub text: String,
}

impl HumanLine {
    fn new(mark: Mark, text: impl Into<String>) -> Self {
        HumanLine {
            mark,
            text: text.into(),
        }
    }
}

fn secs(s: f64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

fn stage_title(stage: &str, percentage: Option<f64>) -> String {
    let (family, step) = stage.split_once('.').unwrap_or((stage, ""));
    match (family, step, percentage) {
        ("canary", step, Some(p)) if step.ends_with("_percent") => {
            format!("Canary {}%", format_quantity(Quantity::Number, p))
        }
        ("rainbow", step, Some(p)) if step.ends_with("_percent") => format!(
            "Rainbow {}% of new sessions",
            format_quantity(Quantity::Number, p)
        ),
        ("shadow", "mirror", Some(p)) => {
            format!("Shadow mirroring {}%", format_quantity(Quantity::Number, p))
        }
        _ => {
            let family = family.replace('_', "-");
            let step = step.replace('_', " ");
            let mut title = family;
            if let Some(first) = title.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            if step.is_empty() {
                title
            } else {
                format!("{title} {step}")
            }
        }
    }
}

impl RolloutEvent {
    /// The event as lines for people in the style of the command line, or none for
    /// events only machines care about.
    pub fn human_lines(&self) -> Vec<HumanLine> {
        use EventKind as E;
        match &self.kind {
            E::Started {
                strategy,
                baseline_id,
            } => vec![HumanLine::new(
                Mark::Progress,
                match baseline_id {
                    Some(baseline) => format!(
                        "Rolling out {} of {} with {strategy} (production: {baseline})",
                        self.deployment_id, self.agent_id
                    ),
                    None => format!(
                        "Rolling out {} of {} with {strategy} (first deployment)",
                        self.deployment_id, self.agent_id
                    ),
                },
            )],
            E::ValidationFinished {
                passed,
                summary,
                duration_s,
            } => vec![HumanLine::new(
                if *passed { Mark::Done } else { Mark::Failed },
                format!(
                    "Validation {} ({}){}",
                    if *passed { "passed" } else { "failed" },
                    secs(*duration_s),
                    if summary.is_empty() {
                        String::new()
                    } else {
                        format!(": {summary}")
                    }
                ),
            )],
            E::WarmUpFinished {
                ready,
                detail,
                duration_s,
            } => vec![HumanLine::new(
                if *ready { Mark::Done } else { Mark::Failed },
                if *ready {
                    format!("Warm-up done ({})", secs(*duration_s))
                } else {
                    format!("Warm-up failed ({}): {detail}", secs(*duration_s))
                },
            )],
            E::StageStarted {
                stage,
                percentage,
                hold_s,
            } => {
                let mut lines = vec![HumanLine::new(
                    Mark::Done,
                    format!("{} started", stage_title(stage, *percentage)),
                )];
                if let Some(hold) = hold_s.filter(|h| *h > 0.0) {
                    lines.push(HumanLine::new(
                        Mark::Progress,
                        format!("Monitoring for {}...", long_duration(hold)),
                    ));
                }
                lines
            }
            E::Checked {
                status,
                description,
                ..
            } => vec![HumanLine::new(
                match status {
                    CheckStatus::Breached => Mark::Failed,
                    CheckStatus::Clear => Mark::Done,
                    CheckStatus::NoData | CheckStatus::Inconclusive => Mark::Progress,
                },
                description.clone(),
            )],
            E::Judged {
                metric, judgement, ..
            } => {
                let medians = match (judgement.candidate_median, judgement.baseline_median) {
                    (Some(c), Some(b)) if metric == "latency" => format!(
                        "median {} vs {}; ",
                        Metric::Latency(crate::condition::LatencyStat::P50).format_value(c),
                        Metric::Latency(crate::condition::LatencyStat::P50).format_value(b)
                    ),
                    _ => String::new(),
                };
                vec![HumanLine::new(
                    match judgement.verdict {
                        Verdict::Pass => Mark::Done,
                        Verdict::Fail => Mark::Failed,
                        Verdict::Inconclusive => Mark::Progress,
                    },
                    format!(
                        "{} vs baseline: {} ({medians}{})",
                        capitalize(metric),
                        judgement.verdict,
                        judgement.reason
                    ),
                )]
            }
            E::HoldExtended {
                stage,
                extended_by_s,
                reason,
            } => vec![HumanLine::new(
                Mark::Progress,
                format!(
                    "Holding {} {} longer: {reason}",
                    stage_title(stage, None).to_lowercase(),
                    secs(*extended_by_s)
                ),
            )],
            E::Paused { reason } => vec![HumanLine::new(
                Mark::Progress,
                format!("Paused, waiting for an operator: {reason}"),
            )],
            E::Resumed => vec![HumanLine::new(Mark::Progress, "Resumed")],
            E::CommandReceived { command } => {
                vec![HumanLine::new(
                    Mark::Progress,
                    format!("Operator: {command}"),
                )]
            }
            E::ShadowReport { report } => report.human_lines(),
            E::Promoted => vec![HumanLine::new(Mark::Done, "Promoted to 100%")],
            E::RolledBack { reason, .. } => {
                vec![HumanLine::new(
                    Mark::Failed,
                    format!("Rolled back: {reason}"),
                )]
            }
            E::DrainStarted { target_id } => vec![HumanLine::new(
                Mark::Progress,
                format!("Draining {target_id}..."),
            )],
            E::Retired {
                target_id,
                forced,
                released_sessions,
            } => vec![HumanLine::new(
                Mark::Done,
                if *forced && *released_sessions > 0 {
                    format!("Retired {target_id} (forced: {released_sessions} sessions moved)")
                } else {
                    format!("Retired {target_id}")
                },
            )],
            E::Warning { message } => vec![HumanLine::new(
                Mark::Progress,
                format!("Warning: {message}"),
            )],
            E::Finished { outcome, reason } => vec![HumanLine::new(
                if outcome == "promoted" {
                    Mark::Done
                } else {
                    Mark::Failed
                },
                match reason {
                    Some(reason) => format!(
                        "Finished: {} after {} ({reason})",
                        outcome.replace('_', " "),
                        secs(self.at_s)
                    ),
                    None => format!(
                        "Finished: {} after {}",
                        outcome.replace('_', " "),
                        secs(self.at_s)
                    ),
                },
            )],
            E::SplitChanged { .. } | E::MirrorChanged { .. } | E::Metrics { .. } => Vec::new(),
        }
    }
}

/// `5 minutes`, `1 hour 30 minutes`, `45 seconds`: for sentences.
fn long_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    if total == 0 {
        return "a moment".to_owned();
    }
    let units = [
        (total / 86_400, "day"),
        (total % 86_400 / 3_600, "hour"),
        (total % 3_600 / 60, "minute"),
        (total % 60, "second"),
    ];
    units
        .iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value} {unit}{}", if *value == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Receives rollout events as they happen.
pub trait EventSink: Send + Sync {
    /// Called once per event, in order.
    fn emit(&self, event: &RolloutEvent);
}

impl<F> EventSink for F
where
    F: Fn(&RolloutEvent) + Send + Sync,
{
    fn emit(&self, event: &RolloutEvent) {
        self(event)
    }
}

/// An [`EventSink`] that keeps every event in memory. Clones share the log.
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<RolloutEvent>>>,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("events", &self.len())
            .finish()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<RolloutEvent> {
        self.lock().clone()
    }

    /// How many events were received.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event was received.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RolloutEvent>> {
        // Pushing an event cannot leave the vector inconsistent.
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventSink for EventLog {
    fn emit(&self, event: &RolloutEvent) {
        self.lock().push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> RolloutEvent {
        RolloutEvent {
            at_s: 330.0,
            kind,
            agent_id: AgentId::new("processor").unwrap(),
            deployment_id: DeploymentId::new("v2").unwrap(),
            version: "0123456789ab".into(),
        }
    }

    #[test]
    fn serializes_as_one_flat_object_with_the_event_tag() {
        let json = serde_json::to_value(event(EventKind::StageStarted {
            stage: "canary.5_percent".into(),
            percentage: Some(5.0),
            hold_s: Some(300.0),
        }))
        .unwrap();
        assert_eq!(json["event"], "stage_started");
        assert_eq!(json["at_s"], 330.0);
        assert_eq!(json["stage"], "canary.5_percent");
        assert_eq!(json["percentage"], 5.0);
        assert_eq!(json["agent_id"], "processor");
        assert_eq!(json["deployment_id"], "v2");
        let back: RolloutEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind.name(), "stage_started");

        let finished = serde_json::to_value(event(EventKind::Finished {
            outcome: "promoted".into(),
            reason: None,
        }))
        .unwrap();
        assert_eq!(finished["outcome"], "promoted");
        assert!(finished.get("reason").is_none());
    }

    #[test]
    fn human_lines_follow_the_command_line_style() {
        let lines = event(EventKind::StageStarted {
            stage: "canary.25_percent".into(),
            percentage: Some(25.0),
            hold_s: Some(600.0),
        })
        .human_lines();
        assert_eq!(lines[0], HumanLine::new(Mark::Done, "Canary 25% started"));
        assert_eq!(
            lines[1],
            HumanLine::new(Mark::Progress, "Monitoring for 10 minutes...")
        );
        let cleanup = event(EventKind::StageStarted {
            stage: "blue_green.cleanup".into(),
            percentage: None,
            hold_s: None,
        })
        .human_lines();
        assert_eq!(cleanup[0].text, "Blue-green cleanup started");
        let ramp = event(EventKind::StageStarted {
            stage: "rainbow.5_percent".into(),
            percentage: Some(5.0),
            hold_s: Some(300.0),
        })
        .human_lines();
        assert_eq!(ramp[0].text, "Rainbow 5% of new sessions started");
        let finished = event(EventKind::Finished {
            outcome: "rolled_back".into(),
            reason: Some("error_rate 2% > 1%".into()),
        })
        .human_lines();
        assert_eq!(finished[0].mark, Mark::Failed);
        assert_eq!(
            finished[0].text,
            "Finished: rolled back after 5m30s (error_rate 2% > 1%)"
        );
    }

    #[test]
    fn event_log_keeps_events_in_order() {
        let log = EventLog::new();
        log.emit(&event(EventKind::Promoted));
        log.emit(&event(EventKind::Resumed));
        let names: Vec<&str> = log.events().iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, ["promoted", "resumed"]);
    }

    #[test]
    fn long_durations_read_as_words() {
        assert_eq!(long_duration(300.0), "5 minutes");
        assert_eq!(long_duration(5_400.0), "1 hour 30 minutes");
        assert_eq!(long_duration(1.0), "1 second");
        assert_eq!(long_duration(0.0), "a moment");
    }
}
