//! When to retry: a retry budget (the backoff itself is [`crate::backoff::Backoff`]).
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

use tokio::time::Instant;

use super::window::SlidingWindow;

/// Buckets of the budget's sliding window.
const WINDOW_BUCKETS: usize = 10;

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
