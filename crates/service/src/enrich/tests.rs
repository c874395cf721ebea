//! The whole policy through a real socket: a tiny HTTP/1.1 server on
//! 127.0.0.1:0 plays the NLP API (OK, error status, hang, bad bodies) and
//! the tests check what `Enricher::enrich` returns and what it counted.
//! These use real time (the HTTP client needs a real clock); each stays short.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::*;
use crate::config::{Http2Mode, NlpSettings, Settings};

/// How the fake NLP API answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// A valid answer; the request's text comes back as the only keyword.
    Ok,
    /// This status with a small text body.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// 200 with a body that is not JSON.
    NotJson,
    /// 200 with JSON outside the contract (score 3.0).
    OutOfContract,
}

#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    connections: AtomicUsize,
    last_body: Mutex<Option<Value>>,
}

struct FakeApi {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Seen>,
}

impl FakeApi {
    async fn start(mode: Mode) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(Seen::default());
        let (m, s) = (mode.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, m.clone(), s.clone()));
            }
        });
        FakeApi { addr, mode, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/analyze", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes.
async fn serve(mut stream: TcpStream, mode: Arc<Mutex<Mode>>, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let request: Option<Value> = serde_json::from_slice(&body).ok();
        *seen.last_body.lock().expect("seen") = request.clone();
        let mode = *mode.lock().expect("mode");
        let (status, payload) = match mode {
            Mode::Ok => {
                let text = request
                    .as_ref()
                    .and_then(|r| r["text"].as_str())
                    .unwrap_or("")
                    .to_owned();
                let answer = json!({
                    "sentiment": {"label": "positive", "score": 0.8},
                    "toxicity": 0.05,
                    "language": "en",
                    "keywords": [text],
                });
                (200, answer.to_string())
            }
            Mode::Status(code) => (code, "error".to_owned()),
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                return;
            }
            Mode::NotJson => (200, "<html>not json</html>".to_owned()),
            Mode::OutOfContract => (
                200,
                json!({
                    "sentiment": {"label": "positive", "score": 3.0},
                    "toxicity": 0.05, "language": "en", "keywords": []
                })
                .to_string(),
            ),
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request (headers + content-length body); `None` on EOF or junk.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[header_end..header_end + length].to_vec();
    buf.drain(..header_end + length);
    Some(body)
}

fn enricher(settings: NlpSettings) -> (Enricher, EnrichMetrics) {
    let metrics = EnrichMetrics::unregistered().expect("metrics");
    let enricher = Enricher::new(&settings, metrics.clone());
    (enricher, metrics)
}

/// The shipped `[nlp]` section: the spec's client policy.
fn defaults() -> NlpSettings {
    Settings::load_from(None, Vec::new())
        .expect("defaults load")
        .nlp
}

/// The fake speaks HTTP/1.1 only, so the client is told to (the default
/// "auto" is tested on its own below).
fn settings_for(api: &FakeApi) -> NlpSettings {
    NlpSettings {
        url: uri(&api.url()),
        http2: Http2Mode::Off,
        ..defaults()
    }
}

fn uri(url: &str) -> hyper::Uri {
    url.parse().expect("a test URL")
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("not zero")
}

fn errors(metrics: &EnrichMetrics, kind: &str) -> u64 {
    metrics.errors.with_label_values(&[kind]).get()
}

#[tokio::test]
async fn an_ok_answer_is_returned_with_every_field() {
    let api = FakeApi::start(Mode::Ok).await;
    let (enricher, metrics) = enricher(settings_for(&api));

    let result = enricher.enrich("great support, thanks").await;

    assert_eq!(result.status, NlpStatus::Ok);
    assert_eq!(result.attempts, 1);
    let analysis = result.analysis.expect("analysis");
    assert_eq!(analysis.sentiment_label, "positive");
    assert_eq!(analysis.sentiment_score, 0.8);
    assert_eq!(analysis.toxicity, 0.05);
    assert_eq!(analysis.language, "en");
    assert_eq!(analysis.keywords, ["great support, thanks"]);
    let raw: serde_json::Value =
        serde_json::from_str(analysis.raw.as_raw().get()).expect("the body, as JSON");
    assert_eq!(raw["sentiment"]["label"], "positive");
    let sent = api.seen.last_body.lock().expect("seen").clone();
    assert_eq!(
        sent,
        Some(json!({"text": "great support, thanks", "lang_hint": "en"}))
    );
    assert_eq!(metrics.duration.get_sample_count(), 1);
    assert_eq!(enricher.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn three_500s_fail_after_three_attempts_with_backoff() {
    let api = FakeApi::start(Mode::Status(500)).await;
    let (enricher, metrics) = enricher(settings_for(&api));

    let started = Instant::now();
    let result = enricher.enrich("hello").await;
    let elapsed = started.elapsed();

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(result.status.as_str(), "failed_after_retries");
    assert_eq!(result.analysis, None);
    assert_eq!(result.attempts, 3);
    assert_eq!(api.requests(), 3);
    assert_eq!(errors(&metrics, "status_5xx"), 3);
    assert_eq!(metrics.duration.get_sample_count(), 3);
    // Waits of 100..=150 ms and 200..=300 ms between the attempts.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2_000), "{elapsed:?}");
}

#[tokio::test]
async fn a_hanging_api_times_out_each_attempt_at_300_ms() {
    let api = FakeApi::start(Mode::Hang).await;
    let (enricher, metrics) = enricher(settings_for(&api));

    let started = Instant::now();
    let result = enricher.enrich("hello").await;
    let elapsed = started.elapsed();

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(result.attempts, 3);
    assert_eq!(errors(&metrics, "timeout"), 3);
    assert_eq!(metrics.duration.get_sample_count(), 3);
    let per_attempt = metrics.duration.get_sample_sum() / 3.0;
    assert!(
        (0.3..0.5).contains(&per_attempt),
        "mean attempt {per_attempt} s"
    );
    // 3 × 300 ms + 100..150 + 200..300 ms of backoff.
    assert!(elapsed >= Duration::from_millis(1_200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(3_000), "{elapsed:?}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_not_retried() {
    let api = FakeApi::start(Mode::NotJson).await;
    let (enricher, metrics) = enricher(settings_for(&api));

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::Rejected);
    assert_eq!(result.status.as_str(), "invalid_response");
    assert_eq!(result.attempts, 1);
    assert_eq!(api.requests(), 1);
    assert_eq!(errors(&metrics, "invalid"), 1);
}

#[tokio::test]
async fn an_answer_outside_the_contract_is_rejected() {
    let api = FakeApi::start(Mode::OutOfContract).await;
    let (enricher, _) = enricher(settings_for(&api));

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::Rejected);
    assert_eq!(result.attempts, 1);
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_does_not_open_the_breaker() {
    let api = FakeApi::start(Mode::Status(400)).await;
    let (enricher, metrics) = enricher(settings_for(&api));

    for _ in 0..25 {
        let result = enricher.enrich("hello").await;
        assert_eq!(result.status, NlpStatus::Rejected);
        assert_eq!(result.attempts, 1);
    }
    assert_eq!(api.requests(), 25);
    assert_eq!(errors(&metrics, "status_4xx"), 25);
    assert_eq!(enricher.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_429_is_retried() {
    let api = FakeApi::start(Mode::Status(429)).await;
    let (enricher, _) = enricher(NlpSettings {
        max_attempts: nonzero(2),
        ..settings_for(&api)
    });

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(result.attempts, 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_falls_back() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let (enricher, metrics) = enricher(NlpSettings {
        url: uri(&format!("http://{addr}/v1/analyze")),
        ..defaults()
    });

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(result.attempts, 3);
    assert_eq!(errors(&metrics, "connect"), 3);
}

#[tokio::test]
async fn connections_are_reused() {
    let api = FakeApi::start(Mode::Ok).await;
    let (enricher, _) = enricher(settings_for(&api));

    for _ in 0..20 {
        assert_eq!(enricher.enrich("hello").await.status, NlpStatus::Ok);
    }
    assert_eq!(api.requests(), 20);
    assert_eq!(api.seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn auto_falls_back_to_http1_when_the_api_answers_in_it() {
    let api = FakeApi::start(Mode::Ok).await;
    let settings = NlpSettings {
        http2: Http2Mode::Auto,
        ..settings_for(&api)
    };
    assert_eq!(defaults().http2, Http2Mode::Auto, "auto is the default");
    let (enricher, metrics) = enricher(settings);
    for i in 0..5 {
        let result = enricher.enrich(&format!("hello {i}")).await;
        assert_eq!(result.status, NlpStatus::Ok, "call {i}");
        let analysis = result.analysis.expect("analysis");
        assert_eq!(analysis.keywords, vec![format!("hello {i}")]);
    }
    // The HTTP/2 preface got an HTTP/1.1 answer once; that call went on over
    // HTTP/1.1 and was neither an error nor a retry.
    assert_eq!(errors(&metrics, "connect"), 0);
    assert_eq!(metrics.duration.get_sample_count(), 5);
    assert!(enricher.inner.client.fell_back_to_http1());
    assert_eq!(
        api.seen.connections.load(Ordering::SeqCst),
        2,
        "the probe and one keep-alive connection"
    );
}

/// One "auto" call to `url` with no retry: it fails as a connection error and leaves the
/// client on HTTP/2, because `why` says nothing of the protocol.
async fn assert_auto_stays_on_http2(url: &str, why: &str) {
    let (enricher, metrics) = enricher(NlpSettings {
        url: uri(url),
        http2: Http2Mode::Auto,
        max_attempts: nonzero(1),
        ..defaults()
    });
    let result = enricher.enrich("hello").await;
    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(errors(&metrics, "connect"), 1);
    assert!(!enricher.inner.client.fell_back_to_http1(), "{why}");
}

#[tokio::test]
async fn auto_does_not_fall_back_when_the_api_is_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/analyze", listener.local_addr().expect("addr"));
    drop(listener);
    assert_auto_stays_on_http2(&url, "a refused connection says nothing of the protocol").await;
}

#[tokio::test]
async fn auto_does_not_fall_back_when_the_api_closes_without_answering() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/analyze", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    assert_auto_stays_on_http2(&url, "a closed connection says nothing of the protocol").await;
}

#[tokio::test]
async fn concurrent_calls_share_one_enricher() {
    let api = FakeApi::start(Mode::Ok).await;
    // About sharing, not speed: 200 calls at once on a busy machine must not time out.
    let (enricher, _) = enricher(NlpSettings {
        attempt_timeout: Duration::from_secs(10),
        ..settings_for(&api)
    });

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let enricher = enricher.clone();
            tokio::spawn(async move { enricher.enrich(&format!("message {i}")).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("task");
        assert_eq!(result.status, NlpStatus::Ok);
        let analysis = result.analysis.expect("analysis");
        assert_eq!(analysis.keywords, [format!("message {i}")]);
    }
}

#[tokio::test]
async fn an_open_breaker_falls_back_without_calling() {
    let api = FakeApi::start(Mode::Status(503)).await;
    let (enricher, metrics) = enricher(NlpSettings {
        max_attempts: nonzero(1),
        breaker_min_calls: nonzero(5),
        ..settings_for(&api)
    });

    for _ in 0..5 {
        assert_eq!(enricher.enrich("hello").await.status, NlpStatus::Failed);
    }
    assert_eq!(enricher.breaker_state(), BreakerState::Open);
    assert_eq!(metrics.breaker_state.get(), 1);

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::BreakerOpen);
    assert_eq!(result.status.as_str(), "breaker_open");
    assert_eq!(result.attempts, 0);
    assert_eq!(api.requests(), 5, "the API was not called");
    assert_eq!(errors(&metrics, "breaker_open"), 1);
}

#[tokio::test]
async fn the_breaker_recovers_through_half_open_trials() {
    let api = FakeApi::start(Mode::Status(500)).await;
    let (enricher, metrics) = enricher(NlpSettings {
        max_attempts: nonzero(1),
        breaker_min_calls: nonzero(5),
        breaker_open: Duration::from_millis(200),
        breaker_half_open_ratio: 1.0,
        breaker_half_open_successes: nonzero(3),
        ..settings_for(&api)
    });
    for _ in 0..5 {
        enricher.enrich("hello").await;
    }
    assert_eq!(enricher.breaker_state(), BreakerState::Open);

    api.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(enricher.breaker_state(), BreakerState::HalfOpen);
    assert_eq!(metrics.breaker_state.get(), 2);
    for _ in 0..3 {
        assert_eq!(enricher.enrich("hello").await.status, NlpStatus::Ok);
    }
    assert_eq!(enricher.breaker_state(), BreakerState::Closed);
    assert_eq!(metrics.breaker_state.get(), 0);
}

#[tokio::test]
async fn the_retry_budget_stops_retries() {
    let api = FakeApi::start(Mode::Status(500)).await;
    let (enricher, metrics) = enricher(NlpSettings {
        retry_budget_ratio: 0.0,
        retry_budget_min_per_sec: 0,
        ..settings_for(&api)
    });

    let result = enricher.enrich("hello").await;

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(result.attempts, 1);
    assert_eq!(api.requests(), 1);
    assert_eq!(errors(&metrics, "budget_exhausted"), 1);
}

/// Records each back-off it is asked to wait out, and waits none of it.
#[derive(Default)]
struct RecordedWaits(Vec<Duration>);

impl BackoffWait for RecordedWaits {
    async fn wait(&mut self, delay: Duration) {
        self.0.push(delay);
    }
}

#[tokio::test]
async fn each_backoff_is_waited_out_by_the_callers_wait() {
    let api = FakeApi::start(Mode::Status(500)).await;
    let (enricher, _metrics) = enricher(settings_for(&api));
    let mut waits = RecordedWaits::default();

    let result = enricher.enrich_with("hello", &mut waits).await;

    assert_eq!(result.status, NlpStatus::Failed);
    assert_eq!(api.requests(), 3);
    assert_eq!(
        waits.0.len(),
        2,
        "one wait before each retry: {:?}",
        waits.0
    );
    let (first, second) = (waits.0[0], waits.0[1]);
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(150)).contains(&first),
        "{first:?}"
    );
    assert!(
        (Duration::from_millis(200)..=Duration::from_millis(300)).contains(&second),
        "{second:?}"
    );
}
