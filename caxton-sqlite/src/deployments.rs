//! [`DeploymentStore`] on the `deployments` and `audit` tables.
//!
//! Every statement names the agent it acts for (`agent_id = ?`), except the two that are
//! store-wide by nature: the insert of a new id (ids are unique across agents) and
//! [`SqliteStore::purge_expired`]. The soft-delete filter is [`live!`], written once.

use std::time::Duration;

use async_trait::async_trait;
use caxton_core::lifecycle;
use caxton_core::store::{
    CreateError, DeleteError, GetError, ListError, PromoteError, RollbackError, TransitionError,
};
use caxton_core::{
    AgentId, AuditAction, AuditEvent, Deployment, DeploymentId, DeploymentStore, LifecycleEvent,
    LifecycleState, ListCursor, ListQuery, NewDeployment, Page, Promotion, Rollback,
    RollbackTarget, Timestamp,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::connection::{Failure, Outcome};
use crate::{SqliteError, SqliteStore};

/// The soft-delete filter: true of a deployment that was not soft-deleted. The one place
/// it is written; every path that must not see deleted deployments uses it (listings,
/// production, the rollback target, and the guards of promote, rollback and delete).
macro_rules! live {
    () => {
        "expires_at IS NULL"
    };
}

/// The columns [`StoredDeployment::from_row`] reads, in its order, then whether the
/// deployment is live.
macro_rules! columns {
    () => {
        concat!(
            "id, agent_id, version, state, is_production, strategy, metadata, created_at, \
             updated_at, promoted_at, expires_at, revision, created_seq, (",
            live!(),
            ") AS live"
        )
    };
}

const SELECT_ONE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM deployments WHERE id = ?1 AND agent_id = ?2"
);

const SELECT_PRODUCTION: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM deployments WHERE agent_id = ?1 AND is_production AND ",
    live!()
);

/// A deployment with what the store keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The deployment.
    pub deployment: Deployment,
    /// How many times it changed, counting its creation: the number of its audit entries.
    /// Two reads with the same revision saw the same record, so it serves as a conflict
    /// token.
    pub revision: u64,
}

/// A row of `deployments`, decoded.
struct StoredDeployment {
    deployment: Deployment,
    revision: u64,
    created_seq: i64,
    live: bool,
}

impl StoredDeployment {
    fn from_row(row: &Row<'_>) -> Result<Result<Self, Failure>, rusqlite::Error> {
        let id: String = row.get(0)?;
        let agent: String = row.get(1)?;
        let version: String = row.get(2)?;
        let state: String = row.get(3)?;
        let is_production: bool = row.get(4)?;
        let strategy: String = row.get(5)?;
        let metadata: String = row.get(6)?;
        let created_at: i64 = row.get(7)?;
        let updated_at: i64 = row.get(8)?;
        let promoted_at: Option<i64> = row.get(9)?;
        let expires_at: Option<i64> = row.get(10)?;
        let revision: i64 = row.get(11)?;
        let created_seq: i64 = row.get(12)?;
        let live: bool = row.get(13)?;
        let bad = |column: &'static str, reason: String| Failure::BadRow {
            record: id.clone(),
            column,
            reason,
        };
        let decode = || -> Result<Self, Failure> {
            let time = |column, at: i64| {
                u64::try_from(at)
                    .map(Timestamp::from_millis)
                    .map_err(|_| bad(column, format!("negative time {at}")))
            };
            let deployment = Deployment {
                id: DeploymentId::new(&id).map_err(|e| bad("id", e.to_string()))?,
                agent: AgentId::new(&agent).map_err(|e| bad("agent_id", e.to_string()))?,
                version: serde_json::from_str(&version)
                    .map_err(|e| bad("version", e.to_string()))?,
                state: parse_state(&state).ok_or_else(|| bad("state", format!("{state:?}")))?,
                is_production,
                strategy,
                metadata: serde_json::from_str(&metadata)
                    .map_err(|e| bad("metadata", e.to_string()))?,
                created_at: time("created_at", created_at)?,
                updated_at: time("updated_at", updated_at)?,
                promoted_at: promoted_at.map(|at| time("promoted_at", at)).transpose()?,
                expires_at: expires_at.map(|at| time("expires_at", at)).transpose()?,
            };
            let revision = u64::try_from(revision)
                .map_err(|_| bad("revision", format!("negative revision {revision}")))?;
            Ok(StoredDeployment {
                deployment,
                revision,
                created_seq,
                live,
            })
        };
        Ok(decode())
    }
}

fn parse_state(text: &str) -> Option<LifecycleState> {
    LifecycleState::ALL.into_iter().find(|s| s.as_str() == text)
}

/// Milliseconds as SQLite stores them; instants past the year 292 million are stored as
/// the largest it can hold.
pub(crate) fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `e` is the violation of the unique constraint on `column` (`table.column`).
pub(crate) fn violates_unique(e: &rusqlite::Error, column: &str) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(err, Some(message)) => {
            err.code == rusqlite::ErrorCode::ConstraintViolation
                && message.ends_with(&format!("UNIQUE constraint failed: {column}"))
        }
        _ => false,
    }
}

/// Reads the deployment `id` of `agent`, deleted or not.
fn load(
    tx: &Transaction<'_>,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<Option<StoredDeployment>, Failure> {
    let row = tx
        .prepare_cached(SELECT_ONE)?
        .query_row(
            params![id.as_str(), agent.as_str()],
            StoredDeployment::from_row,
        )
        .optional()?;
    row.transpose()
}

/// Reads a deployment this transaction just wrote.
fn reload(tx: &Transaction<'_>, agent: &AgentId, id: &DeploymentId) -> Result<Deployment, Failure> {
    load(tx, agent, id)?
        .map(|stored| stored.deployment)
        .ok_or_else(|| Failure::BadRow {
            record: id.to_string(),
            column: "id",
            reason: "the row written in this transaction is gone".into(),
        })
}

fn production(tx: &Transaction<'_>, agent: &AgentId) -> Result<Option<StoredDeployment>, Failure> {
    let row = tx
        .prepare_cached(SELECT_PRODUCTION)?
        .query_row(params![agent.as_str()], StoredDeployment::from_row)
        .optional()?;
    row.transpose()
}

/// Appends an audit entry and counts the change in the deployment's revision (creation
/// is revision 1, written with the row).
fn audit(
    tx: &Transaction<'_>,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
    action: &AuditAction,
    reason: &str,
) -> Result<(), Failure> {
    let kind = match action {
        AuditAction::Created { .. } => "created",
        AuditAction::Transition { .. } => "transition",
        AuditAction::Promoted { .. } => "promoted",
        AuditAction::Demoted { .. } => "demoted",
        AuditAction::RestoredByRollback { .. } => "restored_by_rollback",
        AuditAction::SoftDeleted { .. } => "soft_deleted",
    };
    let json = serde_json::to_string(action).map_err(|e| Failure::BadRow {
        record: id.to_string(),
        column: "action",
        reason: e.to_string(),
    })?;
    tx.prepare_cached(
        "INSERT INTO audit (at, agent_id, deployment_id, kind, action, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        millis(at),
        agent.as_str(),
        id.as_str(),
        kind,
        json,
        reason
    ])?;
    if !matches!(action, AuditAction::Created { .. }) {
        tx.prepare_cached(
            "UPDATE deployments SET revision = revision + 1 WHERE id = ?1 AND agent_id = ?2",
        )?
        .execute(params![id.as_str(), agent.as_str()])?;
    }
    Ok(())
}

/// Makes `id` production of `agent`; the caller checked it is running and live.
/// Returns the previous production's id.
fn set_production(
    tx: &Transaction<'_>,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<Option<DeploymentId>, Failure> {
    let previous = production(tx, agent)?.map(|p| p.deployment.id);
    tx.prepare_cached(
        "UPDATE deployments SET is_production = 0, updated_at = ?2 \
         WHERE agent_id = ?1 AND is_production",
    )?
    .execute(params![agent.as_str(), millis(at)])?;
    mark_production(tx, at, agent, id)?;
    Ok(previous)
}

/// The one statement that sets `is_production`, guarded so that only a running, live
/// deployment becomes production. The partial unique index refuses a second production;
/// that refusal is a [`SqliteError::ProductionConflict`], not a panic.
fn mark_production(
    tx: &Transaction<'_>,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<(), Failure> {
    let changed = tx
        .prepare_cached(concat!(
            "UPDATE deployments SET is_production = 1, promoted_at = ?3, updated_at = ?3 \
             WHERE id = ?1 AND agent_id = ?2 AND state = 'running' AND ",
            live!()
        ))?
        .execute(params![id.as_str(), agent.as_str(), millis(at)])
        .map_err(|source| {
            if violates_unique(&source, "deployments.agent_id") {
                Failure::ProductionConflict {
                    agent: agent.clone(),
                    deployment: id.clone(),
                    source,
                }
            } else {
                Failure::Sql(source)
            }
        })?;
    if changed != 1 {
        return Err(Failure::BadRow {
            record: id.to_string(),
            column: "state",
            reason: "changed while it was being promoted".into(),
        });
    }
    Ok(())
}

fn promote_in(
    tx: &Transaction<'_>,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
    reason: &str,
) -> Result<Promotion, Outcome<PromoteError>> {
    let stored = load(tx, agent, id)?.ok_or_else(|| {
        Outcome::Refused(PromoteError::NotFound {
            agent: agent.clone(),
            deployment: id.clone(),
        })
    })?;
    if !stored.live {
        return Err(Outcome::Refused(PromoteError::Deleted {
            deployment: id.clone(),
        }));
    }
    if stored.deployment.state != LifecycleState::Running {
        return Err(Outcome::Refused(PromoteError::NotRunning {
            deployment: id.clone(),
            state: stored.deployment.state,
        }));
    }
    if stored.deployment.is_production {
        return Ok(Promotion {
            promoted: stored.deployment,
            previous: None,
        });
    }
    let previous = set_production(tx, at, agent, id)?;
    let promoted_action = AuditAction::Promoted {
        previous: previous.clone(),
    };
    audit(tx, at, agent, id, &promoted_action, reason)?;
    if let Some(prev) = &previous {
        let demoted = AuditAction::Demoted {
            replaced_by: id.clone(),
        };
        audit(tx, at, agent, prev, &demoted, reason)?;
    }
    Ok(Promotion {
        promoted: reload(tx, agent, id)?,
        previous: previous.map(|prev| reload(tx, agent, &prev)).transpose()?,
    })
}

/// A list cursor: the position of the last deployment of a page and its id.
fn cursor(stored: &StoredDeployment) -> ListCursor {
    ListCursor::new(format!("{}:{}", stored.created_seq, stored.deployment.id))
}

/// The position a cursor stands for, if it comes from a listing of `agent`.
fn position(
    tx: &Transaction<'_>,
    agent: &AgentId,
    cursor: &ListCursor,
) -> Result<Option<i64>, Failure> {
    let Some((seq, id)) = cursor.as_str().split_once(':') else {
        return Ok(None);
    };
    let Ok(seq) = seq.parse::<i64>() else {
        return Ok(None);
    };
    let owner: Option<(String, i64)> = tx
        .prepare_cached("SELECT agent_id, created_seq FROM deployments WHERE id = ?1")?
        .query_row(params![id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(match owner {
        Some((owner, at)) => (owner == agent.as_str() && at == seq).then_some(seq),
        // Purged since the page was read: its position still says where to go on.
        None => (seq > 0 && DeploymentId::new(id).is_ok()).then_some(seq),
    })
}

fn not_found_get(agent: &AgentId, id: &DeploymentId) -> Outcome<GetError> {
    Outcome::Refused(GetError::NotFound {
        agent: agent.clone(),
        deployment: id.clone(),
    })
}

impl SqliteStore {
    /// The deployment `id` of `agent` with its [revision](Versioned::revision).
    pub async fn get_versioned(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Versioned, GetError> {
        self.db.read(
            || format!("reading deployment `{id}` of agent `{agent}`"),
            |tx| {
                let stored = load(tx, agent, id)?.ok_or_else(|| not_found_get(agent, id))?;
                Ok(Versioned {
                    deployment: stored.deployment,
                    revision: stored.revision,
                })
            },
        )
    }

    /// Removes the soft-deleted deployments whose expiry has passed, with their audit
    /// history and their rollouts' journal entries, in one transaction; returns their
    /// ids. Store-wide maintenance: it is the one operation not scoped to an agent.
    pub async fn purge_expired(&self) -> Result<Vec<DeploymentId>, SqliteError> {
        let now = millis(self.db.clock.now());
        let ids = self.db.maintain(|tx, _at| {
            // A rollout, open or finished, goes with its candidate; its entries first, as
            // they refer to it.
            for table in ["rollout_journal", "rollouts"] {
                tx.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE (agent_id, deployment_id) IN \
                     (SELECT agent_id, id FROM deployments WHERE expires_at <= ?1)"
                ))?
                .execute(params![now])?;
            }
            tx.prepare_cached(
                "DELETE FROM audit WHERE deployment_id IN \
                 (SELECT id FROM deployments WHERE expires_at <= ?1)",
            )?
            .execute(params![now])?;
            let mut stmt =
                tx.prepare_cached("DELETE FROM deployments WHERE expires_at <= ?1 RETURNING id")?;
            let ids = stmt
                .query_map(params![now], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ids)
        })?;
        ids.into_iter()
            .map(|id| {
                DeploymentId::new(&id).map_err(|e| SqliteError::BadRow {
                    path: self.db.path.clone(),
                    record: id.clone(),
                    column: "id",
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn create(&self, new: NewDeployment) -> Result<Deployment, CreateError> {
        let agent = new.agent.clone();
        self.db.write(
            || format!("creating a deployment of agent `{agent}`"),
            |tx, at| {
                let version = serde_json::to_string(&new.version).map_err(|e| Failure::BadRow {
                    record: agent.to_string(),
                    column: "version",
                    reason: e.to_string(),
                })?;
                let metadata =
                    serde_json::to_string(&new.metadata).map_err(|e| Failure::BadRow {
                        record: agent.to_string(),
                        column: "metadata",
                        reason: e.to_string(),
                    })?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO deployments (id, agent_id, version, state, is_production, \
                     strategy, metadata, created_at, updated_at, revision) \
                     VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?6, 1)",
                )?;
                let id = loop {
                    let id = new.id.clone().unwrap_or_else(DeploymentId::generate);
                    let inserted = insert.execute(params![
                        id.as_str(),
                        agent.as_str(),
                        version,
                        new.strategy,
                        metadata,
                        millis(at)
                    ]);
                    match inserted {
                        Ok(_) => break id,
                        // Ids are unique across agents: the database says whether it is taken.
                        Err(e) if violates_unique(&e, "deployments.id") => {
                            if new.id.is_some() {
                                return Err(Outcome::Refused(CreateError::AlreadyExists {
                                    deployment: id,
                                }));
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                let created = AuditAction::Created {
                    state: LifecycleState::Pending,
                };
                audit(tx, at, &agent, &id, &created, "created")?;
                Ok(reload(tx, &agent, &id)?)
            },
        )
    }

    async fn get(&self, agent: &AgentId, id: &DeploymentId) -> Result<Deployment, GetError> {
        self.get_versioned(agent, id).await.map(|v| v.deployment)
    }

    async fn list(
        &self,
        agent: &AgentId,
        query: &ListQuery,
    ) -> Result<Page<Deployment>, ListError> {
        const ALL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM deployments WHERE agent_id = ?1 AND created_seq < ?2 \
             ORDER BY created_seq DESC LIMIT ?3"
        );
        const LIVE: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM deployments WHERE agent_id = ?1 AND created_seq < ?2 AND ",
            live!(),
            " ORDER BY created_seq DESC LIMIT ?3"
        );
        self.db.read(
            || format!("listing deployments of agent `{agent}`"),
            |tx| {
                let before = match &query.cursor {
                    None => i64::MAX,
                    Some(cursor) => position(tx, agent, cursor)?.ok_or_else(|| {
                        Outcome::Refused(ListError::InvalidCursor {
                            agent: agent.clone(),
                            cursor: cursor.to_string(),
                        })
                    })?,
                };
                let limit = query.effective_limit();
                let sql = if query.include_deleted { ALL } else { LIVE };
                let mut stmt = tx.prepare_cached(sql)?;
                // One more than the page: whether it exists says whether there is a next page.
                let rows = stmt.query_map(
                    params![agent.as_str(), before, limit as i64 + 1],
                    StoredDeployment::from_row,
                )?;
                let mut page = Vec::with_capacity(limit + 1);
                for row in rows {
                    page.push(row??);
                }
                let next = if page.len() > limit {
                    page.truncate(limit);
                    page.last().map(cursor)
                } else {
                    None
                };
                Ok(Page {
                    items: page.into_iter().map(|s| s.deployment).collect(),
                    next,
                })
            },
        )
    }

    async fn transition(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Deployment, TransitionError> {
        self.db.write(
            || format!("applying `{event}` to deployment `{id}` of agent `{agent}`"),
            |tx, at| {
                let stored = load(tx, agent, id)?.ok_or_else(|| {
                    Outcome::Refused(TransitionError::NotFound {
                        agent: agent.clone(),
                        deployment: id.clone(),
                    })
                })?;
                let from = stored.deployment.state;
                let (to, entry) = lifecycle::transition(agent, id, from, event, reason, at)
                    .map_err(|source| {
                        Outcome::Refused(TransitionError::Illegal {
                            deployment: id.clone(),
                            source,
                        })
                    })?;
                if stored.deployment.is_production && to != LifecycleState::Running {
                    return Err(Outcome::Refused(
                        TransitionError::ProductionMustStayRunning {
                            deployment: id.clone(),
                            event,
                        },
                    ));
                }
                tx.prepare_cached(
                    "UPDATE deployments SET state = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND agent_id = ?2",
                )?
                .execute(params![
                    id.as_str(),
                    agent.as_str(),
                    to.as_str(),
                    millis(at)
                ])?;
                audit(tx, at, agent, id, &entry.action, &entry.reason)?;
                Ok(reload(tx, agent, id)?)
            },
        )
    }

    async fn promote(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Promotion, PromoteError> {
        self.db.write(
            || format!("promoting deployment `{id}` of agent `{agent}`"),
            |tx, at| promote_in(tx, at, agent, id, reason),
        )
    }

    async fn promote_if_none(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Option<Promotion>, PromoteError> {
        self.db.write(
            || format!("promoting deployment `{id}` of agent `{agent}` if it has no production"),
            |tx, at| {
                if production(tx, agent)?.is_some() {
                    // Still report a bad id, so a typo does not look like "someone else was first".
                    if load(tx, agent, id)?.is_none() {
                        return Err(Outcome::Refused(PromoteError::NotFound {
                            agent: agent.clone(),
                            deployment: id.clone(),
                        }));
                    }
                    return Ok(None);
                }
                promote_in(tx, at, agent, id, reason).map(Some)
            },
        )
    }

    async fn rollback(
        &self,
        agent: &AgentId,
        target: &RollbackTarget,
        reason: &str,
    ) -> Result<Rollback, RollbackError> {
        // The latest deployment that became production (by promotion or restore), other
        // than the current one, still running and live.
        const PREVIOUS: &str = concat!(
            "SELECT a.deployment_id FROM audit a JOIN deployments d ON d.id = a.deployment_id \
             WHERE a.agent_id = ?1 AND a.kind IN ('promoted', 'restored_by_rollback') \
             AND d.agent_id = ?1 AND d.id <> ?2 AND d.state = 'running' AND d.",
            live!(),
            " ORDER BY a.seq DESC LIMIT 1"
        );
        self.db.write(
            || format!("rolling back the production of agent `{agent}`"),
            |tx, at| {
                let refuse = Outcome::Refused;
                let current = production(tx, agent)?.ok_or_else(|| {
                    refuse(RollbackError::NoProduction {
                        agent: agent.clone(),
                    })
                })?;
                let current = current.deployment;
                let restore = match target {
                    RollbackTarget::To(id) => {
                        let stored = load(tx, agent, id)?.ok_or_else(|| {
                            refuse(RollbackError::NotFound {
                                agent: agent.clone(),
                                deployment: id.clone(),
                            })
                        })?;
                        if *id == current.id {
                            return Err(refuse(RollbackError::TargetIsProduction {
                                deployment: id.clone(),
                            }));
                        }
                        if !stored.live {
                            return Err(refuse(RollbackError::TargetDeleted {
                                deployment: id.clone(),
                            }));
                        }
                        if stored.deployment.state != LifecycleState::Running {
                            return Err(refuse(RollbackError::TargetNotRunning {
                                deployment: id.clone(),
                                state: stored.deployment.state,
                            }));
                        }
                        id.clone()
                    }
                    RollbackTarget::Previous => {
                        let found: Option<String> = tx
                            .prepare_cached(PREVIOUS)?
                            .query_row(params![agent.as_str(), current.id.as_str()], |row| {
                                row.get(0)
                            })
                            .optional()?;
                        let found = found.ok_or_else(|| {
                            refuse(RollbackError::NoRollbackTarget {
                                agent: agent.clone(),
                            })
                        })?;
                        DeploymentId::new(&found).map_err(|e| Failure::BadRow {
                            record: found.clone(),
                            column: "deployment_id",
                            reason: e.to_string(),
                        })?
                    }
                };
                // The production is running (the schema's CHECK), so this is legal.
                let (to, entry) = lifecycle::transition(
                    agent,
                    &current.id,
                    current.state,
                    LifecycleEvent::RollBack,
                    reason,
                    at,
                )
                .map_err(|e| Failure::BadRow {
                    record: current.id.to_string(),
                    column: "state",
                    reason: e.to_string(),
                })?;
                tx.prepare_cached(
                    "UPDATE deployments SET state = ?3, is_production = 0, updated_at = ?4 \
                     WHERE id = ?1 AND agent_id = ?2",
                )?
                .execute(params![
                    current.id.as_str(),
                    agent.as_str(),
                    to.as_str(),
                    millis(at)
                ])?;
                mark_production(tx, at, agent, &restore)?;
                audit(tx, at, agent, &current.id, &entry.action, &entry.reason)?;
                let restored_action = AuditAction::RestoredByRollback {
                    rolled_back: current.id.clone(),
                };
                audit(tx, at, agent, &restore, &restored_action, reason)?;
                Ok(Rollback {
                    restored: reload(tx, agent, &restore)?,
                    rolled_back: reload(tx, agent, &current.id)?,
                })
            },
        )
    }

    async fn soft_delete(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        retention: Duration,
        reason: &str,
    ) -> Result<Deployment, DeleteError> {
        self.db.write(
            || format!("deleting deployment `{id}` of agent `{agent}`"),
            |tx, at| {
                let stored = load(tx, agent, id)?.ok_or_else(|| {
                    Outcome::Refused(DeleteError::NotFound {
                        agent: agent.clone(),
                        deployment: id.clone(),
                    })
                })?;
                if stored.deployment.is_production {
                    return Err(Outcome::Refused(DeleteError::IsProduction {
                        deployment: id.clone(),
                    }));
                }
                if !stored.live {
                    return Ok(stored.deployment);
                }
                let expires_at = millis(at + retention);
                tx.prepare_cached(concat!(
                    "UPDATE deployments SET expires_at = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND agent_id = ?2 AND NOT is_production AND ",
                    live!()
                ))?
                .execute(params![
                    id.as_str(),
                    agent.as_str(),
                    expires_at,
                    millis(at)
                ])?;
                let deleted = reload(tx, agent, id)?;
                let action = AuditAction::SoftDeleted {
                    expires_at: deleted.expires_at.unwrap_or(at + retention),
                };
                audit(tx, at, agent, id, &action, reason)?;
                Ok(reload(tx, agent, id)?)
            },
        )
    }

    async fn history(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Vec<AuditEvent>, GetError> {
        self.db.read(
            || format!("reading the history of deployment `{id}` of agent `{agent}`"),
            |tx| {
                if load(tx, agent, id)?.is_none() {
                    return Err(not_found_get(agent, id));
                }
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, at, action, reason FROM audit \
                     WHERE deployment_id = ?1 AND agent_id = ?2 ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![id.as_str(), agent.as_str()], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })?;
                let mut history = Vec::new();
                for row in rows {
                    let (seq, at, action, reason) = row?;
                    let bad = |column, reason: String| Failure::BadRow {
                        record: format!("audit entry {seq}"),
                        column,
                        reason,
                    };
                    history.push(AuditEvent {
                        seq: u64::try_from(seq).map_err(|e| bad("seq", e.to_string()))?,
                        at: Timestamp::from_millis(
                            u64::try_from(at).map_err(|e| bad("at", e.to_string()))?,
                        ),
                        agent: agent.clone(),
                        deployment: id.clone(),
                        action: serde_json::from_str(&action)
                            .map_err(|e| bad("action", e.to_string()))?,
                        reason,
                    });
                }
                Ok(history)
            },
        )
    }

    async fn production(&self, agent: &AgentId) -> Result<Option<Deployment>, GetError> {
        self.db.read(
            || format!("reading the production of agent `{agent}`"),
            |tx| Ok(production(tx, agent)?.map(|s| s.deployment)),
        )
    }
    async fn agents(&self) -> Result<Vec<AgentId>, ListError> {
        const AGENTS: &str = concat!(
            "SELECT DISTINCT agent_id FROM deployments WHERE ",
            live!(),
            " ORDER BY agent_id"
        );
        self.db.read(
            || "listing the agents".to_owned(),
            |tx| {
                let mut stmt = tx.prepare_cached(AGENTS)?;
                let names = stmt.query_map([], |row| row.get::<_, String>(0))?;
                let mut agents = Vec::new();
                for name in names {
                    let name = name?;
                    let agent = AgentId::new(&name).map_err(|e| Failure::BadRow {
                        record: name.clone(),
                        column: "agent_id",
                        reason: e.to_string(),
                    })?;
                    agents.push(agent);
                }
                Ok(agents)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use caxton_core::BackendError;
    use caxton_core::store::conformance;
    use futures::executor::block_on;

    use super::*;

    /// The store never asks for a second production, so make it: mark a deployment
    /// production without demoting the one there is. The database refuses, and the
    /// refusal is a typed conflict inside the operation's backend error.
    #[test]
    fn a_second_production_is_a_typed_conflict_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("registry.db")).unwrap();
        let agent = AgentId::new("processor").unwrap();
        let (v1, v2) = block_on(async {
            let v1 = conformance::create_running(&store, &agent, "v1").await;
            let v2 = conformance::create_running(&store, &agent, "v2").await;
            store.promote(&agent, &v1.id, "first").await.unwrap();
            (v1, v2)
        });
        let err: PromoteError = store
            .db
            .write(
                || format!("promoting deployment `{}` of agent `{agent}`", v2.id),
                |tx, at| Ok(mark_production(tx, at, &agent, &v2.id)?),
            )
            .unwrap_err();
        let path = store.path().display().to_string();
        assert_eq!(
            err.to_string(),
            format!(
                "deployment store failed: promoting deployment `v2` of agent `processor`: the \
                 registry file {path} refused to make deployment `v2` a second production of \
                 agent `processor`"
            )
        );
        let backend = err.source().and_then(|e| e.downcast_ref::<BackendError>());
        let conflict = backend
            .and_then(|e| e.source())
            .and_then(|e| e.downcast_ref::<SqliteError>());
        assert!(
            matches!(conflict, Some(SqliteError::ProductionConflict { agent: a, deployment, .. })
                if *a == agent && *deployment == v2.id),
            "{conflict:?}"
        );
        // Nothing changed.
        let production = block_on(store.production(&agent)).unwrap().unwrap();
        assert_eq!(production.id, v1.id);
        assert!(!block_on(store.get(&agent, &v2.id)).unwrap().is_production);
    }

    #[test]
    fn purge_removes_only_expired_deployments_and_their_history() {
        let clock = caxton_core::ManualClock::new(Timestamp::from_millis(1_000));
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder(dir.path().join("registry.db"))
            .clock(std::sync::Arc::new(clock.clone()))
            .open()
            .unwrap();
        let agent = AgentId::new("a").unwrap();
        block_on(async {
            let old = conformance::create_running(&store, &agent, "old").await;
            let d = conformance::create_running(&store, &agent, "d").await;
            let keep = conformance::create_running(&store, &agent, "keep").await;
            let first_page = store
                .list(&agent, &ListQuery::new().limit(2).include_deleted(true))
                .await
                .unwrap();
            store
                .soft_delete(&agent, &d.id, Duration::from_secs(10), "old")
                .await
                .unwrap();
            store
                .soft_delete(&agent, &keep.id, Duration::from_secs(100), "old")
                .await
                .unwrap();
            assert!(store.purge_expired().await.unwrap().is_empty());
            clock.advance(Duration::from_secs(10));
            assert_eq!(store.purge_expired().await.unwrap(), vec![d.id.clone()]);
            assert!(store.get(&agent, &d.id).await.is_err());
            assert!(store.history(&agent, &d.id).await.is_err());
            assert!(store.get(&agent, &keep.id).await.is_ok());
            // A cursor that names a purged deployment still says where the listing goes on.
            let cursor = first_page.next.expect("a second page");
            let rest = store
                .list(&agent, &ListQuery::new().limit(2).after(cursor))
                .await
                .unwrap();
            assert_eq!(rest.items, vec![old]);
        });
    }
}
