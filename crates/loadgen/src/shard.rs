//! Several generator processes for one run, when one process cannot hold the
//! whole connection fleet.
//!
//! Every socket is a file descriptor, and the hard `RLIMIT_NOFILE` may be
//! below the fleet size without a way to raise it (no `CAP_SYS_RESOURCE`, as
//! in containers; this development machine's hard limit is 20,000). The parent
//! then re-runs its own command line N times with a hidden `--shard i/N`:
//! each child opens its share of the connections (global connection numbers,
//! so bots and source addresses are the same as in one process), reports
//! `ready`, waits for a common `go` start time so all schedules share one
//! origin (interleaved, not in lock-step), runs, and writes its raw figures
//! (histograms as value/count pairs, which merge without loss) to a file the
//! parent reads back. The parent alone writes the report.
//!
//! The protocol is lines on the child's stdin/stdout; anything else a child
//! prints is ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;
use uuid::Uuid;

use super::report::{ConnectionStats, DispatchStats, FdLimit, RawResults};
use super::LoadgenError;

/// Line a child prints once its connections are open: `ready <connected>`.
const READY: &str = "loadgen-shard ready";
/// Line a child prints once its figures are written.
const DONE: &str = "loadgen-shard done";
/// Line the parent sends with the common start: `go <unix micros>`.
const GO: &str = "go";
/// Lead time between `go` and the first intended send, so every child has
/// read it before the schedule begins.
const GO_LEAD: Duration = Duration::from_millis(300);
/// Slack on top of the expected phase durations before a child is given up.
const SLACK: Duration = Duration::from_secs(60);

/// Which share of the run this process is: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    /// This process's share, from 0.
    pub index: u32,
    /// Processes sharing the run.
    pub count: u32,
}

impl ShardSpec {
    /// The whole run in one process.
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// This share of `total` connections: (first global number, how many).
    pub fn split(self, total: u32) -> (u32, u32) {
        let at = |i: u32| (u64::from(total) * u64::from(i) / u64::from(self.count.max(1))) as u32;
        let first = at(self.index);
        (first, at(self.index + 1) - first)
    }
}

impl FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected INDEX/COUNT"))?;
        let index: u32 = i.parse().map_err(|_| format!("{s:?}: bad index"))?;
        let count: u32 = n.parse().map_err(|_| format!("{s:?}: bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("{s:?}: index must be below count"));
        }
        Ok(ShardSpec { index, count })
    }
}

/// One process's figures, as written for the parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardData {
    pub raw: RawResults,
    pub connections: ConnectionStats,
    pub dispatch: DispatchStats,
    pub fd_limit: FdLimit,
    /// Wall-clock origin of the schedule (None: it never ran).
    pub wall_start: Option<DateTime<Utc>>,
    /// Accepted message ids, for the end-to-end lookup.
    pub ids: Vec<Uuid>,
}

/// The child's side of the start: announce the open connections, wait for
/// the common start time. `None` when there is nothing to run.
pub async fn child_gate(connected: u32) -> Result<Option<(Instant, DateTime<Utc>)>, LoadgenError> {
    let io_err = |e: std::io::Error| LoadgenError::Shard(format!("talking to the parent: {e}"));
    let mut out = tokio::io::stdout();
    out.write_all(format!("{READY} {connected}\n").as_bytes())
        .await
        .map_err(io_err)?;
    out.flush().await.map_err(io_err)?;
    if connected == 0 {
        return Ok(None);
    }
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .map_err(io_err)?;
    let micros: i64 = line
        .strip_prefix(GO)
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| LoadgenError::Shard(format!("expected `{GO} <micros>`, got {line:?}")))?;
    let wall = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| LoadgenError::Shard(format!("bad start time {micros}")))?;
    let ahead = (wall - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Ok(Some((Instant::now() + ahead, wall)))
}

/// The child's last word: its figures to `path`, then `done`.
pub async fn child_finish(path: &Path, data: &ShardData) -> Result<(), LoadgenError> {
    let json = serde_json::to_vec(data)
        .map_err(|e| LoadgenError::Shard(format!("encoding figures: {e}")))?;
    tokio::fs::write(path, json)
        .await
        .map_err(|source| LoadgenError::Output {
            path: path.to_owned(),
            source,
        })?;
    let mut out = tokio::io::stdout();
    let _ = out.write_all(format!("{DONE}\n").as_bytes()).await;
    let _ = out.flush().await;
    Ok(())
}

/// A running child and its pipes.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    file: PathBuf,
}

/// Runs `count` children and returns their figures, in shard order.
///
/// `expected_ramp` and `expected_run` bound how long each phase may take
/// (plus a minute of slack); a child that overstays is killed and the run
/// fails rather than hangs.
pub async fn run_parent(
    count: u32,
    dir: &Path,
    expected_ramp: Duration,
    expected_run: Duration,
) -> Result<(Vec<ShardData>, DateTime<Utc>), LoadgenError> {
    let program = std::env::current_exe()
        .map_err(|e| LoadgenError::Shard(format!("finding our own executable: {e}")))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut children = Vec::with_capacity(count as usize);
    for index in 0..count {
        let file = dir.join(format!(".shard-{index}-of-{count}.json"));
        let mut child = Command::new(&program)
            .args(&args)
            .arg("--shard")
            .arg(format!("{index}/{count}"))
            .arg("--shard-file")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadgenError::Shard(format!("starting generator process {index}: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadgenError::Shard("child without stdout".into()))?;
        children.push(Running {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            file,
        });
    }
    tracing::info!(processes = count, "generator processes started");

    let ramp_deadline = Instant::now() + expected_ramp + SLACK;
    let mut connected = Vec::with_capacity(children.len());
    for (i, c) in children.iter_mut().enumerate() {
        let line = await_line(&mut c.lines, READY, ramp_deadline, i).await?;
        connected.push(line.trim().parse::<u32>().unwrap_or(0));
    }
    let start = Utc::now() + chrono::Duration::from_std(GO_LEAD).unwrap_or_default();
    let go = format!("{GO} {}\n", start.timestamp_micros());
    for (c, n) in children.iter_mut().zip(&connected) {
        if let (Some(stdin), true) = (c.stdin.as_mut(), *n > 0) {
            // A child that failed to connect has already finished; a write
            // error to it is expected and harmless.
            let _ = stdin.write_all(go.as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    let run_deadline = Instant::now() + GO_LEAD + expected_run + SLACK;
    let mut parts = Vec::with_capacity(children.len());
    for (i, c) in children.iter_mut().enumerate() {
        await_line(&mut c.lines, DONE, run_deadline, i).await?;
        // Keep reading to the end so the child never writes into a closed pipe.
        while let Ok(Ok(Some(_))) = tokio::time::timeout_at(run_deadline, c.lines.next_line()).await
        {
        }
        c.stdin.take();
        let _ = tokio::time::timeout_at(run_deadline, c.child.wait()).await;
        let bytes = tokio::fs::read(&c.file)
            .await
            .map_err(|source| LoadgenError::Output {
                path: c.file.clone(),
                source,
            })?;
        let data: ShardData = serde_json::from_slice(&bytes)
            .map_err(|e| LoadgenError::Shard(format!("reading {}: {e}", c.file.display())))?;
        let _ = tokio::fs::remove_file(&c.file).await;
        parts.push(data);
    }
    Ok((parts, start))
}

/// Reads child `i`'s lines until one starts with `prefix`; returns the rest.
async fn await_line(
    lines: &mut tokio::io::Lines<BufReader<ChildStdout>>,
    prefix: &str,
    deadline: Instant,
    i: usize,
) -> Result<String, LoadgenError> {
    loop {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => {
                return Err(LoadgenError::Shard(format!(
                    "generator process {i} did not say `{prefix}` in time"
                )))
            }
            Ok(Err(e)) => {
                return Err(LoadgenError::Shard(format!(
                    "reading generator process {i}: {e}"
                )))
            }
            Ok(Ok(None)) => {
                return Err(LoadgenError::Shard(format!(
                    "generator process {i} exited before `{prefix}`"
                )))
            }
            Ok(Ok(Some(line))) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.to_owned());
                }
            }
        }
    }
}

/// Adds up the processes' connection and dispatch figures.
pub fn merge_stats(parts: &[ShardData]) -> (ConnectionStats, DispatchStats) {
    let mut c = ConnectionStats::default();
    let mut d = DispatchStats::default();
    for p in parts {
        let pc = &p.connections;
        c.requested += pc.requested;
        c.connected += pc.connected;
        for (k, v) in &pc.failed {
            *c.failed.entry(k.clone()).or_insert(0) += v;
        }
        c.ramp_s = c.ramp_s.max(pc.ramp_s);
        c.reconnects += pc.reconnects;
        c.open_at_end += pc.open_at_end;
        let pd = &p.dispatch;
        d.scheduled += pd.scheduled;
        d.dispatched += pd.dispatched;
        d.unfinished += pd.unfinished;
        d.elapsed_s = d.elapsed_s.max(pd.elapsed_s);
    }
    (c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_reject_nonsense() {
        assert_eq!("1/3".parse(), Ok(ShardSpec { index: 1, count: 3 }));
        assert!("3/3".parse::<ShardSpec>().is_err());
        assert!("0/0".parse::<ShardSpec>().is_err());
        assert!("x".parse::<ShardSpec>().is_err());
    }

    #[test]
    fn shares_cover_every_connection_once() {
        let total = 50_000;
        let mut next = 0;
        for index in 0..3 {
            let (first, n) = ShardSpec { index, count: 3 }.split(total);
            assert_eq!(first, next);
            next = first + n;
        }
        assert_eq!(next, total);
        assert_eq!(ShardSpec::WHOLE.split(7), (0, 7));
    }

    #[test]
    fn stats_add_up() {
        let mut a = ShardData::default();
        a.connections.connected = 10;
        a.connections.ramp_s = 2.0;
        a.connections.failed.insert("refused".into(), 1);
        a.dispatch.unfinished = 1;
        let mut b = a.clone();
        b.connections.ramp_s = 3.0;
        let (c, d) = merge_stats(&[a, b]);
        assert_eq!(c.connected, 20);
        assert_eq!(c.ramp_s, 3.0);
        assert_eq!(c.failed.get("refused"), Some(&2));
        assert_eq!(d.unfinished, 2);
    }
}
