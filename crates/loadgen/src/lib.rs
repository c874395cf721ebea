//! `chat-analytics loadgen`: the load generator and its report.
//!
//! The targets (10,000 msg/s, P99 under 50 ms to the 202, 50,000 concurrent
//! bots) are claims about latency under a fixed offered load, so the
//! generator is **open loop**: every request has an intended send time fixed
//! in advance at a constant rate, and latency is measured from that time. A
//! server stall therefore shows up in every request it delays, including the
//! ones still waiting for a free connection, instead of hiding behind a
//! client that politely slowed down (coordinated omission).
//!
//! Each of the C keep-alive connections stands for one chatbot with its own
//! `bot_id` and at most one request in flight, as a real bot would hold them;
//! 50,000 of them fit in one process (file-descriptor limit raised, opened
//! gradually, spread over several 127.0.0.x source addresses when one
//! address's ephemeral ports would run out).
//!
//! It only targets loopback addresses: it is meant for benchmarking the
//! service on the machine it runs on.
//!
//! # Public surface
//!
//! The binary needs [`LoadgenArgs`] (flattened into its CLI), [`run`], and
//! the [`LoadReport`] it returns, whose parts are re-exported here because
//! they are the schema of `report.json`. The benches use
//! [`payload::chat_text`]. Everything else is internal to the crate.
//!
//! # Layout
//!
//! - `schedule`: intended send times (pure arithmetic).
//! - [`payload`] (public): the JSON bodies: realistic chat lines, ids,
//!   `sent_at`.
//! - `client`: one connection: raw HTTP/1.1, its task loop.
//! - `driver`: opens the fleet, dispatches due requests to idle
//!   connections, feeds completions to the recorder.
//! - `report`: the report as JSON and Markdown; its `recording` module the
//!   HdrHistogram recorder and per-second timeline, and adding processes up.
//! - `plot`: the PNG of throughput and latency over time.
//! - `resend`: when a request goes out again with the same message ids
//!   (retries after 429, 5xx or no answer; deliberate re-sends).
//! - `ledger`: every attempt of every message, one CSV line each, for
//!   accounting id by id (`make chaos`).
//! - `e2e`: sent → stored latency read back from Postgres.
//! - `shard`: several generator processes for one run, when the
//!   file-descriptor limit keeps one process from holding every connection.
//! - `tests` (test builds only): whole runs against small local HTTP
//!   servers, and the driver against simulated connections on a paused
//!   clock.
//!
//! Flow: [`run`] validates the flags, resolves the target, raises the fd
//! limit, runs the `driver` (which uses `schedule`, `client`, `payload`,
//! `report`, `resend`, `ledger`) in this process or, through `shard`, in
//! several, adds up their figures, optionally asks `e2e`, then writes
//! `report.json`, `report.md` and `latency.png` into `--out`.

#![warn(missing_docs)]

mod client;
mod driver;
mod e2e;
mod ledger;
pub mod payload;
mod plot;
mod report;
mod resend;
mod schedule;
mod shard;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::time::Instant;

pub use client::TargetError;
pub use e2e::{E2eError, E2eReport};
pub use plot::PlotError;
pub use report::{
    ConnectionStats, DispatchStats, FdLimit, FollowUpCounts, HostInfo, LoadReport, Percentiles,
    Results, RunConfig, SecondStats,
};
pub use shard::ShardSpec;

use client::{ConnContext, Target};
use driver::{DriveSettings, Fleet, FollowUp};
use ledger::Ledger;
use payload::BotPlan;
use resend::ResendPolicy;
use schedule::{Schedule, WarmUp};
use shard::ShardData;

/// Largest batch the API accepts on `/v1/messages/batch`.
const MAX_BATCH: u32 = 500;
/// Connections per source address before spreading over more: one address
/// has about 28,000 ephemeral ports towards one server port, and the rest of
/// the machine needs some too.
const CONNECTIONS_PER_SOURCE: u32 = 20_000;
/// File descriptors beyond one per connection (stdio, Postgres, output
/// files, the runtime).
const FD_MARGIN: u64 = 1_024;
/// Deadline of one connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of the `chat-analytics loadgen` subcommand.
///
/// Flatten into the binary's CLI with `Loadgen(loadgen::LoadgenArgs)` and hand
/// the value to [`run`].
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the ingest API (plain http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Offered load in messages per second (open loop: sent on schedule
    /// whatever the answers).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Keep-alive connections, each one bot with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,

    /// Distinct bot ids (default: one per connection).
    #[arg(long)]
    pub bots: Option<u32>,

    /// Measured duration, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,

    /// Warm-up before the measured part, seconds: sent at the same rate, not
    /// recorded (lets caches, JITs of the stack, and connection pools settle).
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,

    /// Raise the rate linearly from zero over the first half of the warm-up,
    /// then hold it, instead of starting at full rate (k6's ramping arrival
    /// rate): the measured part starts on a stack that has run at the rate for
    /// a while, not one absorbing a step from idle.
    #[arg(long)]
    pub warmup_ramp: bool,

    /// 0: one message per request to /v1/messages; N: N messages per request
    /// to /v1/messages/batch (at most 500).
    #[arg(long, default_value_t = 0)]
    pub batch: u32,

    /// Directory for report.json, report.md and latency.png
    /// [default: bench/results/<UTC timestamp>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Spread connections over this many source addresses 127.0.0.1,
    /// 127.0.0.2, ... (0: automatic, one per 20,000 connections).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub source_ips: u32,

    /// Postgres URL to read end-to-end latency (sent_at → processed_at) of
    /// the accepted messages back from; skipped when absent.
    #[arg(
        long,
        env = "CHAT_ANALYTICS_LOADGEN_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres_url: Option<String>,

    /// How long to wait after the load for the worker to store the last
    /// messages before reading end-to-end latency, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub e2e_wait: f64,

    /// New connections per second while opening the fleet, so the server's
    /// accept queue is not flooded.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,

    /// Per-request deadline, seconds; a request without a full answer by then
    /// counts as a timeout and its connection is re-opened.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,

    /// Send a request again, with the same message ids, after a 429, a 5xx
    /// or no answer, up to this many times (after its Retry-After, capped at
    /// 10 s; 1 s when there is none).
    #[arg(long, default_value_t = 0)]
    pub retries: u32,

    /// Share of requests (0 to 1) sent a second time on purpose, with the
    /// same message ids, whatever their answer: a client that lost the answer.
    #[arg(long, default_value_t = 0.0)]
    pub resend: f64,

    /// A deliberate re-send leaves up to this many seconds after the answer
    /// it follows (spread evenly).
    #[arg(long, default_value_t = 3.0)]
    pub resend_within: f64,

    /// Share of messages (0 to 1) sent without `sent_at` (the API then uses
    /// the time it received them).
    #[arg(long, default_value_t = 0.0)]
    pub without_sent_at: f64,

    /// Write every attempt of every message to this CSV file (at_ms,
    /// message_id, attempt, cause, outcome, retry_after, sent_at), for
    /// accounting id by id. Needs a single generator process.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,

    /// API key sent as `Authorization: Bearer` when the API requires one.
    #[arg(long, env = "CHAT_ANALYTICS_LOADGEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Generator processes sharing the connections (0: as many as the
    /// file-descriptor limit requires, usually 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub processes: u32,

    /// Internal: this process is share INDEX/COUNT of a multi-process run.
    #[arg(long, hide = true, requires = "shard_file")]
    pub shard: Option<ShardSpec>,

    /// Internal: where a share writes its figures for the parent.
    #[arg(long, hide = true, requires = "shard")]
    pub shard_file: Option<PathBuf>,
}

/// Why a run could not be made or reported.
#[derive(Debug, Error)]
pub enum LoadgenError {
    /// A flag is out of range, or two flags contradict each other; the text
    /// names the flag.
    #[error("loadgen: {0}")]
    InvalidArgs(String),
    /// `--url` is not a usable loopback `http://` URL.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Not a single connection of the fleet could be opened.
    #[error("loadgen: could not open a single connection to {addr} (failures: {failures})")]
    NoConnections {
        /// The resolved target.
        addr: SocketAddr,
        /// Failed connects by reason, as text.
        failures: String,
    },
    /// The output directory, a report file or the ledger could not be
    /// written.
    #[error("loadgen: writing the report to {path}: {source}")]
    Output {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The latency chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// A child process of a multi-process run failed, or broke the protocol
    /// with its parent.
    #[error("loadgen: multi-process run: {0}")]
    Shard(String),
}

/// Validated numbers derived from the flags.
#[derive(Debug, Clone)]
struct Plan {
    bots: u32,
    warmup: Duration,
    warm_up: WarmUp,
    duration: Duration,
    timeout: Duration,
    e2e_wait: Duration,
    messages_per_request: u64,
    request_rate: f64,
    resends: ResendPolicy,
}

impl Plan {
    fn from_args(args: &LoadgenArgs) -> Result<Plan, LoadgenError> {
        let bad = |m: String| Err(LoadgenError::InvalidArgs(m));
        if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000_000.0) {
            return bad(format!(
                "--rate {} must be above 0 and at most 10,000,000",
                args.rate
            ));
        }
        if args.connections == 0 {
            return bad("--connections must be at least 1".into());
        }
        let bots = args.bots.unwrap_or(args.connections);
        if bots == 0 {
            return bad("--bots must be at least 1".into());
        }
        if args.batch > MAX_BATCH {
            return bad(format!(
                "--batch {} is above the API's {MAX_BATCH}",
                args.batch
            ));
        }
        if args.connect_rate == 0 {
            return bad("--connect-rate must be at least 1".into());
        }
        let secs = |name: &str, v: f64, min_exclusive: bool| {
            let ok =
                v.is_finite() && v <= 86_400.0 && if min_exclusive { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(LoadgenError::InvalidArgs(format!(
                    "--{name} {v} must be {} 0 and at most a day",
                    if min_exclusive { "above" } else { "at least" }
                )))
            }
        };
        let messages_per_request = u64::from(args.batch.max(1));
        for (name, ratio) in [
            ("resend", args.resend),
            ("without-sent-at", args.without_sent_at),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return bad(format!("--{name} {ratio} must be from 0 to 1"));
            }
        }
        Ok(Plan {
            bots,
            warmup: secs("warmup", args.warmup, false)?,
            warm_up: if args.warmup_ramp {
                WarmUp::Ramp
            } else {
                WarmUp::FullRate
            },
            duration: secs("duration", args.duration, true)?,
            timeout: secs("timeout", args.timeout, true)?,
            e2e_wait: secs("e2e-wait", args.e2e_wait, false)?,
            messages_per_request,
            request_rate: args.rate / messages_per_request as f64,
            resends: ResendPolicy {
                retries: args.retries,
                resend_ratio: args.resend,
                resend_within: secs("resend-within", args.resend_within, false)?,
            },
        })
    }
}

/// Runs one load test as the flags say and writes its report.
///
/// Bounded in time: the connection ramp (connections / connect-rate, plus
/// the connect timeout), warm-up, duration, the drain (request timeout plus a
/// second) and, with `--postgres-url`, at most `--e2e-wait` more.
pub async fn run(args: LoadgenArgs) -> Result<LoadReport, LoadgenError> {
    let plan = Plan::from_args(&args)?;
    if let Some(spec) = args.shard {
        return run_child(&args, &plan, spec).await;
    }
    let target = Target::resolve(&args.url, args.api_key.as_deref()).await?;
    let sources = source_addresses(target.addr, args.source_ips, args.connections)?;
    let fd_limit = raise_fd_limit(u64::from(args.connections) + FD_MARGIN);
    let processes = process_count(args.processes, args.connections, &fd_limit);
    if processes > 1 && args.ledger.is_some() {
        return Err(LoadgenError::InvalidArgs(format!(
            "--ledger needs one generator process, and {} connections take {processes} \
             here (open-file limit {})",
            args.connections, fd_limit.soft
        )));
    }
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|source| LoadgenError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let started_at = Utc::now();
    let addr = target.addr;
    tracing::info!(
        url = %args.url, rate = args.rate, connections = args.connections,
        processes, duration_s = args.duration, "load run starting"
    );

    let (mut parts, wall_start) = if processes > 1 {
        drop(target);
        let ramp = Duration::from_secs_f64(
            f64::from(args.connections) / f64::from(args.connect_rate.max(1)),
        ) + CONNECT_TIMEOUT;
        let run = plan.warmup + plan.duration + plan.timeout + Duration::from_secs(5);
        shard::run_parent(processes, &out_dir, ramp, run).await?
    } else {
        let data = run_share(
            &args,
            &plan,
            target,
            sources.clone(),
            ShardSpec::WHOLE,
            |n| async move {
                Ok((n > 0).then(|| {
                    (
                        Instant::now() + START_DELAY,
                        Utc::now() + chrono::Duration::from_std(START_DELAY).unwrap_or_default(),
                    )
                }))
            },
        )
        .await?;
        let wall = data.wall_start.unwrap_or(started_at);
        (vec![data], wall)
    };

    let (connections, dispatch) = shard::merge_stats(&parts);
    if connections.connected == 0 {
        return Err(LoadgenError::NoConnections {
            addr,
            failures: format!("{:?}", connections.failed),
        });
    }
    // Nothing reads `p.raw` after this: move the figures rather than copy.
    let raws: Vec<_> = parts
        .iter_mut()
        .map(|p| std::mem::take(&mut p.raw))
        .collect();
    let results = report::summarize(&raws, args.duration);
    let (e2e, e2e_error) = match &args.postgres_url {
        Some(url) => {
            let mut ids: Vec<uuid::Uuid> =
                parts.iter().flat_map(|p| p.ids.iter().copied()).collect();
            // v7 ids sort by creation time: the lookup's "most recent"
            // probe then sees the last messages of every process.
            ids.sort_unstable();
            let margin = chrono::Duration::seconds(2);
            let at = |d: Duration| wall_start + chrono::Duration::from_std(d).unwrap_or_default();
            let window = e2e::SentWindow {
                from: at(plan.warmup) - margin,
                to: at(plan.warmup + plan.duration) + margin,
            };
            match e2e::measure(url, &ids, window, plan.e2e_wait).await {
                Ok(r) => (Some(r), None),
                Err(err) => {
                    tracing::warn!(%err, "end-to-end lookup failed");
                    (None, Some(err.to_string()))
                }
            }
        }
        None => (None, None),
    };

    let report = LoadReport {
        started_at,
        host: HostInfo::detect(),
        config: RunConfig {
            url: args.url.clone(),
            rate: args.rate,
            connections: args.connections,
            bots: plan.bots,
            duration_s: args.duration,
            warmup_s: args.warmup,
            warmup_ramp: args.warmup_ramp,
            batch: args.batch,
            source_ips: sources.len() as u32,
            connect_rate: args.connect_rate,
            timeout_s: args.timeout,
            processes,
            postgres: args.postgres_url.is_some(),
            retries: args.retries,
            resend: args.resend,
            without_sent_at: args.without_sent_at,
            ledger: args.ledger.clone(),
        },
        fd_limit,
        connections,
        dispatch,
        results,
        e2e,
        e2e_error,
        out_dir: out_dir.clone(),
    };
    report
        .write_files(&out_dir)
        .map_err(|source| LoadgenError::Output {
            path: out_dir.clone(),
            source,
        })?;
    plot::write_png(&report, &out_dir.join("latency.png"))?;
    tracing::info!(out = %out_dir.display(), "load run finished");
    Ok(report)
}

/// Pause between the end of the ramp and the first intended send.
const START_DELAY: Duration = Duration::from_millis(20);

/// One process's share of the run: open its connections, wait at `gate`
/// for the start (`None`: don't run), send its part of the schedule.
async fn run_share<G, F>(
    args: &LoadgenArgs,
    plan: &Plan,
    target: Target,
    sources: Vec<IpAddr>,
    spec: ShardSpec,
    gate: G,
) -> Result<ShardData, LoadgenError>
where
    G: FnOnce(u32) -> F,
    F: std::future::Future<Output = Result<Option<(Instant, DateTime<Utc>)>, LoadgenError>>,
{
    let (first_conn, connections) = spec.split(args.connections);
    let ctx = Arc::new(ConnContext {
        target,
        first_conn,
        bots: BotPlan::new(plan.bots, args.connections),
        batch: args.batch,
        timeout: plan.timeout,
        connect_timeout: CONNECT_TIMEOUT,
        collect_ids: args.postgres_url.is_some(),
        keep_requests: plan.resends.is_active() || args.ledger.is_some(),
        without_sent_at: args.without_sent_at,
    });
    let ledger = match &args.ledger {
        Some(path) => Some(Ledger::create(path).map_err(|source| LoadgenError::Output {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let settings = DriveSettings {
        connections,
        connect_rate: (args.connect_rate / spec.count).max(1),
        sources,
        messages_per_request: plan.messages_per_request,
    };
    let fleet = match Fleet::open(&settings, ctx).await {
        Ok(fleet) => fleet,
        Err(stats) => {
            gate(0).await?;
            return Ok(ShardData {
                connections: stats,
                ..ShardData::default()
            });
        }
    };
    let Some(clock) = gate(fleet.connected()).await? else {
        return Ok(ShardData {
            connections: fleet.stats().clone(),
            ..ShardData::default()
        });
    };
    // Shares are interleaved: share i starts i requests' worth of time
    // later, so together they send evenly at the full rate.
    let count = f64::from(spec.count);
    let phase = Duration::from_secs_f64(f64::from(spec.index) / plan.request_rate);
    let schedule = Schedule::new(
        clock.0 + phase,
        plan.request_rate / count,
        plan.warmup,
        plan.duration,
        plan.warm_up,
    );
    let follow = FollowUp {
        policy: plan.resends,
        ledger,
    };
    let outcome = fleet.run(schedule, clock, follow).await;
    if let Some(ledger) = outcome.ledger {
        let path = ledger.path().to_owned();
        let lines = ledger
            .finish()
            .map_err(|source| LoadgenError::Output { path, source })?;
        tracing::info!(lines, "ledger written");
    }
    let (raw, ids) = outcome.recorder.finish();
    Ok(ShardData {
        raw,
        connections: outcome.connections,
        dispatch: outcome.dispatch,
        fd_limit: FdLimit::default(),
        wall_start: Some(clock.1),
        ids,
    })
}

/// A child of a multi-process run: its share, handed back through a file.
/// The returned report covers only this share (the parent writes the real
/// one).
async fn run_child(
    args: &LoadgenArgs,
    plan: &Plan,
    spec: ShardSpec,
) -> Result<LoadReport, LoadgenError> {
    let file = args
        .shard_file
        .clone()
        .ok_or_else(|| LoadgenError::InvalidArgs("--shard needs --shard-file".into()))?;
    let target = Target::resolve(&args.url, args.api_key.as_deref()).await?;
    let sources = source_addresses(target.addr, args.source_ips, args.connections)?;
    let (_, share) = spec.split(args.connections);
    let fd_limit = raise_fd_limit(u64::from(share) + FD_MARGIN);
    let mut data = run_share(args, plan, target, sources, spec, shard::child_gate).await?;
    data.fd_limit = fd_limit.clone();
    shard::child_finish(&file, &data).await?;
    let raws = [data.raw];
    Ok(LoadReport {
        started_at: data.wall_start.unwrap_or_else(Utc::now),
        connections: data.connections,
        dispatch: data.dispatch,
        fd_limit,
        results: report::summarize(&raws, args.duration),
        out_dir: file,
        ..LoadReport::default()
    })
}

/// How many processes the fleet needs: the given number, or as many as the
/// file-descriptor limit requires.
fn process_count(requested: u32, connections: u32, fd: &FdLimit) -> u32 {
    if requested > 0 {
        // A process without a single connection would only add noise.
        return requested.min(connections.max(1));
    }
    if fd.soft == 0 {
        // The limit is unknown: one process, and the report will show
        // connect failures if it was too low.
        return 1;
    }
    let per_process = fd.soft.saturating_sub(FD_MARGIN).max(1);
    u64::from(connections).div_ceil(per_process).clamp(1, 64) as u32
}

/// `bench/results/<UTC timestamp>`, relative to the working directory.
fn default_out_dir() -> PathBuf {
    PathBuf::from("bench/results").join(Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
}

/// Source addresses 127.0.0.1 .. 127.0.0.n for `requested` (0: automatic).
fn source_addresses(
    target: SocketAddr,
    requested: u32,
    connections: u32,
) -> Result<Vec<IpAddr>, LoadgenError> {
    let n = if requested == 0 {
        connections.div_ceil(CONNECTIONS_PER_SOURCE)
    } else {
        requested
    };
    if n <= 1 && requested == 0 {
        // One address: let the kernel pick, as any client would.
        return Ok(Vec::new());
    }
    if !target.is_ipv4() {
        return Err(LoadgenError::InvalidArgs(format!(
            "--source-ips needs an IPv4 loopback target, not {target}"
        )));
    }
    Ok((0..n.min(254))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, (1 + i) as u8)))
        .collect())
}

/// Raises the soft file-descriptor limit to the hard one, and the hard one to
/// `wanted` when allowed (root), so 50,000 sockets fit in one process.
// `rlim_t` is u64 on Linux but not on every Unix: keep the casts.
#[allow(clippy::unnecessary_cast)]
fn raise_fd_limit(wanted: u64) -> FdLimit {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes into the struct we pass, which lives
        // for the whole call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return FdLimit {
                wanted,
                ..FdLimit::default()
            };
        }
        let set = |cur: libc::rlim_t, max: libc::rlim_t| {
            let new = libc::rlimit {
                rlim_cur: cur,
                rlim_max: max,
            };
            // SAFETY: setrlimit only reads the struct we pass.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 }
        };
        let want = wanted as libc::rlim_t;
        let infinite = lim.rlim_max == libc::RLIM_INFINITY;
        if !infinite && lim.rlim_max < want && set(want, want) {
            lim.rlim_cur = want;
            lim.rlim_max = want;
        } else if lim.rlim_cur < lim.rlim_max && set(lim.rlim_max, lim.rlim_max) {
            lim.rlim_cur = lim.rlim_max;
        }
        FdLimit {
            soft: lim.rlim_cur as u64,
            hard: lim.rlim_max as u64,
            wanted,
        }
    }
    #[cfg(not(unix))]
    {
        FdLimit {
            wanted,
            ..FdLimit::default()
        }
    }
}
