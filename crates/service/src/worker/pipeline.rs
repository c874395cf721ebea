//! One message, start to durable finish: decode, moderate, enrich, store, and when it
//! cannot be stored, dead-letter it. The only place that sees every stage.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Either};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::deadletter::{DeadLetter, DeadLetterHandle, Stage};
use crate::domain::{ChatMessage, FailureCode, NlpFields, ProcessedMessage, SourcePosition};
use crate::enrich::{BackoffWait, Enricher, Enrichment};
use crate::moderation::Moderator;
use crate::queue::Envelope;
use crate::storage::{BatchWriterHandle, StoreOutcome};
use crate::supervisor::catch_panic;
use crate::telemetry::register;

use super::intake::Intake;
use super::turns::{MessageTurns, Turn};

/// Where a message ended up. Only `Abandoned` leaves its offset uncommitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Inserted as a new row.
    Stored,
    /// Already stored with the same content: a retry, a re-delivery or a replay.
    Duplicate,
    /// Already stored with other content under the same `message_id`: not stored (the
    /// first stored copy wins), counted and logged.
    Conflict,
    /// Written to a dead letter by the given stage.
    DeadLettered(Stage),
    /// Shutdown came before the outcome was durable (the database or the dead-letter file
    /// unavailable): the message is left for re-delivery.
    Abandoned,
}

impl Outcome {
    /// One of each outcome, so each `messages_processed_total{outcome}` series can be
    /// exported at 0 from start (a dead letter's stage is not part of the label).
    pub const ALL: [Outcome; 5] = [
        Outcome::Stored,
        Outcome::Duplicate,
        Outcome::Conflict,
        Outcome::DeadLettered(Stage::Decode),
        Outcome::Abandoned,
    ];

    /// Whether its offset may be committed: every outcome but `Abandoned`.
    pub fn is_durable(self) -> bool {
        self != Outcome::Abandoned
    }

    /// The `outcome` label of `messages_processed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict => "conflict",
            Outcome::DeadLettered(_) => "dead_lettered",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// The pipeline's own metric; the stages and writers it drives count theirs.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// `moderation_hits_total`.
    pub moderation_hits: prometheus::IntCounter,
}

impl PipelineMetrics {
    pub(crate) fn register(
        registry: &prometheus::Registry,
    ) -> Result<PipelineMetrics, prometheus::Error> {
        let moderation_hits = register(
            registry,
            prometheus::IntCounter::new(
                "moderation_hits_total",
                "Messages flagged by keyword moderation",
            )?,
        )?;
        Ok(PipelineMetrics { moderation_hits })
    }
}

const DLQ_RETRY_FIRST: Duration = Duration::from_millis(500);
const DLQ_RETRY_MAX: Duration = Duration::from_secs(30);

/// Every stage a message goes through, shared by all of the worker's tasks (and by
/// `dlq replay`).
pub struct Pipeline {
    pub(crate) moderator: Arc<Moderator>,
    pub(crate) enricher: Enricher,
    pub(crate) writer: BatchWriterHandle,
    pub(crate) dead_letters: DeadLetterHandle,
    pub(crate) intake: Arc<Intake>,
    pub(crate) turns: Arc<MessageTurns>,
    pub(crate) metrics: PipelineMetrics,
    pub(crate) shutdown: CancellationToken,
}

/// A record as read from Kafka, decoded and in line behind any earlier copy of its
/// message: made in the consumer's read order by [`Pipeline::receive`].
pub enum Received {
    /// A valid envelope, in line behind earlier copies of its message.
    Message {
        /// The decoded record value.
        envelope: Envelope,
        /// Where the record was read from.
        source: SourcePosition,
        /// Its place in line: processing waits for it.
        turn: Turn,
    },
    /// Not an envelope: the dead letter to write for it.
    Undecodable(DeadLetter),
}

/// A place in the worker pool, held while a message is moderated and enriched and given
/// back once the batch writer has queued it: the pool bounds NLP calls in flight, the
/// writer's queue bounds rows waiting for Postgres. Counted in `active_workers`.
///
/// A message waiting out an NLP retry back-off gives its place back meanwhile and queues
/// for one again after it (FIFO with the consumer), so a wave of retries cannot shrink
/// the pool that first attempts need; the retry budget bounds how many wait at once.
pub struct PoolSlot {
    held: Option<CountedPermit>,
}

impl PoolSlot {
    pub fn new(permit: OwnedSemaphorePermit, active: prometheus::IntGauge) -> PoolSlot {
        PoolSlot {
            held: Some(CountedPermit::new(permit, active)),
        }
    }
}

impl BackoffWait for PoolSlot {
    async fn wait(&mut self, delay: Duration) {
        let lent = self.held.take().map(CountedPermit::give_back);
        tokio::time::sleep(delay).await;
        // The pool is never closed; were it, the message would go on without a place.
        if let Some((pool, active)) = lent {
            if let Ok(permit) = pool.acquire_owned().await {
                self.held = Some(CountedPermit::new(permit, active));
            }
        }
    }
}

/// A permit of the pool, counted in `active_workers` for exactly as long as it is held.
struct CountedPermit {
    permit: OwnedSemaphorePermit,
    active: prometheus::IntGauge,
}

impl CountedPermit {
    fn new(permit: OwnedSemaphorePermit, active: prometheus::IntGauge) -> CountedPermit {
        active.inc();
        CountedPermit { permit, active }
    }

    /// Returns the permit to its pool; what it takes to ask for one again.
    fn give_back(self) -> (Arc<Semaphore>, prometheus::IntGauge) {
        (self.permit.semaphore().clone(), self.active.clone())
    }
}

impl Drop for CountedPermit {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl Received {
    /// The span of the log lines about this record, with the ids the ingest API logs too,
    /// so one message's lines can be picked out of both logs.
    ///
    /// A message's span is at debug: at info, subscribers format its fields for every
    /// message, about 2.6 µs of the worker's CPU each (docs/BENCHMARKS-HISTORY.md), for
    /// the rare line logged inside it; the warnings and errors a message causes carry its
    /// `message_id` themselves. An undecodable record's span stays at info: rare, and its
    /// position is all there is to find it by.
    pub fn span(&self) -> tracing::Span {
        match self {
            Received::Message {
                envelope, source, ..
            } => tracing::debug_span!(
                "message",
                message_id = %envelope.message.message_id,
                bot_id = envelope.message.bot_id.as_str(),
                partition = source.partition,
                offset = source.offset,
            ),
            Received::Undecodable(letter) => tracing::info_span!(
                "message",
                partition = letter.kafka.map(|k| k.partition),
                offset = letter.kafka.map(|k| k.offset),
            ),
        }
    }
}

impl Pipeline {
    /// Decodes a Kafka record and queues it behind earlier copies of its message still in
    /// flight. Cheap and synchronous: the consumer calls it in read order.
    pub fn receive(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        source: SourcePosition,
    ) -> Received {
        match payload.map(Envelope::decode) {
            Some(Ok(envelope)) => Received::Message {
                turn: self.turns.join(envelope.message.message_id),
                envelope,
                source,
            },
            Some(Err(err)) => {
                Received::Undecodable(DeadLetter::undecodable(key, payload, err, source))
            }
            None => Received::Undecodable(DeadLetter::undecodable(
                key,
                None,
                "record has no value",
                source,
            )),
        }
    }

    /// A received record to its durable end: undecodable ones and panics become dead
    /// letters.
    ///
    /// Not an `async fn`: the record is taken apart before the future is made, which
    /// would otherwise keep the whole record beside its parts for as long as it lives,
    /// one per message until its row is written.
    pub fn process_received(
        self: &Arc<Self>,
        received: Received,
        slot: Option<PoolSlot>,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let pipeline = self.clone();
        match received {
            Received::Message {
                envelope,
                source,
                turn,
            } => Either::Left(pipeline.process_envelope(envelope, source, turn, slot)),
            Received::Undecodable(letter) => {
                Either::Right(Box::pin(async move { pipeline.dead_letter(letter).await }))
            }
        }
    }

    async fn process_envelope(
        self: Arc<Self>,
        envelope: Envelope,
        source: SourcePosition,
        mut turn: Turn,
        slot: Option<PoolSlot>,
    ) -> Outcome {
        turn.wait().await;
        let message = Arc::new(envelope.message);
        let received_at = envelope.received_at;
        let outcome = self.process(message.clone(), received_at, Some(source), slot);
        let outcome = match catch_panic(outcome).await {
            Ok(outcome) => outcome,
            Err(panic) => {
                tracing::error!(message_id = %message.message_id, %panic, "processing panicked");
                let letter = DeadLetter::for_message(
                    &message,
                    received_at,
                    Stage::Panic,
                    FailureCode::Panicked,
                    panic,
                    1,
                    Some(source),
                );
                self.dead_letter(letter).await
            }
        };
        drop(turn);
        outcome
    }

    /// An accepted message: moderated, enriched (or not, with a reason), stored.
    pub async fn process(
        &self,
        message: Arc<ChatMessage>,
        received_at: DateTime<Utc>,
        source: Option<SourcePosition>,
        mut slot: Option<PoolSlot>,
    ) -> Outcome {
        let verdict = self.moderator.check(message.text.as_str());
        if verdict.flagged {
            self.metrics.moderation_hits.inc();
        }
        let enrichment = self.enrichment(&message, slot.as_mut()).await;
        let row = ProcessedMessage {
            message,
            received_at,
            nlp: nlp_fields(enrichment),
            flagged: verdict.flagged,
            flagged_terms: verdict.terms,
            source,
        };
        let message = row.message.clone();
        let pending = self.writer.submit(row).await;
        drop(slot);
        match pending.outcome().await {
            StoreOutcome::Stored => Outcome::Stored,
            StoreOutcome::Duplicate => Outcome::Duplicate,
            StoreOutcome::Conflict => {
                tracing::warn!(
                    message_id = %message.message_id,
                    bot_id = message.bot_id.as_str(),
                    "message_id already stored with other content; this copy is not stored"
                );
                Outcome::Conflict
            }
            StoreOutcome::Abandoned => Outcome::Abandoned,
            StoreOutcome::Failed {
                kind,
                error,
                attempts,
            } => {
                let letter = DeadLetter::for_message(
                    &message,
                    received_at,
                    Stage::Storage,
                    kind.code(),
                    error,
                    attempts,
                    source,
                );
                self.dead_letter(letter).await
            }
        }
    }

    /// The NLP call for `message`, boxed: its future is kilobytes (h2, timeouts,
    /// retries), and unboxed it would size and be copied with every future around it, up
    /// to the message's task. Made here rather than where it is awaited, where the unboxed
    /// temporary would still take its room in the caller's future.
    fn enrichment<'a>(
        &'a self,
        message: &'a ChatMessage,
        slot: Option<&'a mut PoolSlot>,
    ) -> BoxFuture<'a, Enrichment> {
        let text = message.text.as_str();
        match slot {
            Some(slot) => Box::pin(self.enricher.enrich_with(text, slot)),
            None => Box::pin(self.enricher.enrich(text)),
        }
    }

    /// Writes a dead letter, retrying for as long as it takes (consumption is paused
    /// meanwhile); gives up only at shutdown, leaving the offset uncommitted.
    ///
    /// Boxed: the rare path's future (the letter, a copy being written, a back-off timer)
    /// would otherwise set the size of every message's task, which lives until its row is
    /// written; a worker draining a backlog holds over ten thousand of them.
    fn dead_letter(&self, letter: DeadLetter) -> BoxFuture<'_, Outcome> {
        Box::pin(self.write_dead_letter(letter))
    }

    async fn write_dead_letter(&self, letter: DeadLetter) -> Outcome {
        let stage = letter.stage;
        let backoff = Backoff::new(DLQ_RETRY_FIRST, DLQ_RETRY_MAX, 0.0);
        let mut failures = 0;
        let mut blocked = false;
        let outcome = loop {
            match self.dead_letters.write(letter.clone()).await {
                Ok(()) => break Outcome::DeadLettered(stage),
                Err(err) => {
                    failures += 1;
                    let wait = backoff.delay(failures);
                    if !blocked {
                        blocked = true;
                        self.intake.dead_letter_failing();
                    }
                    let message_id = letter.message.get("message_id").and_then(Value::as_str);
                    tracing::error!(
                        message_id,
                        partition = letter.kafka.map(|k| k.partition),
                        offset = letter.kafka.map(|k| k.offset),
                        error = %err,
                        retry_in = ?wait,
                        "dead letter not written; consumption paused, offsets held"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown.cancelled() => break Outcome::Abandoned,
                    }
                }
            }
        };
        if blocked {
            self.intake.dead_letter_recovered();
        }
        outcome
    }
}

/// The NLP columns of a row, from what enrichment produced.
pub(crate) fn nlp_fields(enrichment: Enrichment) -> NlpFields {
    let status = enrichment.status;
    match enrichment.analysis {
        Some(a) => NlpFields {
            sentiment_label: Some(a.sentiment_label),
            sentiment_score: Some(a.sentiment_score),
            toxicity: Some(a.toxicity),
            language: Some(a.language),
            raw: Some(a.raw),
            status,
        },
        None => NlpFields::missing(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;
    use crate::domain::{BotId, MessageId, MessageText};
    use crate::telemetry::capture::CapturedLogs;
    use tracing::Instrument;

    fn received(partition: i32, offset: i64) -> (Received, MessageId) {
        let id = MessageId::generate();
        let message = ChatMessage {
            message_id: id,
            bot_id: BotId::parse("bot-7".into()).expect("valid"),
            conversation_id: None,
            user_id: None,
            text: MessageText::parse("hello".into()).expect("valid"),
            sent_at: None,
            metadata: None,
        };
        let turns = Arc::new(MessageTurns::default());
        let received = Received::Message {
            turn: turns.join(id),
            envelope: Envelope {
                v: crate::queue::ENVELOPE_VERSION,
                received_at: Utc::now(),
                message,
            },
            source: SourcePosition { partition, offset },
        };
        (received, id)
    }

    #[tokio::test]
    async fn a_message_s_log_lines_carry_its_ids_and_position_in_json() {
        let (logs, _guard) = CapturedLogs::start(LogFormat::Json, "debug");
        let (received, id) = received(3, 42);
        async { tracing::warn!("while processing") }
            .instrument(received.span())
            .await;
        let lines = logs.lines();
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}");
        };
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let span = &line["span"];
        assert_eq!(span["name"], "message");
        assert_eq!(span["message_id"], id.to_string());
        assert_eq!(span["bot_id"], "bot-7");
        assert_eq!(span["partition"], 3);
        assert_eq!(span["offset"], 42);
    }

    #[tokio::test]
    async fn a_message_s_log_lines_carry_its_ids_in_text() {
        let (logs, _guard) = CapturedLogs::start(LogFormat::Text, "debug");
        let (received, id) = received(0, 7);
        async { tracing::warn!("while processing") }
            .instrument(received.span())
            .await;
        let lines = logs.lines();
        assert!(
            lines.iter().any(|l| l.contains(&format!("message_id={id}"))
                && l.contains("bot_id=\"bot-7\"")
                && l.contains("partition=0")
                && l.contains("offset=7")),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn at_info_a_message_s_span_is_off_and_costs_nothing() {
        let (logs, _guard) = CapturedLogs::start(LogFormat::Text, "info");
        let (received, _) = received(0, 7);
        let span = received.span();
        assert!(span.is_disabled());
        async { tracing::warn!("while processing") }
            .instrument(span)
            .await;
        let lines = logs.lines();
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}");
        };
        assert!(!line.contains("message{"), "{line}");
    }

    #[tokio::test]
    async fn an_undecodable_record_s_lines_carry_its_position() {
        let (logs, _guard) = CapturedLogs::start(LogFormat::Json, "info");
        let source = SourcePosition {
            partition: 1,
            offset: 9,
        };
        let received =
            Received::Undecodable(DeadLetter::undecodable(None, None, "no value", source));
        async { tracing::warn!("while processing") }
            .instrument(received.span())
            .await;
        let lines = logs.lines();
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
        assert_eq!(line["span"]["partition"], 1);
        assert_eq!(line["span"]["offset"], 9);
    }

    #[test]
    fn all_has_one_of_each_outcome_with_its_own_label() {
        for outcome in Outcome::ALL {
            // A new variant does not compile here until it is added to ALL too.
            match outcome {
                Outcome::Stored
                | Outcome::Duplicate
                | Outcome::Conflict
                | Outcome::DeadLettered(_)
                | Outcome::Abandoned => {}
            }
        }
        let labels: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_lent_to_the_pool_during_a_backoff_and_taken_back_after_it() {
        let pool = Arc::new(Semaphore::new(1));
        let active = prometheus::IntGauge::new("active_workers", "test").expect("gauge");
        let permit = pool.clone().acquire_owned().await.expect("permit");
        let mut slot = PoolSlot::new(permit, active.clone());
        assert_eq!((pool.available_permits(), active.get()), (0, 1));

        let waiting = tokio::spawn(async move {
            slot.wait(Duration::from_millis(100)).await;
            slot
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            (pool.available_permits(), active.get()),
            (1, 0),
            "given back for the wait"
        );
        let other = pool
            .clone()
            .try_acquire_owned()
            .expect("another message takes it");

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "after the back-off the message queues for a place"
        );

        drop(other);
        let slot = waiting.await.expect("wait finished");
        assert_eq!(
            (pool.available_permits(), active.get()),
            (0, 1),
            "held again"
        );
        drop(slot);
        assert_eq!((pool.available_permits(), active.get()), (1, 0));
    }
}
