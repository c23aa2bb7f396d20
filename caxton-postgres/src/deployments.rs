//! [`DeploymentStore`] on the `deployments` and `audit` tables.
//!
//! Every statement names the agent it acts for (`agent_id = $n`), except the two that
//! are store-wide by nature: the insert of a new id (ids are unique across agents) and
//! [`PostgresStore::purge_expired`]. The soft-delete filter is [`live!`], written once.

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
use tokio_postgres::{Client, Row};

use crate::db::{CHANNEL, Outcome};
use crate::error::violates;
use crate::{PostgresError, PostgresStore};

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
    " FROM deployments WHERE id = $1 AND agent_id = $2"
);

const SELECT_PRODUCTION: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM deployments WHERE agent_id = $1 AND is_production AND ",
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

/// Reads column `i` of `row`; a type this version does not expect is a bad row.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    record: &dyn Fn() -> String,
    name: &'static str,
) -> Result<T, PostgresError> {
    row.try_get(i).map_err(|e| PostgresError::BadRow {
        record: record(),
        column: name,
        reason: e.to_string(),
    })
}

impl StoredDeployment {
    fn from_row(row: &Row) -> Result<Self, PostgresError> {
        let id: String = column(row, 0, &|| "a deployment".into(), "id")?;
        let record = || id.clone();
        let bad = |column: &'static str, reason: String| PostgresError::BadRow {
            record: id.clone(),
            column,
            reason,
        };
        let agent: String = column(row, 1, &record, "agent_id")?;
        let version: String = column(row, 2, &record, "version")?;
        let state: String = column(row, 3, &record, "state")?;
        let is_production: bool = column(row, 4, &record, "is_production")?;
        let strategy: String = column(row, 5, &record, "strategy")?;
        let metadata: String = column(row, 6, &record, "metadata")?;
        let created_at: i64 = column(row, 7, &record, "created_at")?;
        let updated_at: i64 = column(row, 8, &record, "updated_at")?;
        let promoted_at: Option<i64> = column(row, 9, &record, "promoted_at")?;
        let expires_at: Option<i64> = column(row, 10, &record, "expires_at")?;
        let revision: i64 = column(row, 11, &record, "revision")?;
        let created_seq: i64 = column(row, 12, &record, "created_seq")?;
        let live: bool = column(row, 13, &record, "live")?;
        let time = |column, at: i64| {
            u64::try_from(at)
                .map(Timestamp::from_millis)
                .map_err(|_| bad(column, format!("negative time {at}")))
        };
        let deployment = Deployment {
            id: DeploymentId::new(&id).map_err(|e| bad("id", e.to_string()))?,
            agent: AgentId::new(&agent).map_err(|e| bad("agent_id", e.to_string()))?,
            version: serde_json::from_str(&version).map_err(|e| bad("version", e.to_string()))?,
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
    }
}

fn parse_state(text: &str) -> Option<LifecycleState> {
    LifecycleState::ALL.into_iter().find(|s| s.as_str() == text)
}

/// Milliseconds as the database stores them; instants past the year 292 million are
/// stored as the largest it can hold.
pub(crate) fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the deployment `id` of `agent`, deleted or not.
async fn load(
    client: &Client,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<Option<StoredDeployment>, PostgresError> {
    client
        .query_opt(SELECT_ONE, &[&id.as_str(), &agent.as_str()])
        .await?
        .map(|row| StoredDeployment::from_row(&row))
        .transpose()
}

/// Reads a deployment this transaction just wrote.
async fn reload(
    client: &Client,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<Deployment, PostgresError> {
    load(client, agent, id)
        .await?
        .map(|stored| stored.deployment)
        .ok_or_else(|| PostgresError::BadRow {
            record: id.to_string(),
            column: "id",
            reason: "the row written in this transaction is gone".into(),
        })
}

async fn production(
    client: &Client,
    agent: &AgentId,
) -> Result<Option<StoredDeployment>, PostgresError> {
    client
        .query_opt(SELECT_PRODUCTION, &[&agent.as_str()])
        .await?
        .map(|row| StoredDeployment::from_row(&row))
        .transpose()
}

/// Appends an audit entry and counts the change in the deployment's revision (creation
/// is revision 1, written with the row).
async fn audit(
    client: &Client,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
    action: &AuditAction,
    reason: &str,
) -> Result<(), PostgresError> {
    let kind = match action {
        AuditAction::Created { .. } => "created",
        AuditAction::Transition { .. } => "transition",
        AuditAction::Promoted { .. } => "promoted",
        AuditAction::Demoted { .. } => "demoted",
        AuditAction::RestoredByRollback { .. } => "restored_by_rollback",
        AuditAction::SoftDeleted { .. } => "soft_deleted",
    };
    let json = serde_json::to_string(action).map_err(|e| PostgresError::BadRow {
        record: id.to_string(),
        column: "action",
        reason: e.to_string(),
    })?;
    client
        .execute(
            "INSERT INTO audit (at, agent_id, deployment_id, kind, action, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &millis(at),
                &agent.as_str(),
                &id.as_str(),
                &kind,
                &json,
                &reason,
            ],
        )
        .await?;
    if !matches!(action, AuditAction::Created { .. }) {
        client
            .execute(
                "UPDATE deployments SET revision = revision + 1 WHERE id = $1 AND agent_id = $2",
                &[&id.as_str(), &agent.as_str()],
            )
            .await?;
    }
    Ok(())
}

/// Makes `id` production of `agent`; the caller checked it is running and live.
/// Returns the previous production's id.
async fn set_production(
    client: &Client,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<Option<DeploymentId>, PostgresError> {
    let previous = production(client, agent).await?.map(|p| p.deployment.id);
    client
        .execute(
            "UPDATE deployments SET is_production = FALSE, updated_at = $2 \
             WHERE agent_id = $1 AND is_production",
            &[&agent.as_str(), &millis(at)],
        )
        .await?;
    mark_production(client, at, agent, id).await?;
    Ok(previous)
}

/// The one statement that sets `is_production`, guarded so that only a running, live
/// deployment becomes production. The partial unique index refuses a second production;
/// that refusal is a [`PostgresError::ProductionConflict`], not a panic.
pub(crate) async fn mark_production(
    client: &Client,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<(), PostgresError> {
    let changed = client
        .execute(
            concat!(
                "UPDATE deployments SET is_production = TRUE, promoted_at = $3, updated_at = $3 \
                 WHERE id = $1 AND agent_id = $2 AND state = 'running' AND ",
                live!()
            ),
            &[&id.as_str(), &agent.as_str(), &millis(at)],
        )
        .await
        .map_err(|source| {
            if violates(&source, "deployments_one_production") {
                PostgresError::ProductionConflict {
                    agent: agent.clone(),
                    deployment: id.clone(),
                    source,
                }
            } else {
                source.into()
            }
        })?;
    if changed != 1 {
        return Err(PostgresError::BadRow {
            record: id.to_string(),
            column: "state",
            reason: "changed while it was being promoted".into(),
        });
    }
    Ok(())
}

async fn promote_in(
    client: &Client,
    at: Timestamp,
    agent: &AgentId,
    id: &DeploymentId,
    reason: &str,
) -> Result<Promotion, Outcome<PromoteError>> {
    let stored = load(client, agent, id).await?.ok_or_else(|| {
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
    let previous = set_production(client, at, agent, id).await?;
    let promoted_action = AuditAction::Promoted {
        previous: previous.clone(),
    };
    audit(client, at, agent, id, &promoted_action, reason).await?;
    if let Some(prev) = &previous {
        let demoted = AuditAction::Demoted {
            replaced_by: id.clone(),
        };
        audit(client, at, agent, prev, &demoted, reason).await?;
    }
    let promoted = reload(client, agent, id).await?;
    let previous = match previous {
        Some(prev) => Some(reload(client, agent, &prev).await?),
        None => None,
    };
    Ok(Promotion { promoted, previous })
}

/// A list cursor: the position of the last deployment of a page and its id.
fn cursor(stored: &StoredDeployment) -> ListCursor {
    ListCursor::new(format!("{}:{}", stored.created_seq, stored.deployment.id))
}

/// The position a cursor stands for, if it comes from a listing of `agent`.
async fn position(
    client: &Client,
    agent: &AgentId,
    cursor: &ListCursor,
) -> Result<Option<i64>, PostgresError> {
    let Some((seq, id)) = cursor.as_str().split_once(':') else {
        return Ok(None);
    };
    let Ok(seq) = seq.parse::<i64>() else {
        return Ok(None);
    };
    let owner = client
        .query_opt(
            "SELECT agent_id, created_seq FROM deployments WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(match owner {
        Some(row) => {
            let owner: String = row.get(0);
            let at: i64 = row.get(1);
            (owner == agent.as_str() && at == seq).then_some(seq)
        }
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

impl PostgresStore {
    /// The deployment `id` of `agent` with its [revision](Versioned::revision).
    pub async fn get_versioned(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Versioned, GetError> {
        let (a, i) = (agent.clone(), id.clone());
        self.db
            .read(
                || format!("reading deployment `{id}` of agent `{agent}`"),
                move |client| {
                    Box::pin(async move {
                        let stored = load(client, &a, &i)
                            .await?
                            .ok_or_else(|| not_found_get(&a, &i))?;
                        Ok(Versioned {
                            deployment: stored.deployment,
                            revision: stored.revision,
                        })
                    })
                },
            )
            .await
    }

    /// Removes the soft-deleted deployments whose expiry has passed, with their audit
    /// history and their rollouts' journal entries, in one transaction; returns their
    /// ids. Store-wide maintenance: it is the one operation not scoped to an agent. The
    /// change feed is notified of each agent that lost a deployment.
    pub async fn purge_expired(&self) -> Result<Vec<DeploymentId>, PostgresError> {
        let purged = self
            .db
            .maintain(|client, now| {
                Box::pin(async move {
                    let now = millis(now);
                    // A rollout, open or finished, goes with its candidate; its
                    // entries first, as they refer to it.
                    for table in ["rollout_journal", "rollouts"] {
                        client
                            .execute(
                                &format!(
                                    "DELETE FROM {table} WHERE (agent_id, deployment_id) IN \
                                         (SELECT agent_id, id FROM deployments \
                                         WHERE expires_at <= $1)"
                                ),
                                &[&now],
                            )
                            .await?;
                    }
                    client
                        .execute(
                            "DELETE FROM audit WHERE deployment_id IN \
                                 (SELECT id FROM deployments WHERE expires_at <= $1)",
                            &[&now],
                        )
                        .await?;
                    let rows = client
                        .query(
                            "DELETE FROM deployments WHERE expires_at <= $1 \
                                 RETURNING id, agent_id",
                            &[&now],
                        )
                        .await?;
                    let mut purged = Vec::with_capacity(rows.len());
                    for row in rows {
                        let agent: String = row.get(1);
                        client
                            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &agent])
                            .await?;
                        purged.push((row.get::<_, String>(0), agent));
                    }
                    Ok(purged)
                })
            })
            .await?;
        purged
            .into_iter()
            .map(|(id, _)| {
                DeploymentId::new(&id).map_err(|e| PostgresError::BadRow {
                    record: id.clone(),
                    column: "id",
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl DeploymentStore for PostgresStore {
    async fn create(&self, new: NewDeployment) -> Result<Deployment, CreateError> {
        let agent = new.agent.clone();
        self.db
            .write(
                &agent,
                || format!("creating a deployment of agent `{}`", new.agent),
                {
                    let new = new.clone();
                    move |client, at| {
                        Box::pin(async move {
                            let agent = new.agent.clone();
                            let bad = |column, e: serde_json::Error| PostgresError::BadRow {
                                record: agent.to_string(),
                                column,
                                reason: e.to_string(),
                            };
                            let version = serde_json::to_string(&new.version)
                                .map_err(|e| bad("version", e))?;
                            let metadata = serde_json::to_string(&new.metadata)
                                .map_err(|e| bad("metadata", e))?;
                            let id = loop {
                                let id = new.id.clone().unwrap_or_else(DeploymentId::generate);
                                // Ids are unique across agents: the database says whether
                                // it is taken (ON CONFLICT keeps the transaction usable).
                                let inserted = client
                                    .execute(
                                        "INSERT INTO deployments (id, agent_id, version, state, \
                                         is_production, strategy, metadata, created_at, \
                                         updated_at, revision) \
                                         VALUES ($1, $2, $3, 'pending', FALSE, $4, $5, $6, $6, 1) \
                                         ON CONFLICT (id) DO NOTHING",
                                        &[
                                            &id.as_str(),
                                            &agent.as_str(),
                                            &version,
                                            &new.strategy,
                                            &metadata,
                                            &millis(at),
                                        ],
                                    )
                                    .await?;
                                if inserted == 1 {
                                    break id;
                                }
                                if new.id.is_some() {
                                    return Err(Outcome::Refused(CreateError::AlreadyExists {
                                        deployment: id,
                                    }));
                                }
                            };
                            let created = AuditAction::Created {
                                state: LifecycleState::Pending,
                            };
                            audit(client, at, &agent, &id, &created, "created").await?;
                            Ok(reload(client, &agent, &id).await?)
                        })
                    }
                },
            )
            .await
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
            " FROM deployments WHERE agent_id = $1 AND created_seq < $2 \
             ORDER BY created_seq DESC LIMIT $3"
        );
        const LIVE: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM deployments WHERE agent_id = $1 AND created_seq < $2 AND ",
            live!(),
            " ORDER BY created_seq DESC LIMIT $3"
        );
        let (a, query) = (agent.clone(), query.clone());
        self.db
            .read(
                || format!("listing deployments of agent `{agent}`"),
                move |client| {
                    Box::pin(async move {
                        let before = match &query.cursor {
                            None => i64::MAX,
                            Some(cursor) => {
                                position(client, &a, cursor).await?.ok_or_else(|| {
                                    Outcome::Refused(ListError::InvalidCursor {
                                        agent: a.clone(),
                                        cursor: cursor.to_string(),
                                    })
                                })?
                            }
                        };
                        let limit = query.effective_limit();
                        let sql = if query.include_deleted { ALL } else { LIVE };
                        // One more than the page: whether it exists says whether there is a
                        // next page.
                        let rows = client
                            .query(sql, &[&a.as_str(), &before, &(limit as i64 + 1)])
                            .await?;
                        let mut page = Vec::with_capacity(limit + 1);
                        for row in &rows {
                            page.push(StoredDeployment::from_row(row)?);
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
                    })
                },
            )
            .await
    }

    async fn transition(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Deployment, TransitionError> {
        let (a, i, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.db
            .write(
                agent,
                || format!("applying `{event}` to deployment `{id}` of agent `{agent}`"),
                move |client, at| {
                    Box::pin(async move {
                        let stored = load(client, &a, &i).await?.ok_or_else(|| {
                            Outcome::Refused(TransitionError::NotFound {
                                agent: a.clone(),
                                deployment: i.clone(),
                            })
                        })?;
                        let from = stored.deployment.state;
                        let (to, entry) = lifecycle::transition(&a, &i, from, event, &reason, at)
                            .map_err(|source| {
                            Outcome::Refused(TransitionError::Illegal {
                                deployment: i.clone(),
                                source,
                            })
                        })?;
                        if stored.deployment.is_production && to != LifecycleState::Running {
                            return Err(Outcome::Refused(
                                TransitionError::ProductionMustStayRunning {
                                    deployment: i.clone(),
                                    event,
                                },
                            ));
                        }
                        client
                            .execute(
                                "UPDATE deployments SET state = $3, updated_at = $4 \
                                 WHERE id = $1 AND agent_id = $2",
                                &[&i.as_str(), &a.as_str(), &to.as_str(), &millis(at)],
                            )
                            .await?;
                        audit(client, at, &a, &i, &entry.action, &entry.reason).await?;
                        Ok(reload(client, &a, &i).await?)
                    })
                },
            )
            .await
    }

    async fn promote(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Promotion, PromoteError> {
        let (a, i, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.db
            .write(
                agent,
                || format!("promoting deployment `{id}` of agent `{agent}`"),
                move |client, at| {
                    Box::pin(async move { promote_in(client, at, &a, &i, &reason).await })
                },
            )
            .await
    }

    async fn promote_if_none(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Option<Promotion>, PromoteError> {
        let (a, i, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.db
            .write(
                agent,
                || {
                    format!(
                        "promoting deployment `{id}` of agent `{agent}` if it has no production"
                    )
                },
                move |client, at| {
                    Box::pin(async move {
                        if production(client, &a).await?.is_some() {
                            // Still report a bad id, so a typo does not look like "someone
                            // else was first".
                            if load(client, &a, &i).await?.is_none() {
                                return Err(Outcome::Refused(PromoteError::NotFound {
                                    agent: a.clone(),
                                    deployment: i.clone(),
                                }));
                            }
                            return Ok(None);
                        }
                        promote_in(client, at, &a, &i, &reason).await.map(Some)
                    })
                },
            )
            .await
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
             WHERE a.agent_id = $1 AND a.kind IN ('promoted', 'restored_by_rollback') \
             AND d.agent_id = $1 AND d.id <> $2 AND d.state = 'running' AND d.",
            live!(),
            " ORDER BY a.seq DESC LIMIT 1"
        );
        let (a, target, reason) = (agent.clone(), target.clone(), reason.to_owned());
        self.db
            .write(
                agent,
                || format!("rolling back the production of agent `{agent}`"),
                move |client, at| {
                    Box::pin(async move {
                        let agent = &a;
                        let refuse = Outcome::Refused;
                        let current = production(client, agent).await?.ok_or_else(|| {
                            refuse(RollbackError::NoProduction {
                                agent: agent.clone(),
                            })
                        })?;
                        let current = current.deployment;
                        let restore = match &target {
                            RollbackTarget::To(id) => {
                                let stored = load(client, agent, id).await?.ok_or_else(|| {
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
                                let found = client
                                    .query_opt(PREVIOUS, &[&agent.as_str(), &current.id.as_str()])
                                    .await?;
                                let found: String = found
                                    .ok_or_else(|| {
                                        refuse(RollbackError::NoRollbackTarget {
                                            agent: agent.clone(),
                                        })
                                    })?
                                    .get(0);
                                DeploymentId::new(&found).map_err(|e| PostgresError::BadRow {
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
                            &reason,
                            at,
                        )
                        .map_err(|e| PostgresError::BadRow {
                            record: current.id.to_string(),
                            column: "state",
                            reason: e.to_string(),
                        })?;
                        client
                            .execute(
                                "UPDATE deployments SET state = $3, is_production = FALSE, \
                                 updated_at = $4 WHERE id = $1 AND agent_id = $2",
                                &[
                                    &current.id.as_str(),
                                    &agent.as_str(),
                                    &to.as_str(),
                                    &millis(at),
                                ],
                            )
                            .await?;
                        mark_production(client, at, agent, &restore).await?;
                        audit(client, at, agent, &current.id, &entry.action, &entry.reason).await?;
                        let restored_action = AuditAction::RestoredByRollback {
                            rolled_back: current.id.clone(),
                        };
                        audit(client, at, agent, &restore, &restored_action, &reason).await?;
                        Ok(Rollback {
                            restored: reload(client, agent, &restore).await?,
                            rolled_back: reload(client, agent, &current.id).await?,
                        })
                    })
                },
            )
            .await
    }

    async fn soft_delete(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        retention: Duration,
        reason: &str,
    ) -> Result<Deployment, DeleteError> {
        let (a, i, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.db
            .write(
                agent,
                || format!("deleting deployment `{id}` of agent `{agent}`"),
                move |client, at| {
                    Box::pin(async move {
                        let stored = load(client, &a, &i).await?.ok_or_else(|| {
                            Outcome::Refused(DeleteError::NotFound {
                                agent: a.clone(),
                                deployment: i.clone(),
                            })
                        })?;
                        if stored.deployment.is_production {
                            return Err(Outcome::Refused(DeleteError::IsProduction {
                                deployment: i.clone(),
                            }));
                        }
                        if !stored.live {
                            return Ok(stored.deployment);
                        }
                        let expires_at = millis(at + retention);
                        client
                            .execute(
                                concat!(
                                    "UPDATE deployments SET expires_at = $3, updated_at = $4 \
                                     WHERE id = $1 AND agent_id = $2 AND NOT is_production AND ",
                                    live!()
                                ),
                                &[&i.as_str(), &a.as_str(), &expires_at, &millis(at)],
                            )
                            .await?;
                        let deleted = reload(client, &a, &i).await?;
                        let action = AuditAction::SoftDeleted {
                            expires_at: deleted.expires_at.unwrap_or(at + retention),
                        };
                        audit(client, at, &a, &i, &action, &reason).await?;
                        Ok(reload(client, &a, &i).await?)
                    })
                },
            )
            .await
    }

    async fn history(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Vec<AuditEvent>, GetError> {
        let (a, i) = (agent.clone(), id.clone());
        self.db
            .read(
                || format!("reading the history of deployment `{id}` of agent `{agent}`"),
                move |client| {
                    Box::pin(async move {
                        if load(client, &a, &i).await?.is_none() {
                            return Err(not_found_get(&a, &i));
                        }
                        let rows = client
                            .query(
                                "SELECT seq, at, action, reason FROM audit \
                                 WHERE deployment_id = $1 AND agent_id = $2 ORDER BY seq",
                                &[&i.as_str(), &a.as_str()],
                            )
                            .await?;
                        let mut history = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let seq: i64 = column(row, 0, &|| "an audit entry".into(), "seq")?;
                            let record = || format!("audit entry {seq}");
                            let at: i64 = column(row, 1, &record, "at")?;
                            let action: String = column(row, 2, &record, "action")?;
                            let reason: String = column(row, 3, &record, "reason")?;
                            let bad = |column, reason: String| PostgresError::BadRow {
                                record: record(),
                                column,
                                reason,
                            };
                            history.push(AuditEvent {
                                seq: u64::try_from(seq).map_err(|e| bad("seq", e.to_string()))?,
                                at: Timestamp::from_millis(
                                    u64::try_from(at).map_err(|e| bad("at", e.to_string()))?,
                                ),
                                agent: a.clone(),
                                deployment: i.clone(),
                                action: serde_json::from_str(&action)
                                    .map_err(|e| bad("action", e.to_string()))?,
                                reason,
                            });
                        }
                        Ok(history)
                    })
                },
            )
            .await
    }

    async fn production(&self, agent: &AgentId) -> Result<Option<Deployment>, GetError> {
        let a = agent.clone();
        self.db
            .read(
                || format!("reading the production of agent `{agent}`"),
                move |client| {
                    Box::pin(async move { Ok(production(client, &a).await?.map(|s| s.deployment)) })
                },
            )
            .await
    }

    async fn agents(&self) -> Result<Vec<AgentId>, ListError> {
        const AGENTS: &str = concat!(
            "SELECT DISTINCT agent_id FROM deployments WHERE ",
            live!(),
            " ORDER BY agent_id"
        );
        self.db
            .read(
                || "listing the agents".to_owned(),
                |client| {
                    Box::pin(async move {
                        let rows = client.query(AGENTS, &[]).await?;
                        let mut agents = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let name: String = row.get(0);
                            let agent = AgentId::new(&name).map_err(|e| PostgresError::BadRow {
                                record: name.clone(),
                                column: "agent_id",
                                reason: e.to_string(),
                            })?;
                            agents.push(agent);
                        }
                        Ok(agents)
                    })
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use caxton_core::BackendError;
    use caxton_core::store::conformance;
    use futures::executor::block_on;

    use super::*;
    use crate::ScratchDatabase;

    /// The store never asks for a second production, so make it: mark a deployment
    /// production without demoting the one there is. The database refuses, and the
    /// refusal is a typed conflict inside the operation's backend error.
    #[test]
    fn a_second_production_is_a_typed_conflict_not_a_panic() {
        let server = match std::env::var("CAXTON_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => panic!("CAXTON_TEST_POSTGRES_URL is not set"),
            _ => return eprintln!("note: skipped: CAXTON_TEST_POSTGRES_URL is not set"),
        };
        let db = ScratchDatabase::create(&server).unwrap();
        let store = PostgresStore::connect(db.url()).unwrap();
        let agent = AgentId::new("processor").unwrap();
        let (v1, v2) = block_on(async {
            let v1 = conformance::create_running(&store, &agent, "v1").await;
            let v2 = conformance::create_running(&store, &agent, "v2").await;
            store.promote(&agent, &v1.id, "first").await.unwrap();
            (v1, v2)
        });
        let (a, id) = (agent.clone(), v2.id.clone());
        let err: PromoteError = block_on(store.db.write(
            &agent,
            || "promoting deployment `v2` of agent `processor`".to_owned(),
            move |client, at| {
                Box::pin(async move { Ok(mark_production(client, at, &a, &id).await?) })
            },
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment store failed: promoting deployment `v2` of agent `processor`: the \
             registry refused to make deployment `v2` a second production of agent `processor`"
        );
        let backend = err.source().and_then(|e| e.downcast_ref::<BackendError>());
        let conflict = backend
            .and_then(|e| e.source())
            .and_then(|e| e.downcast_ref::<PostgresError>());
        assert!(
            matches!(conflict, Some(PostgresError::ProductionConflict { agent: a, deployment, .. })
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
        let server = match std::env::var("CAXTON_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => panic!("CAXTON_TEST_POSTGRES_URL is not set"),
            _ => return eprintln!("note: skipped: CAXTON_TEST_POSTGRES_URL is not set"),
        };
        let db = ScratchDatabase::create(&server).unwrap();
        let clock = caxton_core::ManualClock::new(Timestamp::from_millis(1_000));
        let store = PostgresStore::builder(db.url())
            .clock(std::sync::Arc::new(clock.clone()))
            .connect()
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
