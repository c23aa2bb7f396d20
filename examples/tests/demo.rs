//! The demo's flow, at the fast pace, with its outcomes asserted: the canary of processor v2
//! is rolled back by the error-rate gate with no order lost, no rainbow session switches
//! version mid-session, and no shadow reply reaches a caller.

use std::sync::Arc;

use caxton_examples::demo::{
    CollectedEvents, Demo, DemoConfig, DemoEvent, DemoSink, Pace, StepKind,
};

#[test]
fn the_demo_runs_as_designed() {
    let events = Arc::new(CollectedEvents::default());
    let sink: Arc<dyn DemoSink> = events.clone();
    let outcome = Demo::new(DemoConfig {
        pace: Pace::Fast,
        ..DemoConfig::default()
    })
    .run(sink)
    .expect("the demo runs");
    assert!(outcome.as_designed(), "problems: {:#?}", outcome.problems);

    // Act 2: the error-rate gate rolled v2 back; every order is accounted for.
    assert_eq!(outcome.canary_outcome, "rolled_back");
    assert_eq!(outcome.canary_reason.as_deref(), Some("condition"));
    assert!(
        outcome.cut_over_us.is_some_and(|us| us < 1_000.0),
        "cut-over {:?} µs",
        outcome.cut_over_us
    );
    assert_eq!(outcome.routed_to_v2_after_cut_over, 0);
    assert!(outcome.orders.sent > 100, "{:?}", outcome.orders);
    assert_eq!(outcome.orders.lost(), 0);
    assert_eq!(
        outcome.orders.sent,
        outcome.orders.replied + outcome.orders.agent_failures + outcome.orders.route_failures
    );
    let v2 = outcome
        .orders
        .by_deployment
        .get("processor-v2")
        .expect("v2 served some orders");
    assert!(v2.app_errors > 0, "v2's regression showed: {v2:?}");

    // Act 3: sessions stayed on their version; both versions served.
    assert_eq!(outcome.rainbow_outcome, "promoted");
    assert!(outcome.sessions_checked >= 8);
    assert_eq!(outcome.sessions_switched, 0);
    assert_eq!(outcome.chat_sessions.get("chat v1"), Some(&4));
    assert_eq!(outcome.chat_sessions.get("chat v2"), Some(&4));

    // Act 4: mirrored, compared, never served.
    assert!(outcome.mirrored > 0);
    assert_eq!(outcome.shadow_equivalent, outcome.mirrored);
    assert_eq!(outcome.shadow_replies_to_callers, 0);

    // The events tell the same story, and the last one says so.
    let events = events.events();
    let error_rate_rollback = events.iter().any(|e| match e {
        DemoEvent::Rollout { act: 2, event } => serde_json::to_value(event).is_ok_and(|v| {
            v["event"] == "rolled_back"
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("error_rate"))
        }),
        _ => false,
    });
    assert!(error_rate_rollback, "a rolled_back event naming error_rate");
    match events.last() {
        Some(DemoEvent::Step(step)) => assert!(
            matches!(&step.kind, StepKind::Finished { outcome, .. } if outcome == "completed")
        ),
        other => panic!("the last event is {other:?}"),
    }
    for event in &events {
        let json = serde_json::to_value(event).expect("events serialize");
        assert!(
            json["event"].is_string() && json["at_s"].is_number(),
            "{json}"
        );
    }
}
