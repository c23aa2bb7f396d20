//! The rainbow strategy.

use std::time::Duration;

use caxton_core::{DeploymentId, SessionAffinity, Timestamp, Weight};

use super::canary::canary_stage_name;
use super::common::{CommandEffects, Core, HoldEnd, PreflightStep};
use crate::config::{ConfigError, RainbowConfig};
use crate::event::EventKind;
use crate::strategy::{Directive, Outcome, StepInput, Strategy};

#[derive(Debug, Clone)]
enum Phase {
    Preflight,
    Ready,
    /// A share of new sessions goes to the candidate; the step holds until `hold_until`.
    Ramp {
        index: usize,
        hold_until: Timestamp,
        extended: Duration,
    },
    /// New sessions go to the candidate; old versions serve their pinned sessions.
    Watching {
        deadline: Timestamp,
        old: Vec<DeploymentId>,
    },
    Done,
}

/// Sends new sessions to the newest version while older versions keep serving the
/// sessions pinned to them, until those end, idle out, or the forced-drain deadline
/// passes. At most `max_live_versions` versions serve at once: the oldest are closed
/// first. Rollback conditions are checked until the old version retires; a rollback
/// sends new sessions back to the previous version and closes the candidate, whose
/// sessions go back too.
///
/// With `steps`, the switch comes after a ramp: each step sends its weight of *new*
/// sessions to the candidate (the split applies to unpinned traffic; pinned sessions stay
/// where they are) and holds, with rollback conditions checked every interval. Before each
/// increase, as in a canary, the candidate must have handled enough requests and the
/// judge (when on) must find no regression; too little data extends the hold, then
/// pauses for a person. A condition that holds rolls back at once.
///
/// # Session affinity
///
/// Rainbow relies on sessions being pinned before it starts: session mode is a property
/// of the agent, and the host turns session affinity on when it registers a sessions
/// agent's first deployment, so every session is already pinned to the version that
/// served its first message. The strategy still emits
/// [`Directive::SessionAffinity`] before it sends any traffic to the candidate, but only
/// to set the configured `session_idle_timeout`; turning affinity on at that moment
/// would not keep earlier sessions where they are (the router pins a session at its next
/// message, which comes after the candidate is promoted), so correctness never depends
/// on it.
#[derive(Debug, Clone)]
pub struct Rainbow {
    config: RainbowConfig,
    core: Core,
    phase: Phase,
    /// Whether the idle timeout has been set on the agent's session affinity.
    idle_timeout_set: bool,
}

/// The stage name of a rainbow ramp step: `rainbow.5_percent`, `rainbow.12_5_percent`.
pub fn rainbow_stage_name(weight: Weight) -> String {
    canary_stage_name(weight).replacen("canary.", "rainbow.", 1)
}

impl Rainbow {
    /// A rainbow rollout with `config`.
    pub fn new(config: RainbowConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Rainbow {
            config,
            core: Core::new(),
            phase: Phase::Preflight,
            idle_timeout_set: false,
        })
    }

    /// Sets the idle timeout, once, before the candidate takes any session. Only the
    /// timeout: affinity is on since the agent's first deployment (see above).
    fn set_idle_timeout(&mut self, out: &mut Vec<Directive>) {
        if !std::mem::replace(&mut self.idle_timeout_set, true) {
            out.push(Directive::SessionAffinity(Some(SessionAffinity {
                idle_timeout: self.config.session_idle_timeout,
            })));
        }
    }

    /// The candidate starts serving: the ramp's first step, or the switch without one.
    fn begin(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        if self.config.steps.is_some() && input.context.baseline.is_some() {
            self.start_step(0, input, out);
        } else {
            self.switch(input, out);
        }
    }

    /// Sends step `index`'s share of new sessions to the candidate; past the last step,
    /// switches.
    fn start_step(&mut self, index: usize, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        let step = self
            .config
            .steps
            .as_ref()
            .and_then(|steps| steps.steps().get(index).copied());
        let (Some(baseline), Some(step)) = (input.context.baseline.clone(), step) else {
            return self.switch(input, out);
        };
        self.set_idle_timeout(out);
        let Some(hold_until) = self.core.start_weighted_step(
            input,
            baseline,
            step,
            rainbow_stage_name(step.weight),
            &self.config.gates,
            out,
        ) else {
            return;
        };
        self.phase = Phase::Ramp {
            index,
            hold_until,
            extended: Duration::ZERO,
        };
    }

    /// One check during a ramp step.
    fn ramp_step(
        &mut self,
        (index, mut hold_until, extended): (usize, Timestamp, Duration),
        effects: &CommandEffects,
        input: &StepInput<'_>,
        out: &mut Vec<Directive>,
    ) {
        let gates = self.config.gates.clone();
        self.core.observe(input);
        let weight = self
            .config
            .steps
            .as_ref()
            .and_then(|steps| steps.steps().get(index))
            .map_or(Weight::ZERO, |step| step.weight);
        let stage = rainbow_stage_name(weight);
        if let Some(reason) = self.core.breach(&gates, &stage, out) {
            return self.core.roll_back(reason, out);
        }
        let mut extended = extended;
        if let Some(paused) = effects.resumed_after {
            hold_until = hold_until + paused;
            // A person chose to go on: the step gets a fresh round of extensions.
            extended = Duration::ZERO;
            self.phase = Phase::Ramp {
                index,
                hold_until,
                extended,
            };
        }
        if effects.promote_fully {
            self.switch(input, out);
        } else if effects.promote_step {
            self.start_step(index + 1, input, out);
        } else if self.core.pause.is_some() && !self.core.evidence_resumes(&gates, input.now, out) {
            self.core.wait_while_paused(input.now, &gates, out);
        } else if self.core.pause.is_none() && input.now < hold_until {
            out.push(Directive::WaitUntil(
                hold_until.min(input.now + gates.check_interval),
            ));
        } else {
            match self
                .core
                .end_of_hold(&gates, extended, &stage, input.now, out)
            {
                HoldEnd::Passed => self.start_step(index + 1, input, out),
                HoldEnd::Extended {
                    hold_until,
                    extended,
                } => {
                    self.phase = Phase::Ramp {
                        index,
                        hold_until,
                        extended,
                    };
                }
                HoldEnd::Paused | HoldEnd::RolledBack => {}
            }
        }
    }

    fn switch(&mut self, input: &StepInput<'_>, out: &mut Vec<Directive>) {
        self.set_idle_timeout(out);
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "rainbow.switch".to_owned(),
            percentage: Some(100.0),
            hold_s: None,
        }));
        out.push(Directive::Promote);
        self.core.reset_windows(input.now, true);
        let Some(baseline) = input.context.baseline.clone() else {
            self.core.finished = true;
            self.phase = Phase::Done;
            out.push(Directive::Finish(Outcome::Promoted));
            return;
        };
        // Oldest first; the baseline is the newest of the old versions.
        let mut old: Vec<DeploymentId> = input
            .context
            .older
            .iter()
            .filter(|d| **d != baseline && **d != input.context.candidate)
            .cloned()
            .collect();
        old.push(baseline);
        let live_limit = self.config.max_live_versions.max(2) as usize;
        // The candidate counts as a live version.
        while old.len() + 1 > live_limit {
            let oldest = old.remove(0);
            out.push(Directive::Drain {
                deployment: oldest.clone(),
            });
            out.push(Directive::Retire {
                deployment: oldest,
                forced: true,
            });
        }
        out.push(Directive::Emit(EventKind::StageStarted {
            stage: "rainbow.drain".to_owned(),
            percentage: None,
            hold_s: Some(self.config.forced_drain_after.as_secs_f64()),
        }));
        let deadline = input.now + self.config.forced_drain_after;
        self.core
            .plan_looks(&self.config.gates, self.config.forced_drain_after);
        self.phase = Phase::Watching { deadline, old };
        out.push(Directive::WaitUntil(
            deadline.min(input.now + self.config.gates.check_interval),
        ));
    }

    fn retire_all(&mut self, old: Vec<DeploymentId>, forced: bool, out: &mut Vec<Directive>) {
        for deployment in old {
            out.push(Directive::Drain {
                deployment: deployment.clone(),
            });
            out.push(Directive::Retire { deployment, forced });
        }
        self.core.finished = true;
        self.phase = Phase::Done;
        out.push(Directive::Finish(Outcome::Promoted));
    }
}

impl Strategy for Rainbow {
    fn name(&self) -> &str {
        "rainbow"
    }

    fn step(&mut self, input: StepInput<'_>) -> Vec<Directive> {
        let mut out = Vec::new();
        let draining = false;
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
                PreflightStep::Ready => self.begin(&input, &mut out),
            },
            Phase::Ready => {
                if effects.promote_fully {
                    self.switch(&input, &mut out);
                } else if self.core.pause.is_none() || effects.promote_step {
                    self.begin(&input, &mut out);
                } else {
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                }
            }
            Phase::Ramp {
                index,
                hold_until,
                extended,
            } => self.ramp_step((index, hold_until, extended), &effects, &input, &mut out),
            Phase::Watching {
                mut deadline,
                mut old,
            } => {
                self.core.observe(&input);
                if let Some(reason) = self.core.breach(&gates, "rainbow.drain", &mut out) {
                    self.core.roll_back(reason, &mut out);
                    return out;
                }
                if let Some(paused) = effects.resumed_after {
                    deadline = deadline + paused;
                }
                if effects.promote_fully || effects.promote_step {
                    // An operator closes the old versions now.
                    self.retire_all(old, true, &mut out);
                    return out;
                }
                if self.core.pause.is_some() {
                    self.phase = Phase::Watching { deadline, old };
                    self.core.wait_while_paused(input.now, &gates, &mut out);
                    return out;
                }
                // Versions whose sessions have all ended retire, except the baseline:
                // it stays as the instant rollback target until it is the last one.
                let baseline = input.context.baseline.clone();
                let mut drained = Vec::new();
                old.retain(|deployment| {
                    let empty = input
                        .observations
                        .drains
                        .get(deployment)
                        .is_some_and(|status| status.is_empty());
                    if empty && Some(deployment) != baseline.as_ref() {
                        drained.push(deployment.clone());
                        false
                    } else {
                        true
                    }
                });
                for deployment in drained {
                    out.push(Directive::Drain {
                        deployment: deployment.clone(),
                    });
                    out.push(Directive::Retire {
                        deployment,
                        forced: false,
                    });
                }
                let only_baseline_left = old.len() <= 1;
                let baseline_empty = baseline.as_ref().is_none_or(|b| {
                    input
                        .observations
                        .drains
                        .get(b)
                        .is_some_and(|status| status.is_empty())
                });
                if input.now >= deadline {
                    self.retire_all(old, true, &mut out);
                } else if only_baseline_left && baseline_empty {
                    self.retire_all(old, false, &mut out);
                } else {
                    self.phase = Phase::Watching { deadline, old };
                    out.push(Directive::WaitUntil(
                        deadline.min(input.now + gates.check_interval),
                    ));
                }
            }
            Phase::Done => {}
        }
        out
    }
}
