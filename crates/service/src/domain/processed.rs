//! A message after moderation and enrichment: exactly what one `messages` row holds.

use chrono::{DateTime, Utc};

use super::{ChatMessage, NlpStatus};

/// Where a record was read from, kept on the row for tracing a row back to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition {
    pub partition: i32,
    pub offset: i64,
}

/// NLP results as stored; all `None` when the message was stored without them.
#[derive(Debug, Clone, PartialEq)]
pub struct NlpFields {
    pub sentiment_label: Option<String>,
    pub sentiment_score: Option<f32>,
    pub toxicity: Option<f32>,
    pub language: Option<String>,
    /// The NLP API's whole answer, for fields not broken out into columns.
    pub raw: Option<serde_json::Value>,
    /// [`NlpStatus::Ok`], or why there is no NLP data.
    pub status: NlpStatus,
}

impl NlpFields {
    /// A row stored without NLP data, and why.
    pub fn missing(status: NlpStatus) -> NlpFields {
        NlpFields {
            sentiment_label: None,
            sentiment_score: None,
            toxicity: None,
            language: None,
            raw: None,
            status,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedMessage {
    pub message: ChatMessage,
    pub received_at: DateTime<Utc>,
    pub nlp: NlpFields,
    pub flagged: bool,
    pub flagged_terms: Vec<String>,
    pub source: Option<SourcePosition>,
}

impl ProcessedMessage {
    /// The row's `sent_at`: the client's, else the time the message was received.
    pub fn sent_at(&self) -> DateTime<Utc> {
        self.message.sent_at_or(self.received_at)
    }
}
