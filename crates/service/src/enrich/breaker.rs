//! Circuit breaker for the NLP API: stop calling a dependency that is failing,
//! so messages are stored at once (without NLP data) instead of each waiting
//! out timeouts and retries, and so the dependency gets room to recover.
//!
//! States and transitions (all time from `tokio::time`, so tests pause it):
//!
//! * **Closed**: every call goes through; results are counted in a sliding
//!   window of 10 buckets. When the window holds at least `min_calls` results
//!   and failures / calls ≥ `failure_ratio`, it opens.
//! * **Open**: every call is refused for `open_for`.
//! * **Half-open**: after `open_for`, about `half_open_ratio` of calls are let
//!   through as trials (deterministically: 1 in 10 for 0.1), and at least one
//!   a second whatever the traffic: half-open time is cut into one-second
//!   slots ([`TRIAL_INTERVAL`]) from the moment it half-opened, and the first
//!   call in a slot that has had no trial yet is one (so the first call at
//!   once). The rest are refused. The ratio alone would pace recovery by
//!   traffic: a bot sending one message a second would wait 10 s per trial and
//!   50 s to close. `close_after` consecutive trial successes close it with an
//!   empty window; any trial failure re-opens it for another `open_for`.
//!
//! A call's result only counts toward the state it was admitted in (each
//! transition starts a new epoch): the 2,500 calls in flight when the breaker
//! opens cannot re-open it later, and a slow trial from a previous half-open
//! cannot close the next one.
//!
//! Cost: one short `Mutex` section per admission and per result (a few
//! integer operations, 10-bucket sum on failures only). At ~10k calls/s from
//! 2,500 tasks that is ~20k uncontended-ish lock operations per second.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

use super::window::SlidingWindow;

/// Buckets of the sliding window: 10 s in 1 s slices by default.
const WINDOW_BUCKETS: usize = 10;
/// Fixed-point unit for the half-open admission share (parts per million).
const PPM: u64 = 1_000_000;
/// A half-open breaker admits at least one trial in each slot this long in
/// which calls come: at low rates that is what recovery waits on, at high
/// rates the ratio admits more.
const TRIAL_INTERVAL: Duration = Duration::from_secs(1);

/// The breaker's externally visible state (also the `circuit_breaker_state` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are being counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A share of calls go through as trials.
    HalfOpen,
}

impl BreakerState {
    /// Value of the `circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Thresholds of the breaker, taken from `NlpSettings`.
#[derive(Debug, Clone)]
pub(crate) struct BreakerConfig {
    pub failure_ratio: f64,
    pub min_calls: u64,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_ratio: f64,
    pub close_after: u32,
}

/// Permission to make one call; hand it back with the result to
/// [`Breaker::record`]. Dropping it (a cancelled call) records nothing.
#[derive(Debug)]
#[must_use = "record the call's result with Breaker::record"]
pub(crate) struct Permit {
    epoch: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    successes: u64,
    failures: u64,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        credit_ppm: u64,
        successes: u32,
        /// Start of the first trial slot without a trial yet: from then on,
        /// the next call is a trial whatever the credit.
        trial_due: Instant,
    },
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    epoch: u64,
    window: SlidingWindow<Tally>,
}

/// The circuit breaker; shared by all tasks (`&self` everywhere).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    half_open_ppm: u64,
    inner: Mutex<Inner>,
    gauge: IntGauge,
}

/// A state change, logged after the lock is released.
struct Transition {
    from: BreakerState,
    to: BreakerState,
}

impl Breaker {
    /// A closed breaker; `gauge` mirrors its state from now on.
    pub(crate) fn new(config: BreakerConfig, gauge: IntGauge) -> Breaker {
        let now = Instant::now();
        let half_open_ppm = ((config.half_open_ratio * PPM as f64).round() as u64).clamp(1, PPM);
        gauge.set(BreakerState::Closed.gauge_value());
        Breaker {
            inner: Mutex::new(Inner {
                state: State::Closed,
                epoch: 0,
                window: SlidingWindow::new(config.window, WINDOW_BUCKETS, now),
            }),
            config,
            half_open_ppm,
            gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock; if it ever did, the counters
        // are still consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Current state, moving Open to HalfOpen if the open period is over (so
    /// the gauge does not read "open" forever on an idle worker).
    pub(crate) fn state(&self) -> BreakerState {
        let now = Instant::now();
        let (state, transition) = {
            let mut inner = self.lock();
            let transition = self.maybe_half_open(&mut inner, now);
            (inner.state.public(), transition)
        };
        log(transition);
        state
    }

    /// Asks to make one call: `None` means refused (open, or not picked as a
    /// half-open trial), and the caller should fall back without calling.
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        let now = Instant::now();
        let (permit, transition) = {
            let mut inner = self.lock();
            let transition = self.maybe_half_open(&mut inner, now);
            let epoch = inner.epoch;
            let admitted = match &mut inner.state {
                State::Closed => true,
                State::Open { .. } => false,
                State::HalfOpen {
                    credit_ppm,
                    trial_due,
                    ..
                } => self.admit_trial(credit_ppm, trial_due, now),
            };
            (admitted.then_some(Permit { epoch }), transition)
        };
        log(transition);
        permit
    }

    /// Records the result of a call made under `permit`. `failure` is true
    /// for errors that say the dependency is unhealthy.
    pub(crate) fn record(&self, permit: Permit, failure: bool) {
        let now = Instant::now();
        let transition = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            if permit.epoch != inner.epoch {
                return; // admitted under an earlier state: not evidence for this one
            }
            match &mut inner.state {
                State::Closed => {
                    let tally = inner.window.current(now);
                    if failure {
                        tally.failures += 1;
                        self.trip_if_needed(inner, now)
                    } else {
                        tally.successes += 1;
                        None
                    }
                }
                State::Open { .. } => None,
                State::HalfOpen { successes, .. } => {
                    if failure {
                        Some(self.open(inner, now))
                    } else {
                        *successes += 1;
                        if *successes >= self.config.close_after {
                            Some(self.close(inner))
                        } else {
                            None
                        }
                    }
                }
            }
        };
        log(transition);
    }

    /// The half-open admission: the ratio's credit, or a slot without a trial.
    /// A slot's trial spends the credit gathered so far, so the share admitted
    /// is about the larger of `half_open_ratio` and one call a slot, not their sum.
    fn admit_trial(&self, credit_ppm: &mut u64, trial_due: &mut Instant, now: Instant) -> bool {
        *credit_ppm += self.half_open_ppm;
        let slot_without_trial = now >= *trial_due;
        if *credit_ppm >= PPM {
            *credit_ppm -= PPM;
        } else if slot_without_trial {
            *credit_ppm = 0;
        } else {
            return false;
        }
        if slot_without_trial {
            *trial_due = next_slot(*trial_due, now);
        }
        true
    }

    fn trip_if_needed(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        let total = inner.window.fold(now, Tally::default(), |acc, t| Tally {
            successes: acc.successes + t.successes,
            failures: acc.failures + t.failures,
        });
        let calls = total.successes + total.failures;
        let ratio = total.failures as f64 / calls as f64;
        (calls >= self.config.min_calls && ratio >= self.config.failure_ratio)
            .then(|| self.open(inner, now))
    }

    fn maybe_half_open(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        match inner.state {
            State::Open { until } if now >= until => Some(self.set(
                inner,
                State::HalfOpen {
                    credit_ppm: 0,
                    successes: 0,
                    // The first call after the open period is a trial at once.
                    trial_due: now,
                },
            )),
            _ => None,
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) -> Transition {
        let until = now + self.config.open_for;
        self.set(inner, State::Open { until })
    }

    fn close(&self, inner: &mut Inner) -> Transition {
        inner.window.clear();
        self.set(inner, State::Closed)
    }

    fn set(&self, inner: &mut Inner, state: State) -> Transition {
        let from = inner.state.public();
        inner.state = state;
        inner.epoch += 1;
        let to = inner.state.public();
        // Inside the lock, so the gauge can never show an older state last.
        self.gauge.set(to.gauge_value());
        Transition { from, to }
    }
}

/// Start of the trial slot after the one `now` falls in; slots are
/// [`TRIAL_INTERVAL`] long and `slot_start` (≤ `now`) begins one of them.
fn next_slot(slot_start: Instant, now: Instant) -> Instant {
    let into_slot = (now - slot_start).as_nanos() % TRIAL_INTERVAL.as_nanos();
    // The remainder is below one interval (1 s), so it fits in u64 nanoseconds.
    now + (TRIAL_INTERVAL - Duration::from_nanos(into_slot as u64))
}

fn log(transition: Option<Transition>) {
    if let Some(Transition { from, to }) = transition {
        match to {
            BreakerState::Open => tracing::warn!(
                from = from.as_str(),
                to = to.as_str(),
                "NLP API circuit breaker opened: messages are stored without NLP data"
            ),
            _ => tracing::info!(
                from = from.as_str(),
                to = to.as_str(),
                "NLP API circuit breaker changed state"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_ratio: 0.1,
            close_after: 5,
        }
    }

    fn breaker() -> (Breaker, IntGauge) {
        let gauge = IntGauge::new("circuit_breaker_state", "test").expect("gauge");
        (Breaker::new(config(), gauge.clone()), gauge)
    }

    /// Makes `n` calls with the given result; panics if one is refused.
    fn calls(b: &Breaker, n: usize, failure: bool) {
        for _ in 0..n {
            let permit = b.try_acquire().expect("admitted");
            b.record(permit, failure);
        }
    }

    fn open_it(b: &Breaker) {
        calls(b, 20, true);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_min_calls_even_at_100_percent_errors() {
        let (b, gauge) = breaker();
        calls(&b, 19, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_ratio() {
        let (b, _) = breaker();
        calls(&b, 11, false);
        calls(&b, 9, true); // 45% of 20
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_half_errors_with_min_calls() {
        let (b, gauge) = breaker();
        calls(&b, 10, false);
        calls(&b, 9, true);
        assert_eq!(b.state(), BreakerState::Closed);
        calls(&b, 1, true); // 10 of 20 = 50%
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_older_than_the_window_do_not_count() {
        let (b, _) = breaker();
        calls(&b, 15, true);
        advance(Duration::from_secs(11)).await;
        calls(&b, 10, true);
        assert_eq!(b.state(), BreakerState::Closed, "only 10 calls in window");
        calls(&b, 10, true);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_are_not_a_failure_trigger() {
        let (b, _) = breaker();
        calls(&b, 1_000, false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_everything_while_open() {
        let (b, gauge) = breaker();
        open_it(&b);
        assert!((0..1_000).all(|_| b.try_acquire().is_none()));
        advance(Duration::from_millis(29_999)).await;
        assert!(b.try_acquire().is_none());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_30_s_and_lets_about_10_percent_through() {
        let (b, gauge) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        assert!(
            b.try_acquire().is_some(),
            "first call after open is a trial"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(gauge.get(), 2);
        // Trials are not answered yet, so the state stays half-open.
        let admitted = (0..1_000).filter(|_| b.try_acquire().is_some()).count();
        assert!(
            (50..=150).contains(&admitted),
            "admitted {admitted} of 1000"
        );
        assert_eq!(admitted, 100, "deterministic: exactly 1 in 10");
    }

    #[tokio::test(start_paused = true)]
    async fn at_one_call_a_second_every_call_is_a_trial_and_five_close_it() {
        let (b, gauge) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        for i in 0..5 {
            assert_eq!(b.state(), BreakerState::HalfOpen, "after {i} successes");
            let trial = b
                .try_acquire()
                .unwrap_or_else(|| panic!("call {i} at 1/s refused"));
            b.record(trial, false);
            advance(TRIAL_INTERVAL).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_three_calls_a_second_one_a_second_is_a_trial() {
        let (b, _) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        let mut admitted = 0;
        for _ in 0..30 {
            // Trials stay unanswered (a dropped permit records nothing), so the
            // breaker stays half-open throughout.
            admitted += usize::from(b.try_acquire().is_some());
            advance(Duration::from_millis(333)).await;
        }
        assert_eq!(admitted, 10, "one trial in each of the 10 seconds");
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn at_a_thousand_calls_a_second_about_10_percent_are_trials() {
        let (b, _) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        let mut admitted = 0;
        for _ in 0..3_000 {
            admitted += usize::from(b.try_acquire().is_some());
            advance(Duration::from_millis(1)).await;
        }
        assert!(
            (300..=303).contains(&admitted),
            "10% of 3,000 calls in 3 s, plus at most one a second: admitted {admitted}"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn the_gauge_leaves_open_without_traffic() {
        let (b, gauge) = breaker();
        open_it(&b);
        advance(Duration::from_secs(31)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(gauge.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_consecutive_trial_successes() {
        let (b, gauge) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        for i in 0..5 {
            assert_eq!(b.state(), BreakerState::HalfOpen, "after {i} successes");
            b.record(next_trial(&b), false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(gauge.get(), 0);
        // Closed with an empty window: 19 failures do not trip it again.
        calls(&b, 19, true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_failure_reopens_for_another_30_s() {
        let (b, gauge) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        let ok = b.try_acquire().expect("trial");
        let bad = next_trial(&b);
        b.record(ok, false);
        b.record(bad, true);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(gauge.get(), 1);
        advance(Duration::from_millis(29_999)).await;
        assert!(b.try_acquire().is_none());
        advance(Duration::from_millis(1)).await;
        assert!(b.try_acquire().is_some());
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    /// Waits (in calls) for the next half-open trial slot.
    fn next_trial(b: &Breaker) -> Permit {
        loop {
            if let Some(p) = b.try_acquire() {
                break p;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_from_the_closed_state_do_not_reopen() {
        let (b, _) = breaker();
        // 100 calls admitted while closed, still in flight when it opens.
        let in_flight: Vec<_> = (0..100).map(|_| b.try_acquire().expect("closed")).collect();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        let _trial = b.try_acquire().expect("trial");
        for permit in in_flight {
            b.record(permit, true);
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn late_successes_from_a_previous_half_open_do_not_close() {
        let (b, _) = breaker();
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        let slow: Vec<_> = (0..5).map(|_| next_trial(&b)).collect();
        let failing = next_trial(&b);
        b.record(failing, true);
        assert_eq!(b.state(), BreakerState::Open);
        advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        for permit in slow {
            b.record(permit, false);
        }
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "needs this epoch's trials"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_ratio_half_open_admits_everything() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let b = Breaker::new(
            BreakerConfig {
                half_open_ratio: 1.0,
                ..config()
            },
            gauge,
        );
        open_it(&b);
        advance(Duration::from_secs(30)).await;
        assert!((0..100).all(|_| b.try_acquire().is_some()));
    }
}
