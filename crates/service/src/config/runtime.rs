//! `[runtime]`: the async runtime's threads.

use std::num::NonZeroUsize;

use serde::Deserialize;

use super::ConfigError;

/// More runtime threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1_024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    worker_threads: usize,
}

/// The tokio runtime's size.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// `None` (0) leaves the choice to tokio: `TOKIO_WORKER_THREADS`, else one per core.
    pub worker_threads: Option<NonZeroUsize>,
}

impl TryFrom<Raw> for RuntimeSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if raw.worker_threads > MAX_THREADS {
            return Err(ConfigError::invalid(
                "runtime.worker_threads",
                raw.worker_threads,
                format!("must be at most {MAX_THREADS}; 0 picks one per CPU core"),
            ));
        }
        Ok(RuntimeSettings {
            worker_threads: NonZeroUsize::new(raw.worker_threads),
        })
    }
}
