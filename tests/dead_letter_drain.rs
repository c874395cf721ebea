//! `GET /dead-letters/drained`, the worker's pre-stop drain: it replays the outage dead
//! letters in its directory at once and answers 200 only when none is left, so that a
//! scale-down does not leave them on a volume no running worker reads.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chat_analytics::app::Role;
use serde_json::{json, Value};
use support::{free_port, Pipeline, TestApp};
use uuid::Uuid;

/// Appends one dead-letter line per message id, as the worker writes them.
fn write_dead_letters(dir: &Path, ids: &[Uuid], error: &str) {
    std::fs::create_dir_all(dir).expect("dead-letter directory");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dead-letters-2026-12-01.jsonl"))
        .expect("dead-letter file");
    for (i, id) in ids.iter().enumerate() {
        let line = json!({
            "message": {"message_id": id.to_string(), "bot_id": "drain-bot", "text": format!("held {i}"),
                        "sent_at": "2026-12-01T10:00:00Z"},
            "received_at": "2026-12-01T10:00:00Z",
            "stage": "storage",
            "error": error,
            "attempts": 1,
            "failed_at": "2026-12-01T10:20:00Z",
            "kafka": {"partition": 0, "offset": i},
        });
        writeln!(file, "{line}").expect("line written");
    }
}

async fn drained(app: &TestApp, wait_secs: u64) -> (u16, Value) {
    let response = app
        .http
        .get(format!(
            "{}/dead-letters/drained?wait_secs={wait_secs}",
            app.admin
        ))
        .send()
        .await
        .expect("admin answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// A worker's topic, database and nlp-sim of its own, whose automatic replay looks only at
/// start and when asked: without the drain the next look is an hour away.
async fn drain_pipeline() -> Pipeline {
    let mut fx = Pipeline::start(1).await;
    fx.settings.dlq.replay_interval = Duration::from_secs(3600);
    fx
}

#[tokio::test]
async fn the_drain_replays_outage_dead_letters_at_once_and_says_when_none_is_left() {
    let fx = drain_pipeline().await;
    let dlq = fx.settings.dlq.dir.clone();
    let app = fx.spawn(Role::Worker).await;

    let (status, body) = drained(&app, 30).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"drained": true, "pending": 0})),
        "an empty directory is drained"
    );

    let held: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    write_dead_letters(
        &dlq,
        &held,
        "database_unavailable: no database connection: timed out",
    );
    // A row refused for its content waits for a person, not for the drain.
    let refused = [Uuid::new_v4()];
    write_dead_letters(&dlq, &refused, "row_refused: value too long");

    let (status, body) = drained(&app, 60).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"drained": true, "pending": 0})),
        "the outage dead letters written after the last look are replayed before the answer"
    );
    assert_eq!(
        fx.db
            .count("SELECT count(*) FROM messages WHERE bot_id = 'drain-bot'")
            .await,
        40,
        "every outage dead letter is stored by the time the drain answers, the refused row is not"
    );
    fx.finish([app]).await;
}

#[tokio::test]
async fn with_the_database_away_the_drain_answers_503_with_what_is_pending() {
    let mut fx = drain_pipeline().await;
    let dlq = fx.settings.dlq.dir.clone();
    let held: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    write_dead_letters(
        &dlq,
        &held,
        "database_unavailable: no database connection: timed out",
    );
    // Nothing listens on this port: the database is away for the whole test.
    let away = format!(
        "postgres://chat:chat@127.0.0.1:{}/chat_analytics",
        free_port()
    );
    fx.settings.postgres.url = chat_analytics::config::SecretUrl::new(away);
    fx.settings.storage.migrate_on_start = false;
    let app = fx.spawn(Role::Worker).await;

    let (status, body) = drained(&app, 3).await;
    assert_eq!(
        (status, &body),
        (503, &json!({"drained": false, "pending": 3})),
        "not drained, and the count says what stays on the volume"
    );
    fx.finish([app]).await;
}
