//! What the built-in strategies share: preflight, operator commands, pauses, windows and
//! rollback checks.

use std::time::Duration;

use caxton_core::{DeploymentId, MetricWindow, Split, Timestamp};

use crate::condition::{Check, CheckStatus};
use crate::config::{CanaryStep, Gates, Preflight};
use crate::event::{EventKind, MetricsSummary};
use crate::evidence::Evidence;
use crate::judge::Verdict;
use crate::strategy::{Command, Directive, Outcome, Reason, ReasonKind, StepInput};

/// Where validation and warm-up stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreflightPhase {
    NotStarted,
    Validating,
    WarmingUp,
    Ready,
}

/// What the preflight did in this step.
pub(crate) enum PreflightStep {
    /// A result is awaited; the directives ask for it.
    Waiting,
    /// The candidate is validated and warm.
    Ready,
    /// The candidate was refused.
    Refused(Reason),
}

/// What the operator's commands of this step amount to.
#[derive(Debug, Default)]
pub(crate) struct CommandEffects {
    pub abort: Option<String>,
    pub promote_step: bool,
    pub promote_fully: bool,
    /// How long the pause that just ended lasted.
    pub resumed_after: Option<Duration>,
}

/// Why and since when a rollout is paused.
#[derive(Debug, Clone)]
pub(crate) struct Pause {
    pub since: Timestamp,
    pub reason: String,
    /// Paused at the end of a hold for want of evidence: the pause ends by itself once
    /// the evidence is in, unless a person paused the rollout too.
    pub awaiting_evidence: bool,
}

/// State every built-in strategy keeps.
#[derive(Debug, Clone)]
pub(crate) struct Core {
    pub preflight: PreflightPhase,
    pub pause: Option<Pause>,
    pub candidate: MetricWindow,
    pub baseline: MetricWindow,
    pub finished: bool,
    /// How sure the gates must be in the current step; `None` until a step plans it.
    pub evidence: Option<Evidence>,
}

impl Core {
    pub(crate) fn new() -> Self {
        Core {
            preflight: PreflightPhase::NotStarted,
            pause: None,
            candidate: MetricWindow::default(),
            baseline: MetricWindow::default(),
            finished: false,
            evidence: None,
        }
    }

    /// Runs validation, then warm-up.
    pub(crate) fn preflight(
        &mut self,
        limits: &Preflight,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) -> PreflightStep {
        match self.preflight {
            PreflightPhase::NotStarted => {
                self.preflight = PreflightPhase::Validating;
                out.push(Directive::Validate {
                    timeout: limits.validate,
                });
                PreflightStep::Waiting
            }
            PreflightPhase::Validating => match &input.observations.validation {
                Some(verdict) if verdict.passed => {
                    self.preflight = PreflightPhase::WarmingUp;
                    out.push(Directive::WarmUp {
                        timeout: limits.warm_up,
                    });
                    PreflightStep::Waiting
                }
                Some(verdict) => PreflightStep::Refused(Reason::new(
                    ReasonKind::Validation,
                    format!("validation failed: {}", verdict.summary),
                )),
                None => PreflightStep::Refused(Reason::new(
                    ReasonKind::Validation,
                    "validation produced no verdict",
                )),
            },
            PreflightPhase::WarmingUp => match &input.observations.warm_up {
                Some(report) if report.ready => {
                    self.preflight = PreflightPhase::Ready;
                    PreflightStep::Ready
                }
                Some(report) => PreflightStep::Refused(Reason::new(
                    ReasonKind::WarmUp,
                    format!("warm-up failed: {}", report.detail),
                )),
                None => PreflightStep::Refused(Reason::new(
                    ReasonKind::WarmUp,
                    "warm-up produced no result",
                )),
            },
            PreflightPhase::Ready => PreflightStep::Ready,
        }
    }

    /// Applies pause and resume; reports what else the commands ask for.
    pub(crate) fn commands(
        &mut self,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) -> CommandEffects {
        let mut effects = CommandEffects::default();
        for command in input.commands {
            match command {
                Command::Pause => match &mut self.pause {
                    None => self.pause(input.now, "paused by an operator", out),
                    // A person's pause holds even when the evidence comes in.
                    Some(pause) => pause.awaiting_evidence = false,
                },
                Command::Resume => {
                    if let Some(paused) = self.resume(input.now, out) {
                        effects.resumed_after =
                            Some(effects.resumed_after.unwrap_or_default() + paused);
                    }
                }
                Command::PromoteStep => effects.promote_step = true,
                Command::PromoteFully => effects.promote_fully = true,
                Command::Abort { reason } => effects.abort = Some(reason.clone()),
            }
        }
        // Promoting is a decision: it ends a pause.
        if (effects.promote_step || effects.promote_fully)
            && let Some(paused) = self.resume(input.now, out)
        {
            effects.resumed_after = Some(effects.resumed_after.unwrap_or_default() + paused);
        }
        effects
    }

    pub(crate) fn pause(&mut self, now: Timestamp, reason: &str, out: &mut Vec<Directive>) {
        self.pause = Some(Pause {
            since: now,
            reason: reason.to_owned(),
            awaiting_evidence: false,
        });
        out.push(Directive::Emit(EventKind::Paused {
            reason: reason.to_owned(),
        }));
    }

    fn resume(&mut self, now: Timestamp, out: &mut Vec<Directive>) -> Option<Duration> {
        let pause = self.pause.take()?;
        out.push(Directive::Emit(EventKind::Resumed));
        Some(now - pause.since)
    }

    /// Whether the pause has waited longer than `gates.pause_timeout`; if so, the abort.
    pub(crate) fn pause_expired(&self, now: Timestamp, gates: &Gates) -> Option<Reason> {
        let pause = self.pause.as_ref()?;
        (now - pause.since >= gates.pause_timeout).then(|| {
            Reason::new(
                ReasonKind::PauseTimeout,
                format!(
                    "paused for {} with no decision ({})",
                    crate::duration::HumanDuration(gates.pause_timeout),
                    pause.reason
                ),
            )
        })
    }

    /// When a paused rollout should look again.
    pub(crate) fn pause_wake(&self, now: Timestamp, gates: &Gates) -> Timestamp {
        let next_check = now + gates.check_interval;
        match &self.pause {
            Some(pause) => next_check.min(pause.since + gates.pause_timeout),
            None => next_check,
        }
    }

    /// Adds this step's windows of candidate and baseline to the accumulated ones.
    pub(crate) fn observe(&mut self, input: &StepInput<'_>) {
        let observations = input.observations;
        if let Some(window) = observations.window(&input.context.candidate) {
            crate::strategy::merge_window(&mut self.candidate, window);
        }
        if let Some(baseline) = &input.context.baseline
            && let Some(window) = observations.window(baseline)
        {
            crate::strategy::merge_window(&mut self.baseline, window);
        }
    }

    /// Starts accumulating the candidate afresh (and the baseline too, with `both`).
    pub(crate) fn reset_windows(&mut self, now: Timestamp, both: bool) {
        self.evidence = None;
        self.candidate = MetricWindow::empty(now, now);
        if both {
            self.baseline = MetricWindow::empty(now, now);
        }
    }

    /// Whether the candidate handled enough requests for conditions to decide.
    pub(crate) fn enough_data(&self, gates: &Gates) -> bool {
        self.candidate.requests >= gates.min_requests.max(1)
    }

    /// Shares the gates' error budget among the checks of a step that holds for `hold`
    /// (call after [`Core::reset_windows`]).
    pub(crate) fn plan_looks(&mut self, gates: &Gates, hold: Duration) {
        self.evidence = Some(gates.evidence(hold));
    }

    /// Every rollback condition on the accumulated windows, on evidence.
    pub(crate) fn checks(&self, gates: &Gates) -> Vec<Check> {
        let evidence = self
            .evidence
            .unwrap_or_else(|| gates.evidence(Duration::ZERO));
        gates
            .rollback_on
            .iter()
            .map(|c| c.check_with(&self.candidate, Some(&self.baseline), evidence))
            .collect()
    }

    /// The rollback directives if a condition holds on enough data.
    pub(crate) fn breach(
        &self,
        gates: &Gates,
        stage: &str,
        out: &mut Vec<Directive>,
    ) -> Option<Reason> {
        if !self.enough_data(gates) {
            return None;
        }
        let checks = self.checks(gates);
        let breached: Vec<&Check> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Breached)
            .collect();
        if breached.is_empty() {
            return None;
        }
        for check in &checks {
            out.push(Directive::Emit(EventKind::checked(stage, check)));
        }
        let what: Vec<String> = breached
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} {}",
                    c.condition.metric,
                    c.observed
                        .map(|v| c.condition.metric.format_value(v))
                        .unwrap_or_default(),
                    c.condition.comparison.symbol(),
                    c.limit
                        .map(|v| c.condition.metric.format_value(v))
                        .unwrap_or_default()
                )
            })
            .collect();
        Some(Reason::new(
            ReasonKind::Condition,
            format!("{} at {}", what.join(", "), stage_label(stage)),
        ))
    }

    /// Whether the rollout is paused for want of evidence and the evidence is now in:
    /// enough requests, every gate shown satisfied, the judge (when on) passing. Then the
    /// pause ends here (a `resumed` event) and the caller ends the hold as usual.
    pub(crate) fn evidence_resumes(
        &mut self,
        gates: &Gates,
        now: Timestamp,
        out: &mut Vec<Directive>,
    ) -> bool {
        if !self.pause.as_ref().is_some_and(|p| p.awaiting_evidence) || !self.enough_data(gates) {
            return false;
        }
        if self
            .checks(gates)
            .iter()
            .any(|c| c.status != CheckStatus::Clear)
        {
            return false;
        }
        if let Some(judge) = &gates.judge
            && judge
                .compare(&self.candidate.latency_ms, &self.baseline.latency_ms)
                .verdict
                != Verdict::Pass
        {
            return false;
        }
        self.resume(now, out);
        true
    }

    /// A `metrics` event for the stage that ends.
    pub(crate) fn metrics_event(&self, stage: &str, with_baseline: bool) -> Directive {
        Directive::Emit(EventKind::Metrics {
            stage: stage.to_owned(),
            candidate: MetricsSummary::of(&self.candidate),
            baseline: with_baseline.then(|| MetricsSummary::of(&self.baseline)),
        })
    }

    /// Ends the rollout by rolling back.
    pub(crate) fn roll_back(&mut self, reason: Reason, out: &mut Vec<Directive>) {
        self.finished = true;
        out.push(Directive::RollBack {
            reason: reason.clone(),
        });
        out.push(Directive::Finish(Outcome::RolledBack { reason }));
    }

    /// Starts a weighted step (a canary step, a rainbow ramp step): `weight` of new traffic
    /// to the candidate, the stage announced, fresh windows, and a wake-up at the first
    /// check or the end of the hold, whichever comes first. Returns when the hold ends, or
    /// `None` when the split could not be made and the rollout was aborted.
    pub(crate) fn start_weighted_step(
        &mut self,
        input: &StepInput<'_>,
        baseline: DeploymentId,
        step: CanaryStep,
        stage: String,
        gates: &Gates,
        out: &mut Vec<Directive>,
    ) -> Option<Timestamp> {
        let check_interval = gates.check_interval;
        match Split::canary(baseline, input.context.candidate.clone(), step.weight) {
            Ok(split) => out.push(Directive::SetSplit(split)),
            Err(error) => {
                // The steps are checked on construction, so this means distinct ids collide.
                let reason = Reason::new(ReasonKind::Infrastructure, error.to_string());
                self.abort(reason, true, out);
                return None;
            }
        }
        out.push(Directive::Emit(EventKind::StageStarted {
            stage,
            percentage: Some(step.weight.percent()),
            hold_s: Some(step.hold.as_secs_f64()),
        }));
        self.reset_windows(input.now, true);
        self.plan_looks(gates, step.hold);
        let hold_until = input.now + step.hold;
        out.push(Directive::WaitUntil(
            hold_until.min(input.now + check_interval),
        ));
        Some(hold_until)
    }

    /// Ends the rollout by aborting; traffic goes back to the baseline if it had moved.
    pub(crate) fn abort(&mut self, reason: Reason, serving: bool, out: &mut Vec<Directive>) {
        self.finished = true;
        if serving {
            out.push(Directive::RollBack {
                reason: reason.clone(),
            });
        }
        out.push(Directive::Finish(Outcome::Aborted { reason }));
    }

    /// Ends the rollout because the candidate was refused before it served.
    pub(crate) fn refuse(&mut self, reason: Reason, out: &mut Vec<Directive>) {
        self.finished = true;
        out.push(Directive::Finish(Outcome::RolledBack { reason }));
    }
}

/// How the end of a weighted step's hold came out.
pub(crate) enum HoldEnd {
    /// The step passed; the caller moves on.
    Passed,
    /// Too little data or an inconclusive judgement: the hold goes on until `hold_until`,
    /// `extended` in all.
    Extended {
        hold_until: Timestamp,
        extended: Duration,
    },
    /// The extensions ran out: the rollout is paused for a person.
    Paused,
    /// The judge found a regression: the rollout rolls back.
    RolledBack,
}

impl Core {
    /// At the end of a weighted step's hold (`stage` names it): the candidate must have
    /// handled enough requests and the judge, when on, must find no regression. Too
    /// little data or an inconclusive judgement extends the hold, up to
    /// `gates.max_extension` in all, then pauses; a regression rolls back. The directives
    /// for each case are pushed here; the caller only moves its phase.
    pub(crate) fn end_of_hold(
        &mut self,
        gates: &Gates,
        extended: Duration,
        stage: &str,
        now: Timestamp,
        out: &mut Vec<Directive>,
    ) -> HoldEnd {
        let needs_more = if !self.enough_data(gates) {
            Some(format!(
                "only {} of the {} requests needed to judge {}",
                self.candidate.requests,
                gates.min_requests,
                stage_label(stage)
            ))
        } else {
            // A step passes only when the data show every gate is satisfied: a gate
            // without data or with inconclusive data holds the step.
            let undecided: Vec<String> = self
                .checks(gates)
                .iter()
                .filter(|c| c.status != CheckStatus::Clear)
                .map(|c| c.describe_evidence(gates.confidence))
                .collect();
            (!undecided.is_empty()).then(|| {
                format!(
                    "not yet shown within the gates at {}: {}",
                    stage_label(stage),
                    undecided.join("; ")
                )
            })
        };
        let judgement = match (&needs_more, &gates.judge) {
            (None, Some(judge)) => {
                Some(judge.compare(&self.candidate.latency_ms, &self.baseline.latency_ms))
            }
            _ => None,
        };
        if let Some(judgement) = &judgement
            && judgement.verdict == Verdict::Fail
        {
            out.push(Directive::Emit(EventKind::Judged {
                stage: stage.to_owned(),
                metric: "latency".to_owned(),
                judgement: judgement.clone(),
            }));
            let reason = Reason::new(
                ReasonKind::Judge,
                format!("latency at {}: {}", stage_label(stage), judgement.reason),
            );
            self.roll_back(reason, out);
            return HoldEnd::RolledBack;
        }
        let wait_reason = needs_more.or_else(|| {
            judgement
                .as_ref()
                .filter(|j| j.verdict == Verdict::Inconclusive)
                .map(|j| format!("judge inconclusive: {}", j.reason))
        });
        if let Some(reason) = wait_reason {
            let step = gates.check_interval;
            if extended + step <= gates.max_extension {
                out.push(Directive::Emit(EventKind::HoldExtended {
                    stage: stage.to_owned(),
                    extended_by_s: step.as_secs_f64(),
                    reason,
                }));
                let hold_until = now + step;
                out.push(Directive::WaitUntil(hold_until));
                return HoldEnd::Extended {
                    hold_until,
                    extended: extended + step,
                };
            }
            self.pause(now, &reason, out);
            if let Some(pause) = &mut self.pause {
                pause.awaiting_evidence = true;
            }
            out.push(Directive::WaitUntil(self.pause_wake(now, gates)));
            return HoldEnd::Paused;
        }
        // The step passed: report it.
        out.push(self.metrics_event(stage, true));
        for check in self.checks(gates) {
            out.push(Directive::Emit(EventKind::checked(stage, &check)));
        }
        if let Some(judgement) = judgement {
            out.push(Directive::Emit(EventKind::Judged {
                stage: stage.to_owned(),
                metric: "latency".to_owned(),
                judgement,
            }));
        }
        HoldEnd::Passed
    }
}

/// `canary 5%` from `canary.5_percent` (and `rainbow 5%` from `rainbow.5_percent`), for
/// reasons.
pub(crate) fn stage_label(stage: &str) -> String {
    for strategy in ["canary", "rainbow"] {
        if let Some(pct) = stage
            .strip_prefix(strategy)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix("_percent"))
        {
            return format!("{strategy} {}%", pct.replace('_', "."));
        }
    }
    match stage.strip_prefix("canary.") {
        Some(rest) => format!("canary {rest}"),
        None => stage.replace(['.', '_'], " "),
    }
}

/// Where the hold after a full switch stands after a step.
pub(crate) enum Cleanup {
    /// Still holding, until this time (moved on by pauses).
    Holding { until: Timestamp },
    /// The hold ended; the old version is draining.
    Draining(FinalDrain),
    /// The rollout ended: promoted with nothing to drain, rolled back or aborted.
    Ended,
}

/// Where the old deployments stand during the final drain.
#[derive(Debug, Clone)]
pub(crate) struct FinalDrain {
    pub pending: Vec<DeploymentId>,
    pub deadline: Timestamp,
}

impl FinalDrain {
    /// Starts draining `old` deployments; closes them by `deadline` at the latest.
    pub(crate) fn start(
        old: Vec<DeploymentId>,
        deadline: Timestamp,
        out: &mut Vec<Directive>,
    ) -> Self {
        for deployment in &old {
            out.push(Directive::Drain {
                deployment: deployment.clone(),
            });
        }
        FinalDrain {
            pending: old,
            deadline,
        }
    }

    /// Retires what has drained (or everything, past the deadline); `true` when done.
    pub(crate) fn advance(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) -> bool {
        let past_deadline = input.now >= self.deadline;
        self.pending.retain(|deployment| {
            let empty = input
                .observations
                .drains
                .get(deployment)
                .is_some_and(|status| status.is_empty());
            if empty || past_deadline {
                out.push(Directive::Retire {
                    deployment: deployment.clone(),
                    forced: !empty,
                });
                false
            } else {
                true
            }
        });
        self.pending.is_empty()
    }
}

impl Core {
    /// One step of the final drain: retires what has drained and finishes once nothing
    /// is left. Returns the drain still under way.
    pub(crate) fn drain_step(
        &mut self,
        mut drain: FinalDrain,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) -> Option<FinalDrain> {
        if drain.advance(input, out) {
            self.finished = true;
            out.push(Directive::Finish(Outcome::Promoted));
            None
        } else {
            out.push(Directive::WaitUntil(
                drain.deadline.min(input.now + Duration::from_secs(1)),
            ));
            Some(drain)
        }
    }

    /// While paused: a pause past its time limit aborts the rollout (rolling back),
    /// otherwise the strategy waits for a command or that limit.
    pub(crate) fn wait_while_paused(
        &mut self,
        now: Timestamp,
        gates: &Gates,
        out: &mut Vec<Directive>,
    ) {
        if let Some(reason) = self.pause_expired(now, gates) {
            self.abort(reason, true, out);
        } else {
            out.push(Directive::WaitUntil(self.pause_wake(now, gates)));
        }
    }

    /// After the candidate is promoted: drain the old baseline, or finish when there was
    /// none. Returns the drain for the strategy's phase.
    pub(crate) fn finish_promotion(
        &mut self,
        input: &StepInput<'_>,
        drain_timeout: Duration,
        out: &mut Vec<Directive>,
    ) -> Option<FinalDrain> {
        match input.context.baseline.clone() {
            Some(baseline) => {
                let drain = FinalDrain::start(vec![baseline], input.now + drain_timeout, out);
                // Look again at once: a deployment with nothing in flight is drained already.
                out.push(Directive::WaitUntil(input.now));
                Some(drain)
            }
            None => {
                self.finished = true;
                out.push(Directive::Finish(Outcome::Promoted));
                None
            }
        }
    }

    /// One step of the hold after a full switch (`stage` names it in reasons): the gates
    /// still roll back; the old version is drained when the hold ends or an operator
    /// promotes; a pause extends the hold by its length and times out like any other.
    pub(crate) fn cleanup_step(
        &mut self,
        mut until: Timestamp,
        stage: &str,
        gates: &Gates,
        effects: &CommandEffects,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) -> Cleanup {
        self.observe(input);
        if let Some(reason) = self.breach(gates, stage, out) {
            self.roll_back(reason, out);
            return Cleanup::Ended;
        }
        if let Some(paused) = effects.resumed_after {
            until = until + paused;
        }
        let go = effects.promote_fully
            || effects.promote_step
            || (self.pause.is_none() && input.now >= until);
        if go || input.context.baseline.is_none() {
            return match self.finish_promotion(input, gates.drain_timeout, out) {
                Some(drain) => Cleanup::Draining(drain),
                None => Cleanup::Ended,
            };
        }
        if let Some(reason) = self.pause_expired(input.now, gates) {
            self.abort(reason, true, out);
            return Cleanup::Ended;
        }
        let wake = if self.pause.is_some() {
            self.pause_wake(input.now, gates)
        } else {
            until.min(input.now + gates.check_interval)
        };
        out.push(Directive::WaitUntil(wake));
        Cleanup::Holding { until }
    }

    /// The start of every built-in strategy's step: nothing once finished; pause and
    /// resume applied; during the final drain, pause and abort are refused with a warning;
    /// otherwise an abort ends the rollout, rolling back when the candidate is `serving`.
    /// Returns the commands' other effects when the step goes on.
    pub(crate) fn begin_step(
        &mut self,
        input: &StepInput<'_>,
        draining: bool,
        serving: bool,
        out: &mut Vec<Directive>,
    ) -> Option<CommandEffects> {
        if self.finished {
            return None;
        }
        let effects = self.commands(input, out);
        if draining {
            self.ignore_commands_while_draining(&effects, out);
        } else if let Some(reason) = &effects.abort {
            let reason = Reason::new(ReasonKind::Operator, format!("aborted: {reason}"));
            self.abort(reason, serving, out);
            return None;
        }
        Some(effects)
    }

    /// Commands during the final drain: the candidate is promoted, so there is nothing
    /// left to pause or abort.
    fn ignore_commands_while_draining(
        &mut self,
        effects: &CommandEffects,
        out: &mut Vec<Directive>,
    ) {
        if self.pause.take().is_some() || effects.abort.is_some() {
            out.push(Directive::Emit(EventKind::Warning {
                message: "command ignored: the candidate is promoted and the old version is \
                          draining"
                    .to_owned(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_labels_read_well() {
        assert_eq!(stage_label("canary.5_percent"), "canary 5%");
        assert_eq!(stage_label("canary.12_5_percent"), "canary 12.5%");
        assert_eq!(stage_label("blue_green.cleanup"), "blue green cleanup");
        assert_eq!(stage_label("rainbow.25_percent"), "rainbow 25%");
        assert_eq!(stage_label("rainbow.drain"), "rainbow drain");
    }
}
