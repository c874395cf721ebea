//! The dead-letter writer's metric: letters made durable, by stage.

use prometheus::{IntCounterVec, Opts, Registry};

use super::record::Stage;
use crate::telemetry::{export_at_zero, register};

/// `dead_letters_total{stage}`; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct DeadLetterMetrics {
    written: IntCounterVec,
}

impl DeadLetterMetrics {
    /// Registers the counter with every stage's series at 0.
    pub fn register(registry: &Registry) -> Result<DeadLetterMetrics, prometheus::Error> {
        let written = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "dead_letters_total",
                    "Messages written to the dead-letter file, by stage",
                ),
                &["stage"],
            )?,
        )?;
        export_at_zero(&written, Stage::ALL.map(|stage| [stage.as_str()]));
        Ok(DeadLetterMetrics { written })
    }

    /// Counts one dead letter of `stage` once it is durable.
    pub(super) fn written(&self, stage: Stage) {
        self.written.with_label_values(&[stage.as_str()]).inc();
    }

    #[cfg(test)]
    pub(super) fn count(&self, stage: Stage) -> u64 {
        self.written.with_label_values(&[stage.as_str()]).get()
    }
}
