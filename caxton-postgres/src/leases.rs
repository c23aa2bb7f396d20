//! [`RolloutLeases`] on the `rollout_leases` table.
//!
//! Each operation is one statement, so the database decides every race: two hosts that
//! take an expired lease at once both run `INSERT … ON CONFLICT DO UPDATE … WHERE`, the
//! row lock orders them, and the second finds the lease live and held by the first.
//! Expiry is read on the database's clock (`clock_timestamp()`), never a host's.

use std::time::Duration;

use async_trait::async_trait;
use caxton_core::lease::{Acquired, Lease, LeaseError, LeaseHolder, RolloutLeases, check_ttl};
use caxton_core::{AgentId, DeploymentId};
use tokio_postgres::Row;

use crate::deployments::column;
use crate::{PostgresError, PostgresStore};

/// The columns [`decode`] reads: the lease and the milliseconds it has left.
macro_rules! lease_columns {
    () => {
        "agent_id, deployment_id, holder, \
         GREATEST(0, CEIL(EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000))::bigint"
    };
}

/// An agent's lease, expired or not.
const LEASE_OF_AGENT: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM rollout_leases WHERE agent_id = $1"
);

fn decode(row: &Row) -> Result<Lease, PostgresError> {
    let agent: String = column(row, 0, &|| "a rollout lease".into(), "agent_id")?;
    let record = || format!("rollout lease of agent `{agent}`");
    let bad = |column: &'static str, reason: String| PostgresError::BadRow {
        record: record(),
        column,
        reason,
    };
    let deployment: String = column(row, 1, &record, "deployment_id")?;
    let holder: String = column(row, 2, &record, "holder")?;
    let remaining: i64 = column(row, 3, &record, "expires_at")?;
    Ok(Lease::new(
        AgentId::new(&agent).map_err(|e| bad("agent_id", e.to_string()))?,
        DeploymentId::new(&deployment).map_err(|e| bad("deployment_id", e.to_string()))?,
        LeaseHolder::new(holder).map_err(|e| bad("holder", e.to_string()))?,
        Duration::from_millis(u64::try_from(remaining).unwrap_or(0)),
    ))
}

fn millis(ttl: Duration) -> i64 {
    // `check_ttl` bounds it to a day.
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl RolloutLeases for PostgresStore {
    async fn acquire(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        const TAKE: &str = concat!(
            "INSERT INTO rollout_leases AS l (agent_id, deployment_id, holder, expires_at) \
             VALUES ($1, $2, $3, clock_timestamp() + $4::bigint * interval '1 millisecond') \
             ON CONFLICT (agent_id) DO UPDATE SET deployment_id = EXCLUDED.deployment_id, \
             holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() \
             RETURNING ",
            lease_columns!()
        );
        let ttl = millis(check_ttl(ttl)?);
        let (a, d, h) = (
            agent.to_string(),
            deployment.to_string(),
            holder.to_string(),
        );
        self.db
            .unscoped(
                || format!("taking the rollout lease of agent `{agent}` for `{holder}`"),
                move |client, _| {
                    Box::pin(async move {
                        if let Some(row) = client.query_opt(TAKE, &[&a, &d, &h, &ttl]).await? {
                            return Ok(Acquired::Taken(decode(&row)?));
                        }
                        // The conflicting row is locked by this statement's attempt: it
                        // is the live lease of another holder.
                        let row = client.query_one(LEASE_OF_AGENT, &[&a]).await?;
                        Ok(Acquired::HeldBy(decode(&row)?))
                    })
                },
            )
            .await
    }

    async fn renew(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        const RENEW: &str = concat!(
            "UPDATE rollout_leases \
             SET expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond' \
             WHERE agent_id = $1 AND deployment_id = $2 AND holder = $3 RETURNING ",
            lease_columns!()
        );
        let ttl = millis(check_ttl(ttl)?);
        let (a, d, h) = (
            agent.to_string(),
            deployment.to_string(),
            holder.to_string(),
        );
        self.db
            .unscoped(
                || format!("renewing the rollout lease of agent `{agent}` for `{holder}`"),
                move |client, _| {
                    Box::pin(async move {
                        // A renewal lost in a crash only shortens the lease; waiting for the
                        // disk (a busy one takes a second or more) could let it expire.
                        client
                            .batch_execute("SET LOCAL synchronous_commit = off")
                            .await?;
                        let row = client.query_opt(RENEW, &[&a, &d, &h, &ttl]).await?;
                        Ok(row.map(|row| decode(&row)).transpose()?)
                    })
                },
            )
            .await
    }

    async fn release(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<(), LeaseError> {
        let (a, d, h) = (
            agent.to_string(),
            deployment.to_string(),
            holder.to_string(),
        );
        self.db
            .unscoped(
                || format!("releasing the rollout lease of agent `{agent}` for `{holder}`"),
                move |client, _| {
                    Box::pin(async move {
                        client
                            .execute(
                                "DELETE FROM rollout_leases \
                                 WHERE agent_id = $1 AND deployment_id = $2 AND holder = $3",
                                &[&a, &d, &h],
                            )
                            .await?;
                        Ok(())
                    })
                },
            )
            .await
    }

    /// Stored in a write transaction of the agent, so the change feed tells the holder.
    async fn relay(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: &str,
    ) -> Result<(), LeaseError> {
        let (a, d, c) = (
            agent.to_string(),
            deployment.to_string(),
            command.to_owned(),
        );
        self.db
            .write(
                agent,
                || {
                    format!(
                        "relaying a command to the rollout of `{deployment}` of agent `{agent}`"
                    )
                },
                move |client, _| {
                    Box::pin(async move {
                        client
                            .execute(
                                "INSERT INTO rollout_commands (agent_id, deployment_id, command) \
                                 VALUES ($1, $2, $3)",
                                &[&a, &d, &c],
                            )
                            .await?;
                        Ok(())
                    })
                },
            )
            .await
    }

    async fn take_relayed(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<Vec<String>, LeaseError> {
        const TAKE: &str = "DELETE FROM rollout_commands \
             WHERE agent_id = $1 AND deployment_id = $2 AND EXISTS (SELECT 1 FROM rollout_leases l \
             WHERE l.agent_id = $1 AND l.deployment_id = $2 AND l.holder = $3) \
             RETURNING seq, command";
        let (a, d, h) = (
            agent.to_string(),
            deployment.to_string(),
            holder.to_string(),
        );
        self.db
            .unscoped(
                || format!("taking the commands relayed to the rollout of agent `{agent}`"),
                move |client, _| {
                    Box::pin(async move {
                        let mut taken: Vec<(i64, String)> = client
                            .query(TAKE, &[&a, &d, &h])
                            .await?
                            .iter()
                            .map(|row| (row.get(0), row.get(1)))
                            .collect();
                        taken.sort_by_key(|(seq, _)| *seq);
                        Ok(taken.into_iter().map(|(_, command)| command).collect())
                    })
                },
            )
            .await
    }

    async fn lease(&self, agent: &AgentId) -> Result<Option<Lease>, LeaseError> {
        let a = agent.to_string();
        self.db
            .read(
                || format!("reading the rollout lease of agent `{agent}`"),
                move |client| {
                    Box::pin(async move {
                        let row = client.query_opt(LEASE_OF_AGENT, &[&a]).await?;
                        Ok(row.map(|row| decode(&row)).transpose()?)
                    })
                },
            )
            .await
    }
}
