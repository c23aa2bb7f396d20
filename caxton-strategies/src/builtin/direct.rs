//! The direct strategy.

use super::common::{Core, FinalDrain, PreflightStep};
use crate::config::DirectConfig;
use crate::event::EventKind;
use crate::strategy::{Directive, StepInput, Strategy};

#[derive(Debug, Clone)]
enum Phase {
    Preflight,
    Ready,
    Draining(FinalDrain),
    Done,
}

/// Validates and warms the candidate, switches all traffic to it, and retires the old
/// version. For low-risk changes such as a code-only fix.
#[derive(Debug, Clone)]
pub struct Direct {
    config: DirectConfig,
    core: Core,
    phase: Phase,
}

impl Direct {
    /// A direct rollout with `config`.
    pub fn new(config: DirectConfig) -> Self {
        Direct {
            config,
            core: Core::new(),
            phase: Phase::Preflight,
        }
    }

    fn switch(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "direct.switch".to_owned(),
            percentage: Some(100.0),
            hold_s: None,
        }));
        out.push(Directive::Promote);
        self.phase = match self
            .core
            .finish_promotion(input, self.config.drain_timeout, out)
        {
            Some(drain) => Phase::Draining(drain),
            None => Phase::Done,
        };
    }
}

impl Strategy for Direct {
    fn name(&self) -> &str {
        "direct"
    }

    fn step(&mut self, input: StepInput<'_>) -> Vec<Directive> {
        let mut out = Vec::new();
        let draining = matches!(self.phase, Phase::Draining(_));
        let serving = matches!(self.phase, Phase::Ready);
        if self
            .core
            .begin_step(&input, draining, serving, &mut out)
            .is_none()
        {
            return out;
        }
        // A direct rollout has no gates of its own; pauses still time out.
        let gates = crate::config::Gates::default();
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
                PreflightStep::Ready => self.switch(&input, &mut out),
            },
            Phase::Ready => {
                if self.core.pause.is_none() {
                    self.switch(&input, &mut out);
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
