//! The worker's dispatch loop: records from the Kafka consumer into a bounded pool of
//! in-flight messages, consumption paused while the pipeline's intake is on hold, and
//! offsets committed on a timer as the tracker allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::CommitMode;
use rdkafka::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::intake::HoldReason;
use super::pipeline::{Pipeline, PoolSlot, Received};
use crate::config::{KafkaSettings, WorkerSettings};
use crate::domain::SourcePosition;
use crate::queue::{ConsumerError, KafkaConsumer, Ticket};
use crate::telemetry::Metrics;

/// How often the loop looks at the intake's hold while nothing else wakes it (blocked on
/// a slot, or paused with no records coming).
const HOLD_RECHECK: Duration = Duration::from_millis(200);

/// Reads records into the worker pool and commits what is durable.
pub struct MessageConsumer {
    kafka: Arc<KafkaConsumer>,
    settings: WorkerSettings,
}

impl MessageConsumer {
    pub fn new(
        kafka: &KafkaSettings,
        settings: &WorkerSettings,
        queue_depth: prometheus::IntGauge,
    ) -> Result<MessageConsumer, ConsumerError> {
        Ok(MessageConsumer {
            kafka: Arc::new(KafkaConsumer::new(
                kafka,
                settings.session_timeout,
                queue_depth,
            )?),
            settings: settings.clone(),
        })
    }

    /// Consumes until `stop` fires. Each record takes a slot of the pool; while none is
    /// free the loop reads no further, so back-pressure reaches Kafka. Every message's task
    /// is spawned on `tasks`, so shutdown can wait for all of them.
    ///
    /// While the pipeline's intake is on hold (a dead letter cannot be written, or the
    /// database is unavailable) the assigned partitions are paused: the loop keeps polling,
    /// so the group keeps its member and rebalances are served, but no record arrives.
    pub async fn run(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        slots: Arc<Semaphore>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) {
        let metrics = pipeline.metrics.clone();
        // Read and tracked, waiting for a slot (more than one only if records arrive while
        // paused: those fetched before the pause).
        let mut waiting: VecDeque<(Received, Ticket)> = VecDeque::new();
        let mut paused: Option<HoldReason> = None;
        let mut recheck = tokio::time::interval(HOLD_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hold = pipeline.intake.hold_reason();
            if hold != paused {
                self.pause(hold, &metrics);
                paused = hold;
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = slots.clone().acquire_owned(), if !waiting.is_empty() => {
                    let (Ok(permit), Some((received, ticket))) = (permit, waiting.pop_front()) else {
                        break;
                    };
                    let slot = PoolSlot::new(permit, metrics.active_workers.clone());
                    self.spawn(&pipeline, &tasks, received, ticket, slot);
                }
                record = self.kafka.recv(), if waiting.is_empty() || paused.is_some() => {
                    let record = match record {
                        Ok(r) => r,
                        Err(err) => {
                            tracing::warn!(error = %err, "consumer error");
                            continue;
                        }
                    };
                    let source = SourcePosition {
                        partition: record.partition(),
                        offset: record.offset(),
                    };
                    // Tracked before it waits for a slot, so a revoke meanwhile makes its
                    // ticket stale, and stopped here it stays unfinished: uncommitted,
                    // re-delivered. The record first, then its slot: a loop holding a slot
                    // while it waits for records would keep it from a message coming back
                    // from an NLP back-off.
                    let ticket = self.kafka.offsets().track(source.partition, source.offset);
                    let received = pipeline.receive(record.key(), record.payload(), source);
                    waiting.push_back((received, ticket));
                }
                _ = recheck.tick() => {}
            }
        }
        tracing::info!("consumer stopped reading");
    }

    fn spawn(
        &self,
        pipeline: &Arc<Pipeline>,
        tasks: &TaskTracker,
        received: Received,
        ticket: Ticket,
        slot: PoolSlot,
    ) {
        let pipeline = pipeline.clone();
        let offsets = self.kafka.offsets().clone();
        tasks.spawn(async move {
            let outcome = pipeline.process_received(received, Some(slot)).await;
            if outcome.is_durable() {
                offsets.complete(ticket);
            }
            pipeline
                .metrics
                .messages_processed
                .with_label_values(&[outcome.label()])
                .inc();
        });
    }

    /// Pauses every assigned partition for `reason`, or resumes them all for `None`.
    fn pause(&self, reason: Option<HoldReason>, metrics: &Metrics) {
        for r in HoldReason::ALL {
            metrics
                .consumer_paused
                .with_label_values(&[r.as_str()])
                .set(i64::from(Some(r) == reason));
        }
        let Some(partitions) = self.kafka.set_paused(reason.is_some()) else {
            return;
        };
        match reason {
            Some(reason) => {
                tracing::warn!(reason = reason.as_str(), partitions, "consumption paused")
            }
            None => tracing::info!(partitions, "consumption resumed"),
        }
    }

    /// Commits every partition's durable prefix (see [`KafkaConsumer::commit`]).
    pub fn commit(&self, mode: CommitMode) {
        self.kafka.commit(mode);
    }

    /// Health: the broker answers a metadata request for our topic.
    pub async fn check(self: Arc<Self>, within: Duration) -> Result<(), String> {
        self.kafka.clone().check(within).await
    }

    /// Commits on a timer until `stop` fires.
    pub async fn commit_periodically(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.commit_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => self.commit(CommitMode::Async),
                () = stop.cancelled() => return,
            }
        }
    }
}
