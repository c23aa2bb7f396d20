//! Strategy benchmarks.
//!
//! - `strategies/simulate_canary`: the default canary (5 % for 5 m → 25 % for 10 m →
//!   50 % for 10 m → 100 %, rolling back on `error_rate > 1%` or `p99_latency > 100ms`,
//!   latency judged against the baseline before each increase) from start to promotion in
//!   virtual time: driver, `MemoryStore`, `SimTraffic` and synthetic metrics at 50
//!   requests a second. In real time the same rollout takes 25 minutes.

use std::hint::black_box;

use caxton_strategies::sim::Simulation;
use caxton_strategies::{Outcome, RolloutSpec};
use criterion::{Criterion, criterion_group, criterion_main};

fn simulate_canary(c: &mut Criterion) {
    let spec = RolloutSpec::from_compact(
        Some("5:5m,25:10m,50:10m"),
        Some("error_rate>1%,p99_latency>100ms"),
    )
    .expect("the default canary parses");
    let simulation = Simulation::new(
        spec,
        "error_rate=0.2%,p99=40ms,rps=50"
            .parse()
            .expect("baseline metrics"),
        "error_rate=0.2%,p99=40ms"
            .parse()
            .expect("candidate metrics"),
    )
    .seed(1);
    // The benchmark is only meaningful for a rollout that goes all the way.
    let report = simulation.run_blocking(None).expect("the simulation runs");
    assert_eq!(report.outcome, Outcome::Promoted);

    let mut group = c.benchmark_group("strategies");
    group.bench_function("simulate_canary", |b| {
        b.iter(|| black_box(simulation.run_blocking(None).expect("the simulation runs")));
    });
    group.finish();
}

criterion_group!(benches, simulate_canary);
criterion_main!(benches);
