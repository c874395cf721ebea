//! One line of a dead-letter file:
//! `{"message": {...}, "stage": "...", "error": "...", "attempts": N, "failed_at": "...",
//!   "kafka": {"partition": P, "offset": O}}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::fmt::Display;

use crate::domain::{ChatMessage, FailureCode, SourcePosition};

/// The pipeline stage that gave up on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The Kafka record was not a valid envelope.
    Decode,
    /// Postgres refused or was unreachable after the retries.
    Storage,
    /// Processing the message panicked.
    Panic,
}

impl Stage {
    /// Every stage, so each `dead_letters_total{stage}` series can be exported at 0
    /// from start.
    pub const ALL: [Stage; 3] = [Stage::Decode, Stage::Storage, Stage::Panic];

    /// The stage as a dead letter's `stage` names it; also the `stage` label of
    /// `dead_letters_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Storage => "storage",
            Stage::Panic => "panic",
        }
    }
}

/// Where a dead letter's record was read from in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// Partition of `kafka.topic`.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
}

impl From<SourcePosition> for KafkaPosition {
    fn from(p: SourcePosition) -> Self {
        KafkaPosition {
            partition: p.partition,
            offset: p.offset,
        }
    }
}

/// A message the pipeline could not store, with everything needed to replay it.
///
/// `message` is the chat message as accepted, or for an undecodable record
/// `{"raw_key": ..., "raw_value": ...}` (lossy UTF-8) so an operator can see what came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The chat message as accepted, or `{"raw_key": ..., "raw_value": ...}` for an
    /// undecodable record.
    pub message: serde_json::Value,
    /// When ingest accepted the message; absent for an undecodable record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// The stage that gave up.
    pub stage: Stage,
    /// `<code>: <detail>`, the code a [`FailureCode`].
    pub error: String,
    /// Attempts the stage made before giving up.
    pub attempts: u32,
    /// When the message was dead-lettered (UTC); its day names the file.
    pub failed_at: DateTime<Utc>,
    /// Where the record was read from in Kafka, when it came from there.
    #[serde(default)]
    pub kafka: Option<KafkaPosition>,
}

impl DeadLetter {
    pub(crate) fn for_message(
        message: &ChatMessage,
        received_at: DateTime<Utc>,
        stage: Stage,
        code: FailureCode,
        detail: impl Display,
        attempts: u32,
        source: Option<SourcePosition>,
    ) -> DeadLetter {
        DeadLetter {
            message: serde_json::to_value(message).unwrap_or(serde_json::Value::Null),
            received_at: Some(received_at),
            stage,
            error: code.describe(detail),
            attempts,
            failed_at: Utc::now(),
            kafka: source.map(KafkaPosition::from),
        }
    }

    pub(crate) fn undecodable(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        detail: impl Display,
        source: SourcePosition,
    ) -> DeadLetter {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        DeadLetter {
            message: serde_json::json!({
                "raw_key": key.map(lossy),
                "raw_value": value.map(lossy),
            }),
            received_at: None,
            stage: Stage::Decode,
            error: FailureCode::Undecodable.describe(detail),
            attempts: 1,
            failed_at: Utc::now(),
            kafka: Some(source.into()),
        }
    }

    /// Why the message failed, when its `error` starts with a known code.
    pub fn code(&self) -> Option<FailureCode> {
        FailureCode::of(&self.error)
    }

    /// The chat message to replay, when this dead letter holds a valid one.
    pub fn chat_message(&self) -> Option<ChatMessage> {
        serde_json::from_value(self.message.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BotId, MessageId, MessageText};

    #[test]
    fn all_lists_every_stage_labelled_as_in_the_file() {
        for stage in Stage::ALL {
            // A new variant does not compile here until it is added to ALL too.
            match stage {
                Stage::Decode | Stage::Storage | Stage::Panic => {}
            }
            assert_eq!(
                serde_json::to_value(stage).expect("json"),
                stage.as_str(),
                "the metric label and the dead-letter line name a stage alike"
            );
        }
    }

    #[test]
    fn line_has_the_spec_fields() {
        let message = ChatMessage {
            message_id: MessageId::generate(),
            bot_id: BotId::parse("b1".into()).expect("valid"),
            conversation_id: None,
            user_id: None,
            text: MessageText::parse("hi".into()).expect("valid"),
            sent_at: Some(Utc::now()),
            metadata: None,
        };
        let dl = DeadLetter::for_message(
            &message,
            Utc::now(),
            Stage::Storage,
            FailureCode::DatabaseUnavailable,
            "connection refused",
            2,
            Some(SourcePosition {
                partition: 3,
                offset: 42,
            }),
        );
        let v = serde_json::to_value(&dl).expect("json");
        for key in [
            "message",
            "stage",
            "error",
            "attempts",
            "failed_at",
            "kafka",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["stage"], "storage");
        assert_eq!(v["error"], "database_unavailable: connection refused");
        assert_eq!(dl.code(), Some(FailureCode::DatabaseUnavailable));
        assert_eq!(v["kafka"]["partition"], 3);
        assert_eq!(v["kafka"]["offset"], 42);
        assert_eq!(dl.chat_message(), Some(message));
    }

    #[test]
    fn undecodable_records_keep_their_bytes_but_cannot_replay() {
        let dl = DeadLetter::undecodable(
            Some(b"k"),
            Some(b"\xffnot json"),
            "bad envelope",
            SourcePosition {
                partition: 0,
                offset: 1,
            },
        );
        assert_eq!(dl.stage, Stage::Decode);
        assert_eq!(dl.error, "undecodable: bad envelope");
        assert_eq!(dl.code(), Some(FailureCode::Undecodable));
        assert!(dl.message["raw_value"]
            .as_str()
            .is_some_and(|s| s.ends_with("not json")));
        assert!(dl.chat_message().is_none());
    }
}
