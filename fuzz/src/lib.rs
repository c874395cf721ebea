//! Checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! The field rules are restated here from the API contract (docs/openapi.yaml, README)
//! rather than taken from `chat_analytics::domain`, so a target catches a parser that
//! lets through what the contract forbids, not only a parser that disagrees with itself.

use chat_analytics::domain::ChatMessage;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Map, Value};

/// The fields a message object may have.
pub const MESSAGE_FIELDS: [&str; 7] = [
    "message_id",
    "bot_id",
    "conversation_id",
    "user_id",
    "text",
    "sent_at",
    "metadata",
];

/// Panics unless `message` keeps every field rule of the contract.
pub fn assert_field_rules(message: &ChatMessage) {
    let bot_id = message.bot_id.as_str();
    assert!(
        (1..=128).contains(&bot_id.chars().count()),
        "bot_id length: {bot_id:?}"
    );
    assert!(
        bot_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
        "bot_id alphabet: {bot_id:?}"
    );
    let text = message.text.as_str();
    assert!(
        (1..=4096).contains(&text.chars().count()),
        "text length: {} characters",
        text.chars().count()
    );
    assert!(!text.contains('\0'), "text holds NUL");
    for label in [&message.conversation_id, &message.user_id]
        .into_iter()
        .flatten()
    {
        let label = label.as_str();
        assert!(label.chars().count() <= 128, "label length: {label:?}");
        assert!(!label.contains('\0'), "label holds NUL: {label:?}");
    }
    if let Some(metadata) = &message.metadata {
        let map = metadata.as_map();
        let size = serde_json::to_vec(map).expect("metadata serialises").len();
        assert!(size <= 4096, "metadata is {size} bytes serialised");
        assert!(!object_holds_nul(map), "metadata holds NUL");
    }
}

/// Panics unless a given `sent_at` is whole microseconds, as Postgres keeps it.
pub fn assert_storage_precision(sent_at: Option<DateTime<Utc>>) {
    let Some(t) = sent_at else {
        return;
    };
    assert_eq!(
        t.nanosecond() % 1_000,
        0,
        "sent_at {t:?} is finer than 1 µs"
    );
}

fn object_holds_nul(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(key, value)| key.contains('\0') || value_holds_nul(value))
}

fn value_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(value_holds_nul),
        Value::Object(map) => object_holds_nul(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}
