//! The five built-in strategies, all written against the public [`Strategy`] trait.

mod blue_green;
mod canary;
mod common;
mod direct;
mod rainbow;
mod shadow;

pub use blue_green::BlueGreen;
pub use canary::{Canary, canary_stage_name};
pub use direct::Direct;
pub use rainbow::{Rainbow, rainbow_stage_name};
pub use shadow::Shadow;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{
    BlueGreenConfig, CanaryConfig, CanaryStep, CanarySteps, ConfigError, DirectConfig, Gates,
    Preflight, RainbowConfig,
};
use crate::shadow::ShadowSettings;
use crate::strategy::Strategy;

/// The configuration of one built-in strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StrategyConfig {
    /// Validate, switch, done.
    Direct(DirectConfig),
    /// Validate, warm up, switch at once, keep the old version warm through cleanup.
    BlueGreen(BlueGreenConfig),
    /// Weighted steps under metric gates and the judge.
    Canary(CanaryConfig),
    /// Mirror traffic, compare, recommend.
    Shadow(ShadowSettings),
    /// New sessions to the newest version; old ones drain their sessions.
    Rainbow(RainbowConfig),
}

impl StrategyConfig {
    /// The strategy's name: `direct`, `blue-green`, `canary`, `shadow` or `rainbow`.
    pub fn name(&self) -> &'static str {
        match self {
            StrategyConfig::Direct(_) => "direct",
            StrategyConfig::BlueGreen(_) => "blue-green",
            StrategyConfig::Canary(_) => "canary",
            StrategyConfig::Shadow(_) => "shadow",
            StrategyConfig::Rainbow(_) => "rainbow",
        }
    }

    /// A fresh state machine for one rollout.
    pub fn build(&self) -> Result<Box<dyn Strategy>, ConfigError> {
        Ok(match self {
            StrategyConfig::Direct(config) => Box::new(Direct::new(config.clone())),
            StrategyConfig::BlueGreen(config) => Box::new(BlueGreen::new(config.clone())?),
            StrategyConfig::Canary(config) => Box::new(Canary::new(config.clone())?),
            StrategyConfig::Shadow(config) => Box::new(Shadow::new(config.clone())?),
            StrategyConfig::Rainbow(config) => Box::new(Rainbow::new(config.clone())?),
        })
    }

    /// The gates, for strategies that have them.
    pub fn gates(&self) -> Option<&Gates> {
        match self {
            StrategyConfig::Direct(_) => None,
            StrategyConfig::BlueGreen(c) => Some(&c.gates),
            StrategyConfig::Canary(c) => Some(&c.gates),
            StrategyConfig::Shadow(c) => Some(&c.gates),
            StrategyConfig::Rainbow(c) => Some(&c.gates),
        }
    }

    /// The gates, mutably.
    pub fn gates_mut(&mut self) -> Option<&mut Gates> {
        match self {
            StrategyConfig::Direct(_) => None,
            StrategyConfig::BlueGreen(c) => Some(&mut c.gates),
            StrategyConfig::Canary(c) => Some(&mut c.gates),
            StrategyConfig::Shadow(c) => Some(&mut c.gates),
            StrategyConfig::Rainbow(c) => Some(&mut c.gates),
        }
    }

    /// The rest of this rollout, for resuming it after a host restart: `stage` is the
    /// stage it was in (`canary.25_percent`, `blue_green.cleanup`, …), with
    /// `percentage` its weight and `remaining` what was left of its hold. Canary and
    /// rainbow keep the steps from that stage on, the first holding only for `remaining`;
    /// blue-green keeps `remaining` of its cleanup; shadow `remaining` of its duration.
    /// A stage the config does not know resumes the whole rollout (validation and warm-up
    /// are not repeated by a resuming driver).
    pub fn resumed_at(&self, stage: &str, percentage: Option<f64>, remaining: Duration) -> Self {
        let remaining_steps = |steps: &CanarySteps| -> Option<CanarySteps> {
            let percentage = percentage?;
            let from = steps
                .steps()
                .iter()
                .position(|step| (step.weight.percent() - percentage).abs() < 1e-9)?;
            let mut rest: Vec<CanaryStep> = steps.steps()[from..].to_vec();
            rest[0].hold = remaining.max(Duration::from_millis(1));
            CanarySteps::new(rest).ok()
        };
        let mut resumed = self.clone();
        match &mut resumed {
            StrategyConfig::Canary(canary) => {
                if let Some(steps) = remaining_steps(&canary.steps) {
                    canary.steps = steps;
                } else if stage.ends_with("full") || stage.contains("cleanup") {
                    canary.cleanup = remaining.min(canary.cleanup);
                }
            }
            StrategyConfig::Rainbow(rainbow) => {
                if let Some(steps) = rainbow.steps.as_ref().and_then(remaining_steps) {
                    rainbow.steps = Some(steps);
                } else if stage.starts_with("rainbow.switch") || stage.starts_with("rainbow.drain")
                {
                    rainbow.steps = None;
                }
            }
            StrategyConfig::BlueGreen(blue_green) if stage == "blue_green.cleanup" => {
                blue_green.cleanup = remaining;
            }
            StrategyConfig::Shadow(shadow) if stage.starts_with("shadow") => {
                shadow.duration = remaining.max(Duration::from_millis(1));
            }
            _ => {}
        }
        resumed
    }

    /// The validation and warm-up limits.
    pub fn preflight(&self) -> &Preflight {
        match self {
            StrategyConfig::Direct(c) => &c.preflight,
            StrategyConfig::BlueGreen(c) => &c.preflight,
            StrategyConfig::Canary(c) => &c.preflight,
            StrategyConfig::Shadow(c) => &c.preflight,
            StrategyConfig::Rainbow(c) => &c.preflight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RolloutSpec;

    fn spec(json: &str) -> StrategyConfig {
        RolloutSpec::parse(json).unwrap().strategy
    }

    #[test]
    fn every_strategy_config_round_trips_through_json_for_the_journal() {
        for json in [
            r#"{"deployment": {"strategy": "direct"}}"#,
            r#"{"deployment": {"strategy": "blue-green", "stages": [{"cleanup": "90s"}]}}"#,
            r#"{"deployment": {"strategy": "canary", "rollback_on": ["error_rate > 1%", "p99_latency > 100ms"]}}"#,
            r#"{"deployment": {"strategy": "shadow", "duration": "10m", "sample": "50%"}}"#,
            r#"{"deployment": {"strategy": "rainbow", "stages": [{"canary": {"weight": "5%", "hold": "5m"}}, {"full": "100%"}]}}"#,
        ] {
            let config = spec(json);
            let value = serde_json::to_value(&config).unwrap();
            let back: StrategyConfig = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(back, config, "{value}");
        }
    }

    #[test]
    fn a_resumed_canary_keeps_the_steps_from_its_stage_on_with_what_was_left_of_the_hold() {
        let config = spec(
            r#"{"deployment": {"strategy": "canary", "stages": [{"canary": {"weight": "5%", "hold": "5m"}}, {"canary": {"weight": "25%", "hold": "10m"}}, {"full": "100%"}]}}"#,
        );
        let StrategyConfig::Canary(resumed) =
            config.resumed_at("canary.25_percent", Some(25.0), Duration::from_secs(120))
        else {
            panic!("still a canary")
        };
        let steps = resumed.steps.steps();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].weight.percent(), 25.0);
        assert_eq!(steps[0].hold, Duration::from_secs(120));
        // An unknown stage resumes the whole rollout.
        assert_eq!(
            config.resumed_at("canary.7_percent", Some(7.0), Duration::ZERO),
            config
        );
    }

    #[test]
    fn a_resumed_blue_green_keeps_what_was_left_of_its_cleanup() {
        let config =
            spec(r#"{"deployment": {"strategy": "blue-green", "stages": [{"cleanup": "5m"}]}}"#);
        let StrategyConfig::BlueGreen(resumed) =
            config.resumed_at("blue_green.cleanup", None, Duration::from_secs(30))
        else {
            panic!("still blue-green")
        };
        assert_eq!(resumed.cleanup, Duration::from_secs(30));
    }
}
