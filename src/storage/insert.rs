//! One idempotent multi-row INSERT of processed messages, and how to read its failure.

use std::collections::HashSet;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::domain::ProcessedMessage;

const INSERT_MESSAGES: &str = include_str!("../../sql/queries/insert_messages.sql");

/// Whether retrying can help: the retry and dead-letter decisions read this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The database or the connection (down, restarting, overloaded): retry the batch.
    Transient,
    /// The rows themselves (a value the table refuses): split the batch to find them.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("insert failed: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl InsertError {
    pub fn kind(&self) -> FailureKind {
        match self {
            InsertError::Pool(_) => FailureKind::Transient,
            InsertError::Db(e) => classify(e),
        }
    }
}

/// Only data and integrity errors (SQLSTATE classes 22 and 23, and a row too large) are
/// blamed on the content; anything else might pass on a healthy server.
fn classify(e: &tokio_postgres::Error) -> FailureKind {
    let Some(code) = e.code() else {
        return FailureKind::Transient;
    };
    let class = &code.code()[..2];
    let content = matches!(class, "22" | "23") || *code == SqlState::PROGRAM_LIMIT_EXCEEDED;
    if content {
        FailureKind::Permanent
    } else {
        FailureKind::Transient
    }
}

/// Inserts `rows` in one statement; returns the ids that were new (the others were
/// already stored: a re-delivery).
pub async fn insert_messages(
    pool: &Pool,
    rows: &[ProcessedMessage],
) -> Result<HashSet<Uuid>, InsertError> {
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
    let sent_at: Vec<_> = rows.iter().map(|r| r.message.sent_at).collect();
    let received_at: Vec<_> = rows.iter().map(|r| r.received_at).collect();
    let labels: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.nlp.sentiment_label.as_deref())
        .collect();
    let scores: Vec<Option<f32>> = rows.iter().map(|r| r.nlp.sentiment_score).collect();
    let toxicity: Vec<Option<f32>> = rows.iter().map(|r| r.nlp.toxicity).collect();
    let languages: Vec<Option<&str>> = rows.iter().map(|r| r.nlp.language.as_deref()).collect();
    let nlp: Vec<Option<&serde_json::Value>> = rows.iter().map(|r| r.nlp.raw.as_ref()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.nlp.status).collect();
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
            ],
        )
        .await?;
    inserted
        .iter()
        .map(|row| row.try_get::<_, Uuid>(0).map_err(InsertError::from))
        .collect()
}
