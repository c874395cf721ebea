//! A chat message as the rest of the pipeline sees it: every field already proven valid.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fields::{BotId, Label, MessageText, Metadata};

/// Idempotency key of a message: the client's when given, a fresh UUID v7 otherwise
/// (time-ordered, so index inserts stay local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    pub fn generate() -> Self {
        MessageId(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for MessageId {
    fn from(id: Uuid) -> Self {
        MessageId(id)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An accepted chat message. Built only by the ingest parser (or decoded from an
/// envelope the parser wrote), so holders can trust every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub message_id: MessageId,
    pub bot_id: BotId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Label>,
    pub text: MessageText,
    pub sent_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Postgres keeps microseconds: truncating here keeps `(message_id, sent_at)` identical
/// in Kafka, in the table and in dead letters.
pub fn to_storage_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}
