//! Exponential backoff with jitter, one type for every caller that waits before trying
//! again: NLP retries, storage retries through a database outage, and the supervisor's
//! restarts.

use std::time::Duration;

use rand::RngExt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
