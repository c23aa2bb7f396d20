//! A host that restarts where it stopped: routes, loaded versions and rollouts rebuilt from
//! the registry, the artifact store and the rollout journal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use caxton_core::{
    AgentId, Deployment, DeploymentId, JournalEntry, JournalRecord, LifecycleEvent, LifecycleState,
    Timestamp,
};
use caxton_strategies::{Commands, StrategyConfig};
use serde::Serialize;

use crate::error::HostError;
use crate::host::{AgentState, Host};
use crate::joints::HostChecks;
use crate::rollout::{RolloutHandle, RolloutSlot};
use crate::spec::StoredSpec;

/// What [`Host::recover`] rebuilt.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Agents with a deployment in the registry.
    pub agents: usize,
    /// Deployments loaded into the runtime, warmed up and routed.
    pub loaded: Vec<DeploymentId>,
    /// Rollouts resumed, running again.
    pub resumed: Vec<RolloutHandle>,
    /// Rollouts that could not go on, and what was done about each.
    pub settled: Vec<Settled>,
    /// Open rollouts another host on the registry drives (it holds their leases): left
    /// to it. Their candidates.
    pub elsewhere: Vec<DeploymentId>,
}

/// What [`Host::adopt_rollouts`] took over.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Adopted {
    /// Rollouts this host drives now, resumed from the journal at the stage they were in.
    pub resumed: Vec<RolloutHandle>,
    /// Rollouts that had ended in the registry and were closed in the journal.
    pub settled: Vec<Settled>,
}

/// An interrupted rollout that was closed rather than resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// The agent.
    pub agent: AgentId,
    /// The rollout's candidate.
    pub deployment: DeploymentId,
    /// `promoted`, `rolled_back` or `aborted`.
    pub outcome: String,
    /// Why.
    pub reason: String,
}

impl Host {
    /// Rebuilds the host from its registry, artifact store and journal, for a host that
    /// restarts over durable ones. For every agent: its session mode and its production,
    /// loaded from its artifacts (through the compiled-module cache), warmed up and routed;
    /// versions kept live beside it (a previous production, staged versions) likewise.
    /// Then every rollout the journal shows open is reconciled with the registry:
    ///
    /// - a candidate the registry already made production is recorded as promoted;
    /// - one it took out of service is recorded as rolled back;
    /// - one that had not finished validation or warm-up is marked failed, with an audit
    ///   entry saying the host restarted, and production keeps serving;
    /// - a running candidate resumes at the stage it was in, its hold running to the
    ///   absolute deadline the journal recorded (a hold that ended while the host was down
    ///   ends at once); validation is not repeated.
    ///
    /// Call it once, on a host that has served nothing yet.
    pub async fn recover(&self) -> Result<Recovery, HostError> {
        let inner = &self.inner;
        let open = inner.journal.open_rollouts().await?;
        let candidates: Vec<DeploymentId> = open
            .iter()
            .filter_map(|entries| entries.first().map(|e| e.deployment.clone()))
            .collect();
        let agents = inner.store.agents().await?;
        let mut recovery = Recovery {
            agents: agents.len(),
            ..Recovery::default()
        };
        for agent in &agents {
            let production = inner.store.production(agent).await?;
            let mode = match &production {
                Some(production) => {
                    StoredSpec::of(production, &*inner.artifacts)
                        .await?
                        .sessions
                }
                None => Default::default(),
            };
            inner
                .agents
                .insert(agent.clone(), AgentState::new(agent, mode));
            if let Some(production) = &production {
                inner.load_deployment(production).await?;
                inner.ensure_registered(agent, &production.id)?;
                inner.router.promote(agent, &production.id)?;
                recovery.loaded.push(production.id.clone());
            }
            for deployment in inner.all_deployments(agent, false).await? {
                let idle_live = deployment.state == LifecycleState::Running
                    && !deployment.is_production
                    && !candidates.contains(&deployment.id);
                if idle_live {
                    inner.load_deployment(&deployment).await?;
                    inner.ensure_registered(agent, &deployment.id)?;
                    recovery.loaded.push(deployment.id.clone());
                }
            }
        }
        for entries in open {
            let Some(first) = entries.first() else {
                continue;
            };
            let (agent, deployment) = (first.agent.clone(), first.deployment.clone());
            // Another host on the registry may drive it (or have taken it over).
            match inner.take_lease(&agent, &deployment).await {
                Ok(()) => {}
                Err(HostError::RolloutElsewhere { holder, .. }) => {
                    tracing::info!(agent_id = %agent, deployment_id = %deployment, %holder,
                        "an open rollout is driven by another host; left to it");
                    recovery.elsewhere.push(deployment);
                    continue;
                }
                Err(error) => return Err(error),
            }
            match self.reconcile_leased(entries, &agent, &deployment).await? {
                Some(Reconciled::Resumed(handle)) => recovery.resumed.push(handle),
                Some(Reconciled::Settled(settled)) => recovery.settled.push(settled),
                None => {}
            }
        }
        tracing::info!(
            agents = recovery.agents,
            loaded = recovery.loaded.len(),
            resumed = recovery.resumed.len(),
            settled = recovery.settled.len(),
            "host recovered"
        );
        Ok(recovery)
    }

    /// Takes over the rollouts whose host stopped driving them: every rollout the journal
    /// shows open, that no rollout of this host drives and whose lease has expired (its
    /// host died or lost the registry for longer than the lease's time-to-live), is
    /// leased to this host and reconciled as [`recover`](Host::recover) does: resumed at
    /// the stage the journal recorded, its hold running to the absolute deadline recorded
    /// there, or closed when the registry shows it over. The agent's production is
    /// brought in line with the registry first ([`sync_agent`](Host::sync_agent)).
    ///
    /// Hosts sharing a registry call it now and then (`caxton serve` does, four times per
    /// time-to-live); when several try at once, the lease picks one.
    pub async fn adopt_rollouts(&self) -> Result<Adopted, HostError> {
        let inner = &self.inner;
        let mut adopted = Adopted::default();
        for entries in inner.journal.open_rollouts().await? {
            let Some(first) = entries.first() else {
                continue;
            };
            let (agent, deployment) = (first.agent.clone(), first.deployment.clone());
            if inner.rollouts.contains_key(&agent) {
                continue;
            }
            // A read first: a live lease is the common case, and taking one is a write.
            if inner.lease_elsewhere(&agent).await?.is_some() {
                continue;
            }
            match inner.take_lease(&agent, &deployment).await {
                Ok(()) => {}
                Err(HostError::RolloutElsewhere { .. }) => continue,
                Err(error) => return Err(error),
            }
            tracing::warn!(agent_id = %agent, deployment_id = %deployment, holder = %inner.holder,
                "taking over a rollout whose host stopped driving it");
            if let Err(error) = self.sync_agent(&agent).await {
                inner.release_lease(&agent, &deployment).await;
                return Err(error);
            }
            match self.reconcile_leased(entries, &agent, &deployment).await? {
                Some(Reconciled::Resumed(handle)) => adopted.resumed.push(handle),
                Some(Reconciled::Settled(settled)) => adopted.settled.push(settled),
                None => {}
            }
        }
        Ok(adopted)
    }

    /// Reconciles an open rollout whose lease this host has just taken; the lease is
    /// kept only by a rollout that resumes.
    async fn reconcile_leased(
        &self,
        entries: Vec<JournalEntry>,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<Option<Reconciled>, HostError> {
        let reconciled = self.reconcile(entries).await;
        if !matches!(reconciled, Ok(Some(Reconciled::Resumed(_)))) {
            self.inner.release_lease(agent, deployment).await;
        }
        reconciled
    }

    async fn reconcile(&self, entries: Vec<JournalEntry>) -> Result<Option<Reconciled>, HostError> {
        let inner = &self.inner;
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let (agent, id) = (first.agent.clone(), first.deployment.clone());
        let started_at = first.at;
        let spec = match &first.record {
            JournalRecord::Started { spec, .. } => spec.clone(),
            _ => serde_json::Value::Null,
        };
        let candidate = match inner.store.get(&agent, &id).await {
            Ok(candidate) => candidate,
            Err(_) => {
                return self
                    .settle(
                        &agent,
                        &id,
                        "aborted",
                        "the candidate is not in the registry",
                    )
                    .await
                    .map(Some);
            }
        };
        if candidate.is_production {
            return self
                .settle(&agent, &id, "promoted", "the registry shows it promoted")
                .await
                .map(Some);
        }
        match candidate.state {
            LifecycleState::Running => {}
            state if state.is_terminal() || state == LifecycleState::Draining => {
                return self
                    .settle(
                        &agent,
                        &id,
                        "rolled_back",
                        &format!("the registry shows it {state}"),
                    )
                    .await
                    .map(Some);
            }
            state => {
                let reason = format!(
                    "the host restarted while the candidate was {state}; production keeps serving"
                );
                self.fail_unready(&candidate, &reason).await?;
                return self.settle(&agent, &id, "aborted", &reason).await.map(Some);
            }
        }
        let Ok(config) = serde_json::from_value::<StrategyConfig>(spec) else {
            let reason = "the journal holds no strategy to resume it with; rolled back";
            inner
                .store
                .transition(&agent, &id, LifecycleEvent::RollBack, reason)
                .await?;
            return self.settle(&agent, &id, "aborted", reason).await.map(Some);
        };
        let (stage, percentage, until) = entries
            .iter()
            .rev()
            .find_map(|e| match &e.record {
                JournalRecord::Stage {
                    stage,
                    percentage,
                    until,
                    ..
                } => Some((stage.clone(), *percentage, *until)),
                _ => None,
            })
            .unwrap_or_default();
        let remaining = until.map_or(Duration::ZERO, |until| {
            until.saturating_since(inner.clock.now())
        });
        let resumed_config = config.resumed_at(&stage, percentage, remaining);
        // The resumed config holds only the steps left; the status still counts them all.
        let steps = crate::host::steps_of(&config);
        let done = steps.saturating_sub(crate::host::steps_of(&resumed_config));
        self.resume_rollout(candidate, resumed_config, started_at, (done, steps))
            .await
            .map(|handle| Some(Reconciled::Resumed(handle)))
    }

    /// Marks a candidate that never got ready as failed, audited with `reason`.
    async fn fail_unready(&self, candidate: &Deployment, reason: &str) -> Result<(), HostError> {
        let store = &self.inner.store;
        let (agent, id) = (&candidate.agent, &candidate.id);
        match candidate.state {
            LifecycleState::Pending => {
                store
                    .transition(agent, id, LifecycleEvent::BeginValidation, reason)
                    .await?;
                store
                    .transition(agent, id, LifecycleEvent::ValidationFailed, reason)
                    .await?;
            }
            LifecycleState::Validating => {
                store
                    .transition(agent, id, LifecycleEvent::ValidationFailed, reason)
                    .await?;
            }
            LifecycleState::Deploying => {
                store
                    .transition(agent, id, LifecycleEvent::WarmUpFailed, reason)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn settle(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        outcome: &str,
        reason: &str,
    ) -> Result<Reconciled, HostError> {
        let entry = JournalEntry {
            seq: 0,
            at: self.inner.clock.now(),
            agent: agent.clone(),
            deployment: deployment.clone(),
            record: JournalRecord::Finished {
                outcome: outcome.to_owned(),
                reason: Some(format!("after a host restart: {reason}")),
            },
        };
        if let Err(error) = self.inner.journal.append(entry).await {
            tracing::warn!(%error, deployment_id = %deployment, "could not close the rollout in the journal");
        }
        tracing::warn!(agent_id = %agent, deployment_id = %deployment, outcome, reason, "interrupted rollout settled");
        Ok(Reconciled::Settled(Settled {
            agent: agent.clone(),
            deployment: deployment.clone(),
            outcome: outcome.to_owned(),
            reason: reason.to_owned(),
        }))
    }

    async fn resume_rollout(
        &self,
        candidate: Deployment,
        config: StrategyConfig,
        started_at: Timestamp,
        (done, steps): (u32, u32),
    ) -> Result<RolloutHandle, HostError> {
        let inner = &self.inner;
        let agent = candidate.agent.clone();
        let spec = StoredSpec::of(&candidate, &*inner.artifacts).await?;
        let module = spec.module(&*inner.artifacts).await?;
        let (sender, commands) = Commands::channel();
        let (slot, finish) = RolloutSlot::new(candidate.id.clone(), config.name(), steps, sender);
        slot.resumed_after(done);
        // The caller holds the rollout's lease.
        slot.leased.store(true, Ordering::Release);
        inner.reserve_rollout(&agent, &slot)?;
        let checks = HostChecks {
            inner: Arc::clone(inner),
            module,
            contract_tests: Vec::new(),
        };
        let handle = RolloutHandle {
            agent: agent.clone(),
            deployment: candidate.id.clone(),
            done: slot.done.clone(),
        };
        let spawned = inner.spawn_rollout(&agent, &slot, finish, checks, None, move |driver| {
            futures::executor::block_on(driver.resume(candidate, &config, started_at, commands))
        });
        if spawned.is_err() {
            inner
                .rollouts
                .remove_if(&agent, |_, held| Arc::ptr_eq(held, &slot));
            return Err(HostError::ShutDown);
        }
        Ok(handle)
    }
}

enum Reconciled {
    Resumed(RolloutHandle),
    Settled(Settled),
}
