//! `[dlq]`: where dead letters go, and their automatic replay after a database outage.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value::{non_empty_path, positive, positive_secs};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    dir: PathBuf,
    auto_replay: bool,
    replay_interval_secs: u64,
    replay_rate_per_sec: u32,
}

/// The dead-letter directory and the worker's replay of outage dead letters.
#[derive(Debug, Clone)]
pub struct DlqSettings {
    /// Holds `dead-letters-YYYY-MM-DD.jsonl`.
    pub dir: PathBuf,
    /// Replay outage dead letters by themselves once the database is back.
    pub auto_replay: bool,
    /// How often the directory is looked at.
    pub replay_interval: Duration,
    /// Most messages replayed a second.
    pub replay_rate_per_sec: NonZeroU32,
}

impl TryFrom<Raw> for DlqSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        Ok(DlqSettings {
            dir: non_empty_path("dlq.dir", raw.dir)?,
            auto_replay: raw.auto_replay,
            replay_interval: positive_secs("dlq.replay_interval_secs", raw.replay_interval_secs)?,
            replay_rate_per_sec: positive("dlq.replay_rate_per_sec", raw.replay_rate_per_sec)?,
        })
    }
}
