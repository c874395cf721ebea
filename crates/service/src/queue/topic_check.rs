//! Health: the broker answers a metadata request for our topic, and the topic has
//! partitions. Shared by the producer (ingest role) and the consumer (worker role).

use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

/// Runs `fetch` (a blocking metadata request) off the async threads and judges the answer.
pub async fn check_topic<F>(topic: &str, fetch: F) -> Result<(), String>
where
    F: FnOnce() -> KafkaResult<Metadata> + Send + 'static,
{
    let metadata = tokio::task::spawn_blocking(fetch)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
        Some(t) => Err(format!("topic {} unavailable: {:?}", t.name(), t.error())),
        None => Err(format!("topic {topic} not found")),
    }
}
