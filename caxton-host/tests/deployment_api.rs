//! The deployment API through `Host`, on the real registry, router, runtime, validation
//! pipeline and rollout driver.

mod common;

use caxton_core::{AuditAction, LifecycleState};
use caxton_host::{
    DeployRequest, HostError, PromoteMode, Role, RolloutPhase, SessionMode, restored_from,
};
use caxton_strategies::Outcome;
use common::*;

#[test]
fn first_deployment_becomes_production_and_serves() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let record = block_on(host.get(&agent, &v1.deployment.id)).unwrap();
    assert!(record.is_production);
    assert_eq!(record.state, LifecycleState::Running);
    assert!(
        v1.deployment.id.as_str().starts_with("echo-v1-"),
        "{}",
        v1.deployment.id
    );
    let delivery = host.send(&agent, None, b"hello").unwrap();
    assert_eq!(delivery.reply, b"v1:hello");
    assert_eq!(delivery.deployment, v1.deployment.id);
    let report = host
        .validation_report(&v1.deployment.id)
        .expect("validated");
    assert!(report.accepted);
    assert_eq!(report.stages.len(), 4, "{report:?}");
}

#[test]
fn a_second_deploy_while_a_rollout_runs_is_refused_and_stores_nothing() {
    let host = host();
    let agent = agent("echo");
    first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let slow = spec(
        r#"{"deployment": {"strategy": "canary", "stages": [{"canary": {"weight": "10%", "hold": "1h"}}, {"full": "100%"}]}}"#,
    );
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(slow)
                .build(),
        ),
    )
    .unwrap();
    let before = block_on(host.list(&agent, true)).unwrap().len();
    let refused = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v3:"))
                .label("v3")
                .build(),
        ),
    )
    .unwrap_err();
    match &refused {
        HostError::RolloutInProgress { deployment, .. } => {
            assert_eq!(deployment, &v2.deployment.id)
        }
        other => panic!("expected RolloutInProgress, got {other:?}"),
    }
    assert!(refused.is_conflict());
    assert_eq!(block_on(host.list(&agent, true)).unwrap().len(), before);
    block_on(host.abort(&agent, &v2.deployment.id, "test over")).unwrap();
    let report = block_on(v2.rollout.wait()).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Aborted { .. }),
        "{:?}",
        report.outcome
    );
    // The slot is free again the moment the rollout is over.
    let v3 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v3:"))
                .label("v3")
                .rollout(spec(r#"{"deployment": {"strategy": "direct"}}"#))
                .build(),
        ),
    )
    .unwrap();
    block_on(v3.rollout.wait()).unwrap();
    assert_eq!(host.send(&agent, None, b"!").unwrap().reply, b"v3:!");
}

#[test]
fn a_regressing_canary_is_rolled_back_by_its_gate_under_traffic() {
    let host = host();
    let agent = agent("orders");
    let v1 = first_version(
        &host,
        &agent,
        json_agent("receipt", "1"),
        SessionMode::Stateless,
    );
    let traffic = Traffic::start(&host, &agent, JSON_MESSAGE);
    let canary = spec(
        r#"{"deployment": {"strategy": "canary",
            "stages": [{"canary": {"weight": "50%", "hold": "3s"}}, {"full": "100%"}],
            "rollback_on": ["error_rate > 5%"], "check_interval": "250ms", "min_requests": 20,
            "judge": "off"}}"#,
    );
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), json_agent("error", "2"))
                .label("v2")
                .rollout(canary)
                .build(),
        ),
    )
    .unwrap();
    let report = block_on(v2.rollout.wait()).unwrap();
    let counts = traffic.stop();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(counts.failures, 0, "{counts:?}");
    assert!(
        counts
            .by_deployment
            .get(v2.deployment.id.as_str())
            .is_some_and(|n| *n > 0)
    );
    let production = block_on(host.store().production(&agent)).unwrap().unwrap();
    assert_eq!(production.id, v1.deployment.id);
    assert_eq!(
        host.send(&agent, None, JSON_MESSAGE).unwrap().deployment,
        v1.deployment.id
    );
    // The rolled-back candidate is unloaded from the runtime.
    assert!(!host.runtime().loaded().contains(&v2.deployment.id));
}

#[test]
fn promote_full_ends_a_canary_early_and_pause_resume_reach_the_rollout() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let canary = spec(
        r#"{"deployment": {"strategy": "canary", "stages": [{"canary": {"weight": "10%", "hold": "1h"}}, {"full": "100%"}], "judge": "off"}}"#,
    );
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(canary)
                .build(),
        ),
    )
    .unwrap();
    // Wait until the canary step runs, then look at the status.
    let status = wait_for("the rollout reports its status", || {
        let status = block_on(host.status(&agent)).unwrap();
        status
            .rollout
            .as_ref()
            // The split and the stage arrive as two events: wait for both.
            .is_some_and(|r| r.weight_set > 0.0 && r.stage.is_some())
            .then_some(status)
    });
    let rollout = status.rollout.as_ref().unwrap();
    assert_eq!(rollout.deployment, v2.deployment.id);
    assert_eq!(rollout.strategy, "canary");
    assert_eq!((rollout.step, rollout.steps), (1, 2));
    assert_eq!(rollout.weight_set, 10.0);
    let row = |id: &caxton_core::DeploymentId| {
        status
            .deployments
            .iter()
            .find(|d| &d.id == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row(&v1.deployment.id).role, Role::Production);
    assert_eq!(row(&v1.deployment.id).weight, 90.0);
    assert_eq!(row(&v2.deployment.id).role, Role::Candidate);
    assert_eq!(row(&v2.deployment.id).weight, 10.0);

    block_on(host.pause(&agent, &v2.deployment.id)).unwrap();
    wait_for("the rollout is paused", || {
        let status = block_on(host.status(&agent)).unwrap();
        (status.rollout?.phase == RolloutPhase::Paused).then_some(())
    });
    block_on(host.resume(&agent, &v2.deployment.id)).unwrap();
    block_on(host.promote(&agent, &v2.deployment.id, PromoteMode::Full)).unwrap();
    let report = block_on(v2.rollout.wait()).unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v2:x");
    let status = block_on(host.status(&agent)).unwrap();
    assert!(status.rollout.is_none());
    assert_eq!(status.production, Some(v2.deployment.id.clone()));
    // Commands for a rollout that is over are refused, by name.
    assert!(matches!(
        block_on(host.pause(&agent, &v2.deployment.id)),
        Err(HostError::NoRollout { .. })
    ));
}

#[test]
fn rollback_is_instant_while_the_previous_version_is_live() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    // Blue-green keeps v1 warm through cleanup; a rollback during it needs no reload.
    let blue_green =
        spec(r#"{"deployment": {"strategy": "blue-green", "stages": [{"cleanup": "1h"}]}}"#);
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(blue_green)
                .build(),
        ),
    )
    .unwrap();
    wait_for("v2 answers", || {
        (host.send(&agent, None, b"x").ok()?.reply == b"v2:x").then_some(())
    });
    // During cleanup the rollout still runs: rolling back its candidate aborts it.
    let outcome = block_on(host.rollback(&agent, &v2.deployment.id, None)).unwrap();
    assert_eq!(outcome.restored.id, v1.deployment.id);
    assert!(!outcome.reloaded_from_artifact);
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v1:x");
    block_on(v2.rollout.wait()).unwrap();
}

#[test]
fn rollback_to_a_retired_version_reloads_it_from_its_artifact() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let v2 = deploy_and_wait(
        &host,
        DeployRequest::builder(agent.clone(), echo("v2:"))
            .label("v2")
            .rollout(spec(r#"{"deployment": {"strategy": "direct"}}"#))
            .build(),
    );
    let retired = block_on(host.get(&agent, &v1.deployment.id)).unwrap();
    assert_eq!(retired.state, LifecycleState::Retired);
    assert!(
        !host.runtime().loaded().contains(&v1.deployment.id),
        "retired v1 is unloaded"
    );

    let outcome = block_on(host.rollback(&agent, &v2.deployment.id, None)).unwrap();
    assert!(outcome.reloaded_from_artifact);
    assert_eq!(
        restored_from(&outcome.restored),
        Some(v1.deployment.id.clone())
    );
    assert_eq!(outcome.restored.version, retired.version);
    assert_eq!(outcome.rolled_back.state, LifecycleState::RolledBack);
    assert!(outcome.restored.is_production);
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v1:x");
    // v2 leaves the runtime once its messages are done.
    wait_until("v2 is unloaded", || {
        !host.runtime().loaded().contains(&v2.deployment.id)
    });

    // Both moves are in the audit history, with reasons.
    let history = block_on(host.history(&agent)).unwrap();
    let restored_history: Vec<_> = history
        .iter()
        .filter(|e| e.deployment == outcome.restored.id)
        .collect();
    assert!(
        restored_history
            .iter()
            .any(|e| e.reason.contains(v1.deployment.id.as_str()))
    );
    assert!(history.iter().any(|e| e.deployment == v2.deployment.id
        && matches!(e.action, AuditAction::Transition { .. })
        && e.reason.contains("rolled back")));
}

#[test]
fn rollback_to_a_named_version_and_refusals() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let direct = || spec(r#"{"deployment": {"strategy": "direct"}}"#);
    let v2 = deploy_and_wait(
        &host,
        DeployRequest::builder(agent.clone(), echo("v2:"))
            .label("v2")
            .rollout(direct())
            .build(),
    );
    let v3 = deploy_and_wait(
        &host,
        DeployRequest::builder(agent.clone(), echo("v3:"))
            .label("v3")
            .rollout(direct())
            .build(),
    );
    // Not production: nothing to roll back.
    assert!(matches!(
        block_on(host.rollback(&agent, &v2.deployment.id, None)),
        Err(HostError::NotRollbackable { .. })
    ));
    let outcome =
        block_on(host.rollback(&agent, &v3.deployment.id, Some(&v1.deployment.id))).unwrap();
    assert_eq!(
        restored_from(&outcome.restored),
        Some(v1.deployment.id.clone())
    );
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v1:x");
    // Another agent's deployment is not found, and says nothing of the other agent.
    let other = agent_named("other");
    let err = block_on(host.rollback(&other, &outcome.restored.id, None)).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

fn agent_named(name: &str) -> caxton_core::AgentId {
    agent(name)
}

#[test]
fn delete_refuses_production_and_a_deleted_deployment_is_never_previewed_or_promoted() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let err = block_on(host.delete(&agent, &v1.deployment.id)).unwrap_err();
    assert_eq!(err.code(), "is_production", "{err}");
    let v2 = deploy_and_wait(
        &host,
        DeployRequest::builder(agent.clone(), echo("v2:"))
            .label("v2")
            .rollout(spec(
                r#"{"deployment": {"strategy": "blue-green", "stages": [{"cleanup": "0s"}]}}"#,
            ))
            .build(),
    );
    // v1 retired by the switch; preview of a retired deployment is refused.
    assert!(block_on(host.preview(&agent, &v1.deployment.id, None, b"x")).is_err());
    // Preview reaches a running deployment whatever the split.
    let preview = block_on(host.preview(&agent, &v2.deployment.id, None, b"x")).unwrap();
    assert_eq!(preview.reply, b"v2:x");
    let deleted = block_on(host.delete(&agent, &v1.deployment.id)).unwrap();
    assert!(deleted.is_deleted());
    assert!(
        block_on(host.list(&agent, false))
            .unwrap()
            .iter()
            .all(|d| d.id != v1.deployment.id)
    );
    assert!(
        block_on(host.list(&agent, true))
            .unwrap()
            .iter()
            .any(|d| d.id == v1.deployment.id)
    );
    assert!(matches!(
        block_on(host.preview(&agent, &v1.deployment.id, None, b"x")),
        Err(HostError::NotFound { .. })
    ));
    assert!(block_on(host.promote(&agent, &v1.deployment.id, PromoteMode::Full)).is_err());
    assert!(block_on(host.rollback(&agent, &v2.deployment.id, Some(&v1.deployment.id))).is_err());
    // Preview of another agent's deployment is "not found".
    let other = agent_named("other");
    first_version(&host, &other, echo("o:"), SessionMode::Stateless);
    assert!(matches!(
        block_on(host.preview(&other, &v2.deployment.id, None, b"x")),
        Err(ref e) if e.is_not_found()
    ));
}

#[test]
fn health_events_and_end_session() {
    let host = host();
    let agent = agent("chat");
    let mut events = host.events();
    first_version(&host, &agent, echo("v1:"), SessionMode::Sessions);
    let health = block_on(host.health());
    assert!(health.live && health.ready, "{health:?}");
    assert_eq!(health.agents.len(), 1);
    // The rollout's events reached the subscriber, the last one `finished`.
    let mut names = Vec::new();
    while let Ok(event) = events.try_recv() {
        names.push(event.event.kind.name());
    }
    assert_eq!(names.first(), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"finished"), "{names:?}");
    let s = session("s-1");
    host.send(&agent, Some(&s), b"hi").unwrap();
    let status = block_on(host.status(&agent)).unwrap();
    assert_eq!(status.sessions, SessionMode::Sessions);
    assert_eq!(status.deployments[0].pinned_sessions, 1);
    assert!(host.end_session(&agent, &s));
    let status = block_on(host.status(&agent)).unwrap();
    assert_eq!(status.deployments[0].pinned_sessions, 0);
}

#[test]
fn bad_requests_are_refused_with_the_field_named_and_nothing_stored() {
    let host = host();
    let agent = agent("echo");
    for (request, field) in [
        (
            DeployRequest::builder(agent.clone(), echo("v1:"))
                .label("no spaces")
                .build(),
            "label",
        ),
        (
            DeployRequest::builder(agent.clone(), echo("v1:"))
                .tools_json("[not json")
                .build(),
            "tools",
        ),
        (
            DeployRequest::builder(agent.clone(), echo("v1:"))
                .metadata("caxton.spec", "mine")
                .build(),
            "metadata",
        ),
    ] {
        match block_on(host.deploy(request)) {
            Err(HostError::InvalidRequest { field: named, .. }) => assert_eq!(named, field),
            other => panic!("expected InvalidRequest on {field}, got {other:?}"),
        }
    }
    assert!(block_on(host.list(&agent, true)).unwrap().is_empty());
    // An invalid module fails validation: the deployment fails, nothing serves.
    let bad = block_on(async {
        let deployed = host
            .deploy(
                DeployRequest::builder(
                    agent.clone(),
                    caxton_host::ModuleSource::Bytes(b"not wasm".to_vec().into()),
                )
                .build(),
            )
            .await
            .unwrap();
        deployed.rollout.wait().await.unwrap();
        host.get(&agent, &deployed.deployment.id).await.unwrap()
    });
    assert_eq!(bad.state, LifecycleState::Failed);
    assert!(host.send(&agent, None, b"x").is_err());
}
