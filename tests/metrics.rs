//! What Prometheus scrapes from a process that has done nothing yet: every metric name
//! SPEC.md fixes, and each known label set of the labelled counters at 0, so that the
//! alert rules' `increase()` and `rate()` see the first dead letter, restart or request.

mod support;

use std::collections::HashSet;

use chat_analytics::app::Role;
use chat_analytics::config::{SecretUrl, Settings};
use serde_json::json;
use support::{create_topic, scrape, temp_dir, test_settings, TestApp, TestDb, FIXED_METRICS};
use uuid::Uuid;

/// Series the alert rules and dashboards read with `increase()` or `rate()`, which must
/// be there at 0 before their first event.
const ZERO_SERIES: &[&str] = &[
    r#"dead_letters_total{stage="decode"}"#,
    r#"dead_letters_total{stage="storage"}"#,
    r#"dead_letters_total{stage="panic"}"#,
    r#"component_restarts_total{component="consumer"}"#,
    r#"component_restarts_total{component="offset_committer"}"#,
    r#"component_restarts_total{component="batch_writer"}"#,
    r#"component_restarts_total{component="dead_letter_writer"}"#,
    r#"component_restarts_total{component="partition_maintainer"}"#,
    r#"component_restarts_total{component="api_server"}"#,
    r#"component_restarts_total{component="delivery_reports"}"#,
    r#"component_restarts_total{component="admin_server"}"#,
    r#"messages_processed_total{outcome="stored"}"#,
    r#"messages_processed_total{outcome="duplicate"}"#,
    r#"messages_processed_total{outcome="dead_lettered"}"#,
    r#"messages_processed_total{outcome="abandoned"}"#,
    r#"http_requests_total{route="/v1/messages",status="202"}"#,
    r#"http_requests_total{route="/v1/messages",status="429"}"#,
    r#"http_requests_total{route="/v1/messages",status="503"}"#,
    r#"http_requests_total{route="/v1/messages/batch",status="202"}"#,
    r#"http_requests_total{route="/v1/messages/batch",status="429"}"#,
    r#"http_requests_total{route="/v1/messages/batch",status="503"}"#,
    r#"http_request_duration_seconds_count{route="/v1/messages"}"#,
    r#"nlp_api_errors_total{kind="timeout"}"#,
];

fn settings_for(topic: &str, db: &TestDb) -> Settings {
    let mut s = test_settings(topic);
    s.postgres.url = SecretUrl::new(db.url.clone());
    s.kafka.consumer_group = format!("test-group-{}", Uuid::new_v4().simple());
    s.dlq.dir = temp_dir("dlq");
    s
}

/// The `/metrics` page of a process of `role` that was just started.
async fn first_scrape(role: Role) -> String {
    let (topic, db) = (create_topic(1).await, TestDb::create().await);
    let app = TestApp::spawn(role, settings_for(&topic, &db)).await;
    let page = scrape(&app.admin).await;
    app.stop().await;
    db.drop_db().await;
    page
}

/// Names of the metric families on a page (`# TYPE name kind` lines; the registry
/// leaves out a family until it has a series).
fn families(page: &str) -> HashSet<&str> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

/// The `http_requests_total` series on a page, labels and all, without their values.
fn request_series(page: &str) -> HashSet<&str> {
    page.lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

#[tokio::test]
async fn a_fresh_process_of_every_role_exports_each_fixed_name_and_the_zero_series() {
    for role in [Role::Serve, Role::Ingest, Role::Worker] {
        let page = first_scrape(role).await;
        let names = families(&page);
        for name in FIXED_METRICS {
            assert!(
                names.contains(name),
                "{role:?}: no {name} before any traffic"
            );
        }
        for series in ZERO_SERIES {
            let line = format!("{series} 0");
            assert!(
                page.lines().any(|l| l == line),
                "{role:?}: no `{line}` before any traffic"
            );
        }
    }
}

#[tokio::test]
async fn every_request_is_counted_in_a_series_exported_from_start() {
    let topic = create_topic(1).await;
    let app = TestApp::spawn(Role::Ingest, test_settings(&topic)).await;
    let at_start = scrape(&app.admin).await;

    let post = |path: &str, content_type: &str, body: String| {
        app.http
            .post(format!("{}{path}", app.api))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let get = |path: &str| app.http.get(format!("{}{path}", app.api)).send();
    let message = json!({"bot_id": "b1", "text": "hello"});
    let answers = [
        post("/v1/messages", "application/json", message.to_string()).await,
        post(
            "/v1/messages/batch",
            "application/json",
            json!([message]).to_string(),
        )
        .await,
        post("/v1/messages", "application/json", "{not json".into()).await,
        post("/v1/messages/batch", "text/plain", "[]".into()).await,
        post("/v1/messages", "application/json", "x".repeat(70 * 1024)).await,
        get("/v1/messages/batch").await,
        get("/health").await,
        get("/livez").await,
        post("/livez", "application/json", "{}".into()).await,
        get("/v2/nothing").await,
    ];
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.expect("answered").status().as_u16())
        .collect();
    assert_eq!(
        statuses,
        [202, 202, 400, 415, 413, 405, 200, 200, 405, 404],
        "the requests get the answers this test means to count"
    );

    let after = scrape(&app.admin).await;
    let exported_at_start = request_series(&at_start);
    let counted = request_series(&after);
    for series in &counted {
        assert!(
            exported_at_start.contains(series),
            "{series} appeared only with its first request"
        );
    }
    assert!(after.contains(r#"http_requests_total{route="/v1/messages/batch",status="415"} 1"#));
    assert!(after.contains(r#"http_requests_total{route="other",status="404"} 1"#));
    app.stop().await;
}
