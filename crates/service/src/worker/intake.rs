//! When the worker stops taking records from Kafka: while a dead letter cannot be written,
//! and while the database is unavailable (within `storage.max_outage_secs`). Messages
//! then wait in Kafka, uncommitted, instead of piling up in memory or in dead-letter files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::storage::DatabaseOutage;
use crate::telemetry::Probe;

/// Why consumption is paused; the `reason` label of `consumer_paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// A dead letter could not be written (disk full, read-only): nothing more is taken
    /// that might need one.
    DeadLettersUnwritable,
    /// Postgres refuses writes: the rows in flight are held and retried.
    DatabaseUnavailable,
}

impl HoldReason {
    /// Every reason, so each `consumer_paused{reason}` series is exported at 0 from start.
    pub const ALL: [HoldReason; 2] = [
        HoldReason::DeadLettersUnwritable,
        HoldReason::DatabaseUnavailable,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::DeadLettersUnwritable => "dead_letters_unwritable",
            HoldReason::DatabaseUnavailable => "database_unavailable",
        }
    }
}

/// Shared by the pipeline (which reports dead letters it cannot write), the batch
/// writer's outage state, and the consumer (which pauses its partitions).
#[derive(Debug)]
pub struct Intake {
    dead_letters_failing: AtomicUsize,
    outage: Arc<DatabaseOutage>,
}

impl Intake {
    pub(crate) fn new(outage: Arc<DatabaseOutage>) -> Intake {
        Intake {
            dead_letters_failing: AtomicUsize::new(0),
            outage,
        }
    }

    /// Why the consumer must not take more records now, if it must not.
    pub fn hold_reason(&self) -> Option<HoldReason> {
        if self.dead_letters_failing.load(Ordering::Acquire) > 0 {
            Some(HoldReason::DeadLettersUnwritable)
        } else if self.outage.is_holding() {
            Some(HoldReason::DatabaseUnavailable)
        } else {
            None
        }
    }

    /// A message's dead letter failed to be written; it keeps retrying until
    /// [`Self::dead_letter_recovered`].
    pub fn dead_letter_failing(&self) {
        self.dead_letters_failing.fetch_add(1, Ordering::AcqRel);
    }

    /// The dead letter reported by [`Self::dead_letter_failing`] is written at last.
    pub fn dead_letter_recovered(&self) {
        self.dead_letters_failing.fetch_sub(1, Ordering::AcqRel);
    }

    /// The database outage, for the auto-replay of dead letters and `/health`.
    pub fn outage(&self) -> &Arc<DatabaseOutage> {
        &self.outage
    }
}

/// `/health` check `consumer`: fails while consumption is paused, saying why.
pub struct IntakeProbe(pub Arc<Intake>);

impl Probe for IntakeProbe {
    fn probe(&self, _within: Duration) -> BoxFuture<'_, Result<(), String>> {
        let result = match self.0.hold_reason() {
            None => Ok(()),
            Some(HoldReason::DeadLettersUnwritable) => {
                Err("paused: dead letters cannot be written; offsets held, retrying".to_owned())
            }
            Some(HoldReason::DatabaseUnavailable) => Err(format!(
                "paused: database unavailable for {} s; messages wait in Kafka",
                self.0.outage.duration().unwrap_or_default().as_secs()
            )),
        };
        Box::pin(std::future::ready(result))
    }
}
