//! Behaviour through the edges: routes called in memory, and the real
//! server on a random loopback port driven by an HTTP client.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::faults::{FaultSettings, Faults, Outcome, Plan};
use super::server::testing::{body_json, TestApp};
use super::{serve, NlpSimError};

/// A server on 127.0.0.1:0 with its own knobs, stopped on `stop`.
struct TestServer {
    base: String,
    faults: Faults,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NlpSimError>>,
    client: reqwest::Client,
}

impl TestServer {
    async fn start(latency_ms: u64, error_rate: f64, hang_rate: f64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local address");
        let settings =
            FaultSettings::new(latency_ms, error_rate, hang_rate).expect("valid settings");
        let faults = Faults::new(settings, 0.1).expect("valid spread");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, faults.clone(), Some(42), async {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            faults,
            stop: Some(stop),
            task,
            client: reqwest::Client::new(),
        }
    }

    /// The server's `host:port`.
    fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn analyze(&self, body: Value) -> reqwest::Response {
        self.post_json("/v1/analyze", &body).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the server")
    }

    async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the server")
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task did not panic")
            .expect("serve ends cleanly");
        started.elapsed()
    }
}

fn is_error_body(body: &Value, code: &str) -> bool {
    body["error"]["code"] == code && body["error"]["message"].is_string()
}

#[tokio::test]
async fn analyze_answers_the_contract_shape() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let response = server
        .analyze(
            json!({"text": "I love this product, the support team is great!", "lang_hint": "en"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "answers are JSON"
    );
    let body: Value = response.json().await.expect("JSON body");
    let object = body.as_object().expect("an object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["keywords", "language", "sentiment", "toxicity"]);
    assert_eq!(body["sentiment"]["label"], "positive");
    let score = body["sentiment"]["score"].as_f64().expect("numeric score");
    assert!((-1.0..=1.0).contains(&score) && score > 0.5);
    let toxicity = body["toxicity"].as_f64().expect("numeric toxicity");
    assert_eq!(toxicity, 0.0);
    assert_eq!(body["language"], "en");
    let keywords = body["keywords"].as_array().expect("keyword list");
    assert!(!keywords.is_empty() && keywords.len() <= 5);
    assert!(keywords.iter().all(Value::is_string));
    server.stop().await;
}

#[tokio::test]
async fn lang_hint_is_optional_and_unknown_language_is_und() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let body: Value = server
        .analyze(json!({"text": "qwx zzv"}))
        .await
        .json()
        .await
        .expect("JSON body");
    assert_eq!(body["language"], "und");
    assert_eq!(body["sentiment"]["label"], "neutral");
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_gets_a_400_with_a_json_error_body() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let response = server
        .client
        .post(server.url("/v1/analyze"))
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON error body");
    assert!(is_error_body(&body, "malformed_json"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_mistyped_field_is_named_in_the_400() {
    let app = TestApp::new(Faults::new(FaultSettings::default(), 0.1).expect("valid"));
    let cases = [
        (r#"{"lang_hint": "en"}"#, Some("text")),
        (r#"{"text": 42}"#, Some("text")),
        (r#"{"text": "hi", "lang_hint": 7}"#, Some("lang_hint")),
        (r#"["text"]"#, None),
    ];
    for (body, field) in cases {
        let response = app
            .request(Method::POST, "/v1/analyze", body, Plan::HEALTHY)
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = body_json(response).await;
        assert!(is_error_body(&error, "invalid_field"), "{error}");
        assert_eq!(error["error"]["field"].as_str(), field, "{body}");
    }
}

#[tokio::test]
async fn health_is_200_and_unknown_routes_are_404() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let health = server.get("/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let missing = server.get("/v2/nothing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.expect("JSON error body");
    assert!(is_error_body(&body, "not_found"));
    let wrong_method = server.get("/v1/analyze").await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers()["allow"], "POST");
    server.stop().await;
}

#[tokio::test]
async fn admin_faults_reads_and_partially_updates_the_settings() {
    let server = TestServer::start(200, 0.0, 0.0).await;
    let current: Value = server
        .get("/admin/faults")
        .await
        .json()
        .await
        .expect("JSON settings");
    assert_eq!(
        current,
        json!({"latency_ms": 200, "error_rate": 0.0, "hang_rate": 0.0})
    );

    let response = server
        .post_json("/admin/faults", &json!({"error_rate": 0.25}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.expect("JSON settings");
    assert_eq!(
        updated,
        json!({"latency_ms": 200, "error_rate": 0.25, "hang_rate": 0.0})
    );
    assert_eq!(server.faults.snapshot().error_rate(), 0.25);
    server.stop().await;
}

#[tokio::test]
async fn admin_faults_rejects_out_of_range_rates_naming_the_field() {
    let server = TestServer::start(200, 0.0, 0.0).await;
    for (update, field) in [
        (json!({"hang_rate": 1.5}), "hang_rate"),
        (json!({"error_rate": -0.1, "latency_ms": 10}), "error_rate"),
        (json!({"latency_ms": "fast"}), "latency_ms"),
        (json!({"eror_rate": 0.1}), "eror_rate"),
    ] {
        let response = server.post_json("/admin/faults", &update).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{update}");
        let body: Value = response.json().await.expect("JSON error body");
        assert_eq!(body["error"]["field"], field, "{update}");
    }
    assert_eq!(
        server.faults.snapshot(),
        FaultSettings::default(),
        "rejected updates change nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn at_error_rate_one_every_analysis_is_a_500() {
    let server = TestServer::start(0, 1.0, 0.0).await;
    for _ in 0..50 {
        let response = server
            .analyze(json!({"text": "hello there, how are you?"}))
            .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = response.json().await.expect("JSON error body");
        assert!(is_error_body(&body, "injected_fault"));
    }
    let health = server.get("/health").await;
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "faults spare the health check"
    );
    server.stop().await;
}

#[tokio::test]
async fn fault_changes_apply_to_the_next_request() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let ok = server.analyze(json!({"text": "fine"})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let response = server
        .post_json("/admin/faults", &json!({"error_rate": 1.0}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let failed = server.analyze(json!({"text": "fine"})).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    server
        .faults
        .set(FaultSettings::new(0, 0.0, 0.0).expect("valid"));
    let ok = server.analyze(json!({"text": "fine"})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn at_hang_rate_one_a_client_with_a_300ms_timeout_times_out() {
    let server = TestServer::start(0, 0.0, 1.0).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let started = Instant::now();
    let error = client
        .post(server.url("/v1/analyze"))
        .json(&json!({"text": "are you there?"}))
        .send()
        .await
        .expect_err("a hung request never answers");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A hang in progress must not hold shutdown hostage.
    let hung = {
        let url = server.url("/v1/analyze");
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"text": "still there?"}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let outcome = hung.await.expect("client task");
    assert!(outcome.is_err(), "the hung request ends without an answer");
}

#[tokio::test]
async fn each_analysis_waits_about_the_configured_latency() {
    let server = TestServer::start(150, 0.0, 0.0).await;
    let started = Instant::now();
    for _ in 0..5 {
        let response = server.analyze(json!({"text": "how long?"})).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mean = started.elapsed() / 5;
    assert!(
        mean >= Duration::from_millis(110) && mean < Duration::from_millis(400),
        "mean {mean:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let server = TestServer::start(0, 0.0, 0.0).await;
    let response = server.analyze(json!({"text": "one and done"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The client's pool keeps the connection open and idle.
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_hung_request_is_released_only_by_shutdown() {
    let app = TestApp::new(Faults::new(FaultSettings::default(), 0.1).expect("valid"));
    let plan = Plan {
        delay: Duration::ZERO,
        outcome: Outcome::Hang,
    };
    let request = app.request(Method::POST, "/v1/analyze", r#"{"text": "hi"}"#, plan);
    tokio::pin!(request);
    let early = tokio::time::timeout(Duration::from_millis(50), &mut request).await;
    assert!(early.is_err(), "still pending");
    let _ = app.stop.send(true);
    let released = tokio::time::timeout(Duration::from_secs(1), request)
        .await
        .expect("released on shutdown");
    assert!(released.is_err(), "released without an answer");
}

#[tokio::test]
async fn faults_do_not_apply_to_admin_routes() {
    let app = TestApp::new(Faults::new(FaultSettings::default(), 0.1).expect("valid"));
    let response = app
        .request(Method::GET, "/admin/faults", "", Plan::HEALTHY)
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_json(response).await;
    assert_eq!(body["latency_ms"], 200);
}

#[tokio::test]
async fn oversized_bodies_get_a_413() {
    let app = TestApp::new(Faults::new(FaultSettings::default(), 0.1).expect("valid"));
    let text = "a".repeat(super::server::MAX_BODY_BYTES + 1);
    let body = json!({ "text": text }).to_string();
    let response = app
        .request(Method::POST, "/v1/analyze", &body, Plan::HEALTHY)
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(is_error_body(&body_json(response).await, "body_too_large"));
}

/// A worker resets the HTTP/2 streams of calls that timed out, and on a busy
/// server that can happen before the server has taken them up. h2's default
/// guard against rapid-reset floods ends the connection after 20 such
/// streams, which would fail every call in flight on it at once.
#[tokio::test]
async fn streams_reset_before_they_are_served_do_not_end_an_h2_connection() {
    const RESET_STREAMS: usize = 500;
    let server = TestServer::start(0, 0.0, 0.0).await;
    let tcp = TcpStream::connect(server.address()).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("connection ready");
    let url = server.url("/v1/analyze");
    // No await in the loop: every stream's HEADERS and its RST_STREAM leave in
    // one write, so the server reads the resets before it can serve a stream.
    for _ in 0..RESET_STREAMS {
        let request = Request::post(url.as_str()).body(()).expect("request");
        let (response, body) = client.send_request(request, false).expect("stream opened");
        drop((response, body));
    }
    let request = Request::post(url.as_str())
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("stream opened");
    body.send_data(Bytes::from_static(br#"{"text": "still here"}"#), true)
        .expect("body sent");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered within 5 s")
        .expect("the connection is still open");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!connection.is_finished(), "the connection ended");
    server.stop().await;
}
