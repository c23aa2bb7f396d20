//! [`RolloutJournal`] on the `rollouts` and `rollout_journal` tables (migration 2).
//!
//! The rules of the journal are the database's: the partial unique index on open
//! rollouts allows one per agent, a trigger refuses an entry out of order (a second
//! `started`, anything after `finished`), and another closes the rollout in the statement
//! that records its `finished` entry. The code here checks the same rules first only to
//! answer with the trait's refusals, which name the rollout.

use async_trait::async_trait;
use caxton_core::{
    AgentId, DeploymentId, JournalEntry, JournalError, JournalRecord, RolloutJournal, Timestamp,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::SqliteStore;
use crate::connection::{Failure, Outcome};
use crate::deployments::{millis, violates_unique};

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

/// Reads a row of [`entry_columns!`]; a column this version cannot decode is a
/// [`Failure::BadRow`] naming the entry's sequence number.
fn decode(row: &Row<'_>) -> Result<Result<Stored, Failure>, rusqlite::Error> {
    let seq: i64 = row.get(0)?;
    let at: i64 = row.get(1)?;
    let agent: String = row.get(2)?;
    let deployment: String = row.get(3)?;
    let record: String = row.get(4)?;
    let rollout: i64 = row.get(5)?;
    let bad = |column: &'static str, reason: String| Failure::BadRow {
        record: format!("rollout journal entry {seq}"),
        column,
        reason,
    };
    let decoded = || -> Result<Stored, Failure> {
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
    };
    Ok(decoded())
}

/// The record as stored: its tag (the `kind` column) and its JSON. A record that would
/// not read back is refused here, before anything is written: a `NaN` percentage is
/// written by JSON as `null`, and one unreadable entry would stop every later
/// [`open_rollouts`](RolloutJournal::open_rollouts), that is, every restart of the host.
fn encode(entry: &JournalEntry) -> Result<(String, String), Failure> {
    let bad = |reason: String| Failure::BadEntry {
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

/// The open rollout of `agent`: its row id and candidate.
fn open_rollout(
    tx: &Transaction<'_>,
    agent: &AgentId,
) -> Result<Option<(i64, String)>, rusqlite::Error> {
    tx.prepare_cached(
        "SELECT id, deployment_id FROM rollouts WHERE agent_id = ?1 AND finished_at IS NULL",
    )?
    .query_row(params![agent.as_str()], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .optional()
}

fn append_in(tx: &Transaction<'_>, entry: &JournalEntry) -> Result<u64, Outcome<JournalError>> {
    let (kind, record) = encode(entry)?;
    let agent = entry.agent.as_str();
    let deployment = entry.deployment.as_str();
    let at = millis(entry.at);
    let rollout = if matches!(entry.record, JournalRecord::Started { .. }) {
        // The partial unique index refuses a second open rollout of the agent.
        let opened = tx
            .prepare_cached(
                "INSERT INTO rollouts (agent_id, deployment_id, started_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![agent, deployment, at]);
        match opened {
            Ok(_) => tx.last_insert_rowid(),
            Err(e) if violates_unique(&e, "rollouts.agent_id") => {
                let (_, open) = open_rollout(tx, &entry.agent)?.ok_or(Failure::Sql(e))?;
                let open = DeploymentId::new(&open).map_err(|e| Failure::BadRow {
                    record: format!("open rollout of agent `{}`", entry.agent),
                    column: "deployment_id",
                    reason: e.to_string(),
                })?;
                return Err(Outcome::Refused(JournalError::AlreadyOpen {
                    agent: entry.agent.clone(),
                    open,
                }));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        match open_rollout(tx, &entry.agent)? {
            Some((id, open)) if open == deployment => id,
            _ => {
                return Err(Outcome::Refused(JournalError::NotOpen {
                    agent: entry.agent.clone(),
                    deployment: entry.deployment.clone(),
                }));
            }
        }
    };
    // A `finished` entry closes the rollout by the schema's trigger, in this statement.
    tx.prepare_cached(
        "INSERT INTO rollout_journal (rollout_id, at, agent_id, deployment_id, kind, record) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![rollout, at, agent, deployment, kind, record])?;
    let seq = tx.last_insert_rowid();
    Ok(u64::try_from(seq).map_err(|e| Failure::BadRow {
        record: format!("rollout journal entry {seq}"),
        column: "seq",
        reason: e.to_string(),
    })?)
}

/// The entries `sql` selects with `params`, decoded, in its order.
fn select(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Stored>, Failure> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(params, decode)?;
    let mut entries = Vec::new();
    for row in rows {
        entries.push(row??);
    }
    Ok(entries)
}

#[async_trait]
impl RolloutJournal for SqliteStore {
    /// Records `entry` in one `BEGIN IMMEDIATE` transaction, committed (and so on disk,
    /// with [`Durability::Full`](crate::Durability::Full)) before it returns. The entry's
    /// `seq` is ignored and its `at` kept.
    async fn append(&self, entry: JournalEntry) -> Result<u64, JournalError> {
        self.db.write(
            || {
                format!(
                    "appending to the rollout journal of deployment `{}` of agent `{}`",
                    entry.deployment, entry.agent
                )
            },
            |tx, _at| append_in(tx, &entry),
        )
    }

    /// The entries of each open rollout from its own `started` entry (a deployment rolled
    /// out before has its earlier, finished rollout left out), oldest rollout first.
    async fn open_rollouts(&self) -> Result<Vec<Vec<JournalEntry>>, JournalError> {
        const OPEN: &str = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM rollouts r JOIN rollout_journal j ON j.rollout_id = r.id \
             WHERE r.finished_at IS NULL ORDER BY r.id, j.seq"
        );
        self.db.read(
            || "reading the open rollouts of the rollout journal".to_owned(),
            |tx| {
                let mut rollouts: Vec<(i64, Vec<JournalEntry>)> = Vec::new();
                for stored in select(tx, OPEN, [])? {
                    match rollouts.last_mut() {
                        Some((rollout, entries)) if *rollout == stored.rollout => {
                            entries.push(stored.entry)
                        }
                        _ => rollouts.push((stored.rollout, vec![stored.entry])),
                    }
                }
                Ok::<_, Outcome<JournalError>>(
                    rollouts.into_iter().map(|(_, entries)| entries).collect(),
                )
            },
        )
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
            " FROM rollout_journal j WHERE j.agent_id = ?1 AND j.deployment_id = ?2 \
             ORDER BY j.seq"
        );
        self.db.read(
            || {
                format!(
                    "reading the rollout journal of deployment `{deployment}` of agent `{agent}`"
                )
            },
            |tx| {
                let entries = select(tx, ENTRIES, params![agent.as_str(), deployment.as_str()])?;
                Ok::<_, Outcome<JournalError>>(entries.into_iter().map(|s| s.entry).collect())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Duration;

    use caxton_core::journal::conformance as journal_conformance;
    use caxton_core::store::conformance;
    use caxton_core::{
        ArtifactKind, ArtifactStore, Deployment, DeploymentStore, ListQuery, RollbackTarget,
    };
    use futures::executor::block_on;
    use rusqlite::Connection;

    use super::*;
    use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

    /// What a registry answers about agent `a`: every deployment with its history, and
    /// the production.
    type Snapshot = (
        Vec<(Deployment, Vec<caxton_core::AuditEvent>)>,
        Option<Deployment>,
    );

    async fn snapshot(store: &SqliteStore, agent: &AgentId) -> Snapshot {
        let page = store
            .list(agent, &ListQuery::new().include_deleted(true))
            .await
            .unwrap();
        let mut all = Vec::new();
        for d in page.items {
            let history = store.history(agent, &d.id).await.unwrap();
            all.push((d, history));
        }
        (all, store.production(agent).await.unwrap())
    }

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    /// A registry of schema 1, as the code before the journal made it (migration 1 alone,
    /// then the header), holding deployments, history and an artifact written by the
    /// store: opening it migrates it to 2 in place; everything in it is as it was, and the
    /// journal works (its conformance suite passes on it).
    #[test]
    fn a_schema_1_registry_is_migrated_to_2_on_open_with_its_contents_intact() {
        assert_eq!(SCHEMA_VERSION, 2);
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.db");
        let path = dir.path().join("registry.db");
        let a = AgentId::new("a").unwrap();
        let module = b"\0asm\x01\0\0\0 v1 module".to_vec();
        let before = block_on(async {
            let store = SqliteStore::open(&source).unwrap();
            let v1 = conformance::create_running(&store, &a, "a-v1").await;
            let v2 = conformance::create_running(&store, &a, "a-v2").await;
            conformance::create_running(&store, &a, "a-v3").await;
            store.promote(&a, &v1.id, "first").await.unwrap();
            store.promote(&a, &v2.id, "second").await.unwrap();
            store
                .soft_delete(
                    &a,
                    &DeploymentId::new("a-v3").unwrap(),
                    Duration::from_secs(60),
                    "x",
                )
                .await
                .unwrap();
            store.put(ArtifactKind::Module, &module).await.unwrap();
            snapshot(&store, &a).await
        });

        // The schema 1 file, created 0600 as the store creates it.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(MIGRATIONS[0].sql).unwrap();
        raw.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        raw.pragma_update(None, "user_version", 1).unwrap();
        raw.pragma_update(None, "journal_mode", "WAL").unwrap();
        raw.execute("ATTACH DATABASE ?1 AS source", [source.to_str().unwrap()])
            .unwrap();
        raw.execute_batch(
            "INSERT INTO main.deployments SELECT * FROM source.deployments;
             INSERT INTO main.audit SELECT * FROM source.audit;
             INSERT INTO main.artifacts SELECT * FROM source.artifacts;
             DETACH DATABASE source;",
        )
        .unwrap();
        let tables: i64 = raw
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'rollout%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!((version(&raw), tables), (1, 0), "a schema 1 file");
        drop(raw);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(version(&Connection::open(&path).unwrap()), 2);
        block_on(async {
            assert_eq!(snapshot(&store, &a).await, before);
            let code = ArtifactStore::get(&store, &caxton_core::Digest::of(&module))
                .await
                .unwrap();
            assert_eq!(&code[..], &module[..]);
            // It goes on: a write, and the journal on a file that had none.
            store
                .rollback(&a, &RollbackTarget::Previous, "after the upgrade")
                .await
                .unwrap();
            journal_conformance::run(&store).await;
        });
        drop(store);
        // Opened again, there is nothing left to migrate.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(block_on(store.open_rollouts()).unwrap().len(), 2);
    }
}
