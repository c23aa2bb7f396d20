//! Rollout specs: the first byte picks the format (even: YAML, odd: JSON), the rest is the
//! spec text. A refused spec is a `SpecError`; an accepted one builds its strategy or says
//! why not, has a plan, passes or fails the simulator's work check, and its configuration
//! round-trips through serde (a fixpoint after one trip: thresholds print rounded).

use caxton_strategies::plan::Plan;
use caxton_strategies::sim::{Simulation, SyntheticProfile};
use caxton_strategies::{RolloutSpec, StrategyConfig};

pub(crate) fn check(data: &[u8]) {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if format & 1 == 0 {
        RolloutSpec::from_yaml(text)
    } else {
        RolloutSpec::from_json(text)
    };
    let spec = match parsed {
        Ok(spec) => spec,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let _ = spec.strategy.build();
    let plan = Plan::of(&spec.strategy);
    let _ = plan.human();
    let _ = Simulation::new(
        spec.clone(),
        SyntheticProfile::default(),
        SyntheticProfile::default(),
    )
    .check();

    let once = serde_json::to_value(&spec.strategy).expect("a strategy serializes");
    let back: StrategyConfig = serde_json::from_value(once.clone())
        .unwrap_or_else(|e| panic!("a serialized strategy reads back: {e}\n{once}"));
    let twice = serde_json::to_value(&back).expect("a strategy serializes");
    let back_again: StrategyConfig =
        serde_json::from_value(twice.clone()).expect("a serialized strategy reads back");
    assert_eq!(
        back, back_again,
        "serde round trip is not a fixpoint\n{twice}"
    );
    assert_eq!(back.name(), spec.strategy.name());
}
