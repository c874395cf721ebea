//! Kafka: the envelope codec, the producer used by the ingest API with the task that
//! serves its acknowledgements, and the worker's consumer with its offset tracker.

mod bounded_close;
mod consumer;
mod delivery_reports;
mod envelope;
mod offsets;
mod producer;
mod topic_check;

pub use consumer::{ConsumerError, KafkaConsumer, LeaveError, SharedOffsets};
pub use delivery_reports::Delivery;
pub(crate) use delivery_reports::DeliveryReports;
pub use envelope::{encode_message, Envelope, EnvelopeError, ENVELOPE_VERSION};
pub use offsets::{OffsetTracker, Ticket};
pub use producer::{KafkaPublisher, ProducerError, ProducerMetrics, PublishError, Publisher};
pub use topic_check::check_topic;
