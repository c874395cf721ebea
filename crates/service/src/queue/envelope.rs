//! The record value written to `chat.messages`:
//! `{"v": 1, "received_at": "...", "message": {...}}`.
//!
//! The version field lets a consumer refuse a format it does not know instead of
//! mis-reading it; decoding re-validates every message field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ChatMessage;

/// The envelope format this build writes, and the only one it reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// A Kafka record value: the accepted message, when it was accepted, and the format
/// version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version: [`ENVELOPE_VERSION`].
    pub v: u32,
    /// When ingest accepted the message (microseconds): the row's `received_at`, and its
    /// `sent_at` when the client gave none.
    pub received_at: DateTime<Utc>,
    /// The accepted message; its fields are checked again when decoded.
    pub message: ChatMessage,
}

/// The envelope's wire form, borrowing the message so publishing does not copy it.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    received_at: DateTime<Utc>,
    message: &'a ChatMessage,
}

/// Encodes `message` as an envelope record value.
pub fn encode_message(message: &ChatMessage, received_at: DateTime<Utc>) -> Vec<u8> {
    let envelope = EnvelopeRef {
        v: ENVELOPE_VERSION,
        received_at,
        message,
    };
    // Every field is a plain string, number or JSON object: serialising cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Why a record value is not an envelope this build can read; the record is
/// dead-lettered (stage `decode`).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, not the envelope's shape, or a message field that breaks a rule.
    #[error("record value is not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A `v` other than [`ENVELOPE_VERSION`], e.g. written by a newer build.
    #[error("envelope version {0} is not supported (expected {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
}

impl Envelope {
    /// An envelope of the current version.
    pub fn new(message: ChatMessage, received_at: DateTime<Utc>) -> Self {
        Envelope {
            v: ENVELOPE_VERSION,
            received_at,
            message,
        }
    }

    /// The record value: the bytes [`encode_message`] gives for the same message.
    pub fn encode(&self) -> Vec<u8> {
        encode_message(&self.message, self.received_at)
    }

    /// Reads a record value, refusing other versions and invalid message fields.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(envelope.v));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BotId, MessageId, MessageText, Metadata};

    fn message() -> ChatMessage {
        ChatMessage {
            message_id: MessageId::generate(),
            bot_id: BotId::parse("b1".into()).expect("valid"),
            conversation_id: None,
            user_id: None,
            text: MessageText::parse("hi".into()).expect("valid"),
            sent_at: Some("2026-11-23T10:00:00.123456Z".parse().expect("time")),
            metadata: Some(Metadata::parse(serde_json::json!({"lang": "en"})).expect("valid")),
        }
    }

    #[test]
    fn round_trips_and_has_the_spec_shape() {
        let env = Envelope::new(message(), "2026-11-23T10:00:01Z".parse().expect("time"));
        let bytes = env.encode();
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["v"], 1);
        assert_eq!(value["received_at"], "2026-11-23T10:00:01Z");
        assert_eq!(value["message"]["bot_id"], "b1");
        assert_eq!(value["message"]["text"], "hi");
        assert!(value["message"].get("user_id").is_none());
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), env);
    }

    #[test]
    fn refuses_other_versions_and_invalid_fields() {
        let mut value = serde_json::to_value(Envelope::new(message(), Utc::now())).expect("json");
        value["v"] = 2.into();
        assert!(matches!(
            Envelope::decode(&serde_json::to_vec(&value).expect("json")),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        value["v"] = 1.into();
        value["message"]["bot_id"] = "has space".into();
        assert!(matches!(
            Envelope::decode(&serde_json::to_vec(&value).expect("json")),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(Envelope::decode(b"\xff\x00").is_err());
    }
}
