//! Session mode belongs to the agent from its first deployment, and shadow copies never
//! reach a caller — through `Host`, with the real router and runtime.

mod common;

use std::time::{Duration, Instant};

use caxton_host::{DeployRequest, SessionMode};
use common::*;

#[test]
fn sessions_opened_before_the_first_rainbow_rollout_stay_on_the_version_that_started_them() {
    let host = host();
    let agent = agent("chat");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Sessions);
    // Sessions that start long before anyone thinks of a rainbow rollout.
    let early: Vec<_> = (0..20).map(|n| session(&format!("early-{n}"))).collect();
    for s in &early {
        assert_eq!(
            host.send(&agent, Some(s), b"hello").unwrap().deployment,
            v1.deployment.id
        );
    }
    let rainbow = spec(
        r#"{"deployment": {"strategy": "rainbow", "forced_drain_after": "1h", "check_interval": "200ms"}}"#,
    );
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(rainbow)
                .build(),
        ),
    )
    .unwrap();
    // Wait for the switch: a new session lands on v2.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let fresh = session(&format!("fresh-{n}"));
        if host.send(&agent, Some(&fresh), b"hi").unwrap().deployment == v2.deployment.id {
            break;
        }
        assert!(Instant::now() < deadline, "rainbow never switched");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every early session is still served by v1, with its state.
    for s in &early {
        let delivery = host.send(&agent, Some(s), b"again").unwrap();
        assert_eq!(delivery.deployment, v1.deployment.id, "session {s} moved");
        assert!(delivery.pinned);
        assert_eq!(delivery.reply, b"v1:again");
    }
    // New sessions go to v2 from now on.
    for n in 0..20 {
        let s = session(&format!("late-{n}"));
        assert_eq!(
            host.send(&agent, Some(&s), b"hi").unwrap().deployment,
            v2.deployment.id
        );
    }
    let status = block_on(host.status(&agent)).unwrap();
    let v1_row = status
        .deployments
        .iter()
        .find(|d| d.id == v1.deployment.id)
        .unwrap();
    // The early sessions, and the fresh ones that started on v1 before the switch.
    assert_eq!(
        v1_row.pinned_sessions,
        early.len() as u64 + n - 1,
        "{status:?}"
    );
    assert_eq!(v1_row.role, caxton_host::Role::Draining, "{status:?}");
    for k in 1..n {
        host.end_session(&agent, &session(&format!("fresh-{k}")));
    }
    for s in &early {
        host.end_session(&agent, s);
    }
    // With its sessions ended v1 drains and the rollout finishes.
    let report = block_on(v2.rollout.wait()).unwrap();
    assert_eq!(report.outcome, caxton_strategies::Outcome::Promoted);
}

#[test]
fn a_stateless_agent_does_not_pin_sessions() {
    let host = host();
    let agent = agent("echo");
    first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let delivery = host.send(&agent, Some(&session("s")), b"x").unwrap();
    assert!(!delivery.pinned);
    let status = block_on(host.status(&agent)).unwrap();
    assert_eq!(status.sessions, SessionMode::Stateless);
    assert_eq!(status.deployments[0].pinned_sessions, 0);
}

#[test]
fn shadow_copies_run_off_the_callers_path_and_never_reach_a_caller() {
    let host = host();
    let agent = agent("orders");
    let v1 = first_version(
        &host,
        &agent,
        json_agent("receipt", "1"),
        SessionMode::Stateless,
    );
    let shadow = spec(
        r#"{"deployment": {"strategy": "shadow", "duration": "1s", "sample": "100%", "min_requests": 5, "check_interval": "200ms"}}"#,
    );
    let v3 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), json_agent("receipt", "3"))
                .label("v3")
                .rollout(shadow)
                .build(),
        ),
    )
    .unwrap();
    let mut to_callers_from_shadow = 0u64;
    let mut delivered = 0u64;
    let mut mirrored = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.running_rollout(&agent).is_some() && Instant::now() < deadline {
        let delivery = host.send(&agent, None, JSON_MESSAGE).unwrap();
        delivered += 1;
        if delivery.deployment == v3.deployment.id {
            to_callers_from_shadow += 1;
        }
        mirrored += u64::from(delivery.mirrored_to.as_ref() == Some(&v3.deployment.id));
        std::thread::sleep(Duration::from_millis(2));
    }
    block_on(v3.rollout.wait()).unwrap();
    assert!(delivered > 0 && mirrored > 0, "{delivered} {mirrored}");
    assert_eq!(to_callers_from_shadow, 0, "a shadow reply reached a caller");
    // The worker compares every copy it was given; a full queue drops and counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = host.shadow_counts();
        if counts.compared + counts.failed + counts.dropped == counts.mirrored {
            break counts;
        }
        assert!(Instant::now() < deadline, "{counts:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(counts.mirrored, mirrored, "{counts:?}");
    assert!(counts.compared > 0, "{counts:?}");
    // Same JSON apart from the version field: not byte-identical, not equivalent.
    assert_eq!(counts.exact, 0, "{counts:?}");
    // Production never changed.
    let production = block_on(host.store().production(&agent)).unwrap().unwrap();
    assert_eq!(production.id, v1.deployment.id);
}
