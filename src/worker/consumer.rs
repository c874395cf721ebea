//! The Kafka side of the worker: a consumer in group `chat-analytics-worker` with
//! auto-commit off, a bounded pool of in-flight messages, and commits that follow the
//! offset tracker, including on rebalance.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext, Message};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::intake::HoldReason;
use super::offsets::{OffsetTracker, Ticket};
use super::pipeline::{Pipeline, PoolSlot, Received};
use crate::config::{KafkaSettings, WorkerSettings};
use crate::domain::SourcePosition;
use crate::queue::check_topic;
use crate::telemetry::Metrics;

/// How often the loop looks at the intake's hold while nothing else wakes it (blocked on
/// a slot, or paused with no records coming).
const HOLD_RECHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create Kafka consumer for {brokers}: {source}")]
    Create { brokers: String, source: KafkaError },
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
}

/// Shared between the rdkafka callbacks (its own thread) and the async loop.
pub struct WorkerContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    queue_depth: prometheus::IntGauge,
    /// Consumption is paused: partitions assigned meanwhile are paused too.
    paused: AtomicBool,
    /// Last known lag per assigned partition.
    last_lag: Mutex<HashMap<i32, i64>>,
}

fn lock(tracker: &Mutex<OffsetTracker>) -> MutexGuard<'_, OffsetTracker> {
    // The tracker holds no invariant a panicking holder could break half-way.
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for WorkerContext {
    /// `queue_depth`: the lag summed over assigned partitions. A partition whose lag is
    /// unknown right now (the broker unreachable, a fresh assignment) counts with its last
    /// known lag instead of 0, so the gauge does not read "no backlog" during an outage.
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let mut last = self
            .last_lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let assigned: Vec<i32> = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.fetch_state != "none")
            .map(|p| p.partition)
            .collect();
        last.retain(|partition, _| assigned.contains(partition));
        for p in topic.partitions.values().filter(|p| p.partition >= 0) {
            if p.consumer_lag >= 0 && assigned.contains(&p.partition) {
                last.insert(p.partition, p.consumer_lag);
            }
        }
        self.queue_depth.set(last.values().sum());
    }
}

impl ConsumerContext for WorkerContext {
    /// Before partitions go, commit what is done for them; in-flight work on them is
    /// abandoned uncommitted and re-read by the next owner.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = lock(&self.tracker);
            for elem in revoked.elements() {
                if let Some(position) = tracker.revoke(elem.partition()) {
                    // Adding to a list we own cannot fail for a valid offset.
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        elem.partition(),
                        Offset::Offset(position),
                    );
                }
            }
        }
        tracing::info!(
            revoked = revoked.count(),
            committing = commit.count(),
            "partitions revoked"
        );
        if commit.count() > 0 {
            if let Err(err) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %err, "commit on revoke failed; the next owner re-processes (idempotently)");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            {
                let mut tracker = lock(&self.tracker);
                for elem in assigned.elements() {
                    tracker.assign(elem.partition());
                }
            }
            let paused = self.paused.load(Ordering::Acquire);
            if paused {
                if let Err(err) = consumer.pause(assigned) {
                    tracing::warn!(error = %err, "cannot pause newly assigned partitions");
                }
            }
            tracing::info!(assigned = assigned.count(), paused, "partitions assigned");
        }
    }
}

pub struct MessageConsumer {
    consumer: StreamConsumer<WorkerContext>,
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    settings: WorkerSettings,
}

impl MessageConsumer {
    pub fn new(
        kafka: &KafkaSettings,
        settings: &WorkerSettings,
        queue_depth: prometheus::IntGauge,
    ) -> Result<MessageConsumer, ConsumerError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let context = WorkerContext {
            tracker: tracker.clone(),
            topic: kafka.topic.clone(),
            queue_depth,
            paused: AtomicBool::new(false),
            last_lag: Mutex::new(HashMap::new()),
        };
        let consumer: StreamConsumer<WorkerContext> = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &kafka.consumer_group)
            .set("client.id", "chat-analytics-worker")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (settings.session_timeout.as_millis() / 4)
                    .max(500)
                    .to_string(),
            )
            .set("statistics.interval.ms", "5000")
            .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string())
            .set(
                "fetch.wait.max.ms",
                kafka.fetch_max_wait.as_millis().to_string(),
            )
            // Bounds the prefetch buffer, the one queue all partitions share (64 MB by
            // default would dwarf the rest of the worker): 2 MB is ~6,000 messages.
            .set("queued.max.messages.kbytes", "2048")
            .set("queued.min.messages", "10000")
            // A partition that finds that queue full waits this long before it may fetch
            // again (1 s by default). Under a backlog the partitions that librdkafka
            // visits first then refill the queue every time and the last ones fall ever
            // further behind: one partition 24 s behind while the others were at 2-3 s.
            // Short, they all get in again as soon as there is room.
            .set("fetch.queue.backoff.ms", "10")
            .create_with_context(context)
            .map_err(|source| ConsumerError::Create {
                brokers: kafka.brokers.clone(),
                source,
            })?;
        consumer
            .subscribe(&[&kafka.topic])
            .map_err(|source| ConsumerError::Subscribe {
                topic: kafka.topic.clone(),
                source,
            })?;
        Ok(MessageConsumer {
            consumer,
            tracker,
            topic: kafka.topic.clone(),
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
                record = self.consumer.recv(), if waiting.is_empty() || paused.is_some() => {
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
                    let ticket = lock(&self.tracker).track(source.partition, source.offset);
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
        let tracker = self.tracker.clone();
        tasks.spawn(async move {
            let outcome = pipeline.process_received(received, Some(slot)).await;
            if outcome.is_durable() {
                lock(&tracker).complete(ticket);
            }
            pipeline
                .metrics
                .messages_processed
                .with_label_values(&[outcome.label()])
                .inc();
        });
    }

    /// Pauses every assigned partition for `reason`, or resumes them all for `None`.
    /// Resumed partitions are fetched again from the last record read.
    fn pause(&self, reason: Option<HoldReason>, metrics: &Metrics) {
        self.consumer
            .context()
            .paused
            .store(reason.is_some(), Ordering::Release);
        for r in HoldReason::ALL {
            metrics
                .consumer_paused
                .with_label_values(&[r.as_str()])
                .set(i64::from(Some(r) == reason));
        }
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let result = match reason {
            Some(_) => self.consumer.pause(&assignment),
            None => self.consumer.resume(&assignment),
        };
        match (result, reason) {
            (Err(err), _) => tracing::warn!(error = %err, "cannot pause or resume partitions"),
            (Ok(()), Some(reason)) => tracing::warn!(
                reason = reason.as_str(),
                partitions = assignment.count(),
                "consumption paused"
            ),
            (Ok(()), None) => {
                tracing::info!(partitions = assignment.count(), "consumption resumed")
            }
        }
    }

    /// Commits every partition's durable prefix: only what moved (asynchronously) on the
    /// timer, everything (synchronously) at shutdown.
    pub fn commit(&self, mode: CommitMode) {
        let positions = match mode {
            CommitMode::Async => lock(&self.tracker).commit_positions(),
            CommitMode::Sync => lock(&self.tracker).all_positions(),
        };
        if positions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, position) in &positions {
            let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(*position));
        }
        match self.consumer.commit(&list, mode) {
            Ok(()) => tracing::debug!(?positions, "offsets committed"),
            Err(err) => {
                tracing::warn!(error = %err, ?positions, "offset commit failed; a later commit supersedes it")
            }
        }
    }

    /// Health: the broker answers a metadata request for our topic.
    pub async fn check(self: Arc<Self>, within: Duration) -> Result<(), String> {
        let me = self.clone();
        check_topic(&self.topic, move || {
            me.consumer
                .fetch_metadata(Some(&me.topic), rdkafka::util::Timeout::After(within))
        })
        .await
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
