//! Recording results and writing them out (JSON for machines, Markdown for
//! people; the PNG is in [`super::plot`]).
//!
//! Latency of accepted (202) requests goes into an HdrHistogram, so P99 and
//! P99.9 are exact to three significant digits however long the run, and a
//! per-second timeline (by completion time) shows *when* things happened: a
//! throughput dip, a P99 spike, the seconds with 429s or errors. Every status
//! code is counted; transport failures (connect, timeout, closed, ...) are
//! counted by kind, since "no answer" must never look like success.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use super::client::{Completion, Outcome};
use super::e2e::E2eReport;
use super::resend::Cause;
use super::schedule::Schedule;

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

/// The machine the run happened on, so figures are read in context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// From /proc/sys/kernel/hostname.
    pub hostname: String,
    /// CPUs available to the generator process.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
}

impl HostInfo {
    /// Best effort from /proc; missing pieces stay empty.
    pub fn detect() -> HostInfo {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// The run's settings as they were applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Base URL of the ingest API.
    pub url: String,
    /// Offered load, messages per second.
    pub rate: f64,
    /// Keep-alive connections asked for, one bot each.
    pub connections: u32,
    /// Distinct bot ids the messages were spread over.
    pub bots: u32,
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Unrecorded warm-up before the measured part, seconds.
    pub warmup_s: f64,
    /// Whether the warm-up rose from zero to the rate instead of starting at it.
    #[serde(default)]
    pub warmup_ramp: bool,
    /// 0: single messages; N: batches of N.
    pub batch: u32,
    /// Source addresses used (0: the kernel's choice).
    pub source_ips: u32,
    /// New connections per second while the fleet was opened.
    pub connect_rate: u32,
    /// Per-request deadline, seconds.
    pub timeout_s: f64,
    /// Generator processes that shared the connections.
    pub processes: u32,
    /// Whether end-to-end latency was read back from Postgres.
    pub postgres: bool,
    /// Retries of a request after a 429, a 5xx or no answer.
    #[serde(default)]
    pub retries: u32,
    /// Share of requests deliberately sent a second time.
    #[serde(default)]
    pub resend: f64,
    /// Share of messages sent without `sent_at`.
    #[serde(default)]
    pub without_sent_at: f64,
    /// Where every attempt was written, one line per message.
    #[serde(default)]
    pub ledger: Option<PathBuf>,
}

/// The file-descriptor limit after raising it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FdLimit {
    /// Soft `RLIMIT_NOFILE` the run worked with (0: unknown).
    pub soft: u64,
    /// Hard `RLIMIT_NOFILE` (0: unknown).
    pub hard: u64,
    /// What the run wanted (connections plus a margin).
    pub wanted: u64,
}

/// How the connection fleet fared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Connections the fleet was to open.
    pub requested: u32,
    /// Connections open when the schedule started.
    pub connected: u32,
    /// Failed first connects, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Time to open the fleet, seconds.
    pub ramp_s: f64,
    /// Re-opens during the run (server closed or broke a connection).
    pub reconnects: u64,
    /// Connections still open when the run ended.
    pub open_at_end: u32,
}

/// Dispatch figures: whether the generator kept to its schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DispatchStats {
    /// Requests in the whole schedule, warm-up included.
    pub scheduled: u64,
    /// Requests handed to a connection before the end.
    pub dispatched: u64,
    /// Requests never answered nor failed before the drain deadline (measured
    /// part only; they count against the run).
    pub unfinished: u64,
    /// Wall time from the first intended send to the end of the drain.
    pub elapsed_s: f64,
}

/// Everything one run measured; serialised as `report.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// When the run was started (before the connections were opened).
    pub started_at: DateTime<Utc>,
    /// The machine the generator ran on.
    pub host: HostInfo,
    /// The settings the run used.
    pub config: RunConfig,
    /// The open-file limit of the (parent) generator process.
    pub fd_limit: FdLimit,
    /// How opening and keeping the connections went.
    pub connections: ConnectionStats,
    /// Whether the generator kept to its schedule.
    pub dispatch: DispatchStats,
    /// What the measured part recorded.
    pub results: Results,
    /// Sent → stored latency read back from Postgres, when asked for.
    pub e2e: Option<E2eReport>,
    /// Why the end-to-end lookup failed, if it did (the load figures stand).
    pub e2e_error: Option<String>,
    /// Where report.json, report.md and latency.png were written.
    pub out_dir: PathBuf,
}

impl LoadReport {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let r = &self.results;
        let mut s = format!(
            "offered {:.0} msg/s over {} connections ({} connected) for {:.0} s: \
             accepted {:.0} msg/s, P50 {:.2} ms, P99 {:.2} ms, max {:.2} ms; \
             429: {}, other errors: {}, unfinished: {}",
            self.config.rate,
            self.config.connections,
            self.connections.connected,
            self.config.duration_s,
            r.accepted_msgs_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.status_counts.get("429").copied().unwrap_or(0),
            self.error_count(),
            self.dispatch.unfinished,
        );
        if let Some(e) = &self.e2e {
            let _ = write!(
                s,
                "\nend-to-end: {} of {} found, P50 {:.1} ms, P99 {:.1} ms",
                e.found, e.requested, e.latency_ms.p50, e.latency_ms.p99
            );
        }
        if let Some(err) = &self.e2e_error {
            let _ = write!(s, "\nend-to-end lookup failed: {err}");
        }
        let _ = write!(s, "\nreport: {}", self.out_dir.display());
        s
    }

    /// Answers other than 202 and 429, plus failures without an answer.
    pub fn error_count(&self) -> u64 {
        let r = &self.results;
        let other: u64 = r
            .status_counts
            .iter()
            .filter(|(k, _)| *k != "202" && *k != "429")
            .map(|(_, v)| v)
            .sum();
        other + r.failures.values().sum::<u64>()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The report as Markdown, ready to paste into docs/BENCHMARKS.md.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        self.write_markdown(&mut md);
        md
    }

    fn write_markdown(&self, md: &mut String) {
        let c = &self.config;
        let r = &self.results;
        let h = &self.host;
        let _ = writeln!(
            md,
            "# Load run {}\n",
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(
            md,
            "Machine: `{}`, {} CPUs, {} MiB memory, Linux {}. The generator ran on the \
             same machine as the target.\n",
            h.hostname, h.cpus, h.memory_mib, h.kernel
        );
        let _ = writeln!(md, "## Settings\n");
        let _ = writeln!(md, "| setting | value |\n|---|---|");
        let mode = if c.batch == 0 {
            "single messages (`POST /v1/messages`)".to_owned()
        } else {
            format!("batches of {} (`POST /v1/messages/batch`)", c.batch)
        };
        for (k, v) in [
            ("target", format!("`{}`", c.url)),
            ("offered rate", format!("{:.0} msg/s (open loop)", c.rate)),
            ("mode", mode),
            ("connections", c.connections.to_string()),
            ("distinct bots", c.bots.to_string()),
            (
                "warm-up (not recorded)",
                if c.warmup_ramp {
                    format!("{} s, the first half rising from 0 to the rate", c.warmup_s)
                } else {
                    format!("{} s at the rate", c.warmup_s)
                },
            ),
            ("measured duration", format!("{} s", c.duration_s)),
            (
                "source addresses",
                if c.source_ips == 0 {
                    "the kernel's choice".to_owned()
                } else {
                    format!("{} (127.0.0.1 to 127.0.0.{})", c.source_ips, c.source_ips)
                },
            ),
            ("request timeout", format!("{} s", c.timeout_s)),
            (
                "sent again (same message ids)",
                format!(
                    "up to {} retries after 429, 5xx or no answer; {:.0}% of requests re-sent \
                     once on purpose",
                    c.retries,
                    c.resend * 100.0
                ),
            ),
            (
                "messages without sent_at",
                format!("{:.0}%", c.without_sent_at * 100.0),
            ),
            ("generator processes", c.processes.to_string()),
            (
                "file-descriptor limit (per process)",
                format!("{} soft / {} hard", self.fd_limit.soft, self.fd_limit.hard),
            ),
        ] {
            let _ = writeln!(md, "| {k} | {v} |");
        }

        let _ = writeln!(md, "\n## Results\n");
        let _ = writeln!(md, "| figure | value |\n|---|---|");
        let k = &self.connections;
        let failed: u64 = k.failed.values().sum();
        for (name, v) in [
            (
                "connections open",
                format!(
                    "{} of {} ({} failed, opened in {:.1} s; {} open at the end, {} reconnects)",
                    k.connected, k.requested, failed, k.ramp_s, k.open_at_end, k.reconnects
                ),
            ),
            (
                "accepted throughput",
                format!(
                    "{:.0} msg/s ({} messages in {} requests)",
                    r.accepted_msgs_per_s, r.accepted_messages, r.accepted_requests
                ),
            ),
            (
                "requests scheduled / finished / unfinished",
                format!(
                    "{} / {} / {}",
                    r.measured_requests, r.completed, self.dispatch.unfinished
                ),
            ),
            (
                "throttled (429)",
                r.status_counts.get("429").copied().unwrap_or(0).to_string(),
            ),
            (
                "errors (other statuses + no answer)",
                self.error_count().to_string(),
            ),
            (
                "429/503 without Retry-After",
                r.retry_after_missing.to_string(),
            ),
        ] {
            let _ = writeln!(md, "| {name} | {v} |");
        }

        let _ = writeln!(
            md,
            "\n## Latency of accepted requests (ms, from intended send time)\n"
        );
        let _ = writeln!(
            md,
            "| measure | count | min | P50 | P90 | P99 | P99.9 | max | mean |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        percentile_row(md, "request → 202", &r.latency_ms);
        percentile_row(md, "of which waiting for a connection", &r.queue_wait_ms);
        match &self.e2e {
            Some(e) => {
                percentile_row(md, "end to end (sent_at → processed_at)", &e.latency_ms);
                let _ = writeln!(
                    md,
                    "\nEnd to end: {} of {} accepted messages found in Postgres ({} missing) \
                     after waiting {:.1} s.",
                    e.found, e.requested, e.missing, e.waited_s
                );
            }
            None => match &self.e2e_error {
                Some(err) => {
                    let _ = writeln!(md, "\nEnd to end: lookup failed: {err}");
                }
                None => {
                    let _ = writeln!(md, "\nEnd to end: not measured (no `--postgres-url`).");
                }
            },
        }

        let _ = writeln!(md, "\n## Answers\n");
        let _ = writeln!(md, "| status / failure | count |\n|---|---|");
        for (code, n) in &r.status_counts {
            let _ = writeln!(md, "| HTTP {code} | {n} |");
        }
        for (kind, n) in &r.failures {
            let _ = writeln!(md, "| no answer: {kind} | {n} |");
        }
        for (reason, n) in &k.failed {
            let _ = writeln!(md, "| connect failed: {reason} | {n} |");
        }

        if !r.follow_ups.is_empty() {
            let _ = writeln!(
                md,
                "\n## Sent again with the same message ids (not in the figures above)\n"
            );
            let _ = writeln!(md, "| why | answer | count |\n|---|---|---|");
            for (cause, outcomes) in &r.follow_ups {
                for (outcome, n) in outcomes {
                    let _ = writeln!(md, "| {cause} | {outcome} | {n} |");
                }
            }
        }
        if let Some(ledger) = &c.ledger {
            let _ = writeln!(
                md,
                "\nEvery attempt, one line per message: `{}`.",
                ledger.display()
            );
        }

        let _ = writeln!(md, "\n## Over time\n");
        let _ = writeln!(
            md,
            "![throughput and latency over time](latency.png)\n\n\
             Top panel: accepted messages per second (blue) against the offered rate (grey). \
             Bottom panel: P50 (green) and P99 (purple) latency in ms. Orange bands mark \
             seconds with 429s, red bands seconds with errors. Seconds are counted from the \
             end of the warm-up, by completion time; seconds at or past the measured \
             duration hold only requests still draining.\n"
        );
        let _ = writeln!(
            md,
            "| s | accepted msg/s | P50 ms | P99 ms | max ms | 429 | errors |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for t in &r.timeline {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
                t.second, t.accepted_messages, t.p50_ms, t.p99_ms, t.max_ms, t.throttled, t.errors
            );
        }
    }

    /// Writes report.json and report.md into `dir` (created if needed).
    pub fn write_files(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = self.to_json().map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("report.md"), self.to_markdown())?;
        Ok(())
    }
}

fn percentile_row(md: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        md,
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        p.count, p.min, p.p50, p.p90, p.p99, p.p999, p.max, p.mean
    );
}

#[cfg(test)]
mod tests {
    use super::super::client::{FailureKind, Response};
    use super::super::schedule::WarmUp;
    use super::*;
    use std::time::Duration;

    fn answered(status: u16, retry_after: bool) -> Outcome {
        Outcome::Answered(Response {
            status,
            retry_after,
            retry_after_secs: retry_after.then_some(1),
            keep_alive: true,
        })
    }

    fn done(s: &Schedule, seq: u64, after_ms: u64, outcome: Outcome) -> Completion {
        let intended = s.intended(seq);
        Completion {
            conn: 0,
            seq,
            started: intended,
            completed: intended + Duration::from_millis(after_ms),
            outcome,
            ids: vec![Uuid::now_v7()],
            open: true,
            reconnected: false,
        }
    }

    fn sample_report() -> LoadReport {
        let start = Instant::now();
        let s = Schedule::new(
            start,
            100.0,
            Duration::from_secs(1),
            Duration::from_secs(2),
            WarmUp::FullRate,
        );
        let mut rec = Recorder::new(s.clone(), 1, true);
        // Warm-up: ignored.
        rec.record(done(&s, 5, 1, answered(ACCEPTED, false)));
        for seq in 100..270 {
            rec.record(done(&s, seq, 3, answered(ACCEPTED, false)));
        }
        for seq in 270..290 {
            rec.record(done(&s, seq, 1, answered(THROTTLED, seq % 2 == 0)));
        }
        for seq in 290..295 {
            rec.record(done(&s, seq, 1, answered(400, false)));
        }
        for seq in 295..300 {
            rec.record(done(&s, seq, 10_000, Outcome::Failed(FailureKind::Timeout)));
        }
        let (raw, ids) = rec.finish();
        assert_eq!(ids.len(), 170);
        let results = summarize(&[raw], 2.0);
        LoadReport {
            started_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            config: RunConfig {
                url: "http://127.0.0.1:8080".into(),
                rate: 100.0,
                connections: 4,
                bots: 4,
                duration_s: 2.0,
                warmup_s: 1.0,
                ..RunConfig::default()
            },
            results,
            ..LoadReport::default()
        }
    }

    #[test]
    fn counts_every_status_and_failure() {
        let r = sample_report();
        let res = &r.results;
        assert_eq!(res.warmup_completed, 1);
        assert_eq!(res.completed, 200);
        assert_eq!(res.status_counts.get("202"), Some(&170));
        assert_eq!(res.status_counts.get("429"), Some(&20));
        assert_eq!(res.status_counts.get("400"), Some(&5));
        assert_eq!(res.failures.get("timeout"), Some(&5));
        assert_eq!(res.retry_after_missing, 10);
        assert_eq!(r.error_count(), 10);
        assert_eq!(res.accepted_messages, 170);
        assert!((res.accepted_msgs_per_s - 85.0).abs() < 1e-9);
        assert_eq!(res.latency_ms.count, 170);
        assert!(
            (res.latency_ms.p50 - 3.0).abs() < 0.01,
            "{:?}",
            res.latency_ms
        );
    }

    #[test]
    fn follow_ups_are_counted_apart_from_the_scheduled_requests() {
        let s = Schedule::new(
            Instant::now(),
            100.0,
            Duration::ZERO,
            Duration::from_secs(1),
            WarmUp::FullRate,
        );
        let mut rec = Recorder::new(s.clone(), 1, false);
        rec.record(done(&s, 0, 1, answered(503, true)));
        rec.record_follow_up(Cause::Retry, &answered(ACCEPTED, false));
        rec.record_follow_up(Cause::Resend, &answered(ACCEPTED, false));
        rec.record_follow_up(Cause::Resend, &answered(503, false));
        let results = summarize(&[rec.finish().0], 1.0);
        assert_eq!(results.completed, 1);
        assert_eq!(results.status_counts.get("503"), Some(&1));
        assert_eq!(results.accepted_requests, 0);
        assert_eq!(results.follow_ups["retry"]["202"], 1);
        assert_eq!(results.follow_ups["resend"]["202"], 1);
        assert_eq!(results.follow_ups["resend"]["503"], 1);
        assert_eq!(results.retry_after_missing, 1);
        let md = LoadReport {
            results,
            ..LoadReport::default()
        }
        .to_markdown();
        assert!(md.contains("| resend | 503 | 1 |"), "{md}");
    }

    #[test]
    fn timeline_buckets_by_completion_second() {
        let r = sample_report();
        let t = &r.results.timeline;
        // Timeouts completed 10 s late: the timeline reaches second 11.
        assert!(t.len() >= 12, "{}", t.len());
        assert_eq!(t[0].accepted_messages, 100);
        assert_eq!(t[1].accepted_messages, 70);
        assert_eq!(t[1].throttled, 20);
        assert_eq!(t[1].errors, 5);
        assert!(t.iter().skip(2).any(|s| s.errors == 5));
    }

    #[test]
    fn figures_from_several_processes_add_up_exactly() {
        let start = Instant::now();
        let s = Schedule::new(
            start,
            100.0,
            Duration::ZERO,
            Duration::from_secs(2),
            WarmUp::FullRate,
        );
        let mut whole = Recorder::new(s.clone(), 1, false);
        let mut halves = [
            Recorder::new(s.clone(), 1, false),
            Recorder::new(s.clone(), 1, false),
        ];
        for seq in 0..200 {
            let outcome = if seq % 7 == 0 {
                answered(THROTTLED, true)
            } else {
                answered(ACCEPTED, false)
            };
            let ms = 1 + seq % 50;
            whole.record(done(&s, seq, ms, outcome));
            halves[(seq % 2) as usize].record(done(&s, seq, ms, outcome));
        }
        let one = summarize(&[whole.finish().0], 2.0);
        let [a, b] = halves;
        let mut two = summarize(&[a.finish().0, b.finish().0], 2.0);
        // Each half was handed the whole schedule here, so the scheduled
        // count doubles; everything measured must match exactly.
        assert_eq!(two.measured_requests, 2 * one.measured_requests);
        two.measured_requests = one.measured_requests;
        assert_eq!(one, two);
    }

    #[test]
    fn json_and_markdown_carry_the_figures() {
        let r = sample_report();
        let json = r.to_json().expect("json");
        let back: LoadReport = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json value");
        assert_eq!(v["results"]["status_counts"]["429"], 20);
        assert_eq!(v["results"]["latency_ms"]["count"], 170);
        let md = r.to_markdown();
        assert!(md.contains("| HTTP 202 | 170 |"), "{md}");
        assert!(md.contains("| HTTP 429 | 20 |"));
        assert!(md.contains("| no answer: timeout | 5 |"));
        assert!(md.contains("85 msg/s"));
        assert!(md.contains("| request → 202 | 170 | 3.00 |"), "{md}");
        assert!(md.contains("latency.png"));
    }
}
