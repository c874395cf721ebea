//! One idempotent multi-row INSERT of processed messages, and how to read its failure.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use serde_json::value::RawValue;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::domain::{ContentDigest, FailureCode, NlpDocument, ProcessedMessage};

const INSERT_MESSAGES: &str = include_str!("../../../../sql/queries/insert_messages.sql");

/// Whose fault a failed write is: the retry and dead-letter decisions read this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The database's: unreachable, restarting, read-only, overloaded, or anything else
    /// that a healthy server would not answer. The rows are held and the write retried
    /// for as long as `storage.max_outage_secs` allows.
    Unavailable,
    /// The rows': a value the table refuses. The batch is split to find them, and only
    /// they are dead-lettered.
    Content,
}

impl FailureKind {
    /// The dead-letter code of rows that fail this way; also how logs name it.
    pub fn code(self) -> FailureCode {
        match self {
            FailureKind::Unavailable => FailureCode::DatabaseUnavailable,
            FailureKind::Content => FailureCode::RowRefused,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.code().fmt(f)
    }
}

/// A write of the storage layer failed; [`InsertError::kind`] says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// No connection could be had from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed, or its result could not be read.
    #[error("insert failed: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
}

/// The server's own words and SQLSTATE when it answered, which tokio-postgres's `Display`
/// leaves out ("db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl InsertError {
    /// Data and integrity errors (SQLSTATE classes 22 and 23, a row too large) are the
    /// rows' fault; anything else, the database's.
    pub fn kind(&self) -> FailureKind {
        match self {
            InsertError::Pool(_) => FailureKind::Unavailable,
            InsertError::Db(e) => classify(e),
        }
    }
}

/// Only data and integrity errors (SQLSTATE classes 22 and 23, and a row too large) are
/// blamed on the content; anything else might pass on a healthy server.
fn classify(e: &tokio_postgres::Error) -> FailureKind {
    let Some(code) = e.code() else {
        return FailureKind::Unavailable;
    };
    let class = &code.code()[..2];
    let content = matches!(class, "22" | "23") || *code == SqlState::PROGRAM_LIMIT_EXCEEDED;
    if content {
        FailureKind::Content
    } else {
        FailureKind::Unavailable
    }
}

/// What the database did with one row of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowWrite {
    /// Inserted now.
    Stored,
    /// Its `message_id` was stored before: with the same content (a retry, a re-delivery,
    /// a replay) or, when `same_content` is `Some(false)`, with other content.
    /// `None`: the first copy's content is not known (stored before content hashes were).
    AlreadyStored {
        /// `Some(true)`: the same content; `Some(false)`: other content; `None`: unknown.
        same_content: Option<bool>,
    },
}

/// The NLP API's answer as a `jsonb` parameter: its text goes to the server as it came.
pub(crate) fn jsonb(document: Option<&NlpDocument>) -> Option<Json<&RawValue>> {
    document.map(|d| Json(d.as_raw()))
}

/// Inserts `rows` (distinct `message_id`s) in one statement; says per `message_id` whether
/// its row is new.
pub async fn insert_messages(
    pool: &Pool,
    rows: &[ProcessedMessage],
) -> Result<HashMap<Uuid, RowWrite>, InsertError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT_MESSAGES).await?;
    let ids: Vec<Uuid> = rows
        .iter()
        .map(|r| r.message.message_id.as_uuid())
        .collect();
    let bot_ids: Vec<&str> = rows.iter().map(|r| r.message.bot_id.as_str()).collect();
    let conversation_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.message.conversation_id.as_ref().map(|l| l.as_str()))
        .collect();
    let user_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.message.user_id.as_ref().map(|l| l.as_str()))
        .collect();
    let texts: Vec<&str> = rows.iter().map(|r| r.message.text.as_str()).collect();
    let sent_at: Vec<_> = rows.iter().map(ProcessedMessage::sent_at).collect();
    let received_at: Vec<_> = rows.iter().map(|r| r.received_at).collect();
    let labels: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.nlp.sentiment_label.as_deref())
        .collect();
    let scores: Vec<Option<f32>> = rows.iter().map(|r| r.nlp.sentiment_score).collect();
    let toxicity: Vec<Option<f32>> = rows.iter().map(|r| r.nlp.toxicity).collect();
    let languages: Vec<Option<&str>> = rows.iter().map(|r| r.nlp.language.as_deref()).collect();
    let nlp: Vec<Option<Json<&RawValue>>> =
        rows.iter().map(|r| jsonb(r.nlp.raw.as_ref())).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.nlp.status.as_str()).collect();
    let flagged: Vec<bool> = rows.iter().map(|r| r.flagged).collect();
    let terms: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::Value::from(r.flagged_terms.clone()))
        .collect();
    let metadata: Vec<Option<serde_json::Value>> = rows
        .iter()
        .map(|r| r.message.metadata.clone().map(serde_json::Value::from))
        .collect();
    let partitions: Vec<Option<i32>> = rows.iter().map(|r| r.source.map(|s| s.partition)).collect();
    let offsets: Vec<Option<i64>> = rows.iter().map(|r| r.source.map(|s| s.offset)).collect();
    let digests: Vec<ContentDigest> = rows.iter().map(|r| r.message.content_digest()).collect();
    let hashes: Vec<&[u8]> = digests.iter().map(ContentDigest::as_bytes).collect();
    let inserted = client
        .query(
            &statement,
            &[
                &ids,
                &bot_ids,
                &conversation_ids,
                &user_ids,
                &texts,
                &sent_at,
                &received_at,
                &labels,
                &scores,
                &toxicity,
                &languages,
                &nlp,
                &statuses,
                &flagged,
                &terms,
                &metadata,
                &partitions,
                &offsets,
                &hashes,
            ],
        )
        .await?;
    let ours: HashMap<Uuid, &[u8]> = ids.iter().copied().zip(hashes.iter().copied()).collect();
    inserted
        .iter()
        .map(|row| {
            let id: Uuid = row.try_get(0)?;
            let write = if row.try_get(1)? {
                RowWrite::Stored
            } else {
                let theirs: Option<&[u8]> = row.try_get(2)?;
                RowWrite::AlreadyStored {
                    same_content: theirs.map(|h| ours.get(&id) == Some(&h)),
                }
            };
            Ok((id, write))
        })
        .collect()
}
