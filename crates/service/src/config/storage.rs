//! `[storage]`: batched writes to Postgres, and how a database outage is ridden out.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::value::{count, positive};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    migrate_on_start: bool,
    full_text_search: bool,
    batch_max_rows: usize,
    batch_max_delay_ms: u64,
    concurrent_batches: usize,
    write_attempts: u32,
    write_backoff_ms: u64,
    max_outage_secs: u64,
    outage_retry_max_ms: u64,
}

/// How rows are batched, retried and held through an outage.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Apply migrations when a worker starts (`migrate` does it on demand).
    pub migrate_on_start: bool,
    /// Keep a GIN full-text index on `text` (costs write throughput; see docs).
    pub full_text_search: bool,
    /// A batch is written when it holds this many rows...
    pub batch_max_rows: NonZeroUsize,
    /// ...or when its first row has waited this long.
    pub batch_max_delay: Duration,
    /// Batches written at once (each on its own pooled connection); at most
    /// `postgres.pool_size`.
    pub concurrent_batches: NonZeroUsize,
    /// Attempts for a row the database refuses for its content before it is failed
    /// (dead-lettered), `write_backoff` apart.
    pub write_attempts: NonZeroU32,
    /// Wait between two attempts of a refused row; also the first wait between tries of
    /// a batch held through an outage.
    pub write_backoff: Duration,
    /// How long rows are held and retried while the database is unavailable before they
    /// are failed (dead-lettered); zero fails them on the first try.
    pub max_outage: Duration,
    /// Longest wait between two tries of a held batch (the wait doubles from
    /// `write_backoff` up to this); at least `write_backoff`.
    pub outage_retry_max: Duration,
}

impl TryFrom<Raw> for StorageSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if raw.outage_retry_max_ms < raw.write_backoff_ms {
            return Err(ConfigError::invalid(
                "storage.outage_retry_max_ms",
                raw.outage_retry_max_ms,
                "must be at least storage.write_backoff_ms",
            ));
        }
        Ok(StorageSettings {
            migrate_on_start: raw.migrate_on_start,
            full_text_search: raw.full_text_search,
            batch_max_rows: count("storage.batch_max_rows", raw.batch_max_rows, 10_000)?,
            batch_max_delay: Duration::from_millis(raw.batch_max_delay_ms),
            concurrent_batches: positive("storage.concurrent_batches", raw.concurrent_batches)?,
            write_attempts: positive("storage.write_attempts", raw.write_attempts)?,
            write_backoff: Duration::from_millis(raw.write_backoff_ms),
            max_outage: Duration::from_secs(raw.max_outage_secs),
            outage_retry_max: Duration::from_millis(raw.outage_retry_max_ms),
        })
    }
}
