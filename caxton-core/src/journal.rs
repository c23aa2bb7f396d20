//! The rollout journal: a rollout's progress (its spec, each stage with its absolute
//! deadline, the weights it set, its end), so a restarted host resumes it where it was.
//!
//! The registry stays the authority on lifecycle and production; the journal says how far
//! the rollout had got and when its current hold ends. A host that restarts reconciles the
//! two (a candidate the registry already made production is finished as promoted, one it
//! rolled back is finished as rolled back; otherwise the rollout resumes at the journal's
//! last stage, holding until that stage's recorded deadline).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::{AgentId, DeploymentId};
use crate::store::BackendError;
use crate::time::Timestamp;

/// One entry of a rollout's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Position in the journal, increasing across all rollouts; `0` until recorded.
    pub seq: u64,
    /// When it was recorded, on the host's clock.
    pub at: Timestamp,
    /// The agent.
    pub agent: AgentId,
    /// The rollout's candidate.
    pub deployment: DeploymentId,
    /// What happened.
    pub record: JournalRecord,
}

/// What a journal entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum JournalRecord {
    /// The rollout began: what it needs to be resumed.
    Started {
        /// The strategy's name.
        strategy: String,
        /// The strategy and its settings, as the strategy crate serializes them.
        spec: serde_json::Value,
        /// The production when it began.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        baseline: Option<DeploymentId>,
    },
    /// A stage began.
    Stage {
        /// The stage, e.g. `canary.25_percent`.
        stage: String,
        /// Its position among the rollout's stages, from 1.
        step: u32,
        /// The candidate's share of traffic during the stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percentage: Option<f64>,
        /// When its hold ends (absolute), when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
    /// Traffic moved: the candidate's share as set.
    Split {
        /// The candidate's share of new traffic, in percent.
        percentage: f64,
    },
    /// The rollout ended.
    Finished {
        /// `promoted`, `rolled_back` or `aborted`.
        outcome: String,
        /// Why, unless promoted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl JournalRecord {
    /// Whether this entry ends its rollout.
    pub fn is_finish(&self) -> bool {
        matches!(self, JournalRecord::Finished { .. })
    }
}

/// Why the journal could not be written or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The rollout has no `started` entry, or already finished.
    #[error("rollout of deployment `{deployment}` of agent `{agent}` is not open in the journal")]
    NotOpen {
        /// The agent.
        agent: AgentId,
        /// The candidate.
        deployment: DeploymentId,
    },
    /// A second rollout of the agent was begun while one is open.
    #[error("agent `{agent}` already has an open rollout in the journal (deployment `{open}`)")]
    AlreadyOpen {
        /// The agent.
        agent: AgentId,
        /// The candidate of the open rollout.
        open: DeploymentId,
    },
    /// The journal's store failed.
    #[error("rollout journal failed: {0}")]
    Backend(#[from] BackendError),
}

/// Where rollouts record their progress. At most one rollout per agent is open (begun and
/// not finished) at a time.
#[async_trait]
pub trait RolloutJournal: Send + Sync {
    /// Records `entry`; returns its sequence number. A `started` entry opens the rollout
    /// (refused while another of the agent is open); any other entry needs it open; a
    /// `finished` entry closes it.
    async fn append(&self, entry: JournalEntry) -> Result<u64, JournalError>;

    /// The entries of every open rollout, each rollout's in order, oldest rollout first.
    async fn open_rollouts(&self) -> Result<Vec<Vec<JournalEntry>>, JournalError>;

    /// Every entry of one rollout, in order (empty when it never began).
    async fn entries(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Vec<JournalEntry>, JournalError>;
}

/// A [`RolloutJournal`] in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryJournal {
    inner: Arc<Mutex<JournalState>>,
}

#[derive(Debug, Default)]
struct JournalState {
    next_seq: u64,
    entries: Vec<JournalEntry>,
    /// The open rollout of each agent.
    open: BTreeMap<AgentId, DeploymentId>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        MemoryJournal::default()
    }
}

#[async_trait]
impl RolloutJournal for MemoryJournal {
    async fn append(&self, mut entry: JournalEntry) -> Result<u64, JournalError> {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = state.open.get(&entry.agent).cloned();
        match (&entry.record, open) {
            (JournalRecord::Started { .. }, Some(open)) => {
                return Err(JournalError::AlreadyOpen {
                    agent: entry.agent,
                    open,
                });
            }
            (JournalRecord::Started { .. }, None) => {
                state
                    .open
                    .insert(entry.agent.clone(), entry.deployment.clone());
            }
            (_, Some(open)) if open == entry.deployment => {
                if entry.record.is_finish() {
                    state.open.remove(&entry.agent);
                }
            }
            _ => {
                return Err(JournalError::NotOpen {
                    agent: entry.agent,
                    deployment: entry.deployment,
                });
            }
        }
        state.next_seq += 1;
        entry.seq = state.next_seq;
        let seq = entry.seq;
        state.entries.push(entry);
        Ok(seq)
    }

    async fn open_rollouts(&self) -> Result<Vec<Vec<JournalEntry>>, JournalError> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rollouts: Vec<Vec<JournalEntry>> = state
            .open
            .iter()
            .map(|(agent, deployment)| {
                let all: Vec<JournalEntry> = state
                    .entries
                    .iter()
                    .filter(|e| &e.agent == agent && &e.deployment == deployment)
                    .cloned()
                    .collect();
                // Only the open rollout: from its own `started` on (a deployment may have
                // been rolled out before).
                let from = all
                    .iter()
                    .rposition(|e| matches!(e.record, JournalRecord::Started { .. }))
                    .unwrap_or(0);
                all[from..].to_vec()
            })
            .collect();
        rollouts.sort_by_key(|entries: &Vec<JournalEntry>| entries.first().map(|e| e.seq));
        Ok(rollouts)
    }

    async fn entries(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .entries
            .iter()
            .filter(|e| &e.agent == agent && &e.deployment == deployment)
            .cloned()
            .collect())
    }
}

/// The conformance suite every [`RolloutJournal`] passes unchanged.
#[cfg(any(test, feature = "test-util"))]
pub mod conformance {
    use super::*;

    fn entry(agent: &str, deployment: &str, at: u64, record: JournalRecord) -> JournalEntry {
        JournalEntry {
            seq: 0,
            at: Timestamp::from_millis(at),
            agent: AgentId::new(agent).unwrap(),
            deployment: DeploymentId::new(deployment).unwrap(),
            record,
        }
    }

    fn started() -> JournalRecord {
        JournalRecord::Started {
            strategy: "canary".into(),
            spec: serde_json::json!({"strategy": "canary"}),
            baseline: Some(DeploymentId::new("a-v1").unwrap()),
        }
    }

    fn finished() -> JournalRecord {
        JournalRecord::Finished {
            outcome: "promoted".into(),
            reason: None,
        }
    }

    /// Runs every check on `journal`, which must be empty. Panics with the failed check.
    pub async fn run(journal: &dyn RolloutJournal) {
        let stage = JournalRecord::Stage {
            stage: "canary.5_percent".into(),
            step: 1,
            percentage: Some(5.0),
            until: Some(Timestamp::from_millis(400_000)),
        };
        // A rollout opens with `started` and takes entries in order.
        let s1 = journal
            .append(entry("a", "a-v2", 1_000, started()))
            .await
            .unwrap();
        let s2 = journal
            .append(entry("a", "a-v2", 2_000, stage.clone()))
            .await
            .unwrap();
        assert!(s2 > s1, "sequence numbers increase");
        // Entries of an unopened rollout are refused.
        assert!(matches!(
            journal
                .append(entry("a", "a-v3", 2_500, stage.clone()))
                .await,
            Err(JournalError::NotOpen { .. })
        ));
        // A second rollout of the agent is refused while one is open.
        assert!(matches!(
            journal.append(entry("a", "a-v3", 3_000, started())).await,
            Err(JournalError::AlreadyOpen { .. })
        ));
        // Another agent's rollout is independent.
        journal
            .append(entry("b", "b-v2", 3_500, started()))
            .await
            .unwrap();
        let open = journal.open_rollouts().await.unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].len(), 2, "agent a's rollout, in order");
        assert_eq!(open[0][1].record, stage);
        assert_eq!(open[0][1].at, Timestamp::from_millis(2_000));
        // Finishing closes it; the agent may begin another.
        journal
            .append(entry("a", "a-v2", 4_000, finished()))
            .await
            .unwrap();
        assert!(matches!(
            journal
                .append(entry("a", "a-v2", 4_500, stage.clone()))
                .await,
            Err(JournalError::NotOpen { .. })
        ));
        journal
            .append(entry("a", "a-v3", 5_000, started()))
            .await
            .unwrap();
        let open = journal.open_rollouts().await.unwrap();
        let candidates: Vec<&str> = open.iter().map(|r| r[0].deployment.as_str()).collect();
        assert_eq!(candidates, ["b-v2", "a-v3"], "oldest rollout first");
        let all = journal
            .entries(
                &AgentId::new("a").unwrap(),
                &DeploymentId::new("a-v2").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.last().unwrap().record.is_finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_journal_passes_the_conformance_suite() {
        futures::executor::block_on(conformance::run(&MemoryJournal::new()));
    }

    #[test]
    fn entries_round_trip_as_json() {
        let entry = JournalEntry {
            seq: 7,
            at: Timestamp::from_millis(5),
            agent: AgentId::new("a").unwrap(),
            deployment: DeploymentId::new("a-v2").unwrap(),
            record: JournalRecord::Stage {
                stage: "canary.5_percent".into(),
                step: 1,
                percentage: Some(5.0),
                until: Some(Timestamp::from_millis(300_005)),
            },
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<JournalEntry>(&json).unwrap(), entry);
    }
}
