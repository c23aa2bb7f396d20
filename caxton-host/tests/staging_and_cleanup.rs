//! Deploy is not promote: staged versions, the atomic cutover, an instant rollback to the
//! live previous version; the caller's executor is never blocked; idle sessions go.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use caxton_core::{LifecycleState, ManualClock, Timestamp};
use caxton_host::{DeployRequest, Host, HostError, PromoteMode, Role, SessionMode};
use common::*;
use futures::task::LocalSpawnExt;

#[test]
fn a_staged_version_takes_no_traffic_until_promoted_and_rollback_to_the_live_previous_is_instant() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let v2 = block_on(
        host.stage(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .build(),
        ),
    )
    .unwrap();
    assert_eq!(v2.state, LifecycleState::Running);
    assert!(!v2.is_production);
    for _ in 0..50 {
        assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v1:x");
    }
    // Reachable by preview, shown as such.
    assert_eq!(
        block_on(host.preview(&agent, &v2.id, None, b"x"))
            .unwrap()
            .reply,
        b"v2:x"
    );
    let status = block_on(host.status(&agent)).unwrap();
    let role = |id| {
        status
            .deployments
            .iter()
            .find(|d| &d.id == id)
            .unwrap()
            .role
    };
    assert_eq!(role(&v2.id), Role::Preview);

    let promoted = block_on(host.promote(&agent, &v2.id, PromoteMode::Full)).unwrap();
    assert!(promoted.is_production);
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v2:x");
    // v1 stays live: the rollback swaps the route back without loading anything.
    assert!(host.runtime().loaded().contains(&v1.deployment.id));
    let outcome = block_on(host.rollback(&agent, &v2.id, None)).unwrap();
    assert!(!outcome.reloaded_from_artifact);
    assert_eq!(outcome.restored.id, v1.deployment.id);
    assert_eq!(host.send(&agent, None, b"x").unwrap().reply, b"v1:x");
}

#[test]
fn only_one_previous_version_stays_live_across_promotions() {
    let host = host();
    let agent = agent("echo");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let mut ids = vec![v1.deployment.id.clone()];
    for n in 2..=4 {
        let staged = block_on(
            host.stage(
                DeployRequest::builder(agent.clone(), echo(&format!("v{n}:")))
                    .label(format!("v{n}"))
                    .build(),
            ),
        )
        .unwrap();
        block_on(host.promote(&agent, &staged.id, PromoteMode::Full)).unwrap();
        ids.push(staged.id);
    }
    let states: Vec<LifecycleState> = ids
        .iter()
        .map(|id| block_on(host.get(&agent, id)).unwrap().state)
        .collect();
    assert_eq!(
        states,
        [
            LifecycleState::Retired,
            LifecycleState::Retired,
            LifecycleState::Running,
            LifecycleState::Running
        ]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.runtime().loaded().contains(&ids[1]) {
        assert!(std::time::Instant::now() < deadline, "v2 never unloaded");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failing_staged_version_is_failed_and_cannot_be_promoted() {
    let host = host();
    let agent = agent("echo");
    first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let broken = block_on(
        host.stage(
            DeployRequest::builder(
                agent.clone(),
                caxton_host::ModuleSource::Bytes(b"\0asm garbage".to_vec().into()),
            )
            .build(),
        ),
    )
    .unwrap();
    assert_eq!(broken.state, LifecycleState::Failed);
    assert!(matches!(
        block_on(host.promote(&agent, &broken.id, PromoteMode::Full)),
        Err(HostError::NotPromotable { .. })
    ));
}

#[test]
fn validation_and_compilation_never_block_the_callers_executor_thread() {
    // One thread runs both the deploy and a ticker; if the deploy blocked it, the
    // ticker could not run while validation and warm-up take their time.
    let host = host();
    let agent = agent("echo");
    let mut pool = futures::executor::LocalPool::new();
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let ticks_seen = Rc::new(Cell::new(0u32));
    {
        let (ticks, done) = (Rc::clone(&ticks), Rc::clone(&done));
        pool.spawner()
            .spawn_local(async move {
                while !done.get() {
                    ticks.set(ticks.get() + 1);
                    futures_timer_delay(Duration::from_millis(1)).await;
                }
            })
            .unwrap();
    }
    {
        let (ticks, done, seen) = (Rc::clone(&ticks), Rc::clone(&done), Rc::clone(&ticks_seen));
        let host = host.clone();
        pool.spawner()
            .spawn_local(async move {
                let before = ticks.get();
                let staged = host
                    .stage(DeployRequest::builder(agent.clone(), echo("v1:")).build())
                    .await
                    .unwrap();
                assert_eq!(staged.state, LifecycleState::Running);
                seen.set(ticks.get() - before);
                done.set(true);
            })
            .unwrap();
    }
    pool.run();
    // Blocked, the ticker could not have run at all between the start and the end of the
    // staging; how often it ran depends on the machine's load, so only "at all" is asked.
    assert!(
        ticks_seen.get() > 0,
        "the executor thread was blocked during staging ({} ticks)",
        ticks_seen.get()
    );
}

/// A timer that does not need a runtime: a thread sleeps, then wakes the task.
async fn futures_timer_delay(duration: Duration) {
    let (sender, receiver) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(duration);
        let _ = sender.send(());
    });
    let _ = receiver.await;
}

#[test]
fn idle_session_pins_are_purged_by_the_hosts_own_timer() {
    let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let host = Host::builder()
        .clock(clock.clone())
        .session_idle_timeout(Duration::from_secs(60))
        .maintenance_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let agent = agent("chat");
    let v1 = first_version(&host, &agent, echo("v1:"), SessionMode::Sessions);
    for n in 0..50 {
        host.send(&agent, Some(&session(&format!("s{n}"))), b"hi")
            .unwrap();
    }
    let pinned = |host: &Host| {
        host.router()
            .drain_status(&v1.deployment.id)
            .unwrap()
            .pinned_sessions
    };
    assert_eq!(pinned(&host), 50);
    clock.advance(Duration::from_secs(120));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats_sessions = host.runtime().health(&v1.deployment.id).unwrap().sessions;
        if pinned(&host) == 0 && stats_sessions == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pins {} sessions {stats_sessions}",
            pinned(&host)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
