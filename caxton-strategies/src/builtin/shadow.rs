//! The shadow strategy.

use std::time::Duration;

use caxton_core::{ShadowConfig, Timestamp};

use super::common::{Core, FinalDrain, PreflightStep};
use crate::config::ConfigError;
use crate::event::EventKind;
use crate::shadow::{Recommendation, ShadowReport, ShadowSettings};
use crate::strategy::{Directive, Reason, ReasonKind, StepInput, Strategy};

#[derive(Debug, Clone)]
enum Phase {
    Preflight,
    Ready,
    Mirroring {
        until: Timestamp,
        extended: Duration,
    },
    /// The report asks for a person; mirroring goes on meanwhile.
    Review,
    Draining(FinalDrain),
    Done,
}

/// Mirrors a sample of production traffic to the candidate, which never serves a reply,
/// then compares outputs, latency and resource use with production. A passing report
/// promotes the candidate; a failing one rolls it back; an undecided one pauses for a
/// person, who may promote, abort, or resume to mirror for another round.
#[derive(Debug, Clone)]
pub struct Shadow {
    settings: ShadowSettings,
    core: Core,
    phase: Phase,
}

impl Shadow {
    /// A shadow run with `settings`.
    pub fn new(settings: ShadowSettings) -> Result<Self, ConfigError> {
        settings.gates.validate()?;
        if settings.duration.is_zero() {
            return Err(ConfigError::ZeroDuration { field: "duration" });
        }
        if settings.sample == caxton_core::Weight::ZERO {
            return Err(ConfigError::OutOfRange {
                field: "sample",
                value: settings.sample.to_string(),
                expected: "above 0%",
            });
        }
        if !(0.0..=1.0).contains(&settings.max_mismatch) {
            return Err(ConfigError::OutOfRange {
                field: "max_mismatch",
                value: settings.max_mismatch.to_string(),
                expected: "between 0% and 100%",
            });
        }
        Ok(Shadow {
            settings,
            core: Core::new(),
            phase: Phase::Preflight,
        })
    }

    fn start_mirror(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        if input.context.baseline.is_none() {
            // Nothing to mirror from: a first deployment is simply promoted.
            return self.promote(input, out);
        }
        out.push(Directive::Mirror(Some(ShadowConfig {
            deployment: input.context.candidate.clone(),
            sample: self.settings.sample,
        })));
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "shadow.mirror".to_owned(),
            percentage: Some(self.settings.sample.percent()),
            hold_s: Some(self.settings.duration.as_secs_f64()),
        }));
        self.core.reset_windows(input.now, true);
        self.core
            .plan_looks(&self.settings.gates, self.settings.duration);
        let until = input.now + self.settings.duration;
        self.phase = Phase::Mirroring {
            until,
            extended: Duration::ZERO,
        };
        out.push(Directive::WaitUntil(
            until.min(input.now + self.settings.gates.check_interval),
        ));
    }

    fn promote(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        if input.context.baseline.is_some() {
            out.push(Directive::Mirror(None));
        }
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "shadow.switch".to_owned(),
            percentage: Some(100.0),
            hold_s: None,
        }));
        out.push(Directive::Promote);
        self.phase = match self
            .core
            .finish_promotion(input, self.settings.gates.drain_timeout, out)
        {
            Some(drain) => Phase::Draining(drain),
            None => Phase::Done,
        };
    }

    fn report(&mut self, extended: Duration, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        let gates = &self.settings.gates;
        if !self.core.enough_data(gates) {
            let reason = format!(
                "only {} of the {} mirrored requests needed for a report",
                self.core.candidate.requests, gates.min_requests
            );
            let step = gates.check_interval;
            if extended + step <= gates.max_extension {
                out.push(Directive::Emit(EventKind::HoldExtended {
                    stage: "shadow.mirror".to_owned(),
                    extended_by_s: step.as_secs_f64(),
                    reason,
                }));
                self.phase = Phase::Mirroring {
                    until: input.now + step,
                    extended: extended + step,
                };
                out.push(Directive::WaitUntil(input.now + step));
            } else {
                self.core.pause(input.now, &reason, out);
                self.phase = Phase::Review;
                out.push(Directive::WaitUntil(self.core.pause_wake(input.now, gates)));
            }
            return;
        }
        let report =
            ShadowReport::compare(&self.settings, &self.core.candidate, &self.core.baseline);
        out.push(self.core.metrics_event("shadow.mirror", true));
        out.push(Directive::Emit(EventKind::ShadowReport {
            report: report.clone(),
        }));
        match report.recommendation {
            Recommendation::Promote => self.promote(input, out),
            Recommendation::Reject => {
                let kind = if report
                    .output
                    .as_ref()
                    .is_some_and(|o| o.verdict == crate::judge::Verdict::Fail)
                {
                    ReasonKind::OutputMismatch
                } else {
                    ReasonKind::Judge
                };
                let reason = Reason::new(kind, format!("shadow comparison: {}", report.summary));
                self.core.roll_back(reason, out);
            }
            Recommendation::Review => {
                let reason = format!("shadow comparison needs a person: {}", report.summary);
                self.core.pause(input.now, &reason, out);
                self.phase = Phase::Review;
                out.push(Directive::WaitUntil(self.core.pause_wake(input.now, gates)));
            }
        }
    }
}

impl Strategy for Shadow {
    fn name(&self) -> &str {
        "shadow"
    }

    fn step(&mut self, input: StepInput<'_>) -> Vec<Directive> {
        let mut out = Vec::new();
        let draining = matches!(self.phase, Phase::Draining(_));
        let serving = !matches!(self.phase, Phase::Preflight);
        let Some(effects) = self.core.begin_step(&input, draining, serving, &mut out) else {
            return out;
        };
        let gates = self.settings.gates.clone();
        match self.phase.clone() {
            Phase::Preflight => {
                match self
                    .core
                    .preflight(&self.settings.preflight, &input, &mut out)
                {
                    PreflightStep::Waiting => {}
                    PreflightStep::Refused(reason) => self.core.refuse(reason, &mut out),
                    PreflightStep::Ready if self.core.pause.is_some() => {
                        self.phase = Phase::Ready;
                        out.push(Directive::WaitUntil(
                            self.core.pause_wake(input.now, &gates),
                        ));
                    }
                    PreflightStep::Ready => self.start_mirror(&input, &mut out),
                }
            }
            Phase::Ready => {
                if effects.promote_fully {
                    self.promote(&input, &mut out);
                } else if self.core.pause.is_none() {
                    self.start_mirror(&input, &mut out);
                } else {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                }
            }
            Phase::Mirroring {
                mut until,
                extended,
            } => {
                self.core.observe(&input);
                if let Some(reason) = self.core.breach(&gates, "shadow.mirror", &mut out) {
                    self.core.roll_back(reason, &mut out);
                    return out;
                }
                if let Some(paused) = effects.resumed_after {
                    until = until + paused;
                    self.phase = Phase::Mirroring { until, extended };
                }
                if effects.promote_fully || effects.promote_step {
                    self.promote(&input, &mut out);
                } else if self.core.pause.is_some() {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                } else if input.now < until {
                    out.push(Directive::WaitUntil(
                        until.min(input.now + gates.check_interval),
                    ));
                } else {
                    self.report(extended, &input, &mut out);
                }
            }
            Phase::Review => {
                self.core.observe(&input);
                if let Some(reason) = self.core.breach(&gates, "shadow.mirror", &mut out) {
                    self.core.roll_back(reason, &mut out);
                    return out;
                }
                if effects.promote_fully || effects.promote_step {
                    self.promote(&input, &mut out);
                } else if self.core.pause.is_none() {
                    // The person chose to mirror for another round.
                    self.start_mirror(&input, &mut out);
                } else {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                }
            }
            Phase::Draining(drain) => {
                self.phase = match self.core.drain_step(drain, &input, &mut out) {
                    Some(drain) => Phase::Draining(drain),
                    None => Phase::Done,
                };
            }
            Phase::Done => {}
        }
        out
    }
}
