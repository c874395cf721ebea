//! `POST /v1/messages` bodies. The parser never accepts a message that breaks a field
//! rule, what it accepts matches the body it came from, and an accepted message written
//! back as JSON parses to the same message.

#![no_main]

use chat_analytics::ingest::parse_single;
use chat_analytics_fuzz::{assert_field_rules, assert_storage_precision, MESSAGE_FIELDS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uuid::Uuid;

fuzz_target!(|body: &[u8]| {
    let message = match parse_single(body) {
        Ok(message) => message,
        Err(refusal) => {
            assert_eq!(refusal.status, 400, "{refusal:?}");
            assert!(refusal.index.is_none(), "{refusal:?}");
            return;
        }
    };
    assert_field_rules(&message);
    assert_storage_precision(message.sent_at);

    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        panic!("accepted a body that is not a JSON object");
    };
    assert!(
        fields.keys().all(|k| MESSAGE_FIELDS.contains(&k.as_str())),
        "accepted unknown fields: {:?}",
        fields.keys().collect::<Vec<_>>()
    );
    assert_eq!(fields["bot_id"], message.bot_id.as_str());
    assert_eq!(fields["text"], message.text.as_str());
    match fields.get("message_id").and_then(Value::as_str) {
        Some(id) => assert_eq!(Uuid::parse_str(id).ok(), Some(message.message_id.as_uuid())),
        None => assert_eq!(message.message_id.as_uuid().get_version_num(), 7),
    }
    assert_eq!(
        message.sent_at.is_none(),
        fields.get("sent_at").is_none_or(Value::is_null),
        "sent_at is kept exactly when given"
    );

    let written = serde_json::to_vec(&message).expect("a message serialises");
    let reparsed = parse_single(&written)
        .unwrap_or_else(|e| panic!("an accepted message written back is refused: {e:?}"));
    assert_eq!(reparsed, message);
});
