//! A maintenance pass (create ahead, then retention) and the loop that runs it on a timer.

use std::future::Future;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use deadpool_postgres::Pool;
use futures::pin_mut;

use super::{
    apply_retention, ensure_partitions, retention_cutoff, ArchivedPartition, PartitionError,
};
use crate::config::PartitionSettings;

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions created ahead, by name.
    pub created: Vec<String>,
    /// Partitions archived and dropped by retention.
    pub archived: Vec<ArchivedPartition>,
}

/// Runs [`ensure_partitions`] and [`apply_retention`] with the configured settings, on
/// a timer in the worker and once from the `migrate` and `partitions` commands.
pub struct PartitionMaintainer {
    pool: Pool,
    settings: PartitionSettings,
}

impl PartitionMaintainer {
    /// A maintainer on `pool`, with settings checked at load.
    pub fn new(pool: Pool, settings: PartitionSettings) -> Self {
        PartitionMaintainer { pool, settings }
    }

    /// Creates the partitions ahead only (what `migrate` needs before writes start).
    pub async fn ensure(&self, today: NaiveDate) -> Result<Vec<String>, PartitionError> {
        let mut client = self.pool.get().await?;
        ensure_partitions(&mut client, today, self.settings.ahead_days).await
    }

    /// Archives and drops what retention says is expired, then the message keys older
    /// than the same cutoff.
    pub async fn retain(&self, today: NaiveDate) -> Result<Vec<ArchivedPartition>, PartitionError> {
        let mut client = self.pool.get().await?;
        let archived = apply_retention(
            &mut client,
            today,
            self.settings.retention_days.get(),
            &self.settings.archive_dir,
        )
        .await?;
        let cutoff = retention_cutoff(today, self.settings.retention_days.get())?;
        let pruned = crate::storage::keys::prune_message_keys(&client, cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, %cutoff, "expired message keys deleted");
        }
        Ok(archived)
    }

    /// One pass: create ahead, then retention. Retention runs even when creation failed
    /// (a stuck creation must not let the disk fill up); the first error is returned and
    /// the other logged.
    pub async fn run_once(&self, today: NaiveDate) -> Result<MaintenanceReport, PartitionError> {
        let created = self.ensure(today).await;
        let archived = self.retain(today).await;
        match (created, archived) {
            (Ok(created), Ok(archived)) => Ok(MaintenanceReport { created, archived }),
            (Err(error), Err(also)) => {
                tracing::warn!(error = %also, "retention failed too");
                Err(error)
            }
            (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
        }
    }

    /// Runs a pass now and then every `every` until `stop` completes; a failed pass is
    /// logged and retried at the next tick (partitions exist days ahead, so one missed
    /// pass costs nothing). Uses tokio's clock, so tests can pause time.
    pub async fn run_until(&self, every: Duration, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pin_mut!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            let today = Utc::now().date_naive();
            match self.run_once(today).await {
                Ok(report) => tracing::debug!(
                    created = report.created.len(),
                    archived = report.archived.len(),
                    "partition maintenance pass done"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    partition = error.partition().unwrap_or("-"),
                    "partition maintenance pass failed; retrying at the next tick"
                ),
            }
        }
    }
}
