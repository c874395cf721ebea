//! When to retry: exponential backoff with jitter, and a retry budget.
//!
//! The worker pool is a fixed ≈2,500 slots sized for first attempts with 25%
//! headroom (spec, "Sizing"); a wave of retries (each holding a slot through
//! another timeout, and waiting in memory through its backoff) would consume
//! that headroom and starve new messages. The [`RetryBudget`] caps retries to
//! a share of first attempts over a sliding window, the way Finagle's and
//! linkerd's retry budgets do:
//! when the API fails broadly, most messages fall back after one attempt
//! instead of three, and latency stays bounded.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use super::window::SlidingWindow;

/// Buckets of the budget's sliding window.
const WINDOW_BUCKETS: usize = 10;

/// Exponential backoff: `base`, `2·base`, `4·base`, … capped at `max`, plus
/// a uniform jitter of up to `jitter_ratio` of the wait.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter_ratio: f64,
}

impl Backoff {
    /// A backoff; `jitter_ratio` is clamped to `0..=1`.
    pub fn new(base: Duration, max: Duration, jitter_ratio: f64) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            jitter_ratio: if jitter_ratio.is_finite() {
                jitter_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }

    /// The wait before retry number `retry` (1 = the second attempt), without
    /// jitter: 100, 200, 400 ms with the defaults.
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// The wait with jitter drawn from `rand`: uniform in
    /// `[delay, delay · (1 + jitter_ratio)]`.
    pub fn jittered(&self, retry: u32) -> Duration {
        self.with_jitter(retry, rand::rng().random::<f64>())
    }

    /// The wait for a given jitter draw `unit` in `0..1` (pure, for tests).
    fn with_jitter(&self, retry: u32, unit: f64) -> Duration {
        let delay = self.delay(retry);
        delay + delay.mul_f64(self.jitter_ratio * unit.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct BudgetTally {
    first_attempts: u64,
    retries: u64,
}

/// Caps retries to `ratio` × first attempts in the last `window`, plus a
/// floor of `min_per_sec` retries per second so a quiet service still retries
/// a lone failure.
///
/// A retry is allowed while `retries + 1 ≤ ratio · first_attempts + floor`,
/// counted over the window; each allowed retry is counted at once, so
/// concurrent callers cannot overdraw it.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    window: Mutex<SlidingWindow<BudgetTally>>,
}

impl RetryBudget {
    /// A budget over `window`; see the type's doc for the rule.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> RetryBudget {
        RetryBudget {
            ratio,
            floor: f64::from(min_per_sec) * window.as_secs_f64(),
            window: Mutex::new(SlidingWindow::new(window, WINDOW_BUCKETS, Instant::now())),
        }
    }

    /// Counts a first attempt: it earns `ratio` of a retry.
    pub fn deposit(&self) {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.current(now).first_attempts += 1;
    }

    /// Takes one retry from the budget; `false` means the caller must not retry.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let total = window.fold(now, BudgetTally::default(), |acc, t| BudgetTally {
            first_attempts: acc.first_attempts + t.first_attempts,
            retries: acc.retries + t.retries,
        });
        let allowed = self.ratio * total.first_attempts as f64 + self.floor;
        if (total.retries + 1) as f64 <= allowed {
            window.current(now).retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_millis(400), 0.5)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn schedule_is_100_200_400_then_capped() {
        let b = backoff();
        let schedule: Vec<_> = (1..=5).map(|r| b.delay(r)).collect();
        assert_eq!(schedule, [ms(100), ms(200), ms(400), ms(400), ms(400)]);
        assert_eq!(b.delay(u32::MAX), ms(400), "no overflow");
    }

    #[test]
    fn jitter_adds_between_zero_and_half_the_delay() {
        let b = backoff();
        assert_eq!(b.with_jitter(1, 0.0), ms(100));
        assert_eq!(b.with_jitter(1, 1.0), ms(150));
        assert_eq!(b.with_jitter(2, 0.5), ms(250));
        for retry in 1..=3 {
            let base = b.delay(retry);
            let samples: Vec<_> = (0..1_000).map(|_| b.jittered(retry)).collect();
            assert!(samples
                .iter()
                .all(|d| *d >= base && *d <= base.mul_f64(1.5)));
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 100, "jitter actually varies");
        }
    }

    #[test]
    fn zero_jitter_is_exact() {
        let b = Backoff::new(ms(100), ms(400), 0.0);
        assert!((0..100).all(|_| b.jittered(2) == ms(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_20_percent_of_first_attempts() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_empty_without_first_attempts_or_floor() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        assert!(!budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_a_few_retries_when_quiet() {
        let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10));
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10, "1/s over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_and_deposits_expire_with_the_window() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!((0..50).filter(|_| budget.try_withdraw()).count(), 10);
        advance(Duration::from_secs(11)).await;
        assert!(!budget.try_withdraw(), "old deposits gone too");
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
    }

    #[test]
    fn concurrent_callers_cannot_overdraw() {
        let budget = std::sync::Arc::new(RetryBudget::new(0.2, 0, Duration::from_secs(10)));
        for _ in 0..1_000 {
            budget.deposit();
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..500).filter(|_| budget.try_withdraw()).count())
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(granted, 200);
    }
}
