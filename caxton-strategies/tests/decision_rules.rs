//! The decision rules of gates, pinned over random evidence: monotone in the evidence, no
//! decision on zero data, consistent between the two sides of a comparison and with the
//! confidence asked for.

use caxton_core::{MetricWindow, Timestamp};
use caxton_strategies::condition::{CheckStatus, Condition};
use caxton_strategies::evidence::{
    Evidence, MAX_LOOKS, binomial_bounds, order_statistic_ranks, quantile_bounds, wilson_bounds,
    z_for,
};
use proptest::prelude::*;

fn window(requests: u64, errors: u64, latency: Vec<f64>) -> MetricWindow {
    MetricWindow {
        requests,
        errors,
        latency_ms: latency,
        ..MetricWindow::empty(Timestamp::EPOCH, Timestamp::from_millis(60_000))
    }
}

/// How bad a status is for the candidate: a trip outranks anything undecided, which
/// outranks a pass.
fn severity(status: CheckStatus) -> u8 {
    match status {
        CheckStatus::Clear => 0,
        CheckStatus::NoData | CheckStatus::Inconclusive => 1,
        CheckStatus::Breached => 2,
    }
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (0.5f64..0.9999, 1u32..=MAX_LOOKS).prop_map(|(c, l)| Evidence::new(c, l))
}

fn threshold() -> impl Strategy<Value = Condition> {
    (1u32..=500).prop_map(|tenths| {
        format!("error_rate > {}%", f64::from(tenths) / 10.0)
            .parse()
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// More errors in the same requests never make the verdict kinder; fewer never
    /// make it harsher.
    #[test]
    fn absolute_error_gates_are_monotone_in_the_errors(
        condition in threshold(),
        requests in 1u64..50_000,
        errors in 0u64..50_000,
        more in 1u64..1_000,
        evidence in evidence(),
    ) {
        let errors = errors.min(requests);
        let worse = (errors + more).min(requests);
        let at = condition.check_with(&window(requests, errors, vec![]), None, evidence).status;
        let at_worse = condition.check_with(&window(requests, worse, vec![]), None, evidence).status;
        prop_assert!(severity(at_worse) >= severity(at), "{errors} → {at:?}, {worse} → {at_worse:?}");
    }

    /// The same for a relative gate, in the candidate's errors and, the other way, in the
    /// baseline's.
    #[test]
    fn relative_error_gates_are_monotone_in_both_samples(
        factor in 1u32..40,
        (n_c, n_b) in (1u64..20_000, 1u64..20_000),
        (x_c, x_b) in (0u64..20_000, 0u64..20_000),
        more in 1u64..500,
        evidence in evidence(),
    ) {
        let condition: Condition = format!("error_rate > baseline * {}", f64::from(factor) / 10.0)
            .parse()
            .unwrap();
        let (x_c, x_b) = (x_c.min(n_c), x_b.min(n_b));
        let base = window(n_b, x_b, vec![]);
        let at = condition.check_with(&window(n_c, x_c, vec![]), Some(&base), evidence).status;
        let worse = condition
            .check_with(&window(n_c, (x_c + more).min(n_c), vec![]), Some(&base), evidence)
            .status;
        prop_assert!(severity(worse) >= severity(at));
        // A worse baseline makes the candidate look no worse.
        let worse_base = window(n_b, (x_b + more).min(n_b), vec![]);
        let kinder = condition
            .check_with(&window(n_c, x_c, vec![]), Some(&worse_base), evidence)
            .status;
        prop_assert!(severity(kinder) <= severity(at));
    }

    /// Slower samples never make a latency verdict kinder.
    #[test]
    fn latency_gates_are_monotone_in_the_samples(
        samples in prop::collection::vec(1.0f64..500.0, 1..800),
        slower in 0usize..800,
        by in 1.0f64..200.0,
        evidence in evidence(),
        limit in 20u32..400,
    ) {
        let condition: Condition = format!("p99 > {limit}ms").parse().unwrap();
        let n = samples.len() as u64;
        let mut worse = samples.clone();
        let index = slower % worse.len();
        worse[index] += by;
        let at = condition.check_with(&window(n, 0, samples), None, evidence).status;
        let at_worse = condition.check_with(&window(n, 0, worse), None, evidence).status;
        prop_assert!(severity(at_worse) >= severity(at));
    }

    /// No data, no decision: zero requests (or no latency samples, or no baseline for a
    /// relative gate) is never a pass nor a trip.
    #[test]
    fn no_data_decides_nothing(condition in threshold(), evidence in evidence(), limit in 1u32..1_000) {
        let empty = window(0, 0, vec![]);
        prop_assert_eq!(condition.check_with(&empty, None, evidence).status, CheckStatus::NoData);
        let p99: Condition = format!("p99 > {limit}ms").parse().unwrap();
        prop_assert_eq!(p99.check_with(&window(500, 0, vec![]), None, evidence).status, CheckStatus::NoData);
        let relative: Condition = "error_rate > baseline * 1.5".parse().unwrap();
        prop_assert_eq!(
            relative.check_with(&window(500, 5, vec![]), None, evidence).status,
            CheckStatus::NoData
        );
        prop_assert_eq!(
            relative.check_with(&window(500, 5, vec![]), Some(&empty), evidence).status,
            CheckStatus::NoData
        );
    }

    /// `>` and `<` on the same threshold are mirror images: what trips one passes the
    /// other when the data are that clear, and they never both trip or both pass.
    #[test]
    fn opposite_comparisons_never_agree(
        tenths in 1u32..500,
        requests in 1u64..50_000,
        errors in 0u64..50_000,
        evidence in evidence(),
    ) {
        let above: Condition = format!("error_rate > {}%", f64::from(tenths) / 10.0).parse().unwrap();
        let below: Condition = format!("error_rate < {}%", f64::from(tenths) / 10.0).parse().unwrap();
        let w = window(requests, errors.min(requests), vec![]);
        let a = above.check_with(&w, None, evidence).status;
        let b = below.check_with(&w, None, evidence).status;
        prop_assert!(!(a == CheckStatus::Breached && b == CheckStatus::Breached));
        if a == CheckStatus::Breached {
            prop_assert_eq!(b, CheckStatus::Clear);
        }
        if b == CheckStatus::Breached {
            prop_assert_eq!(a, CheckStatus::Clear);
        }
    }

    /// Asking for more confidence (or sharing it among more looks) never turns an
    /// undecided gate into a decided one.
    #[test]
    fn more_confidence_never_decides_more(
        condition in threshold(),
        requests in 1u64..50_000,
        errors in 0u64..50_000,
        confidence in 0.5f64..0.99,
        looks in 1u32..MAX_LOOKS,
    ) {
        let w = window(requests, errors.min(requests), vec![]);
        let loose = condition.check_with(&w, None, Evidence::new(confidence, looks)).status;
        for strict in [Evidence::new(confidence + 0.009, looks), Evidence::new(confidence, looks + 1)] {
            let status = condition.check_with(&w, None, strict).status;
            if status == CheckStatus::Breached {
                prop_assert_eq!(loose, CheckStatus::Breached);
            }
            if status == CheckStatus::Clear {
                prop_assert_eq!(loose, CheckStatus::Clear);
            }
        }
    }

    /// A trip and a pass never happen together: the lower bound a trip needs is never
    /// above the upper bound a pass needs.
    #[test]
    fn bounds_are_ordered(successes in 0u64..10_000, trials in 1u64..10_000, alpha in 1e-6f64..0.5) {
        let [lo, hi] = binomial_bounds(successes.min(trials), trials, alpha, alpha).unwrap();
        let [wlo, whi] = wilson_bounds(successes.min(trials), trials, z_for(alpha)).unwrap();
        prop_assert!(wlo <= whi);
        prop_assert!(lo <= hi);
        let p = successes.min(trials) as f64 / trials as f64;
        prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12);
    }

    /// Order-statistic ranks bracket the quantile's rank and the bounds are samples.
    #[test]
    fn order_statistic_bounds_bracket_the_quantile(
        samples in prop::collection::vec(0.0f64..1_000.0, 1..600),
        q in 0.5f64..0.995,
        alpha in 0.0001f64..0.2,
    ) {
        let n = samples.len() as u64;
        let [lower, upper] = order_statistic_ranks(n, q, alpha, alpha);
        let centre = (q * n as f64).ceil() as u64;
        if let Some(j) = lower {
            prop_assert!(j <= centre.max(1));
        }
        if let Some(k) = upper {
            prop_assert!(k >= centre && k <= n);
        }
        let [lo, hi] = quantile_bounds(&samples, q, alpha, alpha).unwrap();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            prop_assert!(lo <= hi);
        }
    }
}

/// The chance that a candidate exactly at an absolute gate's threshold trips at one look
/// is at most the trip level: checked by exact enumeration of the binomial.
#[test]
fn a_candidate_at_the_threshold_trips_no_more_often_than_the_trip_level() {
    let condition: Condition = "error_rate > 1%".parse().unwrap();
    for (n, evidence) in [
        (150u64, Evidence::new(0.95, 1)),
        (750, Evidence::new(0.95, 1)),
        (2_250, Evidence::new(0.95, 15)),
        (10_000, Evidence::new(0.99, 75)),
    ] {
        let p: f64 = 0.01;
        let mut tripping = 0.0;
        for x in 0..=n {
            let log = libm_lgamma(n as f64 + 1.0)
                - libm_lgamma(x as f64 + 1.0)
                - libm_lgamma((n - x) as f64 + 1.0)
                + x as f64 * p.ln()
                + (n - x) as f64 * (1.0 - p).ln();
            if condition
                .check_with(&window(n, x, vec![]), None, evidence)
                .status
                == CheckStatus::Breached
            {
                tripping += log.exp();
            }
        }
        assert!(
            tripping <= evidence.trip_alpha(),
            "n {n}: trips {tripping} > {}",
            evidence.trip_alpha()
        );
    }
}

/// `ln Γ(x)` by Stirling's series with a shift (enough for the checks above).
fn libm_lgamma(x: f64) -> f64 {
    let mut x = x;
    let mut shift = 0.0;
    while x < 8.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    shift + (x - 0.5) * x.ln() - x
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
}
