//! Rollout specs: YAML or JSON in the shape of Caxton's deployment ADR, and the compact
//! command-line forms `--canary-stages "5:5m,25:10m,50:10m"` and
//! `--rollback-on "error_rate>1%,p99>100ms"`.
//!
//! ```yaml
//! deployment:
//!   strategy: canary            # direct | blue-green | canary | shadow | rainbow
//!   stages:
//!     - validate: 30s
//!     - canary: { weight: 5%, hold: 5m }
//!     - canary: { weight: 25%, hold: 10m }
//!     - canary: { weight: 50%, hold: 10m }
//!     - full: 100%
//!   rollback_on:
//!     - error_rate > 1%
//!     - p99_latency > 100ms
//! ```
//!
//! Blue-green takes the stages `validate`, `warm_up`, `switch` and `cleanup`; shadow
//! takes `duration`, `sample`, `compare`, `equivalence`, `max_mismatch` and
//! `resource_metrics`; rainbow takes `max_live_versions`, `session_idle_timeout`,
//! `forced_drain_after` and, to ramp the share of new sessions before the switch, the
//! canary stages (`- canary: { weight: 5%, hold: 5m }` … `- full: 100%`). Every
//! strategy with gates also takes `check_interval`, `min_requests`, `max_extension`,
//! `pause_timeout`, `drain_timeout` and `confidence` (how sure a rollback condition must
//! be before it decides, from 50% to 99.99%, default 95%; see
//! [`evidence`](crate::evidence)). Only the gates a spec names decide: the
//! Mann-Whitney latency judge (canary and shadow) is off unless the spec turns it on with
//! `judge: { latency: 10% }` (the latency regression it tolerates) or `judge: {
//! confidence: 95%, tolerance: 10%, min_samples: 20 }`; `judge: off` is accepted too.
//! A wrong field, strategy, unit or expression is an error that names it and where it is.
//! Durations are written `30s`, `5m`, `1h30m`, `100ms`, `2d` or as a bare number of
//! seconds, and none may be longer than 365 days
//! ([`MAX_DURATION`](crate::duration::MAX_DURATION)): a longer one is refused with its path.

use std::fmt;
use std::time::Duration;

use caxton_core::Weight;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::builtin::StrategyConfig;
use crate::condition::{Condition, ConditionError};
use crate::config::{
    BlueGreenConfig, CanaryConfig, CanaryStep, CanarySteps, CompactStepsError, DirectConfig, Gates,
    Preflight, RainbowConfig,
};
use crate::duration::serde_text;
use crate::evidence::{MAX_CONFIDENCE, MIN_CONFIDENCE};
use crate::judge::{Judge, Method};
use crate::shadow::{Equivalence, ShadowAspect, ShadowSettings};

/// A parsed, checked rollout spec.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// The strategy and its settings.
    pub strategy: StrategyConfig,
}

/// The text format of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

impl fmt::Display for SpecFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecFormat::Yaml => "YAML",
            SpecFormat::Json => "JSON",
        })
    }
}

/// Why a spec was refused. Every variant says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The text could not be read as a spec: bad syntax, an unknown field, strategy or
    /// unit, a bad value.
    #[error("{format} spec, {}{}: {message}", display_path(path), display_location(*line, *column))]
    Syntax {
        /// YAML or JSON.
        format: SpecFormat,
        /// Where in the document, e.g. `deployment.stages[2].canary.weight`.
        path: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// The document parsed but does not make a valid rollout.
    #[error("spec, {}: {message}", display_path(path))]
    Invalid {
        /// Where in the document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A compact `--canary-stages` value is wrong.
    #[error("--canary-stages: {0}")]
    CanaryStages(#[from] CompactStepsError),
    /// A compact `--rollback-on` value is wrong.
    #[error("--rollback-on: {0}")]
    RollbackOn(#[from] ConditionError),
}

fn display_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        "at the top level".to_owned()
    } else {
        format!("at {path}")
    }
}

fn display_location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}

impl SpecError {
    /// The path in the document the error is about, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            SpecError::Syntax { path, .. } | SpecError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    deployment: RawDeployment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StrategyKind {
    Direct,
    #[serde(alias = "blue_green")]
    BlueGreen,
    Canary,
    Shadow,
    Rainbow,
}

impl StrategyKind {
    fn name(self) -> &'static str {
        match self {
            StrategyKind::Direct => "direct",
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Canary => "canary",
            StrategyKind::Shadow => "shadow",
            StrategyKind::Rainbow => "rainbow",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    strategy: StrategyKind,
    #[serde(default)]
    stages: Option<Vec<RawStage>>,
    #[serde(default)]
    rollback_on: Option<Vec<Condition>>,
    #[serde(default, with = "serde_text::option")]
    check_interval: Option<Duration>,
    #[serde(default)]
    min_requests: Option<u64>,
    #[serde(default, with = "serde_text::option")]
    max_extension: Option<Duration>,
    #[serde(default, with = "serde_text::option")]
    pause_timeout: Option<Duration>,
    #[serde(default, with = "serde_text::option")]
    drain_timeout: Option<Duration>,
    #[serde(default)]
    judge: Option<JudgeSetting>,
    #[serde(default)]
    confidence: Option<Fraction>,
    #[serde(default, with = "serde_text::option")]
    duration: Option<Duration>,
    #[serde(default)]
    sample: Option<PercentWeight>,
    #[serde(default)]
    compare: Option<Vec<ShadowAspect>>,
    #[serde(default)]
    equivalence: Option<Equivalence>,
    #[serde(default)]
    max_mismatch: Option<Fraction>,
    #[serde(default)]
    resource_metrics: Option<Vec<String>>,
    #[serde(default)]
    max_live_versions: Option<u32>,
    #[serde(default, with = "serde_text::option")]
    session_idle_timeout: Option<Duration>,
    #[serde(default, with = "serde_text::option")]
    forced_drain_after: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawStage {
    Validate(#[serde(with = "serde_text")] Duration),
    WarmUp(#[serde(with = "serde_text")] Duration),
    Canary(RawCanaryStep),
    Full(PercentWeight),
    Switch(#[serde(with = "serde_text")] Duration),
    Cleanup(#[serde(with = "serde_text")] Duration),
}

impl RawStage {
    fn name(&self) -> &'static str {
        match self {
            RawStage::Validate(_) => "validate",
            RawStage::WarmUp(_) => "warm_up",
            RawStage::Canary(_) => "canary",
            RawStage::Full(_) => "full",
            RawStage::Switch(_) => "switch",
            RawStage::Cleanup(_) => "cleanup",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanaryStep {
    weight: PercentWeight,
    #[serde(with = "serde_text")]
    hold: Duration,
}

/// A weight written `5%`, `12.5%` or a bare number of percent.
#[derive(Debug, Clone, Copy)]
struct PercentWeight(Weight);

impl<'de> Deserialize<'de> for PercentWeight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = PercentWeight;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as 5% or 12.5%")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PercentWeight, E> {
                text.parse().map(PercentWeight).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, percent: f64) -> Result<PercentWeight, E> {
                self.visit_str(&percent.to_string())
            }
            fn visit_u64<E: de::Error>(self, percent: u64) -> Result<PercentWeight, E> {
                self.visit_str(&percent.to_string())
            }
            fn visit_i64<E: de::Error>(self, percent: i64) -> Result<PercentWeight, E> {
                self.visit_str(&percent.to_string())
            }
        }
        deserializer.deserialize_any(PercentVisitor)
    }
}

/// A fraction written `95%` or `0.95`.
#[derive(Debug, Clone, Copy)]
struct Fraction(f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FractionVisitor;
        impl Visitor<'_> for FractionVisitor {
            type Value = Fraction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as 95% or a fraction such as 0.95")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Fraction, E> {
                let bad = || {
                    E::custom(format!(
                        "{text:?} is not a percentage such as 95% or a fraction such as 0.95"
                    ))
                };
                match text.trim().strip_suffix('%') {
                    Some(number) => number
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| p.is_finite() && *p >= 0.0)
                        .map(|p| Fraction(p / 100.0))
                        .ok_or_else(bad),
                    None => text
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| bad())
                        .and_then(|v| self.visit_f64(v)),
                }
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Fraction, E> {
                if value.is_finite() && (0.0..=1.0).contains(&value) {
                    Ok(Fraction(value))
                } else {
                    Err(E::custom(format!(
                        "{value} is not a fraction between 0 and 1; write a percentage as 95%"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Fraction, E> {
                self.visit_f64(value as f64)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Fraction, E> {
                self.visit_f64(value as f64)
            }
        }
        deserializer.deserialize_any(FractionVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJudge {
    /// `judge: { latency: 10% }`: the tolerated latency regression, the short form of
    /// `tolerance`.
    #[serde(default)]
    latency: Option<Fraction>,
    #[serde(default)]
    confidence: Option<Fraction>,
    #[serde(default)]
    tolerance: Option<Fraction>,
    #[serde(default)]
    min_samples: Option<usize>,
    #[serde(default)]
    method: Option<Method>,
}

#[derive(Debug)]
enum JudgeSetting {
    Off,
    On(RawJudge),
}

impl<'de> Deserialize<'de> for JudgeSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JudgeVisitor;
        impl<'de> Visitor<'de> for JudgeVisitor {
            type Value = JudgeSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "`off` or a map with latency, confidence, tolerance, min_samples, method",
                )
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<JudgeSetting, E> {
                if on {
                    Ok(JudgeSetting::On(RawJudge {
                        latency: None,
                        confidence: None,
                        tolerance: None,
                        min_samples: None,
                        method: None,
                    }))
                } else {
                    Ok(JudgeSetting::Off)
                }
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<JudgeSetting, E> {
                match text {
                    "off" | "false" | "none" => Ok(JudgeSetting::Off),
                    "on" | "true" | "default" => self.visit_bool(true),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JudgeSetting, A::Error> {
                RawJudge::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(JudgeSetting::On)
            }
        }
        deserializer.deserialize_any(JudgeVisitor)
    }
}

impl RolloutSpec {
    /// A spec for `strategy`.
    pub fn new(strategy: StrategyConfig) -> Self {
        RolloutSpec { strategy }
    }

    /// Reads a YAML spec. Errors carry the path and, where the parser knows it, the line
    /// and column.
    ///
    /// ```
    /// use caxton_strategies::RolloutSpec;
    ///
    /// let err = RolloutSpec::from_yaml("deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 5x }\n").unwrap_err();
    /// assert_eq!(err.path(), Some("deployment.stages[0].canary.hold"));
    /// assert!(err.to_string().contains("unknown unit \"x\""), "{err}");
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let mut failed_at: Option<String> = None;
        let raw = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
            let mut track = serde_path_to_error::Track::new();
            let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
            RawFile::deserialize(tracked)
                .inspect_err(|_| failed_at = Some(track.path().to_string()))
        });
        let raw = raw.map_err(|error| {
            let location = error.location();
            SpecError::Syntax {
                format: SpecFormat::Yaml,
                path: failed_at.unwrap_or_default(),
                line: location.map(|l| l.line()).filter(|l| *l > 0),
                column: location.map(|l| l.column()).filter(|c| *c > 0),
                message: without_location(&one_line(&error.without_snippet().to_string())),
            }
        })?;
        raw.deployment.into_spec()
    }

    /// Reads a JSON spec of the same shape.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawFile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                let (line, column) = (inner.line(), inner.column());
                let message = inner.to_string();
                // serde_json appends " at line L column C"; the location is reported apart.
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.clone(), |(head, _)| head.to_owned());
                SpecError::Syntax {
                    format: SpecFormat::Json,
                    path,
                    line: (line > 0).then_some(line as u64),
                    column: (column > 0).then_some(column as u64),
                    message,
                }
            })?;
        if let Err(error) = deserializer.end() {
            return Err(SpecError::Syntax {
                format: SpecFormat::Json,
                path: String::new(),
                line: Some(error.line() as u64),
                column: Some(error.column() as u64),
                message: "trailing characters after the spec".to_owned(),
            });
        }
        raw.deployment.into_spec()
    }

    /// Reads YAML or JSON: text starting with `{` is JSON.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        if text.trim_start().starts_with('{') {
            RolloutSpec::from_json(text)
        } else {
            RolloutSpec::from_yaml(text)
        }
    }

    /// A canary from the compact forms, with the default settings otherwise.
    ///
    /// ```
    /// use caxton_strategies::{RolloutSpec, StrategyConfig};
    ///
    /// let spec = RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%,p99>100ms"))?;
    /// let StrategyConfig::Canary(canary) = &spec.strategy else { unreachable!() };
    /// assert_eq!(canary.steps.to_compact(), "5:5m,25:10m,50:10m");
    /// assert_eq!(canary.gates.rollback_on.len(), 2);
    /// # Ok::<(), caxton_strategies::spec::SpecError>(())
    /// ```
    pub fn from_compact(
        canary_stages: Option<&str>,
        rollback_on: Option<&str>,
    ) -> Result<Self, SpecError> {
        RolloutSpec::new(StrategyConfig::Canary(CanaryConfig::default()))
            .with_compact(canary_stages, rollback_on)
    }

    /// Replaces the canary steps and the rollback conditions with the compact forms.
    /// Canary stages apply to a canary and to a rainbow (whose ramp of new sessions they
    /// set).
    pub fn with_compact(
        mut self,
        canary_stages: Option<&str>,
        rollback_on: Option<&str>,
    ) -> Result<Self, SpecError> {
        if let Some(text) = canary_stages {
            let steps = CanarySteps::parse_compact(text)?;
            match &mut self.strategy {
                StrategyConfig::Canary(canary) => canary.steps = steps,
                StrategyConfig::Rainbow(rainbow) => rainbow.steps = Some(steps),
                other => {
                    return Err(SpecError::Invalid {
                        path: "--canary-stages".to_owned(),
                        message: format!(
                            "canary stages do not apply to strategy `{}`",
                            other.name()
                        ),
                    });
                }
            }
        }
        if let Some(text) = rollback_on {
            let conditions = Condition::parse_list(text)?;
            let name = self.strategy.name();
            match self.strategy.gates_mut() {
                Some(gates) => gates.rollback_on = conditions,
                None => {
                    return Err(SpecError::Invalid {
                        path: "--rollback-on".to_owned(),
                        message: format!("strategy `{name}` has no rollback conditions"),
                    });
                }
            }
        }
        Ok(self)
    }
}

/// Drops a trailing ` at line L, column C`: the location is reported apart.
fn without_location(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(", column ") => head.to_owned(),
        _ => message.to_owned(),
    }
}

/// Keeps the first line of a message, so a reason fits one line.
fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

impl RawDeployment {
    /// The fields that were given, with their names.
    fn given_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let mut add = |given: bool, name: &'static str| {
            if given {
                fields.push(name);
            }
        };
        add(self.stages.is_some(), "stages");
        add(self.rollback_on.is_some(), "rollback_on");
        add(self.check_interval.is_some(), "check_interval");
        add(self.min_requests.is_some(), "min_requests");
        add(self.max_extension.is_some(), "max_extension");
        add(self.pause_timeout.is_some(), "pause_timeout");
        add(self.drain_timeout.is_some(), "drain_timeout");
        add(self.judge.is_some(), "judge");
        add(self.confidence.is_some(), "confidence");
        add(self.duration.is_some(), "duration");
        add(self.sample.is_some(), "sample");
        add(self.compare.is_some(), "compare");
        add(self.equivalence.is_some(), "equivalence");
        add(self.max_mismatch.is_some(), "max_mismatch");
        add(self.resource_metrics.is_some(), "resource_metrics");
        add(self.max_live_versions.is_some(), "max_live_versions");
        add(self.session_idle_timeout.is_some(), "session_idle_timeout");
        add(self.forced_drain_after.is_some(), "forced_drain_after");
        fields
    }

    fn into_spec(self) -> Result<RolloutSpec, SpecError> {
        const GATES: [&str; 7] = [
            "rollback_on",
            "confidence",
            "check_interval",
            "min_requests",
            "max_extension",
            "pause_timeout",
            "drain_timeout",
        ];
        let allowed: Vec<&str> = match self.strategy {
            StrategyKind::Direct => vec!["stages", "drain_timeout"],
            StrategyKind::BlueGreen => [&["stages"][..], &GATES].concat(),
            StrategyKind::Canary => [&["stages", "judge"][..], &GATES].concat(),
            StrategyKind::Shadow => [
                &[
                    "stages",
                    "judge",
                    "duration",
                    "sample",
                    "compare",
                    "equivalence",
                    "max_mismatch",
                    "resource_metrics",
                ][..],
                &GATES,
            ]
            .concat(),
            StrategyKind::Rainbow => [
                &[
                    "stages",
                    "max_live_versions",
                    "session_idle_timeout",
                    "forced_drain_after",
                ][..],
                &GATES,
            ]
            .concat(),
        };
        if let Some(field) = self
            .given_fields()
            .into_iter()
            .find(|f| !allowed.contains(f))
        {
            return Err(invalid(
                format!("deployment.{field}"),
                format!(
                    "field `{field}` does not apply to strategy `{}`; it takes {}",
                    self.strategy.name(),
                    allowed.join(", ")
                ),
            ));
        }
        let strategy = match self.strategy {
            StrategyKind::Direct => self.direct()?,
            StrategyKind::BlueGreen => self.blue_green()?,
            StrategyKind::Canary => self.canary()?,
            StrategyKind::Shadow => self.shadow()?,
            StrategyKind::Rainbow => self.rainbow()?,
        };
        // Building checks what the types alone cannot.
        strategy
            .build()
            .map_err(|error| invalid("deployment", error.to_string()))?;
        Ok(RolloutSpec { strategy })
    }

    fn gates(&self, defaults: Gates) -> Result<Gates, SpecError> {
        let mut gates = defaults;
        if let Some(conditions) = &self.rollback_on {
            gates.rollback_on = conditions.clone();
        }
        if let Some(interval) = self.check_interval {
            if interval.is_zero() {
                return Err(invalid(
                    "deployment.check_interval",
                    "must be longer than 0s",
                ));
            }
            gates.check_interval = interval;
        }
        if let Some(min) = self.min_requests {
            gates.min_requests = min;
        }
        if let Some(extension) = self.max_extension {
            gates.max_extension = extension;
        }
        if let Some(timeout) = self.pause_timeout {
            if timeout.is_zero() {
                return Err(invalid(
                    "deployment.pause_timeout",
                    "must be longer than 0s",
                ));
            }
            gates.pause_timeout = timeout;
        }
        if let Some(timeout) = self.drain_timeout {
            gates.drain_timeout = timeout;
        }
        if let Some(Fraction(confidence)) = self.confidence {
            if !(MIN_CONFIDENCE..=MAX_CONFIDENCE).contains(&confidence) {
                return Err(invalid(
                    "deployment.confidence",
                    format!(
                        "{}% is not a confidence the gates can use; give one from 50% to 99.99%",
                        confidence * 100.0
                    ),
                ));
            }
            gates.confidence = confidence;
        }
        match &self.judge {
            None => {}
            Some(JudgeSetting::Off) => gates.judge = None,
            Some(JudgeSetting::On(raw)) => {
                let mut judge = Judge::default();
                let path = "deployment.judge";
                if let Some(Fraction(confidence)) = raw.confidence {
                    judge = judge
                        .with_confidence(confidence)
                        .map_err(|e| invalid(format!("{path}.confidence"), e.to_string()))?;
                }
                // `latency` is the short name of `tolerance`; both at once would be ambiguous.
                let tolerance = match (raw.latency, raw.tolerance) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            format!("{path}.latency"),
                            "give `latency` or `tolerance`, not both: they are the same setting",
                        ));
                    }
                    (Some(latency), None) => Some(("latency", latency)),
                    (None, Some(tolerance)) => Some(("tolerance", tolerance)),
                    (None, None) => None,
                };
                if let Some((field, Fraction(tolerance))) = tolerance {
                    judge = judge
                        .with_tolerance(tolerance)
                        .map_err(|e| invalid(format!("{path}.{field}"), e.to_string()))?;
                }
                if let Some(min) = raw.min_samples {
                    judge = judge
                        .with_min_samples(min)
                        .map_err(|e| invalid(format!("{path}.min_samples"), e.to_string()))?;
                }
                if let Some(method) = raw.method {
                    judge = judge.with_method(method);
                }
                gates.judge = Some(judge);
            }
        }
        Ok(gates)
    }

    /// Reads `validate` and `warm_up` stages; any other stage is refused unless `extra`
    /// takes it (it returns `false` for stages it does not know).
    fn stages(
        &self,
        mut extra: impl FnMut(usize, &RawStage) -> Result<bool, SpecError>,
    ) -> Result<Preflight, SpecError> {
        let mut preflight = Preflight::default();
        let (mut validate_seen, mut warm_up_seen) = (false, false);
        for (index, stage) in self.stages.iter().flatten().enumerate() {
            let path = format!("deployment.stages[{index}]");
            match stage {
                RawStage::Validate(limit) => {
                    if std::mem::replace(&mut validate_seen, true) {
                        return Err(invalid(path, "stage `validate` appears twice"));
                    }
                    preflight.validate = *limit;
                }
                RawStage::WarmUp(limit) => {
                    if std::mem::replace(&mut warm_up_seen, true) {
                        return Err(invalid(path, "stage `warm_up` appears twice"));
                    }
                    preflight.warm_up = *limit;
                }
                other => {
                    if !extra(index, other)? {
                        return Err(invalid(
                            path,
                            format!(
                                "stage `{}` does not apply to strategy `{}`",
                                other.name(),
                                self.strategy.name()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(preflight)
    }

    fn direct(&self) -> Result<StrategyConfig, SpecError> {
        let mut config = DirectConfig {
            preflight: self.stages(|_, _| Ok(false))?,
            ..DirectConfig::default()
        };
        if let Some(timeout) = self.drain_timeout {
            config.drain_timeout = timeout;
        }
        Ok(StrategyConfig::Direct(config))
    }

    fn blue_green(&self) -> Result<StrategyConfig, SpecError> {
        let defaults = BlueGreenConfig::default();
        let mut cleanup = defaults.cleanup;
        let mut order: Vec<(usize, &'static str)> = Vec::new();
        let preflight = self.stages(|index, stage| {
            let path = format!("deployment.stages[{index}]");
            match stage {
                RawStage::Switch(duration) => {
                    if !duration.is_zero() {
                        return Err(invalid(
                            format!("{path}.switch"),
                            "the blue-green switch is atomic; write `switch: instant`",
                        ));
                    }
                }
                RawStage::Cleanup(duration) => cleanup = *duration,
                _ => return Ok(false),
            }
            if order.iter().any(|(_, name)| *name == stage.name()) {
                return Err(invalid(
                    path,
                    format!("stage `{}` appears twice", stage.name()),
                ));
            }
            order.push((index, stage.name()));
            Ok(true)
        })?;
        // validate and warm_up must come before the switch, the switch before cleanup.
        let position = |wanted: &str| {
            self.stages
                .iter()
                .flatten()
                .position(|s| s.name() == wanted)
        };
        let sequence = ["validate", "warm_up", "switch", "cleanup"];
        let mut last: Option<(usize, &str)> = None;
        for name in sequence {
            if let Some(at) = position(name) {
                if let Some((before, before_name)) = last
                    && at < before
                {
                    return Err(invalid(
                        format!("deployment.stages[{at}]"),
                        format!("stage `{name}` must come after `{before_name}`"),
                    ));
                }
                last = Some((at, name));
            }
        }
        Ok(StrategyConfig::BlueGreen(BlueGreenConfig {
            preflight,
            cleanup,
            gates: self.gates(defaults.gates)?,
        }))
    }

    /// Reads the stages of a weighted ramp: `validate` and `warm_up` first, then
    /// `canary: { weight, hold }` steps, then `full: 100%` last. `cleanup` is taken only
    /// when `cleanup` is given. Returns the preflight and the steps (`None` when no
    /// `canary` stage was given).
    fn ramp(
        &self,
        mut cleanup: Option<&mut Duration>,
    ) -> Result<(Preflight, Option<CanarySteps>), SpecError> {
        let mut steps: Vec<(usize, CanaryStep)> = Vec::new();
        let mut full_at: Option<usize> = None;
        let preflight = self.stages(|index, stage| {
            let path = format!("deployment.stages[{index}]");
            if let Some(full) = full_at {
                return Err(invalid(
                    path,
                    format!(
                        "stage `{}` comes after `full` (stages[{full}]), which must be last",
                        stage.name()
                    ),
                ));
            }
            match stage {
                RawStage::Canary(step) => {
                    steps.push((index, CanaryStep::new(step.weight.0, step.hold)));
                }
                RawStage::Full(PercentWeight(weight)) => {
                    if *weight != Weight::FULL {
                        return Err(invalid(
                            format!("{path}.full"),
                            format!("the full stage sends 100% to the candidate, not {weight}"),
                        ));
                    }
                    full_at = Some(index);
                }
                RawStage::Cleanup(duration) => match cleanup.as_deref_mut() {
                    Some(cleanup) => *cleanup = *duration,
                    None => return Ok(false),
                },
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        // validate and warm_up come before the first weighted step.
        if let Some(first_step) = steps.first().map(|(i, _)| *i)
            && let Some(late) = self
                .stages
                .iter()
                .flatten()
                .enumerate()
                .find(|(i, s)| {
                    *i > first_step && matches!(s, RawStage::Validate(_) | RawStage::WarmUp(_))
                })
                .map(|(i, s)| (i, s.name()))
        {
            return Err(invalid(
                format!("deployment.stages[{}]", late.0),
                format!("stage `{}` must come before the first canary step", late.1),
            ));
        }
        if steps.is_empty() {
            return Ok((preflight, None));
        }
        let indices: Vec<usize> = steps.iter().map(|(i, _)| *i).collect();
        let steps =
            CanarySteps::new(steps.into_iter().map(|(_, s)| s).collect()).map_err(|error| {
                let at = match &error {
                    crate::config::ConfigError::StepWeight { index, .. }
                    | crate::config::ConfigError::StepOrder { index, .. } => indices[*index],
                    _ => 0,
                };
                invalid(
                    format!("deployment.stages[{at}].canary.weight"),
                    error.to_string(),
                )
            })?;
        Ok((preflight, Some(steps)))
    }

    fn canary(&self) -> Result<StrategyConfig, SpecError> {
        let defaults = CanaryConfig::default();
        let mut cleanup = defaults.cleanup;
        let (preflight, steps) = self.ramp(Some(&mut cleanup))?;
        let steps = match steps {
            Some(steps) => steps,
            None if self.stages.is_none() => defaults.steps,
            None => {
                return Err(invalid(
                    "deployment.stages",
                    "a canary needs at least one `canary: { weight, hold }` stage",
                ));
            }
        };
        Ok(StrategyConfig::Canary(CanaryConfig {
            preflight,
            steps,
            gates: self.gates(defaults.gates)?,
            cleanup,
        }))
    }

    fn shadow(&self) -> Result<StrategyConfig, SpecError> {
        let defaults = ShadowSettings::default();
        let preflight = self.stages(|_, _| Ok(false))?;
        let settings = ShadowSettings {
            preflight,
            duration: self.duration.unwrap_or(defaults.duration),
            sample: self.sample.map_or(defaults.sample, |PercentWeight(w)| w),
            compare: self.compare.clone().unwrap_or(defaults.compare.clone()),
            equivalence: self.equivalence.unwrap_or(defaults.equivalence),
            max_mismatch: self
                .max_mismatch
                .map_or(defaults.max_mismatch, |Fraction(f)| f),
            resource_metrics: self
                .resource_metrics
                .clone()
                .unwrap_or(defaults.resource_metrics.clone()),
            gates: self.gates(defaults.gates.clone())?,
        };
        if settings.duration.is_zero() {
            return Err(invalid("deployment.duration", "must be longer than 0s"));
        }
        if settings.sample == Weight::ZERO {
            return Err(invalid("deployment.sample", "must be above 0%"));
        }
        Ok(StrategyConfig::Shadow(settings))
    }

    fn rainbow(&self) -> Result<StrategyConfig, SpecError> {
        let defaults = RainbowConfig::default();
        // Canary stages ramp the share of new sessions; without them the switch is at once.
        let (preflight, steps) = self.ramp(None)?;
        let config = RainbowConfig {
            preflight,
            steps,
            max_live_versions: self.max_live_versions.unwrap_or(defaults.max_live_versions),
            session_idle_timeout: self
                .session_idle_timeout
                .unwrap_or(defaults.session_idle_timeout),
            forced_drain_after: self
                .forced_drain_after
                .unwrap_or(defaults.forced_drain_after),
            gates: self.gates(defaults.gates.clone())?,
        };
        if config.max_live_versions < 2 {
            return Err(invalid(
                "deployment.max_live_versions",
                format!(
                    "{} is too few: at least 2 (the candidate and the version it replaces)",
                    config.max_live_versions
                ),
            ));
        }
        if config.session_idle_timeout.is_zero() {
            return Err(invalid(
                "deployment.session_idle_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(StrategyConfig::Rainbow(config))
    }
}
