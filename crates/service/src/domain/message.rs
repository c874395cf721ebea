//! A chat message as the rest of the pipeline sees it: every field already proven valid.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::fields::{BotId, Label, MessageText, Metadata};

/// Idempotency key of a message: the client's when given, a fresh UUID v7 otherwise
/// (time-ordered, so index inserts stay local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh UUID v7, for a message posted without `message_id`.
    pub fn generate() -> Self {
        MessageId(Uuid::now_v7())
    }

    /// The id as stored in the `message_id` column.
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
    /// Idempotency key: a message is stored once per `message_id`.
    pub message_id: MessageId,
    /// The bot that posted the message; the Kafka key, so its messages stay in order.
    pub bot_id: BotId,
    /// The conversation the message belongs to, when the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Label>,
    /// The client's id for the user in the conversation, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Label>,
    /// The message body: what moderation checks and the NLP API analyses.
    pub text: MessageText,
    /// As the client gave it; absent means "when received" (see [`Self::sent_at_or`]).
    /// Kept absent in the Kafka envelope and in dead letters, so a client's retry of the
    /// same message is recognisably the same content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The client's own data about the message, stored as jsonb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl ChatMessage {
    /// When the message was sent: the client's `sent_at`, else the time the (first
    /// accepted copy of the) message was received.
    pub fn sent_at_or(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        self.sent_at.unwrap_or(received_at)
    }

    /// A digest of what the client sent, `message_id` aside: two posts of one
    /// `message_id` with the same digest are one message retried; with different digests,
    /// a conflict (the first stored wins). An absent `sent_at` is part of the content, so a
    /// retry without it matches the first post whenever either was received.
    pub fn content_digest(&self) -> ContentDigest {
        #[derive(Serialize)]
        struct Content<'a> {
            bot_id: &'a BotId,
            conversation_id: &'a Option<Label>,
            user_id: &'a Option<Label>,
            text: &'a MessageText,
            sent_at: &'a Option<DateTime<Utc>>,
            metadata: &'a Option<Metadata>,
        }
        let content = Content {
            bot_id: &self.bot_id,
            conversation_id: &self.conversation_id,
            user_id: &self.user_id,
            text: &self.text,
            sent_at: &self.sent_at,
            metadata: &self.metadata,
        };
        let mut hasher = Sha256::new();
        // Strings, a time and a JSON object (keys sorted): serialising cannot fail, and
        // the same content always gives the same bytes.
        if serde_json::to_writer(&mut HashWriter(&mut hasher), &content).is_err() {
            hasher.update(self.text.as_str());
        }
        let full = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        ContentDigest(digest)
    }
}

/// The first 16 bytes of a SHA-256 over a message's content: collisions are out of
/// reach for any number of messages a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest([u8; 16]);

impl ContentDigest {
    /// The 16 bytes, as stored in `message_keys.content_hash`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Feeds serde_json's output straight into the hasher, without a buffer.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Postgres keeps microseconds: truncating here keeps `(message_id, sent_at)` identical
/// in Kafka, in the table and in dead letters.
pub fn to_storage_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}
