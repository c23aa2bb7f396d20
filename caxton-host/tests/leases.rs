//! Hosts sharing one registry: exactly one drives a rollout (it holds the rollout's
//! lease); when it cannot renew the lease, another host takes the rollout over from the
//! journal at the stage it was in, and the first hands it off without changing anything.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use caxton_core::lease::{Acquired, Lease, LeaseError, LeaseHolder, MemoryLeases, RolloutLeases};
use caxton_core::{
    AgentId, BackendError, DeploymentId, DeploymentStore, JournalRecord, LifecycleState,
    MemoryArtifactStore, MemoryJournal, MemoryStore, RolloutJournal, Timestamp,
};
use caxton_host::{DeployRequest, Host, HostError, PromoteMode};
use caxton_strategies::{Outcome, ReasonKind};
use common::*;

const TTL: Duration = Duration::from_millis(300);

/// The leases of one host, which can lose the registry: the caller under test is the
/// host, which must hand its rollout off once its lease is gone.
struct Partitioned {
    leases: MemoryLeases,
    cut_off: AtomicBool,
}

impl Partitioned {
    fn check(&self) -> Result<(), LeaseError> {
        if self.cut_off.load(Ordering::SeqCst) {
            return Err(BackendError::message("the registry is unreachable").into());
        }
        Ok(())
    }
}

#[async_trait]
impl RolloutLeases for Partitioned {
    async fn acquire(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        self.check()?;
        self.leases.acquire(agent, deployment, holder, ttl).await
    }

    async fn renew(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        self.check()?;
        self.leases.renew(agent, deployment, holder, ttl).await
    }

    async fn release(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<(), LeaseError> {
        self.check()?;
        self.leases.release(agent, deployment, holder).await
    }

    async fn lease(&self, agent: &AgentId) -> Result<Option<Lease>, LeaseError> {
        self.check()?;
        self.leases.lease(agent).await
    }

    async fn relay(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        command: &str,
    ) -> Result<(), LeaseError> {
        self.check()?;
        self.leases.relay(agent, deployment, command).await
    }

    async fn take_relayed(
        &self,
        agent: &AgentId,
        deployment: &DeploymentId,
        holder: &LeaseHolder,
    ) -> Result<Vec<String>, LeaseError> {
        self.check()?;
        self.leases.take_relayed(agent, deployment, holder).await
    }
}

struct Fleet {
    store: Arc<MemoryStore>,
    artifacts: Arc<MemoryArtifactStore>,
    journal: Arc<MemoryJournal>,
    leases: MemoryLeases,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            store: Arc::new(MemoryStore::new()),
            artifacts: Arc::new(MemoryArtifactStore::new()),
            journal: Arc::new(MemoryJournal::new()),
            leases: MemoryLeases::new(),
        }
    }

    fn host(&self, name: &str, leases: Arc<dyn RolloutLeases>) -> Host {
        Host::builder()
            .store(self.store.clone())
            .artifacts(self.artifacts.clone())
            .journal(self.journal.clone())
            .leases(leases)
            .lease_holder(LeaseHolder::new(name).unwrap())
            .lease_ttl(TTL)
            .build()
            .unwrap()
    }
}

/// The `until` of the rollout's last `stage` entry.
fn last_hold(fleet: &Fleet, agent: &AgentId, candidate: &DeploymentId) -> (u32, Timestamp) {
    let entries = block_on(fleet.journal.entries(agent, candidate)).unwrap();
    entries
        .iter()
        .rev()
        .find_map(|e| match &e.record {
            JournalRecord::Stage { step, until, .. } => Some((*step, until.unwrap())),
            _ => None,
        })
        .expect("a stage entry")
}

/// Deploys v1 of `agent` through `host`, then starts a canary of v2 and waits until it
/// sends v2 10 %.
fn start_canary(host: &Host, agent: &AgentId) -> caxton_host::Deployed {
    deploy_and_wait(
        host,
        DeployRequest::builder(agent.clone(), echo("v1:"))
            .label("v1")
            .build(),
    );
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(canary())
                .build(),
        ),
    )
    .unwrap();
    wait_until("the canary is at 10%", || {
        block_on(host.status(agent))
            .unwrap()
            .rollout
            .is_some_and(|r| r.step == 1 && r.weight_set == 10.0)
    });
    v2
}

fn canary() -> caxton_strategies::RolloutSpec {
    spec(
        r#"{"deployment": {"strategy": "canary", "judge": "off", "stages": [
            {"canary": {"weight": "10%", "hold": "1h"}},
            {"canary": {"weight": "50%", "hold": "1h"}},
            {"full": "100%"}]}}"#,
    )
}

#[test]
fn a_rollout_is_taken_over_at_its_stage_when_its_host_loses_the_lease_and_is_handed_off() {
    let fleet = Fleet::new();
    let partitioned = Arc::new(Partitioned {
        leases: fleet.leases.clone(),
        cut_off: AtomicBool::new(false),
    });
    let a = fleet.host("host-a", partitioned.clone());
    let b = fleet.host("host-b", Arc::new(fleet.leases.clone()));
    let processor = agent("processor");
    let v2 = start_canary(&a, &processor);
    let candidate = v2.deployment.id.clone();
    let v1 = block_on(a.status(&processor)).unwrap().production.unwrap();
    // Commands sent through b are relayed to a, which drives the rollout: a takes them at
    // its next lease renewal even when no change notice tells it (no follower runs here).
    block_on(b.pause(&processor, &candidate)).unwrap();
    wait_until("a paused the canary at b's word", || {
        block_on(a.status(&processor))
            .unwrap()
            .rollout
            .is_some_and(|r| r.phase == caxton_host::RolloutPhase::Paused)
    });
    block_on(b.resume(&processor, &candidate)).unwrap();
    block_on(b.promote(&processor, &candidate, PromoteMode::Step)).unwrap();
    block_on(a.sync_agent(&processor)).unwrap();
    wait_until("the canary is at 50%", || {
        block_on(a.status(&processor))
            .unwrap()
            .rollout
            .is_some_and(|r| r.step == 2 && r.weight_set == 50.0)
    });
    let (step, hold) = last_hold(&fleet, &processor, &candidate);
    assert_eq!(step, 2);

    // While a holds the lease, b says so, neither adopts the rollout nor changes the agent.
    let shown = block_on(b.status(&processor)).unwrap();
    assert_eq!(shown.driven_by.as_ref().map(|h| h.as_str()), Some("host-a"));
    assert!(shown.rollout.is_none());
    assert_eq!(block_on(a.status(&processor)).unwrap().driven_by, None);
    std::thread::sleep(TTL * 2);
    assert!(block_on(b.adopt_rollouts()).unwrap().resumed.is_empty());
    for refused in [
        block_on(b.rollback(&processor, &v1, None)).map(|_| ()),
        block_on(
            b.deploy(
                DeployRequest::builder(processor.clone(), echo("v3:"))
                    .label("v3")
                    .build(),
            ),
        )
        .map(|_| ()),
    ] {
        match refused {
            Err(HostError::RolloutElsewhere {
                holder, deployment, ..
            }) => {
                assert_eq!((holder.as_str(), &deployment), ("host-a", &candidate));
            }
            other => panic!("expected rollout_elsewhere, got {other:?}"),
        }
    }

    // Host a loses the registry; once its lease has expired, b takes the rollout over at
    // step 2 of 3, holding until the same absolute deadline.
    partitioned.cut_off.store(true, Ordering::SeqCst);
    std::thread::sleep(TTL + Duration::from_millis(150));
    let adopted = block_on(b.adopt_rollouts()).unwrap();
    assert_eq!(adopted.resumed.len(), 1, "{adopted:?}");
    assert_eq!(adopted.resumed[0].deployment(), &candidate);
    wait_until("b drives the canary at 50%", || {
        block_on(b.status(&processor))
            .unwrap()
            .rollout
            .is_some_and(|r| r.step == 2 && r.steps == 3 && r.weight_set == 50.0)
    });
    let (step, resumed_hold) = last_hold(&fleet, &processor, &candidate);
    assert_eq!(step, 2);
    let drift = resumed_hold
        .saturating_since(hold)
        .max(hold.saturating_since(resumed_hold));
    assert!(
        drift < Duration::from_secs(1),
        "the hold moved by {drift:?}"
    );

    // Host a reaches the registry again, finds its lease gone and hands off: it stops
    // driving, and writes nothing.
    partitioned.cut_off.store(false, Ordering::SeqCst);
    let report = block_on(v2.rollout.wait()).unwrap();
    match &report.outcome {
        Outcome::Aborted { reason } => assert_eq!(reason.kind, ReasonKind::HandedOff),
        other => panic!("a's rollout should be handed off, not {other:?}"),
    }
    assert!(a.running_rollout(&processor).is_none());
    let record = block_on(fleet.store.get(&processor, &candidate)).unwrap();
    assert_eq!(
        record.state,
        LifecycleState::Running,
        "the candidate is left running"
    );
    let open = block_on(fleet.journal.open_rollouts()).unwrap();
    assert_eq!(open.len(), 1, "the rollout stays open in the journal");

    // The rollout goes on where b drives it; a follows the registry.
    block_on(b.promote(&processor, &candidate, PromoteMode::Full)).unwrap();
    let report = block_on(b.running_rollout(&processor).unwrap().wait()).unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    block_on(a.sync_agent(&processor)).unwrap();
    for host in [&a, &b] {
        let reply = host.send(&processor, None, b"order").unwrap();
        assert_eq!(reply.reply.as_slice(), b"v2:order");
    }
    assert!(
        block_on(fleet.leases.lease(&processor)).unwrap().is_none(),
        "released"
    );
}

#[test]
fn a_restarted_host_leaves_a_rollout_another_host_drives_to_it() {
    let fleet = Fleet::new();
    let leases: Arc<dyn RolloutLeases> = Arc::new(fleet.leases.clone());
    let a = fleet.host("host-a", leases.clone());
    let processor = agent("processor");
    let v2 = start_canary(&a, &processor);
    // Another host starting over the same registry recovers routes, not the rollout.
    let b = fleet.host("host-b", leases);
    let recovery = block_on(b.recover()).unwrap();
    assert!(recovery.resumed.is_empty());
    assert_eq!(recovery.elsewhere, vec![v2.deployment.id.clone()]);
    assert!(b.running_rollout(&processor).is_none());
    let reply = b.send(&processor, None, b"order").unwrap();
    assert_eq!(reply.reply.as_slice(), b"v1:order");
    block_on(a.abort(&processor, &v2.deployment.id, "test over")).unwrap();
    block_on(v2.rollout.wait()).unwrap();
}

fn share_of(host: &Host, agent: &AgentId, tag: &[u8], messages: u32) -> f64 {
    let mut hits = 0;
    for i in 0..messages {
        let reply = host
            .send(agent, None, format!("order-{i}").as_bytes())
            .unwrap();
        if reply.reply.starts_with(tag) {
            hits += 1;
        }
    }
    f64::from(hits) / f64::from(messages)
}

#[test]
fn a_follower_mirrors_the_canary_another_host_drives_and_drops_it_when_it_rolls_back() {
    let fleet = Fleet::new();
    let leases: Arc<dyn RolloutLeases> = Arc::new(fleet.leases.clone());
    let a = fleet.host("host-a", leases.clone());
    let b = fleet.host("host-b", leases);
    let processor = agent("processor");
    let v2 = start_canary(&a, &processor);
    let candidate = v2.deployment.id.clone();
    let synced = block_on(b.sync_agent(&processor)).unwrap();
    assert_eq!(
        synced.canary,
        Some((
            candidate.clone(),
            caxton_core::Weight::from_percent(10.0).unwrap()
        ))
    );
    let share = share_of(&b, &processor, b"v2:", 2_000);
    assert!(
        (0.05..0.15).contains(&share),
        "b sent {share} to the canary"
    );

    block_on(a.promote(&processor, &candidate, PromoteMode::Step)).unwrap();
    wait_until("the canary is at 50%", || {
        block_on(a.status(&processor))
            .unwrap()
            .rollout
            .is_some_and(|r| r.weight_set == 50.0)
    });
    block_on(b.sync_agent(&processor)).unwrap();
    let share = share_of(&b, &processor, b"v2:", 2_000);
    assert!((0.4..0.6).contains(&share), "b sent {share} to the canary");

    // Rolled back where it is driven: the follower drops the split and the candidate.
    block_on(a.abort(&processor, &candidate, "operator")).unwrap();
    block_on(v2.rollout.wait()).unwrap();
    let synced = block_on(b.sync_agent(&processor)).unwrap();
    assert_eq!(synced.canary, None);
    assert_eq!(synced.retired, vec![candidate.clone()]);
    assert_eq!(share_of(&b, &processor, b"v2:", 500), 0.0);
}
