//! Recording a run's answers: every status and failure counted, latency of accepted (202)
//! requests in an HdrHistogram (P99 and P99.9 exact to three significant digits however
//! long the run), and a per-second timeline by completion time that shows *when* things
//! happened: a throughput dip, a P99 spike, the seconds with 429s or errors. Transport
//! failures (connect, timeout, closed, ...) are counted by kind, since "no answer" must
//! never look like success. Several generator processes' figures add up without loss.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::{Completion, Outcome};
use crate::resend::Cause;
use crate::schedule::Schedule;

/// Histogram range in microseconds: 1 µs to 10 minutes, beyond any timeout.
const HIST_MAX_MICROS: u64 = 600_000_000;
/// Per-second histograms are many, so they keep two significant digits.
const SECOND_SIGFIGS: u8 = 2;

/// The status an accepted message gets.
pub const ACCEPTED: u16 = 202;
/// The status of deliberate load shedding.
pub const THROTTLED: u16 = 429;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded (0: every other field is 0 too).
    pub count: u64,
    /// Smallest value, ms.
    pub min: f64,
    /// Arithmetic mean, ms.
    pub mean: f64,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// Largest value, ms.
    pub max: f64,
}

impl Percentiles {
    /// Summary of a histogram of microseconds.
    pub fn of_micros<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// A new histogram of microseconds with `sigfigs` (2 or 3) precision.
pub(crate) fn micros_histogram<T: hdrhistogram::Counter>(sigfigs: u8) -> Histogram<T> {
    Histogram::new_with_bounds(1, HIST_MAX_MICROS, sigfigs.clamp(1, 3))
        .expect("1 µs to 10 min at 1-3 significant digits is a valid histogram range")
}

/// One second of the measured run (by completion time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    /// Seconds since the measured part began.
    pub second: u32,
    /// Requests that finished in this second, whatever the outcome.
    pub completed: u64,
    /// Messages accepted (202) in this second: the throughput.
    pub accepted_messages: u64,
    /// Median latency of this second's accepted requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of this second's accepted requests, ms.
    pub p99_ms: f64,
    /// Largest latency of this second's accepted requests, ms.
    pub max_ms: f64,
    /// 429 answers in this second.
    pub throttled: u64,
    /// Transport failures and statuses other than 202 and 429.
    pub errors: u64,
}

/// Per-second accumulator behind [`SecondStats`].
struct SecondBucket {
    completed: u64,
    accepted_messages: u64,
    throttled: u64,
    errors: u64,
    latency: Histogram<u32>,
}

impl SecondBucket {
    fn new() -> Self {
        SecondBucket {
            completed: 0,
            accepted_messages: 0,
            throttled: 0,
            errors: 0,
            latency: micros_histogram(SECOND_SIGFIGS),
        }
    }

    fn stats(&self, second: u32) -> SecondStats {
        let p = Percentiles::of_micros(&self.latency);
        SecondStats {
            second,
            completed: self.completed,
            accepted_messages: self.accepted_messages,
            p50_ms: p.p50,
            p99_ms: p.p99,
            max_ms: p.max,
            throttled: self.throttled,
            errors: self.errors,
        }
    }
}

/// Collects completions during the run. Lives in the driver's task only, so
/// it needs no locking.
pub struct Recorder {
    schedule: Schedule,
    measured_start: Instant,
    messages_per_request: u64,
    collect_ids: bool,
    latency: Histogram<u64>,
    queue_wait: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    failures: BTreeMap<&'static str, u64>,
    retry_after_missing: u64,
    follow_ups: FollowUpCounts,
    seconds: Vec<SecondBucket>,
    accepted_ids: Vec<Uuid>,
    /// Accepted messages whose answer came within the measured duration.
    accepted_in_window: u64,
    /// The measured duration (end of the throughput window).
    window: std::time::Duration,
    warmup_completed: u64,
    measured_completed: u64,
}

impl Recorder {
    /// A recorder for `schedule`, whose requests carry `messages_per_request`
    /// messages each; `collect_ids` keeps accepted ids for the e2e lookup.
    pub fn new(schedule: Schedule, messages_per_request: u64, collect_ids: bool) -> Self {
        let measured_start = schedule.measured_start();
        let window = schedule.end().saturating_duration_since(measured_start);
        Recorder {
            schedule,
            measured_start,
            messages_per_request: messages_per_request.max(1),
            collect_ids,
            latency: micros_histogram(3),
            queue_wait: micros_histogram(3),
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            retry_after_missing: 0,
            follow_ups: FollowUpCounts::new(),
            seconds: Vec::new(),
            accepted_ids: Vec::new(),
            accepted_in_window: 0,
            window,
            warmup_completed: 0,
            measured_completed: 0,
        }
    }

    /// Records one finished request. Warm-up requests are counted apart and
    /// otherwise ignored.
    pub fn record(&mut self, done: Completion) {
        if !self.schedule.is_measured(done.seq) {
            self.warmup_completed += 1;
            return;
        }
        self.measured_completed += 1;
        let intended = self.schedule.intended(done.seq);
        let latency_us = micros(done.completed.saturating_duration_since(intended));
        let wait_us = micros(done.started.saturating_duration_since(intended));
        let since_start = done
            .completed
            .saturating_duration_since(self.measured_start);
        let second = since_start.as_secs() as usize;
        let in_window = since_start <= self.window;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, SecondBucket::new);
        }
        let bucket = &mut self.seconds[second];
        bucket.completed += 1;
        match done.outcome {
            Outcome::Answered(r) => {
                *self.statuses.entry(r.status).or_insert(0) += 1;
                match r.status {
                    ACCEPTED => {
                        let messages = self.messages_per_request;
                        if in_window {
                            self.accepted_in_window += messages;
                        }
                        bucket.accepted_messages += messages;
                        bucket.latency.saturating_record(latency_us);
                        self.latency.saturating_record(latency_us);
                        self.queue_wait.saturating_record(wait_us);
                        if self.collect_ids {
                            self.accepted_ids.extend_from_slice(&done.ids);
                        }
                    }
                    THROTTLED | 503 => {
                        // A 429 is throttling, a 503 an error; both promise
                        // a Retry-After.
                        if r.status == THROTTLED {
                            bucket.throttled += 1;
                        } else {
                            bucket.errors += 1;
                        }
                        if !r.retry_after {
                            self.retry_after_missing += 1;
                        }
                    }
                    _ => bucket.errors += 1,
                }
            }
            Outcome::Failed(kind) => {
                *self.failures.entry(kind.label()).or_insert(0) += 1;
                bucket.errors += 1;
            }
        }
    }

    /// Records a request sent again (see [`super::resend`]): counted by why
    /// and how it ended, apart from the scheduled requests' figures, which
    /// stay one per scheduled request.
    pub fn record_follow_up(&mut self, cause: Cause, outcome: &Outcome) {
        if let Outcome::Answered(r) = outcome {
            if (r.status == THROTTLED || r.status == 503) && !r.retry_after {
                self.retry_after_missing += 1;
            }
        }
        *self
            .follow_ups
            .entry(cause.label().to_owned())
            .or_default()
            .entry(outcome.label())
            .or_insert(0) += 1;
    }

    /// Number of measured requests recorded so far.
    pub fn measured_completed(&self) -> u64 {
        self.measured_completed
    }

    /// Ends recording: the raw figures (mergeable with other processes'),
    /// and the accepted ids.
    pub fn finish(self) -> (RawResults, Vec<Uuid>) {
        let accepted_requests = self.statuses.get(&ACCEPTED).copied().unwrap_or(0);
        let raw = RawResults {
            measured_requests: self.schedule.measured_count(),
            completed: self.measured_completed,
            warmup_completed: self.warmup_completed,
            statuses: self.statuses,
            failures: self
                .failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            retry_after_missing: self.retry_after_missing,
            follow_ups: self.follow_ups,
            accepted_requests,
            accepted_messages: accepted_requests * self.messages_per_request,
            accepted_in_window: self.accepted_in_window,
            latency: HistData::of(&self.latency),
            queue_wait: HistData::of(&self.queue_wait),
            seconds: self
                .seconds
                .iter()
                .map(|b| RawSecond {
                    completed: b.completed,
                    accepted_messages: b.accepted_messages,
                    throttled: b.throttled,
                    errors: b.errors,
                    latency: HistData::of(&b.latency),
                })
                .collect(),
        };
        (raw, self.accepted_ids)
    }
}

/// Requests sent again, by why (`retry`, `resend`) and then by how they
/// ended (HTTP status or failure kind).
pub type FollowUpCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// A histogram as (value, count) pairs: what crosses a process boundary when
/// several generator processes share a run, merged back without loss.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistData(pub Vec<(u64, u64)>);

impl HistData {
    fn of<T: hdrhistogram::Counter>(h: &Histogram<T>) -> HistData {
        HistData(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value().as_u64()))
                .collect(),
        )
    }

    fn add_to<T: hdrhistogram::Counter>(&self, h: &mut Histogram<T>) {
        for &(value, count) in &self.0 {
            // Values came from a histogram of the same range; saturating
            // keeps a corrupt shard file from aborting the report.
            let n = T::from_u64(count).or_else(|| T::from_u32(u32::MAX));
            if let Some(n) = n {
                let _ = h.record_n(value.min(HIST_MAX_MICROS), n);
            }
        }
    }
}

/// One second of one process's timeline, before merging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawSecond {
    pub completed: u64,
    pub accepted_messages: u64,
    pub throttled: u64,
    pub errors: u64,
    pub latency: HistData,
}

/// What one generator process measured, in a form that adds up across
/// processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawResults {
    pub measured_requests: u64,
    pub completed: u64,
    pub warmup_completed: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub failures: BTreeMap<String, u64>,
    pub retry_after_missing: u64,
    #[serde(default)]
    pub follow_ups: FollowUpCounts,
    pub accepted_requests: u64,
    pub accepted_messages: u64,
    pub accepted_in_window: u64,
    pub latency: HistData,
    pub queue_wait: HistData,
    pub seconds: Vec<RawSecond>,
}

/// Adds up the processes' figures into the report's results.
pub fn summarize(parts: &[RawResults], duration_s: f64) -> Results {
    let mut latency = micros_histogram::<u64>(3);
    let mut queue_wait = micros_histogram::<u64>(3);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    // The timeline covers at least the configured duration, so quiet seconds
    // at the end show as zeros rather than disappear.
    let len = parts
        .iter()
        .map(|p| p.seconds.len())
        .max()
        .unwrap_or(0)
        .max(duration_s.ceil().max(0.0) as usize);
    let mut seconds: Vec<SecondBucket> = (0..len).map(|_| SecondBucket::new()).collect();
    let mut r = Results::default();
    let mut accepted_in_window = 0;
    for p in parts {
        r.measured_requests += p.measured_requests;
        r.completed += p.completed;
        r.warmup_completed += p.warmup_completed;
        r.retry_after_missing += p.retry_after_missing;
        for (cause, outcomes) in &p.follow_ups {
            let merged = r.follow_ups.entry(cause.clone()).or_default();
            for (outcome, n) in outcomes {
                *merged.entry(outcome.clone()).or_insert(0) += n;
            }
        }
        r.accepted_requests += p.accepted_requests;
        r.accepted_messages += p.accepted_messages;
        accepted_in_window += p.accepted_in_window;
        for (k, v) in &p.statuses {
            *statuses.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &p.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
        p.latency.add_to(&mut latency);
        p.queue_wait.add_to(&mut queue_wait);
        for (bucket, raw) in seconds.iter_mut().zip(&p.seconds) {
            bucket.completed += raw.completed;
            bucket.accepted_messages += raw.accepted_messages;
            bucket.throttled += raw.throttled;
            bucket.errors += raw.errors;
            raw.latency.add_to(&mut bucket.latency);
        }
    }
    r.status_counts = statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    r.failures = failures;
    r.accepted_msgs_per_s = if duration_s > 0.0 {
        accepted_in_window as f64 / duration_s
    } else {
        0.0
    };
    r.latency_ms = Percentiles::of_micros(&latency);
    r.queue_wait_ms = Percentiles::of_micros(&queue_wait);
    r.timeline = seconds
        .iter()
        .enumerate()
        .map(|(i, b)| b.stats(i as u32))
        .collect();
    r
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What the recorder measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Requests scheduled in the measured part.
    pub measured_requests: u64,
    /// Measured requests that finished (answered or failed) before the end.
    pub completed: u64,
    /// Warm-up requests that finished (not otherwise recorded).
    pub warmup_completed: u64,
    /// Answers by HTTP status code.
    pub status_counts: BTreeMap<String, u64>,
    /// Requests without an answer, by kind (connect, timeout, closed, io,
    /// bad_response).
    pub failures: BTreeMap<String, u64>,
    /// 429 and 503 answers that lacked the promised `Retry-After`, follow-ups
    /// included.
    pub retry_after_missing: u64,
    /// Requests sent again with the same message ids, apart from the figures
    /// above (which count each scheduled request once, by its first attempt).
    #[serde(default)]
    pub follow_ups: FollowUpCounts,
    /// Measured requests answered 202.
    pub accepted_requests: u64,
    /// Messages in those requests (requests × batch size).
    pub accepted_messages: u64,
    /// Accepted messages per second: those answered *within* the measured
    /// duration, divided by it. Answers that only came while draining are not
    /// counted here, so a generator or server that falls behind shows a rate
    /// below the offered one.
    pub accepted_msgs_per_s: f64,
    /// From intended send time to the full 202 answer.
    pub latency_ms: Percentiles,
    /// From intended send time to the moment a connection picked the request
    /// up: how much of the latency was waiting for a free connection (or for
    /// the generator itself).
    pub queue_wait_ms: Percentiles,
    /// One entry per second of the measured part, by completion time; answers
    /// that came while draining extend it past the duration.
    pub timeline: Vec<SecondStats>,
}
