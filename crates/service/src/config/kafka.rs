//! `[kafka]`: the brokers, the topic, and the producer's and consumer's tuning.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::value::{at_most, count, non_empty, positive_millis};
use super::ConfigError;

/// Fewer publishes in flight than this could not even fill one small batch request.
const MIN_IN_FLIGHT: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    brokers: String,
    topic: String,
    publish_timeout_ms: u64,
    max_in_flight: usize,
    linger_ms: u64,
    compression: String,
    consumer_group: String,
    fetch_min_bytes: u32,
    fetch_max_wait_ms: u64,
}

/// The Kafka cluster and how both sides use it.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`, as librdkafka takes them.
    pub brokers: String,
    /// The topic ingest publishes to and the worker consumes, e.g. `chat.messages`.
    pub topic: String,
    /// A publish not acknowledged (acks=all) within this is answered 503.
    pub publish_timeout: Duration,
    /// Publishes in flight at once; 429 from 90% of it.
    pub max_in_flight: NonZeroUsize,
    /// Below `publish_timeout`.
    pub linger: Duration,
    /// How the producer compresses its batches.
    pub compression: Compression,
    /// The workers' consumer group: its members share the topic's partitions.
    pub consumer_group: String,
    /// The broker answers a fetch once it has this many bytes...
    pub fetch_min_bytes: NonZeroU32,
    /// ...or after this long.
    pub fetch_max_wait: Duration,
}

/// Codec of produced batches (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Batches go uncompressed: least CPU, most bytes on the network and on disk.
    None,
    /// gzip: a good ratio for the most producer CPU of these.
    Gzip,
    /// Snappy: cheap on CPU, a modest ratio.
    Snappy,
    /// LZ4: fast with a fair ratio (the default).
    Lz4,
    /// Zstandard: about gzip's ratio for less CPU; needs brokers of Kafka 2.1 or later.
    Zstd,
}

impl Compression {
    /// Every codec, in the order the config error lists them.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The name in the config file, which is also librdkafka's.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Kafka's own rule for topic names.
fn is_valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl TryFrom<Raw> for KafkaSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if !is_valid_topic(&raw.topic) {
            return Err(ConfigError::invalid(
                "kafka.topic",
                &raw.topic,
                "a Kafka topic is 1-249 characters of [A-Za-z0-9._-]",
            ));
        }
        let publish_timeout = positive_millis("kafka.publish_timeout_ms", raw.publish_timeout_ms)?;
        if raw.linger_ms >= raw.publish_timeout_ms {
            return Err(ConfigError::invalid(
                "kafka.linger_ms",
                raw.linger_ms,
                "must be below kafka.publish_timeout_ms",
            ));
        }
        let max_in_flight = NonZeroUsize::new(raw.max_in_flight)
            .filter(|n| n.get() >= MIN_IN_FLIGHT)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "kafka.max_in_flight",
                    raw.max_in_flight,
                    format!("must be at least {MIN_IN_FLIGHT}"),
                )
            })?;
        let compression = Compression::ALL
            .into_iter()
            .find(|codec| codec.as_str() == raw.compression)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "kafka.compression",
                    &raw.compression,
                    "must be one of none, gzip, snappy, lz4, zstd",
                )
            })?;
        Ok(KafkaSettings {
            brokers: non_empty("kafka.brokers", raw.brokers)?,
            topic: raw.topic,
            publish_timeout,
            max_in_flight,
            linger: Duration::from_millis(raw.linger_ms),
            compression,
            consumer_group: non_empty("kafka.consumer_group", raw.consumer_group)?,
            fetch_min_bytes: count("kafka.fetch_min_bytes", raw.fetch_min_bytes, 100_000_000)?,
            // Longer than the session timeout would look like a dead consumer to the group.
            fetch_max_wait: Duration::from_millis(at_most(
                "kafka.fetch_max_wait_ms",
                raw.fetch_max_wait_ms,
                5_000,
            )?),
        })
    }
}
