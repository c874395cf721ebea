//! A message after moderation and enrichment: exactly what one `messages` row holds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::{ChatMessage, NlpStatus};

/// Where a record was read from, kept on the row for tracing a row back to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition {
    /// Partition of `kafka.topic`.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
}

/// The NLP API's answer as it came: checked to be JSON, never parsed into a tree, since
/// it is only written out again (the `nlp` jsonb column).
#[derive(Debug, Clone)]
pub struct NlpDocument(Box<RawValue>);

impl NlpDocument {
    /// The answer if `text` is one JSON value.
    pub fn parse(text: &str) -> Result<NlpDocument, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(NlpDocument)
    }

    /// The JSON text, as the API sent it.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl From<Box<RawValue>> for NlpDocument {
    fn from(raw: Box<RawValue>) -> NlpDocument {
        NlpDocument(raw)
    }
}

/// Two answers are the same when their text is.
impl PartialEq for NlpDocument {
    fn eq(&self, other: &NlpDocument) -> bool {
        self.0.get() == other.0.get()
    }
}

/// NLP results as stored; all `None` when the message was stored without them.
#[derive(Debug, Clone, PartialEq)]
pub struct NlpFields {
    /// `positive`, `neutral` or `negative`.
    pub sentiment_label: Option<String>,
    /// Sentiment from -1.0 (negative) to 1.0 (positive).
    pub sentiment_score: Option<f32>,
    /// Toxicity from 0.0 to 1.0, the NLP API's second opinion next to `flagged`.
    pub toxicity: Option<f32>,
    /// ISO 639-1 two-letter code, or `und` when the API could not tell.
    pub language: Option<String>,
    /// The NLP API's whole answer, for fields not broken out into columns.
    pub raw: Option<NlpDocument>,
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

/// A message ready to be a `messages` row: moderated, enriched (or why not), and
/// where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedMessage {
    /// The accepted message; shared, so the worker keeps it (for a dead letter or a log
    /// line) while the batch writer holds the row, without a copy of its text.
    pub message: Arc<ChatMessage>,
    /// When ingest accepted it, in microseconds as stored.
    pub received_at: DateTime<Utc>,
    /// The NLP results, or why there are none.
    pub nlp: NlpFields,
    /// Keyword moderation matched at least one listed term.
    pub flagged: bool,
    /// The normalised terms that matched, each once.
    pub flagged_terms: Vec<String>,
    /// Where the record was read from in Kafka; `None` for a dead letter replayed
    /// without one.
    pub source: Option<SourcePosition>,
}

impl ProcessedMessage {
    /// The row's `sent_at`: the client's, else the time the message was received.
    pub fn sent_at(&self) -> DateTime<Utc> {
        self.message.sent_at_or(self.received_at)
    }
}
