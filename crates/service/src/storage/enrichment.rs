//! Rows stored without NLP data, read back and filled in later: by the worker's automatic
//! re-enrichment (rows locked, several workers side by side) and by `reenrich`.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::insert::{jsonb, InsertError};
use crate::domain::NlpFields;

const SELECT_UNENRICHED: &str = include_str!("../../../../sql/queries/select_unenriched.sql");
const LOCK_UNENRICHED: &str = include_str!("../../../../sql/queries/lock_unenriched.sql");
const COUNT_UNENRICHED: &str = include_str!("../../../../sql/queries/count_unenriched.sql");
const UPDATE_ENRICHMENT: &str = include_str!("../../../../sql/queries/update_enrichment.sql");

/// A row without NLP data, and where it sits in the oldest-first walk.
#[derive(Debug, Clone)]
pub struct UnenrichedRow {
    /// The row's `message_id`.
    pub message_id: Uuid,
    /// The row's `sent_at`: its partition, and with `message_id` its place in the walk.
    pub sent_at: DateTime<Utc>,
    /// The text to analyse.
    pub text: String,
}

impl UnenrichedRow {
    /// The walk's position just past this row.
    pub fn cursor(&self) -> UnenrichedCursor {
        UnenrichedCursor {
            sent_at: self.sent_at,
            message_id: self.message_id,
        }
    }
}

/// A position in the oldest-first walk over rows without NLP data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnenrichedCursor {
    sent_at: DateTime<Utc>,
    message_id: Uuid,
}

impl UnenrichedCursor {
    /// Before every row: year 1 (before any accepted `sent_at`, and one Postgres can hold).
    pub fn start() -> UnenrichedCursor {
        UnenrichedCursor {
            sent_at: DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH),
            message_id: Uuid::nil(),
        }
    }
}

/// The next `limit` rows after `cursor` with any status other than `ok`, without locks.
pub async fn select_unenriched(
    client: &impl GenericClient,
    cursor: UnenrichedCursor,
    limit: i64,
) -> Result<Vec<UnenrichedRow>, InsertError> {
    let statement = client.prepare_cached(SELECT_UNENRICHED).await?;
    let rows = client
        .query(&statement, &[&cursor.sent_at, &cursor.message_id, &limit])
        .await?;
    rows.iter().map(unenriched_row).collect()
}

/// The next `limit` rows after `cursor` worth re-enriching, locked for `client`'s
/// transaction; rows locked elsewhere are skipped.
pub async fn lock_unenriched(
    client: &impl GenericClient,
    cursor: UnenrichedCursor,
    limit: i64,
) -> Result<Vec<UnenrichedRow>, InsertError> {
    let statement = client.prepare_cached(LOCK_UNENRICHED).await?;
    let rows = client
        .query(&statement, &[&cursor.sent_at, &cursor.message_id, &limit])
        .await?;
    rows.iter().map(unenriched_row).collect()
}

/// Rows worth re-enriching, counted up to `cap`.
pub async fn count_unenriched(client: &impl GenericClient, cap: i64) -> Result<i64, InsertError> {
    let statement = client.prepare_cached(COUNT_UNENRICHED).await?;
    let row = client.query_one(&statement, &[&cap]).await?;
    Ok(row.try_get(0)?)
}

/// Fills in NLP data for rows that still lack it, and what that changes in the rollups;
/// returns how many rows changed. `nlp` entries without an analysis are skipped.
pub async fn update_enrichment(
    client: &impl GenericClient,
    rows: &[(Uuid, DateTime<Utc>, NlpFields)],
) -> Result<u64, InsertError> {
    let analysed: Vec<_> = rows
        .iter()
        .filter(|(_, _, nlp)| nlp.raw.is_some())
        .collect();
    if analysed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = analysed.iter().map(|(id, _, _)| *id).collect();
    let sent: Vec<DateTime<Utc>> = analysed.iter().map(|(_, at, _)| *at).collect();
    let labels: Vec<Option<&str>> = analysed
        .iter()
        .map(|(_, _, n)| n.sentiment_label.as_deref())
        .collect();
    let scores: Vec<Option<f32>> = analysed.iter().map(|(_, _, n)| n.sentiment_score).collect();
    let toxicity: Vec<Option<f32>> = analysed.iter().map(|(_, _, n)| n.toxicity).collect();
    let languages: Vec<Option<&str>> = analysed
        .iter()
        .map(|(_, _, n)| n.language.as_deref())
        .collect();
    let raw: Vec<_> = analysed
        .iter()
        .map(|(_, _, n)| jsonb(n.raw.as_ref()))
        .collect();
    let statement = client.prepare_cached(UPDATE_ENRICHMENT).await?;
    let changed: i64 = client
        .query_one(
            &statement,
            &[&ids, &sent, &labels, &scores, &toxicity, &languages, &raw],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

fn unenriched_row(row: &tokio_postgres::Row) -> Result<UnenrichedRow, InsertError> {
    Ok(UnenrichedRow {
        message_id: row.try_get(0)?,
        sent_at: row.try_get(1)?,
        text: row.try_get(2)?,
    })
}
