//! Every built-in strategy, end to end in virtual time: the driver, a `MemoryStore`,
//! `SimTraffic` and synthetic metrics.

use std::sync::Arc;
use std::time::Duration;

use caxton_core::{AuditAction, DeploymentStore, LifecycleState};
use caxton_strategies::sim::{
    MoveCause, SessionMode, SessionModel, Simulation, SimulationRun, TrafficAction,
};
use caxton_strategies::{
    Command, EventLog, Outcome, ReasonKind, RolloutEvent, RolloutSpec, ValidationVerdict,
};

const HEALTHY: &str = "error_rate=0.2%,p99=40ms,rps=50";

fn simulation(yaml: &str, candidate: &str) -> Simulation {
    let spec = RolloutSpec::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    Simulation::new(spec, HEALTHY.parse().unwrap(), candidate.parse().unwrap()).seed(11)
}

fn simulate(simulation: Simulation) -> (SimulationRun, Vec<RolloutEvent>) {
    let log = EventLog::new();
    let run = futures::executor::block_on(simulation.run_with_joints(Some(Arc::new(log.clone()))))
        .expect("the simulation starts");
    let events = log.events();
    let last = events.last().expect("events were emitted");
    assert_eq!(last.kind.name(), "finished", "the last event is `finished`");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind.name() == "finished")
            .count(),
        1,
        "exactly one `finished` event"
    );
    (run, events)
}

fn reason_kind(outcome: &Outcome) -> Option<ReasonKind> {
    outcome.reason().map(|r| r.kind)
}

fn state(run: &SimulationRun, id: &caxton_core::DeploymentId) -> LifecycleState {
    futures::executor::block_on(run.store.get(&run.agent, id))
        .unwrap()
        .state
}

fn production(run: &SimulationRun) -> Option<caxton_core::DeploymentId> {
    futures::executor::block_on(run.store.production(&run.agent))
        .unwrap()
        .map(|d| d.id)
}

/// The candidate's weights, in basis points, in the order the splits were set.
fn candidate_weights(run: &SimulationRun) -> Vec<u16> {
    run.traffic
        .actions()
        .into_iter()
        .filter_map(|(_, action)| match action {
            TrafficAction::Split(split) => Some(split.weight_of(&run.candidate).bps()),
            TrafficAction::Promoted(d) if d == run.candidate => Some(10_000),
            _ => None,
        })
        .collect()
}

fn names(events: &[RolloutEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn assert_rolled_back_cleanly(run: &SimulationRun) {
    assert_eq!(production(run), Some(run.baseline.clone()));
    assert_eq!(
        run.traffic.production(&run.agent),
        Some(run.baseline.clone())
    );
    assert_eq!(state(run, &run.candidate), LifecycleState::RolledBack);
    assert_eq!(state(run, &run.baseline), LifecycleState::Running);
    let split = run.traffic.split(&run.agent).unwrap();
    assert_eq!(split.weight_of(&run.baseline).bps(), 10_000);
}

const CANARY: &str = "
deployment:
  strategy: canary
  stages:
    - validate: 30s
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on:
    - error_rate > 1%
    - p99_latency > 100ms
";

/// The README's canary spec with the latency judge turned on.
const CANARY_JUDGED: &str = "
deployment:
  strategy: canary
  stages:
    - validate: 30s
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on:
    - error_rate > 1%
    - p99_latency > 100ms
  judge: { latency: 10% }
";

#[test]
fn canary_promotes_a_healthy_candidate_through_every_step() {
    let (run, events) = simulate(simulation(CANARY_JUDGED, "error_rate=0.2%,p99=40ms"));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(candidate_weights(&run), [500, 2_500, 5_000, 10_000]);
    // The 5 % step holds one minute longer: its 250 latency samples (50 a minute)
    // cannot bound a 99th percentile from above; 299 can, at 95 % confidence.
    assert_eq!(run.report.duration(), Duration::from_secs(26 * 60));
    assert_eq!(production(&run), Some(run.candidate.clone()));
    assert_eq!(state(&run, &run.baseline), LifecycleState::Retired);
    let stages: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            caxton_strategies::EventKind::StageStarted { stage, .. } => Some(stage.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages,
        ["canary.5_percent", "canary.25_percent", "canary.50_percent"]
    );
    // The judge the spec asked for compared candidate and baseline before each increase.
    assert_eq!(names(&events).iter().filter(|n| **n == "judged").count(), 3);
    // The audit history of the candidate tells the whole story.
    let history =
        futures::executor::block_on(run.store.history(&run.agent, &run.candidate)).unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e.action, AuditAction::Promoted { .. }))
    );
}

#[test]
fn canary_rolls_back_on_error_rate() {
    let (run, events) = simulate(simulation(CANARY, "error_rate=5%,p99=40ms"));
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Condition)
    );
    assert!(
        run.report
            .outcome
            .reason()
            .unwrap()
            .message
            .contains("error_rate")
    );
    assert!(run.report.duration() <= Duration::from_secs(5 * 60));
    assert_eq!(candidate_weights(&run), [500, 0]);
    assert_rolled_back_cleanly(&run);
    assert!(names(&events).contains(&"rolled_back"));
}

#[test]
fn canary_rolls_back_on_p99_latency() {
    let (run, _) = simulate(simulation(CANARY, "error_rate=0.2%,p50=60ms,p99=400ms"));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert_eq!(reason.kind, ReasonKind::Condition);
    assert!(reason.message.contains("p99_latency"), "{reason}");
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_without_a_judge_in_the_spec_never_judges() {
    let (run, events) = simulate(simulation(CANARY, "error_rate=0.2%,p99=40ms"));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert!(!names(&events).contains(&"judged"), "{:?}", names(&events));
}

#[test]
fn a_candidate_inside_every_named_gate_is_not_rolled_back_by_an_unnamed_judge() {
    // 0.3 % errors and p99 45 ms against `error_rate > 1%` and `p99_latency > 100ms`:
    // before the judge became opt-in, its latency comparison rolled this back or left it
    // inconclusive in every run.
    let spec = RolloutSpec::from_yaml(CANARY).unwrap();
    let mut promoted = 0;
    for seed in 0..100 {
        let sim = Simulation::new(
            spec.clone(),
            HEALTHY.parse().unwrap(),
            "error_rate=0.3%,p99=45ms".parse().unwrap(),
        )
        .seed(seed);
        let report = sim.run_blocking(None).unwrap();
        if let Some(reason) = report.outcome.reason() {
            // The point-estimate error gate may still cry wolf on a thin 5 % window; the
            // statistical gates are the next step of issue 16. Nothing else may decide.
            assert_eq!(reason.kind, ReasonKind::Condition, "seed {seed}: {reason}");
            assert!(
                reason.message.contains("error_rate"),
                "seed {seed}: {reason}"
            );
        } else {
            promoted += 1;
        }
    }
    assert!(promoted >= 80, "promoted in {promoted} of 100 runs");
}

#[test]
fn canary_rolls_back_on_a_relative_condition() {
    let yaml = "
deployment:
  strategy: canary
  judge: off
  rollback_on: [error_rate > baseline * 2]
";
    let (run, _) = simulate(simulation(yaml, "error_rate=1.5%,p99=40ms"));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert!(reason.message.contains("error_rate"), "{reason}");
    assert_rolled_back_cleanly(&run);
    // The same candidate passes against an absolute limit it stays under.
    let (lenient, _) = simulate(simulation(
        "deployment:\n  strategy: canary\n  judge: off\n  rollback_on: [error_rate > 5%]\n",
        "error_rate=1.5%,p99=40ms",
    ));
    assert_eq!(lenient.report.outcome, Outcome::Promoted);
}

#[test]
fn canary_rolls_back_on_cost_per_session() {
    let yaml = "
deployment:
  strategy: canary
  judge: off
  rollback_on: [cost_per_session > 0.05]
";
    let (run, _) = simulate(simulation(
        yaml,
        "error_rate=0.2%,p99=40ms,cost_per_session=0.09",
    ));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert!(reason.message.contains("cost_per_session"), "{reason}");
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_rolls_back_on_a_custom_metric() {
    let yaml = "
deployment:
  strategy: canary
  judge: off
  rollback_on: [fuel_per_message > 1e6]
";
    let (run, _) = simulate(simulation(
        yaml,
        "error_rate=0.2%,p99=40ms,fuel_per_message=2e6",
    ));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert!(reason.message.contains("fuel_per_message"), "{reason}");
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_rolls_back_when_the_judge_finds_a_latency_regression() {
    // No conditions: only the comparison with the baseline can catch it.
    let yaml = "deployment:\n  strategy: canary\n  judge: { confidence: 95%, tolerance: 10% }\n";
    let (run, events) = simulate(simulation(yaml, "error_rate=0.2%,p50=25ms,p99=80ms"));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert_eq!(reason.kind, ReasonKind::Judge, "{reason}");
    assert_eq!(run.report.duration(), Duration::from_secs(5 * 60));
    assert!(names(&events).contains(&"judged"));
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_abort_sends_all_traffic_back() {
    let sim = simulation(CANARY, "error_rate=0.2%,p99=40ms").command(
        Duration::from_secs(7 * 60),
        Command::Abort {
            reason: "change freeze".into(),
        },
    );
    let (run, events) = simulate(sim);
    assert_eq!(reason_kind(&run.report.outcome), Some(ReasonKind::Operator));
    assert_eq!(run.report.outcome.as_str(), "aborted");
    assert!(
        run.report
            .outcome
            .reason()
            .unwrap()
            .message
            .contains("change freeze")
    );
    assert_eq!(run.report.duration(), Duration::from_secs(7 * 60));
    assert_eq!(candidate_weights(&run), [500, 2_500, 0]);
    assert_rolled_back_cleanly(&run);
    assert!(names(&events).contains(&"command_received"));
}

#[test]
fn canary_pause_holds_the_step_and_resume_goes_on() {
    let sim = simulation(CANARY, "error_rate=0.2%,p99=40ms")
        .command(Duration::from_secs(2 * 60), Command::Pause)
        .command(Duration::from_secs(32 * 60), Command::Resume);
    let (run, events) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    // The 5% step was frozen for 30 minutes, then held its remaining 3 minutes.
    assert_eq!(run.report.duration(), Duration::from_secs(55 * 60));
    let second_split = run
        .traffic
        .actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, TrafficAction::Split(_)))
        .nth(1)
        .unwrap()
        .0;
    let start = run.report.started_at;
    assert_eq!(second_split - start, Duration::from_secs(35 * 60));
    let kinds = names(&events);
    assert!(kinds.contains(&"paused") && kinds.contains(&"resumed"));
}

#[test]
fn canary_pause_with_no_decision_aborts_after_the_timeout() {
    let yaml = "deployment:\n  strategy: canary\n  pause_timeout: 20m\n";
    let sim = simulation(yaml, "error_rate=0.2%,p99=40ms")
        .command(Duration::from_secs(60), Command::Pause);
    let (run, _) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::PauseTimeout)
    );
    assert_eq!(run.report.duration(), Duration::from_secs(21 * 60));
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_still_rolls_back_while_paused() {
    let sim = simulation(CANARY, "error_rate=6%,p99=40ms")
        .command(Duration::from_secs(30), Command::Pause);
    let (run, events) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Condition)
    );
    assert!(names(&events).contains(&"paused"));
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_paused_before_the_first_step_sends_no_traffic() {
    let yaml = "deployment:\n  strategy: canary\n  pause_timeout: 10m\n";
    let sim = simulation(yaml, "error_rate=0.2%,p99=40ms").command(Duration::ZERO, Command::Pause);
    let (run, _) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::PauseTimeout)
    );
    assert!(candidate_weights(&run).iter().all(|w| *w == 0));
    assert_rolled_back_cleanly(&run);
}

#[test]
fn canary_promote_fully_skips_the_remaining_steps() {
    let sim = simulation(CANARY, "error_rate=0.2%,p99=40ms")
        .command(Duration::from_secs(60), Command::PromoteFully);
    let (run, _) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(candidate_weights(&run), [500, 10_000]);
    assert_eq!(run.report.duration(), Duration::from_secs(60));
}

#[test]
fn canary_with_too_little_traffic_extends_then_pauses_and_never_decides_on_no_data() {
    let yaml = "
deployment:
  strategy: canary
  max_extension: 3m
  pause_timeout: 15m
  rollback_on: [error_rate > 1%]
";
    // 0.2 requests a second: 5% of it is one request every 100 s.
    let spec = RolloutSpec::from_yaml(yaml).unwrap();
    let sim = Simulation::new(
        spec,
        "error_rate=0.2%,p99=40ms,rps=0.2".parse().unwrap(),
        "error_rate=50%,p99=40ms".parse().unwrap(),
    );
    let (run, events) = simulate(sim);
    let kinds = names(&events);
    assert_eq!(kinds.iter().filter(|k| **k == "hold_extended").count(), 3);
    assert!(kinds.contains(&"paused"));
    // Half the candidate's requests fail, yet too few arrived to judge: it never rolled
    // back on a condition and never promoted; the unanswered pause aborted it.
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::PauseTimeout)
    );
    assert_eq!(
        run.report.duration(),
        Duration::from_secs((5 + 3 + 15) * 60)
    );
    assert_eq!(candidate_weights(&run), [500, 0]);
}

#[test]
fn canary_with_thin_traffic_extends_the_hold_until_enough_requests_arrive() {
    let spec = RolloutSpec::from_yaml("deployment:\n  strategy: canary\n  judge: off\n").unwrap();
    // 5% of 4 requests a second is 12 a minute: 100 requests take about 8 minutes.
    let sim = Simulation::new(
        spec,
        "error_rate=0.2%,p99=40ms,rps=4".parse().unwrap(),
        "error_rate=0.2%,p99=40ms".parse().unwrap(),
    );
    let (run, events) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert!(names(&events).contains(&"hold_extended"));
    assert!(run.report.duration() > Duration::from_secs(25 * 60));
}

const BLUE_GREEN: &str = "
deployment:
  strategy: blue-green
  stages:
    - validate: 30s
    - warm_up: 60s
    - switch: instant
    - cleanup: 300s
  rollback_on:
    - error_rate > 1%
";

#[test]
fn blue_green_switches_at_once_and_retires_the_old_version_after_cleanup() {
    let (run, events) = simulate(simulation(BLUE_GREEN, "error_rate=0.2%,p99=40ms"));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(candidate_weights(&run), [10_000]);
    assert_eq!(run.report.duration(), Duration::from_secs(300));
    assert_eq!(state(&run, &run.baseline), LifecycleState::Retired);
    let kinds = names(&events);
    let promoted = kinds.iter().position(|k| *k == "promoted").unwrap();
    let retired = kinds.iter().position(|k| *k == "retired").unwrap();
    assert!(promoted < retired);
}

#[test]
fn blue_green_rolls_back_during_cleanup_with_one_switch_back() {
    let (run, _) = simulate(simulation(BLUE_GREEN, "error_rate=4%,p99=40ms"));
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Condition)
    );
    assert!(run.report.duration() < Duration::from_secs(300));
    assert_rolled_back_cleanly(&run);
    // The registry recorded a rollback, not a promotion of the old version.
    let history =
        futures::executor::block_on(run.store.history(&run.agent, &run.baseline)).unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e.action, AuditAction::RestoredByRollback { .. }))
    );
}

#[test]
fn blue_green_abort_during_cleanup_restores_the_old_version() {
    let sim = simulation(BLUE_GREEN, "error_rate=0.2%,p99=40ms").command(
        Duration::from_secs(120),
        Command::Abort {
            reason: "customer report".into(),
        },
    );
    let (run, _) = simulate(sim);
    assert_eq!(run.report.outcome.as_str(), "aborted");
    assert_rolled_back_cleanly(&run);
}

#[test]
fn direct_switches_and_retires_the_old_version() {
    let (run, events) = simulate(simulation(
        "deployment:\n  strategy: direct\n",
        "error_rate=0.2%",
    ));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(run.report.duration(), Duration::ZERO);
    assert_eq!(production(&run), Some(run.candidate.clone()));
    assert_eq!(state(&run, &run.baseline), LifecycleState::Retired);
    assert!(names(&events).contains(&"validation_finished"));
}

#[test]
fn direct_refused_by_validation_leaves_production_untouched() {
    let sim = simulation("deployment:\n  strategy: direct\n", "error_rate=0.2%").validation(
        ValidationVerdict::failed("export `caxton_handle` is missing"),
    );
    let (run, events) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Validation)
    );
    assert_eq!(run.report.outcome.as_str(), "rolled_back");
    assert_eq!(state(&run, &run.candidate), LifecycleState::Failed);
    assert_eq!(production(&run), Some(run.baseline.clone()));
    assert!(
        run.traffic
            .actions()
            .iter()
            .all(|(_, a)| !matches!(a, TrafficAction::Registered(d) if *d == run.candidate))
    );
    assert!(!names(&events).contains(&"rolled_back"), "it never served");
}

const SHADOW: &str = "
deployment:
  strategy: shadow
  duration: 10m
  sample: 50%
  compare: [output_equivalence, performance_metrics, resource_usage]
  max_mismatch: 1%
";

#[test]
fn shadow_mirrors_without_serving_then_promotes_an_equivalent_candidate() {
    let (run, events) = simulate(simulation(SHADOW, "error_rate=0.2%,p99=40ms,mismatch=0.1%"));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    let actions = run.traffic.actions();
    let promoted_at = actions
        .iter()
        .position(|(_, a)| matches!(a, TrafficAction::Promoted(d) if *d == run.candidate))
        .unwrap();
    // Before promotion the candidate served nothing: no split gave it weight.
    assert!(actions[..promoted_at].iter().all(|(_, a)| match a {
        TrafficAction::Split(split) => split.weight_of(&run.candidate).bps() == 0,
        _ => true,
    }));
    assert!(actions[..promoted_at].iter().any(
        |(_, a)| matches!(a, TrafficAction::Shadow(Some(s)) if s.deployment == run.candidate)
    ));
    assert!(names(&events).contains(&"shadow_report"));
    assert_eq!(run.report.duration(), Duration::from_secs(600));
}

#[test]
fn shadow_rolls_back_a_candidate_whose_outputs_differ() {
    let (run, events) = simulate(simulation(SHADOW, "error_rate=0.2%,p99=40ms,mismatch=5%"));
    let reason = run.report.outcome.reason().expect("rolled back");
    assert_eq!(reason.kind, ReasonKind::OutputMismatch, "{reason}");
    assert_rolled_back_cleanly(&run);
    assert!(
        run.traffic.shadow(&run.agent).is_none(),
        "mirroring stopped"
    );
    assert!(names(&events).contains(&"shadow_report"));
}

#[test]
fn shadow_rolls_back_a_candidate_that_burns_more_fuel() {
    let yaml = "
deployment:
  strategy: shadow
  duration: 10m
  compare: [resource_usage]
  resource_metrics: [fuel_per_message]
";
    let spec = RolloutSpec::from_yaml(yaml).unwrap();
    let sim = Simulation::new(
        spec,
        "error_rate=0.2%,p99=40ms,rps=50,fuel_per_message=1e6"
            .parse()
            .unwrap(),
        "error_rate=0.2%,p99=40ms,fuel_per_message=1.5e6"
            .parse()
            .unwrap(),
    );
    let (run, _) = simulate(sim);
    let reason = run.report.outcome.reason().expect("rolled back");
    assert_eq!(reason.kind, ReasonKind::Judge, "{reason}");
    assert!(reason.message.contains("fuel_per_message"), "{reason}");
}

#[test]
fn shadow_that_cannot_decide_pauses_for_a_person_who_promotes() {
    let yaml = "
deployment:
  strategy: shadow
  duration: 10m
  compare: [performance_metrics]
  judge: { min_samples: 100000 }
";
    let sim = simulation(yaml, "error_rate=0.2%,p99=40ms")
        .command(Duration::from_secs(15 * 60), Command::PromoteFully);
    let (run, events) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(run.report.duration(), Duration::from_secs(15 * 60));
    assert!(names(&events).contains(&"paused"));
}

const RAINBOW: &str = "
deployment:
  strategy: rainbow
  max_live_versions: 3
  session_idle_timeout: 30m
  forced_drain_after: 24h
  rollback_on: [error_rate > 1%]
";

#[test]
fn rainbow_lets_old_sessions_finish_before_retiring_the_old_version() {
    let sim = simulation(RAINBOW, "error_rate=0.2%,p99=40ms")
        .session_mode(SessionMode::Sessions)
        .sessions(SessionModel {
            arrivals_per_sec: 0.5,
            mean_length: Duration::from_secs(120),
        });
    let (run, events) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert!(run.traffic.session_moves().is_empty(), "no session moved");
    assert!(run.report.duration() < Duration::from_secs(24 * 3_600));
    assert_eq!(state(&run, &run.baseline), LifecycleState::Retired);
    let retired = events
        .iter()
        .find_map(|e| match &e.kind {
            caxton_strategies::EventKind::Retired { forced, .. } => Some(*forced),
            _ => None,
        })
        .unwrap();
    assert!(!retired, "retired once empty, not forced");
}

#[test]
fn rainbow_forced_drain_moves_the_remaining_sessions_at_the_deadline() {
    let yaml = "deployment:\n  strategy: rainbow\n  forced_drain_after: 10m\n";
    let sim = simulation(yaml, "error_rate=0.2%,p99=40ms")
        .session_mode(SessionMode::Sessions)
        .sessions(SessionModel {
            arrivals_per_sec: 0.5,
            mean_length: Duration::from_secs(3_600),
        });
    let (run, _) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(run.report.duration(), Duration::from_secs(600));
    let moves = run.traffic.session_moves();
    assert!(!moves.is_empty());
    let deadline = run.report.started_at + Duration::from_secs(600);
    for m in &moves {
        assert_eq!(m.from, run.baseline);
        assert_eq!(m.cause, MoveCause::ForcedDrain);
        assert!(
            m.at >= deadline,
            "moved at {} before the deadline {deadline}",
            m.at
        );
    }
}

/// An hour-long session on average, a 10-minute forced drain: most sessions that began
/// before the rollout are still running at the deadline.
const LONG_SESSIONS: SessionModel = SessionModel {
    arrivals_per_sec: 0.5,
    mean_length: Duration::from_secs(3_600),
};

const RAINBOW_10M: &str = "deployment:\n  strategy: rainbow\n  forced_drain_after: 10m\n";

#[test]
fn rainbow_keeps_the_earlier_sessions_of_a_sessions_agent_on_the_baseline() {
    let sim = simulation(RAINBOW_10M, "error_rate=0.2%,p99=40ms")
        .session_mode(SessionMode::Sessions)
        .sessions(LONG_SESSIONS);
    let (run, _) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    // Affinity was on from the baseline's registration, before the rollout began.
    let actions = run.traffic.actions();
    let affinity_at = actions
        .iter()
        .position(|(_, a)| matches!(a, TrafficAction::Affinity(Some(_))))
        .unwrap();
    let baseline_promoted_at = actions
        .iter()
        .position(|(_, a)| matches!(a, TrafficAction::Promoted(d) if *d == run.baseline))
        .unwrap();
    assert!(affinity_at < baseline_promoted_at, "{actions:?}");
    // About 1 800 sessions were running when the rollout began; after 10 minutes most of
    // them are still on the baseline, and only the forced drain moves them.
    let moves = run.traffic.session_moves();
    let deadline = run.report.started_at + Duration::from_secs(600);
    assert!(moves.len() > 1_000, "{} moves", moves.len());
    for m in &moves {
        assert_eq!(m.from, run.baseline);
        assert_eq!(m.cause, MoveCause::ForcedDrain);
        assert!(m.at >= deadline, "moved at {} before {deadline}", m.at);
    }
}

#[test]
fn rainbow_of_a_stateless_agent_does_not_pin_the_sessions_that_began_before_it() {
    // The default agent is stateless: nothing pinned its sessions before the switch, so
    // the switch's promotion takes them with it, as the router would.
    let (run, events) =
        simulate(simulation(RAINBOW_10M, "error_rate=0.2%,p99=40ms").sessions(LONG_SESSIONS));
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert!(run.traffic.session_moves().is_empty());
    let retired = events
        .iter()
        .find_map(|e| match &e.kind {
            caxton_strategies::EventKind::Retired { forced, .. } => Some((*forced, e.at_s)),
            _ => None,
        })
        .unwrap();
    assert!(!retired.0, "nothing was left to force");
    assert!(
        retired.1 < 600.0,
        "retired at {}s, before the deadline",
        retired.1
    );
}

const RAINBOW_RAMP: &str = "
deployment:
  strategy: rainbow
  stages:
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on: [error_rate > 1%]
  forced_drain_after: 2h
";

#[test]
fn rainbow_ramps_new_sessions_of_a_healthy_candidate_then_switches() {
    let sim = simulation(RAINBOW_RAMP, "error_rate=0.2%,p99=40ms")
        .session_mode(SessionMode::Sessions)
        .sessions(LONG_SESSIONS);
    let (run, events) = simulate(sim);
    assert_eq!(run.report.outcome, Outcome::Promoted);
    assert_eq!(candidate_weights(&run), [500, 2_500, 5_000, 10_000]);
    let stages: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            caxton_strategies::EventKind::StageStarted { stage, .. } => Some(stage.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages,
        [
            "rainbow.5_percent",
            "rainbow.25_percent",
            "rainbow.50_percent",
            "rainbow.switch",
            "rainbow.drain"
        ]
    );
    // The baseline's sessions stayed through the ramp and the switch; only the forced
    // drain, two hours after the switch, moved what was left.
    let switched = run.report.started_at + Duration::from_secs(25 * 60);
    for m in run.traffic.session_moves() {
        assert_eq!(m.from, run.baseline);
        assert!(m.at >= switched + Duration::from_secs(7_200), "{m:?}");
    }
}

#[test]
fn rainbow_rolls_back_a_regressing_candidate_at_5_percent() {
    // Five-minute sessions: the candidate's 5 % of new sessions soon carry enough traffic
    // to judge (with hour-long ones it would take far longer than the hold).
    let sim = simulation(RAINBOW_RAMP, "error_rate=5%,p99=40ms")
        .session_mode(SessionMode::Sessions)
        .sessions(SessionModel::default());
    let (run, events) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Condition)
    );
    let reason = run.report.outcome.reason().unwrap();
    assert!(reason.message.contains("rainbow 5%"), "{reason:?}");
    // New sessions went back to the baseline; the share never rose above 5 %.
    assert_eq!(candidate_weights(&run), [500, 0]);
    assert!(run.report.duration() <= Duration::from_secs(5 * 60 + 60));
    assert!(!names(&events).contains(&"promoted"));
    assert_rolled_back_cleanly(&run);
    // Sessions that began on the baseline never moved; the candidate's were released.
    let moves = run.traffic.session_moves();
    assert!(!moves.is_empty());
    assert!(moves.iter().all(|m| m.from == run.candidate));
    assert!(run.traffic.live_sessions(&run.baseline) > 200);
}

#[test]
fn rainbow_rollback_points_new_sessions_at_the_previous_version() {
    let sim = simulation(RAINBOW, "error_rate=8%,p99=40ms");
    let (run, _) = simulate(sim);
    assert_eq!(
        reason_kind(&run.report.outcome),
        Some(ReasonKind::Condition)
    );
    assert_rolled_back_cleanly(&run);
    // Only the candidate's sessions moved, and only because of the rollback.
    assert!(
        run.traffic
            .session_moves()
            .iter()
            .all(|m| m.from == run.candidate)
    );
}

#[test]
fn simulations_are_reproducible_from_their_seed() {
    let first = simulate(simulation(CANARY, "error_rate=0.6%,p99=60ms")).1;
    let second = simulate(simulation(CANARY, "error_rate=0.6%,p99=60ms")).1;
    assert_eq!(first, second);
}

#[test]
fn every_strategy_runs_without_warnings_when_all_goes_well() {
    for yaml in [
        "deployment:\n  strategy: direct\n",
        BLUE_GREEN,
        CANARY,
        SHADOW,
        RAINBOW,
    ] {
        let (run, events) = simulate(simulation(yaml, "error_rate=0.2%,p99=40ms"));
        assert_eq!(run.report.outcome, Outcome::Promoted, "{yaml}");
        let warnings: Vec<&RolloutEvent> = events
            .iter()
            .filter(|e| e.kind.name() == "warning")
            .collect();
        assert!(warnings.is_empty(), "{yaml}: {warnings:?}");
    }
}

#[test]
fn failing_rollouts_restore_the_baseline_without_warnings() {
    for yaml in [BLUE_GREEN, CANARY, SHADOW, RAINBOW] {
        let (run, events) = simulate(simulation(yaml, "error_rate=9%,p99=40ms,mismatch=9%"));
        assert_eq!(run.report.outcome.as_str(), "rolled_back", "{yaml}");
        assert_rolled_back_cleanly(&run);
        let warnings: Vec<&RolloutEvent> = events
            .iter()
            .filter(|e| e.kind.name() == "warning")
            .collect();
        assert!(warnings.is_empty(), "{yaml}: {warnings:?}");
    }
}

#[test]
fn a_pause_for_want_of_evidence_ends_by_itself_when_the_evidence_is_in() {
    // 5 requests/s: the 5 % step sees 15 requests a minute, too few for the 100 needed
    // and for a 99th percentile bound in 15 minutes; it pauses, and goes on by itself
    // once the evidence is in.
    let simulation = Simulation::new(
        RolloutSpec::parse(CANARY).unwrap(),
        "error_rate=0.2%,p99=40ms,rps=5".parse().unwrap(),
        "error_rate=0.2%,p99=40ms".parse().unwrap(),
    );
    let (run, events) = simulate(simulation);
    let kinds = names(&events);
    let paused = kinds.iter().position(|k| *k == "paused").expect("paused");
    let resumed = kinds.iter().position(|k| *k == "resumed").expect("resumed");
    assert!(paused < resumed, "{kinds:?}");
    assert_eq!(run.report.outcome, Outcome::Promoted);
    // The `checked` events say what the data show: bounds of the candidate's value.
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        caxton_strategies::EventKind::Checked { lower: Some(lower), upper: Some(upper), .. }
            if lower <= upper
    )));
    assert!(!events.iter().any(|e| matches!(&e.kind, caxton_strategies::EventKind::Checked { status, .. } if *status == caxton_strategies::condition::CheckStatus::Breached)));
}

#[test]
fn a_regression_at_twice_the_gate_is_rolled_back_in_the_first_step() {
    for seed in 0..20 {
        let (run, _) = simulate(simulation(CANARY, "error_rate=2%,p99=40ms").seed(seed));
        match &run.report.outcome {
            Outcome::RolledBack { reason } => {
                assert!(
                    reason.message.contains("at canary 5%"),
                    "seed {seed}: {reason:?}"
                );
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}
