//! `reenrich`: rows stored without NLP data (the API was down, the breaker open) get it
//! afterwards, page by page, oldest first. Re-running is safe: only rows still without
//! NLP data are touched. The worker does the same by itself ([`super::AutoReenricher`]).

use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::pipeline::nlp_fields;
use crate::enrich::Enricher;
use crate::storage::{select_unenriched, update_enrichment, InsertError, UnenrichedCursor};

/// Rows read and enriched per page.
const PAGE: i64 = 500;
/// NLP calls at once.
const CONCURRENCY: usize = 64;

/// What a `reenrich` run did; printed as JSON.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReenrichReport {
    /// Rows without NLP data read.
    pub examined: u64,
    /// Rows whose NLP data was filled in.
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
    let mut cursor = UnenrichedCursor::start();
    loop {
        let remaining = limit.map_or(PAGE, |l| PAGE.min(l.saturating_sub(report.examined) as i64));
        if remaining == 0 {
            break;
        }
        let page = select_unenriched(&pool.get().await?, cursor, remaining).await?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.cursor();
        report.examined += page.len() as u64;
        let results: Vec<_> = stream::iter(page)
            .map(|row| async move {
                let nlp = nlp_fields(enricher.enrich(&row.text).await);
                (row.message_id, row.sent_at, nlp)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        report.still_failing += results.iter().filter(|(_, _, n)| n.raw.is_none()).count() as u64;
        report.enriched += update_enrichment(&pool.get().await?, &results).await?;
        tracing::info!(?report, "reenrich progress");
    }
    Ok(report)
}
