//! Hosts that share one registry follow each other: after another host changed an agent,
//! [`Host::sync_agent`] brings this host's router and runtime in line with what the
//! registry now says.
//!
//! A host follows what its registry and the rollout journal record: productions,
//! lifecycle states and, for a canary another host drives, the candidate's share of
//! traffic (the journal's last `stage` or `split` entry), which the follower mirrors in
//! its own router. Other strategies' traffic (blue-green previews, rainbow session
//! moves, shadow copies) is not mirrored: followers route to production until that
//! rollout promotes or rolls back.

use std::sync::Arc;

use caxton_core::{AgentId, Deployment, DeploymentId, JournalRecord, LifecycleState, Weight};

use crate::error::HostError;
use crate::host::{AgentState, Host};
use crate::spec::StoredSpec;

/// What [`Host::sync_agent`] changed on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncOutcome {
    /// The agent's production as the registry records it, if it has one.
    pub production: Option<DeploymentId>,
    /// Whether this host's router was switched to that production (it routed another
    /// deployment, or did not know the agent).
    pub switched: bool,
    /// Deployments this host stopped routing to and unloads: the registry took them out
    /// of service (rolled back, retired, failed) or deleted them.
    pub retired: Vec<DeploymentId>,
    /// A rollout of the agent runs on this host: nothing was done, the rollout decides.
    pub skipped: bool,
    /// The canary another host drives, mirrored here: the candidate and its share of new
    /// traffic, in percent.
    pub canary: Option<(DeploymentId, Weight)>,
}

impl Host {
    /// Reconciles this host with the registry for `agent`, after a change another host on
    /// the same registry made: the agent's production is loaded from its artifacts
    /// (through the compiled-module cache) unless it is loaded already, warmed up,
    /// registered with the router and promoted there in one router swap; the agent's
    /// session mode is the production's; and every version this host has loaded that the
    /// registry took out of service or deleted is taken out of the router and unloaded
    /// once its messages in flight finish.
    ///
    /// Does nothing for an agent whose rollout this host drives: its rollout keeps the
    /// router in line. Splits of a rollout another host drives are not mirrored (the
    /// registry does not record them): this host routes to production until that rollout
    /// promotes or rolls back.
    pub async fn sync_agent(&self, agent: &AgentId) -> Result<SyncOutcome, HostError> {
        if let Some(slot) = self.inner.rollouts.get(agent).map(|slot| Arc::clone(&slot)) {
            // Commands other hosts relayed to this rollout arrive with the change feed.
            self.inner.deliver_relayed(agent, &slot).await;
            return Ok(SyncOutcome {
                skipped: true,
                ..SyncOutcome::default()
            });
        }
        let inner = &self.inner;
        let mut outcome = SyncOutcome::default();
        let production = inner.store.production(agent).await?;
        if let Some(production) = &production {
            let sessions = StoredSpec::of(production, &*inner.artifacts)
                .await?
                .sessions;
            inner
                .agents
                .entry(agent.clone())
                .and_modify(|state| state.sessions = sessions)
                .or_insert_with(|| AgentState::new(agent, sessions));
            let routed = inner
                .router
                .agent_route(agent)
                .ok()
                .and_then(|route| route.production().cloned());
            if routed.as_ref() != Some(&production.id) {
                inner.load_deployment(production).await?;
                inner.ensure_registered(agent, &production.id)?;
                // This host's own rollout may have started meanwhile: it decides then.
                if self.running_rollout(agent).is_some() {
                    outcome.skipped = true;
                    return Ok(outcome);
                }
                inner.router.promote(agent, &production.id)?;
                if let Some(routed) = routed {
                    inner.previous.insert(agent.clone(), routed);
                }
                outcome.switched = true;
                tracing::info!(
                    agent_id = %agent,
                    deployment_id = %production.id,
                    "following the registry: routed the agent's production"
                );
            } else {
                inner.apply_session_mode(agent)?;
            }
            outcome.production = Some(production.id.clone());
        }
        if let Some(production) = &production {
            outcome.canary = self.mirror_canary(agent, production).await?;
        }
        let loaded: Vec<DeploymentId> = inner
            .loaded
            .iter()
            .filter(|entry| entry.value() == agent)
            .map(|entry| entry.key().clone())
            .filter(|id| Some(id) != outcome.production.as_ref())
            // Taken out of the router already, being unloaded.
            .filter(|id| inner.router.phase(id).is_some())
            .collect();
        for id in loaded {
            let out_of_service = match inner.store.get(agent, &id).await {
                Ok(record) => {
                    record.is_deleted()
                        || (!record.is_production
                            && (record.state.is_terminal()
                                || record.state == LifecycleState::Draining))
                }
                Err(caxton_core::store::GetError::NotFound { .. }) => true,
                Err(error) => return Err(error.into()),
            };
            if out_of_service && self.running_rollout(agent).is_none() {
                inner.retire_out_of_band(id.clone());
                outcome.retired.push(id);
            }
        }
        if !outcome.retired.is_empty() {
            tracing::info!(
                agent_id = %agent,
                retired = ?outcome.retired,
                "following the registry: stopped routing to versions out of service"
            );
        }
        Ok(outcome)
    }

    /// Mirrors the split of a canary of `agent` that another host drives, as the journal
    /// records it; clears a mirrored split once no such canary runs.
    async fn mirror_canary(
        &self,
        agent: &AgentId,
        production: &Deployment,
    ) -> Result<Option<(DeploymentId, Weight)>, HostError> {
        let inner = &self.inner;
        let open = inner.journal.open_rollouts().await?;
        let wanted = open
            .iter()
            .find(|entries| entries.first().is_some_and(|e| &e.agent == agent))
            .and_then(|entries| canary_share(entries));
        let split_routed = inner
            .router
            .agent_route(agent)
            .ok()
            .is_some_and(|route| route.split().is_some());
        let Some((candidate, share)) = wanted else {
            if split_routed && self.running_rollout(agent).is_none() {
                inner.router.promote(agent, &production.id)?;
            }
            return Ok(None);
        };
        let record = inner.store.get(agent, &candidate).await?;
        if record.state != LifecycleState::Running || record.is_production || record.is_deleted() {
            return Ok(None);
        }
        inner.load_deployment(&record).await?;
        inner.ensure_registered(agent, &candidate)?;
        // This host's own rollout may have started meanwhile: it decides then.
        if self.running_rollout(agent).is_some() {
            return Ok(None);
        }
        let Ok(weight) = Weight::from_percent(share) else {
            return Ok(None);
        };
        inner.timed("set_split", agent, || {
            inner.router.set_canary(agent, &candidate, weight)
        })?;
        tracing::debug!(agent_id = %agent, deployment_id = %candidate, share,
            "following the registry: mirrored the canary another host drives");
        Ok(Some((candidate, weight)))
    }

    /// Reconciles every agent of the registry, as [`sync_agent`](Host::sync_agent) does
    /// one: after a follower missed changes (its feed reconnected). Goes on past an
    /// agent that fails and returns the outcomes of the others with the failures.
    pub async fn sync_all(
        &self,
    ) -> Result<Vec<(AgentId, Result<SyncOutcome, HostError>)>, HostError> {
        let mut agents = self.inner.store.agents().await?;
        for entry in self.inner.agents.iter() {
            if !agents.contains(entry.key()) {
                agents.push(entry.key().clone());
            }
        }
        let mut outcomes = Vec::with_capacity(agents.len());
        for agent in agents {
            let outcome = self.sync_agent(&agent).await;
            outcomes.push((agent, outcome));
        }
        Ok(outcomes)
    }
}

/// The candidate of an open canary and its share of new traffic, from the rollout's
/// journal: its last `stage` or `split` entry. `None` for other strategies and for a
/// share of 0 % or 100 % (nothing to split).
fn canary_share(entries: &[caxton_core::JournalEntry]) -> Option<(DeploymentId, f64)> {
    let first = entries.first()?;
    match &first.record {
        JournalRecord::Started { strategy, .. } if strategy == "canary" => {}
        _ => return None,
    }
    let share = entries.iter().rev().find_map(|entry| match &entry.record {
        JournalRecord::Stage {
            percentage: Some(share),
            ..
        }
        | JournalRecord::Split { percentage: share } => Some(*share),
        _ => None,
    })?;
    (share > 0.0 && share < 100.0).then(|| (first.deployment.clone(), share))
}
