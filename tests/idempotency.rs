//! A `message_id` is stored once, however a client sends it again: with or without
//! `sent_at`, alone or in a batch, to another ingest process, after a worker restart. The
//! first accepted content wins; a later copy with other content is counted, not stored.

mod support;

use std::time::Duration;

use chat_analytics::app::Role;
use serde_json::{json, Value};
use support::{metric_value, scrape, wait_for_metric, wait_for_page, Pipeline, TestApp};
use uuid::Uuid;

async fn post(app: &TestApp, path: &str, body: &Value) {
    let r = app.post(path, body).await;
    assert_eq!(r.status(), 202, "{path} {body}");
}

/// Waits until the worker has finished `n` messages (any outcome); returns its metrics.
async fn wait_processed(admin: &str, n: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(admin).await;
        let done: f64 = ["stored", "duplicate", "conflict", "dead_lettered"]
            .iter()
            .map(|o| {
                metric_value(
                    &page,
                    &format!("messages_processed_total{{outcome=\"{o}\"}}"),
                )
            })
            .sum();
        if done >= n {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker finished {done} of {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_message_id_sent_again_in_any_form_is_stored_once_and_the_first_content_wins() {
    let mut fx = Pipeline::start(3).await;
    let ingest_a = fx.spawn(Role::Ingest).await;
    let ingest_b = fx.spawn(Role::Ingest).await;
    let worker = fx.spawn(Role::Worker).await;

    // A retry without sent_at: to another ingest process, then inside a batch, each copy
    // received at its own time.
    let retried = Uuid::new_v4().to_string();
    let retry = json!({"message_id": retried, "bot_id": "retrier", "text": "where is my order?"});
    post(&ingest_a, "/v1/messages", &retry).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    post(&ingest_b, "/v1/messages", &retry).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    post(
        &ingest_a,
        "/v1/messages/batch",
        &json!([retry, {"bot_id": "retrier", "text": "unrelated"}]),
    )
    .await;
    // Twice in one batch.
    let twice = Uuid::new_v4().to_string();
    let copy = json!({"message_id": twice, "bot_id": "batcher", "text": "same", "sent_at": "2026-11-30T10:00:00Z"});
    post(&ingest_b, "/v1/messages/batch", &json!([copy, copy])).await;
    // The same id re-posted with another sent_at: other content, and another partition
    // key in `messages`.
    let moved = Uuid::new_v4().to_string();
    post(
        &ingest_a,
        "/v1/messages",
        &json!({"message_id": moved, "bot_id": "mover", "text": "hi", "sent_at": "2026-11-30T09:00:00Z"}),
    )
    .await;
    post(
        &ingest_b,
        "/v1/messages",
        &json!({"message_id": moved, "bot_id": "mover", "text": "hi", "sent_at": "2026-11-29T09:00:00Z"}),
    )
    .await;
    // Other content posted right behind the first, many times over: processed
    // concurrently with NLP latency varying, a later copy would often finish first.
    let pairs: Vec<String> = (0..40).map(|_| Uuid::new_v4().to_string()).collect();
    for (i, id) in pairs.iter().enumerate() {
        let bot = format!("pair-{i}");
        post(
            &ingest_a,
            "/v1/messages",
            &json!({"message_id": id, "bot_id": bot, "text": "first"}),
        )
        .await;
        post(
            &ingest_b,
            "/v1/messages",
            &json!({"message_id": id, "bot_id": bot, "text": "second version"}),
        )
        .await;
    }

    // 4 + 2 + 2 + 80 messages read by the worker.
    let page = wait_processed(&worker.admin, 88.0).await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="stored"}"#),
        1.0 + 1.0 + 1.0 + 1.0 + 40.0,
        "one row per message_id (and the unrelated message)"
    );
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="duplicate"}"#),
        3.0,
        "two retries and the batch's second copy"
    );
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="conflict"}"#),
        41.0,
        "the re-post with another sent_at and the forty second versions"
    );
    for id in [&retried, &twice, &moved] {
        assert_eq!(
            fx.db
                .count(&format!(
                    "SELECT count(*) FROM messages WHERE message_id = '{id}'"
                ))
                .await,
            1,
            "{id} stored once"
        );
    }
    assert_eq!(
        fx.db.count(&format!(
            "SELECT count(*) FROM messages WHERE message_id = '{moved}' AND sent_at = '2026-11-30T09:00:00Z'"
        ))
        .await,
        1,
        "the first sent_at wins"
    );
    let list = pairs
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        fx.db
            .count(&format!(
                "SELECT count(*) FROM messages WHERE message_id IN ({list}) AND text = 'first'"
            ))
            .await,
        40,
        "the first accepted content is the one stored, every time"
    );
    worker.stop().await;

    // Across a worker restart (a new consumer group reads the topic from the start: every
    // copy is re-delivered) and a later retry: nothing new.
    fx.settings.kafka.consumer_group = format!("test-group-{}", Uuid::new_v4().simple());
    let restarted = fx.spawn(Role::Worker).await;
    post(&ingest_b, "/v1/messages", &retry).await;
    let page = wait_processed(&restarted.admin, 89.0).await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="stored"}"#),
        0.0,
        "a restarted worker stores nothing twice"
    );
    assert_eq!(fx.db.count("SELECT count(*) FROM messages").await, 44);
    assert_eq!(
        fx.db.count("SELECT count(*) FROM message_keys").await,
        44,
        "one key per stored message"
    );
    let page = wait_for_metric(
        &restarted.admin,
        r#"messages_processed_total{outcome="conflict"}"#,
        41.0,
        Duration::from_secs(10),
        "conflicts counted again on re-delivery",
    )
    .await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="duplicate"}"#),
        48.0,
        "every other copy is a duplicate"
    );
    // The rollups count each stored message once, and the worker's folder moves what the
    // writes left pending into the rollup tables.
    let folded = fx
        .db
        .wait_for_count(
            "SELECT CASE WHEN (SELECT count(*) FROM rollup_pending) = 0
                          AND (SELECT sum(messages) FROM messages_per_minute) = 44
                         THEN 1 ELSE 0 END::bigint",
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(folded, 1, "the worker folded the pending rollup rows");
    let page = scrape(&restarted.admin).await;
    assert!(
        metric_value(&page, "rollup_fold_duration_seconds_count") > 0.0,
        "each fold transaction is timed"
    );
    // What the folder-behind alert reads: the pending count after a fold, 0 once caught up.
    wait_for_page(
        &restarted.admin,
        Duration::from_secs(10),
        "rollup_pending_rows never read 0 after the folds caught up",
        |page| page.lines().any(|line| line == "rollup_pending_rows 0"),
    )
    .await;
    let client = fx.db.pool.get().await.expect("connection");
    for row in client
        .query(include_str!("../sql/checks/rollup_mismatches.sql"), &[])
        .await
        .expect("rollup check")
    {
        let (rollup, wrong): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(wrong, 0, "{rollup} differs from the raw rows");
    }
    fx.finish([restarted, ingest_a, ingest_b]).await;
}
