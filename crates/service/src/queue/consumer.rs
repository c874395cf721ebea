//! The worker's Kafka client: a consumer in group `chat-analytics-worker` with
//! auto-commit off, and the callbacks librdkafka runs on its own thread (lag for
//! `queue_depth`, commits on revoke, pausing what is assigned while paused). Commits
//! follow the offset tracker; what to do with a record is the worker's business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};

use super::bounded_close::BoundedClose;
use super::check_topic;
use super::offsets::{OffsetTracker, Ticket};
use crate::config::KafkaSettings;

/// The worker's Kafka consumer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// librdkafka refused the consumer's configuration.
    #[error("cannot create Kafka consumer for {brokers}: {source}")]
    Create {
        /// `kafka.brokers`.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Subscribing to the topic failed.
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe {
        /// `kafka.topic`.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// The offset tracker, shared by the rebalance callbacks (librdkafka's thread), the
/// message tasks that finish records and the committer.
#[derive(Clone, Default)]
pub struct SharedOffsets(Arc<Mutex<OffsetTracker>>);

impl SharedOffsets {
    fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // The tracker holds no invariant a panicking holder could break half-way.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a read offset; its ticket marks it done later.
    pub fn track(&self, partition: i32, offset: i64) -> Ticket {
        self.lock().track(partition, offset)
    }

    /// The message of `ticket` has a durable outcome: its offset may be committed.
    pub fn complete(&self, ticket: Ticket) {
        self.lock().complete(ticket);
    }
}

/// Shared between the rdkafka callbacks (its own thread) and the async loop.
struct ConsumerCallbacks {
    offsets: SharedOffsets,
    topic: String,
    queue_depth: prometheus::IntGauge,
    /// Consumption is paused: partitions assigned meanwhile are paused too.
    paused: AtomicBool,
    /// Last known lag per assigned partition.
    last_lag: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for ConsumerCallbacks {
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
        // A paused partition is not fetched, so its lag here is stale: while paused,
        // KafkaConsumer::refresh_lag keeps it from the broker's high watermarks instead.
        let paused = self.paused.load(Ordering::Acquire);
        for p in topic.partitions.values().filter(|p| p.partition >= 0) {
            if !paused && p.consumer_lag >= 0 && assigned.contains(&p.partition) {
                last.insert(p.partition, p.consumer_lag);
            }
        }
        self.queue_depth.set(last.values().sum());
    }
}

impl ConsumerContext for ConsumerCallbacks {
    /// Before partitions go, commit what is done for them; in-flight work on them is
    /// abandoned uncommitted and re-read by the next owner.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = self.offsets.lock();
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
                let mut tracker = self.offsets.lock();
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

/// How long dropping the consumer waits for librdkafka's close. Once the group is left
/// ([`KafkaConsumer::leave_group`]) a close takes milliseconds.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long [`KafkaConsumer::leave_group`] polls between looks at the assignment.
const LEAVE_POLL: Duration = Duration::from_millis(100);

/// The consumer still had partitions when [`KafkaConsumer::leave_group`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// The revoke was not served within the wait.
    #[error("partitions still assigned after {0:?}")]
    StillAssigned(Duration),
    /// librdkafka could not say what is assigned.
    #[error("cannot read the assignment: {0}")]
    Assignment(KafkaError),
}

/// The subscribed consumer and its offset tracker.
pub struct KafkaConsumer {
    consumer: BoundedClose<StreamConsumer<ConsumerCallbacks>>,
    offsets: SharedOffsets,
    topic: String,
}

impl KafkaConsumer {
    /// Creates the consumer and subscribes to the topic; `session_timeout` is how soon
    /// the group notices a dead worker.
    pub fn new(
        kafka: &KafkaSettings,
        session_timeout: Duration,
        queue_depth: prometheus::IntGauge,
    ) -> Result<KafkaConsumer, ConsumerError> {
        let offsets = SharedOffsets::default();
        let callbacks = ConsumerCallbacks {
            offsets: offsets.clone(),
            topic: kafka.topic.clone(),
            queue_depth,
            paused: AtomicBool::new(false),
            last_lag: Mutex::new(HashMap::new()),
        };
        let consumer: StreamConsumer<ConsumerCallbacks> = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &kafka.consumer_group)
            .set("client.id", "chat-analytics-worker")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 4).max(500).to_string(),
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
            .create_with_context(callbacks)
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
        Ok(KafkaConsumer {
            consumer: BoundedClose::new(consumer, CLOSE_WAIT),
            offsets,
            topic: kafka.topic.clone(),
        })
    }

    /// The tracker whose durable prefix [`KafkaConsumer::commit`] commits.
    pub fn offsets(&self) -> &SharedOffsets {
        &self.offsets
    }

    /// The next record of the assigned partitions.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        self.consumer.recv().await
    }

    /// Pauses every assigned partition (and those assigned later, until resumed), or
    /// resumes them all. Resumed partitions are fetched again from the last record read.
    /// Returns how many partitions it paused or resumed; `None` when that failed (logged).
    pub fn set_paused(&self, paused: bool) -> Option<usize> {
        self.consumer
            .context()
            .paused
            .store(paused, Ordering::Release);
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the assignment to pause or resume it");
                return None;
            }
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => Some(assignment.count()),
            Err(err) => {
                tracing::warn!(error = %err, "cannot pause or resume partitions");
                None
            }
        }
    }

    /// While paused the client fetches nothing and its statistics stop seeing the log end
    /// grow, so `queue_depth` would freeze at its value when the pause began. Asks the
    /// broker for each assigned partition's high watermark instead, and counts the lag
    /// from the next offset to read. Blocking (one request per partition): run it off the
    /// async runtime.
    pub fn refresh_lag(&self, timeout: Duration) {
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the positions to count the lag");
                return;
            }
        };
        let mut lags = Vec::new();
        for elem in positions.elements_for_topic(&self.topic) {
            // Nothing read since the assignment: the last known lag stands.
            let Offset::Offset(position) = elem.offset() else {
                continue;
            };
            match self
                .consumer
                .fetch_watermarks(&self.topic, elem.partition(), timeout)
            {
                Ok((_, high)) => lags.push((elem.partition(), (high - position).max(0))),
                Err(err) => tracing::debug!(
                    error = %err,
                    partition = elem.partition(),
                    "cannot read the high watermark"
                ),
            }
        }
        let callbacks = self.consumer.context();
        let mut last = callbacks
            .last_lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.extend(lags);
        callbacks.queue_depth.set(last.values().sum());
    }

    /// Commits every partition's durable prefix: only what moved (asynchronously) on the
    /// timer, everything (synchronously) at shutdown.
    pub fn commit(&self, mode: CommitMode) {
        let positions = match mode {
            CommitMode::Async => self.offsets.lock().commit_positions(),
            CommitMode::Sync => self.offsets.lock().all_positions(),
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

    /// Leaves the group ahead of the close: unsubscribes, then polls until the partitions
    /// are handed back (the revoke commits what is done for them) or `within` is over.
    /// A close that finds partitions assigned, or an assignment not yet served, can hang in
    /// librdkafka; one after this has none to hand back. Records still buffered are dropped
    /// unprocessed: uncommitted, the next owner reads them.
    pub async fn leave_group(&self, within: Duration) -> Result<(), LeaveError> {
        let deadline = tokio::time::Instant::now() + within;
        self.consumer.unsubscribe();
        loop {
            // Polled at least once, so that an assignment already queued is served (and
            // then revoked) rather than left for the close.
            let poll_until = deadline.min(tokio::time::Instant::now() + LEAVE_POLL);
            let _ = tokio::time::timeout_at(poll_until, self.consumer.recv()).await;
            let assigned = self.consumer.assignment().map_err(LeaveError::Assignment)?;
            if assigned.count() == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaveError::StillAssigned(within));
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
}
