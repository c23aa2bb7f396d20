//! [`RolloutJournal`] on the `rollouts` and `rollout_journal` tables.
//!
//! The rules of the journal are the database's: the partial unique index on open
//! rollouts allows one per agent, a trigger refuses an entry out of order (a second
//! `started`, anything after `finished`), and another closes the rollout in the statement
//! that records its `finished` entry. An append locks the agent's row like every write of
//! the agent, and the code checks the same rules first only to answer with the trait's
//! refusals, which name the rollout.

use async_trait::async_trait;
use caxton_core::{
    AgentId, DeploymentId, JournalEntry, JournalError, JournalRecord, RolloutJournal, Timestamp,
};
use tokio_postgres::{Client, Row};

use crate::db::Outcome;
use crate::deployments::{column, millis};
use crate::{PostgresError, PostgresStore};

/// The columns [`decode`] reads, in its order.
macro_rules! entry_columns {
    () => {
        "j.seq, j.at, j.agent_id, j.deployment_id, j.record, j.rollout_id"
    };
}

/// One row of `rollout_journal`, as read.
struct Stored {
    entry: JournalEntry,
    rollout: i64,
}

fn decode(row: &Row) -> Result<Stored, PostgresError> {
    let seq: i64 = column(row, 0, &|| "a rollout journal entry".into(), "seq")?;
    let record_name = || format!("rollout journal entry {seq}");
    let at: i64 = column(row, 1, &record_name, "at")?;
    let agent: String = column(row, 2, &record_name, "agent_id")?;
    let deployment: String = column(row, 3, &record_name, "deployment_id")?;
    let record: String = column(row, 4, &record_name, "record")?;
    let rollout: i64 = column(row, 5, &record_name, "rollout_id")?;
    let bad = |column: &'static str, reason: String| PostgresError::BadRow {
        record: record_name(),
        column,
        reason,
    };
    Ok(Stored {
        entry: JournalEntry {
            seq: u64::try_from(seq).map_err(|e| bad("seq", e.to_string()))?,
            at: Timestamp::from_millis(
                u64::try_from(at).map_err(|_| bad("at", format!("negative time {at}")))?,
            ),
            agent: AgentId::new(&agent).map_err(|e| bad("agent_id", e.to_string()))?,
            deployment: DeploymentId::new(&deployment)
                .map_err(|e| bad("deployment_id", e.to_string()))?,
            record: serde_json::from_str(&record).map_err(|e| bad("record", e.to_string()))?,
        },
        rollout,
    })
}

/// The record as stored: its tag (the `kind` column) and its JSON. A record that would
/// not read back is refused here, before anything is written: JSON writes a `NaN`
/// percentage as `null`, and one unreadable entry would stop every later
/// [`open_rollouts`](RolloutJournal::open_rollouts), that is, every restart of a host.
fn encode(entry: &JournalEntry) -> Result<(String, String), PostgresError> {
    let bad = |reason: String| PostgresError::BadEntry {
        agent: entry.agent.clone(),
        deployment: entry.deployment.clone(),
        reason,
    };
    let percentage = match &entry.record {
        JournalRecord::Stage { percentage, .. } => *percentage,
        JournalRecord::Split { percentage } => Some(*percentage),
        _ => None,
    };
    if let Some(p) = percentage.filter(|p| !p.is_finite()) {
        return Err(bad(format!("its percentage {p} is not a finite number")));
    }
    let json = serde_json::to_value(&entry.record).map_err(|e| bad(e.to_string()))?;
    let kind = json
        .get("kind")
        .and_then(|kind| kind.as_str())
        .ok_or_else(|| bad(format!("its record has no kind: {json}")))?
        .to_owned();
    Ok((kind, json.to_string()))
}

async fn append_in(client: &Client, entry: &JournalEntry) -> Result<u64, Outcome<JournalError>> {
    let (kind, record) = encode(entry)?;
    let agent = entry.agent.as_str();
    let deployment = entry.deployment.as_str();
    let at = millis(entry.at);
    // The agent's row is locked: the open rollout read here stays the open one.
    let open = client
        .query_opt(
            "SELECT id, deployment_id FROM rollouts WHERE agent_id = $1 AND finished_at IS NULL",
            &[&agent],
        )
        .await?
        .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)));
    let rollout = match (&entry.record, open) {
        (JournalRecord::Started { .. }, Some((_, open))) => {
            let open = DeploymentId::new(&open).map_err(|e| PostgresError::BadRow {
                record: format!("open rollout of agent `{}`", entry.agent),
                column: "deployment_id",
                reason: e.to_string(),
            })?;
            return Err(Outcome::Refused(JournalError::AlreadyOpen {
                agent: entry.agent.clone(),
                open,
            }));
        }
        // The partial unique index would refuse a second open rollout of the agent.
        (JournalRecord::Started { .. }, None) => client
            .query_one(
                "INSERT INTO rollouts (agent_id, deployment_id, started_at) \
                 VALUES ($1, $2, $3) RETURNING id",
                &[&agent, &deployment, &at],
            )
            .await?
            .get::<_, i64>(0),
        (_, Some((id, open))) if open == deployment => id,
        _ => {
            return Err(Outcome::Refused(JournalError::NotOpen {
                agent: entry.agent.clone(),
                deployment: entry.deployment.clone(),
            }));
        }
    };
    // A `finished` entry closes the rollout by the schema's trigger, in this statement.
    let seq: i64 = client
        .query_one(
            "INSERT INTO rollout_journal (rollout_id, at, agent_id, deployment_id, kind, record) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            &[&rollout, &at, &agent, &deployment, &kind, &record],
        )
        .await?
        .get(0);
    Ok(u64::try_from(seq).map_err(|e| PostgresError::BadRow {
        record: format!("rollout journal entry {seq}"),
        column: "seq",
        reason: e.to_string(),
    })?)
}

#[async_trait]
impl RolloutJournal for PostgresStore {
    /// Records `entry` in one transaction, committed before it returns; the change feed
    /// is notified of the agent. The entry's `seq` is ignored and its `at` kept.
    async fn append(&self, entry: JournalEntry) -> Result<u64, JournalError> {
        let agent = entry.agent.clone();
        let context = format!(
            "appending to the rollout journal of deployment `{}` of agent `{}`",
            entry.deployment, entry.agent
        );
        self.db
            .write(
                &agent,
                || context,
                move |client, _at| Box::pin(async move { append_in(client, &entry).await }),
            )
            .await
    }

    /// The entries of each open rollout from its own `started` entry, oldest rollout
    /// first.
    async fn open_rollouts(&self) -> Result<Vec<Vec<JournalEntry>>, JournalError> {
        const OPEN: &str = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM rollouts r JOIN rollout_journal j ON j.rollout_id = r.id \
             WHERE r.finished_at IS NULL ORDER BY r.id, j.seq"
        );
        self.db
            .read(
                || "reading the open rollouts of the rollout journal".to_owned(),
                |client| {
                    Box::pin(async move {
                        let mut rollouts: Vec<(i64, Vec<JournalEntry>)> = Vec::new();
                        for row in &client.query(OPEN, &[]).await? {
                            let stored = decode(row)?;
                            match rollouts.last_mut() {
                                Some((rollout, entries)) if *rollout == stored.rollout => {
                                    entries.push(stored.entry)
                                }
                                _ => rollouts.push((stored.rollout, vec![stored.entry])),
                            }
                        }
                        Ok(rollouts.into_iter().map(|(_, entries)| entries).collect())
                    })
                },
            )
            .await
    }

    /// Every entry recorded for `deployment` of `agent`, in order: of all its rollouts,
    /// should it have been rolled out more than once.
    async fn entries(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        const ENTRIES: &str = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM rollout_journal j WHERE j.agent_id = $1 AND j.deployment_id = $2 \
             ORDER BY j.seq"
        );
        let (a, d) = (agent.clone(), deployment.clone());
        self.db
            .read(
                || {
                    format!(
                        "reading the rollout journal of deployment `{deployment}` of agent `{agent}`"
                    )
                },
                move |client| {
                    Box::pin(async move {
                        let rows = client.query(ENTRIES, &[&a.as_str(), &d.as_str()]).await?;
                        let mut entries = Vec::with_capacity(rows.len());
                        for row in &rows {
                            entries.push(decode(row)?.entry);
                        }
                        Ok(entries)
                    })
                },
            )
            .await
    }
}
