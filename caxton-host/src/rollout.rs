//! Rollouts in progress: one slot per agent, progress read off the rollout's events, and
//! the handle a caller waits on.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use caxton_core::{AgentId, DeploymentId};
use caxton_strategies::condition::CheckStatus;
use caxton_strategies::judge::Verdict;
use caxton_strategies::{CommandSender, DriverError, EventKind, RolloutEvent, RolloutReport};
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use serde::{Deserialize, Serialize};

use crate::error::HostError;

/// Where a running rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Moving traffic step by step.
    Progressing,
    /// Holding where it is, waiting for a person.
    Paused,
    /// Promoted or rolled back; cleaning up.
    Finishing,
}

/// Counts of gate and judge verdicts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// Checks without enough data to decide.
    pub inconclusive: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) phase: RolloutPhase,
    pub(crate) stage: Option<String>,
    pub(crate) step: u32,
    pub(crate) weight_set: f64,
    pub(crate) judge: JudgeCounts,
    pub(crate) last_event: Option<RolloutEvent>,
}

type Done = Shared<oneshot::Receiver<Result<RolloutReport, DriverError>>>;

/// A rollout in progress, as the host keeps it.
pub(crate) struct RolloutSlot {
    pub(crate) deployment: DeploymentId,
    pub(crate) strategy: &'static str,
    pub(crate) steps: u32,
    pub(crate) commands: CommandSender,
    /// Whether this host holds the rollout's lease (and so renews it).
    pub(crate) leased: AtomicBool,
    pub(crate) progress: Mutex<Progress>,
    pub(crate) done: Done,
}

impl RolloutSlot {
    pub(crate) fn new(
        deployment: DeploymentId,
        strategy: &'static str,
        steps: u32,
        commands: CommandSender,
    ) -> (
        Arc<Self>,
        oneshot::Sender<Result<RolloutReport, DriverError>>,
    ) {
        let (finish, done) = oneshot::channel();
        let slot = Arc::new(RolloutSlot {
            deployment,
            strategy,
            steps,
            commands,
            leased: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                phase: RolloutPhase::Progressing,
                stage: None,
                step: 0,
                weight_set: 0.0,
                judge: JudgeCounts::default(),
                last_event: None,
            }),
            done: done.shared(),
        });
        (slot, finish)
    }

    /// A rollout resumed by a restart has `done` of its steps behind it: its next stage
    /// is step `done + 1`.
    pub(crate) fn resumed_after(&self, done: u32) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .step = done;
    }

    pub(crate) fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Folds one event into the progress.
    pub(crate) fn observe(&self, event: &RolloutEvent) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        match &event.kind {
            EventKind::StageStarted {
                stage, percentage, ..
            } => {
                progress.step = progress.step.saturating_add(1).min(self.steps.max(1));
                progress.stage = Some(stage.clone());
                if let Some(percentage) = percentage {
                    progress.weight_set = *percentage;
                }
            }
            EventKind::SplitChanged { percentage } => progress.weight_set = *percentage,
            EventKind::Checked { status, .. } => match status {
                CheckStatus::Clear => progress.judge.passed += 1,
                CheckStatus::Breached => progress.judge.failed += 1,
                CheckStatus::NoData | CheckStatus::Inconclusive => progress.judge.inconclusive += 1,
            },
            EventKind::Judged { judgement, .. } => match judgement.verdict {
                Verdict::Pass => progress.judge.passed += 1,
                Verdict::Fail => progress.judge.failed += 1,
                Verdict::Inconclusive => progress.judge.inconclusive += 1,
            },
            EventKind::Paused { .. } => progress.phase = RolloutPhase::Paused,
            EventKind::Resumed => progress.phase = RolloutPhase::Progressing,
            EventKind::Promoted | EventKind::RolledBack { .. } | EventKind::Finished { .. } => {
                progress.phase = RolloutPhase::Finishing;
            }
            _ => {}
        }
        progress.last_event = Some(event.clone());
    }
}

/// A rollout started by [`Host::deploy`](crate::Host::deploy). Dropping it leaves the
/// rollout running; clones wait on the same rollout.
#[derive(Clone)]
pub struct RolloutHandle {
    pub(crate) agent: AgentId,
    pub(crate) deployment: DeploymentId,
    pub(crate) done: Done,
}

impl std::fmt::Debug for RolloutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutHandle")
            .field("agent", &self.agent)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl RolloutHandle {
    /// The candidate.
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// Waits until the rollout is over and returns how it ended.
    pub async fn wait(&self) -> Result<RolloutReport, HostError> {
        match self.done.clone().await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(error)) => Err(HostError::Driver(error)),
            Err(oneshot::Canceled) => Err(HostError::ShutDown),
        }
    }
}
