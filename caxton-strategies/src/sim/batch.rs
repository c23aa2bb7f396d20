//! Many seeds of one simulation: how often a spec promotes, rolls back or ends paused
//! (aborted) for a pair of behaviours, with a 95 % Wilson interval on each share, and how
//! long the rollout takes to reach its decision.
//!
//! Every run goes through [`Simulation::run`], so the same driver and the same strategy
//! code decide as in a single `caxton simulate` and in a host.

use serde::Serialize;

use super::run::{Simulation, SimulationError};
use crate::strategy::Outcome;

/// The most runs one batch may take (`caxton simulate --runs`): 10,000 rollouts of the
/// README's canary take seconds in a release build.
pub const MAX_RUNS: u64 = 10_000;

/// `z` for a two-sided 95 % interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// The 95 % Wilson score interval of a proportion: `successes` of `trials`.
///
/// Unlike the normal approximation it stays inside `[0, 1]` and is sensible at 0 and at
/// `trials` successes, which is where a good spec's false-rollback share lives. With no
/// trials it is `[0, 1]`: nothing is known.
///
/// ```
/// use caxton_strategies::sim::wilson_interval;
///
/// let [lo, hi] = wilson_interval(0, 100);
/// assert_eq!(lo, 0.0);
/// assert!((hi - 0.037).abs() < 0.001);
/// ```
pub fn wilson_interval(successes: u64, trials: u64) -> [f64; 2] {
    if trials == 0 {
        return [0.0, 1.0];
    }
    let n = trials as f64;
    let p = successes.min(trials) as f64 / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // Rounding must not push a bound past the share it brackets or out of [0, 1].
    [
        (centre - half).clamp(0.0, 1.0).min(p),
        (centre + half).clamp(0.0, 1.0).max(p),
    ]
}

/// How often one outcome came out of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutcomeShare {
    /// Runs that ended this way.
    pub count: u64,
    /// `count / runs`.
    pub share: f64,
    /// The 95 % Wilson interval of the share.
    pub ci95: [f64; 2],
}

impl OutcomeShare {
    fn of(count: u64, runs: u64) -> Self {
        OutcomeShare {
            count,
            share: if runs == 0 {
                0.0
            } else {
                count as f64 / runs as f64
            },
            ci95: wilson_interval(count, runs),
        }
    }
}

/// The outcomes of a batch of simulated rollouts, one seed each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSummary {
    /// Rollouts run.
    pub runs: u64,
    /// Promoted.
    pub promoted: OutcomeShare,
    /// Rolled back by a gate (a condition, the judge, a shadow's report, validation).
    pub rolled_back: OutcomeShare,
    /// Aborted: paused for a person and never decided, or stopped by an operator command.
    pub aborted: OutcomeShare,
    /// The median time from the start of a rollout to its end (promoted, rolled back or
    /// aborted), in seconds of virtual time; simulated validation and warm-up take none.
    pub median_decision_s: f64,
    /// The 90th percentile of the same.
    pub p90_decision_s: f64,
}

/// Why a batch could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The number of runs is 0 or over [`MAX_RUNS`].
    #[error("runs must be between 1 and {max}, not {runs}")]
    Runs {
        /// The number asked for.
        runs: u64,
        /// [`MAX_RUNS`].
        max: u64,
    },
    /// One run could not start.
    #[error("the run with seed {seed} could not start: {source}")]
    Run {
        /// Its seed.
        seed: u64,
        /// Why.
        #[source]
        source: SimulationError,
    },
}

impl Simulation {
    /// Runs this simulation `runs` times, with the seeds `s`, `s + 1`, … from its own seed
    /// `s` (wrapping), on the current thread, and sums up the outcomes.
    pub fn run_many(&self, runs: u64) -> Result<BatchSummary, BatchError> {
        if runs == 0 || runs > MAX_RUNS {
            return Err(BatchError::Runs {
                runs,
                max: MAX_RUNS,
            });
        }
        // One check up front: a spec too large to simulate is refused before any run.
        self.check().map_err(|source| BatchError::Run {
            seed: self.seed_value(),
            source,
        })?;
        let (mut promoted, mut rolled_back, mut aborted) = (0, 0, 0);
        let mut durations = Vec::with_capacity(runs as usize);
        for offset in 0..runs {
            let seed = self.seed_value().wrapping_add(offset);
            let report = self
                .clone()
                .seed(seed)
                .run_blocking(None)
                .map_err(|source| BatchError::Run { seed, source })?;
            match report.outcome {
                Outcome::Promoted => promoted += 1,
                Outcome::RolledBack { .. } => rolled_back += 1,
                Outcome::Aborted { .. } => aborted += 1,
            }
            durations.push(report.duration().as_secs_f64());
        }
        durations.sort_by(f64::total_cmp);
        Ok(BatchSummary {
            runs,
            promoted: OutcomeShare::of(promoted, runs),
            rolled_back: OutcomeShare::of(rolled_back, runs),
            aborted: OutcomeShare::of(aborted, runs),
            median_decision_s: crate::condition::nearest_rank(&durations, 0.5).unwrap_or(0.0),
            p90_decision_s: crate::condition::nearest_rank(&durations, 0.9).unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 5 of 10: 0.2366 to 0.7634 (Wilson 1927; Newcombe 1998, method 3).
        let [lo, hi] = wilson_interval(5, 10);
        assert!((lo - 0.2366).abs() < 1e-4, "{lo}");
        assert!((hi - 0.7634).abs() < 1e-4, "{hi}");
        assert_eq!(wilson_interval(0, 0), [0.0, 1.0]);
        assert_eq!(wilson_interval(10, 10)[1], 1.0);
    }

    #[test]
    fn a_batch_outside_the_bounds_is_refused_naming_them() {
        let spec = crate::RolloutSpec::from_compact(Some("5:1m"), None).unwrap();
        let sim = Simulation::new(
            spec,
            "error_rate=0.2%,p99=40ms,rps=50".parse().unwrap(),
            "error_rate=0.2%,p99=40ms".parse().unwrap(),
        );
        for runs in [0, MAX_RUNS + 1] {
            let error = sim.run_many(runs).unwrap_err();
            assert!(
                error.to_string().contains(&format!("not {runs}")),
                "{error}"
            );
        }
    }

    proptest! {
        /// The interval holds the observed share, stays in [0, 1] and narrows as trials
        /// grow at the same share.
        #[test]
        fn wilson_brackets_the_share(trials in 1u64..100_000, fraction in 0.0f64..=1.0) {
            let successes = (trials as f64 * fraction).round() as u64;
            let [lo, hi] = wilson_interval(successes, trials);
            let share = successes as f64 / trials as f64;
            prop_assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
            prop_assert!(lo <= share && share <= hi, "{lo} {share} {hi}");
            let [lo4, hi4] = wilson_interval(successes * 4, trials * 4);
            prop_assert!(hi4 - lo4 <= hi - lo + 1e-12);
        }

        /// More successes never move the interval down.
        #[test]
        fn wilson_is_monotone_in_successes(trials in 1u64..10_000, successes in 0u64..10_000) {
            let successes = successes.min(trials - 1);
            let [lo, hi] = wilson_interval(successes, trials);
            let [lo_more, hi_more] = wilson_interval(successes + 1, trials);
            prop_assert!(lo_more >= lo && hi_more >= hi);
        }
    }
}
