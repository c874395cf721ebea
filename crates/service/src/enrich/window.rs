//! A sliding time window of counters, cut into fixed buckets, on tokio's clock.
//!
//! Both the circuit breaker (successes/failures) and the retry budget (first
//! attempts/retries) need "how many of each in the last N seconds". A ring of
//! buckets answers that in O(buckets) with no allocation after construction, and
//! because it reads `tokio::time::Instant`, tests drive it with a paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// Counters for the last `window`, kept as `N` buckets of `window / N` each.
///
/// The live span is the current (partial) bucket plus the `N - 1` before it, so
/// it covers between `window - window/N` and `window` of history: with 10
/// one-second buckets, "the last 10 s" means the last 9 to 10 s.
#[derive(Debug)]
pub(crate) struct SlidingWindow<T> {
    origin: Instant,
    bucket_ms: u64,
    slots: Box<[Slot<T>]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot<T> {
    /// Which bucket (elapsed / bucket width) this slot currently holds.
    index: u64,
    value: T,
}

impl<T: Copy + Default> SlidingWindow<T> {
    /// A window of `buckets` buckets spanning `window`; the bucket width is at
    /// least 1 ms so a tiny window still advances.
    pub(crate) fn new(window: Duration, buckets: usize, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let bucket_ms = (window_ms / buckets as u64).max(1);
        SlidingWindow {
            origin: now,
            bucket_ms,
            slots: vec![Slot::default(); buckets].into_boxed_slice(),
        }
    }

    fn bucket_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_millis();
        u64::try_from(elapsed).unwrap_or(u64::MAX) / self.bucket_ms
    }

    fn is_live(&self, slot_index: u64, current: u64) -> bool {
        slot_index <= current && current - slot_index < self.slots.len() as u64
    }

    /// The counters of the bucket `now` falls into, emptied first if the slot
    /// still holds an expired bucket.
    pub(crate) fn current(&mut self, now: Instant) -> &mut T {
        let index = self.bucket_index(now);
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(index % len) as usize];
        if slot.index != index {
            slot.index = index;
            slot.value = T::default();
        }
        &mut slot.value
    }

    /// Folds the live buckets (those inside the window at `now`).
    pub(crate) fn fold<A>(&self, now: Instant, init: A, mut f: impl FnMut(A, &T) -> A) -> A {
        let current = self.bucket_index(now);
        self.slots
            .iter()
            .filter(|slot| self.is_live(slot.index, current))
            .fold(init, |acc, slot| f(acc, &slot.value))
    }

    /// Forgets everything, e.g. when the breaker changes state.
    pub(crate) fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.value = T::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(w: &SlidingWindow<u64>, now: Instant) -> u64 {
        w.fold(now, 0, |acc, v| acc + v)
    }

    #[tokio::test(start_paused = true)]
    async fn counts_expire_after_the_window() {
        let start = Instant::now();
        let mut w = SlidingWindow::<u64>::new(Duration::from_secs(10), 10, start);
        *w.current(start) += 5;
        tokio::time::advance(Duration::from_millis(9_500)).await;
        let now = Instant::now();
        *w.current(now) += 1;
        assert_eq!(total(&w, now), 6, "both buckets inside 10 s");
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(total(&w, Instant::now()), 1, "the first bucket left");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(total(&w, Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slot_starts_empty() {
        let start = Instant::now();
        let mut w = SlidingWindow::<u64>::new(Duration::from_secs(10), 10, start);
        *w.current(start) += 7;
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(*w.current(now), 0, "same slot, next lap");
        assert_eq!(total(&w, now), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn clear_forgets_everything() {
        let start = Instant::now();
        let mut w = SlidingWindow::<u64>::new(Duration::from_secs(10), 10, start);
        *w.current(start) += 3;
        w.clear();
        assert_eq!(total(&w, start), 0);
    }
}
