//! Dead letters written because the database was unavailable go back through the pipeline
//! by themselves once it takes writes again: the worker looks at its dead-letter directory
//! every `dlq.replay_interval_secs` while there is no outage, and replays what it finds at
//! a bounded rate.
//!
//! Only stage `storage` dead letters of a database outage are replayed: a row the
//! database refused for its content would be refused again, and undecodable records or
//! panics need a person (`dlq replay` stays for those). Storage is idempotent (message
//! keys), so a line replayed again after a crash adds nothing; the recorded position
//! ([`ReplayCursor`]) moves only once a chunk's outcomes are durable, so a line is never
//! skipped.
//!
//! A pre-stop hook can ask for a look at once and wait until nothing is pending
//! ([`DeadLetterBacklog`], `GET /dead-letters/drained` on the admin listener).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pipeline::{Outcome, Pipeline};
use crate::config::DlqSettings;
use crate::deadletter::{dead_letter_files, DeadLetter, ProgressError, ReplayCursor, Stage};
use crate::domain::{FailureCode, SourcePosition};
use crate::storage::accepts_writes;
use crate::telemetry::{export_at_zero, register, Backlog, DeadLetterBacklog};

/// Messages replayed at once.
const CONCURRENCY: usize = 64;
/// How long the check that the database takes writes again may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The automatic replay's metrics; cheap to clone (each is an `Arc` inside).
#[derive(Clone)]
pub struct AutoReplayMetrics {
    /// `dead_letters_pending`: outage dead letters not yet replayed.
    pub pending: prometheus::IntGauge,
    /// `dead_letters_replayed_total{outcome}`.
    pub replayed: prometheus::IntCounterVec,
}

impl AutoReplayMetrics {
    /// Registers both metrics, every outcome's series at 0.
    pub fn register(
        registry: &prometheus::Registry,
    ) -> Result<AutoReplayMetrics, prometheus::Error> {
        let pending = register(
            registry,
            prometheus::IntGauge::new(
                "dead_letters_pending",
                "Dead letters of a database outage in this worker's directory not yet replayed",
            )?,
        )?;
        let replayed = register(
            registry,
            prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "dead_letters_replayed_total",
                    "Outage dead letters replayed automatically, by outcome",
                ),
                &["outcome"],
            )?,
        )?;
        export_at_zero(&replayed, Outcome::ALL.map(|outcome| [outcome.label()]));
        Ok(AutoReplayMetrics { pending, replayed })
    }
}

/// What a finished look at the directory left pending.
#[derive(Clone, Copy, Debug, Default)]
struct Look {
    /// The look's number, counted when it started.
    number: u64,
    pending: usize,
}

/// Replays outage dead letters in the background.
pub struct DeadLetterReplayer {
    settings: DlqSettings,
    pipeline: Arc<Pipeline>,
    pool: Pool,
    metrics: AutoReplayMetrics,
    /// Asks for a look before the next interval.
    look_now: Notify,
    looks_started: AtomicU64,
    last_look: watch::Sender<Look>,
}

/// True for a dead letter written because the database was unavailable.
pub fn is_outage_dead_letter(letter: &DeadLetter) -> bool {
    letter.stage == Stage::Storage && letter.code() == Some(FailureCode::DatabaseUnavailable)
}

impl DeadLetterReplayer {
    pub(crate) fn new(
        settings: DlqSettings,
        pipeline: Arc<Pipeline>,
        pool: Pool,
        metrics: AutoReplayMetrics,
    ) -> DeadLetterReplayer {
        DeadLetterReplayer {
            settings,
            pipeline,
            pool,
            metrics,
            look_now: Notify::new(),
            looks_started: AtomicU64::new(0),
            last_look: watch::Sender::new(Look::default()),
        }
    }

    /// Whether the database is back. Past `max_outage_secs` nothing may be writing (every
    /// message already dead-lettered, no new traffic), so no write of the batch writer's
    /// would end the recorded outage: ask the database directly.
    async fn database_back(&self) -> bool {
        let outage = self.pipeline.intake.outage();
        if outage.duration().is_none() {
            return true;
        }
        !outage.is_holding() && accepts_writes(&self.pool, PROBE_TIMEOUT).await
    }

    /// Looks for outage dead letters at once (a previous run may have left some), then
    /// every interval or when asked, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.replay_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.look_now.notified() => {}
                () = stop.cancelled() => return,
            }
            if !self.database_back().await {
                continue;
            }
            let number = self.looks_started.fetch_add(1, Ordering::SeqCst) + 1;
            match self.pass(&stop).await {
                Ok(()) => {
                    let pending = usize::try_from(self.metrics.pending.get()).unwrap_or(0);
                    self.last_look.send_replace(Look { number, pending });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "dead-letter replay pass failed; retrying later");
                }
            }
        }
    }

    /// One look at the directory: counts what waits, then replays it file by file.
    async fn pass(&self, stop: &CancellationToken) -> Result<(), ProgressError> {
        let mut cursors = Vec::new();
        let mut pending = 0;
        for path in dead_letter_files(&self.settings.dir)? {
            // Held by another worker sharing the directory: its to replay.
            let Some(mut cursor) = ReplayCursor::claim(&path)? else {
                continue;
            };
            let waiting = count_pending(&mut cursor)?;
            if waiting > 0 {
                pending += waiting;
                cursors.push(cursor);
            }
        }
        let gauge = &self.metrics.pending;
        gauge.set(pending as i64);
        for mut cursor in cursors {
            tracing::info!(file = %cursor.path().display(), "replaying outage dead letters");
            loop {
                if stop.is_cancelled() || self.pipeline.intake.outage().is_holding() {
                    return Ok(());
                }
                let position = cursor.position();
                let lines = cursor.lines_after(position)?;
                let Some(end) = lines.last().map(|l| l.end) else {
                    break;
                };
                let letters: Vec<DeadLetter> = lines
                    .into_iter()
                    .filter_map(|l| l.letter.ok())
                    .filter(is_outage_dead_letter)
                    .collect();
                let started = Instant::now();
                let count = letters.len();
                if !self.replay(letters).await {
                    // Shutdown while the database was unavailable: the chunk stays pending.
                    return Ok(());
                }
                cursor.advance(end)?;
                gauge.sub(count as i64);
                let due = Duration::from_secs_f64(count as f64 / self.rate_per_sec());
                tokio::select! {
                    () = tokio::time::sleep_until(started + due) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
        Ok(())
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.settings.replay_rate_per_sec.get())
    }

    /// Replays `letters`; false if any outcome is not durable (shutdown came first).
    async fn replay(&self, letters: Vec<DeadLetter>) -> bool {
        let outcomes: Vec<Outcome> = stream::iter(letters)
            .filter_map(|letter| async move {
                let message = Arc::new(letter.chat_message()?);
                let received_at = letter.received_at.unwrap_or(letter.failed_at);
                let source = letter.kafka.map(|k| SourcePosition {
                    partition: k.partition,
                    offset: k.offset,
                });
                Some((message, received_at, source))
            })
            .map(|(message, received_at, source)| {
                self.pipeline.process(message, received_at, source, None)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let replayed = &self.metrics.replayed;
        for outcome in &outcomes {
            replayed.with_label_values(&[outcome.label()]).inc();
        }
        outcomes.iter().all(|o| o.is_durable())
    }
}

impl DeadLetterBacklog for DeadLetterReplayer {
    /// Only a look that started after the call counts as drained: a dead letter written
    /// since the last look must not be missed. With no time to wait, the last look answers.
    fn wait_replayed(&self, within: Duration) -> BoxFuture<'_, Backlog> {
        Box::pin(async move {
            let mut looks = self.last_look.subscribe();
            if within.is_zero() {
                let last = *looks.borrow();
                return Backlog {
                    drained: last.number > 0 && last.pending == 0,
                    pending: last.pending,
                };
            }
            let before = self.looks_started.load(Ordering::SeqCst);
            self.look_now.notify_one();
            let waited = tokio::time::timeout(
                within,
                looks.wait_for(|look| look.number > before && look.pending == 0),
            )
            .await;
            Backlog {
                drained: matches!(waited, Ok(Ok(_))),
                pending: usize::try_from(self.metrics.pending.get()).unwrap_or(0),
            }
        })
    }
}

/// Outage dead letters after the cursor's position.
fn count_pending(cursor: &mut ReplayCursor) -> Result<usize, ProgressError> {
    let mut position = cursor.position();
    let mut count = 0;
    loop {
        let lines = cursor.lines_after(position)?;
        let Some(end) = lines.last().map(|l| l.end) else {
            return Ok(count);
        };
        count += lines
            .iter()
            .filter(|l| l.letter.as_ref().is_ok_and(is_outage_dead_letter))
            .count();
        position = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BotId, ChatMessage, MessageId, MessageText};

    fn letter(stage: Stage, code: FailureCode) -> DeadLetter {
        let message = ChatMessage {
            message_id: MessageId::generate(),
            bot_id: BotId::parse("b1".into()).expect("valid"),
            conversation_id: None,
            user_id: None,
            text: MessageText::parse("hi".into()).expect("valid"),
            sent_at: None,
            metadata: None,
        };
        DeadLetter::for_message(&message, chrono::Utc::now(), stage, code, "detail", 2, None)
    }

    #[test]
    fn only_outage_dead_letters_are_replayed_by_themselves() {
        let outage = FailureCode::DatabaseUnavailable;
        assert!(is_outage_dead_letter(&letter(Stage::Storage, outage)));
        assert!(!is_outage_dead_letter(&letter(
            Stage::Storage,
            FailureCode::RowRefused
        )));
        assert!(!is_outage_dead_letter(&letter(Stage::Panic, outage)));
    }

    #[test]
    fn outage_dead_letters_in_existing_files_are_still_recognised() {
        let line = r#"{"message":{"message_id":"0190b7a0-0000-7000-8000-000000000001","bot_id":"b1","text":"hi"},"received_at":"2026-01-05T10:00:00Z","stage":"storage","error":"database_unavailable: no database connection: timed out","attempts":1,"failed_at":"2026-01-05T10:05:00Z","kafka":{"partition":0,"offset":7}}"#;
        let letter: DeadLetter = serde_json::from_str(line).expect("today's line format reads");
        assert!(is_outage_dead_letter(&letter));
        assert!(letter.chat_message().is_some(), "and replays");
    }
}
