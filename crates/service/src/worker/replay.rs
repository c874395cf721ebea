//! `dlq replay`: runs dead-lettered messages through the pipeline again. Storage is
//! idempotent, so replaying a file twice (or a message that did get stored) adds
//! nothing.

use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::pipeline::{Outcome, Pipeline};
use super::{build_pipeline, WorkerError, WorkerMetrics};
use crate::config::Settings;
use crate::deadletter::{read_dead_letters, ReadError};
use crate::domain::SourcePosition;

/// Messages replayed at once.
const REPLAY_CONCURRENCY: usize = 256;

/// What `dlq replay` did with a file; printed as JSON.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read.
    pub read: usize,
    /// Stored by this replay.
    pub stored: usize,
    /// Stored before with the same content: nothing to do.
    pub already_stored: usize,
    /// Its `message_id` was stored with other content: not stored (the first wins).
    pub conflicting: usize,
    /// Failed again: written to a new dead letter.
    pub dead_lettered_again: usize,
    /// Not finished when the replay stopped (the database unavailable at shutdown): still
    /// only in the dead-letter file; a later replay picks it up.
    pub unfinished: usize,
    /// Lines without a valid chat message (e.g. undecodable Kafka records).
    pub not_replayable: usize,
    /// Lines that are not a dead letter (e.g. torn by a crash).
    pub unreadable_lines: usize,
}

/// Replays the file at `path` through the worker's pipeline and writers (without Kafka);
/// returns once every replayed message is stored or dead-lettered again, and the writers
/// have drained.
pub async fn replay_file(
    settings: &Settings,
    metrics: &WorkerMetrics,
    pool: Pool,
    shutdown: CancellationToken,
    path: &Path,
) -> Result<ReplayReport, WorkerError> {
    let parts = build_pipeline(settings, metrics, pool, shutdown)?;
    let (pipeline, writers) = parts.start(&metrics.restarts);
    let report = replay_dead_letters(path, pipeline).await;
    // The pipeline (and its writer handles) is gone: the writers finish and stop.
    writers.drained().await;
    Ok(report?)
}

async fn replay_dead_letters(
    path: &Path,
    pipeline: Arc<Pipeline>,
) -> Result<ReplayReport, ReadError> {
    let file = read_dead_letters(path)?;
    let mut report = ReplayReport {
        read: file.letters.len(),
        unreadable_lines: file.bad_lines.len(),
        ..ReplayReport::default()
    };
    let replayable: Vec<_> = file
        .letters
        .iter()
        .filter_map(|letter| {
            let message = Arc::new(letter.chat_message()?);
            let received_at = letter.received_at.unwrap_or(letter.failed_at);
            let source = letter.kafka.map(|k| SourcePosition {
                partition: k.partition,
                offset: k.offset,
            });
            Some((message, received_at, source))
        })
        .collect();
    report.not_replayable = report.read - replayable.len();
    let outcomes: Vec<Outcome> = stream::iter(replayable)
        .map(|(message, received_at, source)| {
            let pipeline = pipeline.clone();
            async move { pipeline.process(message, received_at, source, None).await }
        })
        .buffer_unordered(REPLAY_CONCURRENCY)
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            Outcome::Stored => report.stored += 1,
            Outcome::Duplicate => report.already_stored += 1,
            Outcome::Conflict => report.conflicting += 1,
            Outcome::DeadLettered(_) => report.dead_lettered_again += 1,
            Outcome::Abandoned => report.unfinished += 1,
        }
    }
    Ok(report)
}
