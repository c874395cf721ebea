//! Whole runs against tiny local hyper servers on 127.0.0.1:0.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

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
    /// Until when every request is held (a server-wide stall).
    stall_until: Mutex<Option<Instant>>,
}

/// Serves a fake ingest API: parses the body like the real one would, answers
/// 202, or 429 with Retry-After for every `throttle_every`th request, and
/// stalls everything for 200 ms when request number `stall_at` arrives.
async fn fake_api(throttle_every: u64, stall_at: Option<u64>) -> (SocketAddr, Arc<Seen>) {
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
                    async move {
                        Ok::<_, Infallible>(answer(req, &state, throttle_every, stall_at).await)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(
    req: Request<Incoming>,
    seen: &Seen,
    throttle_every: u64,
    stall_at: Option<u64>,
) -> Response<Full<Bytes>> {
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
    if stall_at == Some(n) {
        if let Ok(mut until) = seen.stall_until.lock() {
            *until = Some(Instant::now() + Duration::from_millis(200));
        }
    }
    let hold = seen.stall_until.lock().ok().and_then(|u| *u);
    if let Some(until) = hold {
        tokio::time::sleep_until(until).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seconds_at_500_per_second_over_20_connections() {
    let (addr, seen) = fake_api(10, None).await;
    let out = scratch_dir("steady");
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "500",
            "--connections",
            "20",
            "--duration",
            "2",
            "--warmup",
            "0",
        ],
    );
    let report = run(a).await.expect("run");
    let r = &report.results;
    assert_eq!(report.connections.connected, 20);
    assert_eq!(r.measured_requests, 1000);
    assert_eq!(r.completed, 1000);
    assert_eq!(report.dispatch.unfinished, 0);
    let accepted = r.status_counts.get("202").copied().unwrap_or(0);
    let throttled = r.status_counts.get("429").copied().unwrap_or(0);
    assert_eq!(accepted + throttled, 1000, "{:?}", r.status_counts);
    assert!((90..=110).contains(&throttled), "429s: {throttled}");
    assert_eq!(r.retry_after_missing, 0);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        (400.0..=500.0).contains(&r.accepted_msgs_per_s),
        "{}",
        r.accepted_msgs_per_s
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramped_warm_up_sends_fewer_unrecorded_requests_then_the_full_rate() {
    let (addr, _seen) = fake_api(0, None).await;
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

/// One connection, a server that stalls 200 ms once: the requests scheduled
/// during the stall wait for the connection, and that wait is in their
/// latency. A closed-loop client would have recorded one slow request; here
/// about 40 of 200 are late, so the stall reaches P90 and P99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_p99_through_queueing() {
    let (addr, _seen) = fake_api(0, Some(50)).await;
    let out = scratch_dir("stall");
    let a = args(
        addr,
        &out,
        &[
            "--rate",
            "200",
            "--connections",
            "1",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let report = run(a).await.expect("run");
    let r = &report.results;
    assert_eq!(r.status_counts.get("202"), Some(&200));
    assert!(r.latency_ms.p99 >= 150.0, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p90 >= 50.0, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p50 < 50.0, "{:?}", r.latency_ms);
    assert!(r.queue_wait_ms.p99 >= 100.0, "{:?}", r.queue_wait_ms);
    let _ = std::fs::remove_dir_all(&out);
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
