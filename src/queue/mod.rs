//! Kafka: the envelope codec and the producer used by the ingest API.

mod envelope;
mod producer;
mod topic_check;

pub use envelope::{encode_message, Envelope, EnvelopeError, ENVELOPE_VERSION};
pub use producer::{Delivery, KafkaPublisher, ProducerError, PublishError, Publisher};
pub use topic_check::check_topic;
