//! Real outages: the shared Kafka broker and Postgres are stopped and started again
//! (`scripts/infra.sh`). This binary's tests therefore run one at a time, and cargo runs
//! test binaries one after another, so no other test sees the outage.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use chat_analytics::app::Role;
use chat_analytics::config::Settings;
use futures::future::join_all;
use serde_json::json;
use support::{
    by_message_id, create_topic, metric_value, read_topic, scrape, temp_dir, test_settings,
    wait_for_metric, ChildProcess, NlpSim, Pipeline, TestApp, TestDb,
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
    settings.kafka.publish_timeout = Duration::from_secs(2);
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

/// This test's topic, database, nlp-sim and dead-letter directory, and a worker and ingest
/// API in this process using them.
struct OutageFixture {
    app: TestApp,
    db: TestDb,
    nlp: NlpSim,
    dlq: PathBuf,
}

impl OutageFixture {
    async fn start(adjust: impl FnOnce(&mut Settings)) -> OutageFixture {
        let mut pipeline = Pipeline::start(3).await;
        pipeline.settings.postgres.connect_timeout = Duration::from_millis(500);
        pipeline.settings.storage.outage_retry_max = Duration::from_millis(500);
        adjust(&mut pipeline.settings);
        let app = pipeline.spawn(Role::Serve).await;
        let Pipeline {
            db, nlp, settings, ..
        } = pipeline;
        OutageFixture {
            app,
            db,
            nlp,
            dlq: settings.dlq.dir,
        }
    }

    /// Posts 100 messages and waits until they are stored, stops Postgres, then posts 200
    /// more: returns the 300 accepted ids, the guard that starts Postgres again when
    /// dropped, and when it stopped.
    async fn stop_postgres_between_posts(&self) -> (Vec<String>, Restart, std::time::Instant) {
        let mut accepted = self.app.post_messages(100, "before").await;
        assert_eq!(
            self.db
                .wait_for_messages(100, Duration::from_secs(30))
                .await,
            100
        );
        let restart = Restart("postgres-start");
        infra(&["postgres-stop", "--immediate"]);
        let stopped = std::time::Instant::now();
        accepted.extend(self.app.post_messages(200, "during").await);
        (accepted, restart, stopped)
    }

    async fn health(&self) -> serde_json::Value {
        let r = reqwest::get(format!("{}/health", self.app.admin))
            .await
            .expect("health");
        r.json().await.expect("health json")
    }
}

fn dead_letter_lines(dir: &std::path::Path) -> usize {
    chat_analytics::deadletter::read_dead_letters(dir)
        .map(|f| f.letters.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_postgres_outage_is_held_in_kafka_and_heals_by_itself_without_dead_letters() {
    let _one_at_a_time = OUTAGE.lock().await;
    let fx = OutageFixture::start(|_| {}).await;
    let (mut accepted, restart, stopped) = fx.stop_postgres_between_posts().await;
    wait_for_metric(
        &fx.app.admin,
        r#"consumer_paused{reason="database_unavailable"}"#,
        1.0,
        Duration::from_secs(30),
        "consumption pauses while the database is down",
    )
    .await;
    // Posted while paused: not fetched, so they are the lag, which keeps being counted.
    accepted.extend(fx.app.post_messages(100, "paused").await);
    wait_for_metric(
        &fx.app.admin,
        "queue_depth",
        100.0,
        Duration::from_secs(12),
        "queue_depth shows the backlog growing while paused",
    )
    .await;
    let health = fx.health().await;
    assert_eq!(health["status"], "unavailable", "{health}");
    assert!(
        health["checks"]["consumer"]
            .as_str()
            .is_some_and(|c| c.contains("paused: database unavailable")),
        "/health says why: {health}"
    );
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed())).await;
    drop(restart);

    assert_eq!(
        fx.db.wait_for_messages(400, Duration::from_secs(60)).await,
        400,
        "held messages are stored once the database is back"
    );
    fx.db.assert_stored_exactly_once(&accepted).await;
    let page = wait_for_metric(
        &fx.app.admin,
        r#"messages_processed_total{outcome="stored"}"#,
        400.0,
        Duration::from_secs(10),
        "every message stored",
    )
    .await;
    assert_eq!(
        metric_value(&page, r#"dead_letters_total{stage="storage"}"#),
        0.0
    );
    assert_eq!(dead_letter_lines(&fx.dlq), 0, "no dead letter written");
    assert_eq!(fx.health().await["checks"]["consumer"], "ok");
    // The consumer loop notices the healed database at its next hold recheck (200 ms).
    wait_for_metric(
        &fx.app.admin,
        r#"consumer_paused{reason="database_unavailable"}"#,
        0.0,
        Duration::from_secs(5),
        "consumption resumed",
    )
    .await;
    let lag = fx.app.admin.clone();
    wait_until(Duration::from_secs(20), "the lag drains", || {
        let lag = lag.clone();
        async move { metric_value(&scrape(&lag).await, "queue_depth") == 0.0 }
    })
    .await;
    fx.app.stop().await;
    drop(fx.nlp);
    fx.db.drop_db().await;
}

#[tokio::test]
async fn an_outage_longer_than_max_outage_is_dead_lettered_then_replayed_by_itself() {
    let _one_at_a_time = OUTAGE.lock().await;
    let fx = OutageFixture::start(|s| {
        s.storage.max_outage = Duration::from_secs(2);
        s.dlq.replay_interval = Duration::from_secs(1);
    })
    .await;
    let (accepted, restart, _) = fx.stop_postgres_between_posts().await;
    wait_for_metric(
        &fx.app.admin,
        r#"dead_letters_total{stage="storage"}"#,
        200.0,
        Duration::from_secs(60),
        "past max_outage_secs the rows are dead-lettered",
    )
    .await;
    let admin = fx.app.admin.clone();
    wait_until(
        Duration::from_secs(5),
        "past max_outage_secs consumption goes on",
        || {
            let admin = admin.clone();
            async move {
                let page = scrape(&admin).await;
                metric_value(&page, r#"consumer_paused{reason="database_unavailable"}"#) == 0.0
            }
        },
    )
    .await;
    drop(restart);

    assert_eq!(
        fx.db.wait_for_messages(300, Duration::from_secs(60)).await,
        300,
        "dead letters are replayed once the database is back"
    );
    let page = wait_for_metric(
        &fx.app.admin,
        r#"dead_letters_replayed_total{outcome="stored"}"#,
        200.0,
        Duration::from_secs(30),
        "the replay is counted",
    )
    .await;
    assert_eq!(metric_value(&page, "dead_letters_pending"), 0.0);
    fx.db.assert_stored_exactly_once(&accepted).await;
    assert_eq!(
        dead_letter_lines(&fx.dlq),
        200,
        "dead letters are kept, never deleted"
    );
    fx.app.stop().await;

    // A manual replay of the same files afterwards adds nothing.
    let replay_env = vec![
        (
            "CHAT_ANALYTICS__POSTGRES__URL".to_owned(),
            fx.db.url.clone(),
        ),
        ("CHAT_ANALYTICS__NLP__URL".to_owned(), fx.nlp.analyze_url()),
        (
            "CHAT_ANALYTICS__DLQ__DIR".to_owned(),
            temp_dir("replay-dlq").display().to_string(),
        ),
    ];
    let dlq_arg = fx.dlq.display().to_string();
    let mut replay = ChildProcess::spawn("dlq-replay", &["dlq", "replay", &dlq_arg], &replay_env);
    assert!(
        replay.wait(Duration::from_secs(120)).await.success(),
        "replay succeeds"
    );
    assert_eq!(
        fx.db.count("SELECT count(*) FROM messages").await,
        accepted.len() as i64,
        "a manual replay adds nothing"
    );
    drop(fx.nlp);
    fx.db.drop_db().await;
}

/// Polls `check` until it holds; panics with `what` after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
