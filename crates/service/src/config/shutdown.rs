//! `[shutdown]`: how long a stopping process may take.

use std::time::Duration;

use serde::Deserialize;

use super::value::positive_millis;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    grace_ms: u64,
}

/// The bound on a graceful stop.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// Longest time between SIGTERM and exit: drain connections, flush the producer,
    /// finish in-flight messages.
    pub grace: Duration,
}

impl TryFrom<Raw> for ShutdownSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        Ok(ShutdownSettings {
            grace: positive_millis("shutdown.grace_ms", raw.grace_ms)?,
        })
    }
}
