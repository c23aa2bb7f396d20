//! How sure a gate must be before it decides, and the confidence bounds it decides on.
//!
//! A gate such as `error_rate > 1%` does not compare a point estimate with its threshold:
//! it asks whether the data *show* the candidate above the threshold (it trips), show it
//! below (it is satisfied), or cannot tell yet (inconclusive). The bounds are:
//!
//! - **error rates**: the exact (Clopper–Pearson) one-sided bound of `errors / requests`;
//! - **relative error rates** (`error_rate > baseline * k`): a one-sided two-proportion
//!   test of `p_candidate - k · p_baseline`, whose variance counts both samples' sizes
//!   (each rate is smoothed by half an error and half a success so that zero counts do
//!   not make the test certain);
//! - **latency quantiles**: distribution-free order-statistic bounds: the `j`-th smallest
//!   of `n` samples lies below the `q` quantile with the binomial probability
//!   `P(Bin(n, q) ≥ j)`; relative quantiles bound the candidate against the baseline's
//!   bound on the other side, each at half the error rate;
//! - **means** (mean latency, custom metrics): the normal bound of the sample mean;
//! - **costs** are totals the host measures exactly, so their point value is their bound.
//!
//! Repeated looks: a gate is checked every `check_interval` on the data accumulated since
//! the step began. So that looking often does not multiply false alarms, a gate trips
//! only at `1 - (1 - confidence) / looks`, where `looks` is the number of checks a step
//! can make (its hold, the longest extension and the longest pause, divided by the check
//! interval; at most [`MAX_LOOKS`]): by Bonferroni's inequality a candidate inside the
//! gate trips in a step with a probability of at most `1 - confidence`. A step passes
//! only when every gate is satisfied at `confidence`, a single decision at the end of the
//! hold.

use std::time::Duration;

/// The default confidence of gates: 95 %.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// The lowest confidence a spec may ask for: 50 % (below it, a gate would trip on data
/// that lean the other way).
pub const MIN_CONFIDENCE: f64 = 0.5;

/// The highest confidence a spec may ask for: 99.99 %.
pub const MAX_CONFIDENCE: f64 = 0.9999;

/// The most looks a step's error budget is shared among. Cumulative data make later
/// looks nearly repeat the earlier ones, so sharing among more would only blunt the gate.
pub const MAX_LOOKS: u32 = 100;

/// How sure one check must be: the confidence of the gates and the looks the step's
/// error budget is shared among.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The confidence a decision needs, in `MIN_CONFIDENCE..=MAX_CONFIDENCE`.
    pub confidence: f64,
    /// The checks a step can make, `1..=MAX_LOOKS`.
    pub looks: u32,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            confidence: DEFAULT_CONFIDENCE,
            looks: 1,
        }
    }
}

impl Evidence {
    /// `confidence` shared among `looks` (clamped to `1..=MAX_LOOKS`).
    pub fn new(confidence: f64, looks: u32) -> Self {
        Evidence {
            confidence: confidence.clamp(MIN_CONFIDENCE, MAX_CONFIDENCE),
            looks: looks.clamp(1, MAX_LOOKS),
        }
    }

    /// The looks a step spanning `span` (hold, extensions and pause) makes at one check
    /// every `interval`.
    pub fn looks_in(span: Duration, interval: Duration) -> u32 {
        if interval.is_zero() {
            return MAX_LOOKS;
        }
        let looks = (span.as_secs_f64() / interval.as_secs_f64()).ceil();
        if looks >= f64::from(MAX_LOOKS) {
            MAX_LOOKS
        } else {
            (looks as u32).max(1)
        }
    }

    /// The one-sided error rate of a trip: `(1 - confidence) / looks`.
    pub fn trip_alpha(&self) -> f64 {
        (1.0 - self.confidence) / f64::from(self.looks.max(1))
    }

    /// The one-sided error rate of a pass: `1 - confidence`.
    pub fn pass_alpha(&self) -> f64 {
        1.0 - self.confidence
    }
}

/// The `p` quantile of the standard normal distribution, for `p` in `(0, 1)`.
///
/// Acklam's rational approximation, refined by one Halley step on `erfc`: accurate to
/// about 1e-15.
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let x = if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step.
    let e = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The one-sided `z` for an error rate `alpha`: `normal_quantile(1 - alpha)`.
pub fn z_for(alpha: f64) -> f64 {
    -normal_quantile(alpha)
}

/// Wilson score bounds `[lower, upper]` of a proportion, `successes` of `trials`, each
/// one-sided at `z`, with Yates' continuity correction (Newcombe's method 4), which keeps
/// them at or beyond the stated level even at a handful of errors, where the plain score
/// bound trips too often. `None` with no trials.
pub fn wilson_bounds(successes: u64, trials: u64, z: f64) -> Option<[f64; 2]> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let x = successes.min(trials) as f64;
    let p = x / n;
    let z2 = z * z;
    let denominator = 2.0 * (n + z2);
    let lower = if successes == 0 {
        0.0
    } else {
        let root = (z2 - 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) + 1.0)).max(0.0);
        ((2.0 * x + z2 - 1.0 - z * root.sqrt()) / denominator).clamp(0.0, p)
    };
    let upper = if successes >= trials {
        1.0
    } else {
        let root = (z2 + 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) - 1.0)).max(0.0);
        ((2.0 * x + z2 + 1.0 + z * root.sqrt()) / denominator).clamp(p, 1.0)
    };
    Some([lower, upper])
}

/// Exact (Clopper–Pearson) bounds `[lower, upper]` of a proportion, `successes` of
/// `trials`: the lower bound holds with probability at least `1 - alpha_lower`, the upper
/// with at least `1 - alpha_upper`, at any number of trials. `None` with no trials.
pub fn binomial_bounds(
    successes: u64,
    trials: u64,
    alpha_lower: f64,
    alpha_upper: f64,
) -> Option<[f64; 2]> {
    if trials == 0 {
        return None;
    }
    let x = successes.min(trials);
    let (n, xf) = (trials as f64, x as f64);
    // P(Bin(n, p) ≥ x) = I_p(x, n - x + 1) rises with p: the lower bound is where it
    // reaches alpha_lower.
    let lower = if x == 0 {
        0.0
    } else {
        bisect(|p| regularized_beta(p, xf, n - xf + 1.0) >= alpha_lower)
    };
    // P(Bin(n, p) ≤ x) = 1 - I_p(x + 1, n - x) falls with p: the upper bound is where it
    // falls to alpha_upper.
    let upper = if x == trials {
        1.0
    } else {
        bisect(|p| 1.0 - regularized_beta(p, xf + 1.0, n - xf) <= alpha_upper)
    };
    Some([lower, upper])
}

/// The smallest `p` in `[0, 1]` where `reached(p)` turns true (it must be monotone).
fn bisect(reached: impl Fn(f64) -> bool) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The regularized incomplete beta function `I_x(a, b)`, by its continued fraction.
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let log_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = log_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPSILON: f64 = 1e-14;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..100_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < EPSILON {
            break;
        }
    }
    h
}

/// Bounds `[lower, upper]` of `p_a - factor · p_b` from two binomial samples, each
/// one-sided at `z`; `None` when either has no trials. Rates are smoothed by half a
/// success and half a failure in the variance only.
pub fn difference_bounds(a: (u64, u64), b: (u64, u64), factor: f64, z: f64) -> Option<[f64; 2]> {
    let ((xa, na), (xb, nb)) = (a, b);
    if na == 0 || nb == 0 {
        return None;
    }
    let (na, nb) = (na as f64, nb as f64);
    let pa = xa.min(a.1) as f64 / na;
    let pb = xb.min(b.1) as f64 / nb;
    let sa = (xa.min(a.1) as f64 + 0.5) / (na + 1.0);
    let sb = (xb.min(b.1) as f64 + 0.5) / (nb + 1.0);
    let variance = sa * (1.0 - sa) / na + factor * factor * sb * (1.0 - sb) / nb;
    let difference = pa - factor * pb;
    let spread = z * variance.sqrt();
    Some([difference - spread, difference + spread])
}

/// Order-statistic bounds `[lower, upper]` of the `q` quantile of the distribution
/// `samples` (NaN ignored) come from: the lower bound holds with probability at least
/// `1 - alpha_lower`, the upper with at least `1 - alpha_upper`. A side is `None` when
/// there are too few samples to bound it (the lower one is then no evidence; the upper
/// one unknown). `None` with no samples.
pub fn quantile_bounds(
    samples: &[f64],
    q: f64,
    alpha_lower: f64,
    alpha_upper: f64,
) -> Option<[Option<f64>; 2]> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    let [lower_rank, upper_rank] = order_statistic_ranks(n as u64, q, alpha_lower, alpha_upper);
    let at = |rank: Option<u64>| rank.map(|r| sorted[(r as usize).clamp(1, n) - 1]);
    Some([at(lower_rank), at(upper_rank)])
}

/// The 1-based ranks of the order statistics that bound the `q` quantile of `n` samples:
/// the largest `j` with `P(Bin(n, q) ≤ j - 1) ≤ alpha_lower` (then `X_(j)` is below the
/// quantile with probability `≥ 1 - alpha_lower`) and the smallest `k` with
/// `P(Bin(n, q) ≥ k) ≤ alpha_upper`. `None` where no rank in `1..=n` qualifies.
pub fn order_statistic_ranks(
    n: u64,
    q: f64,
    alpha_lower: f64,
    alpha_upper: f64,
) -> [Option<u64>; 2] {
    if n == 0 {
        return [None, None];
    }
    let q = q.clamp(0.0, 1.0);
    let pmf = |i: u64| binomial_pmf(n, i, q);
    // The lower tail, summed from 0 (skipping the mass far below the mean, which is
    // below any alpha we use).
    let mean = n as f64 * q;
    let sd = (n as f64 * q * (1.0 - q)).sqrt();
    let start = (mean - 12.0 * sd - 2.0).max(0.0) as u64;
    let mut sum = 0.0;
    let mut lower = None;
    for i in start..=n {
        sum += pmf(i);
        if sum > alpha_lower {
            // P(Bin ≤ i) > alpha, P(Bin ≤ i - 1) ≤ alpha: j = i.
            lower = (i >= 1).then_some(i);
            break;
        }
    }
    let stop = (mean + 12.0 * sd + 2.0).min(n as f64) as u64;
    let mut sum = 0.0;
    let mut upper = None;
    let mut i = n;
    loop {
        if i <= stop {
            sum += pmf(i);
        }
        if sum > alpha_upper {
            // P(Bin ≥ i) > alpha, P(Bin ≥ i + 1) ≤ alpha: k = i + 1.
            upper = (i < n).then_some(i + 1);
            break;
        }
        if i == 0 {
            break;
        }
        i -= 1;
    }
    [lower, upper]
}

/// `P(Bin(n, q) = i)`, computed in logarithms.
fn binomial_pmf(n: u64, i: u64, q: f64) -> f64 {
    if q <= 0.0 {
        return if i == 0 { 1.0 } else { 0.0 };
    }
    if q >= 1.0 {
        return if i == n { 1.0 } else { 0.0 };
    }
    let (n, i) = (n as f64, i as f64);
    let log = libm::lgamma(n + 1.0) - libm::lgamma(i + 1.0) - libm::lgamma(n - i + 1.0)
        + i * q.ln()
        + (n - i) * (1.0 - q).ln();
    log.exp()
}

/// Normal bounds `[lower, upper]` of the mean of `samples` (NaN ignored), each one-sided
/// at `z`, with the sample's mean, standard error and size. `None` with fewer than two
/// samples.
pub fn mean_bounds(samples: &[f64], z: f64) -> Option<MeanEstimate> {
    let values: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let error = (variance / n).sqrt();
    Some(MeanEstimate {
        mean,
        error,
        bounds: [mean - z * error, mean + z * error],
    })
}

/// A sample mean with its standard error and bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanEstimate {
    /// The sample mean.
    pub mean: f64,
    /// Its standard error.
    pub error: f64,
    /// `[mean - z·error, mean + z·error]`.
    pub bounds: [f64; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn normal_quantiles_match_the_tables() {
        assert!(close(normal_quantile(0.5), 0.0, 1e-12));
        assert!(close(normal_quantile(0.95), 1.644_853_626_951_472, 1e-9));
        assert!(close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-9));
        assert!(close(normal_quantile(0.99), 2.326_347_874_040_841, 1e-9));
        assert!(close(normal_quantile(0.0005), -3.290_526_731_491_926, 1e-8));
        assert!(close(z_for(0.05), 1.644_853_626_951_472, 1e-9));
    }

    #[test]
    fn wilson_bounds_match_the_textbook() {
        // 2 of 150 at one-sided 95 %.
        let [lo, hi] = wilson_bounds(2, 150, z_for(0.05)).unwrap();
        assert!(close(lo, 0.002_8, 0.000_1), "{lo}");
        assert!(close(hi, 0.044_3, 0.000_2), "{hi}");
        assert_eq!(wilson_bounds(0, 0, 1.0), None);
        assert_eq!(wilson_bounds(0, 10, 1.645).unwrap()[0], 0.0);
        assert_eq!(wilson_bounds(10, 10, 1.645).unwrap()[1], 1.0);
    }

    #[test]
    fn exact_bounds_match_the_tables() {
        // 2 of 150, one-sided 95 %: the beta quantiles.
        let [lo, hi] = binomial_bounds(2, 150, 0.05, 0.05).unwrap();
        assert!(close(lo, 0.002_372, 0.000_01), "{lo}");
        assert!(close(hi, 0.041_375, 0.000_01), "{hi}");
        // 0 of 300: the rule of three, 1 - 0.05^(1/300).
        let [lo, hi] = binomial_bounds(0, 300, 0.05, 0.05).unwrap();
        assert_eq!(lo, 0.0);
        assert!(close(hi, 1.0 - 0.05f64.powf(1.0 / 300.0), 1e-9), "{hi}");
        assert_eq!(binomial_bounds(0, 0, 0.05, 0.05), None);
        assert!(close(regularized_beta(0.5, 3.0, 3.0), 0.5, 1e-12));
    }

    #[test]
    fn order_statistics_bound_the_quantile_with_the_stated_probability() {
        // 300 samples: the 99th percentile's 95 % upper bound is the largest (rank 300),
        // since P(Bin(300, 0.99) = 300) = 0.049 ≤ 0.05.
        assert_eq!(order_statistic_ranks(300, 0.99, 0.05, 0.05)[1], Some(300));
        // 290 samples cannot bound it above: 0.99^290 > 0.05.
        assert_eq!(order_statistic_ranks(290, 0.99, 0.05, 0.05)[1], None);
        // The median of 100 samples: ranks 42 and 59 (the textbook 95 % one-sided pair).
        let [lo, hi] = order_statistic_ranks(100, 0.5, 0.05, 0.05);
        assert_eq!((lo, hi), (Some(42), Some(59)));
        // 10 samples of a 99th percentile: at least 2 above it would be a 0.4 % chance.
        assert_eq!(order_statistic_ranks(10, 0.99, 0.05, 0.05)[0], Some(9));
    }

    #[test]
    fn looks_are_counted_and_capped() {
        let minute = Duration::from_secs(60);
        assert_eq!(Evidence::looks_in(Duration::from_secs(75 * 60), minute), 75);
        assert_eq!(Evidence::looks_in(Duration::from_secs(10), minute), 1);
        assert_eq!(
            Evidence::looks_in(Duration::from_secs(3_600), Duration::from_millis(250)),
            MAX_LOOKS
        );
        let evidence = Evidence::new(0.95, 10);
        assert!(close(evidence.trip_alpha(), 0.005, 1e-12));
        assert!(close(evidence.pass_alpha(), 0.05, 1e-12));
    }
}
