//! The decision-quality matrix of issue 16: for each spec and pair of behaviours, 1,000
//! seeded rollouts through the simulator (the same driver and strategy code as a host
//! and `caxton simulate --runs`), counting promotions, rollbacks (and the stage that
//! rolled back), aborts after an unanswered pause and the time to a decision.
//!
//! ```sh
//! cargo bench -p caxton-strategies --features sim --bench decision_matrix
//! cargo bench -p caxton-strategies --features sim --bench decision_matrix -- 200  # fewer runs
//! ```
//!
//! Under `cargo test --benches` it runs three seeds per case, to show that it still runs.
//!
//! It prints a Markdown table, the one recorded in `docs/decision-quality.md`.

use std::sync::Arc;
use std::thread;

use caxton_strategies::sim::{Simulation, SyntheticProfile, wilson_interval};
use caxton_strategies::spec::RolloutSpec;
use caxton_strategies::strategy::Outcome;

/// The README's canary spec.
const README_CANARY: &str = "
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

/// A relative error-rate gate on a busier agent.
const RELATIVE: &str = "
deployment:
  strategy: canary
  stages:
    - canary: { weight: 10%, hold: 5m }
    - canary: { weight: 50%, hold: 5m }
    - full: 100%
  rollback_on:
    - error_rate > baseline * 1.5
";

/// A relative latency gate.
const RELATIVE_LATENCY: &str = "
deployment:
  strategy: canary
  stages:
    - canary: { weight: 10%, hold: 5m }
    - canary: { weight: 50%, hold: 5m }
    - full: 100%
  rollback_on:
    - p99_latency > baseline * 1.5
";

/// The relative spec of the issue's report: 2-minute holds at 10 % and 50 %.
const ISSUE_RELATIVE: &str = "
deployment:
  strategy: canary
  stages:
    - canary: { weight: 10%, hold: 2m }
    - canary: { weight: 50%, hold: 2m }
    - full: 100%
  rollback_on:
    - error_rate > baseline * 1.5
";

/// What a case should come to.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Promoted: anything else is a false rollback.
    Pass,
    /// Rolled back, at the first step that carries traffic.
    Catch,
}

struct Case {
    name: &'static str,
    spec: &'static str,
    baseline: &'static str,
    candidate: &'static str,
    expect: Expect,
}

const FIRST_STEPS: [&str; 3] = ["at canary 5%", "at canary 10%", "judge"];

fn cases() -> Vec<Case> {
    let readme = |name, baseline, candidate, expect| Case {
        name,
        spec: README_CANARY,
        baseline,
        candidate,
        expect,
    };
    let base = "error_rate=0.2%,p99=40ms,rps=50";
    let low = "error_rate=0.2%,p99=40ms,rps=2";
    vec![
        readme(
            "README canary: identical",
            base,
            "error_rate=0.2%,p99=40ms",
            Expect::Pass,
        ),
        readme(
            "README canary: 0.3 %, p99 45 ms",
            base,
            "error_rate=0.3%,p99=45ms",
            Expect::Pass,
        ),
        readme(
            "README canary: 0.5 % (gate 1 %), p99 50 ms",
            base,
            "error_rate=0.5%,p99=50ms",
            Expect::Pass,
        ),
        readme(
            "README canary: 2 % errors (2 × the gate)",
            base,
            "error_rate=2%,p99=40ms",
            Expect::Catch,
        ),
        readme(
            "README canary: 3 % errors (3 ×)",
            base,
            "error_rate=3%,p99=40ms",
            Expect::Catch,
        ),
        readme(
            "README canary: p99 200 ms (2 × the gate)",
            base,
            "error_rate=0.2%,p99=200ms",
            Expect::Catch,
        ),
        readme(
            "README canary, 2 req/s: identical",
            low,
            "error_rate=0.2%,p99=40ms",
            Expect::Pass,
        ),
        readme(
            "README canary, 2 req/s: 3 % errors",
            low,
            "error_rate=3%,p99=40ms",
            Expect::Catch,
        ),
        Case {
            name: "relative 1.5 ×, 200 req/s: identical (1 %)",
            spec: RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=200",
            candidate: "error_rate=1%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "relative 1.5 ×, 200 req/s: 1.2 × baseline",
            spec: RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=200",
            candidate: "error_rate=1.2%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "relative 1.5 ×, 200 req/s: 3 × baseline (2 × the gate)",
            spec: RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=200",
            candidate: "error_rate=3%,p99=40ms",
            expect: Expect::Catch,
        },
        Case {
            name: "relative 1.5 ×, 2 req/s: identical",
            spec: RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=2",
            candidate: "error_rate=1%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "relative p99 1.5 ×, 50 req/s: identical",
            spec: RELATIVE_LATENCY,
            baseline: "error_rate=0.2%,p99=40ms,rps=50",
            candidate: "error_rate=0.2%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "relative p99 1.5 ×, 50 req/s: 1.2 × (48 ms)",
            spec: RELATIVE_LATENCY,
            baseline: "error_rate=0.2%,p99=40ms,rps=50",
            candidate: "error_rate=0.2%,p99=48ms",
            expect: Expect::Pass,
        },
        Case {
            name: "relative p99 1.5 ×, 50 req/s: 2 × the gate (120 ms)",
            spec: RELATIVE_LATENCY,
            baseline: "error_rate=0.2%,p99=40ms,rps=50",
            candidate: "error_rate=0.2%,p99=120ms",
            expect: Expect::Catch,
        },
        Case {
            name: "issue's relative spec, 50 req/s: identical (1 %)",
            spec: ISSUE_RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=50",
            candidate: "error_rate=1%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "issue's relative spec, 50 req/s: 1.2 ×",
            spec: ISSUE_RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=50",
            candidate: "error_rate=1.2%,p99=40ms",
            expect: Expect::Pass,
        },
        Case {
            name: "issue's relative spec, 50 req/s: 3 × (2 × the gate)",
            spec: ISSUE_RELATIVE,
            baseline: "error_rate=1%,p99=40ms,rps=50",
            candidate: "error_rate=3%,p99=40ms",
            expect: Expect::Catch,
        },
    ]
}

#[derive(Default)]
struct Tally {
    promoted: u64,
    rolled_back: u64,
    rolled_back_first_step: u64,
    aborted: u64,
    durations: Vec<f64>,
}

fn run_case(case: &Case, runs: u64) -> Tally {
    let spec = RolloutSpec::parse(case.spec).expect("the matrix's specs parse");
    let baseline: SyntheticProfile = case.baseline.parse().expect("baseline");
    let candidate: SyntheticProfile = case.candidate.parse().expect("candidate");
    let simulation = Arc::new(Simulation::new(spec, baseline, candidate));
    let threads = thread::available_parallelism().map_or(1, |n| n.get().min(2)) as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let simulation = simulation.clone();
            thread::spawn(move || {
                let mut tally = Tally::default();
                for seed in (t..runs).step_by(threads as usize) {
                    let report = simulation
                        .as_ref()
                        .clone()
                        .seed(seed)
                        .run_blocking(None)
                        .expect("a simulated run");
                    match &report.outcome {
                        Outcome::Promoted => tally.promoted += 1,
                        Outcome::RolledBack { reason } => {
                            tally.rolled_back += 1;
                            if FIRST_STEPS.iter().any(|s| reason.message.contains(s)) {
                                tally.rolled_back_first_step += 1;
                            }
                        }
                        Outcome::Aborted { .. } => tally.aborted += 1,
                    }
                    tally.durations.push(report.duration().as_secs_f64());
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        let part = handle.join().expect("a matrix thread");
        total.promoted += part.promoted;
        total.rolled_back += part.rolled_back;
        total.rolled_back_first_step += part.rolled_back_first_step;
        total.aborted += part.aborted;
        total.durations.extend(part.durations);
    }
    total.durations.sort_by(f64::total_cmp);
    total
}

fn percent(count: u64, runs: u64) -> String {
    let [lo, hi] = wilson_interval(count, runs);
    format!(
        "{:.1} % ({:.1}–{:.1} %)",
        100.0 * count as f64 / runs as f64,
        100.0 * lo,
        100.0 * hi
    )
}

fn minutes(seconds: f64) -> String {
    format!("{:.0} m", seconds / 60.0)
}

fn main() {
    // `cargo bench` passes `--bench`: the full matrix. Without it (`cargo test
    // --benches`, as CI runs every suite once) a few seeds show that it still runs.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let runs: u64 =
        args.iter()
            .find_map(|a| a.parse().ok())
            .unwrap_or(if full { 1_000 } else { 3 });
    println!("{runs} seeds (0 to {}) per case", runs - 1);
    println!();
    println!(
        "| case | promoted / rolled back (first step) / aborted | wrong decisions | median, p90 time to a decision |"
    );
    println!("|---|---|---|---|");
    for case in cases() {
        let tally = run_case(&case, runs);
        let wrong = match case.expect {
            Expect::Pass => format!(
                "false rollbacks {} (of which rolled back {})",
                percent(tally.rolled_back + tally.aborted, runs),
                tally.rolled_back
            ),
            Expect::Catch => format!(
                "missed {}; caught at the first step {}",
                percent(tally.promoted, runs),
                percent(tally.rolled_back_first_step, runs)
            ),
        };
        let median = tally.durations[tally.durations.len() / 2];
        let p90 = tally.durations[(tally.durations.len() * 9 / 10).min(tally.durations.len() - 1)];
        println!(
            "| {} | {} / {} ({}) / {} | {} | {}, {} |",
            case.name,
            tally.promoted,
            tally.rolled_back,
            tally.rolled_back_first_step,
            tally.aborted,
            wrong,
            minutes(median),
            minutes(p90)
        );
    }
}
