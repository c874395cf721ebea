//! Whole runs against tiny local hyper servers on 127.0.0.1:0, and the
//! driver against simulated connections on tokio's paused clock.
//!
//! Timing is only asserted on the paused clock, where it is exact: real
//! sockets wait on the machine, and a loaded machine must not fail a test.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::client::{Completion, ConnContext, Event, Job, Outcome, Response as Answer, Target};
use super::driver::{DriveSettings, Fleet, FollowUp};
use super::payload::BotPlan;
use super::report::{self, ConnectionStats, DispatchStats, Results};
use super::resend::ResendPolicy;
use super::schedule::{Schedule, WarmUp};
use super::{run, LoadgenArgs, LoadgenError};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn args(addr: SocketAddr, out: &Path, extra: &[&str]) -> LoadgenArgs {
    let url = format!("http://{addr}");
    let out = out.display().to_string();
    let mut argv = vec!["loadgen", "--url", &url, "--out", &out];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.args,
        Err(e) => panic!("flags: {e}"),
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What the fake API saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    bots: Mutex<HashSet<String>>,
}

/// Serves a fake ingest API: parses the body like the real one would, answers
/// 202, or 429 with Retry-After for every `throttle_every`th request.
async fn fake_api(throttle_every: u64) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(req, &state, throttle_every).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(req: Request<Incoming>, seen: &Seen, throttle_every: u64) -> Response<Full<Bytes>> {
    let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "{}"),
    };
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, "{}");
    };
    if let Some(bot) = msg["bot_id"].as_str() {
        if let Ok(mut bots) = seen.bots.lock() {
            bots.insert(bot.to_owned());
        }
    }
    if throttle_every > 0 && n.is_multiple_of(throttle_every) {
        let mut r = reply(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":{"code":"overloaded"}}"#,
        );
        r.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        return r;
    }
    let id = msg["message_id"].as_str().unwrap_or("");
    reply(
        StatusCode::ACCEPTED,
        &format!(r#"{{"message_id":"{id}","status":"accepted"}}"#),
    )
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

/// A whole run over real connections to a hyper server: every answer is
/// counted by status (429s with their Retry-After), every connection sends as
/// its own bot, and the three report files are written. Nothing here is a
/// rate or a latency: the timing of the schedule is checked on the paused
/// clock below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_counts_every_answer_and_writes_the_report() {
    let (addr, seen) = fake_api(10).await;
    let out = scratch_dir("whole");
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "500",
            "--connections",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let report = run(a).await.expect("run");
    let r = &report.results;
    assert_eq!(report.connections.connected, 20);
    assert_eq!(r.measured_requests, 500);
    assert_eq!(r.completed, 500);
    assert_eq!(report.dispatch.unfinished, 0);
    let accepted = r.status_counts.get("202").copied().unwrap_or(0);
    let throttled = r.status_counts.get("429").copied().unwrap_or(0);
    assert_eq!(accepted + throttled, 500, "{:?}", r.status_counts);
    assert!((45..=55).contains(&throttled), "429s: {throttled}");
    assert_eq!(r.retry_after_missing, 0);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(r.timeline.iter().any(|t| t.throttled > 0));
    assert_eq!(seen.bots.lock().map(|b| b.len()).unwrap_or(0), 20);

    let png = std::fs::metadata(out.join("latency.png")).expect("latency.png");
    assert!(png.len() > 1000, "png of {} bytes", png.len());
    let json = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    assert!(json.contains("\"429\": "));
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains(&format!("| HTTP 202 | {accepted} |")));
    let _ = std::fs::remove_dir_all(&out);
}

/// One request as a simulated connection picked it up.
#[derive(Debug, Clone, Copy)]
struct Pickup {
    conn: u32,
    seq: u64,
    at: Instant,
    sent_at: DateTime<Utc>,
}

/// A server behind simulated connections, for the paused clock: it answers
/// each request `service` after it arrives, with a 429 and Retry-After for
/// every `throttle_every`th arrival (0: never), and holds everything for
/// `STALL` from arrival number `stall_at` on.
struct SimServer {
    service: Duration,
    throttle_every: u64,
    stall_at: Option<u64>,
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    pickups: Vec<Pickup>,
    stall_until: Option<Instant>,
}

/// How long the simulated server's one stall lasts.
const STALL: Duration = Duration::from_millis(200);

impl SimServer {
    fn new(service: Duration, throttle_every: u64, stall_at: Option<u64>) -> Arc<SimServer> {
        Arc::new(SimServer {
            service,
            throttle_every,
            stall_at,
            state: Mutex::default(),
        })
    }

    /// `job` arrives on connection `conn`: noted, and answered when and with
    /// what status.
    fn arrive(&self, conn: u32, job: &Job) -> (Instant, u16) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pickups.push(Pickup {
            conn,
            seq: job.seq,
            at: now,
            sent_at: job.sent_at,
        });
        let n = state.pickups.len() as u64;
        if self.stall_at == Some(n) {
            state.stall_until = Some(now + STALL);
        }
        let from = state.stall_until.map_or(now, |until| until.max(now));
        let status = if self.throttle_every > 0 && n.is_multiple_of(self.throttle_every) {
            429
        } else {
            202
        };
        (from + self.service, status)
    }

    fn pickups(&self) -> Vec<Pickup> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pickups
            .clone()
    }
}

/// One simulated connection: the channels of `client::run_connection`, with
/// `server` in place of a socket.
async fn simulated_connection(
    server: Arc<SimServer>,
    conn: u32,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::UnboundedSender<Event>,
) {
    if events.send(Event::Connected { conn }).is_err() {
        return;
    }
    while let Some(job) = jobs.recv().await {
        let started = Instant::now();
        let (answer_at, status) = server.arrive(conn, &job);
        sleep_until(answer_at).await;
        let throttled = status == 429;
        let done = Completion {
            conn,
            seq: job.seq,
            started,
            completed: Instant::now(),
            outcome: Outcome::Answered(Answer {
                status,
                retry_after: throttled,
                retry_after_secs: throttled.then_some(1),
                keep_alive: true,
            }),
            ids: Vec::new(),
            open: true,
            reconnected: false,
        };
        if events.send(Event::Done(done)).is_err() {
            return;
        }
    }
}

/// A run over simulated connections.
struct SimRun {
    schedule: Schedule,
    /// The wall-clock time the schedule's start stands for.
    wall_start: DateTime<Utc>,
    connections: ConnectionStats,
    dispatch: DispatchStats,
    results: Results,
}

/// Sends `rate` requests per second for `duration` (no warm-up) over
/// `connections` simulated connections to `server`, through the real driver
/// and recorder.
async fn drive_simulated(
    server: &Arc<SimServer>,
    connections: u32,
    rate: f64,
    duration: Duration,
) -> SimRun {
    let target = Target::resolve("http://127.0.0.1:9", None)
        .await
        .expect("target");
    let ctx = Arc::new(ConnContext {
        target,
        first_conn: 0,
        bots: BotPlan::new(connections, connections),
        batch: 0,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        collect_ids: false,
        keep_requests: false,
        without_sent_at: 0.0,
    });
    let settings = DriveSettings {
        connections,
        connect_rate: 1000,
        sources: Vec::new(),
        messages_per_request: 1,
    };
    let sim = server.clone();
    let fleet = Fleet::open_with(&settings, ctx, move |conn, _source, _ctx, jobs, events| {
        simulated_connection(sim.clone(), conn, jobs, events)
    })
    .await
    .expect("simulated connections open");
    assert_eq!(fleet.connected(), connections);
    let start = Instant::now() + Duration::from_millis(20);
    let wall = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let schedule = Schedule::new(start, rate, Duration::ZERO, duration, WarmUp::FullRate);
    let follow = FollowUp {
        policy: ResendPolicy::NONE,
        ledger: None,
    };
    let outcome = fleet.run(schedule.clone(), (start, wall), follow).await;
    let (raw, _) = outcome.recorder.finish();
    SimRun {
        schedule,
        wall_start: wall,
        connections: outcome.connections,
        dispatch: outcome.dispatch,
        results: report::summarize(&[raw], duration.as_secs_f64()),
    }
}

/// 500 requests per second for two seconds over 20 connections, on the
/// paused clock, each answered 1 ms after it arrives and every tenth with a
/// 429: request k leaves exactly k × 2 ms after the start (not early, not in
/// a burst), carries that time as `sent_at`, the work rotates over all 20
/// connections, and every answer is counted in its second.
#[tokio::test(start_paused = true)]
async fn two_seconds_at_500_per_second_over_20_connections() {
    let server = SimServer::new(Duration::from_millis(1), 10, None);
    let run = drive_simulated(&server, 20, 500.0, Duration::from_secs(2)).await;

    let pickups = server.pickups();
    assert_eq!(pickups.len(), 1000);
    let mut per_connection = [0u32; 20];
    for (k, p) in pickups.iter().enumerate() {
        let offset = Duration::from_millis(2 * k as u64);
        assert_eq!(p.seq, k as u64, "sent in schedule order");
        assert_eq!(
            p.at.duration_since(run.schedule.start()),
            offset,
            "request {k} left on time"
        );
        let stamped = (p.sent_at - run.wall_start)
            .to_std()
            .expect("after the start");
        assert_eq!(stamped, offset, "request {k}'s sent_at");
        per_connection[p.conn as usize] += 1;
    }
    assert_eq!(per_connection, [50; 20], "every connection takes its turn");
    assert_eq!(run.connections.connected, 20);
    assert_eq!(run.dispatch.scheduled, 1000);
    assert_eq!(run.dispatch.dispatched, 1000);
    assert_eq!(run.dispatch.unfinished, 0);

    let r = &run.results;
    assert_eq!(r.measured_requests, 1000);
    assert_eq!(r.completed, 1000);
    assert_eq!(r.status_counts.get("202"), Some(&900));
    assert_eq!(r.status_counts.get("429"), Some(&100));
    assert_eq!(r.retry_after_missing, 0);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    // Nobody waited for a connection: each accepted request took exactly its
    // 1 ms of service, and all 900 were answered within the two seconds.
    assert_eq!((r.latency_ms.min, r.latency_ms.max), (1.0, 1.0));
    assert!(r.queue_wait_ms.max < 0.01, "{:?}", r.queue_wait_ms);
    assert_eq!(r.accepted_msgs_per_s, 450.0);
    let per_second: Vec<_> = r
        .timeline
        .iter()
        .map(|t| (t.completed, t.accepted_messages, t.throttled))
        .collect();
    assert_eq!(per_second, [(500, 450, 50), (500, 450, 50)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramped_warm_up_sends_fewer_unrecorded_requests_then_the_full_rate() {
    let (addr, _seen) = fake_api(0).await;
    let out = scratch_dir("ramp");
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "400",
            "--connections",
            "8",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--warmup-ramp",
        ],
    );
    let report = run(a).await.expect("run");
    let r = &report.results;
    // 0.5 s rising to 400/s sends 100, then 0.5 s at 400/s another 200.
    assert_eq!(r.warmup_completed, 300);
    assert_eq!(r.measured_requests, 400);
    assert_eq!(r.completed, 400);
    assert!(report.config.warmup_ramp);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("rising from 0 to the rate"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

/// One connection, on the paused clock, to a server that answers in 1 ms but
/// stalls 200 ms once, from the 50th request on. The requests scheduled
/// during the stall wait for the connection, and that wait is in their
/// latency, which is measured from their intended send time: about a quarter
/// of the requests are late, and the stall reaches P90 and P99. A client
/// measuring from the moment it actually sent (coordinated omission) would
/// see a single slow request in 200, below P99.
#[tokio::test(start_paused = true)]
async fn a_stall_shows_in_p99_through_queueing() {
    let ms = Duration::from_millis;
    let server = SimServer::new(ms(1), 0, Some(50));
    let run = drive_simulated(&server, 1, 200.0, Duration::from_secs(1)).await;
    let r = &run.results;
    assert_eq!(r.status_counts.get("202"), Some(&200));

    // Request 49 (intended at 245 ms) meets the stall: held until 445 ms,
    // answered at 446 ms. Requests 50 to 98, intended every 5 ms from 250 ms,
    // queue behind it and then go one per millisecond: request k is picked up
    // at 446 + (k - 50) ms, 396 - 4k ms late. Request 99 is on time again.
    let pickups = server.pickups();
    let picked = |k: usize| pickups[k].at.duration_since(run.schedule.start());
    assert_eq!(picked(49), ms(245));
    assert_eq!(picked(50), ms(446));
    assert_eq!(picked(98), ms(494));
    assert_eq!(picked(99), ms(495));

    // Latencies: 201 ms, then 197, 193, ... 5 ms (requests 50 to 98), and
    // 1 ms for the other 150. P99 is the 198th of 200, the third largest;
    // P90 the 180th. (HdrHistogram keeps three significant digits.)
    let near = |got: f64, want: f64| (got - want).abs() < 0.2;
    let l = &r.latency_ms;
    assert!(near(l.max, 201.0), "{l:?}");
    assert!(near(l.p99, 193.0), "{l:?}");
    assert!(near(l.p90, 121.0), "{l:?}");
    assert_eq!(l.p50, 1.0, "{l:?}");
    // The wait for the connection is most of it.
    let w = &r.queue_wait_ms;
    assert!(near(w.max, 196.0), "{w:?}");
    assert!(near(w.p99, 188.0), "{w:?}");
}

#[tokio::test]
async fn no_listener_means_no_connections_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = scratch_dir("refused");
    let a = args(addr, &out, &["--duration", "1", "--connections", "3"]);
    match run(a).await {
        Err(LoadgenError::NoConnections { failures, .. }) => {
            assert!(failures.contains("refused"), "{failures}")
        }
        other => panic!("expected NoConnections, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn flags_have_the_documented_defaults() {
    let cli = Cli::try_parse_from(["loadgen"]).expect("defaults");
    let a = cli.args;
    assert_eq!(a.url, "http://127.0.0.1:8080");
    assert_eq!(a.rate, 1000.0);
    assert_eq!(a.connections, 100);
    assert_eq!(a.bots, None);
    assert_eq!(a.duration, 30.0);
    assert_eq!(a.warmup, 5.0);
    assert!(!a.warmup_ramp);
    assert_eq!(a.batch, 0);
    assert_eq!(a.source_ips, 0);
    assert_eq!(a.processes, 0);
    assert_eq!(a.shard, None);
    assert_eq!(a.retries, 0);
    assert_eq!(a.resend, 0.0);
    assert_eq!(a.resend_within, 3.0);
    assert_eq!(a.without_sent_at, 0.0);
    assert_eq!(a.ledger, None);
    let too_much = Cli::try_parse_from(["loadgen", "--without-sent-at", "1.5"]).expect("flags");
    assert!(matches!(
        super::Plan::from_args(&too_much.args),
        Err(LoadgenError::InvalidArgs(_))
    ));
    assert!(Cli::try_parse_from(["loadgen", "--source-ips", "300"]).is_err());
    assert!(Cli::try_parse_from(["loadgen", "--shard", "0/2"]).is_err());
    let child = Cli::try_parse_from(["loadgen", "--shard", "1/2", "--shard-file", "/tmp/x"]);
    assert_eq!(
        child.ok().and_then(|c| c.args.shard),
        Some(super::ShardSpec { index: 1, count: 2 })
    );
}

#[test]
fn source_addresses_spread_big_fleets() {
    let target: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    assert!(super::source_addresses(target, 0, 10_000)
        .expect("ok")
        .is_empty());
    let auto = super::source_addresses(target, 0, 50_000).expect("ok");
    assert_eq!(auto.len(), 3);
    assert_eq!(auto[2].to_string(), "127.0.0.3");
    let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
    assert!(super::source_addresses(v6, 4, 10).is_err());
}

/// A server that silently closes every connection after one answer (no
/// `Connection: close`), as a keep-alive timeout would: the next request on
/// that connection finds it dead before any answer, is retried once on a
/// fresh connection, and succeeds. Nothing is lost or counted as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keep_alive_connections_are_reopened_and_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                // Read one whole request (head + Content-Length body).
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
                // Then close without saying so.
            });
        }
    });
    let out = scratch_dir("stale");
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "50",
            "--connections",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let report = run(a).await.expect("run");
    let r = &report.results;
    assert_eq!(r.status_counts.get("202"), Some(&50), "{r:?}");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        report.connections.reconnects >= 40,
        "{:?}",
        report.connections
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Every arrival of every message id: whether it carried `sent_at`.
type Arrivals = Arc<Mutex<std::collections::HashMap<String, Vec<bool>>>>;

/// A fake API that refuses, with 503 and `Retry-After: 0`, the first arrival
/// of every `refuse_every`th new message id, and accepts everything else.
async fn refusing_api(refuse_every: usize) -> (SocketAddr, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let arrivals: Arrivals = Arc::default();
    let state = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let msg: serde_json::Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or_default();
                        let id = msg["message_id"].as_str().unwrap_or("").to_owned();
                        let (first, nth) = {
                            let mut seen = state.lock().unwrap_or_else(|p| p.into_inner());
                            let nth = seen.len();
                            let copies = seen.entry(id).or_default();
                            copies.push(msg.get("sent_at").is_some());
                            (copies.len() == 1, nth)
                        };
                        let r = if first && nth % refuse_every == 0 {
                            let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, "{}");
                            r.headers_mut().insert(
                                "retry-after",
                                hyper::header::HeaderValue::from_static("0"),
                            );
                            r
                        } else {
                            reply(StatusCode::ACCEPTED, "{}")
                        };
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, arrivals)
}

/// Retries after a refusal and deliberate re-sends carry the same message
/// ids, a share of messages goes without `sent_at`, and the ledger holds
/// every attempt of every message exactly as the server saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_resends_reuse_message_ids_and_the_ledger_holds_every_attempt() {
    let (addr, arrivals) = refusing_api(4).await;
    let out = scratch_dir("ledger");
    let ledger = out.join("ledger.csv");
    let ledger_arg = ledger.display().to_string();
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "200",
            "--connections",
            "8",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--retries",
            "2",
            "--resend",
            "0.25",
            "--resend-within",
            "0.2",
            "--without-sent-at",
            "0.5",
            "--ledger",
            &ledger_arg,
        ],
    );
    std::fs::create_dir_all(&out).expect("out dir");
    let report = run(a).await.expect("run");
    let r = &report.results;
    assert_eq!(r.completed, 200);
    let refused = r.status_counts.get("503").copied().unwrap_or(0);
    assert_eq!(refused, 50, "{:?}", r.status_counts);
    assert_eq!(r.follow_ups["retry"].get("202"), Some(&refused));
    let resent = r.follow_ups["resend"].get("202").copied().unwrap_or(0);
    assert!((25..=75).contains(&resent), "{:?}", r.follow_ups);

    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(super::ledger::HEADER));
    let mut from_ledger: std::collections::HashMap<String, Vec<(String, String, bool)>> =
        std::collections::HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 7, "{line}");
        from_ledger.entry(f[1].to_owned()).or_default().push((
            f[3].to_owned(),
            f[4].to_owned(),
            f[6] == "1",
        ));
    }
    let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(from_ledger.len(), 200);
    assert_eq!(seen.len(), 200);
    let mut without_sent_at = 0;
    for (id, attempts) in &from_ledger {
        let copies = &seen[id];
        assert_eq!(copies.len(), attempts.len(), "{id}: {attempts:?}");
        assert!(
            attempts.iter().any(|(_, outcome, _)| outcome == "202"),
            "{id}: {attempts:?}"
        );
        assert!(
            attempts.iter().zip(copies).all(|((_, _, a), b)| a == b),
            "{id}: sent_at differs between attempts or from what the server saw"
        );
        if !copies[0] {
            without_sent_at += 1;
        }
    }
    assert!((70..=130).contains(&without_sent_at), "{without_sent_at}");
    let resends = from_ledger
        .values()
        .filter(|a| a.iter().any(|(cause, _, _)| cause == "resend"))
        .count() as u64;
    assert_eq!(resends, resent);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("| retry | 202 |"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}
