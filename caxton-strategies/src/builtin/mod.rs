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

use serde::Serialize;

use crate::config::{
    BlueGreenConfig, CanaryConfig, ConfigError, DirectConfig, Gates, Preflight, RainbowConfig,
};
use crate::shadow::ShadowSettings;
use crate::strategy::Strategy;

/// The configuration of one built-in strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
