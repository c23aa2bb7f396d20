//! Metric gates: `error_rate > 1%`, `p99_latency > 100ms`, `cost_per_session > 0.05`,
//! `error_rate > baseline * 1.5`, `fuel_per_message > 1e6`.
//!
//! A condition names what makes a rollout roll back. It is checked against the
//! candidate's [`MetricWindow`] and, when relative, the baseline's.
//!
//! A threshold must be a finite number the metric can reach: at most 100 % for a ratio,
//! a day ([`MAX_LATENCY_MS`]) for a latency, 10^15 ([`MAX_PLAIN_THRESHOLD`]) for a plain
//! number and a factor of 1000 ([`MAX_BASELINE_FACTOR`]) for a relative one. Anything
//! else (`p99 > 1e400ms` reads as infinity) is refused, naming the condition, rather
//! than kept as a gate that can never fire.

use std::fmt;
use std::str::FromStr;

use caxton_core::MetricWindow;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::evidence::{
    Evidence, binomial_bounds, difference_bounds, mean_bounds, quantile_bounds, z_for,
};

/// A latency statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LatencyStat {
    /// The median.
    P50,
    /// The 90th percentile.
    P90,
    /// The 95th percentile.
    P95,
    /// The 99th percentile.
    P99,
    /// The arithmetic mean.
    Mean,
}

impl LatencyStat {
    /// The quantile in `0..=1`, `None` for the mean.
    pub fn quantile(self) -> Option<f64> {
        match self {
            LatencyStat::P50 => Some(0.50),
            LatencyStat::P90 => Some(0.90),
            LatencyStat::P95 => Some(0.95),
            LatencyStat::P99 => Some(0.99),
            LatencyStat::Mean => None,
        }
    }
}

/// What a condition measures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Metric {
    /// Errors per request, as a ratio.
    ErrorRate,
    /// A latency statistic, in milliseconds.
    Latency(LatencyStat),
    /// Cost per distinct session.
    CostPerSession,
    /// Cost per request.
    CostPerRequest,
    /// The mean of a custom metric the host records, e.g. `fuel_per_message`.
    Custom(String),
}

/// The kind of quantity a metric is, which decides the units its thresholds take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// A ratio, written `1%` or `0.01`.
    Ratio,
    /// A time, written `100ms` or `1.5s`; stored in milliseconds.
    Millis,
    /// A plain number, written `0.05` or `1e6`.
    Number,
}

const BUILT_IN_NAMES: [&str; 14] = [
    "error_rate",
    "p50",
    "p90",
    "p95",
    "p99",
    "p50_latency",
    "p90_latency",
    "p95_latency",
    "p99_latency",
    "mean_latency",
    "latency_mean",
    "cost_per_session",
    "cost_per_request",
    "baseline",
];

impl Metric {
    /// The metric named `name`; any name that is not built in is a custom metric.
    fn from_name(name: &str) -> Metric {
        match name {
            "error_rate" => Metric::ErrorRate,
            "p50" | "p50_latency" => Metric::Latency(LatencyStat::P50),
            "p90" | "p90_latency" => Metric::Latency(LatencyStat::P90),
            "p95" | "p95_latency" => Metric::Latency(LatencyStat::P95),
            "p99" | "p99_latency" => Metric::Latency(LatencyStat::P99),
            "mean_latency" | "latency_mean" => Metric::Latency(LatencyStat::Mean),
            "cost_per_session" => Metric::CostPerSession,
            "cost_per_request" => Metric::CostPerRequest,
            other => Metric::Custom(other.to_owned()),
        }
    }

    /// The canonical name, as written back: `error_rate`, `p99_latency`, `fuel_per_message`.
    pub fn name(&self) -> &str {
        match self {
            Metric::ErrorRate => "error_rate",
            Metric::Latency(LatencyStat::P50) => "p50_latency",
            Metric::Latency(LatencyStat::P90) => "p90_latency",
            Metric::Latency(LatencyStat::P95) => "p95_latency",
            Metric::Latency(LatencyStat::P99) => "p99_latency",
            Metric::Latency(LatencyStat::Mean) => "mean_latency",
            Metric::CostPerSession => "cost_per_session",
            Metric::CostPerRequest => "cost_per_request",
            Metric::Custom(name) => name,
        }
    }

    /// The kind of quantity it is.
    pub fn quantity(&self) -> Quantity {
        match self {
            Metric::ErrorRate => Quantity::Ratio,
            Metric::Latency(_) => Quantity::Millis,
            Metric::CostPerSession | Metric::CostPerRequest | Metric::Custom(_) => Quantity::Number,
        }
    }

    /// The metric's value in `window`; `None` when the window has no data for it.
    pub fn value(&self, window: &MetricWindow) -> Option<f64> {
        match self {
            Metric::ErrorRate => window.error_rate(),
            Metric::Latency(stat) => match stat.quantile() {
                Some(q) => nearest_rank(&window.latency_ms, q),
                None => window.mean_latency(),
            },
            Metric::CostPerSession => window.cost_per_session(),
            Metric::CostPerRequest => window.cost_per_request(),
            Metric::Custom(name) => window.custom_mean(name),
        }
    }

    /// Latency samples needed before this metric's quantile means anything: with fewer
    /// than `1 / (1 - q)` samples the nearest-rank quantile is just the largest sample.
    pub fn min_samples(&self) -> usize {
        match self {
            Metric::Latency(stat) => stat
                .quantile()
                .map_or(1, |q| (1.0 / (1.0 - q)).round() as usize),
            _ => 1,
        }
    }

    /// The value, or `None` when the window has too few samples to estimate it.
    pub fn value_if_estimable(&self, window: &MetricWindow) -> Option<f64> {
        if let Metric::Latency(_) = self
            && window.latency_ms.len() < self.min_samples()
        {
            return None;
        }
        self.value(window)
    }

    /// Writes `value` in this metric's units: `0.25%`, `42ms`, `1.5s`, `0.05`.
    pub fn format_value(&self, value: f64) -> String {
        format_quantity(self.quantity(), value)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The nearest-rank `q` quantile of `samples`, ignoring NaN, as
/// [`caxton_core::metrics::quantile`] defines it, found by selection in linear time
/// rather than by sorting (gates check quantiles of growing windows every interval).
pub fn nearest_rank(samples: &[f64], q: f64) -> Option<f64> {
    let mut values: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    let index = rank.clamp(1, values.len()) - 1;
    let (_, value, _) = values.select_nth_unstable_by(index, f64::total_cmp);
    Some(*value)
}

/// Writes a value of a quantity in its natural unit.
pub fn format_quantity(quantity: Quantity, value: f64) -> String {
    match quantity {
        Quantity::Ratio => format!("{}%", round_to(value * 100.0, 2)),
        Quantity::Millis if value >= 1_000.0 => format!("{}s", round_to(value / 1_000.0, 3)),
        Quantity::Millis => format!("{}ms", round_to(value, 1)),
        Quantity::Number => trim_float(value),
    }
}

/// Writes a threshold as precisely as it was written: up to four decimals.
fn format_threshold(quantity: Quantity, value: f64) -> String {
    match quantity {
        Quantity::Ratio => format!("{}%", trim_float(value * 100.0)),
        Quantity::Millis if value >= 1_000.0 => format!("{}s", trim_float(value / 1_000.0)),
        Quantity::Millis => format!("{}ms", trim_float(value)),
        Quantity::Number => trim_float(value),
    }
}

/// Up to four decimals, without trailing zeros or floating-point noise.
fn trim_float(value: f64) -> String {
    round_to(value, 4)
}

/// Up to `decimals` decimals, without trailing zeros; tiny or huge values in `e` form.
fn round_to(value: f64, decimals: i32) -> String {
    let scale = 10f64.powi(decimals);
    let rounded = (value * scale).round() / scale;
    if rounded == 0.0 && value != 0.0 {
        return format!("{value:e}");
    }
    if rounded.abs() >= 1e6 {
        return format!("{rounded:e}");
    }
    format!("{rounded}")
}

/// The highest latency threshold: a day. A message that takes longer has failed for any
/// host, so a gate above this could never fire.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;

/// The highest plain threshold (costs, custom metrics): beyond 10^15 an `f64` no longer
/// holds every integer, and no per-message metric gets there.
pub const MAX_PLAIN_THRESHOLD: f64 = 1e15;

/// The highest factor of a relative threshold (`baseline * 1000`).
pub const MAX_BASELINE_FACTOR: f64 = 1_000.0;

/// The limit of a relative threshold's factor, as the parser checks it and says it.
const FACTOR_LIMIT: (f64, &str) = (MAX_BASELINE_FACTOR, "a factor of 1000");

/// How the observed value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
}

impl Comparison {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }

    /// Whether `observed <op> limit` holds.
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Comparison::Above => observed > limit,
            Comparison::AtLeast => observed >= limit,
            Comparison::Below => observed < limit,
            Comparison::AtMost => observed <= limit,
        }
    }
}

/// What the observed value is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// A fixed value in the metric's canonical unit (ratio, milliseconds, number).
    Absolute(f64),
    /// The baseline's value of the same metric times `factor`.
    Relative {
        /// The multiplier, e.g. `1.5`.
        factor: f64,
    },
}

/// A rollback condition: when it holds for the candidate, the rollout rolls back.
///
/// Parse one with [`str::parse`]; it displays in canonical form and (de)serializes as text.
///
/// ```
/// use caxton_strategies::condition::{Condition, Metric, Threshold};
///
/// let c: Condition = "p99 > 100ms".parse()?;
/// assert_eq!(c.to_string(), "p99_latency > 100ms");
/// let r: Condition = "error_rate > baseline * 1.5".parse()?;
/// assert_eq!(r.threshold, Threshold::Relative { factor: 1.5 });
/// let err = "p99 > 100".parse::<Condition>().unwrap_err();
/// assert_eq!(err.position(), 6); // the threshold lacks a unit such as `ms`
/// # Ok::<(), caxton_strategies::condition::ConditionError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What is measured.
    pub metric: Metric,
    /// How it is compared.
    pub comparison: Comparison,
    /// With what.
    pub threshold: Threshold,
}

/// Whether a condition held on a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The condition holds: the candidate is out of bounds.
    Breached,
    /// The condition does not hold: the candidate is within bounds.
    Clear,
    /// There was no data to decide (no requests, no samples, or no baseline).
    NoData,
    /// There are data, but they show neither a breach nor the candidate within bounds
    /// at the gate's confidence.
    Inconclusive,
}

/// The result of checking one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The condition checked.
    pub condition: Condition,
    /// What was found.
    pub status: CheckStatus,
    /// The candidate's value, when there was one.
    pub observed: Option<f64>,
    /// The limit it was compared with, when known (relative limits need a baseline value).
    pub limit: Option<f64>,
    /// What the data say of the candidate's value, in the metric's units: the bound a
    /// trip needs (the lower one for `>`, `>=`) and the bound a pass needs, as
    /// `[lower, upper]`; a side is `None` when the data cannot bound it yet.
    pub bounds: Option<[Option<f64>; 2]>,
}

impl Check {
    /// `Error rate: 0.01% (threshold: 1%)`, in the style of the command line; the
    /// comparison is shown unless it is `>`.
    pub fn describe(&self) -> String {
        let metric = &self.condition.metric;
        let label = human_label(metric);
        let observed = self
            .observed
            .map_or_else(|| "no data".to_owned(), |v| metric.format_value(v));
        let limit = match (self.limit, self.condition.threshold) {
            (Some(limit), Threshold::Absolute(_)) => format_threshold(metric.quantity(), limit),
            (Some(limit), Threshold::Relative { factor }) => {
                format!(
                    "baseline × {} = {}",
                    trim_float(factor),
                    metric.format_value(limit)
                )
            }
            (None, _) => self.condition.threshold_text(),
        };
        let comparison = match self.condition.comparison {
            Comparison::Above => String::new(),
            other => format!("{} ", other.symbol()),
        };
        format!("{label}: {observed} (threshold: {comparison}{limit})")
    }
}

impl Check {
    /// [`Check::describe`] with what the data say: `Error rate: 0.8% (threshold: 1%),
    /// inconclusive: between 0.4% and 1.3%`. `confidence` is the gates' setting, named
    /// in the text.
    pub fn describe_evidence(&self, confidence: f64) -> String {
        let metric = &self.condition.metric;
        let status = match self.status {
            CheckStatus::Breached => "breached",
            CheckStatus::Clear => "within bounds",
            CheckStatus::NoData => "no data",
            CheckStatus::Inconclusive => "inconclusive",
        };
        let side = |value: Option<f64>, fallback: &str| match value {
            Some(v) if v.is_finite() => metric.format_value(v),
            _ => fallback.to_owned(),
        };
        match self.bounds {
            Some([lower, upper]) => format!(
                "{}, {status} at {}% confidence: between {} and {}",
                self.describe(),
                trim_float(confidence * 100.0),
                side(lower, "nothing yet"),
                side(upper, "too few samples to bound")
            ),
            None => format!("{}, {status}", self.describe()),
        }
    }
}

fn human_label(metric: &Metric) -> String {
    match metric {
        Metric::ErrorRate => "Error rate".to_owned(),
        Metric::Latency(LatencyStat::P50) => "P50 latency".to_owned(),
        Metric::Latency(LatencyStat::P90) => "P90 latency".to_owned(),
        Metric::Latency(LatencyStat::P95) => "P95 latency".to_owned(),
        Metric::Latency(LatencyStat::P99) => "P99 latency".to_owned(),
        Metric::Latency(LatencyStat::Mean) => "Mean latency".to_owned(),
        Metric::CostPerSession => "Cost per session".to_owned(),
        Metric::CostPerRequest => "Cost per request".to_owned(),
        Metric::Custom(name) => name.clone(),
    }
}

impl Condition {
    /// Checks the condition on the candidate's window, with the baseline's for relative
    /// thresholds, at the default confidence and a single look (see
    /// [`Condition::check_with`]).
    pub fn check(&self, candidate: &MetricWindow, baseline: Option<&MetricWindow>) -> Check {
        self.check_with(candidate, baseline, Evidence::default())
    }

    /// Checks the condition on evidence: it is [`CheckStatus::Breached`] when the data
    /// show it holds at the trip level of `evidence` (the confidence shared among the
    /// step's looks), [`CheckStatus::Clear`] when they show it does not at the plain
    /// confidence, [`CheckStatus::NoData`] with nothing to go on (no requests, samples or
    /// baseline) and [`CheckStatus::Inconclusive`] otherwise. The statistics are those of
    /// [`crate::evidence`].
    pub fn check_with(
        &self,
        candidate: &MetricWindow,
        baseline: Option<&MetricWindow>,
        evidence: Evidence,
    ) -> Check {
        let observed = self.metric.value_if_estimable(candidate);
        let limit = match self.threshold {
            Threshold::Absolute(value) => Some(value),
            Threshold::Relative { factor } => baseline
                .and_then(|b| self.metric.value_if_estimable(b))
                .map(|v| v * factor),
        };
        let baseline = match self.threshold {
            Threshold::Absolute(_) => None,
            Threshold::Relative { .. } => match baseline {
                Some(baseline) => Some(baseline),
                None => {
                    return Check {
                        condition: self.clone(),
                        status: CheckStatus::NoData,
                        observed,
                        limit,
                        bounds: None,
                    };
                }
            },
        };
        // A high value breaches `>` and `>=`: a trip needs the lower bound of the margin
        // (candidate minus limit) above zero, a pass its upper bound not above it. A low
        // value breaches `<` and `<=`: the other way round.
        let high_is_bad = matches!(self.comparison, Comparison::Above | Comparison::AtLeast);
        let (trip_alpha, pass_alpha) = (evidence.trip_alpha(), evidence.pass_alpha());
        let (lower_alpha, upper_alpha) = if high_is_bad {
            (trip_alpha, pass_alpha)
        } else {
            (pass_alpha, trip_alpha)
        };
        let margin = self.margin_bounds(candidate, baseline, lower_alpha, upper_alpha);
        let status = match margin {
            None => CheckStatus::NoData,
            Some(Margin { lower, upper, .. }) => {
                let (trip, pass) = if high_is_bad {
                    (
                        lower.is_some_and(|l| self.comparison.holds(l, 0.0)),
                        upper.is_some_and(|u| !self.comparison.holds(u, 0.0)),
                    )
                } else {
                    (
                        upper.is_some_and(|u| self.comparison.holds(u, 0.0)),
                        lower.is_some_and(|l| !self.comparison.holds(l, 0.0)),
                    )
                };
                match (trip, pass) {
                    (true, _) => CheckStatus::Breached,
                    (false, true) => CheckStatus::Clear,
                    (false, false) => CheckStatus::Inconclusive,
                }
            }
        };
        // Back to the candidate's value, kept where the metric can be: a rate in 0..=1,
        // a latency at least 0.
        let floor = match self.metric.quantity() {
            Quantity::Ratio | Quantity::Millis => 0.0,
            Quantity::Number => f64::NEG_INFINITY,
        };
        let ceiling = match self.metric.quantity() {
            Quantity::Ratio => 1.0,
            Quantity::Millis | Quantity::Number => f64::INFINITY,
        };
        let bounds = margin.map(|m| {
            let shift = m.limit;
            [
                m.lower.map(|l| (l + shift).max(floor)),
                m.upper.map(|u| (u + shift).min(ceiling)),
            ]
        });
        Check {
            condition: self.clone(),
            status,
            observed: observed.or_else(|| {
                // A breach shown by few samples still reports a value.
                (status == CheckStatus::Breached)
                    .then(|| self.metric.value(candidate))
                    .flatten()
            }),
            limit,
            bounds,
        }
    }

    /// Bounds of `candidate - limit` (the margin; below zero is inside a `>` gate): the
    /// lower one holding with probability `1 - lower_alpha`, the upper with `1 -
    /// upper_alpha`. `None` when there is nothing to go on.
    fn margin_bounds(
        &self,
        candidate: &MetricWindow,
        baseline: Option<&MetricWindow>,
        lower_alpha: f64,
        upper_alpha: f64,
    ) -> Option<Margin> {
        let (z_lower, z_upper) = (z_for(lower_alpha), z_for(upper_alpha));
        let factor = match self.threshold {
            Threshold::Relative { factor } => factor,
            Threshold::Absolute(_) => 1.0,
        };
        match (&self.metric, self.threshold, baseline) {
            (Metric::ErrorRate, Threshold::Absolute(limit), _) => {
                let [lower, upper] = binomial_bounds(
                    candidate.errors,
                    candidate.requests,
                    lower_alpha,
                    upper_alpha,
                )?;
                Some(Margin::of(lower - limit, upper - limit, limit))
            }
            (Metric::ErrorRate, Threshold::Relative { .. }, Some(base)) => {
                let a = (candidate.errors, candidate.requests);
                let b = (base.errors, base.requests);
                let [lower, _] = difference_bounds(a, b, factor, z_lower)?;
                let [_, upper] = difference_bounds(a, b, factor, z_upper)?;
                Some(Margin::of(lower, upper, factor * base.error_rate()?))
            }
            (Metric::Latency(stat), threshold, base) => match stat.quantile() {
                Some(q) => {
                    let absolute = |window: &MetricWindow, lower: f64, upper: f64| {
                        quantile_bounds(&window.latency_ms, q, lower, upper)
                    };
                    match (threshold, base) {
                        (Threshold::Absolute(limit), _) => {
                            let [lower, upper] = absolute(candidate, lower_alpha, upper_alpha)?;
                            Some(Margin {
                                lower: Some(lower.map_or(f64::NEG_INFINITY, |l| l - limit)),
                                upper: upper.map(|u| u - limit),
                                limit,
                            })
                        }
                        (Threshold::Relative { .. }, Some(base)) => {
                            // Each side of each sample gets half the error rate.
                            let [c_lower, c_upper] =
                                absolute(candidate, lower_alpha / 2.0, upper_alpha / 2.0)?;
                            let [b_lower, b_upper] =
                                absolute(base, upper_alpha / 2.0, lower_alpha / 2.0)?;
                            let limit = factor * nearest_rank(&base.latency_ms, q)?;
                            let lower = match (c_lower, b_upper) {
                                (Some(c), Some(b)) => c - factor * b,
                                _ => f64::NEG_INFINITY,
                            };
                            let upper = match (c_upper, b_lower) {
                                (Some(c), Some(b)) => Some(c - factor * b),
                                _ => None,
                            };
                            Some(Margin {
                                lower: Some(lower),
                                upper,
                                limit,
                            })
                        }
                        (Threshold::Relative { .. }, None) => None,
                    }
                }
                None => mean_margin(
                    &candidate.latency_ms,
                    base.map(|b| b.latency_ms.as_slice()),
                    threshold,
                    (z_lower, z_upper),
                ),
            },
            (Metric::Custom(name), threshold, base) => {
                let samples = |w: &MetricWindow| w.custom.get(name).cloned().unwrap_or_default();
                let base_samples = base.map(samples);
                mean_margin(
                    &samples(candidate),
                    base_samples.as_deref(),
                    threshold,
                    (z_lower, z_upper),
                )
            }
            // Costs are totals the host measures, not samples: the value is exact.
            (metric, threshold, base) => {
                let value = metric.value(candidate)?;
                let limit = match (threshold, base) {
                    (Threshold::Absolute(limit), _) => limit,
                    (Threshold::Relative { factor }, Some(base)) => factor * metric.value(base)?,
                    (Threshold::Relative { .. }, None) => return None,
                };
                Some(Margin::of(value - limit, value - limit, limit))
            }
        }
    }

    /// Whether the threshold needs the baseline's window.
    pub fn is_relative(&self) -> bool {
        matches!(self.threshold, Threshold::Relative { .. })
    }

    fn threshold_text(&self) -> String {
        match self.threshold {
            Threshold::Absolute(value) => format_threshold(self.metric.quantity(), value),
            Threshold::Relative { factor: 1.0 } => "baseline".to_owned(),
            Threshold::Relative { factor } => format!("baseline * {}", trim_float(factor)),
        }
    }

    /// Parses a comma-separated list such as `error_rate>1%,p99>100ms` (the compact
    /// `--rollback-on` form). Error positions count from the start of `text`.
    pub fn parse_list(text: &str) -> Result<Vec<Condition>, ConditionError> {
        let mut conditions = Vec::new();
        let mut start = 0;
        for piece in text.split(',') {
            if piece.trim().is_empty() {
                return Err(ConditionError::Syntax {
                    input: text.to_owned(),
                    position: start,
                    expected: "a condition such as `error_rate > 1%`".to_owned(),
                    found: describe_found(piece.trim()),
                });
            }
            let condition = Parser::new(text, start, start + piece.len()).condition()?;
            conditions.push(condition);
            start += piece.len() + 1;
        }
        Ok(conditions)
    }
}

/// Bounds of a candidate's margin over its limit, and the limit they are relative to.
#[derive(Debug, Clone, Copy)]
struct Margin {
    lower: Option<f64>,
    upper: Option<f64>,
    limit: f64,
}

impl Margin {
    fn of(lower: f64, upper: f64, limit: f64) -> Self {
        Margin {
            lower: Some(lower),
            upper: Some(upper),
            limit,
        }
    }
}

/// The margin of a sample mean over an absolute limit, or over `factor` times the
/// baseline's mean (a normal bound of the difference, counting both samples).
fn mean_margin(
    candidate: &[f64],
    baseline: Option<&[f64]>,
    threshold: Threshold,
    (z_lower, z_upper): (f64, f64),
) -> Option<Margin> {
    let estimate = mean_bounds(candidate, 0.0)?;
    let (limit, base_error, factor) = match (threshold, baseline) {
        (Threshold::Absolute(limit), _) => (limit, 0.0, 0.0),
        (Threshold::Relative { factor }, Some(base)) => {
            let base = mean_bounds(base, 0.0)?;
            (factor * base.mean, base.error, factor)
        }
        (Threshold::Relative { .. }, None) => return None,
    };
    let error = (estimate.error.powi(2) + (factor * base_error).powi(2)).sqrt();
    let margin = estimate.mean - limit;
    Some(Margin::of(
        margin - z_lower * error,
        margin + z_upper * error,
        limit,
    ))
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.metric,
            self.comparison.symbol(),
            self.threshold_text()
        )
    }
}

impl FromStr for Condition {
    type Err = ConditionError;
    fn from_str(text: &str) -> Result<Self, ConditionError> {
        Parser::new(text, 0, text.len()).condition()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a condition could not be parsed. Positions are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConditionError {
    /// The text does not follow `metric op threshold`.
    #[error("condition {input:?}, byte {position}: expected {expected}, found {found}")]
    Syntax {
        /// The whole input.
        input: String,
        /// Byte offset of the problem.
        position: usize,
        /// What would have been accepted there.
        expected: String,
        /// What was there.
        found: String,
    },
    /// The threshold's unit does not fit the metric.
    #[error("condition {input:?}, byte {position}: `{metric}` takes {expected}, found {found}")]
    WrongUnit {
        /// The whole input.
        input: String,
        /// Byte offset of the threshold.
        position: usize,
        /// The metric.
        metric: String,
        /// The units it takes.
        expected: String,
        /// What was written.
        found: String,
    },
    /// The threshold is not a finite number (`1e400ms` reads as infinity) or is beyond
    /// anything the metric can reach, so the gate could never fire.
    #[error("condition {input:?}, byte {position}: `{metric}` threshold {found} {reason}")]
    OutOfRange {
        /// The whole input.
        input: String,
        /// Byte offset of the threshold.
        position: usize,
        /// The metric.
        metric: String,
        /// What was written.
        found: String,
        /// Why it is refused and what is allowed.
        reason: String,
    },
    /// A custom metric name is a near miss of a built-in one, most likely a typo.
    #[error(
        "condition {input:?}, byte {position}: unknown metric `{name}`; did you mean \
         `{suggestion}`? (a custom metric's name must not be this close to a built-in one)"
    )]
    LooksLikeTypo {
        /// The whole input.
        input: String,
        /// Byte offset of the name.
        position: usize,
        /// The name written.
        name: String,
        /// The built-in name it resembles.
        suggestion: String,
    },
}

impl ConditionError {
    /// Byte offset of the problem in the input.
    pub fn position(&self) -> usize {
        match self {
            ConditionError::Syntax { position, .. }
            | ConditionError::WrongUnit { position, .. }
            | ConditionError::OutOfRange { position, .. }
            | ConditionError::LooksLikeTypo { position, .. } => *position,
        }
    }
}

fn describe_found(text: &str) -> String {
    if text.is_empty() {
        "the end of the input".to_owned()
    } else {
        let shown: String = text.chars().take(12).collect();
        format!("`{shown}`")
    }
}

/// Levenshtein distance, for typo suggestions between short names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

struct Parser<'a> {
    input: &'a str,
    at: usize,
    end: usize,
}

enum Unit {
    None,
    Percent,
    Millis,
    Seconds,
    Micros,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, start: usize, end: usize) -> Self {
        Parser {
            input,
            at: start,
            end,
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.at..self.end]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn error(&self, expected: &str) -> ConditionError {
        ConditionError::Syntax {
            input: self.input.to_owned(),
            position: self.at,
            expected: expected.to_owned(),
            found: describe_found(self.rest().trim_end()),
        }
    }

    fn identifier(&mut self) -> Option<(usize, &'a str)> {
        self.skip_space();
        let rest = self.rest();
        let mut len = 0;
        for (i, c) in rest.char_indices() {
            let ok = if i == 0 {
                c.is_ascii_alphabetic() || c == '_'
            } else {
                c.is_ascii_alphanumeric() || c == '_'
            };
            if !ok {
                break;
            }
            len = i + c.len_utf8();
        }
        (len > 0).then(|| {
            let start = self.at;
            self.at += len;
            (start, &rest[..len])
        })
    }

    fn number(&mut self) -> Option<(usize, f64)> {
        self.skip_space();
        let rest = self.rest().as_bytes();
        let mut len = 0;
        while len < rest.len() && (rest[len].is_ascii_digit() || rest[len] == b'.') {
            len += 1;
        }
        if len == 0 {
            return None;
        }
        // An exponent only when digits follow, so `5ms` is not read as `5` `e`.
        if len < rest.len() && (rest[len] == b'e' || rest[len] == b'E') {
            let mut exp = len + 1;
            if exp < rest.len() && (rest[exp] == b'+' || rest[exp] == b'-') {
                exp += 1;
            }
            let digits_start = exp;
            while exp < rest.len() && rest[exp].is_ascii_digit() {
                exp += 1;
            }
            if exp > digits_start {
                len = exp;
            }
        }
        let text = &self.rest()[..len];
        let value: f64 = text.parse().ok()?;
        let start = self.at;
        self.at += len;
        Some((start, value))
    }

    fn unit(&mut self) -> Unit {
        let rest = self.rest();
        for (suffix, unit) in [
            ("%", Unit::Percent),
            ("ms", Unit::Millis),
            ("us", Unit::Micros),
            ("µs", Unit::Micros),
            ("s", Unit::Seconds),
        ] {
            if let Some(after) = rest.strip_prefix(suffix)
                && !after.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                self.at += suffix.len();
                return unit;
            }
        }
        Unit::None
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn comparison(&mut self) -> Result<Comparison, ConditionError> {
        for (token, comparison) in [
            (">=", Comparison::AtLeast),
            ("<=", Comparison::AtMost),
            (">", Comparison::Above),
            ("<", Comparison::Below),
        ] {
            if self.eat(token) {
                return Ok(comparison);
            }
        }
        self.skip_space();
        Err(self.error("a comparison: >, >=, < or <="))
    }

    fn metric(&mut self) -> Result<Metric, ConditionError> {
        let Some((position, name)) = self.identifier() else {
            return Err(self.error(
                "a metric name such as error_rate, p99_latency, cost_per_session or a custom metric",
            ));
        };
        if name == "baseline" {
            self.at = position;
            return Err(self.error("a metric name; `baseline` only goes on the right-hand side"));
        }
        let metric = Metric::from_name(name);
        if let Metric::Custom(custom) = &metric
            && let Some(suggestion) = BUILT_IN_NAMES
                .iter()
                .filter(|known| **known != "baseline")
                .find(|known| edit_distance(custom, known) <= 2 && custom.len() > 3)
        {
            return Err(ConditionError::LooksLikeTypo {
                input: self.input.to_owned(),
                position,
                name: custom.clone(),
                suggestion: (*suggestion).to_owned(),
            });
        }
        Ok(metric)
    }

    /// Refuses a threshold (or factor) `written` at `position` whose value is not finite
    /// or is above `limit`, so that a gate that could never fire is not mistaken for a
    /// safe one.
    fn in_range(
        &self,
        metric: &Metric,
        (position, written): (usize, &str),
        value: f64,
        limit: (f64, &str),
    ) -> Result<f64, ConditionError> {
        let problem = if !value.is_finite() {
            "is not a finite number"
        } else if value > limit.0 {
            "is above the limit"
        } else {
            return Ok(value);
        };
        Err(ConditionError::OutOfRange {
            input: self.input.to_owned(),
            position,
            metric: metric.name().to_owned(),
            found: format!("`{}`", written.trim_end()),
            reason: format!(
                "{problem}, so the gate could never fire; the most it may be is {}",
                limit.1
            ),
        })
    }

    fn condition(mut self) -> Result<Condition, ConditionError> {
        let metric = self.metric()?;
        let comparison = self.comparison()?;
        let threshold = self.threshold(&metric)?;
        self.skip_space();
        if !self.rest().is_empty() {
            return Err(self.error("the end of the condition"));
        }
        Ok(Condition {
            metric,
            comparison,
            threshold,
        })
    }

    fn factor(&mut self, metric: &Metric) -> Result<f64, ConditionError> {
        match self.number() {
            Some((position, factor)) if factor >= 0.0 => {
                let written = &self.input[position..self.at];
                self.in_range(metric, (position, written), factor, FACTOR_LIMIT)
            }
            _ => Err(self.error("a factor such as 1.5")),
        }
    }

    fn threshold(&mut self, metric: &Metric) -> Result<Threshold, ConditionError> {
        self.skip_space();
        let start = self.at;
        if let Some((_, word)) = self.identifier() {
            if word != "baseline" {
                self.at = start;
                return Err(self.error("a number or `baseline`"));
            }
            if self.eat("*") {
                let factor = self.factor(metric)?;
                return Ok(Threshold::Relative { factor });
            }
            return Ok(Threshold::Relative { factor: 1.0 });
        }
        let Some((position, value)) = self.number() else {
            return Err(self.error("a threshold such as 1%, 100ms, 0.05 or baseline * 1.5"));
        };
        let number_end = self.at;
        let unit = self.unit();
        if matches!(unit, Unit::None) && self.rest().starts_with(|c: char| c.is_alphabetic()) {
            return Err(self.error("a unit (%, ms, us or s), `* baseline` or the end"));
        }
        if self.eat("*") {
            let word_start = self.at;
            match self.identifier() {
                Some((_, "baseline")) if matches!(unit, Unit::None) => {
                    let written = &self.input[position..number_end];
                    let factor = self.in_range(metric, (position, written), value, FACTOR_LIMIT)?;
                    return Ok(Threshold::Relative { factor });
                }
                _ => {
                    self.at = word_start;
                    return Err(self.error("`baseline`"));
                }
            }
        }
        let written = &self.input[position..self.at];
        let limit = match metric.quantity() {
            Quantity::Millis => (MAX_LATENCY_MS, "86400s (a day)"),
            Quantity::Number => (MAX_PLAIN_THRESHOLD, "1e15"),
            // Ratios are also held to 0..=100% below, with the units they take.
            Quantity::Ratio => (1.0, "100%"),
        };
        // Before the units: `1e400%` is refused for what it is, not for its unit.
        self.in_range(metric, (position, written), value, (f64::INFINITY, limit.1))?;
        let wrong = |expected: &str| ConditionError::WrongUnit {
            input: self.input.to_owned(),
            position,
            metric: metric.name().to_owned(),
            expected: expected.to_owned(),
            found: format!("`{written}`"),
        };
        let canonical = match (metric.quantity(), unit) {
            (Quantity::Ratio, Unit::Percent) if (0.0..=100.0).contains(&value) => value / 100.0,
            // A bare 1 or more is almost surely a percentage written without `%`.
            (Quantity::Ratio, Unit::None) if (0.0..1.0).contains(&value) => value,
            (Quantity::Ratio, _) => {
                return Err(wrong(
                    "a percentage such as 1% or a ratio below 1 such as 0.01",
                ));
            }
            (Quantity::Millis, Unit::Millis) => value,
            (Quantity::Millis, Unit::Seconds) => value * 1_000.0,
            (Quantity::Millis, Unit::Micros) => value / 1_000.0,
            (Quantity::Millis, _) => {
                return Err(wrong("a time with a unit such as 100ms, 250us or 1.5s"));
            }
            (Quantity::Number, Unit::None) => value,
            (Quantity::Number, _) => {
                return Err(wrong("a plain number such as 0.05 or 1e6"));
            }
        };
        Ok(Threshold::Absolute(self.in_range(
            metric,
            (position, written),
            canonical,
            limit,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_core::Timestamp;

    fn window(requests: u64, errors: u64, latency: &[f64]) -> MetricWindow {
        MetricWindow {
            requests,
            errors,
            latency_ms: latency.to_vec(),
            ..MetricWindow::empty(Timestamp::EPOCH, Timestamp::from_millis(60_000))
        }
    }

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("error_rate > 1%", "error_rate > 1%"),
            ("error_rate>1%", "error_rate > 1%"),
            ("error_rate > 0.01", "error_rate > 1%"),
            ("p99_latency > 100ms", "p99_latency > 100ms"),
            ("p99 > 100ms", "p99_latency > 100ms"),
            ("p50 >= 20ms", "p50_latency >= 20ms"),
            ("p90 > 1.5s", "p90_latency > 1.5s"),
            ("p95 > 250us", "p95_latency > 0.25ms"),
            ("mean_latency < 40ms", "mean_latency < 40ms"),
            ("cost_per_session > 0.05", "cost_per_session > 0.05"),
            ("cost_per_request <= 0.001", "cost_per_request <= 0.001"),
            ("error_rate > baseline * 1.5", "error_rate > baseline * 1.5"),
            ("p99 > 2 * baseline", "p99_latency > baseline * 2"),
            ("p99 > baseline", "p99_latency > baseline"),
            ("fuel_per_message > 1e6", "fuel_per_message > 1e6"),
            ("tokens > 2.5E+3", "tokens > 2500"),
        ];
        for (text, canonical) in cases {
            let condition: Condition = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(condition.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<Condition>().unwrap(), condition);
        }
        let c: Condition = "fuel_per_message > 1e6".parse().unwrap();
        assert_eq!(c.metric, Metric::Custom("fuel_per_message".into()));
        assert_eq!(c.threshold, Threshold::Absolute(1e6));
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let cases: [(&str, usize, &str); 11] = [
            ("error_rate > 1x", 14, "a unit (%, ms, us or s)"),
            ("", 0, "a metric name"),
            ("error_rate", 10, "a comparison"),
            ("error_rate = 1%", 11, "a comparison"),
            ("error_rate > ", 13, "a threshold"),
            ("error_rate > 1% and", 16, "the end of the condition"),
            ("error_rate > 100ms", 13, "a percentage"),
            ("p99 > 100", 6, "a time with a unit"),
            ("p99 > 5%", 6, "a time with a unit"),
            ("cost_per_session > 5%", 19, "a plain number"),
            ("error_rate > baseline * x", 24, "a factor"),
        ];
        for (text, position, expected) in cases {
            let err = text.parse::<Condition>().unwrap_err();
            assert_eq!(err.position(), position, "{text}: {err}");
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
        let typo = "eror_rate > 1%".parse::<Condition>().unwrap_err();
        assert!(
            matches!(typo, ConditionError::LooksLikeTypo { ref suggestion, .. } if suggestion == "error_rate")
        );
        assert!(typo.to_string().contains("did you mean `error_rate`"));
    }

    #[test]
    fn list_positions_count_from_the_start_of_the_whole_text() {
        let list = Condition::parse_list("error_rate>1%,p99>100ms").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "p99_latency > 100ms");
        let err = Condition::parse_list("error_rate>1%,p99>100x").unwrap_err();
        assert_eq!(err.position(), 21, "{err}");
        assert!(err.to_string().contains("a unit"), "{err}");
        let empty = Condition::parse_list("error_rate>1%,,p99>1ms").unwrap_err();
        assert_eq!(empty.position(), 14);
    }

    #[test]
    fn checks_decide_on_evidence() {
        let rate: Condition = "error_rate > 1%".parse().unwrap();
        // 20 errors in 1,000: the 95 % lower bound is about 1.4 %, above the gate.
        let check = rate.check(&window(1_000, 20, &[]), None);
        assert_eq!(check.status, CheckStatus::Breached);
        assert_eq!(check.observed, Some(0.02));
        assert_eq!(check.describe(), "Error rate: 2% (threshold: 1%)");
        // 2 errors in 150 (1.3 %) shows nothing either way.
        assert_eq!(
            rate.check(&window(150, 2, &[]), None).status,
            CheckStatus::Inconclusive
        );
        // 5 in 2,000: the upper bound is about 0.45 %, within the gate.
        let clear = rate.check(&window(2_000, 5, &[]), None);
        assert_eq!(clear.status, CheckStatus::Clear);
        assert!(
            clear
                .describe_evidence(0.95)
                .contains("within bounds at 95% confidence"),
            "{}",
            clear.describe_evidence(0.95)
        );
        // Shared among 100 looks, 2 % in 1,000 is no longer enough to trip.
        assert_eq!(
            rate.check_with(&window(1_000, 20, &[]), None, Evidence::new(0.95, 100))
                .status,
            CheckStatus::Inconclusive
        );

        let relative: Condition = "error_rate > baseline * 2.5".parse().unwrap();
        let (small, small_base) = (window(1_000, 20, &[]), window(1_000, 10, &[]));
        assert_eq!(
            relative.check(&small, Some(&small_base)).status,
            CheckStatus::Inconclusive
        );
        let (large, large_base) = (window(100_000, 2_000, &[]), window(100_000, 1_000, &[]));
        assert_eq!(
            relative.check(&large, Some(&large_base)).status,
            CheckStatus::Clear
        );
        let worse = window(100_000, 4_000, &[]);
        assert_eq!(
            relative.check(&worse, Some(&large_base)).status,
            CheckStatus::Breached
        );
        assert_eq!(relative.check(&small, None).status, CheckStatus::NoData);

        let p99: Condition = "p99 > 100ms".parse().unwrap();
        // 10 samples all at 500 ms: were the 99th percentile at most 100 ms, two or more
        // samples above it would be a 0.4 % chance.
        assert_eq!(
            p99.check(&window(10, 0, &[500.0; 10]), None).status,
            CheckStatus::Breached
        );
        // 100 samples at 10 ms cannot bound a 99th percentile above; 300 can.
        assert_eq!(
            p99.check(&window(100, 0, &[10.0; 100]), None).status,
            CheckStatus::Inconclusive
        );
        assert_eq!(
            p99.check(&window(300, 0, &[10.0; 300]), None).status,
            CheckStatus::Clear
        );
        let relative_p99: Condition = "p99 > baseline * 2".parse().unwrap();
        assert_eq!(
            relative_p99
                .check(
                    &window(600, 0, &[50.0; 600]),
                    Some(&window(600, 0, &[10.0; 600]))
                )
                .status,
            CheckStatus::Breached
        );
        assert_eq!(
            relative_p99
                .check(
                    &window(600, 0, &[10.0; 600]),
                    Some(&window(600, 0, &[10.0; 600]))
                )
                .status,
            CheckStatus::Clear
        );

        let empty = window(0, 0, &[]);
        assert_eq!(rate.check(&empty, None).status, CheckStatus::NoData);
        assert_eq!(p99.check(&empty, None).status, CheckStatus::NoData);
        assert_eq!(
            p99.check(&empty, None).describe(),
            "P99 latency: no data (threshold: 100ms)"
        );
    }

    #[test]
    fn custom_metrics_read_the_window_samples() {
        let mut candidate = window(10, 0, &[]);
        let samples: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 2e6 } else { 1e6 })
            .collect();
        candidate.custom.insert("fuel_per_message".into(), samples);
        let c: Condition = "fuel_per_message > 1e6".parse().unwrap();
        let check = c.check(&candidate, None);
        assert_eq!(check.status, CheckStatus::Breached);
        assert_eq!(check.observed, Some(1.5e6));
        let mut two = window(10, 0, &[]);
        two.custom.insert("fuel_per_message".into(), vec![2e6, 1e6]);
        assert_eq!(c.check(&two, None).status, CheckStatus::Inconclusive);
        assert_eq!(
            c.check(&window(10, 0, &[]), None).status,
            CheckStatus::NoData
        );
    }

    #[test]
    fn serde_uses_the_text_form() {
        let c: Condition = "p99 > 100ms".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            "\"p99_latency > 100ms\""
        );
        let back: Condition = serde_json::from_str("\"p99_latency > 100ms\"").unwrap();
        assert_eq!(back, c);
        let err = serde_json::from_str::<Condition>("\"p99 > 100\"").unwrap_err();
        assert!(err.to_string().contains("a time with a unit"));
    }

    #[test]
    fn nearest_rank_agrees_with_the_core_definition() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for n in [1usize, 2, 3, 10, 99, 100, 101, 257] {
            let samples: Vec<f64> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 1_000) as f64 / 7.0
                })
                .collect();
            for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
                assert_eq!(
                    nearest_rank(&samples, q),
                    caxton_core::metrics::quantile(&samples, q),
                    "n {n}, q {q}"
                );
            }
        }
        assert_eq!(nearest_rank(&[f64::NAN, 2.0], 0.5), Some(2.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("eror_rate", "error_rate"), 1);
        assert_eq!(edit_distance("p99", "p99"), 0);
        assert_eq!(edit_distance("abc", "xyz"), 3);
    }
}
