//! The blue-green strategy.

use caxton_core::Timestamp;

use super::common::{Cleanup, Core, FinalDrain, PreflightStep};
use crate::condition::CheckStatus;
use crate::config::{BlueGreenConfig, ConfigError};
use crate::event::EventKind;
use crate::strategy::{Directive, Outcome, Reason, ReasonKind, StepInput, Strategy};

#[derive(Debug, Clone)]
enum Phase {
    Preflight,
    /// Validated and warm; held by a pause before the switch.
    Ready,
    Cleanup {
        until: Timestamp,
    },
    Draining(FinalDrain),
    Done,
}

/// Validates and warms the candidate, checks it, switches all traffic at once, then keeps
/// the old version warm through cleanup, checking rollback conditions, so a rollback is a
/// single atomic switch back. After cleanup the old version drains and retires.
#[derive(Debug, Clone)]
pub struct BlueGreen {
    config: BlueGreenConfig,
    core: Core,
    phase: Phase,
}

impl BlueGreen {
    /// A blue-green rollout with `config`.
    pub fn new(config: BlueGreenConfig) -> Result<Self, ConfigError> {
        config.gates.validate()?;
        Ok(BlueGreen {
            config,
            core: Core::new(),
            phase: Phase::Preflight,
        })
    }

    /// The check before the switch: a candidate that already handled traffic (warm-up
    /// probes, preview routes) must not breach any rollback condition.
    fn pre_switch_check(&mut self, out: &mut Vec<Directive>) -> Option<Reason> {
        if self.core.candidate.requests == 0 {
            return None;
        }
        let checks = self.core.checks(&self.config.gates);
        for check in &checks {
            out.push(Directive::Emit(EventKind::checked(
                "blue_green.switch",
                check,
            )));
        }
        let breached: Vec<String> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Breached)
            .map(|c| c.describe())
            .collect();
        (!breached.is_empty()).then(|| {
            Reason::new(
                ReasonKind::Condition,
                format!("check before the switch failed: {}", breached.join("; ")),
            )
        })
    }

    fn switch(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        if let Some(reason) = self.pre_switch_check(out) {
            // The candidate never served production traffic: take it out.
            return self.core.roll_back(reason, out);
        }
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "blue_green.switch".to_owned(),
            percentage: Some(100.0),
            hold_s: None,
        }));
        out.push(Directive::Promote);
        self.core.reset_windows(input.now, false);
        if input.context.baseline.is_none() {
            self.core.finished = true;
            self.phase = Phase::Done;
            out.push(Directive::Finish(Outcome::Promoted));
            return;
        }
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "blue_green.cleanup".to_owned(),
            percentage: None,
            hold_s: Some(self.config.cleanup.as_secs_f64()),
        }));
        let until = input.now + self.config.cleanup;
        self.phase = Phase::Cleanup { until };
        out.push(Directive::WaitUntil(
            until.min(input.now + self.config.gates.check_interval),
        ));
    }
}

impl Strategy for BlueGreen {
    fn name(&self) -> &str {
        "blue-green"
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
            Phase::Preflight => {
                // The baseline's traffic before the switch is the reference for relative
                // conditions during cleanup.
                self.core.observe(&input);
                match self
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
                    PreflightStep::Ready => self.switch(&input, &mut out),
                }
            }
            Phase::Ready => {
                self.core.observe(&input);
                if self.core.pause.is_none() {
                    self.switch(&input, &mut out);
                } else {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                }
            }
            Phase::Cleanup { until } => {
                self.phase = match self.core.cleanup_step(
                    until,
                    "blue_green.cleanup",
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
