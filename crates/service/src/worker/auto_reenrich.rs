//! Rows stored without NLP data (breaker open, failed after retries, invalid response) are
//! enriched by the worker in the background once the NLP API is healthy again.
//!
//! - Only while the breaker is not open; when it opens mid-way the walk stops at once.
//!   While it is half-open the walk takes one row at a time, a trial call the breaker may
//!   admit (at least one a second): with no live traffic at all, that is what closes it.
//! - Oldest first, in batches locked with `FOR UPDATE SKIP LOCKED`: several workers walk
//!   side by side without enriching a row twice, and a row is updated in the transaction
//!   that locked it.
//! - Never at the expense of live messages: each call holds a slot of the worker pool,
//!   taken only when free, and only while a quarter of the pool stays free for live
//!   traffic; each call is a single attempt that leaves the retry budget alone.
//! - Gentle with the API: a walk ends at the first batch with a failed call (a timeout or
//!   an error says the API has no capacity to spare), and the next starts
//!   `worker.reenrich_interval_secs` later. A walk goes from the oldest row to the newest.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::pipeline::nlp_fields;
use crate::config::WorkerSettings;
use crate::enrich::{BreakerState, Enricher};
use crate::storage::{
    count_unenriched, lock_unenriched, update_enrichment, InsertError, UnenrichedCursor,
};
use crate::telemetry::register;

/// The backlog gauge counts at most this many rows (a bounded index scan).
const BACKLOG_COUNT_CAP: i64 = 10_000_000;
/// Between two half-open trials: the breaker admits at least one a second.
const HALF_OPEN_TRIAL_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for spare pool slots before looking again.
const SLOTS_RECHECK: Duration = Duration::from_millis(100);

/// Metrics of the automatic re-enrichment.
#[derive(Clone)]
pub struct ReenrichMetrics {
    /// Rows waiting for NLP data (`reenrich_backlog`).
    pub backlog: prometheus::IntGauge,
    /// Rows whose NLP data was filled in (`rows_reenriched_total`).
    pub reenriched: prometheus::IntCounter,
}

impl ReenrichMetrics {
    pub(crate) fn register(
        registry: &prometheus::Registry,
    ) -> Result<ReenrichMetrics, prometheus::Error> {
        let backlog = register(
            registry,
            prometheus::IntGauge::new(
                "reenrich_backlog",
                "Rows stored without NLP data that the worker will re-enrich once the NLP API is healthy",
            )?,
        )?;
        let reenriched = register(
            registry,
            prometheus::IntCounter::new(
                "rows_reenriched_total",
                "Rows stored without NLP data whose NLP data the worker filled in afterwards",
            )?,
        )?;
        Ok(ReenrichMetrics {
            backlog,
            reenriched,
        })
    }
}

/// Re-enriches stored rows in the background.
pub struct AutoReenricher {
    settings: WorkerSettings,
    pool: Pool,
    enricher: Enricher,
    metrics: ReenrichMetrics,
}

impl AutoReenricher {
    pub(crate) fn new(
        settings: WorkerSettings,
        pool: Pool,
        enricher: Enricher,
        metrics: ReenrichMetrics,
    ) -> AutoReenricher {
        AutoReenricher {
            settings,
            pool,
            enricher,
            metrics,
        }
    }

    /// Walks every interval until `stop`, taking NLP capacity only from `slots` (the
    /// worker pool) when it is spare.
    pub async fn run(self: Arc<Self>, slots: Arc<Semaphore>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.reenrich_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(err) = self.update_backlog().await {
                tracing::debug!(error = %err, "cannot count rows waiting for NLP data");
                continue;
            }
            if self.metrics.backlog.get() == 0 || self.breaker() == BreakerState::Open {
                continue;
            }
            match self.walk(&slots, &stop).await {
                Ok(0) => {}
                Ok(enriched) => {
                    tracing::info!(enriched, "re-enriched rows stored without NLP data")
                }
                Err(err) => tracing::warn!(error = %err, "re-enrichment stopped; retrying later"),
            }
        }
    }

    fn breaker(&self) -> BreakerState {
        self.enricher.breaker_state()
    }

    async fn update_backlog(&self) -> Result<(), InsertError> {
        let client = self.pool.get().await?;
        let waiting = count_unenriched(&client, BACKLOG_COUNT_CAP).await?;
        self.metrics.backlog.set(waiting);
        Ok(())
    }

    /// One walk from the oldest row to the newest; returns the rows enriched.
    async fn walk(
        &self,
        slots: &Arc<Semaphore>,
        stop: &CancellationToken,
    ) -> Result<u64, InsertError> {
        let mut cursor = UnenrichedCursor::start();
        let mut enriched = 0;
        loop {
            let breaker = self.breaker();
            if stop.is_cancelled() || breaker == BreakerState::Open {
                return Ok(enriched);
            }
            let spare = match breaker {
                BreakerState::HalfOpen => self.spare_slots(slots).min(1),
                _ => self.spare_slots(slots),
            };
            let taken = u32::try_from(spare)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| slots.clone().try_acquire_many_owned(n).ok());
            let Some(permits) = taken else {
                tokio::select! {
                    () = tokio::time::sleep(SLOTS_RECHECK) => continue,
                    () = stop.cancelled() => return Ok(enriched),
                }
            };
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let rows = lock_unenriched(&tx, cursor, spare as i64).await?;
            let Some(last) = rows.last() else {
                return Ok(enriched);
            };
            cursor = last.cursor();
            let results: Vec<_> = stream::iter(rows)
                .map(|row| async move {
                    let nlp = nlp_fields(self.enricher.enrich_once(&row.text).await);
                    (row.message_id, row.sent_at, nlp)
                })
                .buffer_unordered(spare)
                .collect()
                .await;
            drop(permits);
            let failed = results
                .iter()
                .filter(|(_, _, nlp)| nlp.raw.is_none())
                .count();
            let updated = update_enrichment(&tx, &results).await?;
            tx.commit().await?;
            enriched += updated;
            self.metrics.reenriched.inc_by(updated);
            self.metrics.backlog.sub(updated as i64);
            if breaker == BreakerState::Closed && failed > 0 {
                // The API is struggling (timeouts, errors): leave it to live messages
                // until the next walk rather than push it into opening the breaker.
                return Ok(enriched);
            }
            if breaker == BreakerState::HalfOpen && updated == 0 {
                // Not admitted as a trial (or the trial failed): the next chance is the
                // breaker's next trial, about a second away.
                tokio::select! {
                    () = tokio::time::sleep(HALF_OPEN_TRIAL_WAIT) => {}
                    () = stop.cancelled() => return Ok(enriched),
                }
            }
        }
    }

    /// Slots this walk may take now: what is free beyond a quarter of the pool, up to
    /// `reenrich_max_in_flight`; 0 when live messages need them.
    fn spare_slots(&self, slots: &Semaphore) -> usize {
        let reserve = self.settings.concurrency.get().div_ceil(4);
        slots
            .available_permits()
            .saturating_sub(reserve)
            .min(self.settings.reenrich_max_in_flight.get())
    }
}
