//! Rollout specs from YAML, JSON and the compact command-line forms.

use std::time::Duration;

use caxton_strategies::shadow::{Equivalence, ShadowAspect};
use caxton_strategies::spec::SpecFormat;
use caxton_strategies::{RolloutSpec, SpecError, StrategyConfig};

const ADR_CANARY: &str = "
deployment:
  strategy: canary            # direct | blue-green | canary | shadow | rainbow
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

#[test]
fn the_adr_canary_yaml_parses_and_equals_the_compact_form() {
    let spec = RolloutSpec::from_yaml(ADR_CANARY).unwrap();
    let StrategyConfig::Canary(canary) = &spec.strategy else {
        panic!("not a canary: {spec:?}")
    };
    assert_eq!(canary.preflight.validate, Duration::from_secs(30));
    assert_eq!(canary.steps.to_compact(), "5:5m,25:10m,50:10m");
    let conditions: Vec<String> = canary
        .gates
        .rollback_on
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(conditions, ["error_rate > 1%", "p99_latency > 100ms"]);
    let compact =
        RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%,p99>100ms"))
            .unwrap();
    assert_eq!(compact, spec);
}

#[test]
fn json_specs_have_the_same_shape() {
    let json = r#"{"deployment": {"strategy": "canary",
        "stages": [{"validate": "30s"}, {"canary": {"weight": "5%", "hold": "5m"}},
                   {"canary": {"weight": 25, "hold": "10m"}}, {"canary": {"weight": "50%", "hold": "10m"}},
                   {"full": "100%"}],
        "rollback_on": ["error_rate > 1%", "p99_latency > 100ms"]}}"#;
    assert_eq!(
        RolloutSpec::from_json(json).unwrap(),
        RolloutSpec::from_yaml(ADR_CANARY).unwrap()
    );
    assert_eq!(
        RolloutSpec::parse(json).unwrap(),
        RolloutSpec::from_yaml(ADR_CANARY).unwrap()
    );
}

#[test]
fn blue_green_takes_the_adr_stages_and_defaults() {
    let spec = RolloutSpec::from_yaml(
        "deployment:\n  strategy: blue-green\n  stages:\n    - validate: 30s\n    - warm_up: 60s\n    - switch: instant\n    - cleanup: 300s\n",
    )
    .unwrap();
    let StrategyConfig::BlueGreen(config) = &spec.strategy else {
        panic!()
    };
    assert_eq!(config.preflight.warm_up, Duration::from_secs(60));
    assert_eq!(config.cleanup, Duration::from_secs(300));
    let defaults = RolloutSpec::from_yaml("deployment:\n  strategy: blue_green\n").unwrap();
    assert_eq!(defaults, spec);
}

#[test]
fn shadow_and_rainbow_take_their_own_fields() {
    let shadow = RolloutSpec::from_yaml(
        "deployment:\n  strategy: shadow\n  duration: 15m\n  sample: 20%\n  compare: [output_equivalence, performance_metrics]\n  equivalence: exact\n  max_mismatch: 0.5%\n",
    )
    .unwrap();
    let StrategyConfig::Shadow(settings) = &shadow.strategy else {
        panic!()
    };
    assert_eq!(settings.duration, Duration::from_secs(900));
    assert_eq!(settings.sample.bps(), 2_000);
    assert_eq!(
        settings.compare,
        [
            ShadowAspect::OutputEquivalence,
            ShadowAspect::PerformanceMetrics
        ]
    );
    assert_eq!(settings.equivalence, Equivalence::Exact);
    assert!((settings.max_mismatch - 0.005).abs() < 1e-12);

    let rainbow = RolloutSpec::from_yaml(
        "deployment:\n  strategy: rainbow\n  max_live_versions: 4\n  session_idle_timeout: 45m\n  forced_drain_after: 12h\n",
    )
    .unwrap();
    let StrategyConfig::Rainbow(config) = &rainbow.strategy else {
        panic!()
    };
    assert_eq!(config.max_live_versions, 4);
    assert_eq!(config.session_idle_timeout, Duration::from_secs(45 * 60));
    assert_eq!(config.forced_drain_after, Duration::from_secs(12 * 3_600));
}

const RAINBOW_RAMP: &str = "
deployment:
  strategy: rainbow
  stages:
    - validate: 30s
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on: [error_rate > 1%]
  forced_drain_after: 12h
";

#[test]
fn rainbow_takes_canary_stages_that_ramp_new_sessions() {
    let spec = RolloutSpec::from_yaml(RAINBOW_RAMP).unwrap();
    let StrategyConfig::Rainbow(config) = &spec.strategy else {
        panic!()
    };
    let steps = config.steps.as_ref().expect("a ramp");
    assert_eq!(steps.to_compact(), "5:5m,25:10m,50:10m");
    assert_eq!(config.preflight.validate, Duration::from_secs(30));
    assert_eq!(config.gates.rollback_on.len(), 1);
    assert_eq!(config.forced_drain_after, Duration::from_secs(12 * 3_600));
    // The compact form and JSON say the same.
    let compact = RolloutSpec::from_yaml(
        "deployment:\n  strategy: rainbow\n  stages:\n    - validate: 30s\n  forced_drain_after: 12h\n",
    )
    .unwrap()
    .with_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%"))
    .unwrap();
    assert_eq!(compact, spec);
    let json = RolloutSpec::from_json(
        r#"{"deployment": {"strategy": "rainbow", "forced_drain_after": "12h", "stages": [{"validate": "30s"}, {"canary": {"weight": "5%", "hold": "5m"}}, {"canary": {"weight": "25%", "hold": "10m"}}, {"canary": {"weight": 50, "hold": "10m"}}, {"full": "100%"}], "rollback_on": ["error_rate > 1%"]}}"#,
    )
    .unwrap();
    assert_eq!(json, spec);

    // Without canary stages the switch is at once, as before.
    for yaml in [
        "deployment:\n  strategy: rainbow\n",
        "deployment:\n  strategy: rainbow\n  stages:\n    - validate: 10s\n    - full: 100%\n",
    ] {
        let StrategyConfig::Rainbow(config) = RolloutSpec::from_yaml(yaml).unwrap().strategy else {
            panic!()
        };
        assert_eq!(config.steps, None, "{yaml}");
    }

    // The canary's checks apply, with the same paths.
    let err = yaml_error(
        "deployment:\n  strategy: rainbow\n  stages:\n    - canary: { weight: 25%, hold: 5m }\n    - canary: { weight: 5%, hold: 5m }\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[1].canary.weight"));
    assert!(err.to_string().contains("must increase"), "{err}");
    let err = yaml_error(
        "deployment:\n  strategy: rainbow\n  stages:\n    - full: 100%\n    - canary: { weight: 5%, hold: 5m }\n",
    );
    assert!(err.to_string().contains("must be last"), "{err}");
    let err = yaml_error(
        "deployment:\n  strategy: rainbow\n  stages:\n    - canary: { weight: 5%, hold: 5m }\n    - full: 50%\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[1].full"));
    // A rainbow drains its old versions itself; a cleanup hold is not one of its stages.
    let err = yaml_error(
        "deployment:\n  strategy: rainbow\n  stages:\n    - canary: { weight: 5%, hold: 5m }\n    - cleanup: 5m\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[1]"));
    assert!(
        err.to_string()
            .contains("does not apply to strategy `rainbow`"),
        "{err}"
    );
}

#[test]
fn judge_settings_are_read_and_can_be_turned_off() {
    let spec = RolloutSpec::from_yaml(
        "deployment:\n  strategy: canary\n  judge: { confidence: 99%, tolerance: 5%, min_samples: 50, method: asymptotic }\n",
    )
    .unwrap();
    let judge = spec.strategy.gates().unwrap().judge.unwrap();
    assert!((judge.confidence() - 0.99).abs() < 1e-12);
    assert!((judge.tolerance() - 0.05).abs() < 1e-12);
    assert_eq!(judge.min_samples(), 50);
    let off = RolloutSpec::from_yaml("deployment:\n  strategy: canary\n  judge: off\n").unwrap();
    assert!(off.strategy.gates().unwrap().judge.is_none());
}

#[test]
fn no_judge_key_means_no_judge_for_every_strategy() {
    for yaml in [
        ADR_CANARY,
        "deployment:\n  strategy: canary\n",
        "deployment:\n  strategy: blue-green\n",
        "deployment:\n  strategy: shadow\n",
        "deployment:\n  strategy: rainbow\n",
    ] {
        let spec = RolloutSpec::from_yaml(yaml).unwrap();
        if let Some(gates) = spec.strategy.gates() {
            assert!(gates.judge.is_none(), "{yaml}");
        }
    }
    let compact = RolloutSpec::from_compact(Some("5:5m"), Some("error_rate>1%")).unwrap();
    assert!(compact.strategy.gates().unwrap().judge.is_none());
}

#[test]
fn judge_latency_turns_the_judge_on_with_that_tolerance() {
    let spec =
        RolloutSpec::from_yaml("deployment:\n  strategy: canary\n  judge: { latency: 15% }\n")
            .unwrap();
    let judge = spec.strategy.gates().unwrap().judge.unwrap();
    assert!((judge.tolerance() - 0.15).abs() < 1e-12);
    assert!((judge.confidence() - 0.95).abs() < 1e-12);
    let json = RolloutSpec::from_json(
        r#"{"deployment": {"strategy": "shadow", "judge": {"latency": "10%"}}}"#,
    )
    .unwrap();
    assert!(json.strategy.gates().unwrap().judge.is_some());
    let both =
        yaml_error("deployment:\n  strategy: canary\n  judge: { latency: 10%, tolerance: 5% }\n");
    assert!(
        both.to_string().contains("deployment.judge.latency"),
        "{both}"
    );
    let negative = yaml_error("deployment:\n  strategy: canary\n  judge: { latency: -10% }\n");
    assert!(
        negative.to_string().contains("deployment.judge"),
        "{negative}"
    );
}

fn yaml_error(text: &str) -> SpecError {
    RolloutSpec::from_yaml(text).expect_err("the spec is wrong")
}

#[test]
fn an_unknown_field_is_named_with_its_path_and_line() {
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 5m, pace: fast }\n",
    );
    assert!(
        matches!(
            &err,
            SpecError::Syntax { format: SpecFormat::Yaml, path, line: Some(4), .. } if path == "deployment.stages[0].canary.pace"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("unknown field `pace`"), "{err}");
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[test]
fn an_unknown_strategy_is_named() {
    let err = yaml_error("deployment:\n  strategy: canery\n");
    assert_eq!(err.path(), Some("deployment.strategy"));
    assert!(
        err.to_string().contains("unknown variant `canery`"),
        "{err}"
    );
    assert!(
        err.to_string().contains("canary"),
        "the message lists the choices: {err}"
    );
}

#[test]
fn an_unknown_unit_is_named_with_its_path() {
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 5 fortnights }\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[0].canary.hold"));
    assert!(
        err.to_string().contains("unknown unit \"fortnights\""),
        "{err}"
    );
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 150%, hold: 5m }\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[0].canary.weight"));
}

#[test]
fn a_bad_condition_is_named_with_its_byte_position() {
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  rollback_on:\n    - error_rate > 1%\n    - p99_latency > 100\n",
    );
    assert_eq!(err.path(), Some("deployment.rollback_on[1]"));
    let text = err.to_string();
    assert!(text.contains("byte 14"), "{text}");
    assert!(text.contains("a time with a unit"), "{text}");
    assert!(text.contains("line 5"), "{text}");
}

#[test]
fn fields_of_another_strategy_are_refused() {
    let err = yaml_error("deployment:\n  strategy: canary\n  max_live_versions: 3\n");
    assert_eq!(err.path(), Some("deployment.max_live_versions"));
    assert!(
        err.to_string()
            .contains("does not apply to strategy `canary`"),
        "{err}"
    );
    let err = yaml_error("deployment:\n  strategy: canary\n  stages:\n    - switch: instant\n");
    assert_eq!(err.path(), Some("deployment.stages[0]"));
}

#[test]
fn stage_order_and_values_are_checked() {
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 25%, hold: 5m }\n    - canary: { weight: 5%, hold: 5m }\n",
    );
    assert_eq!(err.path(), Some("deployment.stages[1].canary.weight"));
    assert!(err.to_string().contains("must increase"), "{err}");
    let err = yaml_error(
        "deployment:\n  strategy: canary\n  stages:\n    - full: 100%\n    - canary: { weight: 5%, hold: 5m }\n",
    );
    assert!(err.to_string().contains("must be last"), "{err}");
    let err = yaml_error(
        "deployment:\n  strategy: blue-green\n  stages:\n    - cleanup: 5m\n    - switch: instant\n",
    );
    assert!(err.to_string().contains("must come after"), "{err}");
    let err = yaml_error("deployment:\n  strategy: blue-green\n  stages:\n    - switch: 10s\n");
    assert!(err.to_string().contains("atomic"), "{err}");
    let err = yaml_error("deployment:\n  strategy: rainbow\n  max_live_versions: 1\n");
    assert_eq!(err.path(), Some("deployment.max_live_versions"));
}

#[test]
fn json_errors_carry_path_line_and_column() {
    let err = RolloutSpec::from_json(
        "{\"deployment\": {\"strategy\": \"canary\",\n \"check_interval\": \"1 lightyear\"}}",
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            SpecError::Syntax { format: SpecFormat::Json, path, line: Some(2), column: Some(_), .. } if path == "deployment.check_interval"
        ),
        "{err:?}"
    );
    let err = RolloutSpec::from_json("{\"deployment\": {\"strategy\": \"canary\"}} trailing")
        .unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn compact_forms_report_their_flag_and_position() {
    let err = RolloutSpec::from_compact(Some("5:5m,25:10q"), None).unwrap_err();
    assert!(err.to_string().starts_with("--canary-stages"), "{err}");
    assert!(err.to_string().contains("byte 8"), "{err}");
    let err = RolloutSpec::from_compact(None, Some("error_rate>1%,p99>>100ms")).unwrap_err();
    assert!(err.to_string().starts_with("--rollback-on"), "{err}");
    assert!(err.to_string().contains("byte 18"), "{err}");
    let blue_green = RolloutSpec::from_yaml("deployment:\n  strategy: blue-green\n").unwrap();
    let err = blue_green.with_compact(Some("5:5m"), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("do not apply to strategy `blue-green`"),
        "{err}"
    );
}

#[test]
fn gates_take_a_confidence_and_refuse_a_bad_one_by_its_path() {
    let spec = RolloutSpec::from_yaml(
        "deployment:\n  strategy: canary\n  rollback_on: [\"error_rate > 1%\"]\n  confidence: 99%\n",
    )
    .unwrap();
    assert_eq!(spec.strategy.gates().unwrap().confidence, 0.99);
    let default = RolloutSpec::from_yaml("deployment:\n  strategy: canary\n").unwrap();
    assert_eq!(default.strategy.gates().unwrap().confidence, 0.95);
    let fraction =
        RolloutSpec::from_yaml("deployment:\n  strategy: rainbow\n  confidence: 0.9\n").unwrap();
    assert_eq!(fraction.strategy.gates().unwrap().confidence, 0.9);
    for bad in ["40%", "100%", "150%", "1.5", "-3%", "sure"] {
        let err = yaml_error(&format!(
            "deployment:\n  strategy: canary\n  confidence: {bad}\n"
        ));
        assert_eq!(err.path(), Some("deployment.confidence"), "{bad}: {err}");
    }
    let err = yaml_error("deployment:\n  strategy: direct\n  confidence: 95%\n");
    assert_eq!(err.path(), Some("deployment.confidence"), "{err}");
}
