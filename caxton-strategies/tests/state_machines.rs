//! The strategies as pure state machines, fed by hand, and the driver with a strategy
//! written outside the crate.

use std::time::Duration;

use caxton_core::{AgentId, DeploymentId, DrainPhase, DrainStatus, MetricWindow, Timestamp};
use caxton_strategies::builtin::{Canary, Rainbow};
use caxton_strategies::config::{CanaryConfig, CanaryStep, CanarySteps, Gates, RainbowConfig};
use caxton_strategies::{
    Command, Directive, EventKind, Judge, Observations, Outcome, ReasonKind, RolloutContext,
    StepInput, Strategy, ValidationVerdict, WarmUpReport,
};

fn id(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

fn context() -> RolloutContext {
    RolloutContext::new(AgentId::new("processor").unwrap(), id("v2"), Some(id("v1")))
}

fn at(minutes: u64) -> Timestamp {
    Timestamp::from_millis(minutes * 60_000)
}

fn window(requests: u64, errors: u64, latency: Vec<f64>) -> MetricWindow {
    MetricWindow {
        requests,
        errors,
        latency_ms: latency,
        ..MetricWindow::default()
    }
}

/// Steps `strategy` through validation and warm-up; returns the directives of the step
/// that started traffic.
fn start(strategy: &mut dyn Strategy, context: &RolloutContext) -> Vec<Directive> {
    let step = |strategy: &mut dyn Strategy, observations: Observations| {
        strategy.step(StepInput {
            now: at(0),
            context,
            observations: &observations,
            commands: &[],
        })
    };
    let first = step(strategy, Observations::default());
    assert!(matches!(first[0], Directive::Validate { .. }), "{first:?}");
    let second = step(
        strategy,
        Observations {
            validation: Some(ValidationVerdict::passed("ok")),
            ..Observations::default()
        },
    );
    assert!(matches!(second[0], Directive::WarmUp { .. }), "{second:?}");
    step(
        strategy,
        Observations {
            warm_up: Some(WarmUpReport::ready("warm")),
            ..Observations::default()
        },
    )
}

fn observe(
    strategy: &mut dyn Strategy,
    context: &RolloutContext,
    now: Timestamp,
    candidate: MetricWindow,
    baseline: MetricWindow,
    commands: &[Command],
) -> Vec<Directive> {
    let mut observations = Observations::default();
    observations
        .windows
        .insert(context.candidate.clone(), candidate);
    if let Some(b) = &context.baseline {
        observations.windows.insert(b.clone(), baseline);
    }
    strategy.step(StepInput {
        now,
        context,
        observations: &observations,
        commands,
    })
}

fn emitted(directives: &[Directive], name: &str) -> bool {
    directives
        .iter()
        .any(|d| matches!(d, Directive::Emit(kind) if kind.name() == name))
}

fn one_step_canary(gates: Gates) -> Canary {
    let steps = CanarySteps::new(vec![CanaryStep::new(
        "5%".parse().unwrap(),
        Duration::from_secs(300),
    )])
    .unwrap();
    Canary::new(CanaryConfig {
        steps,
        gates,
        ..CanaryConfig::default()
    })
    .unwrap()
}

#[test]
fn canary_inconclusive_judgement_extends_the_hold_then_pauses_for_a_person() {
    let gates = Gates {
        min_requests: 10,
        max_extension: Duration::from_secs(120),
        judge: Some(Judge::new(0.95, 0.10).unwrap()),
        ..Gates::default()
    };
    let context = context();
    let mut canary = one_step_canary(gates);
    let started = start(&mut canary, &context);
    assert!(
        matches!(&started[0], Directive::SetSplit(split) if split.weight_of(&context.candidate).bps() == 500)
    );

    // About 10% slower: clearly worse than the baseline, not clearly beyond 10%.
    let baseline: Vec<f64> = (0..60).map(|i| 10.0 + 0.5 * f64::from(i)).collect();
    let candidate: Vec<f64> = baseline.iter().map(|v| v * 1.1 + 3.0).collect();
    let mut out = observe(
        &mut canary,
        &context,
        at(1),
        window(60, 0, candidate),
        window(600, 0, baseline),
        &[],
    );
    for minute in 2..=5 {
        out = observe(
            &mut canary,
            &context,
            at(minute),
            window(0, 0, vec![]),
            window(0, 0, vec![]),
            &[],
        );
    }
    assert!(emitted(&out, "hold_extended"), "{out:?}");
    assert!(out.iter().any(|d| matches!(d, Directive::Emit(EventKind::HoldExtended { reason, .. }) if reason.contains("inconclusive"))));
    assert!(!out.iter().any(|d| matches!(
        d,
        Directive::SetSplit(_) | Directive::Promote | Directive::RollBack { .. }
    )));
    out = observe(
        &mut canary,
        &context,
        at(6),
        window(0, 0, vec![]),
        window(0, 0, vec![]),
        &[],
    );
    assert!(emitted(&out, "hold_extended"));
    out = observe(
        &mut canary,
        &context,
        at(7),
        window(0, 0, vec![]),
        window(0, 0, vec![]),
        &[],
    );
    assert!(emitted(&out, "paused"), "{out:?}");
    // A person decides to go on: the step completes with full promotion.
    out = observe(
        &mut canary,
        &context,
        at(8),
        window(0, 0, vec![]),
        window(0, 0, vec![]),
        &[Command::PromoteStep],
    );
    assert!(
        out.iter().any(|d| matches!(d, Directive::Promote)),
        "{out:?}"
    );
}

#[test]
fn canary_never_promotes_or_rolls_back_on_no_data() {
    let gates = Gates {
        rollback_on: vec!["error_rate > 1%".parse().unwrap()],
        max_extension: Duration::from_secs(600),
        pause_timeout: Duration::from_secs(3_600),
        ..Gates::default()
    };
    let context = context();
    let mut canary = one_step_canary(gates);
    start(&mut canary, &context);
    let mut finished = None;
    for minute in 1..=120 {
        // A handful of requests, all failing: far too few to judge.
        let out = observe(
            &mut canary,
            &context,
            at(minute),
            window(1, 1, vec![5.0]),
            window(100, 0, vec![5.0]),
            &[],
        );
        assert!(
            !out.iter().any(|d| matches!(
                d,
                Directive::Promote | Directive::SetSplit(_) | Directive::Finish(Outcome::Promoted)
            )),
            "minute {minute}: {out:?}"
        );
        assert!(
            !out.iter()
                .any(|d| matches!(d, Directive::Finish(Outcome::RolledBack { .. })))
        );
        if let Some(Directive::Finish(outcome)) =
            out.iter().find(|d| matches!(d, Directive::Finish(_)))
        {
            finished = Some((minute, outcome.clone()));
            break;
        }
    }
    let (minute, outcome) = finished.expect("the unanswered pause ends the rollout");
    assert_eq!(outcome.reason().unwrap().kind, ReasonKind::PauseTimeout);
    // 5 m hold + 10 m of extensions + 60 m of pause.
    assert_eq!(minute, 75);
}

#[test]
fn rainbow_closes_the_oldest_versions_beyond_max_live_versions() {
    let context = context().with_older(vec![id("v0a"), id("v0b")]);
    let mut rainbow = Rainbow::new(RainbowConfig {
        max_live_versions: 3,
        ..RainbowConfig::default()
    })
    .unwrap();
    let out = start(&mut rainbow, &context);
    assert!(matches!(out[0], Directive::SessionAffinity(Some(_))));
    let retired: Vec<(&DeploymentId, bool)> = out
        .iter()
        .filter_map(|d| match d {
            Directive::Retire { deployment, forced } => Some((deployment, *forced)),
            _ => None,
        })
        .collect();
    // Four versions would be live; the oldest goes at once.
    assert_eq!(retired, [(&id("v0a"), true)]);
}

#[test]
fn rainbow_retires_an_old_version_once_its_sessions_have_ended() {
    let context = context();
    let mut rainbow = Rainbow::new(RainbowConfig::default()).unwrap();
    start(&mut rainbow, &context);
    let drains = |pinned| {
        let mut observations = Observations::default();
        observations.drains.insert(
            id("v1"),
            DrainStatus {
                phase: DrainPhase::Active,
                in_flight: 0,
                pinned_sessions: pinned,
            },
        );
        observations
    };
    let busy = drains(4);
    let out = rainbow.step(StepInput {
        now: at(1),
        context: &context,
        observations: &busy,
        commands: &[],
    });
    assert!(
        matches!(out.last(), Some(Directive::WaitUntil(_))),
        "{out:?}"
    );
    let empty = drains(0);
    let out = rainbow.step(StepInput {
        now: at(2),
        context: &context,
        observations: &empty,
        commands: &[],
    });
    assert!(out.iter().any(
        |d| matches!(d, Directive::Retire { deployment, forced: false } if *deployment == id("v1"))
    ));
    assert_eq!(out.last(), Some(&Directive::Finish(Outcome::Promoted)));
}
fn ramp(gates: Gates) -> Rainbow {
    let step = |weight: &str, minutes: u64| {
        CanaryStep::new(weight.parse().unwrap(), Duration::from_secs(minutes * 60))
    };
    Rainbow::new(RainbowConfig {
        steps: Some(
            CanarySteps::new(vec![step("5%", 5), step("25%", 10), step("50%", 10)]).unwrap(),
        ),
        gates,
        ..RainbowConfig::default()
    })
    .unwrap()
}

fn ramp_gates() -> Gates {
    Gates {
        rollback_on: vec!["error_rate > 1%".parse().unwrap()],
        min_requests: 100,
        max_extension: Duration::from_secs(120),
        judge: None,
        ..Gates::default()
    }
}

/// The candidate's weight in the split a step set, in basis points.
fn split_set(directives: &[Directive], context: &RolloutContext) -> Option<u16> {
    directives.iter().find_map(|d| match d {
        Directive::SetSplit(split) => Some(split.weight_of(&context.candidate).bps()),
        _ => None,
    })
}

fn position(directives: &[Directive], wanted: impl Fn(&Directive) -> bool) -> Option<usize> {
    directives.iter().position(wanted)
}

#[test]
fn rainbow_ramps_new_sessions_and_checks_the_gates_before_each_increase() {
    let context = context();
    let mut rainbow = ramp(ramp_gates());
    let started = start(&mut rainbow, &context);
    // The idle timeout is set before the candidate takes a session; 5 % of new sessions
    // go to it; nothing is promoted yet.
    assert!(
        matches!(started[0], Directive::SessionAffinity(Some(_))),
        "{started:?}"
    );
    assert_eq!(split_set(&started, &context), Some(500));
    assert!(started.iter().any(|d| matches!(d, Directive::Emit(EventKind::StageStarted { stage, .. }) if stage == "rainbow.5_percent")));
    assert!(!started.iter().any(|d| matches!(d, Directive::Promote)));

    let healthy = || window(60, 0, vec![20.0; 60]);
    let mut weights = vec![500];
    let mut promoted_at = None;
    for minute in 1..=25 {
        let out = observe(
            &mut rainbow,
            &context,
            at(minute),
            healthy(),
            healthy(),
            &[],
        );
        assert!(
            !out.iter().any(|d| matches!(
                d,
                Directive::SessionAffinity(_) | Directive::RollBack { .. }
            )),
            "minute {minute}: {out:?}"
        );
        if let Some(weight) = split_set(&out, &context) {
            // The gates were checked, and passed, before the increase.
            let checked = position(
                &out,
                |d| matches!(d, Directive::Emit(kind) if kind.name() == "checked"),
            );
            let split = position(&out, |d| matches!(d, Directive::SetSplit(_)));
            assert!(checked < split, "minute {minute}: {out:?}");
            weights.push(weight);
            assert!([5, 15].contains(&minute), "increase at minute {minute}");
        }
        if out.iter().any(|d| matches!(d, Directive::Promote)) {
            promoted_at = Some(minute);
            assert!(emitted(&out, "checked"), "{out:?}");
            break;
        }
    }
    assert_eq!(weights, [500, 2_500, 5_000]);
    assert_eq!(promoted_at, Some(25), "switch after 5 + 10 + 10 minutes");
}

#[test]
fn rainbow_ramp_holds_for_data_and_rolls_back_on_a_gate() {
    let context = context();
    let mut rainbow = ramp(ramp_gates());
    start(&mut rainbow, &context);
    // Too few requests at the end of the hold: the share of new sessions stays at 5 %.
    let mut out = Vec::new();
    for minute in 1..=5 {
        out = observe(
            &mut rainbow,
            &context,
            at(minute),
            window(5, 0, vec![20.0; 5]),
            window(500, 0, vec![20.0; 50]),
            &[],
        );
        assert_eq!(split_set(&out, &context), None, "minute {minute}");
    }
    assert!(emitted(&out, "hold_extended"), "{out:?}");
    // Enough data, and the candidate fails: rolled back at 5 %, never increased.
    let out = observe(
        &mut rainbow,
        &context,
        at(6),
        window(200, 20, vec![20.0; 50]),
        window(500, 0, vec![20.0; 50]),
        &[],
    );
    assert_eq!(split_set(&out, &context), None);
    assert!(
        out.iter().any(|d| matches!(d, Directive::RollBack { .. })),
        "{out:?}"
    );
    let Some(Directive::Finish(outcome)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(outcome.reason().unwrap().kind, ReasonKind::Condition);
    assert!(
        outcome.reason().unwrap().message.contains("rainbow 5%"),
        "{outcome:?}"
    );
}

#[test]
fn rainbow_without_steps_still_switches_at_once() {
    let context = context();
    let mut rainbow = Rainbow::new(RainbowConfig::default()).unwrap();
    let out = start(&mut rainbow, &context);
    assert!(matches!(out[0], Directive::SessionAffinity(Some(_))));
    assert_eq!(split_set(&out, &context), None);
    assert!(
        out.iter().any(|d| matches!(d, Directive::Promote)),
        "{out:?}"
    );
}

/// The driver, on the simulator's joints.
#[cfg(feature = "sim")]
mod with_driver {
    use std::sync::Arc;

    use caxton_core::{
        Clock, CodeLayer, DeploymentStore, LifecycleEvent, ManualClock, MemoryStore, ModelLayer,
        NewDeployment, PromptLayer, ToolsLayer, TrafficControl, VersionTuple,
    };
    use caxton_strategies::sim::{SimChecks, SimTraffic, SyntheticMetrics};
    use caxton_strategies::{Commands, RolloutDriver};

    use super::*;

    fn version(code: &[u8]) -> VersionTuple {
        VersionTuple::new(
            CodeLayer::from_module(code),
            ModelLayer::new("provider", "model", "1"),
            PromptLayer::from_prompt("prompt", &[]),
            ToolsLayer::from_definitions(&serde_json::json!([])),
        )
    }

    struct Joints {
        clock: Arc<dyn Clock>,
        store: Arc<MemoryStore>,
        traffic: SimTraffic,
        agent: AgentId,
    }

    async fn joints() -> Joints {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::auto_advancing(Timestamp::EPOCH));
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        let traffic = SimTraffic::new(clock.clone());
        let agent = AgentId::new("processor").unwrap();
        let v1 = store
            .create(
                NewDeployment::builder(agent.clone(), version(b"v1"))
                    .id(id("v1"))
                    .build(),
            )
            .await
            .unwrap();
        for event in [
            LifecycleEvent::BeginValidation,
            LifecycleEvent::ValidationPassed,
            LifecycleEvent::WarmUpPassed,
        ] {
            store
                .transition(&agent, &v1.id, event, "earlier")
                .await
                .unwrap();
        }
        store
            .promote_if_none(&agent, &v1.id, "first")
            .await
            .unwrap();
        traffic.register(&agent, &v1.id).await.unwrap();
        traffic.promote(&agent, &v1.id).await.unwrap();
        Joints {
            clock,
            store,
            traffic,
            agent,
        }
    }

    fn driver(joints: &Joints) -> RolloutDriver {
        let metrics = SyntheticMetrics::new(joints.traffic.clone(), joints.agent.clone(), 1)
            .with_profile(id("v1"), "rps=10".parse().unwrap())
            .with_profile(id("v2"), "rps=10".parse().unwrap());
        RolloutDriver::builder(
            joints.store.clone(),
            Arc::new(joints.traffic.clone()),
            Arc::new(metrics),
            joints.clock.clone(),
            Arc::new(SimChecks::passing(joints.clock.clone())),
        )
        .max_duration(Duration::from_secs(3_600))
        .build()
    }

    /// A strategy a host might write: straight to production once warm.
    #[derive(Debug, Default)]
    struct Straight {
        stage: u8,
    }

    impl Strategy for Straight {
        fn name(&self) -> &str {
            "straight"
        }

        fn step(&mut self, _input: StepInput<'_>) -> Vec<Directive> {
            self.stage += 1;
            match self.stage {
                1 => vec![Directive::Validate {
                    timeout: Duration::from_secs(5),
                }],
                2 => vec![Directive::WarmUp {
                    timeout: Duration::from_secs(5),
                }],
                _ => vec![Directive::Promote, Directive::Finish(Outcome::Promoted)],
            }
        }
    }

    /// A strategy that never finishes.
    #[derive(Debug)]
    struct Forever;

    impl Strategy for Forever {
        fn name(&self) -> &str {
            "forever"
        }

        fn step(&mut self, input: StepInput<'_>) -> Vec<Directive> {
            vec![Directive::WaitUntil(input.now + Duration::from_secs(600))]
        }
    }

    #[test]
    fn a_strategy_written_by_a_host_runs_through_the_driver() {
        futures::executor::block_on(async {
            let joints = joints().await;
            let new = NewDeployment::builder(joints.agent.clone(), version(b"v2"))
                .id(id("v2"))
                .build();
            let report = driver(&joints)
                .run(new, Box::new(Straight::default()), Commands::none())
                .await
                .unwrap();
            assert_eq!(report.outcome, Outcome::Promoted);
            assert_eq!(report.strategy, "straight");
            let v2 = joints.store.get(&joints.agent, &id("v2")).await.unwrap();
            assert!(v2.is_production);
            assert_eq!(v2.strategy, "straight");
            assert_eq!(joints.traffic.production(&joints.agent), Some(id("v2")));
        });
    }

    #[test]
    fn the_driver_aborts_a_strategy_that_never_finishes() {
        futures::executor::block_on(async {
            let joints = joints().await;
            let new = NewDeployment::builder(joints.agent.clone(), version(b"v2"))
                .id(id("v2"))
                .build();
            let report = driver(&joints)
                .run(new, Box::new(Forever), Commands::none())
                .await
                .unwrap();
            assert_eq!(
                report.outcome.reason().map(|r| r.kind),
                Some(ReasonKind::Timeout)
            );
            assert!(report.duration() > Duration::from_secs(3_600));
            // The candidate never got past Pending: it is hidden, production is untouched.
            let v2 = joints.store.get(&joints.agent, &id("v2")).await.unwrap();
            assert!(v2.is_deleted());
            assert_eq!(
                joints
                    .store
                    .production(&joints.agent)
                    .await
                    .unwrap()
                    .map(|d| d.id),
                Some(id("v1"))
            );
        });
    }

    #[test]
    fn commands_reach_a_rollout_through_the_channel() {
        futures::executor::block_on(async {
            let joints = joints().await;
            let (sender, commands) = Commands::channel();
            sender
                .send(Command::Abort {
                    reason: "operator said so".into(),
                })
                .unwrap();
            let new = NewDeployment::builder(joints.agent.clone(), version(b"v2"))
                .id(id("v2"))
                .build();
            let strategy =
                caxton_strategies::RolloutSpec::from_yaml("deployment:\n  strategy: canary\n")
                    .unwrap()
                    .strategy
                    .build()
                    .unwrap();
            let report = driver(&joints).run(new, strategy, commands).await.unwrap();
            assert_eq!(report.outcome.as_str(), "aborted");
            assert!(
                report
                    .outcome
                    .reason()
                    .unwrap()
                    .message
                    .contains("operator said so")
            );
            drop(sender);
        });
    }

    #[test]
    fn a_first_deployment_is_promoted_without_steps() {
        futures::executor::block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(ManualClock::auto_advancing(Timestamp::EPOCH));
            let store = Arc::new(MemoryStore::with_clock(clock.clone()));
            let traffic = SimTraffic::new(clock.clone());
            let metrics = SyntheticMetrics::new(traffic.clone(), AgentId::new("fresh").unwrap(), 1);
            let driver = RolloutDriver::builder(
                store.clone(),
                Arc::new(traffic.clone()),
                Arc::new(metrics),
                clock.clone(),
                Arc::new(SimChecks::passing(clock.clone())),
            )
            .build();
            for kind in ["canary", "blue-green", "shadow", "rainbow", "direct"] {
                let strategy = caxton_strategies::RolloutSpec::from_yaml(&format!(
                    "deployment:\n  strategy: {kind}\n"
                ))
                .unwrap()
                .strategy
                .build()
                .unwrap();
                let agent = AgentId::new(format!("fresh-{kind}")).unwrap();
                let new = NewDeployment::builder(agent.clone(), version(b"v1"))
                    .id(id(&format!("{kind}-v1")))
                    .build();
                let report = driver.run(new, strategy, Commands::none()).await.unwrap();
                assert_eq!(report.outcome, Outcome::Promoted, "{kind}");
                assert_eq!(report.baseline, None);
                assert_eq!(
                    store.production(&agent).await.unwrap().map(|d| d.id),
                    Some(id(&format!("{kind}-v1")))
                );
                assert_eq!(traffic.production(&agent), Some(id(&format!("{kind}-v1"))));
            }
        });
    }
}
