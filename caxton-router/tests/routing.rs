//! Behaviour of the router through its public API: routes, changes, errors, pins, shadow,
//! preview and drains.

use std::sync::Arc;
use std::time::Duration;

use caxton_core::{
    AgentId, DeploymentId, DrainPhase, ManualClock, SessionAffinity, SessionId, ShadowConfig,
    Split, SplitError, Timestamp, TrafficControl, TrafficError, Weight,
};
use caxton_router::{
    ChangeError, DrainError, OwnedRouteDecision, PreviewError, RegisterError, RetireError,
    RollbackError, RouteDecision, RouteError, Router, session_point,
};

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn dep(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

fn bps(value: u32) -> Weight {
    Weight::from_bps(value).unwrap()
}

/// A router with agent `a` on production `v1` and `v2`, `v3` registered.
fn setup() -> (Router, AgentId) {
    let router = Router::new();
    let a = agent("a");
    for v in ["v1", "v2", "v3"] {
        router.register(&a, &dep(v)).unwrap();
    }
    router.promote(&a, &dep("v1")).unwrap();
    (router, a)
}

fn manual_router() -> (Router, ManualClock, AgentId) {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let router = Router::builder().clock(Arc::new(clock.clone())).build();
    let a = agent("a");
    for v in ["v1", "v2", "v3"] {
        router.register(&a, &dep(v)).unwrap();
    }
    router.promote(&a, &dep("v1")).unwrap();
    (router, clock, a)
}

fn routed(router: &Router, a: &AgentId, s: &SessionId) -> DeploymentId {
    router.route(a, Some(s)).unwrap().deployment().clone()
}

#[test]
fn decision_is_send_and_counts_in_flight_until_dropped() {
    fn assert_send<T: Send>() {}
    assert_send::<RouteDecision<'_>>();

    let (router, a) = setup();
    let first = router.route(&a, None).unwrap();
    let second = router.route(&a, Some(&session("s"))).unwrap();
    assert_eq!(first.deployment(), &dep("v1"));
    assert_eq!(first.agent(), &a);
    assert_eq!(
        first.generation(),
        router.agent_route(&a).unwrap().generation()
    );
    assert_eq!(router.in_flight(&dep("v1")), 2);
    std::thread::scope(|scope| {
        scope.spawn(move || drop(second));
    });
    assert_eq!(router.in_flight(&dep("v1")), 1);
    drop(first);
    assert_eq!(router.in_flight(&dep("v1")), 0);
    assert_eq!(router.in_flight(&dep("nowhere")), 0);
}

#[test]
fn an_owned_decision_carries_the_count_beyond_the_router() {
    fn assert_static_send<T: Send + 'static>() {}
    assert_static_send::<OwnedRouteDecision>();

    let (router, a) = setup();
    router
        .set_shadow(
            &a,
            Some(&ShadowConfig {
                deployment: dep("v2"),
                sample: bps(10_000),
            }),
        )
        .unwrap();
    let borrowed = router.route(&a, Some(&session("s"))).unwrap();
    let generation = borrowed.generation();
    let owned = borrowed.into_owned();
    assert_eq!(owned.deployment(), &dep("v1"));
    assert_eq!(owned.shadow(), Some(&dep("v2")));
    assert_eq!(owned.agent(), &a);
    assert_eq!(owned.generation(), generation);
    assert!(!owned.is_pinned());
    assert_eq!(
        (router.in_flight(&dep("v1")), router.in_flight(&dep("v2"))),
        (1, 1),
        "converting counts the message once, not twice and not zero times"
    );
    let owned = std::thread::spawn(move || owned).join().unwrap();
    assert_eq!(router.in_flight(&dep("v1")), 1);
    drop(owned);
    assert_eq!(
        (router.in_flight(&dep("v1")), router.in_flight(&dep("v2"))),
        (0, 0)
    );

    // An owned decision may outlive the router itself.
    let owned = router.route(&a, None).unwrap().into_owned();
    drop(router);
    assert_eq!(owned.deployment(), &dep("v1"));
    drop(owned);
}

#[test]
fn unknown_agent_and_missing_production_are_errors() {
    let router = Router::new();
    assert_eq!(
        router.route(&agent("ghost"), None).unwrap_err(),
        RouteError::UnknownAgent {
            agent: agent("ghost")
        }
    );
    router.register(&agent("b"), &dep("b1")).unwrap();
    let err = router.route(&agent("b"), None).unwrap_err();
    assert_eq!(err, RouteError::NoProduction { agent: agent("b") });
    assert!(err.to_string().contains("`b`"));
    let mut reader = router.reader();
    assert!(matches!(
        reader.route(&agent("ghost"), None),
        Err(RouteError::UnknownAgent { .. })
    ));
}

#[test]
fn registering_twice_is_refused_and_register_many_is_all_or_nothing() {
    let (router, a) = setup();
    assert_eq!(
        router.register(&agent("other"), &dep("v1")).unwrap_err(),
        RegisterError::AlreadyRegistered {
            deployment: dep("v1"),
            agent: a.clone()
        }
    );
    let err = router
        .register_many([
            (agent("x"), dep("x1")),
            (agent("y"), dep("x1")),
            (agent("z"), dep("z1")),
        ])
        .unwrap_err();
    assert!(matches!(err, RegisterError::AlreadyRegistered { .. }));
    assert_eq!(router.phase(&dep("z1")), None, "nothing was registered");
    router
        .register_many([(agent("x"), dep("x1")), (agent("x"), dep("x2"))])
        .unwrap();
    assert_eq!(router.phase(&dep("x2")), Some(DrainPhase::Active));
    router.promote(&agent("x"), &dep("x2")).unwrap();
    assert_eq!(routed(&router, &agent("x"), &session("s")), dep("x2"));
}

#[test]
fn bad_changes_are_typed_errors_and_change_nothing() {
    let (router, a) = setup();
    router.register(&agent("b"), &dep("b1")).unwrap();
    let before = router.agent_route(&a).unwrap().generation();

    let split = |d: &str| Split::canary(dep("v1"), dep(d), bps(500)).unwrap();
    assert_eq!(
        router.set_split(&a, &split("nowhere")).unwrap_err(),
        ChangeError::UnknownDeployment {
            deployment: dep("nowhere")
        }
    );
    assert_eq!(
        router.set_split(&a, &split("b1")).unwrap_err(),
        ChangeError::WrongAgent {
            deployment: dep("b1"),
            agent: a.clone()
        }
    );
    assert_eq!(
        router.promote(&agent("ghost"), &dep("v1")).unwrap_err(),
        ChangeError::UnknownAgent {
            agent: agent("ghost")
        }
    );
    router.start_drain(&dep("v3")).unwrap();
    assert_eq!(
        router.set_split(&a, &split("v3")).unwrap_err(),
        ChangeError::NotRunning {
            deployment: dep("v3"),
            phase: DrainPhase::Draining
        }
    );
    assert_eq!(
        router
            .set_split(&agent("b"), &Split::single(dep("b1")))
            .unwrap_err(),
        ChangeError::NoProduction { agent: agent("b") }
    );
    assert_eq!(
        router.set_canary(&a, &dep("v1"), bps(500)).unwrap_err(),
        ChangeError::InvalidSplit {
            agent: a.clone(),
            source: SplitError::Duplicate {
                deployment: dep("v1")
            }
        }
    );
    assert_eq!(
        router
            .pin_session(&a, &session("s"), &dep("v2"))
            .unwrap_err(),
        ChangeError::NoSessionAffinity { agent: a.clone() }
    );
    let route = router.agent_route(&a).unwrap();
    assert_eq!(route.generation(), before, "no route was published");
    assert!(route.split().is_none());
    assert_eq!(route.production(), Some(&dep("v1")));
    assert!(matches!(
        router.rollback(&a).unwrap_err(),
        RollbackError::NothingToRollBack { .. }
    ));
}

#[test]
fn weights_and_duplicates_are_refused_before_reaching_the_router() {
    assert_eq!(
        Split::new([(dep("v1"), bps(5_000)), (dep("v2"), bps(4_000))]).unwrap_err(),
        SplitError::BadSum { sum: 9_000 }
    );
    assert!(matches!(
        Split::new([(dep("v1"), bps(5_000)), (dep("v1"), bps(5_000))]),
        Err(SplitError::Duplicate { .. })
    ));
}

#[test]
fn canary_split_is_sticky_and_follows_the_weights() {
    let (router, a) = setup();
    router.set_canary(&a, &dep("v2"), bps(2_000)).unwrap();
    let sessions: Vec<SessionId> = (0..5_000).map(|n| session(&format!("s{n}"))).collect();
    let on_canary = sessions
        .iter()
        .filter(|s| routed(&router, &a, s) == dep("v2"))
        .count();
    assert!((900..=1_100).contains(&on_canary), "{on_canary}");
    for s in &sessions[..200] {
        assert_eq!(routed(&router, &a, s), routed(&router, &a, s));
        // v1 sorts first, so it owns points [0, 8000).
        let expected = if session_point(&a, s) < 8_000 {
            dep("v1")
        } else {
            dep("v2")
        };
        assert_eq!(routed(&router, &a, s), expected);
    }
    let without_session = (0..5_000)
        .filter(|_| router.route(&a, None).unwrap().deployment() == &dep("v2"))
        .count();
    assert!(
        (850..=1_150).contains(&without_session),
        "{without_session}"
    );
}

#[test]
fn rollback_restores_routes_in_order_within_the_window() {
    let router = Router::builder().rollback_window(2).build();
    let a = agent("a");
    for v in ["v1", "v2", "v3"] {
        router.register(&a, &dep(v)).unwrap();
    }
    router.promote(&a, &dep("v1")).unwrap();
    router.set_canary(&a, &dep("v2"), bps(500)).unwrap();
    router.set_canary(&a, &dep("v2"), bps(2_500)).unwrap();
    router.promote(&a, &dep("v2")).unwrap();
    // An unchanged route is not a change.
    router.promote(&a, &dep("v2")).unwrap();

    router.rollback(&a).unwrap();
    let route = router.agent_route(&a).unwrap();
    assert_eq!(route.production(), Some(&dep("v1")));
    assert_eq!(route.split().unwrap().weight_of(&dep("v2")), bps(2_500));
    router.rollback(&a).unwrap();
    assert_eq!(
        router
            .agent_route(&a)
            .unwrap()
            .split()
            .unwrap()
            .weight_of(&dep("v2")),
        bps(500)
    );
    assert_eq!(
        router.rollback(&a).unwrap_err(),
        RollbackError::NothingToRollBack { agent: a.clone() },
        "the window keeps two routes"
    );
}

#[test]
fn rollback_refuses_a_route_whose_deployment_is_gone_and_keeps_it() {
    let (router, a) = setup();
    router.set_canary(&a, &dep("v2"), bps(500)).unwrap();
    router.promote(&a, &dep("v3")).unwrap();
    router.set_shadow(&a, None).unwrap();
    router.retire(&dep("v2")).unwrap();
    assert_eq!(
        router.rollback(&a).unwrap_err(),
        RollbackError::Retired {
            agent: a.clone(),
            deployment: dep("v2")
        }
    );
    assert_eq!(
        router.agent_route(&a).unwrap().production(),
        Some(&dep("v3"))
    );
}

#[test]
fn rollback_of_one_agent_leaves_the_others_alone() {
    let router = Router::new();
    for n in 0..50 {
        let a = agent(&format!("agent-{n}"));
        router.register(&a, &dep(&format!("agent-{n}-v1"))).unwrap();
        router.register(&a, &dep(&format!("agent-{n}-v2"))).unwrap();
        router.promote(&a, &dep(&format!("agent-{n}-v1"))).unwrap();
    }
    let other = router.agent_route(&agent("agent-7")).unwrap();
    let target = agent("agent-3");
    router.promote(&target, &dep("agent-3-v2")).unwrap();
    router.rollback(&target).unwrap();
    assert_eq!(routed(&router, &target, &session("s")), dep("agent-3-v1"));
    let after = router.agent_route(&agent("agent-7")).unwrap();
    assert!(
        Arc::ptr_eq(&other, &after),
        "another agent's route is untouched"
    );
}

#[test]
fn shadow_is_sampled_deterministically_and_never_changes_the_primary() {
    let (router, a) = setup();
    let shadow = ShadowConfig {
        deployment: dep("v2"),
        sample: bps(2_500),
    };
    router.set_shadow(&a, Some(&shadow)).unwrap();
    let mut mirrored = 0;
    for n in 0..4_000 {
        let s = session(&format!("s{n}"));
        let decision = router.route(&a, Some(&s)).unwrap();
        assert_eq!(decision.deployment(), &dep("v1"));
        let again = router.route(&a, Some(&s)).unwrap();
        assert_eq!(decision.shadow(), again.shadow(), "sampling is per session");
        if let Some(shadow) = decision.shadow() {
            assert_eq!(shadow, &dep("v2"));
            mirrored += 1;
        }
    }
    assert!((850..=1_150).contains(&mirrored), "{mirrored}");
    let held = router.route(&a, None).unwrap();
    let held: Vec<RouteDecision<'_>> = std::iter::once(held)
        .chain((0..399).map(|_| router.route(&a, None).unwrap()))
        .collect();
    let counted = held.iter().filter(|d| d.shadow().is_some()).count() as u64;
    assert!(
        (90..=110).contains(&counted),
        "without sessions the sequence samples the rate evenly: {counted}"
    );
    assert_eq!(router.in_flight(&dep("v2")), counted, "shadow copies count");
    drop(held);
    assert_eq!(router.in_flight(&dep("v2")), 0);
    router.set_shadow(&a, None).unwrap();
    assert!(
        router
            .route(&a, Some(&session("s1")))
            .unwrap()
            .shadow()
            .is_none()
    );
}

#[test]
fn preview_of_another_agents_deployment_answers_as_for_an_unknown_id() {
    let (router, a) = setup();
    let b = agent("b");
    router.register(&b, &dep("b1")).unwrap();
    router.promote(&b, &dep("b1")).unwrap();
    // Whether `b1` exists must not show through agent `a`: the error, its message and what
    // it becomes in core are the same as for an id that was never registered.
    let other = router.route_preview(&a, &dep("b1")).unwrap_err();
    let unknown = router.route_preview(&a, &dep("b2")).unwrap_err();
    assert_eq!(
        other,
        PreviewError::UnknownDeployment {
            deployment: dep("b1")
        }
    );
    assert_eq!(
        other.to_string().replace("b1", "b2"),
        unknown.to_string(),
        "an existing id of another agent reads like an unknown one"
    );
    assert_eq!(
        TrafficError::from(other),
        TrafficError::UnknownDeployment {
            deployment: dep("b1")
        }
    );
    assert_eq!(router.in_flight(&dep("b1")), 0, "nothing was routed to it");
}

#[test]
fn preview_reaches_a_running_deployment_of_the_same_agent_only() {
    let (router, a) = setup();
    router.register(&agent("b"), &dep("b1")).unwrap();
    let decision = router.route_preview(&a, &dep("v2")).unwrap();
    assert_eq!(decision.deployment(), &dep("v2"));
    assert!(!decision.is_pinned() && decision.shadow().is_none());
    assert_eq!(router.in_flight(&dep("v2")), 1);
    drop(decision);
    assert_eq!(
        router.route_preview(&a, &dep("b1")).unwrap_err(),
        PreviewError::UnknownDeployment {
            deployment: dep("b1")
        }
    );
    assert_eq!(
        router.route_preview(&a, &dep("nope")).unwrap_err(),
        PreviewError::UnknownDeployment {
            deployment: dep("nope")
        }
    );
    router.start_drain(&dep("v3")).unwrap();
    assert_eq!(
        router.route_preview(&a, &dep("v3")).unwrap_err(),
        PreviewError::NotRunning {
            deployment: dep("v3"),
            phase: DrainPhase::Draining
        }
    );
    router.retire(&dep("v3")).unwrap();
    assert_eq!(
        router.route_preview(&a, &dep("v3")).unwrap_err(),
        PreviewError::UnknownDeployment {
            deployment: dep("v3")
        }
    );
}

#[test]
fn a_routed_deployment_cannot_be_drained_or_retired() {
    let (router, a) = setup();
    router.set_canary(&a, &dep("v2"), bps(500)).unwrap();
    router
        .set_shadow(
            &a,
            Some(&ShadowConfig {
                deployment: dep("v3"),
                sample: bps(100),
            }),
        )
        .unwrap();
    for d in ["v1", "v2", "v3"] {
        assert_eq!(
            router.start_drain(&dep(d)).unwrap_err(),
            DrainError::StillRouted {
                deployment: dep(d),
                agent: a.clone()
            }
        );
        assert!(matches!(
            router.retire(&dep(d)).unwrap_err(),
            RetireError::StillRouted { .. }
        ));
    }
    assert_eq!(
        router.start_drain(&dep("zzz")).unwrap_err(),
        DrainError::UnknownDeployment {
            deployment: dep("zzz")
        }
    );
}

#[test]
fn drain_waits_for_in_flight_messages_then_closes() {
    let (router, a) = setup();
    router.promote(&a, &dep("v2")).unwrap();
    let before = router.route_preview(&a, &dep("v1")).unwrap().into_owned();
    let router = Arc::new(router);
    let finisher = {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(before);
        })
    };
    let report = router.drain(&dep("v1"), Duration::from_secs(10)).unwrap();
    finisher.join().unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.still_in_flight, 0);
    assert_eq!(router.phase(&dep("v1")), Some(DrainPhase::Drained));
    assert!(router.route_preview(&a, &dep("v1")).is_err());
}

#[test]
fn drain_deadline_reports_what_was_still_in_flight() {
    let (router, a) = setup();
    router.promote(&a, &dep("v2")).unwrap();
    let held = router.route_preview(&a, &dep("v1")).unwrap();
    let report = router.drain(&dep("v1"), Duration::from_millis(20)).unwrap();
    assert!(!report.clean);
    assert_eq!(report.still_in_flight, 1);
    assert_eq!(report.deployment, dep("v1"));
    drop(held);
    assert_eq!(router.in_flight(&dep("v1")), 0);
}

#[test]
fn session_pins_hold_across_promotions_until_idle_timeout() {
    let (router, clock, a) = manual_router();
    router
        .set_session_affinity(
            &a,
            Some(SessionAffinity {
                idle_timeout: Duration::from_secs(60),
            }),
        )
        .unwrap();
    let s = session("chat-1");
    let first = router.route(&a, Some(&s)).unwrap();
    assert_eq!(first.deployment(), &dep("v1"));
    assert!(!first.is_pinned(), "the first message records the pin");
    drop(first);

    router.promote(&a, &dep("v2")).unwrap();
    let fresh = session("chat-2");
    assert_eq!(
        routed(&router, &a, &fresh),
        dep("v2"),
        "new sessions go to v2"
    );
    clock.advance(Duration::from_secs(59));
    let again = router.route(&a, Some(&s)).unwrap();
    assert_eq!(again.deployment(), &dep("v1"));
    assert!(again.is_pinned());
    drop(again);
    // Each message refreshes the pin; silence past the timeout ends it.
    clock.advance(Duration::from_secs(61));
    assert_eq!(routed(&router, &a, &s), dep("v2"));
    assert_eq!(routed(&router, &a, &fresh), dep("v2"));
}

#[test]
fn pins_end_on_release_rollback_retire_and_closed_drain() {
    let (router, _clock, a) = manual_router();
    router
        .set_session_affinity(
            &a,
            Some(SessionAffinity {
                idle_timeout: Duration::from_secs(600),
            }),
        )
        .unwrap();
    let s1 = session("s1");
    let s2 = session("s2");
    let s3 = session("s3");
    assert_eq!(routed(&router, &a, &s1), dep("v1"));

    // Released: the next message follows the route (now v2).
    router.promote(&a, &dep("v2")).unwrap();
    assert_eq!(routed(&router, &a, &s2), dep("v2"));
    assert!(router.release_session(&a, &s1).unwrap());
    assert!(!router.release_session(&a, &s1).unwrap());
    assert_eq!(routed(&router, &a, &s1), dep("v2"));

    // Rolled back: v2's pins go, v1 serves them again.
    router.rollback(&a).unwrap();
    assert_eq!(routed(&router, &a, &s2), dep("v1"));

    // Closed drain: pinned sessions are released and counted.
    router.pin_session(&a, &s3, &dep("v3")).unwrap();
    assert_eq!(routed(&router, &a, &s3), dep("v3"));
    router.start_drain(&dep("v3")).unwrap();
    let status = router.drain_status(&dep("v3")).unwrap();
    assert_eq!(status.phase, DrainPhase::Draining);
    assert_eq!(status.pinned_sessions, 1);
    assert_eq!(
        routed(&router, &a, &s3),
        dep("v3"),
        "a draining deployment still serves its pinned sessions"
    );
    let report = router.close_drain(&dep("v3")).unwrap();
    assert_eq!(report.released_sessions, 1);
    assert!(!report.clean);
    assert_eq!(routed(&router, &a, &s3), dep("v1"));

    // Retired: pins to it are dropped.
    router.promote(&a, &dep("v2")).unwrap();
    let s4 = session("s4");
    assert_eq!(routed(&router, &a, &s4), dep("v2"));
    router.promote(&a, &dep("v1")).unwrap();
    assert_eq!(routed(&router, &a, &s4), dep("v2"), "still pinned");
    router.retire(&dep("v2")).unwrap();
    assert_eq!(routed(&router, &a, &s4), dep("v1"));
    assert_eq!(router.purge_idle_pins(), 0);
}

#[test]
fn turning_affinity_off_drops_pins_and_purge_removes_idle_ones() {
    let (router, clock, a) = manual_router();
    let affinity = SessionAffinity {
        idle_timeout: Duration::from_secs(10),
    };
    router.set_session_affinity(&a, Some(affinity)).unwrap();
    for n in 0..5 {
        drop(router.route(&a, Some(&session(&format!("s{n}")))).unwrap());
    }
    clock.advance(Duration::from_secs(11));
    drop(router.route(&a, Some(&session("fresh"))).unwrap());
    assert_eq!(router.purge_idle_pins(), 5);
    router.set_session_affinity(&a, None).unwrap();
    assert!(!router.release_session(&a, &session("fresh")).unwrap());
}

#[test]
fn traffic_control_maps_errors_into_core() {
    let (router, a) = setup();
    futures::executor::block_on(async {
        let control: &dyn TrafficControl = &router;
        control.register(&a, &dep("v4")).await.unwrap();
        assert_eq!(
            control.register(&a, &dep("v4")).await.unwrap_err(),
            TrafficError::AlreadyRegistered {
                deployment: dep("v4"),
                agent: a.clone()
            }
        );
        control
            .set_split(
                &a,
                &Split::canary(dep("v1"), dep("v4"), bps(1_000)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            control.start_drain(&dep("v4")).await.unwrap_err(),
            TrafficError::StillRouted {
                deployment: dep("v4"),
                agent: a.clone()
            }
        );
        control.rollback(&a).await.unwrap();
        control.start_drain(&dep("v4")).await.unwrap();
        assert_eq!(
            control.promote(&a, &dep("v4")).await.unwrap_err(),
            TrafficError::Draining {
                deployment: dep("v4")
            }
        );
        let status = control.drain_status(&dep("v4")).await.unwrap();
        assert!(status.is_empty());
        let report = control.close_drain(&dep("v4")).await.unwrap();
        assert!(report.clean);
        control.retire(&dep("v4")).await.unwrap();
        assert_eq!(
            control.retire(&dep("v4")).await.unwrap_err(),
            TrafficError::UnknownDeployment {
                deployment: dep("v4")
            }
        );
        assert_eq!(
            control
                .pin_session(&a, &session("s"), &dep("v1"))
                .await
                .unwrap_err(),
            TrafficError::NoSessionAffinity { agent: a.clone() }
        );
        assert_eq!(
            control.rollback(&agent("ghost")).await.unwrap_err(),
            TrafficError::UnknownAgent {
                agent: agent("ghost")
            }
        );
        assert_eq!(control.in_flight(&dep("v1")), 0);
    });
}

#[test]
fn changes_are_not_lost_while_agents_are_added() {
    let (router, a) = setup();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for n in 0..300 {
                let other = agent(&format!("new-{n}"));
                router
                    .register(&other, &dep(&format!("new-{n}-v1")))
                    .unwrap();
                router
                    .promote(&other, &dep(&format!("new-{n}-v1")))
                    .unwrap();
            }
        });
        for round in 0..2_000 {
            let target = if round % 2 == 0 { "v2" } else { "v1" };
            router.promote(&a, &dep(target)).unwrap();
            // Visible to every reader as soon as the call returns, table copies or not.
            assert_eq!(routed(&router, &a, &session("s")), dep(target));
            assert_eq!(
                router.reader().route(&a, None).unwrap().deployment(),
                &dep(target)
            );
        }
    });
    for n in 0..300 {
        assert_eq!(
            routed(&router, &agent(&format!("new-{n}")), &session("s")),
            dep(&format!("new-{n}-v1"))
        );
    }
}

#[test]
fn a_reader_sees_every_change_and_drain_as_soon_as_it_returns() {
    let (router, a) = setup();
    let mut reader = router.reader();
    let s = session("s");
    assert_eq!(reader.route(&a, Some(&s)).unwrap().deployment(), &dep("v1"));
    router.promote(&a, &dep("v2")).unwrap();
    assert_eq!(reader.route(&a, Some(&s)).unwrap().deployment(), &dep("v2"));
    router.set_canary(&a, &dep("v3"), bps(10_000)).unwrap();
    assert_eq!(reader.route(&a, Some(&s)).unwrap().deployment(), &dep("v3"));
    router.rollback(&a).unwrap();
    let decision = reader.route(&a, None).unwrap();
    assert_eq!(decision.deployment(), &dep("v2"));
    assert_eq!(
        decision.generation(),
        router.agent_route(&a).unwrap().generation()
    );
    drop(decision);

    // A decision made before a drain holds it open; none is made after it closes.
    let held = reader.route(&a, None).unwrap();
    router.promote(&a, &dep("v1")).unwrap();
    let report = router.drain(&dep("v2"), Duration::from_millis(10)).unwrap();
    assert_eq!(report.still_in_flight, 1, "{report:?}");
    for n in 0..100 {
        let s = session(&format!("after-{n}"));
        assert_eq!(reader.route(&a, Some(&s)).unwrap().deployment(), &dep("v1"));
    }
    drop(held);
    assert_eq!(router.in_flight(&dep("v2")), 0);
}

#[test]
fn a_reader_routes_ids_built_afresh_for_every_message() {
    let router = Router::new();
    for n in 0..3 {
        let a = agent(&format!("agent-{n}"));
        router.register(&a, &dep(&format!("agent-{n}-v1"))).unwrap();
        router.promote(&a, &dep(&format!("agent-{n}-v1"))).unwrap();
    }
    let mut reader = router.reader();
    for round in 0..1_000 {
        let n = round % 3;
        // A new allocation every time, as a host parsing ids off the wire would make.
        let fresh = agent(&format!("agent-{n}"));
        let decision = reader.route(&fresh, Some(&session("s"))).unwrap();
        assert_eq!(decision.deployment(), &dep(&format!("agent-{n}-v1")));
    }
    assert!(matches!(
        reader.route(&agent("agent-9"), None),
        Err(RouteError::UnknownAgent { .. })
    ));
    // An agent registered after the reader first missed it is found.
    router
        .register(&agent("agent-9"), &dep("agent-9-v1"))
        .unwrap();
    router
        .promote(&agent("agent-9"), &dep("agent-9-v1"))
        .unwrap();
    assert_eq!(
        reader.route(&agent("agent-9"), None).unwrap().deployment(),
        &dep("agent-9-v1")
    );
}
