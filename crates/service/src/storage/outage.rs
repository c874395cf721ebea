//! Whether the database is refusing writes right now, and for how long.
//!
//! The batch writer reports every write that failed for a reason of the database's (not
//! of the rows') and every write that succeeded; the worker reads the state to stop
//! taking records from Kafka while the outage lasts, so unwritten messages wait in Kafka,
//! uncommitted, instead of in dead-letter files. Past `max_outage`, the writer gives up on
//! rows (they are dead-lettered) and the worker reads again: a long outage cannot wedge
//! the pipeline or grow the lag without bound.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// What the outage means for a write that just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageVerdict {
    /// Within `max_outage`: keep the rows and try again.
    Hold,
    /// The outage outlasted `max_outage`: fail the rows (dead-letter them).
    GiveUp,
}

/// Shared by the batch writer (which reports) and the worker (which reads).
#[derive(Debug)]
pub struct DatabaseOutage {
    since: Mutex<Option<Instant>>,
    max_outage: Duration,
}

impl DatabaseOutage {
    /// `max_outage` of zero: no holding at all, rows are dead-lettered on the first failure.
    pub fn new(max_outage: Duration) -> DatabaseOutage {
        DatabaseOutage {
            since: Mutex::new(None),
            max_outage,
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A plain timestamp: nothing a panicking holder could leave half-written.
        self.since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A write failed because of the database; the first such failure starts the outage.
    pub fn write_failed(&self) -> OutageVerdict {
        let now = Instant::now();
        let started = *self.since().get_or_insert(now);
        if started == now {
            tracing::warn!(
                max_outage_secs = self.max_outage.as_secs(),
                "database unavailable: holding messages in Kafka and retrying"
            );
        }
        if now.duration_since(started) >= self.max_outage {
            OutageVerdict::GiveUp
        } else {
            OutageVerdict::Hold
        }
    }

    /// A write succeeded: any outage is over.
    pub fn write_succeeded(&self) {
        if let Some(started) = self.since().take() {
            tracing::info!(
                lasted_ms = started.elapsed().as_millis() as u64,
                "database writable again"
            );
        }
    }

    /// How long the current outage has lasted, if there is one.
    pub fn duration(&self) -> Option<Duration> {
        self.since().map(|started| started.elapsed())
    }

    /// True while writes are failing and still being held (not yet past `max_outage`):
    /// the worker stops reading meanwhile.
    pub fn is_holding(&self) -> bool {
        self.duration().is_some_and(|d| d < self.max_outage)
    }

    /// When a write held since `started` must give up.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.since().map(|started| started + self.max_outage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_until_max_outage_then_gives_up_and_a_success_ends_it() {
        let outage = DatabaseOutage::new(Duration::from_secs(10));
        assert!(!outage.is_holding());
        assert_eq!(outage.write_failed(), OutageVerdict::Hold);
        assert!(outage.is_holding());

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(outage.write_failed(), OutageVerdict::Hold);
        assert_eq!(outage.duration(), Some(Duration::from_secs(9)));

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(outage.write_failed(), OutageVerdict::GiveUp);
        assert!(
            !outage.is_holding(),
            "past max_outage the worker reads again"
        );

        outage.write_succeeded();
        assert_eq!(outage.duration(), None);
        assert_eq!(
            outage.write_failed(),
            OutageVerdict::Hold,
            "a new outage starts its own clock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_outage_gives_up_at_once() {
        let outage = DatabaseOutage::new(Duration::ZERO);
        assert_eq!(outage.write_failed(), OutageVerdict::GiveUp);
        assert!(!outage.is_holding());
    }
}
