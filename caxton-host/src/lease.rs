//! Rollout leases on the host's side: a rollout is driven only by the host that holds its
//! lease; the host renews the leases of the rollouts it drives, and hands a rollout off
//! (stops driving it, changing nothing) when it finds its lease taken by another host.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use caxton_core::lease::{Acquired, Lease, LeaseError};
use caxton_core::{AgentId, BackendError, DeploymentId};
use caxton_strategies::Command;

use crate::error::HostError;
use crate::host::Inner;
use crate::rollout::RolloutSlot;

impl Inner {
    /// Takes the lease of `agent`'s rollout of `deployment` for this host, or says which
    /// host drives the agent's rollout.
    pub(crate) async fn take_lease(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
    ) -> Result<(), HostError> {
        match self
            .leases
            .acquire(agent, deployment, &self.holder, self.lease_ttl)
            .await?
        {
            Acquired::Taken(_) => Ok(()),
            Acquired::HeldBy(lease) => Err(rollout_elsewhere(agent, lease)),
        }
    }

    /// Gives the lease up; a failure is logged (the lease then expires on its own).
    pub(crate) async fn release_lease(&self, agent: &AgentId, deployment: &DeploymentId) {
        if let Err(error) = self.leases.release(agent, deployment, &self.holder).await {
            tracing::warn!(%error, agent_id = %agent, deployment_id = %deployment,
                "cannot release the rollout's lease; it expires on its own");
        }
    }

    /// The live lease of a rollout of `agent` that another host holds, if any.
    pub(crate) async fn lease_elsewhere(
        &self,
        agent: &AgentId,
    ) -> Result<Option<Lease>, HostError> {
        Ok(self
            .leases
            .lease(agent)
            .await?
            .filter(|lease| !lease.is_expired() && lease.holder != self.holder))
    }

    /// Refused with [`HostError::RolloutElsewhere`] while another host holds a live lease
    /// of a rollout of `agent`.
    pub(crate) async fn no_rollout_elsewhere(&self, agent: &AgentId) -> Result<(), HostError> {
        match self.lease_elsewhere(agent).await? {
            Some(lease) => Err(rollout_elsewhere(agent, lease)),
            None => Ok(()),
        }
    }

    /// Leaves `command` for the host that drives `agent`'s rollout of `deployment`.
    pub(crate) async fn relay(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: &Command,
    ) -> Result<(), HostError> {
        let json = serde_json::to_string(command).map_err(|error| {
            LeaseError::Backend(BackendError::new("encoding a relayed command", error))
        })?;
        self.leases.relay(agent, deployment, &json).await?;
        tracing::info!(agent_id = %agent, deployment_id = %deployment, %command,
            "relayed a command to the host that drives the rollout");
        Ok(())
    }

    /// Hands the commands other hosts relayed for the rollout in `slot` to its driver.
    pub(crate) async fn deliver_relayed(&self, agent: &AgentId, slot: &RolloutSlot) {
        let relayed = match self
            .leases
            .take_relayed(agent, &slot.deployment, &self.holder)
            .await
        {
            Ok(relayed) => relayed,
            Err(error) => {
                tracing::warn!(%error, agent_id = %agent, "cannot read relayed commands; retrying");
                return;
            }
        };
        for json in relayed {
            match serde_json::from_str::<Command>(&json) {
                Ok(command) => {
                    tracing::info!(agent_id = %agent, deployment_id = %slot.deployment,
                        %command, "a command relayed by another host");
                    let _ = slot.commands.send(command);
                }
                Err(error) => tracing::warn!(%error, agent_id = %agent, command = %json,
                    "ignored a relayed command this host cannot read"),
            }
        }
    }

    /// Renews the lease of every rollout this host drives; hands off those whose lease
    /// another host has taken.
    fn renew_leases(&self) {
        let slots: Vec<(AgentId, Arc<RolloutSlot>)> = self
            .rollouts
            .iter()
            .filter(|entry| entry.value().leased.load(Ordering::Acquire))
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect();
        for (agent, slot) in slots {
            let started = std::time::Instant::now();
            let renewed = futures::executor::block_on(self.leases.renew(
                &agent,
                &slot.deployment,
                &self.holder,
                self.lease_ttl,
            ));
            let took = started.elapsed();
            if took > self.lease_ttl / 3 {
                tracing::warn!(agent_id = %agent, took_ms = took.as_millis() as u64,
                    "renewing a rollout's lease took more than a third of its time-to-live");
            }
            match renewed {
                // Commands relayed while the change feed was away are picked up here.
                Ok(Some(_)) => futures::executor::block_on(self.deliver_relayed(&agent, &slot)),
                // The rollout ended and released its lease meanwhile.
                Ok(None) if !slot.leased.load(Ordering::Acquire) => {}
                Ok(None) => {
                    tracing::error!(
                        agent_id = %agent,
                        deployment_id = %slot.deployment,
                        holder = %self.holder,
                        "this host lost the rollout's lease (it could not renew it in time); \
                         another host drives the rollout now, so this one stops driving it"
                    );
                    slot.leased.store(false, Ordering::Release);
                    slot.commands.hand_off();
                }
                Err(error) => tracing::warn!(
                    %error,
                    agent_id = %agent,
                    deployment_id = %slot.deployment,
                    "cannot renew the rollout's lease; retrying"
                ),
            }
        }
    }
}

/// The refusal for an operation on `agent` while another host drives its rollout under
/// `lease`.
pub(crate) fn rollout_elsewhere(agent: &AgentId, lease: Lease) -> HostError {
    HostError::RolloutElsewhere {
        agent: agent.clone(),
        deployment: lease.deployment,
        holder: lease.holder,
    }
}

/// Renews the leases of this host's rollouts every third of their time-to-live, until
/// the host is dropped.
pub(crate) fn start_lease_keeper(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(inner) => inner.lease_ttl / 3,
        None => return,
    };
    let spawned = std::thread::Builder::new()
        .name("caxton-leases".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every.max(Duration::from_millis(10)));
                let Some(inner) = inner.upgrade() else { return };
                if !inner.rollouts.is_empty() {
                    inner.renew_leases();
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "the lease keeper could not start; rollouts are handed off when their leases expire");
    }
}
