//! Configuration of the built-in strategies, with the defaults of Caxton's deployment ADR.

use std::time::Duration;

use caxton_core::Weight;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::{HumanDuration, MAX_DURATION, serde_text};
use crate::evidence::{DEFAULT_CONFIDENCE, Evidence, MAX_CONFIDENCE, MIN_CONFIDENCE};
use crate::judge::Judge;

/// Why a strategy configuration is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A canary needs at least one step.
    #[error("a canary needs at least one step before full promotion")]
    NoSteps,
    /// A canary step's weight is not strictly between 0 % and 100 %.
    #[error("canary step {index} has weight {weight}; steps must be above 0% and below 100%")]
    StepWeight {
        /// Index of the step, from 0.
        index: usize,
        /// Its weight.
        weight: Weight,
    },
    /// Canary weights must increase.
    #[error(
        "canary step {index} has weight {weight}, not above the previous step's {previous}; \
         weights must increase"
    )]
    StepOrder {
        /// Index of the step, from 0.
        index: usize,
        /// Its weight.
        weight: Weight,
        /// The previous step's weight.
        previous: Weight,
    },
    /// A duration that must be positive was zero.
    #[error("{field} must be longer than 0s")]
    ZeroDuration {
        /// Which setting.
        field: &'static str,
    },
    /// A duration is longer than [`MAX_DURATION`] (365 days). Specs are bounded when
    /// parsed; this catches a configuration built in code, whose holds and extensions
    /// would otherwise overflow when added up.
    #[error("{field} is {value}, longer than 365d, the longest a rollout setting may be")]
    TooLong {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: HumanDuration,
    },
    /// The gates' confidence is outside 50 %..=99.99 %.
    #[error("confidence is {value}; it must be between 50% and 99.99%")]
    Confidence {
        /// The value given, as a fraction.
        value: f64,
    },
    /// A number is out of its range.
    #[error("{field} is {value}; {expected}")]
    OutOfRange {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

/// Time limits for validating and warming up the candidate before it sees traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preflight {
    /// The longest validation may take (ADR default 30 s).
    #[serde(with = "serde_text")]
    pub validate: Duration,
    /// The longest warm-up may take (ADR default 60 s).
    #[serde(with = "serde_text")]
    pub warm_up: Duration,
}

impl Default for Preflight {
    fn default() -> Self {
        Preflight {
            validate: Duration::from_secs(30),
            warm_up: Duration::from_secs(60),
        }
    }
}

/// When a rollout rolls back, how often it checks, and how it deals with thin data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Conditions that roll the candidate back when they hold.
    pub rollback_on: Vec<Condition>,
    /// How often conditions are checked (default 1 m).
    #[serde(with = "serde_text")]
    pub check_interval: Duration,
    /// Requests the candidate must have handled in a step before conditions or the judge
    /// may decide anything (default 100).
    pub min_requests: u64,
    /// How much longer a step may hold, in total, for want of data or of a conclusive
    /// judgement, before the rollout pauses for a person (default 10 m).
    #[serde(with = "serde_text")]
    pub max_extension: Duration,
    /// How long a pause may wait for an operator before the rollout aborts (default 1 h).
    #[serde(with = "serde_text")]
    pub pause_timeout: Duration,
    /// How long an old deployment may take to drain before it is closed (default 30 s).
    #[serde(with = "serde_text")]
    pub drain_timeout: Duration,
    /// The statistical judge for latency; `None` (the default) leaves it out. Only what
    /// the spec names decides, so the judge is on only when a spec asks for it.
    pub judge: Option<Judge>,
    /// How sure a rollback condition must be before it decides (default 95 %): it trips
    /// when the data show it holds at this confidence, shared among the step's checks,
    /// and a step passes only when the data show every condition does not hold at this
    /// confidence. See [`crate::evidence`].
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            rollback_on: Vec::new(),
            check_interval: Duration::from_secs(60),
            min_requests: 100,
            max_extension: Duration::from_secs(600),
            pause_timeout: Duration::from_secs(3_600),
            drain_timeout: Duration::from_secs(30),
            judge: None,
            confidence: DEFAULT_CONFIDENCE,
        }
    }
}

impl Gates {
    /// The evidence a check needs in a step spanning `hold`: the gates' confidence,
    /// shared among the checks the step can make in its hold, its longest extension and
    /// its longest pause.
    pub fn evidence(&self, hold: Duration) -> Evidence {
        let span = hold
            .saturating_add(self.max_extension)
            .saturating_add(self.pause_timeout);
        Evidence::new(
            self.confidence,
            Evidence::looks_in(span, self.check_interval),
        )
    }

    /// Checks the settings: the check interval and the pause timeout are longer than 0s,
    /// and no duration is longer than [`MAX_DURATION`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_CONFIDENCE..=MAX_CONFIDENCE).contains(&self.confidence) {
            return Err(ConfigError::Confidence {
                value: self.confidence,
            });
        }
        for (field, value) in [
            ("check_interval", self.check_interval),
            ("pause_timeout", self.pause_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        at_most_max([
            ("check_interval", self.check_interval),
            ("max_extension", self.max_extension),
            ("pause_timeout", self.pause_timeout),
            ("drain_timeout", self.drain_timeout),
        ])
    }
}

/// The first of `durations` longer than [`MAX_DURATION`], as an error.
fn at_most_max<const N: usize>(
    durations: [(&'static str, Duration); N],
) -> Result<(), ConfigError> {
    match durations
        .into_iter()
        .find(|(_, value)| *value > MAX_DURATION)
    {
        Some((field, value)) => Err(ConfigError::TooLong {
            field,
            value: HumanDuration(value),
        }),
        None => Ok(()),
    }
}

/// One canary step: the candidate's weight and how long it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// The candidate's share of traffic.
    pub weight: Weight,
    /// How long the step holds before the candidate is compared and traffic increases.
    #[serde(with = "serde_text")]
    pub hold: Duration,
}

impl CanaryStep {
    /// A step of `weight` held for `hold`.
    pub fn new(weight: Weight, hold: Duration) -> Self {
        CanaryStep { weight, hold }
    }
}

/// Canary steps, checked: at least one, weights strictly increasing between 0 % and 100 %.
/// Full promotion follows the last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CanarySteps(Vec<CanaryStep>);

impl CanarySteps {
    /// Checks `steps`: at least one, weights strictly increasing between 0 % and 100 %,
    /// no hold longer than [`MAX_DURATION`].
    pub fn new(steps: Vec<CanaryStep>) -> Result<Self, ConfigError> {
        if steps.is_empty() {
            return Err(ConfigError::NoSteps);
        }
        for (index, step) in steps.iter().enumerate() {
            at_most_max([("hold", step.hold)])?;
            if step.weight == Weight::ZERO || step.weight >= Weight::FULL {
                return Err(ConfigError::StepWeight {
                    index,
                    weight: step.weight,
                });
            }
            if index > 0 && step.weight <= steps[index - 1].weight {
                return Err(ConfigError::StepOrder {
                    index,
                    weight: step.weight,
                    previous: steps[index - 1].weight,
                });
            }
        }
        Ok(CanarySteps(steps))
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[CanaryStep] {
        &self.0
    }

    /// Parses the compact form `5:5m,25:10m,50:10m` (weight in percent, colon, hold).
    ///
    /// ```
    /// use caxton_strategies::config::CanarySteps;
    ///
    /// let steps = CanarySteps::parse_compact("5:5m,25:10m,50:10m")?;
    /// assert_eq!(steps.steps().len(), 3);
    /// assert_eq!(steps, CanarySteps::default());
    /// # Ok::<(), caxton_strategies::config::CompactStepsError>(())
    /// ```
    pub fn parse_compact(text: &str) -> Result<Self, CompactStepsError> {
        let mut steps = Vec::new();
        let mut offset = 0;
        for piece in text.split(',') {
            let error = |position: usize, expected: &str, found: &str| CompactStepsError {
                input: text.to_owned(),
                position,
                message: format!("expected {expected}, found {found:?}"),
            };
            let lead = piece.len() - piece.trim_start().len();
            let Some((weight_text, hold_text)) = piece.split_once(':') else {
                return Err(error(
                    offset + lead,
                    "a step `weight:hold` such as `5:5m`",
                    piece.trim(),
                ));
            };
            let weight: Weight = weight_text.parse().map_err(|_| {
                error(
                    offset + lead,
                    "a weight in percent such as 5 or 12.5%",
                    weight_text.trim(),
                )
            })?;
            let hold_at = offset + weight_text.len() + 1;
            let hold =
                crate::duration::parse_duration(hold_text).map_err(|e| CompactStepsError {
                    input: text.to_owned(),
                    position: hold_at,
                    message: e.to_string(),
                })?;
            steps.push(CanaryStep::new(weight, hold));
            offset += piece.len() + 1;
        }
        CanarySteps::new(steps).map_err(|e| CompactStepsError {
            input: text.to_owned(),
            position: 0,
            message: e.to_string(),
        })
    }

    /// The compact form of these steps.
    pub fn to_compact(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.weight.to_string().trim_end_matches('%'),
                    HumanDuration(s.hold)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for CanarySteps {
    /// 5 % for 5 m, 25 % for 10 m, 50 % for 10 m, then 100 %.
    fn default() -> Self {
        let step = |bps: u16, minutes: u64| CanaryStep {
            weight: Weight::from_bps(u32::from(bps)).unwrap_or(Weight::ZERO),
            hold: Duration::from_secs(minutes * 60),
        };
        CanarySteps(vec![step(500, 5), step(2_500, 10), step(5_000, 10)])
    }
}

impl<'de> Deserialize<'de> for CanarySteps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let steps = Vec::<CanaryStep>::deserialize(deserializer)?;
        CanarySteps::new(steps).map_err(serde::de::Error::custom)
    }
}

/// Why a compact `--canary-stages` text is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("canary stages {input:?}, byte {position}: {message}")]
pub struct CompactStepsError {
    /// The whole text.
    pub input: String,
    /// Byte offset of the problem.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// The canary: weighted steps under metric gates, compared with the baseline before each
/// increase, then full promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Validation and warm-up limits.
    pub preflight: Preflight,
    /// The steps (default 5 % 5 m → 25 % 10 m → 50 % 10 m).
    pub steps: CanarySteps,
    /// Rollback conditions, intervals and the judge.
    pub gates: Gates,
    /// How long the old version stays warm after promotion, with conditions still checked
    /// and rollback instant (default 0 s: drained at once).
    #[serde(with = "serde_text")]
    pub cleanup: Duration,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            preflight: Preflight::default(),
            steps: CanarySteps::default(),
            gates: Gates::default(),
            cleanup: Duration::ZERO,
        }
    }
}

/// Blue-green: validate, warm up, switch all traffic at once, keep the old version warm
/// through cleanup so rollback stays instant, then retire it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreenConfig {
    /// Validation and warm-up limits (ADR defaults 30 s and 60 s).
    pub preflight: Preflight,
    /// How long the old version stays warm after the switch (ADR default 300 s).
    #[serde(with = "serde_text")]
    pub cleanup: Duration,
    /// Rollback conditions checked before the switch and during cleanup.
    pub gates: Gates,
}

impl Default for BlueGreenConfig {
    fn default() -> Self {
        BlueGreenConfig {
            preflight: Preflight::default(),
            cleanup: Duration::from_secs(300),
            gates: Gates::default(),
        }
    }
}

/// Direct: validate, switch, done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectConfig {
    /// Validation and warm-up limits.
    pub preflight: Preflight,
    /// How long the old version may take to drain (default 30 s).
    #[serde(with = "serde_text")]
    pub drain_timeout: Duration,
}

impl Default for DirectConfig {
    fn default() -> Self {
        DirectConfig {
            preflight: Preflight::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Rainbow: new sessions go to the newest version; older versions keep serving the
/// sessions pinned to them until those end, idle out or a forced-drain deadline passes.
///
/// Sessions are pinned by session affinity, which the host turns on when it registers a
/// sessions agent's first deployment; see [`Rainbow`](crate::builtin::Rainbow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RainbowConfig {
    /// Validation and warm-up limits.
    pub preflight: Preflight,
    /// Versions that may serve at once, the candidate included (at least 2; default 3).
    pub max_live_versions: u32,
    /// A session silent this long loses its pin (default 30 m). The rollout sets it on the
    /// agent's session affinity; it does not turn affinity on for correctness.
    #[serde(with = "serde_text")]
    pub session_idle_timeout: Duration,
    /// Sessions still on an old version this long after the switch are moved (default 24 h).
    #[serde(with = "serde_text")]
    pub forced_drain_after: Duration,
    /// Rollback conditions, checked until the old version is retired.
    pub gates: Gates,
    /// Steps that ramp the share of *new* sessions sent to the candidate (5 % → 25 % →
    /// 50 %, then the switch), each held and gated like a canary step before the next
    /// increase; sessions already pinned stay where they are. `None` (the default)
    /// switches every new session at once.
    #[serde(default)]
    pub steps: Option<CanarySteps>,
}

impl Default for RainbowConfig {
    fn default() -> Self {
        RainbowConfig {
            preflight: Preflight::default(),
            max_live_versions: 3,
            session_idle_timeout: Duration::from_secs(30 * 60),
            forced_drain_after: Duration::from_secs(24 * 3_600),
            gates: Gates::default(),
            steps: None,
        }
    }
}

impl RainbowConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_live_versions < 2 {
            return Err(ConfigError::OutOfRange {
                field: "max_live_versions",
                value: self.max_live_versions.to_string(),
                expected: "at least 2 (the candidate and the version it replaces)",
            });
        }
        if self.session_idle_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "session_idle_timeout",
            });
        }
        at_most_max([
            ("session_idle_timeout", self.session_idle_timeout),
            ("forced_drain_after", self.forced_drain_after),
        ])?;
        self.gates.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(percent: f64) -> Weight {
        Weight::from_percent(percent).unwrap()
    }

    #[test]
    fn canary_steps_must_increase_within_bounds() {
        let minute = Duration::from_secs(60);
        assert_eq!(CanarySteps::new(vec![]), Err(ConfigError::NoSteps));
        assert!(matches!(
            CanarySteps::new(vec![CanaryStep::new(w(100.0), minute)]),
            Err(ConfigError::StepWeight { index: 0, .. })
        ));
        assert!(matches!(
            CanarySteps::new(vec![
                CanaryStep::new(w(25.0), minute),
                CanaryStep::new(w(5.0), minute)
            ]),
            Err(ConfigError::StepOrder { index: 1, .. })
        ));
    }

    #[test]
    fn compact_steps_round_trip_and_errors_point_at_the_piece() {
        let steps = CanarySteps::parse_compact("5:5m,25:10m,50:10m").unwrap();
        assert_eq!(steps.to_compact(), "5:5m,25:10m,50:10m");
        let err = CanarySteps::parse_compact("5:5m,25:10x").unwrap_err();
        assert_eq!(err.position, 8);
        assert!(err.message.contains("unknown unit \"x\""), "{err}");
        let err = CanarySteps::parse_compact("5:5m,abc:1m").unwrap_err();
        assert_eq!(err.position, 5);
        let err = CanarySteps::parse_compact("5:5m,25").unwrap_err();
        assert!(err.to_string().contains("weight:hold"));
        let err = CanarySteps::parse_compact("50:5m,25:1m").unwrap_err();
        assert!(err.message.contains("must increase"));
    }

    #[test]
    fn rainbow_needs_room_for_two_versions() {
        let config = RainbowConfig {
            max_live_versions: 1,
            ..RainbowConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                field: "max_live_versions",
                ..
            })
        ));
        assert!(RainbowConfig::default().validate().is_ok());
    }
}
