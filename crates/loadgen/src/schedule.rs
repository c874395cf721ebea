//! The open-loop arrival schedule: when each request *should* be sent.
//!
//! A closed-loop client (send, wait for the answer, send again) slows down
//! exactly when the server stalls, so the stall hides in the few requests that
//! happened to be in flight: coordinated omission. Here every request `k` has
//! an intended send time fixed before the run starts, `start + k / rate`,
//! whatever the server or our own connections do. Latency is measured from
//! that intended time, so time a request spent waiting for a free connection,
//! or for the generator itself, counts against the server that caused it.
//!
//! The schedule is pure arithmetic (no queue in memory): the backlog of due but
//! unsent requests is just the range between the next request to dispatch and
//! [`Schedule::due`].

use std::time::Duration;

use tokio::time::Instant;

/// Floating-point slack so that `rate × span` landing a hair above an integer
/// does not schedule one extra request.
const EPSILON: f64 = 1e-9;

/// How the warm-up sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmUp {
    /// At the full rate from the first request.
    FullRate,
    /// Rising linearly from zero to the full rate over the first half of the
    /// warm-up, as k6's ramping arrival rate does, then at the full rate: the
    /// measured part starts on a stack that has run at the rate for a while
    /// instead of one still absorbing a step from idle.
    Ramp,
}

/// Intended send times for a run: a warm-up part (sent, not recorded) followed
/// by the measured part at a constant rate.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Requests per second (already divided by the batch size in batch mode).
    rate: f64,
    /// Seconds over which the rate rises from zero (0: no ramp).
    ramp_s: f64,
    total: u64,
    measured_from: u64,
}

impl Schedule {
    /// A schedule of `rate` requests per second from `start`, `warmup` long
    /// unrecorded (sent as `warm_up` says) and then `measured` long recorded.
    ///
    /// `rate` must be finite and positive (checked by the caller's argument
    /// validation); a non-positive rate yields an empty schedule.
    pub fn new(
        start: Instant,
        rate: f64,
        warmup: Duration,
        measured: Duration,
        warm_up: WarmUp,
    ) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        let ramp_s = match warm_up {
            WarmUp::FullRate => 0.0,
            WarmUp::Ramp => warmup.as_secs_f64() / 2.0,
        };
        let mut schedule = Schedule {
            start,
            rate,
            ramp_s,
            total: 0,
            measured_from: 0,
        };
        schedule.total = schedule.count_within(warmup + measured);
        schedule.measured_from = schedule.count_within(warmup);
        schedule
    }

    /// How many requests have their intended time within `span` of the start.
    fn count_within(&self, span: Duration) -> u64 {
        let n = (self.sent_by(span.as_secs_f64()) - EPSILON).ceil();
        if n > 0.0 {
            n as u64
        } else {
            0
        }
    }

    /// Requests the ramp sends in all (its rate rises linearly, so half the
    /// full rate's count over the same time).
    fn ramp_count(&self) -> f64 {
        self.rate * self.ramp_s / 2.0
    }

    /// How many requests are intended within `t` seconds of the start, as a
    /// continuous count: `rate·t²/(2·ramp)` during the ramp, then linear.
    fn sent_by(&self, t: f64) -> f64 {
        if t < self.ramp_s {
            self.rate * t * t / (2.0 * self.ramp_s)
        } else {
            self.ramp_count() + self.rate * (t - self.ramp_s)
        }
    }

    /// When the schedule begins (the first intended send time).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Number of requests in the whole schedule, warm-up included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Index of the first recorded request; earlier ones are warm-up.
    #[cfg(test)]
    pub fn measured_from(&self) -> u64 {
        self.measured_from
    }

    /// Number of recorded (post warm-up) requests.
    pub fn measured_count(&self) -> u64 {
        self.total - self.measured_from
    }

    /// Whether request `k` is recorded.
    pub fn is_measured(&self, k: u64) -> bool {
        k >= self.measured_from && k < self.total
    }

    /// Offset of request `k` from the start of the schedule.
    pub fn offset(&self, k: u64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let k = k as f64;
        let ramp_count = self.ramp_count();
        let secs = if k < ramp_count {
            (2.0 * self.ramp_s * k / self.rate).sqrt()
        } else {
            self.ramp_s + (k - ramp_count) / self.rate
        };
        Duration::from_secs_f64(secs)
    }

    /// Intended send time of request `k`.
    pub fn intended(&self, k: u64) -> Instant {
        self.start + self.offset(k)
    }

    /// When the measured part begins: the origin of the report's timeline.
    pub fn measured_start(&self) -> Instant {
        self.intended(self.measured_from)
    }

    /// Intended time just past the last request: the end of the schedule.
    pub fn end(&self) -> Instant {
        self.intended(self.total)
    }

    /// How many requests are due at `now`: those whose intended time is at or
    /// before `now`, capped at [`Schedule::total`].
    pub fn due(&self, now: Instant) -> u64 {
        if now < self.start || self.total == 0 {
            return 0;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        // First guess from the rate, then correct by the exact intended times
        // so `due` and `intended` never disagree on a boundary.
        let guess = self.sent_by(elapsed).floor();
        let mut n = if guess >= self.total as f64 {
            self.total
        } else {
            (guess as u64 + 1).min(self.total)
        };
        while n > 0 && self.intended(n - 1) > now {
            n -= 1;
        }
        while n < self.total && self.intended(n) <= now {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn schedules_rate_times_duration_requests() {
        let s = Schedule::new(
            Instant::now(),
            500.0,
            secs(0.0),
            secs(2.0),
            WarmUp::FullRate,
        );
        assert_eq!(s.total(), 1000);
        assert_eq!(s.measured_count(), 1000);
        let s = Schedule::new(
            Instant::now(),
            10_000.0,
            secs(5.0),
            secs(60.0),
            WarmUp::FullRate,
        );
        assert_eq!(s.total(), 650_000);
        assert_eq!(s.measured_from(), 50_000);
        assert_eq!(s.measured_count(), 600_000);
    }

    #[test]
    fn fractional_rates_round_up_to_the_last_time_inside_the_span() {
        // 2.5/s over 1 s: requests at 0, 0.4 and 0.8 s.
        let s = Schedule::new(Instant::now(), 2.5, secs(0.0), secs(1.0), WarmUp::FullRate);
        assert_eq!(s.total(), 3);
        assert!(s.offset(2) < secs(1.0));
    }

    #[test]
    fn intended_times_are_evenly_spaced_at_the_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, 1000.0, secs(1.0), secs(1.0), WarmUp::FullRate);
        assert_eq!(s.intended(0), start);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(1500), Duration::from_millis(1500));
        assert_eq!(s.measured_start(), start + Duration::from_secs(1));
        assert!(!s.is_measured(999));
        assert!(s.is_measured(1000));
        assert!(!s.is_measured(2000));
        assert_eq!(s.end(), start + Duration::from_secs(2));
    }

    #[test]
    fn due_counts_the_requests_whose_time_has_come() {
        let start = Instant::now();
        let s = Schedule::new(start, 100.0, secs(0.0), secs(1.0), WarmUp::FullRate);
        assert_eq!(s.due(start), 1);
        assert_eq!(s.due(start + Duration::from_micros(9_999)), 1);
        assert_eq!(s.due(start + Duration::from_millis(10)), 2);
        assert_eq!(s.due(start + Duration::from_millis(995)), 100);
        assert_eq!(s.due(start + Duration::from_secs(60)), 100);
        for k in 0..s.total() {
            assert_eq!(s.due(s.intended(k)), k + 1, "request {k}");
        }
    }

    #[test]
    fn a_non_positive_rate_schedules_nothing() {
        let s = Schedule::new(Instant::now(), 0.0, secs(1.0), secs(1.0), WarmUp::Ramp);
        assert_eq!(s.total(), 0);
        assert_eq!(s.due(Instant::now() + Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_ramped_warm_up_rises_linearly_then_holds_the_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, 1000.0, secs(2.0), secs(3.0), WarmUp::Ramp);
        // A 1 s ramp sends half of what the full rate would (500), then 1 s at
        // the full rate before the measured part.
        assert_eq!(s.measured_from(), 1500);
        assert_eq!(s.measured_count(), 3000);
        assert_eq!(s.measured_start(), start + Duration::from_secs(2));
        // At 0.5 s the rate is 500/s and 125 requests have been sent.
        assert_eq!(s.due(start + Duration::from_millis(500)), 126);
        let gap = |k: u64| s.offset(k + 1) - s.offset(k);
        assert!(gap(100) > gap(400), "the rate rises during the ramp");
        let held = gap(2000).abs_diff(Duration::from_millis(1));
        assert!(held < Duration::from_micros(1), "then holds at 1,000/s");
        for k in 0..s.total() {
            assert!(s.offset(k) <= s.offset(k + 1), "request {k}");
            assert_eq!(s.due(s.intended(k)), k + 1, "request {k}");
        }
        assert_eq!(s.end(), start + Duration::from_secs(5));
    }
}
