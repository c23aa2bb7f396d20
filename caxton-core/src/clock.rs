//! Time as a joint: the real clock, and a manual one for tests and simulations.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;

use crate::time::Timestamp;

/// Now and sleep. Everything in Caxton that waits takes its time from a `Clock`, so a
/// rollout of half an hour runs in microseconds against a [`ManualClock`].
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// Completes once [`now`](Clock::now) has reached `deadline`.
    async fn sleep_until(&self, deadline: Timestamp);

    /// Completes once `duration` has passed.
    async fn sleep(&self, duration: Duration) {
        let deadline = self.now() + duration;
        self.sleep_until(deadline).await;
    }
}

/// The operating system's clock. Sleeping works under any async executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_system()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            futures_timer::Delay::new(deadline - now).await;
        }
    }
}

/// A clock that moves only when told to.
///
/// Clones share the same time. By default a sleeper waits until [`advance`] or [`set`]
/// moves time past its deadline. In auto-advance mode a sleep moves time to its deadline
/// at once, which runs a whole rollout in virtual time with no one turning the crank.
///
/// [`advance`]: ManualClock::advance
/// [`set`]: ManualClock::set
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Default)]
struct ManualState {
    now: Timestamp,
    auto_advance: bool,
    sleepers: Vec<(Timestamp, Waker)>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("ManualClock")
            .field("now", &state.now)
            .field("auto_advance", &state.auto_advance)
            .field("sleepers", &state.sleepers.len())
            .finish()
    }
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        let clock = ManualClock::default();
        clock.state().now = start;
        clock
    }

    /// A clock standing at `start` whose sleeps move time forward by themselves.
    pub fn auto_advancing(start: Timestamp) -> Self {
        let clock = ManualClock::new(start);
        clock.state().auto_advance = true;
        clock
    }

    fn state(&self) -> MutexGuard<'_, ManualState> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        let to = state.now + by;
        Self::move_to(&mut state, to);
    }

    /// Moves time to `to`, if that is later than now, and wakes the sleepers that are due.
    pub fn set(&self, to: Timestamp) {
        let mut state = self.state();
        Self::move_to(&mut state, to);
    }

    /// How many sleepers are waiting.
    pub fn sleepers(&self) -> usize {
        self.state().sleepers.len()
    }

    fn move_to(state: &mut ManualState, to: Timestamp) {
        if to > state.now {
            state.now = to;
        }
        let now = state.now;
        state.sleepers.retain(|(deadline, waker)| {
            if *deadline <= now {
                waker.wake_by_ref();
                false
            } else {
                true
            }
        });
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.state().now
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        ManualSleep {
            clock: self,
            deadline,
        }
        .await
    }
}

struct ManualSleep<'a> {
    clock: &'a ManualClock,
    deadline: Timestamp,
}

impl Future for ManualSleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.state();
        if state.now >= self.deadline {
            return Poll::Ready(());
        }
        if state.auto_advance {
            ManualClock::move_to(&mut state, self.deadline);
            return Poll::Ready(());
        }
        state.sleepers.push((self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn manual_sleep_waits_for_advance() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let mut sleep = Box::pin(clock.sleep(Duration::from_secs(2)));
        assert!(sleep.as_mut().now_or_never().is_none());
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(1));
        assert!(sleep.as_mut().now_or_never().is_none());
        clock.advance(Duration::from_secs(1));
        assert!(sleep.as_mut().now_or_never().is_some());
        assert_eq!(clock.now(), Timestamp::from_millis(3_000));
    }

    #[test]
    fn auto_advancing_sleep_jumps_to_the_deadline() {
        let clock = ManualClock::auto_advancing(Timestamp::EPOCH);
        futures::executor::block_on(clock.sleep(Duration::from_secs(300)));
        assert_eq!(clock.now(), Timestamp::from_millis(300_000));
        futures::executor::block_on(clock.sleep_until(Timestamp::from_millis(5)));
        assert_eq!(
            clock.now(),
            Timestamp::from_millis(300_000),
            "time never goes back"
        );
    }

    #[test]
    fn advance_wakes_a_sleeper_on_another_thread() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let sleeper = clock.clone();
        let handle = std::thread::spawn(move || {
            futures::executor::block_on(sleeper.sleep(Duration::from_millis(10)));
            sleeper.now()
        });
        while clock.sleepers() == 0 {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_millis(10));
        assert_eq!(handle.join().unwrap(), Timestamp::from_millis(10));
    }

    #[test]
    fn system_clock_sleeps_at_least_the_duration() {
        let clock = SystemClock;
        let start = std::time::Instant::now();
        futures::executor::block_on(clock.sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(19));
    }
}
