//! Publishing accepted messages to Kafka, answering only once the broker acknowledged
//! (`acks=all`) or the publish timeout ran out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::check_topic;
use super::delivery_reports::{Delivery, DeliveryContext, DeliveryReports, IngestProducer};
use crate::config::KafkaSettings;
use crate::telemetry::{register, LATENCY_BUCKETS};

/// Why a publish did not reach the broker. The ingest API maps `Overloaded` to 429 and
/// the rest to 503: none of them means the record is in the topic.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// librdkafka's local queue is full: too much not yet sent. Answered 429.
    #[error("producer queue is full")]
    Overloaded,
    /// Not acknowledged within `kafka.publish_timeout` (the duration given).
    #[error("broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// The broker refused the record or cannot be reached, or the producer shut down.
    #[error("broker refused or is unreachable: {0}")]
    Unavailable(String),
}

/// The Kafka producer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// librdkafka refused the producer's configuration.
    #[error("cannot create Kafka producer for {brokers}: {source}")]
    Create {
        /// `kafka.brokers`.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// What the ingest API needs from a queue; a trait so request handling can be tested
/// with an in-memory fake.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `payload` with `key` (the `bot_id`, so one bot's messages share a
    /// partition); resolves once the broker acknowledged the record or it failed.
    fn publish(
        &self,
        key: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Delivery, PublishError>> + Send;
}

/// The producer's metrics; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ProducerMetrics {
    /// `kafka_produce_duration_seconds`.
    pub produce_duration: prometheus::Histogram,
}

impl ProducerMetrics {
    pub(crate) fn register(
        registry: &prometheus::Registry,
    ) -> Result<ProducerMetrics, prometheus::Error> {
        let produce_duration = register(
            registry,
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "kafka_produce_duration_seconds",
                    "Time from handing a record to the producer to the broker's acknowledgement",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
        )?;
        Ok(ProducerMetrics { produce_duration })
    }
}

/// rdkafka-backed publisher to the configured topic. Its acknowledgements arrive only
/// while [`KafkaPublisher::delivery_reports`] runs.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: Arc<IngestProducer>,
    reports: Arc<DeliveryReports>,
    topic: Arc<str>,
    publish_timeout: Duration,
    produce_duration: prometheus::Histogram,
}

impl KafkaPublisher {
    pub(crate) fn new(
        settings: &KafkaSettings,
        metrics: ProducerMetrics,
    ) -> Result<KafkaPublisher, ProducerError> {
        let producer: IngestProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", "chat-analytics-ingest")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", settings.compression.as_str())
            .set("linger.ms", settings.linger.as_millis().to_string())
            // librdkafka gives up on the record itself at the publish timeout, so a 503
            // and a late delivery of the same record cannot both happen by our timer.
            .set(
                "message.timeout.ms",
                settings.publish_timeout.as_millis().to_string(),
            )
            .set("queue.buffering.max.messages", "200000")
            .set("socket.keepalive.enable", "true")
            // Reconnect attempts back off to at most 1 s (librdkafka: 10 s), so ingest stops
            // answering 503 within a second of the broker's return, not up to ten.
            .set("reconnect.backoff.max.ms", "1000")
            .create_with_context(DeliveryContext)
            .map_err(|source| ProducerError::Create {
                brokers: settings.brokers.clone(),
                source,
            })?;
        let producer = Arc::new(producer);
        Ok(KafkaPublisher {
            reports: Arc::new(DeliveryReports::new(producer.clone())),
            producer,
            topic: Arc::from(settings.topic.as_str()),
            publish_timeout: settings.publish_timeout,
            produce_duration: metrics.produce_duration,
        })
    }

    /// What serves the broker's acknowledgements; run it (supervised) for as long as
    /// records are published, and stop it only after [`KafkaPublisher::flush`].
    pub(crate) fn delivery_reports(&self) -> Arc<DeliveryReports> {
        self.reports.clone()
    }

    /// Waits (off the async threads) for queued records to be acknowledged, serving their
    /// reports itself.
    pub async fn flush(&self, within: Duration) -> Result<(), PublishError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(within)))
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }

    /// Health: the broker answers a metadata request for our topic.
    pub async fn check(&self, within: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        check_topic(&self.topic, move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(within))
        })
        .await
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, key: &str, payload: Vec<u8>) -> Result<Delivery, PublishError> {
        let started = Instant::now();
        let (sent, delivery) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(sent))
            .key(key)
            .payload(&payload);
        self.producer
            .send(record)
            .map_err(|(err, _)| classify(err))?;
        self.reports.record_sent();
        // librdkafka enforces the timeout; ours only guards against a lost callback.
        let guard = self.publish_timeout + Duration::from_millis(500);
        let outcome = match tokio::time::timeout(guard, delivery).await {
            Err(_) => Err(PublishError::Timeout(self.publish_timeout)),
            Ok(Err(_canceled)) => Err(PublishError::Unavailable(
                "producer shut down before delivery".into(),
            )),
            Ok(Ok(Err(err))) => Err(match err {
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                    PublishError::Timeout(self.publish_timeout)
                }
                other => classify(other),
            }),
            Ok(Ok(Ok(delivery))) => Ok(delivery),
        };
        self.produce_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }
}

fn classify(err: KafkaError) -> PublishError {
    match err {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => PublishError::Overloaded,
        other => PublishError::Unavailable(other.to_string()),
    }
}
