//! A host rebuilt from the registry, artifacts and journal another host left behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use caxton_core::{
    AgentId, ArtifactStore, DeploymentStore, JournalEntry, JournalRecord, LifecycleEvent,
    LifecycleState, MemoryArtifactStore, MemoryJournal, MemoryStore, RolloutJournal,
};
use caxton_host::{DeployRequest, Host, SessionMode};
use caxton_strategies::{RolloutSpec, StrategyConfig};
use common::*;

struct Stores {
    store: Arc<MemoryStore>,
    artifacts: Arc<MemoryArtifactStore>,
    journal: Arc<MemoryJournal>,
}

impl Stores {
    fn new() -> Self {
        Stores {
            store: Arc::new(MemoryStore::new()),
            artifacts: Arc::new(MemoryArtifactStore::new()),
            journal: Arc::new(MemoryJournal::new()),
        }
    }

    fn host(&self) -> Host {
        Host::builder()
            .store(self.store.clone())
            .artifacts(self.artifacts.clone())
            .journal(self.journal.clone())
            .build()
            .unwrap()
    }
}

fn canary_config() -> StrategyConfig {
    RolloutSpec::parse(
        r#"{"deployment": {"strategy": "canary", "judge": "off",
            "stages": [{"canary": {"weight": "10%", "hold": "1h"}}, {"canary": {"weight": "50%", "hold": "1h"}}, {"full": "100%"}]}}"#,
    )
    .unwrap()
    .strategy
}

fn journal(
    stores: &Stores,
    agent: &AgentId,
    deployment: &caxton_core::DeploymentId,
    at: caxton_core::Timestamp,
    record: JournalRecord,
) {
    block_on(stores.journal.append(JournalEntry {
        seq: 0,
        at,
        agent: agent.clone(),
        deployment: deployment.clone(),
        record,
    }))
    .unwrap();
}

#[test]
fn a_restarted_host_serves_the_same_production_and_resumes_the_canary_at_its_step_and_deadline() {
    let stores = Stores::new();
    let agent = agent("orders");
    let (v1, v2, until) = {
        let before = stores.host();
        let v1 = first_version(&before, &agent, echo("v1:"), SessionMode::Stateless);
        // What a host leaves behind when it dies 30 minutes into a canary's first hour:
        // the candidate running, the journal at its first stage.
        let v2 = block_on(
            before.stage(
                DeployRequest::builder(agent.clone(), echo("v2:"))
                    .label("v2")
                    .build(),
            ),
        )
        .unwrap();
        let now = before.clock().now();
        let started = now.saturating_sub(Duration::from_secs(30 * 60));
        let until = started.saturating_add(Duration::from_secs(3_600));
        journal(
            &stores,
            &agent,
            &v2.id,
            started,
            JournalRecord::Started {
                strategy: "canary".into(),
                spec: serde_json::to_value(canary_config()).unwrap(),
                baseline: Some(v1.deployment.id.clone()),
            },
        );
        journal(
            &stores,
            &agent,
            &v2.id,
            started,
            JournalRecord::Stage {
                stage: "canary.10_percent".into(),
                step: 1,
                percentage: Some(10.0),
                until: Some(until),
            },
        );
        (v1.deployment.id, v2.id, until)
    };

    let after = stores.host();
    let recovery = block_on(after.recover()).unwrap();
    assert_eq!(recovery.agents, 1);
    assert!(recovery.loaded.contains(&v1), "{recovery:?}");
    assert_eq!(recovery.resumed.len(), 1, "{recovery:?}");
    assert_eq!(recovery.resumed[0].deployment(), &v2);
    // Production is served at once, by the same deployment.
    let delivery = after.send(&agent, None, b"x").unwrap();
    assert!(delivery.deployment == v1 || delivery.deployment == v2);
    // The canary goes on from the step it was at, not from the start.
    let status = wait_for("the resumed rollout reports its status", || {
        let status = block_on(after.status(&agent)).ok()?;
        status
            .rollout
            .as_ref()
            // The split and the stage arrive as two events: wait for both.
            .is_some_and(|r| r.weight_set > 0.0 && r.stage.is_some())
            .then_some(status)
    });
    assert_eq!(status.production, Some(v1.clone()));
    let rollout = status.rollout.unwrap();
    assert_eq!(rollout.deployment, v2);
    assert_eq!(rollout.stage.as_deref(), Some("canary.10_percent"));
    assert_eq!(rollout.weight_set, 10.0);
    // Its hold ends when the first host said it would, not an hour from now.
    let entries = block_on(stores.journal.entries(&agent, &v2)).unwrap();
    let resumed_until = entries
        .iter()
        .rev()
        .find_map(|e| match &e.record {
            JournalRecord::Stage { until, .. } => *until,
            _ => None,
        })
        .unwrap();
    let drift = resumed_until.saturating_since(until) + until.saturating_since(resumed_until);
    assert!(
        drift < Duration::from_secs(5),
        "deadline moved by {drift:?}"
    );
    // At no point two productions.
    let productions = block_on(stores.store.list(&agent, &Default::default()))
        .unwrap()
        .items
        .iter()
        .filter(|d| d.is_production)
        .count();
    assert_eq!(productions, 1);
    block_on(after.abort(&agent, &v2, "test over")).unwrap();
    block_on(recovery.resumed[0].wait()).unwrap();
}

#[test]
fn interrupted_rollouts_that_cannot_go_on_are_settled_with_a_reason() {
    let stores = Stores::new();
    let agent = agent("orders");
    let (v1, validating, promoted_agent, promoted) = {
        let before = stores.host();
        let v1 = first_version(&before, &agent, echo("v1:"), SessionMode::Stateless);
        // A candidate the host died validating.
        let module = caxton_wasm::fixtures::tagged_echo("v2:");
        let stored = block_on(
            stores
                .artifacts
                .put(caxton_core::ArtifactKind::Module, &module),
        )
        .unwrap();
        assert!(stored.created);
        let new =
            caxton_core::NewDeployment::builder(agent.clone(), common_version(&module)).build();
        let candidate = block_on(stores.store.create(new)).unwrap();
        block_on(stores.store.transition(
            &agent,
            &candidate.id,
            LifecycleEvent::BeginValidation,
            "validating",
        ))
        .unwrap();
        let now = before.clock().now();
        journal(
            &stores,
            &agent,
            &candidate.id,
            now,
            JournalRecord::Started {
                strategy: "canary".into(),
                spec: serde_json::to_value(canary_config()).unwrap(),
                baseline: Some(v1.deployment.id.clone()),
            },
        );
        // Another agent whose candidate the registry had already promoted.
        let other = common::agent("billing");
        let b1 = first_version(&before, &other, echo("b1:"), SessionMode::Stateless);
        journal(
            &stores,
            &other,
            &b1.deployment.id,
            now,
            JournalRecord::Started {
                strategy: "direct".into(),
                spec: serde_json::json!(null),
                baseline: None,
            },
        );
        (v1.deployment.id, candidate.id, other, b1.deployment.id)
    };
    let after = stores.host();
    let recovery = block_on(after.recover()).unwrap();
    assert!(recovery.resumed.is_empty(), "{recovery:?}");
    let mut settled: Vec<(String, String)> = recovery
        .settled
        .iter()
        .map(|s| (s.deployment.to_string(), s.outcome.clone()))
        .collect();
    settled.sort();
    let mut expected = vec![
        (validating.to_string(), "aborted".to_owned()),
        (promoted.to_string(), "promoted".to_owned()),
    ];
    expected.sort();
    assert_eq!(settled, expected);
    let failed = block_on(stores.store.get(&agent, &validating)).unwrap();
    assert_eq!(failed.state, LifecycleState::Failed);
    let history = block_on(stores.store.history(&agent, &validating)).unwrap();
    assert!(
        history.last().unwrap().reason.contains("restarted"),
        "{history:?}"
    );
    assert!(block_on(stores.journal.open_rollouts()).unwrap().is_empty());
    // Both agents serve their production.
    assert_eq!(after.send(&agent, None, b"x").unwrap().deployment, v1);
    assert_eq!(
        after.send(&promoted_agent, None, b"x").unwrap().deployment,
        promoted
    );
    assert!(block_on(after.health()).ready);
}

fn common_version(module: &[u8]) -> caxton_core::VersionTuple {
    caxton_core::VersionTuple::new(
        caxton_core::CodeLayer::from_module(module),
        caxton_core::ModelLayer::new("none", "none", "0"),
        caxton_core::PromptLayer::from_prompt("", &[]),
        caxton_core::ToolsLayer::from_definitions(&serde_json::json!([])),
    )
}
