//! A run's report, written out as JSON for machines and Markdown for people (the PNG is in
//! [`super::plot`]), from what [`Recorder`] measured.

mod recording;

pub(crate) use recording::micros_histogram;
pub use recording::{
    summarize, FollowUpCounts, Percentiles, RawResults, Recorder, Results, SecondStats,
};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::e2e::E2eReport;

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
mod tests;
