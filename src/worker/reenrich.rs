//! `reenrich`: rows stored without NLP data (the API was down, the breaker open) get it
//! afterwards, page by page, oldest first. Re-running is safe: only rows still without
//! NLP data are touched.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use uuid::Uuid;

use crate::enrich::Enricher;
use crate::storage::InsertError;

const SELECT_UNENRICHED: &str = include_str!("../../sql/queries/select_unenriched.sql");
const UPDATE_ENRICHMENT: &str = include_str!("../../sql/queries/update_enrichment.sql");

/// Rows read and enriched per page.
const PAGE: i64 = 500;
/// NLP calls at once.
const CONCURRENCY: usize = 64;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReenrichReport {
    pub examined: u64,
    pub enriched: u64,
    /// Still without NLP data (the API failed again); a later run retries them.
    pub still_failing: u64,
}

/// Enriches up to `limit` rows (all when `None`).
pub async fn reenrich(
    pool: &Pool,
    enricher: &Enricher,
    limit: Option<u64>,
) -> Result<ReenrichReport, InsertError> {
    let mut report = ReenrichReport::default();
    // Year 1: before any accepted sent_at, and representable in Postgres.
    let start = DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let mut cursor: (DateTime<Utc>, Uuid) = (start, Uuid::nil());
    loop {
        let remaining = limit.map_or(PAGE, |l| PAGE.min(l.saturating_sub(report.examined) as i64));
        if remaining == 0 {
            break;
        }
        let client = pool.get().await?;
        let select = client.prepare_cached(SELECT_UNENRICHED).await?;
        let rows = client
            .query(&select, &[&cursor.0, &cursor.1, &remaining])
            .await?;
        drop(client);
        let Some(last) = rows.last() else {
            break;
        };
        cursor = (last.try_get(1)?, last.try_get(0)?);
        let page: Vec<(Uuid, DateTime<Utc>, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        report.examined += page.len() as u64;
        let results: Vec<_> = stream::iter(page)
            .map(|(id, sent_at, text)| async move { (id, sent_at, enricher.enrich(&text).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut ids = Vec::new();
        let mut sent = Vec::new();
        let mut labels = Vec::new();
        let mut scores = Vec::new();
        let mut toxicity = Vec::new();
        let mut languages = Vec::new();
        let mut raw = Vec::new();
        for (id, sent_at, enrichment) in results {
            let Some(a) = enrichment.analysis else {
                report.still_failing += 1;
                continue;
            };
            ids.push(id);
            sent.push(sent_at);
            labels.push(a.sentiment_label);
            scores.push(a.sentiment_score);
            toxicity.push(a.toxicity);
            languages.push(a.language);
            raw.push(a.raw);
        }
        if !ids.is_empty() {
            let client = pool.get().await?;
            let update = client.prepare_cached(UPDATE_ENRICHMENT).await?;
            let n = client
                .execute(
                    &update,
                    &[&ids, &sent, &labels, &scores, &toxicity, &languages, &raw],
                )
                .await?;
            report.enriched += n;
        }
        tracing::info!(?report, "reenrich progress");
    }
    Ok(report)
}
