//! `[partitions]`: how far ahead daily partitions are created, how long they are kept,
//! and where they are archived before they are dropped.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use super::value::non_empty_path;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    ahead_days: u32,
    retention_days: u32,
    archive_dir: PathBuf,
}

/// Checked once at start-up, so a typo cannot drop data later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSettings {
    /// Days after today that get a partition in advance.
    pub ahead_days: u32,
    /// Full days before today that are kept; older partitions are archived then dropped.
    pub retention_days: NonZeroU32,
    /// Where `messages_pYYYYMMDD.csv.gz` archives are written.
    pub archive_dir: PathBuf,
}

impl TryFrom<Raw> for PartitionSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let retention_days = NonZeroU32::new(raw.retention_days).ok_or_else(|| {
            ConfigError::invalid(
                "partitions.retention_days",
                raw.retention_days,
                "must be at least 1: 0 would archive and drop yesterday's partition while late \
                 messages still arrive for it",
            )
        })?;
        if raw.retention_days > 36_500 {
            return Err(ConfigError::invalid(
                "partitions.retention_days",
                raw.retention_days,
                "must be at most 36500 (100 years)",
            ));
        }
        if raw.ahead_days > 366 {
            return Err(ConfigError::invalid(
                "partitions.ahead_days",
                raw.ahead_days,
                "must be at most 366: each day is a table, and planning cost grows with the \
                 number of partitions",
            ));
        }
        Ok(PartitionSettings {
            ahead_days: raw.ahead_days,
            retention_days,
            archive_dir: non_empty_path("partitions.archive_dir", raw.archive_dir)?,
        })
    }
}
