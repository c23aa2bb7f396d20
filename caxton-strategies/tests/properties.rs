//! Invariants over random observations and operator commands.

use std::time::Duration;

use caxton_core::{DeploymentId, Timestamp, Weight};
use caxton_strategies::builtin::{Canary, Rainbow};
use caxton_strategies::config::{CanaryConfig, CanaryStep, CanarySteps, Gates, RainbowConfig};
use caxton_strategies::{
    Command, Directive, Judge, Observations, RolloutContext, StepInput,
    Strategy as RolloutStrategy, ValidationVerdict, WarmUpReport,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn command() -> impl proptest::strategy::Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Pause),
        Just(Command::Resume),
        Just(Command::PromoteStep),
        Just(Command::PromoteFully),
        Just(Command::Abort {
            reason: "random".into()
        }),
    ]
}

/// Invariants of whole rollouts, run through the simulator.
#[cfg(feature = "sim")]
mod simulated {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use caxton_core::{AuditAction, DeploymentStore, ListQuery};
    use caxton_strategies::sim::{
        MoveCause, SessionMode, SessionModel, Simulation, SimulationRun, TrafficAction,
    };
    use caxton_strategies::{EventLog, Outcome, RolloutEvent, RolloutSpec};

    use super::*;

    const KINDS: [&str; 6] = [
        "direct",
        "blue-green",
        "canary",
        "shadow",
        "rainbow",
        "rainbow-ramp",
    ];

    fn spec_for(kind: &str, forced_drain_minutes: u64) -> RolloutSpec {
        let gates = "  rollback_on: [error_rate > 1%, p99 > 150ms]\n  max_extension: 5m\n  pause_timeout: 30m\n";
        let yaml = match kind {
            "direct" => "deployment:\n  strategy: direct\n".to_owned(),
            "blue-green" => format!("deployment:\n  strategy: blue-green\n{gates}"),
            "canary" => format!(
                "deployment:\n  strategy: canary\n  stages:\n    - canary: {{ weight: 10%, hold: 5m }}\n    - canary: {{ weight: 50%, hold: 5m }}\n{gates}"
            ),
            "shadow" => format!("deployment:\n  strategy: shadow\n  duration: 10m\n{gates}"),
            "rainbow-ramp" => format!(
                "deployment:\n  strategy: rainbow\n  forced_drain_after: {forced_drain_minutes}m\n  stages:\n    - canary: {{ weight: 10%, hold: 5m }}\n    - canary: {{ weight: 50%, hold: 5m }}\n{gates}"
            ),
            _ => format!(
                "deployment:\n  strategy: rainbow\n  forced_drain_after: {forced_drain_minutes}m\n{gates}"
            ),
        };
        RolloutSpec::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn profile() -> impl proptest::strategy::Strategy<Value = String> {
        (
            0u32..60,
            10u32..300,
            prop::sample::select(vec![0.05, 1.0, 50.0]),
            0u32..30,
        )
            .prop_map(|(errors_per_mille, p99, rps, mismatch_per_mille)| {
                format!(
                    "error_rate={}%,p99={p99}ms,rps={rps},mismatch={}%",
                    f64::from(errors_per_mille) / 10.0,
                    f64::from(mismatch_per_mille) / 10.0
                )
            })
    }

    fn commands() -> impl proptest::strategy::Strategy<Value = Vec<(u64, Command)>> {
        prop::collection::vec((0u64..7_200, command()), 0..4)
    }

    #[derive(Debug, Clone)]
    struct Case {
        kind: &'static str,
        baseline: String,
        candidate: String,
        commands: Vec<(u64, Command)>,
        seed: u64,
        forced_drain_minutes: u64,
        validation_passes: bool,
        session_mode: SessionMode,
    }

    fn case_of(kinds: Vec<&'static str>) -> impl proptest::strategy::Strategy<Value = Case> {
        (
            prop::sample::select(kinds),
            profile(),
            profile(),
            commands(),
            any::<u64>(),
            5u64..180,
            prop::bool::weighted(0.9),
            prop::sample::select(vec![SessionMode::Stateless, SessionMode::Sessions]),
        )
            .prop_map(
                |(
                    kind,
                    baseline,
                    candidate,
                    commands,
                    seed,
                    forced_drain_minutes,
                    validation_passes,
                    session_mode,
                )| Case {
                    kind,
                    baseline,
                    candidate,
                    commands,
                    seed,
                    forced_drain_minutes,
                    validation_passes,
                    session_mode,
                },
            )
    }

    fn run(case: &Case) -> (SimulationRun, Vec<RolloutEvent>) {
        let mut simulation = Simulation::new(
            spec_for(case.kind, case.forced_drain_minutes),
            case.baseline.parse().unwrap(),
            case.candidate.parse().unwrap(),
        )
        .seed(case.seed)
        .session_mode(case.session_mode)
        .sessions(SessionModel {
            arrivals_per_sec: 0.2,
            mean_length: Duration::from_secs(600),
        });
        if !case.validation_passes {
            simulation = simulation.validation(ValidationVerdict::failed("refused"));
        }
        for (after, command) in &case.commands {
            simulation = simulation.command(Duration::from_secs(*after), command.clone());
        }
        let log = EventLog::new();
        let run =
            futures::executor::block_on(simulation.run_with_joints(Some(Arc::new(log.clone()))))
                .expect("the simulation starts");
        (run, log.events())
    }

    fn promoted_at(run: &SimulationRun) -> Option<Timestamp> {
        run.traffic
            .actions()
            .into_iter()
            .find_map(|(at, action)| match action {
                TrafficAction::Promoted(d) if d == run.candidate => Some(at),
                _ => None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn the_driver_always_terminates_in_promoted_rolled_back_or_aborted(case in case_of(KINDS.to_vec())) {
            let (run, events) = run(&case);
            prop_assert!(matches!(run.report.outcome.as_str(), "promoted" | "rolled_back" | "aborted"));
            prop_assert!(run.report.steps < 100_000, "{} steps", run.report.steps);
            let last = events.last().expect("events");
            prop_assert_eq!(last.kind.name(), "finished");
            prop_assert_eq!(events.iter().filter(|e| e.kind.name() == "finished").count(), 1);
            // Whatever the outcome, exactly the winner serves.
            let serving = run.traffic.production(&run.agent);
            match run.report.outcome {
                Outcome::Promoted => prop_assert_eq!(serving, Some(run.candidate.clone())),
                _ => prop_assert_eq!(serving, Some(run.baseline.clone())),
            }
        }

        #[test]
        fn split_weights_always_sum_to_100_percent(case in case_of(KINDS.to_vec())) {
            let (run, _) = run(&case);
            for (_, action) in run.traffic.actions() {
                if let TrafficAction::Split(split) = action {
                    let sum: u32 = split.entries().iter().map(|e| u32::from(e.weight.bps())).sum();
                    prop_assert_eq!(sum, 10_000);
                    for entry in split.entries() {
                        prop_assert!(entry.deployment == run.baseline || entry.deployment == run.candidate);
                    }
                }
            }
        }

        #[test]
        fn an_agent_never_has_more_than_one_production(case in case_of(KINDS.to_vec())) {
            let (run, _) = run(&case);
            let mut audit = Vec::new();
            for id in [&run.baseline, &run.candidate] {
                audit.extend(futures::executor::block_on(run.store.history(&run.agent, id)).unwrap());
            }
            audit.sort_by_key(|e| e.seq);
            let mut production: BTreeMap<DeploymentId, bool> = BTreeMap::new();
            for event in audit {
                match &event.action {
                    // Each of these is one atomic step that also demotes the one it names.
                    AuditAction::Promoted { previous } => {
                        if let Some(previous) = previous {
                            production.insert(previous.clone(), false);
                        }
                        production.insert(event.deployment.clone(), true);
                    }
                    AuditAction::RestoredByRollback { rolled_back } => {
                        production.insert(rolled_back.clone(), false);
                        production.insert(event.deployment.clone(), true);
                    }
                    AuditAction::Demoted { .. } => {
                        production.insert(event.deployment.clone(), false);
                    }
                    AuditAction::Transition { to, .. } if to.is_terminal() => {
                        production.insert(event.deployment.clone(), false);
                    }
                    _ => {}
                }
                let count = production.values().filter(|p| **p).count();
                prop_assert!(count <= 1, "{} productions after {:?}", count, event);
            }
            let page = futures::executor::block_on(run.store.list(&run.agent, &ListQuery::new().include_deleted(true))).unwrap();
            prop_assert!(page.items.iter().filter(|d| d.is_production).count() <= 1);
        }

        #[test]
        fn a_rolled_back_version_never_regains_traffic(case in case_of(KINDS.to_vec())) {
            let (run, _) = run(&case);
            let actions = run.traffic.actions();
            let out_at = actions.iter().position(|(_, a)| {
                matches!(a, TrafficAction::DrainClosed(d) | TrafficAction::Retired(d) if *d == run.candidate)
            });
            if let Some(out_at) = out_at {
                for (_, action) in &actions[out_at..] {
                    let regains = match action {
                        TrafficAction::Split(split) => split.weight_of(&run.candidate).bps() > 0,
                        TrafficAction::Promoted(d) | TrafficAction::Registered(d) => *d == run.candidate,
                        TrafficAction::Shadow(Some(shadow)) => shadow.deployment == run.candidate,
                        _ => false,
                    };
                    prop_assert!(!regains, "{:?} after the candidate was taken out", action);
                }
            }
            if run.report.outcome != Outcome::Promoted {
                let split = run.traffic.split(&run.agent).unwrap();
                prop_assert_eq!(split.weight_of(&run.candidate), Weight::ZERO);
                prop_assert!(run.traffic.shadow(&run.agent).is_none());
            }
        }

        #[test]
        fn a_rainbow_session_keeps_its_version_until_it_ends_or_is_forced(case in case_of(vec!["rainbow", "rainbow-ramp"])) {
            let (run, events) = run(&case);
            let deadline = promoted_at(&run).map(|at| at + Duration::from_secs(case.forced_drain_minutes * 60));
            let operator_forced_at = events.iter().find_map(|e| match &e.kind {
                caxton_strategies::EventKind::CommandReceived { command }
                    if command.starts_with("promote") => Some(run.report.started_at + Duration::from_secs_f64(e.at_s)),
                _ => None,
            });
            for moved in run.traffic.session_moves() {
                prop_assert!(matches!(moved.cause, MoveCause::ForcedDrain | MoveCause::Retired));
                if moved.from == run.baseline {
                    let forced_by_deadline = deadline.is_some_and(|d| moved.at >= d);
                    let forced_by_operator = operator_forced_at.is_some_and(|at| moved.at >= at);
                    prop_assert!(
                        forced_by_deadline || forced_by_operator,
                        "a baseline session moved at {} before the forced-drain deadline {:?}",
                        moved.at,
                        deadline
                    );
                } else {
                    prop_assert_eq!(&moved.from, &run.candidate);
                    prop_assert!(run.report.outcome != Outcome::Promoted, "candidate sessions move only on rollback");
                }
            }
        }
    }
}

fn window(requests: u64, errors: u64, latency: Vec<f64>) -> caxton_core::MetricWindow {
    caxton_core::MetricWindow {
        requests,
        errors,
        latency_ms: latency,
        ..caxton_core::MetricWindow::default()
    }
}

#[derive(Debug, Clone)]
struct Tick {
    candidate: (u64, u64, u32),
    baseline: (u64, u64, u32),
    command: Option<Command>,
}

fn tick() -> impl proptest::strategy::Strategy<Value = Tick> {
    (
        (0u64..400, 0u64..20, 5u32..200),
        (0u64..4_000, 0u64..40, 5u32..200),
        prop::option::weighted(0.15, command()),
    )
        .prop_map(|(candidate, baseline, command)| Tick {
            candidate,
            baseline,
            command,
        })
}

/// Drives a weighted-step `strategy` with random observations and commands until it
/// finishes, checking that its splits follow `weights` upwards and stop after a
/// rollback; returns every directive in order.
fn drive_steps(
    strategy: &mut dyn RolloutStrategy,
    context: &RolloutContext,
    weights: &[u16],
    ticks: Vec<Tick>,
) -> Result<Vec<Directive>, TestCaseError> {
    let mut seen = Vec::new();
    let mut now = Timestamp::EPOCH;
    let mut observations = Observations::default();
    let mut taken_out = false;
    let mut finished = false;
    let mut last_weight = 0u16;
    let mut ticks = ticks.into_iter().cycle().take(5_000);
    for _ in 0..5_000 {
        let commands: Vec<Command> = Vec::new();
        let directives = strategy.step(StepInput {
            now,
            context,
            observations: &observations,
            commands: &commands,
        });
        observations = Observations::default();
        let mut wake = None;
        for directive in directives {
            prop_assert!(!finished, "directive after finish: {:?}", directive);
            seen.push(directive.clone());
            match directive {
                Directive::Validate { .. } => {
                    observations.validation = Some(ValidationVerdict::passed("ok"))
                }
                Directive::WarmUp { .. } => observations.warm_up = Some(WarmUpReport::ready("ok")),
                Directive::SetSplit(split) => {
                    prop_assert!(!taken_out);
                    let sum: u32 = split
                        .entries()
                        .iter()
                        .map(|e| u32::from(e.weight.bps()))
                        .sum();
                    prop_assert_eq!(sum, 10_000);
                    let w = split.weight_of(&context.candidate).bps();
                    prop_assert!(weights.contains(&w), "weight {} not a step", w);
                    prop_assert!(w > last_weight, "weights only increase");
                    last_weight = w;
                }
                Directive::Promote => prop_assert!(!taken_out),
                Directive::RollBack { .. } => taken_out = true,
                Directive::WaitUntil(at) => wake = Some(at),
                Directive::Finish(_) => finished = true,
                _ => {}
            }
        }
        if finished {
            break;
        }
        if observations.validation.is_some() || observations.warm_up.is_some() {
            continue;
        }
        let next = wake
            .filter(|w| *w > now)
            .unwrap_or(now + Duration::from_millis(1));
        let tick = ticks.next().expect("cycled");
        let sample = |(requests, errors, latency): (u64, u64, u32)| {
            window(
                requests,
                errors.min(requests),
                vec![f64::from(latency); requests.min(30) as usize],
            )
        };
        observations
            .windows
            .insert(context.candidate.clone(), sample(tick.candidate));
        if let Some(baseline) = &context.baseline {
            observations
                .windows
                .insert(baseline.clone(), sample(tick.baseline));
        }
        now = next;
        if let Some(command) = tick.command {
            let directives = strategy.step(StepInput {
                now,
                context,
                observations: &observations,
                commands: &[command],
            });
            observations = Observations::default();
            for directive in directives {
                seen.push(directive.clone());
                match directive {
                    Directive::SetSplit(split) => {
                        prop_assert!(!taken_out);
                        let w = split.weight_of(&context.candidate).bps();
                        prop_assert!(weights.contains(&w) && w > last_weight);
                        last_weight = w;
                    }
                    Directive::Promote => prop_assert!(!taken_out),
                    Directive::RollBack { .. } => taken_out = true,
                    Directive::Finish(_) => finished = true,
                    _ => {}
                }
            }
            if finished {
                break;
            }
        }
    }
    prop_assert!(finished, "the rollout finished within 5000 steps");
    Ok(seen)
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<CanaryStep>> {
    prop::collection::btree_set(1u32..100, 1..5).prop_flat_map(|weights| {
        let weights: Vec<u32> = weights.into_iter().collect();
        let n = weights.len();
        prop::collection::vec(1u64..20, n).prop_map(move |holds| {
            weights
                .iter()
                .zip(holds)
                .map(|(w, minutes)| {
                    CanaryStep::new(
                        Weight::from_bps(w * 100).unwrap(),
                        Duration::from_secs(minutes * 60),
                    )
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn canary_splits_follow_the_steps_and_stop_after_a_rollback(
        steps in steps(),
        ticks in prop::collection::vec(tick(), 1..400),
    ) {
        let context = RolloutContext::new(
            caxton_core::AgentId::new("a").unwrap(),
            DeploymentId::new("cand").unwrap(),
            Some(DeploymentId::new("base").unwrap()),
        );
        let weights: Vec<u16> = steps.iter().map(|s| s.weight.bps()).collect();
        let gates = Gates {
            rollback_on: vec!["error_rate > 2%".parse().unwrap(), "p99 > 150ms".parse().unwrap()],
            min_requests: 50,
            max_extension: Duration::from_secs(300),
            pause_timeout: Duration::from_secs(1_800),
            judge: Some(Judge::default()),
            ..Gates::default()
        };
        let mut canary = Canary::new(CanaryConfig {
            steps: CanarySteps::new(steps).unwrap(),
            gates,
            ..CanaryConfig::default()
        })
        .unwrap();
        drive_steps(&mut canary, &context, &weights, ticks)?;
    }

    #[test]
    fn rainbow_ramps_follow_the_steps_and_set_the_idle_timeout_once_before_any_traffic(
        steps in steps(),
        ticks in prop::collection::vec(tick(), 1..400),
    ) {
        let context = RolloutContext::new(
            caxton_core::AgentId::new("a").unwrap(),
            DeploymentId::new("cand").unwrap(),
            Some(DeploymentId::new("base").unwrap()),
        );
        let weights: Vec<u16> = steps.iter().map(|s| s.weight.bps()).collect();
        let gates = Gates {
            // Looser than the canary's, so that many ramps get past their first step.
            rollback_on: vec!["error_rate > 10%".parse().unwrap()],
            min_requests: 50,
            max_extension: Duration::from_secs(300),
            pause_timeout: Duration::from_secs(1_800),
            judge: None,
            ..Gates::default()
        };
        let mut rainbow = Rainbow::new(RainbowConfig {
            steps: Some(CanarySteps::new(steps).unwrap()),
            gates,
            forced_drain_after: Duration::from_secs(3_600),
            ..RainbowConfig::default()
        })
        .unwrap();
        let seen = drive_steps(&mut rainbow, &context, &weights, ticks)?;
        let affinity: Vec<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d, Directive::SessionAffinity(_)))
            .map(|(i, _)| i)
            .collect();
        prop_assert!(affinity.len() <= 1, "the idle timeout is set once");
        let first_traffic = seen
            .iter()
            .position(|d| matches!(d, Directive::SetSplit(_) | Directive::Promote));
        if let Some(first) = first_traffic {
            prop_assert!(affinity.first().is_some_and(|a| *a < first), "the idle timeout comes first");
        }
        // The candidate is promoted only after the ramp, and the split never moves after.
        if let Some(promoted) = seen.iter().position(|d| matches!(d, Directive::Promote)) {
            prop_assert!(!seen[promoted..].iter().any(|d| matches!(d, Directive::SetSplit(_))));
        }
    }
}
