//! Turning a request body into [`ChatMessage`]s, or a 400 that names the field.
//!
//! The body is read as a generic JSON value first so every error can say which field
//! is wrong and why, which serde's derived errors cannot.

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use crate::domain::{
    to_storage_precision, BotId, ChatMessage, FieldError, Label, MessageId, MessageText, Metadata,
};

const KNOWN_FIELDS: [&str; 7] = [
    "message_id",
    "bot_id",
    "conversation_id",
    "user_id",
    "text",
    "sent_at",
    "metadata",
];

/// Parses `POST /v1/messages`.
pub fn parse_single(body: &[u8]) -> Result<ChatMessage, ApiError> {
    parse_message(parse_json(body)?)
}

/// Parses `POST /v1/messages/batch`: all messages are validated before any is published.
pub fn parse_batch(body: &[u8], max_messages: usize) -> Result<Vec<ChatMessage>, ApiError> {
    let Value::Array(items) = parse_json(body)? else {
        return Err(ApiError::bad_request(
            "invalid_type",
            "batch body must be a JSON array of messages",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "batch must hold at least one message",
        ));
    }
    if items.len() > max_messages {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "batch holds {} messages; at most {max_messages} are allowed",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_message(item).map_err(|e| e.at_index(i)))
        .collect()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
    })
}

fn parse_message(value: Value) -> Result<ChatMessage, ApiError> {
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request(
            "invalid_type",
            "a message must be a JSON object",
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid_field(
            unknown,
            "unknown_field",
            "is not a message field",
        ));
    }
    let message_id = match optional_string(&mut fields, "message_id")? {
        Some(raw) => Uuid::parse_str(&raw)
            .map(MessageId::from)
            .map_err(|_| ApiError::invalid_field("message_id", "invalid_uuid", "must be a UUID"))?,
        None => MessageId::generate(),
    };
    let bot_id = required_string(&mut fields, "bot_id")
        .and_then(|raw| BotId::parse(raw).map_err(|e| field_error("bot_id", e)))?;
    let text = required_string(&mut fields, "text")
        .and_then(|raw| MessageText::parse(raw).map_err(|e| field_error("text", e)))?;
    let conversation_id = optional_label(&mut fields, "conversation_id")?;
    let user_id = optional_label(&mut fields, "user_id")?;
    let sent_at = match optional_string(&mut fields, "sent_at")? {
        Some(raw) => Some(parse_sent_at(&raw).ok_or_else(|| {
            ApiError::invalid_field(
                "sent_at",
                "invalid_timestamp",
                "must be an RFC 3339 time such as 2026-11-23T10:00:00Z, within years 0000-9999 in UTC",
            )
        })?),
        None => None,
    };
    let metadata = match fields.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(raw) => Some(Metadata::parse(raw).map_err(|e| field_error("metadata", e))?),
    };
    Ok(ChatMessage {
        message_id,
        bot_id,
        conversation_id,
        user_id,
        text,
        sent_at,
        metadata,
    })
}

/// The message is passed on with `sent_at` in UTC (Kafka envelope, dead letters), so it
/// must be an RFC 3339 time there too: `0000-01-01T00:30:00+01:00` is year -1 in UTC,
/// which RFC 3339 cannot write.
fn parse_sent_at(raw: &str) -> Option<DateTime<Utc>> {
    let sent_at = to_storage_precision(DateTime::parse_from_rfc3339(raw).ok()?.with_timezone(&Utc));
    (0..=9999).contains(&sent_at.year()).then_some(sent_at)
}

fn field_error(field: &str, err: FieldError) -> ApiError {
    ApiError::invalid_field(field, err.code, err.message)
}

/// `null` and absence both mean "not given" for optional fields.
fn optional_string(
    fields: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_field(
            name,
            "invalid_type",
            "must be a string",
        )),
    }
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, ApiError> {
    optional_string(fields, name)?
        .ok_or_else(|| ApiError::invalid_field(name, "missing_field", "is required"))
}

fn optional_label(fields: &mut Map<String, Value>, name: &str) -> Result<Option<Label>, ApiError> {
    optional_string(fields, name)?
        .map(|raw| Label::parse(raw).map_err(|e| field_error(name, e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(json: &str) -> Result<ChatMessage, ApiError> {
        parse_single(json.as_bytes())
    }

    fn code_and_field(err: ApiError) -> (&'static str, Option<String>) {
        (err.code, err.field)
    }

    #[test]
    fn minimal_message_gets_an_id_and_no_sent_at() {
        let m = single(r#"{"bot_id":"b1","text":"hi"}"#).expect("valid");
        assert_eq!(m.bot_id.as_str(), "b1");
        assert_eq!(m.text.as_str(), "hi");
        assert_eq!(m.sent_at, None, "the worker uses the time received");
        assert_eq!(m.message_id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn full_message_keeps_every_field() {
        let m = single(
            r#"{"message_id":"6f1c1f4e-8a5b-4c2e-9a53-2d4a8e0f1b7c","bot_id":"b1",
                "conversation_id":"c1","user_id":"u1","text":"hello",
                "sent_at":"2026-11-22T08:00:00+02:00","metadata":{"channel":"web"}}"#,
        )
        .expect("valid");
        assert_eq!(
            m.message_id.to_string(),
            "6f1c1f4e-8a5b-4c2e-9a53-2d4a8e0f1b7c"
        );
        assert_eq!(m.conversation_id.expect("set").as_str(), "c1");
        assert_eq!(m.user_id.expect("set").as_str(), "u1");
        assert_eq!(
            m.sent_at.expect("given").to_rfc3339(),
            "2026-11-22T06:00:00+00:00"
        );
        assert_eq!(m.metadata.expect("set").as_map()["channel"], "web");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"text":"hi"}"#, "missing_field", "bot_id"),
            (r#"{"bot_id":"b1"}"#, "missing_field", "text"),
            (r#"{"bot_id":"b1","text":""}"#, "invalid_length", "text"),
            (
                r#"{"bot_id":"b 1","text":"x"}"#,
                "invalid_characters",
                "bot_id",
            ),
            (r#"{"bot_id":7,"text":"x"}"#, "invalid_type", "bot_id"),
            (
                r#"{"bot_id":"b1","text":"x","color":"red"}"#,
                "unknown_field",
                "color",
            ),
            (
                r#"{"bot_id":"b1","text":"x","message_id":"nope"}"#,
                "invalid_uuid",
                "message_id",
            ),
            (
                r#"{"bot_id":"b1","text":"x","sent_at":"yesterday"}"#,
                "invalid_timestamp",
                "sent_at",
            ),
            (
                r#"{"bot_id":"b1","text":"x","metadata":[1]}"#,
                "invalid_type",
                "metadata",
            ),
            (
                r#"{"bot_id":"b1","text":"x","user_id":false}"#,
                "invalid_type",
                "user_id",
            ),
        ];
        for (json, code, field) in cases {
            let err = single(json).expect_err(json);
            assert_eq!(
                code_and_field(err),
                (code, Some(field.to_owned())),
                "{json}"
            );
        }
    }

    #[test]
    fn sent_at_outside_years_0000_to_9999_in_utc_is_refused() {
        // Valid RFC 3339 as written, but not once in UTC, which is how it is passed on.
        for sent_at in ["0000-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"] {
            let json = format!(r#"{{"bot_id":"b1","text":"x","sent_at":"{sent_at}"}}"#);
            let err = single(&json).expect_err(sent_at);
            assert_eq!(
                code_and_field(err),
                ("invalid_timestamp", Some("sent_at".into())),
                "{sent_at}"
            );
        }
        for sent_at in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            let json = format!(r#"{{"bot_id":"b1","text":"x","sent_at":"{sent_at}"}}"#);
            single(&json).expect(sent_at);
        }
    }

    #[test]
    fn an_accepted_message_written_back_as_json_parses_to_itself() {
        // Numbers whose shortest form reads back differently unless parsing is exact.
        let m = single(
            r#"{"bot_id":"b1","text":"x","sent_at":"0000-01-01T00:00:00Z",
                "metadata":{"n":[-3e50,88888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888881]}}"#,
        )
        .expect("valid");
        let written = serde_json::to_vec(&m).expect("serialises");
        assert_eq!(parse_single(&written).expect("still valid"), m);
        let metadata = m.metadata.expect("set");
        let numbers = &metadata.as_map()["n"];
        assert_eq!(numbers[0].as_f64(), Some(-3e50));
        assert_eq!(numbers[1].as_f64(), Some(8.88888888888889e106));
    }

    #[test]
    fn long_conversation_id_is_refused() {
        let json = format!(
            r#"{{"bot_id":"b1","text":"x","conversation_id":"{}"}}"#,
            "c".repeat(129)
        );
        let err = single(&json).expect_err("too long");
        assert_eq!(
            code_and_field(err),
            ("invalid_length", Some("conversation_id".into()))
        );
    }

    #[test]
    fn malformed_json_and_non_objects_are_400s() {
        assert_eq!(single("{").expect_err("bad").code, "malformed_json");
        assert_eq!(single("[]").expect_err("bad").code, "invalid_type");
        assert_eq!(single("").expect_err("bad").code, "malformed_json");
    }

    #[test]
    fn batch_is_validated_whole_and_names_the_first_bad_index() {
        let ok = parse_batch(
            br#"[{"bot_id":"a","text":"1"},{"bot_id":"b","text":"2"}]"#,
            500,
        )
        .expect("valid");
        assert_eq!(ok.len(), 2);

        let err = parse_batch(
            br#"[{"bot_id":"a","text":"1"},{"bot_id":"b"},{"text":"3"}]"#,
            500,
        )
        .expect_err("bad");
        assert_eq!(err.index, Some(1));
        assert_eq!(err.field.as_deref(), Some("[1].text"));
    }

    #[test]
    fn batch_size_limits() {
        assert_eq!(
            parse_batch(b"[]", 500).expect_err("empty").code,
            "empty_batch"
        );
        let three =
            br#"[{"bot_id":"a","text":"1"},{"bot_id":"a","text":"2"},{"bot_id":"a","text":"3"}]"#;
        assert_eq!(
            parse_batch(three, 2).expect_err("big").code,
            "batch_too_large"
        );
        assert_eq!(parse_batch(b"{}", 2).expect_err("obj").code, "invalid_type");
    }
}
