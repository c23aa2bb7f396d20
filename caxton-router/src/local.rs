//! Per-thread and per-reader state of the hot path: the counter shard, a generator for
//! messages without a session, and the shadow sampling sequence.
//!
//! A [`RouterReader`](crate::RouterReader) owns its [`Sampler`];
//! [`Router::route`](crate::Router::route) uses one thread-local sampler instead. Either
//! way a route writes no memory shared with other threads here.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Number of basis points in 100 %.
pub(crate) const FULL: u16 = 10_000;

/// Threads are numbered in the order they first route; consecutive threads get different
/// shards.
static NEXT_THREAD: AtomicU32 = AtomicU32::new(0);

/// Used only by a thread whose thread-local storage is being torn down.
static FALLBACK: AtomicU64 = AtomicU64::new(0);

/// A stride coprime with 10,000 close to 10,000 / φ, so successive sequence points spread
/// evenly over `[0, 10000)` and every 10,000 consecutive points visit each value once.
const SEQUENCE_STRIDE: u32 = 6_181;

/// Where routing gets points in `[0, 10000)` for messages without a session.
pub(crate) trait PointSource {
    /// A pseudo-random point, to spread messages by weight.
    fn random_point(&mut self) -> u16;
    /// The next point of a low-discrepancy sequence: over any 10,000 consecutive calls each
    /// point comes up exactly once, so a rate of `r` basis points samples exactly `r`.
    fn sequence_point(&mut self) -> u16;
}

/// A generator and a sequence owned by one routing handle.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    rng: u64,
    sequence: u32,
}

impl Sampler {
    /// A sampler whose generator starts from `seed`.
    pub(crate) fn new(seed: u32) -> Self {
        Sampler {
            rng: u64::from(seed).wrapping_mul(0xA076_1D64_78BD_642F),
            sequence: 0,
        }
    }
}

impl PointSource for Sampler {
    #[inline]
    fn random_point(&mut self) -> u16 {
        let (next, out) = split_mix(self.rng);
        self.rng = next;
        reduce(out)
    }

    #[inline]
    fn sequence_point(&mut self) -> u16 {
        let current = self.sequence;
        self.sequence = (current + SEQUENCE_STRIDE) % u32::from(FULL);
        current as u16
    }
}

struct Local {
    /// `u32::MAX` until the thread first asks.
    index: Cell<u32>,
    rng: Cell<u64>,
    sequence: Cell<u32>,
}

thread_local! {
    static LOCAL: Local = const {
        Local { index: Cell::new(u32::MAX), rng: Cell::new(0), sequence: Cell::new(0) }
    };
}

/// This thread's number, fixed for its lifetime.
#[inline]
pub(crate) fn thread_index() -> u32 {
    LOCAL
        .try_with(|local| {
            let index = local.index.get();
            if index != u32::MAX {
                return index;
            }
            let index = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & (u32::MAX >> 1);
            local.index.set(index);
            local.rng.set(Sampler::new(index).rng);
            index
        })
        .unwrap_or(0)
}

/// The calling thread's sampler, kept in thread-local storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadSampler;

impl PointSource for ThreadSampler {
    #[inline]
    fn random_point(&mut self) -> u16 {
        let bits = LOCAL
            .try_with(|local| {
                let (next, out) = split_mix(local.rng.get());
                local.rng.set(next);
                out
            })
            .unwrap_or_else(|_| split_mix(FALLBACK.fetch_add(1, Ordering::Relaxed)).1);
        reduce(bits)
    }

    #[inline]
    fn sequence_point(&mut self) -> u16 {
        LOCAL
            .try_with(|local| {
                let current = local.sequence.get();
                local
                    .sequence
                    .set((current + SEQUENCE_STRIDE) % u32::from(FULL));
                current as u16
            })
            .unwrap_or_else(|_| (FALLBACK.fetch_add(1, Ordering::Relaxed) % u64::from(FULL)) as u16)
    }
}

/// SplitMix64: a fast, well-mixed step from a 64-bit counter.
#[inline]
fn split_mix(state: u64) -> (u64, u64) {
    let next = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (next, z ^ (z >> 31))
}

/// Maps 64 well-mixed bits onto `[0, 10000)` by a multiply-shift, which avoids a division
/// and has a bias below 10⁻¹⁵.
#[inline]
pub(crate) fn reduce(bits: u64) -> u16 {
    ((u128::from(bits) * u128::from(FULL)) >> 64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visits_every_point_once(mut source: impl PointSource) {
        let mut seen = vec![false; usize::from(FULL)];
        for _ in 0..FULL {
            let p = source.sequence_point();
            assert!(!seen[usize::from(p)], "point {p} came up twice");
            seen[usize::from(p)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    fn spreads_random_points(mut source: impl PointSource) {
        let mut below_half = 0;
        for _ in 0..20_000 {
            let p = source.random_point();
            assert!(p < FULL);
            if p < FULL / 2 {
                below_half += 1;
            }
        }
        assert!((9_500..=10_500).contains(&below_half), "{below_half}");
    }

    #[test]
    fn sequence_visits_every_point_once_per_period() {
        visits_every_point_once(ThreadSampler);
        visits_every_point_once(Sampler::new(7));
    }

    #[test]
    fn random_points_stay_in_range_and_spread() {
        spreads_random_points(ThreadSampler);
        spreads_random_points(Sampler::new(3));
    }

    #[test]
    fn threads_get_distinct_indices() {
        let here = thread_index();
        assert_eq!(thread_index(), here, "an index is fixed for the thread");
        let there = std::thread::spawn(thread_index).join().unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn reduce_covers_the_range() {
        assert_eq!(reduce(0), 0);
        assert_eq!(reduce(u64::MAX), FULL - 1);
    }
}
