//! Limits that hold whatever a spec asks for: every duration and every threshold is
//! bounded, with an error that names where it was written, and a simulation refuses a
//! spec that would take it too many condition checks.

use std::time::Duration;

use caxton_core::Weight;
use caxton_strategies::condition::{Condition, ConditionError};
use caxton_strategies::config::{CanaryConfig, CanaryStep, CanarySteps, ConfigError, Gates};
use caxton_strategies::duration::{MAX_DURATION, format_duration, parse_duration};
use caxton_strategies::{RolloutSpec, StrategyConfig};
use proptest::prelude::*;

/// `u64::MAX`: as bare seconds it once overflowed the arithmetic of plans and holds.
const HUGE: &str = "18446744073709551615";

fn canary(fields: &str) -> String {
    format!("deployment:\n  strategy: canary\n{fields}")
}

#[test]
fn a_duration_beyond_a_year_is_refused_naming_its_path() {
    let cases = [
        (
            canary(&format!("  check_interval: {HUGE}\n")),
            "deployment.check_interval",
        ),
        (
            canary("  check_interval: 366d\n"),
            "deployment.check_interval",
        ),
        (
            canary("  max_extension: 8761h\n"),
            "deployment.max_extension",
        ),
        (
            canary(&format!("  pause_timeout: {HUGE}\n")),
            "deployment.pause_timeout",
        ),
        (
            canary("  drain_timeout: 99999999999d\n"),
            "deployment.drain_timeout",
        ),
        (
            canary(&format!(
                "  stages:\n    - canary: {{ weight: 5%, hold: {HUGE} }}\n"
            )),
            "deployment.stages[0].canary.hold",
        ),
        (
            canary(&format!("  stages:\n    - validate: {HUGE}\n")),
            "deployment.stages[0].validate",
        ),
        (
            "deployment:\n  strategy: blue-green\n  stages:\n    - cleanup: 365d1ms\n".to_owned(),
            "deployment.stages[0].cleanup",
        ),
        (
            format!("deployment:\n  strategy: shadow\n  duration: {HUGE}\n"),
            "deployment.duration",
        ),
        (
            format!("deployment:\n  strategy: rainbow\n  forced_drain_after: {HUGE}\n"),
            "deployment.forced_drain_after",
        ),
        (
            "deployment:\n  strategy: rainbow\n  session_idle_timeout: 400d\n".to_owned(),
            "deployment.session_idle_timeout",
        ),
    ];
    for (yaml, path) in cases {
        let err = RolloutSpec::from_yaml(&yaml).expect_err(&yaml);
        assert_eq!(err.path(), Some(path), "{err}");
        let text = err.to_string();
        assert!(text.contains("365d"), "the limit is named: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
    let json = format!(r#"{{"deployment": {{"strategy": "canary", "check_interval": {HUGE}}}}}"#);
    let err = RolloutSpec::from_json(&json).unwrap_err();
    assert_eq!(err.path(), Some("deployment.check_interval"), "{err}");
    assert!(err.to_string().contains("365d"), "{err}");
    let err = RolloutSpec::from_compact(Some("5:400d"), None).unwrap_err();
    assert!(err.to_string().contains("365d"), "{err}");
}

#[test]
fn a_year_itself_is_allowed() {
    assert_eq!(MAX_DURATION, Duration::from_secs(365 * 86_400));
    assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
    assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
    assert!(parse_duration("365d1ms").is_err());
    let spec = RolloutSpec::from_yaml(&canary("  check_interval: 31536000\n")).unwrap();
    assert_eq!(spec.strategy.gates().unwrap().check_interval, MAX_DURATION);
}

#[test]
fn a_configuration_built_in_code_is_bounded_as_well() {
    // A hold extended by an interval near `Duration::MAX` would overflow `extended + step`.
    let mut config = CanaryConfig::default();
    config.gates.check_interval = Duration::MAX;
    config.gates.max_extension = Duration::MAX;
    let Err(err) = StrategyConfig::Canary(config).build() else {
        panic!("a canary checking every u64::MAX seconds was built");
    };
    assert!(
        matches!(
            err,
            ConfigError::TooLong {
                field: "check_interval",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("365d"), "{err}");
    for field in ["max_extension", "pause_timeout", "drain_timeout"] {
        let mut gates = Gates::default();
        let slot = match field {
            "max_extension" => &mut gates.max_extension,
            "pause_timeout" => &mut gates.pause_timeout,
            _ => &mut gates.drain_timeout,
        };
        *slot = MAX_DURATION + Duration::from_millis(1);
        assert!(
            matches!(gates.validate(), Err(ConfigError::TooLong { field: f, .. }) if f == field),
            "{field}"
        );
    }
    let step = CanaryStep::new(Weight::from_percent(5.0).unwrap(), Duration::MAX);
    assert!(matches!(
        CanarySteps::new(vec![step]),
        Err(ConfigError::TooLong { field: "hold", .. })
    ));
}

#[test]
fn a_threshold_that_is_not_finite_or_never_reachable_is_refused_naming_the_condition() {
    for (text, says) in [
        ("p99 > 1e400ms", "finite"),
        ("p99 > 1e308s", "finite"),
        ("p99 > 86401s", "86400s"),
        ("mean_latency >= 1e12us", "86400s"),
        ("error_rate > 1e400%", "finite"),
        ("fuel_per_message > 1e400", "finite"),
        ("cost_per_session > 1e16", "1e15"),
        ("error_rate > 1e400 * baseline", "finite"),
        ("error_rate > baseline * 1e400", "finite"),
        ("p99 > baseline * 1001", "factor of 1000"),
    ] {
        let err = text.parse::<Condition>().expect_err(text);
        assert!(
            matches!(err, ConditionError::OutOfRange { .. }),
            "{text}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("{text:?}")),
            "names the condition: {message}"
        );
        assert!(message.contains(says), "{text}: {message}");
    }
    // At the limits, and what people write, still parse.
    for text in [
        "p99 > 86400s",
        "p99 > 100ms",
        "fuel_per_message > 1e6",
        "cost_per_session > 1e15",
        "error_rate > 100%",
        "error_rate > baseline * 1000",
        "p99 > 1e-400ms",
    ] {
        assert!(text.parse::<Condition>().is_ok(), "{text}");
    }
    let err = RolloutSpec::from_yaml(&canary("  rollback_on:\n    - p99 > 1e400ms\n")).unwrap_err();
    assert_eq!(err.path(), Some("deployment.rollback_on[0]"), "{err}");
    assert!(err.to_string().contains("p99 > 1e400ms"), "{err}");
    let err = RolloutSpec::from_compact(None, Some("error_rate>1%,p99>1e400ms")).unwrap_err();
    assert!(err.to_string().starts_with("--rollback-on"), "{err}");
}

/// Runs `spec` through the simulator on another thread; `None` if it is still running
/// after `limit` (the thread is left behind: the test fails anyway).
#[cfg(feature = "sim")]
fn simulate_within(
    spec: RolloutSpec,
    limit: std::time::Duration,
) -> Option<Result<caxton_strategies::RolloutReport, caxton_strategies::sim::SimulationError>> {
    use caxton_strategies::sim::Simulation;
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let simulation = Simulation::new(
            spec,
            "error_rate=0.2%,p99=40ms,rps=50".parse().unwrap(),
            "error_rate=0.2%,p99=40ms".parse().unwrap(),
        );
        let _ = done.send(simulation.run_blocking(None));
    });
    result.recv_timeout(limit).ok()
}

#[cfg(feature = "sim")]
#[test]
fn a_simulation_that_would_run_a_billion_checks_is_refused_at_once() {
    use caxton_strategies::sim::{MAX_SIMULATED_CHECKS, SimulationError};
    // 100 days checked every millisecond: 8.64e9 checks, hours of work.
    let spec = RolloutSpec::from_yaml(&canary(
        "  stages:\n    - canary: { weight: 5%, hold: 100d }\n  check_interval: 1ms\n",
    ))
    .unwrap();
    let result = simulate_within(spec, Duration::from_secs(10)).expect("refused in seconds");
    let err = result.expect_err("refused");
    assert!(
        matches!(err, SimulationError::TooMuchWork { checks, .. } if checks > MAX_SIMULATED_CHECKS),
        "{err:?}"
    );
    let text = err.to_string();
    for names in ["check_interval", "hold", "100000"] {
        assert!(text.contains(names), "names {names}: {text}");
    }
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[cfg(feature = "sim")]
#[test]
fn a_simulation_within_the_limit_still_runs() {
    // Two hours checked every second: 7,200 checks, and at worst the extension and a pause.
    let spec = RolloutSpec::from_yaml(&canary(
        "  stages:\n    - canary: { weight: 5%, hold: 2h }\n  check_interval: 1s\n  \
         max_extension: 10m\n  pause_timeout: 1h\n  min_requests: 10\n  judge: off\n",
    ))
    .unwrap();
    let report = simulate_within(spec, Duration::from_secs(120))
        .expect("finished")
        .expect("ran");
    assert_eq!(report.outcome.as_str(), "promoted");
}

proptest! {
    /// Whatever the text, a duration that parses is at most a year; bare seconds too.
    #[test]
    fn no_parsed_duration_is_longer_than_a_year(
        number in 0u64..u64::MAX,
        unit in prop::sample::select(vec!["ms", "s", "m", "h", "d"]),
        rest in prop::sample::select(vec!["", "1ms", "59s", "23h", ".5d"]),
    ) {
        if let Ok(duration) = parse_duration(&format!("{number}{unit}{rest}")) {
            prop_assert!(duration <= MAX_DURATION);
        }
        let yaml = canary(&format!("  check_interval: {number}\n"));
        match RolloutSpec::from_yaml(&yaml) {
            Ok(spec) => prop_assert!(spec.strategy.gates().unwrap().check_interval <= MAX_DURATION),
            Err(err) => prop_assert_eq!(err.path(), Some("deployment.check_interval")),
        }
    }

    /// Every duration up to the limit, to the millisecond, is written so it reads back.
    #[test]
    fn durations_up_to_a_year_round_trip(ms in 0..=MAX_DURATION.as_millis() as u64) {
        let duration = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
    }
}
