//! The broker's acknowledgements, served on the runtime's own thread.
//!
//! librdkafka hands each record's outcome (its delivery report) to whoever polls the
//! producer. rust-rdkafka's `FutureProducer` polls from a thread of its own: each produce
//! response wakes that thread, which then wakes the runtime thread that answers 202, two
//! thread hops (its poller took about 5 µs a message at 6,000 msg/s,
//! docs/BENCHMARKS-HISTORY.md).
//! [`DeliveryReports`] polls from a task on the runtime instead, without blocking: every
//! millisecond while records await their acknowledgement, every 100 ms when none do (for
//! librdkafka's error events). An answer can wait up to a millisecond more for its poll.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// How often the producer is polled while records await their acknowledgement.
const BUSY_POLL: Duration = Duration::from_millis(1);
/// How often it is polled when none do, for librdkafka's error events.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition of `kafka.topic`.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
}

/// Where one record's outcome goes: the publish waiting for it.
type DeliverySender = oneshot::Sender<Result<Delivery, KafkaError>>;

/// The producer's context: sends each record's outcome to its publish.
pub(crate) struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliverySender>;

    fn delivery(&self, result: &DeliveryResult<'_>, publish: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(record) => Ok(Delivery {
                partition: record.partition(),
                offset: record.offset(),
            }),
            Err((err, _)) => Err(err.clone()),
        };
        // A publish that gave up waiting (its own guard timer) has dropped its receiver.
        let _ = publish.send(outcome);
    }
}

/// The ingest producer: librdkafka's, with its delivery reports served by [`DeliveryReports`].
pub(crate) type IngestProducer = BaseProducer<DeliveryContext>;

/// Polls the producer for delivery reports from a task of the runtime.
pub(crate) struct DeliveryReports {
    producer: Arc<IngestProducer>,
    record_sent: Arc<Notify>,
}

impl DeliveryReports {
    pub(crate) fn new(producer: Arc<IngestProducer>) -> DeliveryReports {
        DeliveryReports {
            producer,
            record_sent: Arc::new(Notify::new()),
        }
    }

    /// Wakes an idle poller: a record now awaits its acknowledgement.
    pub(crate) fn record_sent(&self) {
        self.record_sent.notify_one();
    }

    /// Serves delivery reports until `stop`. After it, `flush` serves what is left.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let pause = if self.serve_ready() {
                BUSY_POLL
            } else {
                IDLE_POLL
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.record_sent.notified(), if pause == IDLE_POLL => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Serves every report librdkafka has ready, without waiting; whether records still
    /// await theirs.
    fn serve_ready(&self) -> bool {
        loop {
            // Counts records queued, in flight and with a report not yet served, so it
            // falls when a poll served reports.
            let before = self.producer.in_flight_count();
            // With nothing awaiting a report this still serves an error event, if queued.
            self.producer.poll(Duration::ZERO);
            if before == 0 {
                return false;
            }
            if self.producer.in_flight_count() >= before {
                return true;
            }
        }
    }
}
