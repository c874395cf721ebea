//! Collects processed messages from many worker tasks into batches bounded by size and
//! time, writes each batch in one statement, and answers every message with what
//! happened to it: stored, already stored, or failed (and why, for the dead-letter
//! decision).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use super::insert::{insert_messages, FailureKind};
use crate::domain::ProcessedMessage;

/// The `[storage]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Apply migrations when a worker starts (`migrate` does it on demand).
    pub migrate_on_start: bool,
    /// Keep a GIN full-text index on `text` (costs write throughput; see docs).
    pub full_text_search: bool,
    /// A batch is written when it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or when its first row has waited this long.
    pub batch_max_delay_ms: u64,
    /// Batches written at once (each on its own pooled connection).
    pub concurrent_batches: usize,
    /// Attempts for a batch failing for a transient reason before its rows are failed.
    pub write_attempts: u32,
    pub write_backoff_ms: u64,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOutcome {
    Stored,
    /// The row was already there (a re-delivery or a replay).
    Duplicate,
    Failed {
        kind: FailureKind,
        error: String,
        attempts: u32,
    },
}

/// Metrics the writer moves.
#[derive(Clone)]
pub struct StorageMetrics {
    pub db_write_duration: prometheus::Histogram,
    pub end_to_end_latency: prometheus::Histogram,
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
        let (reply, answer) = oneshot::channel();
        match self.tx.send(Pending { row, reply }).await {
            Ok(()) => PendingStore(Some(answer)),
            Err(_) => PendingStore(None),
        }
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

fn writer_gone() -> StoreOutcome {
    StoreOutcome::Failed {
        kind: FailureKind::Transient,
        error: "batch writer stopped before answering".into(),
        attempts: 0,
    }
}

pub struct BatchWriter {
    rx: Mutex<mpsc::Receiver<Pending>>,
    pool: Pool,
    settings: StorageSettings,
    metrics: StorageMetrics,
    flushes: Arc<Semaphore>,
}

impl BatchWriter {
    pub fn new(
        pool: Pool,
        settings: StorageSettings,
        metrics: StorageMetrics,
    ) -> (Arc<BatchWriter>, BatchWriterHandle) {
        // Room for a few batches of backlog; beyond it, senders wait (back-pressure).
        let (tx, rx) = mpsc::channel(settings.batch_max_rows * 4);
        let writer = BatchWriter {
            rx: Mutex::new(rx),
            pool,
            flushes: Arc::new(Semaphore::new(settings.concurrent_batches)),
            settings,
            metrics,
        };
        (Arc::new(writer), BatchWriterHandle { tx })
    }

    /// Batches and writes until every handle is dropped. Safe to call again after a
    /// panic: the queue survives in `self`.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.rx.lock().await;
        let max_delay = Duration::from_millis(self.settings.batch_max_delay_ms);
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::with_capacity(self.settings.batch_max_rows);
            batch.push(first);
            let deadline = Instant::now() + max_delay;
            while batch.len() < self.settings.batch_max_rows {
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
        let all = u32::try_from(self.settings.concurrent_batches).unwrap_or(u32::MAX);
        drop(self.flushes.acquire_many(all).await);
    }

    async fn flush(&self, batch: Vec<Pending>) {
        let (rows, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.row, p.reply)).unzip();
        let outcomes = self.write(&rows).await;
        let now = Utc::now();
        for ((row, reply), outcome) in rows.iter().zip(replies).zip(outcomes) {
            if outcome == StoreOutcome::Stored {
                let e2e = (now - row.message.sent_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                self.metrics.end_to_end_latency.observe(e2e as f64 / 1e6);
            }
            // The task may have given up (shutdown); the row's fate is already decided.
            drop(reply.send(outcome));
        }
    }

    /// Writes `rows`, retrying transient failures and splitting a batch that fails for
    /// its content, so only the offending rows fail.
    fn write<'a>(&'a self, rows: &'a [ProcessedMessage]) -> BoxFuture<'a, Vec<StoreOutcome>> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let started = Instant::now();
                let result = insert_messages(&self.pool, rows).await;
                self.metrics
                    .db_write_duration
                    .observe(started.elapsed().as_secs_f64());
                let err = match result {
                    Ok(new_ids) => return outcomes(rows, &new_ids),
                    Err(err) => err,
                };
                match err.kind() {
                    FailureKind::Permanent if rows.len() > 1 => {
                        let (left, right) = rows.split_at(rows.len() / 2);
                        let mut out = self.write(left).await;
                        out.extend(self.write(right).await);
                        return out;
                    }
                    FailureKind::Transient if attempt < self.settings.write_attempts => {
                        tracing::warn!(rows = rows.len(), attempt, error = %err, "batch write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(self.settings.write_backoff_ms))
                            .await;
                    }
                    kind => {
                        tracing::error!(rows = rows.len(), attempts = attempt, error = %err, ?kind, "batch write failed");
                        let failed = StoreOutcome::Failed {
                            kind,
                            error: err.to_string(),
                            attempts: attempt,
                        };
                        return vec![failed; rows.len()];
                    }
                }
            }
        })
    }
}

fn outcomes(rows: &[ProcessedMessage], new_ids: &HashSet<Uuid>) -> Vec<StoreOutcome> {
    rows.iter()
        .map(|r| {
            if new_ids.contains(&r.message.message_id.as_uuid()) {
                StoreOutcome::Stored
            } else {
                StoreOutcome::Duplicate
            }
        })
        .collect()
}
