//! Real outages: the shared Kafka broker and Postgres are stopped and started again
//! (`scripts/infra.sh`). This binary's tests therefore run one at a time, and cargo runs
//! test binaries one after another, so no other test sees the outage.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chat_analytics::app::Role;
use chat_analytics::config::SecretUrl;
use futures::future::join_all;
use serde_json::json;
use support::{
    by_message_id, create_topic, read_topic, temp_dir, test_settings, wait_for_metric,
    ChildProcess, NlpSim, TestApp, TestDb,
};
use uuid::Uuid;

/// One outage at a time.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn infra(args: &[&str]) {
    let status =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/infra.sh"))
            .args(args)
            .status()
            .expect("scripts/infra.sh runs");
    assert!(status.success(), "scripts/infra.sh {args:?} failed");
}

/// Starts the component again however the test ends, so a failure here cannot take
/// the infrastructure down for the rest of the run.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        infra(&[self.0]);
    }
}

#[tokio::test]
async fn with_kafka_stopped_requests_get_503_and_no_202_is_given_for_a_lost_message() {
    let _one_at_a_time = OUTAGE.lock().await;
    let topic = create_topic(3).await;
    let mut settings = test_settings(&topic);
    settings.kafka.publish_timeout_ms = 2_000;
    let app = TestApp::spawn(Role::Ingest, settings).await;
    let post = |i: usize| {
        let app = &app;
        async move {
            let id = Uuid::new_v4().to_string();
            let r = app
                .post(
                    "/v1/messages",
                    &json!({"message_id": id, "bot_id": format!("b{i}"), "text": "x"}),
                )
                .await;
            let retry_after = r.headers().contains_key("retry-after");
            (id, r.status().as_u16(), retry_after)
        }
    };
    let before = join_all((0..5).map(post)).await;
    assert!(before.iter().all(|(_, s, _)| *s == 202), "{before:?}");

    let restart = Restart("kafka-start");
    infra(&["kafka-stop"]);
    let started = std::time::Instant::now();
    let during = join_all((0..10).map(post)).await;
    let waited = started.elapsed();
    drop(restart);

    let refused: Vec<_> = during.iter().filter(|(_, s, _)| *s == 503).collect();
    assert!(
        !refused.is_empty(),
        "requests during the outage are refused: {during:?}"
    );
    assert!(
        refused.iter().all(|(_, _, retry_after)| *retry_after),
        "503 carries Retry-After"
    );
    assert!(
        during.iter().all(|(_, s, _)| *s == 503 || *s == 202),
        "only 503 or a real 202: {during:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "answered within the publish timeout: {waited:?}"
    );

    let accepted: Vec<&String> = before
        .iter()
        .chain(during.iter())
        .filter(|(_, s, _)| *s == 202)
        .map(|(id, _, _)| id)
        .collect();
    let records = read_topic(&topic, accepted.len(), Duration::from_secs(30)).await;
    let found = by_message_id(&records);
    for id in &accepted {
        assert!(
            found.contains_key(*id),
            "202'd message {id} is in the topic"
        );
    }
    // The producer recovers once the broker is back.
    let after = post(99).await;
    assert_eq!(after.1, 202, "accepted again after the outage");
    app.stop().await;
}

#[tokio::test]
async fn with_postgres_stopped_messages_are_dead_lettered_and_replay_stores_each_once() {
    let _one_at_a_time = OUTAGE.lock().await;
    let (topic, db, nlp) = (
        create_topic(3).await,
        TestDb::create().await,
        NlpSim::start(5).await,
    );
    let dlq = temp_dir("dlq");
    let mut settings = test_settings(&topic);
    settings.postgres.url = SecretUrl::new(db.url.clone());
    settings.kafka.consumer_group = format!("test-group-{}", Uuid::new_v4().simple());
    settings.nlp.url = nlp.analyze_url();
    settings.dlq.dir = dlq.clone();
    settings.postgres.connect_timeout_ms = 500;
    let app = TestApp::spawn(Role::Serve, settings).await;
    let post_batch = |prefix: &'static str, n: usize| {
        let app = &app;
        async move {
            let batch: Vec<_> = (0..n)
                .map(|i| json!({"bot_id": format!("{prefix}{i}"), "text": "hello"}))
                .collect();
            let r = app.post("/v1/messages/batch", &json!(batch)).await;
            assert_eq!(r.status(), 202);
            let body: serde_json::Value = r.json().await.expect("json");
            body["message_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let mut accepted = post_batch("before", 100).await;
    assert_eq!(
        db.wait_for_messages(100, Duration::from_secs(30)).await,
        100
    );

    let restart = Restart("postgres-start");
    infra(&["postgres-stop"]);
    let during = post_batch("during", 200).await;
    accepted.extend(during.iter().cloned());
    wait_for_metric(
        &app.admin,
        r#"dead_letters_total{stage="storage"}"#,
        200.0,
        Duration::from_secs(60),
        "messages reach the dead-letter file",
    )
    .await;
    drop(restart);
    app.stop().await;

    let replay_env = vec![
        ("CHAT_ANALYTICS__POSTGRES__URL".to_owned(), db.url.clone()),
        ("CHAT_ANALYTICS__NLP__URL".to_owned(), nlp.analyze_url()),
        (
            "CHAT_ANALYTICS__DLQ__DIR".to_owned(),
            temp_dir("replay-dlq").display().to_string(),
        ),
    ];
    let dlq_arg = dlq.display().to_string();
    let mut replay = ChildProcess::spawn("dlq-replay", &["dlq", "replay", &dlq_arg], &replay_env);
    assert!(
        replay.wait(Duration::from_secs(120)).await.success(),
        "replay succeeds"
    );

    let stored = db.message_ids().await;
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no duplicates");
    assert_eq!(
        unique,
        accepted.iter().collect::<HashSet<_>>(),
        "every accepted message present exactly once"
    );

    let mut again = ChildProcess::spawn("dlq-replay-2", &["dlq", "replay", &dlq_arg], &replay_env);
    assert!(
        again.wait(Duration::from_secs(120)).await.success(),
        "second replay succeeds"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM messages").await,
        accepted.len() as i64,
        "a second replay adds nothing"
    );
    db.drop_db().await;
}
