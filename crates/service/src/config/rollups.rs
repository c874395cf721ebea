//! `[rollups]`: how often pending rollup rows are folded, and how long rollups are kept.

use std::num::{NonZeroI64, NonZeroU32};
use std::time::Duration;

use serde::Deserialize;

use super::value::{count, positive_millis};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    fold_interval_ms: u64,
    fold_batch: i64,
    retention_days: u32,
    minute_retention_days: u32,
}

/// The rollup folder's pace and the rollups' retention, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupSettings {
    /// Time between two folds of `rollup_pending` into the per-minute, hour and day rollups.
    pub fold_interval: Duration,
    /// Most pending rows moved by one fold transaction.
    pub fold_batch: NonZeroI64,
    /// Full days of hourly and daily rollups kept (and of flagged terms per day).
    pub retention_days: NonZeroU32,
    /// Full days of per-minute rollups kept; older ranges are answered to the hour.
    pub minute_retention_days: NonZeroU32,
}

impl TryFrom<Raw> for RollupSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let retention_days = count("rollups.retention_days", raw.retention_days, 36_500)?;
        let minute_retention_days: NonZeroU32 = count(
            "rollups.minute_retention_days",
            raw.minute_retention_days,
            36_500,
        )?;
        if minute_retention_days > retention_days {
            return Err(ConfigError::invalid(
                "rollups.minute_retention_days",
                minute_retention_days,
                "must not exceed rollups.retention_days: a range older than the hourly rollups \
                 could not be answered from the minutes alone",
            ));
        }
        Ok(RollupSettings {
            fold_interval: positive_millis("rollups.fold_interval_ms", raw.fold_interval_ms)?,
            fold_batch: count("rollups.fold_batch", raw.fold_batch, 1_000_000)?,
            retention_days,
            minute_retention_days,
        })
    }
}
