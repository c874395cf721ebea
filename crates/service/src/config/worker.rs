//! `[worker]`: the pool of in-flight messages, offset commits, and the worker's
//! background duties (partition maintenance, re-enrichment).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value::{count, positive, positive_millis, positive_secs};
use super::ConfigError;

/// Below this the group would drop a member between two heartbeats of a busy one.
const MIN_SESSION_TIMEOUT_MS: u64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    concurrency: usize,
    commit_interval_ms: u64,
    session_timeout_ms: u64,
    moderation_dir: PathBuf,
    partition_maintenance_interval_s: u64,
    reenrich: bool,
    reenrich_interval_secs: u64,
    reenrich_max_in_flight: usize,
}

/// How the worker consumes, and what it does besides.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most messages being moderated and enriched at once (a ceiling, not a target); one
    /// waiting out an NLP retry backoff does not count.
    pub concurrency: NonZeroUsize,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// How soon the group notices a dead worker and hands its partitions on.
    pub session_timeout: Duration,
    /// Directory of moderation word lists (`*.txt`).
    pub moderation_dir: PathBuf,
    /// How often partitions ahead are created and retention applied.
    pub partition_maintenance_interval: Duration,
    /// Re-enrich rows stored without NLP data in the background.
    pub reenrich: bool,
    /// Pause between two walks over such rows.
    pub reenrich_interval: Duration,
    /// Most re-enrichment NLP calls at once (taken from spare pool slots only).
    pub reenrich_max_in_flight: NonZeroUsize,
}

impl TryFrom<Raw> for WorkerSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if raw.session_timeout_ms < MIN_SESSION_TIMEOUT_MS {
            return Err(ConfigError::invalid(
                "worker.session_timeout_ms",
                raw.session_timeout_ms,
                format!("must be at least {MIN_SESSION_TIMEOUT_MS}"),
            ));
        }
        Ok(WorkerSettings {
            concurrency: count("worker.concurrency", raw.concurrency, 100_000)?,
            commit_interval: positive_millis("worker.commit_interval_ms", raw.commit_interval_ms)?,
            session_timeout: Duration::from_millis(raw.session_timeout_ms),
            moderation_dir: raw.moderation_dir,
            partition_maintenance_interval: positive_secs(
                "worker.partition_maintenance_interval_s",
                raw.partition_maintenance_interval_s,
            )?,
            reenrich: raw.reenrich,
            reenrich_interval: positive_secs(
                "worker.reenrich_interval_secs",
                raw.reenrich_interval_secs,
            )?,
            reenrich_max_in_flight: positive(
                "worker.reenrich_max_in_flight",
                raw.reenrich_max_in_flight,
            )?,
        })
    }
}
