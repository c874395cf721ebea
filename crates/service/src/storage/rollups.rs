//! The rollups' upkeep (sql/0005_rollups.sql): folding what writers left in
//! `rollup_pending` and `flagged_terms_pending` into the per-minute, hour and day tables,
//! and the rollups' own retention. What is pending is appended by the statements that
//! store and re-enrich rows, in their transactions; readers add it, so figures are exact
//! whether or not a fold has run.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Pool};
use futures::pin_mut;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::partitions::retention_cutoff;
use crate::config::RollupSettings;
use crate::telemetry::{register, LATENCY_BUCKETS};

const FOLD_ROLLUPS: &str = include_str!("../../../../sql/queries/fold_rollups.sql");
const FOLD_FLAGGED_TERMS: &str = include_str!("../../../../sql/queries/fold_flagged_terms.sql");

/// Advisory lock key ("rollfold"): one folder at a time across replicas, so two folds
/// never upsert the same rollup rows in different orders. sql/0011 takes it too (as
/// 8245928655569513572), to rebuild the hours and days while no fold runs.
const FOLD_LOCK: i64 = 0x726f_6c6c_666f_6c64;

/// Rows deleted per retention statement.
const PRUNE_CHUNK: i64 = 10_000;

/// Each rollup table and what makes one of its rows older than the cutoff `$1`.
/// Minute rows not yet in the hour and day rollups (sql/0011) are kept whatever their age.
const MINUTE_TABLE: (&str, &str) = (
    "messages_per_minute",
    "bucket < $1 AND bucket < rollup_minutes_mark()",
);
const LONG_KEPT: [(&str, &str); 3] = [
    ("messages_per_hour", "bucket < $1"),
    ("messages_per_day", "bucket < $1"),
    (
        "flagged_terms_per_day",
        "day < ($1 AT TIME ZONE 'UTC')::date",
    ),
];

/// Counts what is left pending after a fold, up to a cap (the gauge need not be exact
/// when far behind, and counting must stay cheap).
const COUNT_PENDING: &str =
    "SELECT count(*) FROM (SELECT 1 FROM rollup_pending LIMIT 1000000) AS pending";

/// Why a fold or a retention pass failed; the next tick tries again.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// No connection could be had from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed (its transaction rolled back: nothing moved).
    #[error("rollup statement failed: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The retention cutoff fell outside the calendar.
    #[error(transparent)]
    Cutoff(#[from] super::partitions::PartitionError),
}

/// What one fold transaction moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Pending rollup rows moved into the per-minute, hour and day rollups.
    pub rollup_rows: i64,
    /// Pending flagged-term rows moved into `flagged_terms_per_day`.
    pub term_rows: i64,
}

/// Moves up to `batch` pending rows of each kind in one transaction, and closes the
/// minutes before `now`'s for the hour and day rollups; `None` when another process holds
/// the fold lock (it is folding the same rows).
pub async fn fold_pending(
    client: &mut deadpool_postgres::Object,
    batch: i64,
    now: DateTime<Utc>,
) -> Result<Option<Folded>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // The setting tells sql/0011's guard that this writer knows the minute mark.
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1), \
                    set_config('chat_analytics.rollup_writer', 'minute_mark', true)",
            &[&FOLD_LOCK],
        )
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let rollups = tx.prepare_cached(FOLD_ROLLUPS).await?;
    let terms = tx.prepare_cached(FOLD_FLAGGED_TERMS).await?;
    let rollup_rows: i64 = tx.query_one(&rollups, &[&batch, &now]).await?.try_get(0)?;
    let term_rows: i64 = tx.query_one(&terms, &[&batch]).await?.try_get(0)?;
    tx.commit().await?;
    Ok(Some(Folded {
        rollup_rows,
        term_rows,
    }))
}

/// Deletes rollup rows older than retention: per-minute rows before `minute_cutoff`, the
/// rest before `cutoff`. In chunks, so no statement holds many locks or runs long.
pub async fn prune_rollups(
    client: &impl GenericClient,
    minute_cutoff: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<u64, tokio_postgres::Error> {
    let mut pruned = 0;
    let tables = std::iter::once((MINUTE_TABLE, minute_cutoff))
        .chain(LONG_KEPT.into_iter().map(|table| (table, cutoff)));
    for ((table, expired), before) in tables {
        // Table names and predicates are the constants above, never input.
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY (ARRAY(\
                 SELECT ctid FROM {table} WHERE {expired} LIMIT $2))"
        );
        let statement = client.prepare_cached(&sql).await?;
        loop {
            let deleted = client.execute(&statement, &[&before, &PRUNE_CHUNK]).await?;
            pruned += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                break;
            }
        }
    }
    Ok(pruned)
}

/// The folder's metrics; cheap to clone.
#[derive(Clone)]
pub struct RollupMetrics {
    /// `rollup_rows_folded_total`: pending rollup rows moved into the rollups.
    folded: IntCounter,
    /// `rollup_pending_rows`: rows still pending after the last fold (0 when caught up).
    pending: IntGauge,
    /// `rollup_fold_duration_seconds`: one observation per fold transaction; its sum over
    /// time is the share of a database connection the rollups' upkeep takes.
    fold_duration: Histogram,
}

impl RollupMetrics {
    /// Registers the metrics at 0.
    pub fn register(registry: &Registry) -> Result<RollupMetrics, prometheus::Error> {
        Ok(RollupMetrics {
            folded: register(
                registry,
                IntCounter::new(
                    "rollup_rows_folded_total",
                    "Pending rollup rows folded into the per-minute, hour and day rollups",
                )?,
            )?,
            pending: register(
                registry,
                IntGauge::new(
                    "rollup_pending_rows",
                    "Rollup rows left pending after the last fold (the folder is behind when \
                     this grows)",
                )?,
            )?,
            fold_duration: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rollup_fold_duration_seconds",
                        "Time of one fold transaction (pending rows into the rollups)",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            )?,
        })
    }
}

/// Folds pending rollup rows on a timer and applies the rollups' retention once a day
/// (and at start); in the worker.
pub struct RollupFolder {
    pool: Pool,
    settings: RollupSettings,
    metrics: RollupMetrics,
}

impl RollupFolder {
    /// A folder on `pool` with `[rollups]` settings.
    pub fn new(pool: Pool, settings: RollupSettings, metrics: RollupMetrics) -> Self {
        RollupFolder {
            pool,
            settings,
            metrics,
        }
    }

    /// Folds until less than a batch is pending (or another process holds the lock);
    /// returns the rollup rows moved.
    pub async fn fold(&self) -> Result<i64, RollupError> {
        let mut client = self.pool.get().await?;
        let batch = self.settings.fold_batch.get();
        let mut moved = 0;
        loop {
            let started = std::time::Instant::now();
            let Some(folded) = fold_pending(&mut client, batch, Utc::now()).await? else {
                break;
            };
            self.metrics
                .fold_duration
                .observe(started.elapsed().as_secs_f64());
            moved += folded.rollup_rows;
            self.metrics
                .folded
                .inc_by(u64::try_from(folded.rollup_rows).unwrap_or(0));
            if folded.rollup_rows < batch && folded.term_rows < batch {
                break;
            }
        }
        let pending: i64 = client.query_one(COUNT_PENDING, &[]).await?.try_get(0)?;
        self.metrics.pending.set(pending);
        Ok(moved)
    }

    /// Deletes rollup rows older than their retention, counted from `today`.
    pub async fn retain(&self, today: NaiveDate) -> Result<u64, RollupError> {
        let client = self.pool.get().await?;
        let minute_cutoff = retention_cutoff(today, self.settings.minute_retention_days.get())?;
        let cutoff = retention_cutoff(today, self.settings.retention_days.get())?;
        let pruned = prune_rollups(&client, minute_cutoff, cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, %minute_cutoff, %cutoff, "expired rollup rows deleted");
        }
        Ok(pruned)
    }

    /// Folds every `rollups.fold_interval`, and applies retention at start and whenever
    /// the UTC date changes, until `stop` completes. A failed pass is logged and retried
    /// at the next tick: nothing is lost meanwhile, readers add what is pending.
    pub async fn run_until(&self, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.settings.fold_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pin_mut!(stop);
        let mut retained_on = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.fold().await {
                tracing::warn!(%error, "rollup fold failed; retrying at the next tick");
            }
            let today = Utc::now().date_naive();
            if retained_on != Some(today) {
                match self.retain(today).await {
                    Ok(_) => retained_on = Some(today),
                    Err(error) => {
                        tracing::warn!(%error, "rollup retention failed; retrying at the next tick")
                    }
                }
            }
        }
    }
}
