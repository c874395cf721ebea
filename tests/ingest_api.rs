//! The ingestion API against the real Kafka broker: every status code of both
//! endpoints, what lands in the topic, overload and API keys.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use chat_analytics::app::{App, Role};
use chat_analytics::config::{ApiKeySettings, Compression};
use chat_analytics::ingest::hash_key;
use futures::future::join_all;
use serde_json::json;
use support::{
    by_message_id, create_topic, metric_value, read_topic, scrape, test_settings, TestApp,
};
use tokio_util::sync::CancellationToken;

async fn spawn_default() -> TestApp {
    let topic = create_topic(3).await;
    TestApp::spawn(Role::Ingest, test_settings(&topic)).await
}

async fn error_code(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert!(
        body["error"]["code"].is_string(),
        "error body shape: {body}"
    );
    assert!(
        body["error"]["message"].is_string(),
        "error body shape: {body}"
    );
    assert!(
        body["error"].get("field").is_some(),
        "error body shape: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn accepted_message_is_in_the_topic_keyed_by_bot_with_the_envelope() {
    let app = spawn_default().await;
    let response = app
        .post(
            "/v1/messages",
            &json!({"bot_id": "bot-7", "text": "hello there", "user_id": "u1",
                    "sent_at": "2026-11-23T10:00:00Z", "metadata": {"channel": "web"}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "accepted");
    let id = body["message_id"].as_str().expect("message_id").to_owned();

    let records = read_topic(&app.topic, 1, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 1, "exactly one record: {records:?}");
    let record = &records[0];
    assert_eq!(record.key.as_deref(), Some("bot-7"));
    assert_eq!(record.value["v"], 1);
    assert!(record.value["received_at"].is_string());
    let message = &record.value["message"];
    assert_eq!(message["message_id"], id.as_str());
    assert_eq!(message["bot_id"], "bot-7");
    assert_eq!(message["text"], "hello there");
    assert_eq!(message["user_id"], "u1");
    assert_eq!(message["sent_at"], "2026-11-23T10:00:00Z");
    assert_eq!(message["metadata"]["channel"], "web");
    app.stop().await;
}

/// Every codec `kafka.compression` accepts works: librdkafka refuses at start a codec it was
/// built without, and the consumer must read back what the producer compressed.
#[tokio::test]
async fn every_compression_the_settings_accept_reaches_the_topic() {
    for codec in Compression::ALL {
        let topic = create_topic(1).await;
        let mut settings = test_settings(&topic);
        settings.kafka.compression = codec;
        let app = TestApp::spawn(Role::Ingest, settings).await;
        let text = format!("compressed with {}", codec.as_str());
        let response = app
            .post("/v1/messages", &json!({"bot_id": "codec", "text": text}))
            .await;
        assert_eq!(response.status(), 202, "{}", codec.as_str());
        let records = read_topic(&topic, 1, Duration::from_secs(20)).await;
        assert_eq!(records.len(), 1, "{}: {records:?}", codec.as_str());
        assert_eq!(records[0].value["message"]["text"], text.as_str());
        app.stop().await;
    }
}

#[tokio::test]
async fn client_message_id_is_kept_and_same_bot_goes_to_one_partition() {
    let app = spawn_default().await;
    let ids: Vec<String> = (0..6).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &ids {
        let r = app
            .post(
                "/v1/messages",
                &json!({"message_id": id, "bot_id": "same-bot", "text": "x"}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["message_id"], id.as_str());
    }
    let records = read_topic(&app.topic, ids.len(), Duration::from_secs(20)).await;
    assert_eq!(records.len(), ids.len());
    let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "key = bot_id keeps one bot on one partition"
    );
    let seen: Vec<String> = records
        .iter()
        .map(|r| {
            r.value["message"]["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(seen, ids, "one bot's messages stay in order");
    app.stop().await;
}

#[tokio::test]
async fn batch_is_accepted_whole_and_every_message_lands() {
    let app = spawn_default().await;
    let batch: Vec<_> = (0..25)
        .map(|i| json!({"bot_id": format!("bot-{}", i % 4), "text": format!("message {i}")}))
        .collect();
    let response = app.post("/v1/messages/batch", &json!(batch)).await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["accepted"], 25);
    let ids: Vec<String> = body["message_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 25);

    let records = read_topic(&app.topic, 25, Duration::from_secs(20)).await;
    let found = by_message_id(&records);
    assert_eq!(records.len(), 25);
    for id in &ids {
        assert_eq!(
            found.get(id).map(Vec::len),
            Some(1),
            "{id} once in the topic"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_batch_names_the_first_bad_index_and_publishes_nothing() {
    let app = spawn_default().await;
    let batch = json!([
        {"bot_id": "b1", "text": "fine"},
        {"bot_id": "b1", "text": ""},
        {"bot_id": "b 1", "text": "also bad"}
    ]);
    let (status, body) = error_code(app.post("/v1/messages/batch", &batch).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["index"], 1);
    assert_eq!(body["error"]["field"], "[1].text");

    let too_many: Vec<_> = (0..501)
        .map(|_| json!({"bot_id": "b", "text": "x"}))
        .collect();
    let (status, body) = error_code(app.post("/v1/messages/batch", &json!(too_many)).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "batch_too_large");

    let (status, body) = error_code(app.post("/v1/messages/batch", &json!([])).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("empty_batch"))
    );

    let records = read_topic(&app.topic, 0, Duration::from_secs(3)).await;
    assert!(
        records.is_empty(),
        "nothing published from refused batches: {records:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_client_error_has_its_status_and_error_body() {
    let app = spawn_default().await;
    for path in ["/v1/messages", "/v1/messages/batch"] {
        let bad_json = app
            .http
            .post(format!("{}{path}", app.api))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("sent");
        let (status, body) = error_code(bad_json).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("malformed_json")),
            "{path}"
        );

        let wrong_type = app
            .http
            .post(format!("{}{path}", app.api))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("sent");
        assert_eq!(error_code(wrong_type).await.0, 415, "{path}");

        let huge = "x".repeat(70 * 1024);
        let too_big = app
            .http
            .post(format!("{}{path}", app.api))
            .header("content-type", "application/json")
            .body(format!(r#"{{"bot_id":"b","text":"{huge}"}}"#))
            .send()
            .await
            .expect("sent");
        assert_eq!(error_code(too_big).await.0, 413, "{path}");

        let get = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            get.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..])
        );
        assert_eq!(error_code(get).await.0, 405, "{path}");
    }
    let unknown = app
        .post(
            "/v1/messages",
            &json!({"bot_id": "b", "text": "x", "colour": "red"}),
        )
        .await;
    let (status, body) = error_code(unknown).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("colour"))
    );

    let missing = app.post("/v1/messages", &json!({"text": "x"})).await;
    let (status, body) = error_code(missing).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("bot_id"))
    );

    let nowhere = app
        .http
        .get(format!("{}/v2/nothing", app.api))
        .send()
        .await
        .expect("sent");
    assert_eq!(error_code(nowhere).await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn health_and_livez_answer_on_both_listeners() {
    let app = spawn_default().await;
    for base in [&app.api, &app.admin] {
        let live = app
            .http
            .get(format!("{base}/livez"))
            .send()
            .await
            .expect("sent");
        assert_eq!(live.status(), 200);
        let health = app
            .http
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("sent");
        assert_eq!(health.status(), 200);
        let body: serde_json::Value = health.json().await.expect("json");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["checks"]["kafka"], "ok");
    }
    app.post("/v1/messages", &json!({"bot_id": "b", "text": "count me"}))
        .await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"http_requests_total{route="/v1/messages",status="202"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains("kafka_produce_duration_seconds_count 1"));
    app.stop().await;
}

#[tokio::test]
async fn a_burst_above_capacity_gets_429s_and_every_202_is_in_the_topic() {
    let topic = create_topic(3).await;
    let mut settings = test_settings(&topic);
    // A tiny capacity and a long linger keep publishes in flight long enough to fill it.
    settings.kafka.max_in_flight = NonZeroUsize::new(20).expect("not zero");
    settings.kafka.linger = Duration::from_millis(400);
    let app = TestApp::spawn(Role::Ingest, settings).await;

    let responses = join_all((0..200).map(|i| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/v1/messages",
                    &json!({"bot_id": format!("burst-{}", i % 10), "text": format!("m{i}")}),
                )
                .await;
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").cloned();
            let body: serde_json::Value = r.json().await.expect("json");
            (status, retry_after, body)
        }
    }))
    .await;

    let accepted: Vec<String> = responses
        .iter()
        .filter(|(s, _, _)| *s == 202)
        .map(|(_, _, b)| b["message_id"].as_str().expect("id").to_owned())
        .collect();
    let refused: Vec<_> = responses.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(
        accepted.len() + refused.len(),
        200,
        "only 202 or 429: {responses:?}"
    );
    assert!(
        !refused.is_empty(),
        "a burst of 200 over a limit of 18 must see 429s"
    );
    assert!(accepted.len() >= 18, "the admitted share is accepted");
    for (_, retry_after, body) in &refused {
        assert!(retry_after.is_some(), "429 carries Retry-After");
        assert_eq!(body["error"]["code"], "overloaded");
    }

    let records = read_topic(&topic, accepted.len(), Duration::from_secs(20)).await;
    let found = by_message_id(&records);
    for id in &accepted {
        assert_eq!(
            found.get(id).map(Vec::len),
            Some(1),
            "202'd {id} is in the topic once"
        );
    }
    assert_eq!(
        records.len(),
        accepted.len(),
        "nothing refused was published"
    );
    app.stop().await;
}

#[tokio::test]
async fn api_keys_gate_every_request_and_limit_bots() {
    let topic = create_topic(1).await;
    let mut settings = test_settings(&topic);
    settings.auth.keys = vec![ApiKeySettings {
        name: "support".into(),
        sha256: hash_key("support-key-123").parse().expect("hex digest"),
        bot_ids: vec!["support-*".into()],
    }];
    let app = TestApp::spawn(Role::Ingest, settings).await;
    let message = json!({"bot_id": "support-1", "text": "hi"});
    let url = format!("{}/v1/messages", app.api);

    let missing = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(message.to_string())
        .send()
        .await
        .expect("sent");
    let (status, body) = error_code(missing).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );

    let wrong = app
        .http
        .post(&url)
        .bearer_auth("not-the-key")
        .header("content-type", "application/json")
        .body(message.to_string())
        .send()
        .await
        .expect("sent");
    let (status, body) = error_code(wrong).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );

    let other_bot = app
        .http
        .post(&url)
        .bearer_auth("support-key-123")
        .header("content-type", "application/json")
        .body(json!({"bot_id": "sales-1", "text": "hi"}).to_string())
        .send()
        .await
        .expect("sent");
    let (status, body) = error_code(other_bot).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bot_not_allowed"))
    );

    let right = app
        .http
        .post(&url)
        .bearer_auth("support-key-123")
        .header("content-type", "application/json")
        .body(message.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(right.status(), 202);

    let records = read_topic(&topic, 1, Duration::from_secs(20)).await;
    assert_eq!(
        records.len(),
        1,
        "only the authorised message was published"
    );
    assert_eq!(records[0].key.as_deref(), Some("support-1"));
    app.stop().await;
}

#[tokio::test]
async fn unreachable_kafka_gets_503_with_retry_after_within_the_publish_timeout() {
    let mut settings = test_settings("chat.messages");
    // Nothing listens on port 1: the broker is unreachable from the start.
    settings.kafka.brokers = "127.0.0.1:1".into();
    settings.kafka.publish_timeout = Duration::from_secs(1);
    let app = TestApp::spawn(Role::Ingest, settings).await;
    let started = std::time::Instant::now();
    let response = app
        .post("/v1/messages", &json!({"bot_id": "b", "text": "x"}))
        .await;
    let waited = started.elapsed();
    assert!(response.headers().get("retry-after").is_some());
    let (status, body) = error_code(response).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("kafka_unavailable"))
    );
    assert!(
        waited < Duration::from_secs(3),
        "answered after {waited:?}, publish timeout is 1s"
    );

    let health = app
        .http
        .get(format!("{}/health", app.admin))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn ingest_processes_sharing_the_port_split_connections_and_lose_nothing() {
    let topic = create_topic(3).await;
    let mut settings = test_settings(&topic);
    settings.api.listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    settings.api.reuse_port = true;
    let first = TestApp::spawn(Role::Ingest, settings.clone()).await;
    let second = TestApp::spawn(Role::Ingest, settings.clone()).await;
    assert_eq!(first.api, second.api, "both listen on the same address");

    // Without the opt-in the address stays exclusive, with an error that names it.
    let mut exclusive = settings.clone();
    exclusive.api.reuse_port = false;
    let refused = App::build(&exclusive, Role::Ingest, CancellationToken::new()).await;
    let err = refused
        .err()
        .expect("a second listener without reuse_port is refused");
    assert!(
        err.to_string().contains(&settings.api.listen.to_string()),
        "the error names the address: {err}"
    );

    // One fresh connection per message, as a fleet of bots would connect.
    let sent = 200;
    let posts = (0..sent).map(|i| {
        let url = format!("{}/v1/messages", first.api);
        async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"bot_id": format!("bot-{i}"), "text": "hello"}).to_string())
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 202);
            let body: serde_json::Value = response.json().await.expect("json");
            body["message_id"].as_str().expect("id").to_owned()
        }
    });
    let ids: HashSet<String> = join_all(posts).await.into_iter().collect();
    assert_eq!(ids.len(), sent);

    let accepted = |page: &str| {
        support::metric_value(
            page,
            r#"http_requests_total{route="/v1/messages",status="202"}"#,
        )
    };
    let first_count = accepted(&support::scrape(&first.admin).await);
    let second_count = accepted(&support::scrape(&second.admin).await);
    assert!(
        first_count > 0.0 && second_count > 0.0,
        "the kernel spread connections over both processes: {first_count} + {second_count}"
    );
    assert_eq!(first_count + second_count, sent as f64);

    let records = read_topic(&topic, sent, Duration::from_secs(20)).await;
    let in_topic: HashSet<String> = records
        .iter()
        .filter_map(|r| r.value["message"]["message_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(in_topic, ids, "every 202 is in the topic exactly once");
    assert_eq!(records.len(), sent);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn shutdown_closes_the_listener_while_requests_in_flight_finish() {
    let topic = create_topic(3).await;
    let mut settings = test_settings(&topic);
    // A long linger keeps the publish, and so the request, in flight through the drain.
    settings.kafka.linger = Duration::from_millis(1_500);
    let app = TestApp::spawn(Role::Ingest, settings).await;
    let addr = app.api.trim_start_matches("http://").to_owned();

    let in_flight = tokio::spawn({
        let url = format!("{}/v1/messages", app.api);
        let http = app.http.clone();
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(json!({"bot_id": "drain", "text": "finish me"}).to_string())
                .send()
                .await
                .expect("sent")
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "a new connection during the drain must be refused, not left to be reset"
    );
    assert_eq!(in_flight.await.expect("task"), 202);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_bot_connection_is_parked_reused_and_closed_at_shutdown() {
    let app = spawn_default().await;
    let series =
        |state: &str| format!(r#"http_connections{{server="api_server",state="{state}"}}"#);
    for n in 0..3 {
        let response = app
            .post(
                "/v1/messages",
                &json!({"bot_id": "keeper", "text": format!("message {n}")}),
            )
            .await;
        assert_eq!(response.status(), 202);
        // The keep-alive connection is handed back from hyper once the answer is out.
        let mut counts = (0.0, 0.0);
        for _ in 0..100 {
            let page = scrape(&app.admin).await;
            counts = (
                metric_value(&page, &series("parked")),
                metric_value(&page, &series("active")),
            );
            if counts == (1.0, 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One parked connection after each message: the client reused it every time.
        assert_eq!(counts, (1.0, 0.0), "after message {n}");
    }
    let records = read_topic(&app.topic, 3, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 3);
    // The client still holds its idle connection; stopping must not wait for it.
    app.stop().await;
}
