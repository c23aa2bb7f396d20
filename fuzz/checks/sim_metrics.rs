//! The `--baseline`/`--candidate` metric strings of `caxton simulate`. A refused string is
//! a `ProfileError` pointing inside it; an accepted one holds values in their documented
//! ranges. An input with a newline is the baseline, the newline, then the candidate: when
//! both parse they go through what `caxton simulate` does with them, the simulator's
//! check then a short canary run (a run costs milliseconds, so inputs without a newline
//! exercise the parser alone, fast).

use caxton_strategies::RolloutSpec;
use caxton_strategies::sim::{MAX_RPS, Simulation, SyntheticProfile};

// No latency gate: a quantile gate's evidence makes each simulated run ~100 times slower,
// and the profiles' latencies are still sampled for every window.
const SPEC: &str = "deployment: {strategy: canary, stages: [{canary: {weight: 20%, hold: 10s}}, \
    {full: 100%}], rollback_on: [error_rate > 1%, tokens > 1000, cost_per_request > 0.5], \
    check_interval: 5s, min_requests: 10, max_extension: 10s, drain_timeout: 1s, judge: off}";

fn profile(text: &str) -> Option<SyntheticProfile> {
    match text.parse::<SyntheticProfile>() {
        Ok(p) => {
            assert!((0.0..=1.0).contains(&p.error_rate), "{text:?}: {p:?}");
            assert!((0.0..=1.0).contains(&p.mismatch), "{text:?}: {p:?}");
            assert!(p.p50_ms.is_finite() && p.p50_ms > 0.0, "{text:?}: {p:?}");
            assert!(p.latency_sigma.is_finite(), "{text:?}: {p:?}");
            assert!(p.messages_per_session >= 1.0, "{text:?}: {p:?}");
            assert!(p.rps.is_none_or(|rps| rps <= MAX_RPS), "{text:?}: {p:?}");
            for value in [p.cost_per_request, p.cost_per_session]
                .into_iter()
                .chain(p.rps)
                .chain(p.custom.values().copied())
            {
                assert!(value.is_finite() && value >= 0.0, "{text:?}: {p:?}");
            }
            Some(p)
        }
        Err(error) => {
            assert!(error.position <= text.len(), "{error}");
            let _ = error.to_string();
            None
        }
    }
}

pub(crate) fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((baseline, candidate)) = text.split_once('\n') else {
        profile(text);
        return;
    };
    let (Some(baseline), Some(candidate)) = (profile(baseline), profile(candidate)) else {
        return;
    };
    let spec = RolloutSpec::from_yaml(SPEC).expect("the fixed spec parses");
    let simulation = Simulation::new(spec, baseline, candidate).seed(7);
    simulation
        .check()
        .expect("the fixed spec is within the work limit");
    let report = simulation
        .run_blocking(None)
        .expect("a simulation of profiles that parsed runs");
    let _ = report.outcome.as_str();
}
