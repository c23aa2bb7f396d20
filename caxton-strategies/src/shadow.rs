//! Shadow comparison: output equivalence, performance and resource use of a candidate
//! that receives mirrored traffic and never serves a reply.
//!
//! The host (the router's mirror) compares each mirrored reply with production's using
//! [`outputs_equivalent`] and records the result on the shadow deployment as the custom
//! metric [`OUTPUT_MATCH_METRIC`]: `1.0` when equivalent, `0.0` when not. The shadow
//! strategy reads it back from the metric windows, together with latency and the
//! resource metrics, and ends with a [`ShadowReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use caxton_core::{MetricWindow, Weight};
use serde::{Deserialize, Serialize};

use crate::config::{Gates, Preflight};
use crate::duration::serde_text;
use crate::event::{HumanLine, Mark};
use crate::judge::{Judge, Judgement, Verdict};

/// The custom metric a host records on the shadow deployment for each compared reply:
/// `1.0` when the shadow's output was equivalent to production's, `0.0` when not.
pub const OUTPUT_MATCH_METRIC: &str = "shadow_output_match";

/// How replies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Equivalence {
    /// Byte for byte.
    Exact,
    /// As JSON values: key order, whitespace and number spelling (`1` vs `1.0`) do not
    /// matter. Replies that are not JSON are compared byte for byte.
    #[default]
    Json,
}

/// Whether a shadow's reply is equivalent to production's.
///
/// ```
/// use caxton_strategies::shadow::{outputs_equivalent, Equivalence};
///
/// let production = br#"{"kind": "reply", "total": 3}"#;
/// let shadow = br#"{"total":3.0,"kind":"reply"}"#;
/// assert!(outputs_equivalent(production, shadow, Equivalence::Json));
/// assert!(!outputs_equivalent(production, shadow, Equivalence::Exact));
/// ```
pub fn outputs_equivalent(production: &[u8], shadow: &[u8], mode: Equivalence) -> bool {
    match mode {
        Equivalence::Exact => production == shadow,
        Equivalence::Json => {
            match (
                serde_json::from_slice::<serde_json::Value>(production),
                serde_json::from_slice::<serde_json::Value>(shadow),
            ) {
                (Ok(a), Ok(b)) => json_equivalent(&a, &b),
                _ => production == shadow,
            }
        }
    }
}

fn json_equivalent(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equivalent(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, p)| y.get(key).is_some_and(|q| json_equivalent(p, q)))
        }
        _ => a == b,
    }
}

/// What a shadow run compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowAspect {
    /// Replies equivalent to production's.
    OutputEquivalence,
    /// Latency against production's.
    PerformanceMetrics,
    /// Resource metrics (fuel, memory) against production's.
    ResourceUsage,
}

impl ShadowAspect {
    /// All aspects.
    pub const ALL: [ShadowAspect; 3] = [
        ShadowAspect::OutputEquivalence,
        ShadowAspect::PerformanceMetrics,
        ShadowAspect::ResourceUsage,
    ];
}

/// Settings of the shadow strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSettings {
    /// Validation and warm-up limits.
    pub preflight: Preflight,
    /// How long traffic is mirrored before the report (default 10 m).
    #[serde(with = "serde_text")]
    pub duration: Duration,
    /// The share of traffic mirrored (default 100 %).
    pub sample: Weight,
    /// What is compared (default: all aspects).
    pub compare: Vec<ShadowAspect>,
    /// How replies are compared (default JSON-normalised).
    pub equivalence: Equivalence,
    /// The largest share of compared replies that may differ (default 1 %).
    pub max_mismatch: f64,
    /// Custom metrics compared for resource use (default `fuel_per_message`,
    /// `memory_bytes`).
    pub resource_metrics: Vec<String>,
    /// Rollback conditions on the shadow's own metrics, data thresholds and the judge.
    pub gates: Gates,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        ShadowSettings {
            preflight: Preflight::default(),
            duration: Duration::from_secs(600),
            sample: Weight::FULL,
            compare: ShadowAspect::ALL.to_vec(),
            equivalence: Equivalence::Json,
            max_mismatch: 0.01,
            resource_metrics: vec!["fuel_per_message".to_owned(), "memory_bytes".to_owned()],
            gates: Gates::default(),
        }
    }
}

/// What a shadow run recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// Every comparison passed: promote the candidate.
    Promote,
    /// Some comparison could not decide: a person should look.
    Review,
    /// Some comparison failed: do not promote.
    Reject,
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recommendation::Promote => "promote",
            Recommendation::Review => "review",
            Recommendation::Reject => "reject",
        })
    }
}

/// The comparison of outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputComparison {
    /// Replies compared.
    pub compared: u64,
    /// Replies that differed.
    pub mismatched: u64,
    /// The share that differed, when any were compared.
    pub mismatch_rate: Option<f64>,
    /// The largest share allowed.
    pub max_mismatch: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The report a shadow run ends with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Mirrored requests the shadow handled.
    pub mirrored_requests: u64,
    /// Output equivalence, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputComparison>,
    /// Latency against production, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance: Option<Judgement>,
    /// Each resource metric against production.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Judgement>,
    /// What to do.
    pub recommendation: Recommendation,
    /// Why, for people.
    pub summary: String,
}

impl ShadowReport {
    /// Compares the shadow's accumulated window with production's.
    pub fn compare(
        settings: &ShadowSettings,
        shadow: &MetricWindow,
        production: &MetricWindow,
    ) -> Self {
        let judge = settings.gates.judge.unwrap_or_default();
        let mut findings: Vec<(Verdict, String)> = Vec::new();
        let output = settings
            .compare
            .contains(&ShadowAspect::OutputEquivalence)
            .then(|| {
                let samples = shadow
                    .custom
                    .get(OUTPUT_MATCH_METRIC)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let compared = samples.len() as u64;
                let mismatched = samples.iter().filter(|v| **v < 0.5).count() as u64;
                let mismatch_rate = (compared > 0).then(|| mismatched as f64 / compared as f64);
                let verdict = match mismatch_rate {
                    None => Verdict::Inconclusive,
                    Some(rate) if rate > settings.max_mismatch => Verdict::Fail,
                    Some(_) => Verdict::Pass,
                };
                findings.push((
                    verdict,
                    match mismatch_rate {
                        None => "no reply comparisons were recorded".to_owned(),
                        Some(rate) => format!(
                            "{mismatched} of {compared} replies differ ({}; limit {})",
                            percent(rate),
                            percent(settings.max_mismatch)
                        ),
                    },
                ));
                OutputComparison {
                    compared,
                    mismatched,
                    mismatch_rate,
                    max_mismatch: settings.max_mismatch,
                    verdict,
                }
            });
        let performance = settings
            .compare
            .contains(&ShadowAspect::PerformanceMetrics)
            .then(|| {
                let judgement = judge.compare(&shadow.latency_ms, &production.latency_ms);
                findings.push((judgement.verdict, format!("latency: {}", judgement.reason)));
                judgement
            });
        let mut resources = BTreeMap::new();
        if settings.compare.contains(&ShadowAspect::ResourceUsage) {
            for name in &settings.resource_metrics {
                let mine = shadow
                    .custom
                    .get(name)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let theirs = production
                    .custom
                    .get(name)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if mine.is_empty() && theirs.is_empty() {
                    continue;
                }
                let judgement = compare_resource(&judge, mine, theirs);
                findings.push((judgement.verdict, format!("{name}: {}", judgement.reason)));
                resources.insert(name.clone(), judgement);
            }
        }
        let recommendation = if findings.iter().any(|(v, _)| *v == Verdict::Fail) {
            Recommendation::Reject
        } else if findings.iter().any(|(v, _)| *v == Verdict::Inconclusive) {
            Recommendation::Review
        } else {
            Recommendation::Promote
        };
        let deciding: Vec<&str> = findings
            .iter()
            .filter(|(v, _)| match recommendation {
                Recommendation::Reject => *v == Verdict::Fail,
                Recommendation::Review => *v == Verdict::Inconclusive,
                Recommendation::Promote => true,
            })
            .map(|(_, text)| text.as_str())
            .collect();
        ShadowReport {
            mirrored_requests: shadow.requests,
            output,
            performance,
            resources,
            recommendation,
            summary: if deciding.is_empty() {
                "nothing was compared".to_owned()
            } else {
                deciding.join("; ")
            },
        }
    }

    /// The report as lines for people.
    pub fn human_lines(&self) -> Vec<HumanLine> {
        let mark = |verdict: Verdict| match verdict {
            Verdict::Pass => Mark::Done,
            Verdict::Fail => Mark::Failed,
            Verdict::Inconclusive => Mark::Progress,
        };
        let mut lines = Vec::new();
        if let Some(output) = &self.output {
            lines.push(HumanLine {
                mark: mark(output.verdict),
                text: match output.mismatch_rate {
                    Some(rate) => format!(
                        "Output equivalence: {} of {} replies equivalent ({} differ; limit {})",
                        output.compared - output.mismatched,
                        output.compared,
                        percent(rate),
                        percent(output.max_mismatch)
                    ),
                    None => "Output equivalence: no reply comparisons recorded".to_owned(),
                },
            });
        }
        if let Some(performance) = &self.performance {
            lines.push(HumanLine {
                mark: mark(performance.verdict),
                text: format!(
                    "Latency vs production: {}: {}",
                    performance.verdict, performance.reason
                ),
            });
        }
        for (name, judgement) in &self.resources {
            lines.push(HumanLine {
                mark: mark(judgement.verdict),
                text: format!(
                    "{name} vs production: {}: {}",
                    judgement.verdict, judgement.reason
                ),
            });
        }
        lines.push(HumanLine {
            mark: match self.recommendation {
                Recommendation::Promote => Mark::Done,
                Recommendation::Review => Mark::Progress,
                Recommendation::Reject => Mark::Failed,
            },
            text: format!(
                "Shadow recommendation: {} ({} mirrored requests)",
                self.recommendation, self.mirrored_requests
            ),
        });
        lines
    }
}

fn compare_resource(judge: &Judge, mine: &[f64], theirs: &[f64]) -> Judgement {
    judge.compare(mine, theirs)
}

fn percent(ratio: f64) -> String {
    crate::condition::format_quantity(crate::condition::Quantity::Ratio, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_core::Timestamp;

    #[test]
    fn json_equivalence_ignores_order_spacing_and_number_spelling() {
        let a = br#"{"kind":"reply","items":[1,2,{"x":true}],"n":2}"#;
        let b = b"{ \"n\": 2.0, \"items\": [1, 2, {\"x\": true}], \"kind\": \"reply\" }";
        assert!(outputs_equivalent(a, b, Equivalence::Json));
        assert!(!outputs_equivalent(a, b, Equivalence::Exact));
        let reordered = br#"{"kind":"reply","items":[2,1,{"x":true}],"n":2}"#;
        assert!(!outputs_equivalent(a, reordered, Equivalence::Json));
        assert!(!outputs_equivalent(
            br#"{"a":1}"#,
            br#"{"a":1,"b":null}"#,
            Equivalence::Json
        ));
        assert!(outputs_equivalent(b"plain", b"plain", Equivalence::Json));
        assert!(!outputs_equivalent(b"plain", b"plain ", Equivalence::Json));
    }

    fn window(latency: Vec<f64>, matches: Vec<f64>) -> MetricWindow {
        let mut w = MetricWindow::empty(Timestamp::EPOCH, Timestamp::from_millis(1));
        w.requests = latency.len() as u64;
        w.latency_ms = latency;
        if !matches.is_empty() {
            w.custom.insert(OUTPUT_MATCH_METRIC.into(), matches);
        }
        w
    }

    #[test]
    fn report_recommends_from_the_worst_finding() {
        let settings = ShadowSettings::default();
        let latency: Vec<f64> = (0..100).map(|i| 10.0 + f64::from(i) * 0.1).collect();
        let production = window(latency.clone(), vec![]);
        let good = window(latency.clone(), vec![1.0; 200]);
        let report = ShadowReport::compare(&settings, &good, &production);
        assert_eq!(
            report.recommendation,
            Recommendation::Promote,
            "{}",
            report.summary
        );

        let mut differing = vec![1.0; 190];
        differing.extend([0.0; 10]);
        let bad = window(latency.clone(), differing);
        let report = ShadowReport::compare(&settings, &bad, &production);
        assert_eq!(report.recommendation, Recommendation::Reject);
        assert!(
            report.summary.contains("10 of 200 replies differ"),
            "{}",
            report.summary
        );

        let unknown = window(latency, vec![]);
        let report = ShadowReport::compare(&settings, &unknown, &production);
        assert_eq!(report.recommendation, Recommendation::Review);
        let lines = report.human_lines();
        assert_eq!(lines.last().unwrap().mark, Mark::Progress);
    }
}
