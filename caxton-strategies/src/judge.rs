//! The statistical judge: the Mann-Whitney U test, candidate against baseline.
//!
//! Latency and other sampled metrics are rarely normal, so the judge compares ranks, not
//! means. [`mann_whitney_u`] is the two-sided test (normal approximation with tie and
//! continuity correction, or the exact distribution for small samples without ties, as
//! SciPy's `scipy.stats.mannwhitneyu` does). [`Judge`] turns it into a verdict with a
//! confidence and an effect-size tolerance: the candidate may be up to `tolerance` worse
//! before it fails, and when the data cannot tell, the verdict is inconclusive.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How the p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Exact when one sample has at most 8 values, there are no ties and the
    /// distribution is small enough to count; the normal approximation otherwise.
    #[default]
    Auto,
    /// The exact distribution of U (no ties allowed).
    Exact,
    /// The normal approximation with tie and continuity correction.
    Asymptotic,
}

/// The result of a Mann-Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample: pairs `(x, y)` with `x > y`, ties counting one half.
    pub u_first: f64,
    /// U of the second sample, `n1 * n2 - u_first`.
    pub u_second: f64,
    /// The standardized statistic, for the normal approximation.
    pub z: Option<f64>,
    /// The two-sided p-value.
    pub p_value: f64,
    /// The method used: [`Method::Exact`] or [`Method::Asymptotic`].
    pub method: Method,
}

impl MannWhitney {
    /// Whether the first sample tends to be larger than the second.
    pub fn first_is_larger(&self) -> bool {
        self.u_first > self.u_second
    }
}

/// Why a test could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// A sample was empty.
    #[error(
        "the {which} sample is empty; the Mann-Whitney U test needs at least one value in each"
    )]
    Empty {
        /// `first` or `second`.
        which: &'static str,
    },
    /// A sample held NaN.
    #[error("the {which} sample holds NaN at index {index}")]
    NotANumber {
        /// `first` or `second`.
        which: &'static str,
        /// Where.
        index: usize,
    },
    /// The exact method was asked for but the samples have ties.
    #[error("the exact Mann-Whitney distribution does not allow ties; use the asymptotic method")]
    ExactWithTies,
    /// The exact method was asked for samples too large to count.
    #[error(
        "the exact Mann-Whitney distribution for samples of {n1} and {n2} is too large to \
         count; use the asymptotic method"
    )]
    ExactTooLarge {
        /// Size of the first sample.
        n1: usize,
        /// Size of the second sample.
        n2: usize,
    },
}

/// Work allowed for counting the exact distribution: `(n1 + n2) * min(n1, n2) * n1 * n2`.
const EXACT_BUDGET: u128 = 20_000_000;

/// The two-sided Mann-Whitney U test of `first` against `second`.
///
/// ```
/// use caxton_strategies::judge::{mann_whitney_u, Method};
///
/// // Every value of the first sample is larger: U1 = 3 * 3 = 9.
/// let r = mann_whitney_u(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0], Method::Auto)?;
/// assert_eq!(r.u_first, 9.0);
/// assert_eq!(r.method, Method::Exact);
/// assert!((r.p_value - 0.1).abs() < 1e-12); // 2 / C(6, 3)
/// # Ok::<(), caxton_strategies::judge::SampleError>(())
/// ```
pub fn mann_whitney_u(
    first: &[f64],
    second: &[f64],
    method: Method,
) -> Result<MannWhitney, SampleError> {
    check_sample(first, "first")?;
    check_sample(second, "second")?;
    let (n1, n2) = (first.len(), second.len());
    let mut all: Vec<(f64, bool)> = first
        .iter()
        .map(|v| (*v, true))
        .chain(second.iter().map(|v| (*v, false)))
        .collect();
    // Ties are found by value below, so the sort need not be stable.
    all.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));

    // Average ranks over runs of ties; sum of t^3 - t for the variance correction.
    let mut rank_sum_first = 0.0;
    let mut tie_term = 0.0;
    let mut ties = false;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let run = (j - i) as f64;
        if j - i > 1 {
            ties = true;
            tie_term += run * run * run - run;
        }
        // Ranks i+1 ..= j, averaged.
        let rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_first += rank * all[i..j].iter().filter(|(_, f)| *f).count() as f64;
        i = j;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u_first = rank_sum_first - n1f * (n1f + 1.0) / 2.0;
    let u_second = n1f * n2f - u_first;
    let u_max = u_first.max(u_second);

    let exact_cost = (n1 + n2) as u128 * n1.min(n2) as u128 * (n1 * n2) as u128;
    let use_exact = match method {
        Method::Exact if ties => return Err(SampleError::ExactWithTies),
        Method::Exact if exact_cost > EXACT_BUDGET => {
            return Err(SampleError::ExactTooLarge { n1, n2 });
        }
        Method::Exact => true,
        Method::Asymptotic => false,
        Method::Auto => !ties && n1.min(n2) <= 8 && exact_cost <= EXACT_BUDGET,
    };
    if use_exact {
        let tail = exact_upper_tail(n1, n2, u_max as usize);
        return Ok(MannWhitney {
            u_first,
            u_second,
            z: None,
            p_value: (2.0 * tail).min(1.0),
            method: Method::Exact,
        });
    }
    let n = n1f + n2f;
    let mu = n1f * n2f / 2.0;
    let variance = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let z = if variance > 0.0 {
        (u_max - mu - 0.5) / variance.sqrt()
    } else {
        // Every value is equal: no evidence either way.
        0.0
    };
    let p_value = (2.0 * normal_upper_tail(z)).clamp(0.0, 1.0);
    Ok(MannWhitney {
        u_first,
        u_second,
        z: Some(z),
        p_value,
        method: Method::Asymptotic,
    })
}

fn check_sample(sample: &[f64], which: &'static str) -> Result<(), SampleError> {
    if sample.is_empty() {
        return Err(SampleError::Empty { which });
    }
    if let Some(index) = sample.iter().position(|v| v.is_nan()) {
        return Err(SampleError::NotANumber { which, index });
    }
    Ok(())
}

/// `P(Z >= z)` for a standard normal `Z`.
fn normal_upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// `P(U >= u)` under the null hypothesis, by counting the arrangements of `n1` and `n2`
/// values that give each U (the q-binomial coefficient, built with the q-Pascal rule so
/// that every step only adds counts).
fn exact_upper_tail(n1: usize, n2: usize, u: usize) -> f64 {
    let k = n1.min(n2);
    let max_u = n1 * n2;
    // counts[j][s]: arrangements of j "first" among the values so far with statistic s.
    let mut counts: Vec<Vec<f64>> = vec![vec![0.0; max_u + 1]; k + 1];
    counts[0][0] = 1.0;
    for total in 1..=(n1 + n2) {
        // Update from high j to low so counts[j - 1] is still the previous row.
        for j in (1..=k.min(total)).rev() {
            // [total, j] = [total-1, j-1] + q^j [total-1, j]
            let limit = j * (total - j);
            for s in (0..=limit.min(max_u)).rev() {
                let shifted = if s >= j { counts[j][s - j] } else { 0.0 };
                counts[j][s] = counts[j - 1][s] + shifted;
            }
        }
    }
    let row = &counts[k];
    let all: f64 = row.iter().sum();
    let tail: f64 = row[u.min(max_u)..].iter().sum();
    tail / all
}

/// The judge's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The candidate is not worse than the baseline beyond the tolerance.
    Pass,
    /// The candidate is worse than the baseline beyond the tolerance, with confidence.
    Fail,
    /// The data cannot tell: gather more before deciding.
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// A verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Candidate samples compared.
    pub candidate_samples: usize,
    /// Baseline samples compared.
    pub baseline_samples: usize,
    /// The candidate's median, when it had samples.
    pub candidate_median: Option<f64>,
    /// The baseline's median, when it had samples.
    pub baseline_median: Option<f64>,
    /// Two-sided p-value of candidate against baseline.
    pub p_value: Option<f64>,
    /// Two-sided p-value of candidate against the baseline scaled by `1 + tolerance`.
    pub tolerance_p_value: Option<f64>,
    /// Why, for people.
    pub reason: String,
}

/// Why a judge could not be configured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JudgeConfigError {
    /// The confidence was not strictly between 0.5 and 1.
    #[error("judge confidence {0} must be between 50% and 100% (exclusive), e.g. 95%")]
    Confidence(f64),
    /// The tolerance was negative or not finite.
    #[error("judge tolerance {0} must be a finite fraction of 0 or more, e.g. 10%")]
    Tolerance(f64),
    /// Fewer than 2 samples were required.
    #[error("judge minimum of {0} samples is too small; use at least 2")]
    MinSamples(usize),
}

/// Compares a candidate's samples with a baseline's: lower is better.
///
/// With `confidence` c and `tolerance` t, let α = 1 − c:
/// - **fail** when the candidate is larger than the baseline scaled by 1 + t, at level α;
/// - **pass** when it is not significantly larger than the baseline, or is significantly
///   smaller than the scaled baseline (worse, but provably within the tolerance);
/// - **inconclusive** otherwise, and whenever either side has fewer than `min_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judge {
    confidence: f64,
    tolerance: f64,
    min_samples: usize,
    #[serde(default)]
    method: Method,
}

impl Default for Judge {
    /// 95 % confidence, 10 % tolerance, at least 20 samples a side.
    fn default() -> Self {
        Judge {
            confidence: 0.95,
            tolerance: 0.10,
            min_samples: 20,
            method: Method::Auto,
        }
    }
}

impl Judge {
    /// A judge with this confidence (e.g. `0.95`) and tolerance (e.g. `0.10` for 10 %).
    pub fn new(confidence: f64, tolerance: f64) -> Result<Self, JudgeConfigError> {
        Judge::default()
            .with_confidence(confidence)?
            .with_tolerance(tolerance)
    }

    /// Sets the confidence, strictly between 0.5 and 1.
    pub fn with_confidence(mut self, confidence: f64) -> Result<Self, JudgeConfigError> {
        if !(confidence > 0.5 && confidence < 1.0) {
            return Err(JudgeConfigError::Confidence(confidence));
        }
        self.confidence = confidence;
        Ok(self)
    }

    /// Sets the tolerance, a fraction of 0 or more.
    pub fn with_tolerance(mut self, tolerance: f64) -> Result<Self, JudgeConfigError> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(JudgeConfigError::Tolerance(tolerance));
        }
        self.tolerance = tolerance;
        Ok(self)
    }

    /// Sets the fewest samples a side needed for a verdict other than inconclusive.
    pub fn with_min_samples(mut self, min_samples: usize) -> Result<Self, JudgeConfigError> {
        if min_samples < 2 {
            return Err(JudgeConfigError::MinSamples(min_samples));
        }
        self.min_samples = min_samples;
        Ok(self)
    }

    /// Sets how p-values are computed.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The confidence.
    pub fn confidence(&self) -> f64 {
        self.confidence
    }

    /// The tolerance.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }

    /// The fewest samples a side for a verdict.
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// Judges `candidate` against `baseline`; NaN samples are ignored.
    pub fn compare(&self, candidate: &[f64], baseline: &[f64]) -> Judgement {
        let candidate: Vec<f64> = candidate.iter().copied().filter(|v| !v.is_nan()).collect();
        let baseline: Vec<f64> = baseline.iter().copied().filter(|v| !v.is_nan()).collect();
        let mut judgement = Judgement {
            verdict: Verdict::Inconclusive,
            candidate_samples: candidate.len(),
            baseline_samples: baseline.len(),
            candidate_median: crate::condition::nearest_rank(&candidate, 0.5),
            baseline_median: crate::condition::nearest_rank(&baseline, 0.5),
            p_value: None,
            tolerance_p_value: None,
            reason: String::new(),
        };
        if candidate.len() < self.min_samples || baseline.len() < self.min_samples {
            judgement.reason = format!(
                "too few samples to compare: {} candidate and {} baseline, {} needed on each side",
                candidate.len(),
                baseline.len(),
                self.min_samples
            );
            return judgement;
        }
        let scale = 1.0 + self.tolerance;
        let scaled: Vec<f64> = baseline.iter().map(|v| v * scale).collect();
        // Both samples are non-empty and NaN-free; a too-large exact request falls back.
        let test = |other: &[f64]| {
            mann_whitney_u(&candidate, other, self.method)
                .or_else(|_| mann_whitney_u(&candidate, other, Method::Asymptotic))
                .ok()
        };
        let (Some(plain), Some(tolerant)) = (test(&baseline), test(&scaled)) else {
            judgement.reason = "the samples could not be compared".to_owned();
            return judgement;
        };
        judgement.p_value = Some(plain.p_value);
        judgement.tolerance_p_value = Some(tolerant.p_value);
        let alpha = 1.0 - self.confidence;
        let pct = |v: f64| format!("{}%", (v * 1000.0).round() / 10.0);
        let (verdict, reason) = if tolerant.p_value < alpha && tolerant.first_is_larger() {
            (
                Verdict::Fail,
                format!(
                    "candidate is worse than baseline by more than {}, p = {:.4} < {:.4}",
                    pct(self.tolerance),
                    tolerant.p_value,
                    alpha
                ),
            )
        } else if plain.p_value < alpha && !plain.first_is_larger() {
            (
                Verdict::Pass,
                format!(
                    "candidate is significantly better than baseline, p = {:.4}",
                    plain.p_value
                ),
            )
        } else if plain.p_value >= alpha {
            (
                Verdict::Pass,
                format!("no significant regression, p = {:.4}", plain.p_value),
            )
        } else if tolerant.p_value < alpha {
            (
                Verdict::Pass,
                format!(
                    "candidate is worse than baseline but within the {} tolerance, p = {:.4}",
                    pct(self.tolerance),
                    tolerant.p_value
                ),
            )
        } else {
            (
                Verdict::Inconclusive,
                format!(
                    "candidate is worse than baseline, p = {:.4}, but the data cannot tell \
                     whether by more than {}",
                    plain.p_value,
                    pct(self.tolerance)
                ),
            )
        };
        judgement.verdict = verdict;
        judgement.reason = reason;
        judgement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-300)
    }

    // Expected values below come from SciPy 1.17.1:
    //   scipy.stats.mannwhitneyu(x, y, alternative="two-sided", method=M,
    //                            use_continuity=True)
    // with M as named in each case; `statistic` is U of x (our `u_first`).

    #[test]
    fn known_answer_exact_small_samples() {
        // Hand check: U1 = 9 is the largest possible; 2 of the C(6,3) = 20 arrangements
        // are at least as extreme on either side, so p = 2/20 = 0.1.
        let r = mann_whitney_u(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0], Method::Exact).unwrap();
        assert_eq!((r.u_first, r.u_second), (9.0, 0.0));
        assert!(close(r.p_value, 0.1, 1e-12));

        // x = [19, 22, 16, 29, 24], y = [20, 11, 17, 12], method="exact":
        // statistic = 17.0, pvalue = 0.1111111111111111
        let r = mann_whitney_u(
            &[19.0, 22.0, 16.0, 29.0, 24.0],
            &[20.0, 11.0, 17.0, 12.0],
            Method::Auto,
        )
        .unwrap();
        assert_eq!(r.method, Method::Exact);
        assert_eq!(r.u_first, 17.0);
        assert!(close(r.p_value, 0.1111111111111111, 1e-12), "{}", r.p_value);
    }

    #[test]
    fn known_answer_asymptotic_with_ties() {
        // x = [1, 2, 2, 3, 4, 5, 5, 6, 7, 8], y = [3, 4, 5, 5, 6, 7, 8, 9, 9, 10],
        // method="asymptotic": statistic = 24.5, pvalue = 0.05716890497838409
        let x = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, 7.0, 8.0];
        let y = [3.0, 4.0, 5.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 10.0];
        let r = mann_whitney_u(&x, &y, Method::Auto).unwrap();
        assert_eq!(r.method, Method::Asymptotic);
        assert_eq!(r.u_first, 24.5);
        assert!(close(r.p_value, 0.05716890497838409, 1e-9), "{}", r.p_value);
    }

    #[test]
    fn known_answer_asymptotic_larger_samples() {
        // x = [0.5 * i for i in range(30)], y = [0.5 * i + 3.2 for i in range(25)],
        // method="asymptotic": statistic = 276.0, pvalue = 0.0959219570967795
        let x: Vec<f64> = (0..30).map(|i| 0.5 * f64::from(i)).collect();
        let y: Vec<f64> = (0..25).map(|i| 0.5 * f64::from(i) + 3.2).collect();
        let r = mann_whitney_u(&x, &y, Method::Auto).unwrap();
        assert_eq!(r.u_first, 276.0);
        assert!(close(r.p_value, 0.0959219570967795, 1e-9), "{}", r.p_value);
        // The same samples, counted exactly, method="exact":
        // statistic = 276.0, pvalue = 0.09613879146842587
        let exact = mann_whitney_u(&x, &y, Method::Exact).unwrap();
        assert!(
            close(exact.p_value, 0.09613879146842587, 1e-9),
            "{}",
            exact.p_value
        );
    }

    #[test]
    fn u_statistics_are_complementary_and_swap_with_the_samples() {
        let a = [1.0, 4.0, 9.0, 9.0];
        let b = [2.0, 9.0, 11.0];
        let ab = mann_whitney_u(&a, &b, Method::Asymptotic).unwrap();
        let ba = mann_whitney_u(&b, &a, Method::Asymptotic).unwrap();
        assert_eq!(ab.u_first + ab.u_second, 12.0);
        assert_eq!(ab.u_first, ba.u_second);
        assert!(close(ab.p_value, ba.p_value, 1e-12));
    }

    #[test]
    fn bad_samples_are_errors() {
        assert_eq!(
            mann_whitney_u(&[], &[1.0], Method::Auto),
            Err(SampleError::Empty { which: "first" })
        );
        assert_eq!(
            mann_whitney_u(&[1.0], &[2.0, f64::NAN], Method::Auto),
            Err(SampleError::NotANumber {
                which: "second",
                index: 1
            })
        );
        assert_eq!(
            mann_whitney_u(&[1.0, 1.0], &[2.0], Method::Exact),
            Err(SampleError::ExactWithTies)
        );
        let all_equal = mann_whitney_u(&[3.0; 10], &[3.0; 10], Method::Auto).unwrap();
        assert_eq!(all_equal.p_value, 1.0);
    }

    fn ramp(n: usize, start: f64, step: f64) -> Vec<f64> {
        (0..n).map(|i| start + step * i as f64).collect()
    }

    #[test]
    fn judge_passes_equal_samples_and_fails_a_clear_regression() {
        let judge = Judge::default();
        let baseline = ramp(200, 10.0, 0.1);
        let same = judge.compare(&baseline, &baseline);
        assert_eq!(same.verdict, Verdict::Pass, "{}", same.reason);
        let slow: Vec<f64> = baseline.iter().map(|v| v * 1.6).collect();
        let fail = judge.compare(&slow, &baseline);
        assert_eq!(fail.verdict, Verdict::Fail, "{}", fail.reason);
        assert!(fail.reason.contains("more than 10%"));
    }

    #[test]
    fn judge_accepts_a_regression_within_the_tolerance() {
        let judge = Judge::new(0.95, 0.25).unwrap();
        let baseline = ramp(400, 10.0, 0.05);
        let slower: Vec<f64> = baseline.iter().map(|v| v * 1.08).collect();
        let judgement = judge.compare(&slower, &baseline);
        assert_eq!(judgement.verdict, Verdict::Pass, "{}", judgement.reason);
        assert!(judgement.reason.contains("within"));
    }

    #[test]
    fn judge_is_inconclusive_when_the_data_cannot_tell() {
        let judge = Judge::new(0.95, 0.10).unwrap();
        let baseline = ramp(60, 10.0, 0.5);
        // About 10% slower: clearly worse than baseline, not clearly beyond 10%.
        let slower: Vec<f64> = baseline.iter().map(|v| v * 1.1 + 3.0).collect();
        let judgement = judge.compare(&slower, &baseline);
        assert_eq!(
            judgement.verdict,
            Verdict::Inconclusive,
            "{} (p {:?}, tolerant p {:?})",
            judgement.reason,
            judgement.p_value,
            judgement.tolerance_p_value
        );
        let few = judge.compare(&[1.0, 2.0], &[1.0, 2.0]);
        assert_eq!(few.verdict, Verdict::Inconclusive);
        assert!(few.reason.contains("too few samples"));
    }

    #[test]
    fn judge_configuration_is_checked() {
        assert!(matches!(
            Judge::new(1.0, 0.1),
            Err(JudgeConfigError::Confidence(_))
        ));
        assert!(matches!(
            Judge::new(0.95, -0.1),
            Err(JudgeConfigError::Tolerance(_))
        ));
        assert!(Judge::default().with_min_samples(1).is_err());
    }
}
