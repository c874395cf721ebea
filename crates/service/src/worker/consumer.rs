//! The worker's dispatch loop: records from the Kafka consumer into a bounded pool of
//! in-flight messages, consumption paused while the pipeline's intake is on hold, and
//! offsets committed on a timer as the tracker allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::CommitMode;
use rdkafka::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::intake::HoldReason;
use super::pipeline::{Outcome, Pipeline, PoolSlot, Received};
use crate::config::{KafkaSettings, WorkerSettings};
use crate::domain::SourcePosition;
use crate::queue::{ConsumerError, KafkaConsumer, Ticket};
use crate::telemetry::{export_at_zero, register};

/// How often the loop looks at the intake's hold while nothing else wakes it (blocked on
/// a slot, or paused with no records coming).
const HOLD_RECHECK: Duration = Duration::from_millis(200);
/// How often the lag is read from the broker while consumption is paused (as often as
/// the client's statistics report it otherwise).
const PAUSED_LAG_REFRESH: Duration = Duration::from_secs(5);

/// The consumer's and its pool's metrics; cheap to clone (each is an `Arc` inside).
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// `queue_depth`: consumer lag, set by the Kafka client's statistics callback.
    pub queue_depth: prometheus::IntGauge,
    /// `active_workers`: messages holding a pool slot.
    pub active_workers: prometheus::IntGauge,
    /// `consumer_paused{reason}`: 1 while consumption is paused for that reason.
    pub consumer_paused: prometheus::IntGaugeVec,
    /// `messages_processed_total{outcome}`.
    pub messages_processed: prometheus::IntCounterVec,
}

impl ConsumerMetrics {
    /// Registers the four metrics, every outcome's series at 0. The pause reasons are
    /// created by [`MessageConsumer::new`]: only a process that consumes exports them.
    pub fn register(registry: &prometheus::Registry) -> Result<ConsumerMetrics, prometheus::Error> {
        let queue_depth = register(
            registry,
            prometheus::IntGauge::new(
                "queue_depth",
                "Consumer lag: records in assigned partitions not yet consumed",
            )?,
        )?;
        let active_workers = register(
            registry,
            prometheus::IntGauge::new(
                "active_workers",
                "Messages holding a worker pool slot (moderation and enrichment; bounded by worker.concurrency)",
            )?,
        )?;
        let messages_processed = register(
            registry,
            prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "messages_processed_total",
                    "Messages finished by the worker, by outcome",
                ),
                &["outcome"],
            )?,
        )?;
        let consumer_paused = register(
            registry,
            prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "consumer_paused",
                    "1 while consumption is paused, by reason (dead_letters_unwritable, database_unavailable)",
                ),
                &["reason"],
            )?,
        )?;
        export_at_zero(
            &messages_processed,
            Outcome::ALL.map(|outcome| [outcome.label()]),
        );
        Ok(ConsumerMetrics {
            queue_depth,
            active_workers,
            consumer_paused,
            messages_processed,
        })
    }
}

/// Reads records into the worker pool and commits what is durable.
pub struct MessageConsumer {
    kafka: Arc<KafkaConsumer>,
    settings: WorkerSettings,
    metrics: ConsumerMetrics,
}

impl MessageConsumer {
    pub(crate) fn new(
        kafka: &KafkaSettings,
        settings: &WorkerSettings,
        metrics: ConsumerMetrics,
    ) -> Result<MessageConsumer, ConsumerError> {
        export_at_zero(
            &metrics.consumer_paused,
            HoldReason::ALL.map(|reason| [reason.as_str()]),
        );
        Ok(MessageConsumer {
            kafka: Arc::new(KafkaConsumer::new(
                kafka,
                settings.session_timeout,
                metrics.queue_depth.clone(),
            )?),
            settings: settings.clone(),
            metrics,
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
        // Read and tracked, waiting for a slot (more than one only if records arrive while
        // paused: those fetched before the pause).
        let mut waiting: VecDeque<(Received, Ticket)> = VecDeque::new();
        let mut paused: Option<HoldReason> = None;
        let mut recheck = tokio::time::interval(HOLD_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_refresh: Option<(tokio::time::Instant, JoinHandle<()>)> = None;
        loop {
            let hold = pipeline.intake.hold_reason();
            if hold != paused {
                self.pause(hold);
                paused = hold;
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = slots.clone().acquire_owned(), if !waiting.is_empty() => {
                    let (Ok(permit), Some((received, ticket))) = (permit, waiting.pop_front()) else {
                        break;
                    };
                    let slot = PoolSlot::new(permit, self.metrics.active_workers.clone());
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
                _ = recheck.tick() => {
                    if paused.is_some() {
                        self.refresh_paused_lag(&mut lag_refresh);
                    }
                }
            }
        }
        tracing::info!("consumer stopped reading");
    }

    /// Starts a read of the lag from the broker, at most every [`PAUSED_LAG_REFRESH`] and
    /// one at a time, so `queue_depth` keeps showing the backlog growing while paused.
    fn refresh_paused_lag(&self, last: &mut Option<(tokio::time::Instant, JoinHandle<()>)>) {
        let due = last.as_ref().is_none_or(|(started, task)| {
            task.is_finished() && started.elapsed() >= PAUSED_LAG_REFRESH
        });
        if due {
            let kafka = self.kafka.clone();
            let task =
                tokio::task::spawn_blocking(move || kafka.refresh_lag(Duration::from_secs(1)));
            *last = Some((tokio::time::Instant::now(), task));
        }
    }

    fn spawn(
        &self,
        pipeline: &Arc<Pipeline>,
        tasks: &TaskTracker,
        received: Received,
        ticket: Ticket,
        slot: PoolSlot,
    ) {
        let offsets = self.kafka.offsets().clone();
        let processed = self.metrics.messages_processed.clone();
        let span = received.span();
        // Boxed, so that spawning the task and finishing it move a pointer rather than the
        // whole message's future (tokio copies a task's future into its cell, and writes
        // the finished stage over it).
        let task = Box::pin(
            pipeline
                .process_received(received, Some(slot))
                .map(move |outcome| {
                    if outcome.is_durable() {
                        offsets.complete(ticket);
                    }
                    processed.with_label_values(&[outcome.label()]).inc();
                }),
        );
        tasks.spawn(task.instrument(span));
    }

    /// Pauses every assigned partition for `reason`, or resumes them all for `None`.
    fn pause(&self, reason: Option<HoldReason>) {
        for r in HoldReason::ALL {
            self.metrics
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

    /// Hands the partitions back to the group before the client closes (see
    /// [`KafkaConsumer::leave_group`]); a failure is logged, the close is bounded anyway.
    pub async fn leave_group(&self, within: Duration) {
        match self.kafka.leave_group(within).await {
            Ok(()) => tracing::info!("left the consumer group"),
            Err(err) => tracing::warn!(error = %err, "consumer group not left; its close may wait"),
        }
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
