//! Collects processed messages from many worker tasks into batches bounded by size and
//! time, writes each batch in one statement, and answers every message with what
//! happened to it: stored, already stored (same or other content), failed (and why, for
//! the dead-letter decision), or abandoned at shutdown.
//!
//! A database outage does not fail rows: they are held and retried (see
//! [`DatabaseOutage`]) while the worker stops reading from Kafka, until the database is
//! back or `storage.max_outage_secs` has passed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::insert::{insert_messages, FailureKind, RowWrite};
use super::outage::{DatabaseOutage, OutageVerdict};
use crate::backoff::Backoff;
use crate::config::StorageSettings;
use crate::domain::ProcessedMessage;
use crate::telemetry::{register, LATENCY_BUCKETS};

/// End-to-end buckets, around the 400 ms target.
const E2E_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOutcome {
    /// Inserted: this copy is the row.
    Stored,
    /// Its `message_id` was already stored with the same content (a client's retry, a
    /// re-delivery, a replay).
    Duplicate,
    /// Its `message_id` was already stored with other content: the first stored copy
    /// wins, this one is not stored.
    Conflict,
    /// Not stored and never will be by this writer: dead-letter it.
    Failed {
        /// Whose fault it is: the database's or the row's.
        kind: FailureKind,
        /// The database's error, for the dead letter.
        error: String,
        /// Write attempts made.
        attempts: u32,
    },
    /// The writer stopped (shutdown) while the database was unavailable: the message is
    /// neither stored nor failed, and stays uncommitted in Kafka.
    Abandoned,
}

/// Metrics the writer moves; cheap to clone (each is an `Arc` inside).
#[derive(Clone)]
pub struct StorageMetrics {
    /// `db_write_duration_seconds`: one observation per batch INSERT attempt.
    pub db_write_duration: prometheus::Histogram,
    /// `end_to_end_latency_seconds`: a message's `sent_at` to its row committed.
    pub end_to_end_latency: prometheus::Histogram,
}

impl StorageMetrics {
    pub(crate) fn register(
        registry: &prometheus::Registry,
    ) -> Result<StorageMetrics, prometheus::Error> {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            )
        };
        Ok(StorageMetrics {
            db_write_duration: register(
                registry,
                histogram(
                    "db_write_duration_seconds",
                    "Time of one batch INSERT attempt",
                    LATENCY_BUCKETS,
                )?,
            )?,
            end_to_end_latency: register(
                registry,
                histogram(
                    "end_to_end_latency_seconds",
                    "From a message's sent_at to its row being committed",
                    E2E_BUCKETS,
                )?,
            )?,
        })
    }
}

struct Pending {
    row: ProcessedMessage,
    reply: oneshot::Sender<StoreOutcome>,
}

/// Cheap to clone; each worker task holds one. The writer stops once every handle is
/// dropped and the last batch is written.
#[derive(Clone)]
pub struct BatchWriterHandle {
    tx: mpsc::Sender<Pending>,
}

impl BatchWriterHandle {
    /// Queues the row (waiting while the queue is full: back-pressure) and returns what
    /// will say how it ended. The caller may release its own resources in between.
    pub async fn submit(&self, row: ProcessedMessage) -> PendingStore {
        // A place first, then the row into it: `send` would keep a second copy of the
        // row in this future, which every message's task holds while it waits.
        let Ok(place) = self.tx.reserve().await else {
            return PendingStore(None);
        };
        let (reply, answer) = oneshot::channel();
        place.send(Pending { row, reply });
        PendingStore(Some(answer))
    }
}

/// A queued row's answer to come.
pub struct PendingStore(Option<oneshot::Receiver<StoreOutcome>>);

impl PendingStore {
    pub async fn outcome(self) -> StoreOutcome {
        match self.0 {
            Some(answer) => answer.await.unwrap_or_else(|_| writer_gone()),
            None => writer_gone(),
        }
    }
}

/// The writer stopped before answering (shutdown): the row's fate is undecided, so its
/// message stays in Kafka.
fn writer_gone() -> StoreOutcome {
    StoreOutcome::Abandoned
}

/// Collects rows into batches and writes them: see the module documentation.
pub struct BatchWriter {
    rx: Mutex<mpsc::Receiver<Pending>>,
    pool: Pool,
    settings: StorageSettings,
    metrics: StorageMetrics,
    flushes: Arc<Semaphore>,
    outage: Arc<DatabaseOutage>,
    outage_backoff: Backoff,
    shutdown: CancellationToken,
}

impl BatchWriter {
    /// A writer and the handle to queue rows with. `outage` is where it reports whether
    /// the database takes writes; `shutdown` ends the holding of rows through an outage.
    pub fn new(
        pool: Pool,
        settings: StorageSettings,
        metrics: StorageMetrics,
        outage: Arc<DatabaseOutage>,
        shutdown: CancellationToken,
    ) -> (Arc<BatchWriter>, BatchWriterHandle) {
        // Room for the next batch while the writer waits for a flush to end; beyond it,
        // senders wait (back-pressure). More would only hold rows in memory: the batches
        // being written and the worker pool upstream already keep the writer fed.
        let (tx, rx) = mpsc::channel(settings.batch_max_rows.get());
        let outage_backoff = Backoff::new(settings.write_backoff, settings.outage_retry_max, 0.2);
        let writer = BatchWriter {
            rx: Mutex::new(rx),
            pool,
            flushes: Arc::new(Semaphore::new(settings.concurrent_batches.get())),
            settings,
            metrics,
            outage,
            outage_backoff,
            shutdown,
        };
        (Arc::new(writer), BatchWriterHandle { tx })
    }

    /// Batches and writes until every handle is dropped. Safe to call again after a
    /// panic: the queue survives in `self`.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.rx.lock().await;
        let max_delay = self.settings.batch_max_delay;
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::with_capacity(self.settings.batch_max_rows.get());
            batch.push(first);
            let deadline = Instant::now() + max_delay;
            while batch.len() < self.settings.batch_max_rows.get() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    Ok(None) | Err(_) => break,
                }
            }
            let Ok(permit) = self.flushes.clone().acquire_owned().await else {
                return;
            };
            let writer = self.clone();
            tokio::spawn(async move {
                writer.flush(batch).await;
                drop(permit);
            });
        }
        // Wait for batches still being written.
        let all = u32::try_from(self.settings.concurrent_batches.get()).unwrap_or(u32::MAX);
        drop(self.flushes.acquire_many(all).await);
    }

    async fn flush(&self, batch: Vec<Pending>) {
        let (rows, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.row, p.reply)).unzip();
        let outcomes = self.write_all(&rows).await;
        let now = Utc::now();
        for ((row, reply), outcome) in rows.iter().zip(replies).zip(outcomes) {
            if outcome == StoreOutcome::Stored {
                let e2e = (now - row.sent_at()).num_microseconds().unwrap_or(i64::MAX);
                self.metrics.end_to_end_latency.observe(e2e as f64 / 1e6);
            }
            // The task may have given up (shutdown); the row's fate is already decided.
            drop(reply.send(outcome));
        }
    }

    /// Writes rows whose `message_id`s may repeat (copies of one message from different
    /// partitions, or a replay next to a re-delivery): one statement for the first copy of
    /// each id, then another for the rest, so the database sees each id once per statement
    /// and the earlier copy wins.
    async fn write_all(&self, rows: &[ProcessedMessage]) -> Vec<StoreOutcome> {
        let mut seen = HashSet::with_capacity(rows.len());
        let (firsts, repeats): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| seen.insert(rows[i].message.message_id));
        if repeats.is_empty() {
            return self.write(rows).await;
        }
        let pick = |indexes: &[usize]| -> Vec<ProcessedMessage> {
            indexes.iter().map(|&i| rows[i].clone()).collect()
        };
        let mut outcomes = vec![StoreOutcome::Abandoned; rows.len()];
        let first_rows = pick(&firsts);
        for (i, outcome) in firsts.iter().zip(self.write(&first_rows).await) {
            outcomes[*i] = outcome;
        }
        let repeat_rows = pick(&repeats);
        for (i, outcome) in repeats
            .iter()
            .zip(Box::pin(self.write_all(&repeat_rows)).await)
        {
            outcomes[*i] = outcome;
        }
        outcomes
    }

    /// Writes `rows` (distinct ids). A batch the database refuses for its content is split
    /// until only the offending rows fail; through a database outage the rows are held and
    /// the write retried, with capped exponential backoff, until it succeeds, the outage
    /// outlasts `max_outage_secs` (the rows fail) or the writer shuts down (abandoned).
    fn write<'a>(&'a self, rows: &'a [ProcessedMessage]) -> BoxFuture<'a, Vec<StoreOutcome>> {
        Box::pin(async move {
            let mut attempts = 0;
            let mut content_attempts = 0;
            let mut outage_retries = 0;
            loop {
                attempts += 1;
                let started = Instant::now();
                let result = insert_messages(&self.pool, rows).await;
                self.metrics
                    .db_write_duration
                    .observe(started.elapsed().as_secs_f64());
                let err = match result {
                    Ok(writes) => {
                        self.outage.write_succeeded();
                        return outcomes(rows, &writes);
                    }
                    Err(err) => err,
                };
                let kind = err.kind();
                let give_up = match kind {
                    FailureKind::Content if rows.len() > 1 => {
                        let (left, right) = rows.split_at(rows.len() / 2);
                        let mut out = self.write(left).await;
                        out.extend(self.write(right).await);
                        return out;
                    }
                    FailureKind::Content => {
                        content_attempts += 1;
                        content_attempts >= self.settings.write_attempts.get()
                    }
                    FailureKind::Unavailable => self.outage.write_failed() == OutageVerdict::GiveUp,
                };
                if give_up {
                    tracing::error!(rows = rows.len(), attempts, error = %err, %kind, "batch write failed; dead-lettering its rows");
                    let failed = StoreOutcome::Failed {
                        kind,
                        error: err.to_string(),
                        attempts,
                    };
                    return vec![failed; rows.len()];
                }
                let wait = match kind {
                    FailureKind::Content => self.settings.write_backoff,
                    FailureKind::Unavailable => {
                        outage_retries += 1;
                        self.outage_backoff.jittered(outage_retries)
                    }
                };
                tracing::debug!(rows = rows.len(), attempts, error = %err, %kind, retry_in = ?wait, "batch write failed; retrying");
                // Never past the end of the outage allowance: the rows fail right at it.
                let until = self.outage.give_up_at().map_or(started + wait, |end| {
                    end.max(Instant::now()).min(started + wait)
                });
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = self.shutdown.cancelled() => return vec![StoreOutcome::Abandoned; rows.len()],
                }
            }
        })
    }
}

fn outcomes(rows: &[ProcessedMessage], writes: &HashMap<Uuid, RowWrite>) -> Vec<StoreOutcome> {
    rows.iter()
        .map(|r| match writes.get(&r.message.message_id.as_uuid()) {
            Some(RowWrite::Stored) => StoreOutcome::Stored,
            Some(RowWrite::AlreadyStored {
                same_content: Some(false),
            }) => StoreOutcome::Conflict,
            // Not answered for cannot happen (one result row per input row); counting it
            // as already stored is the conservative reading either way.
            Some(RowWrite::AlreadyStored { .. }) | None => StoreOutcome::Duplicate,
        })
        .collect()
}
