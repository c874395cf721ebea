//! End-to-end latency, read back from Postgres after the run.
//!
//! A 202 only says Kafka holds the message; the target that matters to
//! analysts is how long until the row is stored. Every accepted message id of
//! the measured part is looked up in `messages`, and `processed_at - sent_at`
//! (the storage insert's clock time minus the intended send time the generator
//! wrote) goes into an HdrHistogram, per message, not as an average.
//!
//! The worker may still be draining when the load stops, so the lookup first
//! waits, bounded, until the most recently sent messages appear.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::time::Instant;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::report::{micros_histogram, Percentiles};

/// Ids per query: large enough for few round trips, small enough for one
/// array parameter and an index scan per id.
const CHUNK: usize = 5_000;
/// Most recent ids probed while waiting for the worker to catch up.
const PROBE: usize = 1_000;
/// Time between probes.
const POLL: Duration = Duration::from_millis(500);
/// Give up waiting when the probe has not moved for this long.
const STALL: Duration = Duration::from_secs(5);

const COUNT_SQL: &str = "SELECT count(*) FROM messages \
     WHERE message_id = ANY($1) AND sent_at BETWEEN $2 AND $3";
const LATENCY_SQL: &str = "SELECT extract(epoch FROM processed_at - sent_at)::float8 \
     FROM messages WHERE message_id = ANY($1) AND sent_at BETWEEN $2 AND $3";

/// End-to-end figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct E2eReport {
    /// Accepted messages looked up.
    pub requested: u64,
    /// Of those, rows found.
    pub found: u64,
    /// Accepted but not (yet) stored when the lookup gave up waiting.
    pub missing: u64,
    /// Time spent waiting for the worker after the load stopped.
    pub waited_s: f64,
    /// `processed_at - sent_at`, ms.
    pub latency_ms: Percentiles,
}

/// Why the lookup failed.
#[derive(Debug, Error)]
pub enum E2eError {
    /// Postgres could not be reached, or refused the login.
    #[error("connecting to Postgres for the end-to-end lookup: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A count or latency query failed.
    #[error("querying messages for the end-to-end lookup: {0}")]
    Query(#[source] tokio_postgres::Error),
}

/// Range of `sent_at` the run's messages fall in; lets Postgres prune to the
/// run's day partitions instead of probing every one.
#[derive(Debug, Clone, Copy)]
pub struct SentWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Looks up `ids` (in send order) and summarises their end-to-end latency,
/// waiting at most `wait` for the last ones to be stored.
pub async fn measure(
    url: &str,
    ids: &[Uuid],
    window: SentWindow,
    wait: Duration,
) -> Result<E2eReport, E2eError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(E2eError::Connect)?;
    let conn_task = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "postgres connection for the e2e lookup ended");
        }
    });
    let result = lookup(&client, ids, window, wait).await;
    drop(client);
    conn_task.abort();
    result
}

async fn lookup(
    client: &tokio_postgres::Client,
    ids: &[Uuid],
    window: SentWindow,
    wait: Duration,
) -> Result<E2eReport, E2eError> {
    let started = Instant::now();
    wait_for_tail(client, ids, window, wait).await?;
    let waited_s = started.elapsed().as_secs_f64();

    let mut hist = micros_histogram::<u64>(3);
    let mut found = 0u64;
    for chunk in ids.chunks(CHUNK) {
        let rows = client
            .query(LATENCY_SQL, &[&chunk, &window.from, &window.to])
            .await
            .map_err(E2eError::Query)?;
        for row in rows {
            let secs: Option<f64> = row.try_get(0).map_err(E2eError::Query)?;
            found += 1;
            hist.saturating_record(seconds_to_micros(secs.unwrap_or(0.0)));
        }
    }
    let requested = ids.len() as u64;
    Ok(E2eReport {
        requested,
        found,
        missing: requested.saturating_sub(found),
        waited_s,
        latency_ms: Percentiles::of_micros(&hist),
    })
}

/// Polls the most recent ids until all are stored, the probe stalls, or
/// `wait` runs out.
async fn wait_for_tail(
    client: &tokio_postgres::Client,
    ids: &[Uuid],
    window: SentWindow,
    wait: Duration,
) -> Result<(), E2eError> {
    let probe = &ids[ids.len().saturating_sub(PROBE)..];
    if probe.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + wait;
    let mut last = -1i64;
    let mut last_progress = Instant::now();
    loop {
        let row = client
            .query_one(COUNT_SQL, &[&probe, &window.from, &window.to])
            .await
            .map_err(E2eError::Query)?;
        let n: i64 = row.try_get(0).map_err(E2eError::Query)?;
        if n >= probe.len() as i64 {
            return Ok(());
        }
        let now = Instant::now();
        if n > last {
            last = n;
            last_progress = now;
        }
        if now >= deadline || now.duration_since(last_progress) >= STALL {
            tracing::warn!(
                stored = n,
                probed = probe.len(),
                "stopped waiting for the worker to store the last messages"
            );
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A latency in seconds from Postgres as whole microseconds; a negative value
/// (clock adjustments) counts as the smallest.
fn seconds_to_micros(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1e6).round() as u64
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_become_microseconds() {
        assert_eq!(seconds_to_micros(0.25), 250_000);
        assert_eq!(seconds_to_micros(-0.1), 1);
        assert_eq!(seconds_to_micros(f64::NAN), 1);
    }
}
