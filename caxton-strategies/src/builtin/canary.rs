//! The canary strategy.

use caxton_core::{Timestamp, Weight};

use super::common::{Cleanup, Core, FinalDrain, HoldEnd, PreflightStep};
use crate::config::{CanaryConfig, ConfigError};
use crate::event::EventKind;
use crate::strategy::{Directive, StepInput, Strategy};

#[derive(Debug, Clone)]
enum Phase {
    Preflight,
    /// Validated and warm; held by a pause before the first step.
    Ready,
    Step {
        index: usize,
        hold_until: Timestamp,
        extended: std::time::Duration,
    },
    Cleanup {
        until: Timestamp,
    },
    Draining(FinalDrain),
    Done,
}

/// Moves traffic to the candidate in weighted steps. Each step holds; rollback conditions
/// are checked every interval; before each increase the candidate must have handled
/// enough requests and the judge must find no regression against the baseline. Too
/// little data or an inconclusive judgement extends the hold, up to a limit, then the
/// rollout pauses for a person; it never promotes or rolls back on no data.
#[derive(Debug, Clone)]
pub struct Canary {
    config: CanaryConfig,
    core: Core,
    phase: Phase,
}

/// The stage name of a canary step: `canary.5_percent`, `canary.12_5_percent`.
pub fn canary_stage_name(weight: Weight) -> String {
    let text = weight.to_string();
    format!(
        "canary.{}_percent",
        text.trim_end_matches('%').replace('.', "_")
    )
}

impl Canary {
    /// A canary with `config`.
    pub fn new(config: CanaryConfig) -> Result<Self, ConfigError> {
        config.gates.validate()?;
        Ok(Canary {
            config,
            core: Core::new(),
            phase: Phase::Preflight,
        })
    }

    fn start_step(&mut self, index: usize, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        let Some(baseline) = input.context.baseline.clone() else {
            return self.promote(input, out);
        };
        let Some(step) = self.config.steps.steps().get(index).copied() else {
            return self.promote(input, out);
        };
        let Some(hold_until) = self.core.start_weighted_step(
            input,
            baseline,
            step,
            canary_stage_name(step.weight),
            &self.config.gates,
            out,
        ) else {
            return;
        };
        self.phase = Phase::Step {
            index,
            hold_until,
            extended: std::time::Duration::ZERO,
        };
    }

    fn promote(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        out.push(Directive::Promote);
        self.core.reset_windows(input.now, false);
        self.core
            .plan_looks(&self.config.gates, self.config.cleanup);
        if input.context.baseline.is_none() || self.config.cleanup.is_zero() {
            self.phase =
                match self
                    .core
                    .finish_promotion(input, self.config.gates.drain_timeout, out)
                {
                    Some(drain) => Phase::Draining(drain),
                    None => Phase::Done,
                };
        } else {
            out.push(Directive::Emit(EventKind::StageStarted {
                stage: "canary.cleanup".to_owned(),
                percentage: Some(100.0),
                hold_s: Some(self.config.cleanup.as_secs_f64()),
            }));
            let until = input.now + self.config.cleanup;
            self.phase = Phase::Cleanup { until };
            out.push(Directive::WaitUntil(
                until.min(input.now + self.config.gates.check_interval),
            ));
        }
    }

    /// At the end of a hold: go on, hold longer, pause or roll back.
    fn gate(
        &mut self,
        index: usize,
        extended: std::time::Duration,
        stage: &str,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) {
        match self
            .core
            .end_of_hold(&self.config.gates, extended, stage, input.now, out)
        {
            HoldEnd::Passed => self.start_step(index + 1, input, out),
            HoldEnd::Extended {
                hold_until,
                extended,
            } => {
                self.phase = Phase::Step {
                    index,
                    hold_until,
                    extended,
                };
            }
            HoldEnd::Paused | HoldEnd::RolledBack => {}
        }
    }
}

impl Strategy for Canary {
    fn name(&self) -> &str {
        "canary"
    }

    fn step(&mut self, input: StepInput<'_>) -> Vec<Directive> {
        let mut out = Vec::new();
        let draining = matches!(self.phase, Phase::Draining(_));
        let serving = !matches!(self.phase, Phase::Preflight);
        let Some(effects) = self.core.begin_step(&input, draining, serving, &mut out) else {
            return out;
        };
        let gates = self.config.gates.clone();
        match self.phase.clone() {
            Phase::Preflight => match self
                .core
                .preflight(&self.config.preflight, &input, &mut out)
            {
                PreflightStep::Waiting => {}
                PreflightStep::Refused(reason) => self.core.refuse(reason, &mut out),
                PreflightStep::Ready if self.core.pause.is_some() => {
                    self.phase = Phase::Ready;
                    out.push(Directive::WaitUntil(
                        self.core.pause_wake(input.now, &gates),
                    ));
                }
                PreflightStep::Ready => self.start_step(0, &input, &mut out),
            },
            Phase::Ready => {
                if effects.promote_fully {
                    self.promote(&input, &mut out);
                } else if self.core.pause.is_none() {
                    self.start_step(0, &input, &mut out);
                } else {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                }
            }
            Phase::Step {
                index,
                mut hold_until,
                extended,
            } => {
                self.core.observe(&input);
                let weight = self.config.steps.steps()[index].weight;
                let stage = canary_stage_name(weight);
                if let Some(reason) = self.core.breach(&gates, &stage, &mut out) {
                    self.core.roll_back(reason, &mut out);
                    return out;
                }
                if let Some(paused) = effects.resumed_after {
                    hold_until = hold_until + paused;
                    // A person chose to go on: give the step a fresh round of extensions.
                    self.phase = Phase::Step {
                        index,
                        hold_until,
                        extended: std::time::Duration::ZERO,
                    };
                }
                if effects.promote_fully {
                    self.promote(&input, &mut out);
                } else if effects.promote_step {
                    self.start_step(index + 1, &input, &mut out);
                } else if self.core.evidence_resumes(&gates, input.now, &mut out) {
                    self.gate(index, extended, &stage, &input, &mut out);
                } else if self.core.pause.is_some() {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                } else if input.now < hold_until {
                    out.push(Directive::WaitUntil(
                        hold_until.min(input.now + gates.check_interval),
                    ));
                } else {
                    let extended = match &self.phase {
                        Phase::Step { extended, .. } => *extended,
                        _ => extended,
                    };
                    self.gate(index, extended, &stage, &input, &mut out);
                }
            }
            Phase::Cleanup { until } => {
                self.phase = match self.core.cleanup_step(
                    until,
                    "canary.cleanup",
                    &gates,
                    &effects,
                    &input,
                    &mut out,
                ) {
                    Cleanup::Holding { until } => Phase::Cleanup { until },
                    Cleanup::Draining(drain) => Phase::Draining(drain),
                    Cleanup::Ended => Phase::Done,
                };
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
