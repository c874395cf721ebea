//! The worker role: consume `chat.messages`, and for each message moderate, enrich,
//! store, or dead-letter it; commit offsets only for messages whose outcome is durable.
//!
//! Tasks (each supervised: a panic is counted and the task restarted):
//! - `consumer`: reads records into a pool of at most `worker.concurrency` in-flight
//!   messages, each run by [`pipeline::Pipeline`];
//! - `offset_committer`: commits the durable prefix per partition
//!   ([`crate::queue::OffsetTracker`]);
//! - `batch_writer`: batched, idempotent inserts into Postgres;
//! - `dead_letter_writer`: group-committed, fsynced dead-letter files;
//! - `partition_maintainer`: partitions ahead and retention.
//!
//! Shutdown: stop reading, let in-flight messages finish within the grace period,
//! commit synchronously, leave the consumer group, then let the writers drain.

mod auto_reenrich;
mod auto_replay;
mod consumer;
mod intake;
mod pipeline;
mod reenrich;
mod replay;
mod turns;
mod writers;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use rdkafka::consumer::CommitMode;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auto_reenrich::{AutoReenricher, ReenrichMetrics};
pub use auto_replay::{is_outage_dead_letter, AutoReplayMetrics, DeadLetterReplayer};
pub use consumer::{ConsumerMetrics, MessageConsumer};
pub use intake::{HoldReason, Intake, IntakeProbe};
pub use pipeline::{Outcome, Pipeline, PipelineMetrics, Received};
pub use reenrich::{reenrich, ReenrichReport};
pub use replay::{replay_file, ReplayReport};
pub use writers::Writers;

use crate::config::Settings;
use crate::deadletter::{DeadLetterMetrics, DeadLetterWriter, ReadError};
use crate::enrich::{EnrichMetrics, Enricher};
use crate::moderation::{ModerationError, Moderator};
use crate::queue::ConsumerError;
use crate::storage::partitions::PartitionMaintainer;
use crate::storage::{BatchWriter, DatabaseOutage, RollupFolder, RollupMetrics, StorageMetrics};
use crate::supervisor::{spawn_supervised, supervise, Component, Restarts};
use crate::telemetry::DeadLetterBacklog;

/// Why a worker, or `dlq replay`, could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created or subscribed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The moderation word lists could not be loaded.
    #[error("moderation word lists: {0}")]
    Moderation(#[from] ModerationError),
    /// The dead-letter file to replay could not be read (`dlq replay`).
    #[error(transparent)]
    DeadLetters(#[from] ReadError),
}

/// The metrics of every part a worker runs, each owned and registered by its part; the
/// worker hands each part only its own.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub(crate) pipeline: PipelineMetrics,
    pub(crate) enrich: EnrichMetrics,
    pub(crate) storage: StorageMetrics,
    pub(crate) dead_letters: DeadLetterMetrics,
    pub(crate) consumer: ConsumerMetrics,
    pub(crate) auto_replay: AutoReplayMetrics,
    pub(crate) reenrich: ReenrichMetrics,
    pub(crate) rollups: RollupMetrics,
    /// Registered by the process (its servers restart too), shared here.
    pub(crate) restarts: Restarts,
}

impl WorkerMetrics {
    /// Registers each part's metrics on `registry`, once.
    pub fn register(
        registry: &prometheus::Registry,
        restarts: Restarts,
    ) -> Result<WorkerMetrics, prometheus::Error> {
        Ok(WorkerMetrics {
            pipeline: PipelineMetrics::register(registry)?,
            enrich: EnrichMetrics::register(registry)?,
            storage: StorageMetrics::register(registry)?,
            dead_letters: DeadLetterMetrics::register(registry)?,
            consumer: ConsumerMetrics::register(registry)?,
            auto_replay: AutoReplayMetrics::register(registry)?,
            reenrich: ReenrichMetrics::register(registry)?,
            rollups: RollupMetrics::register(registry)?,
            restarts,
        })
    }
}

/// A pipeline and the writer tasks that must run for it to make progress.
pub struct PipelineParts {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) writer: Arc<BatchWriter>,
    pub(crate) dead_letters: Arc<DeadLetterWriter>,
}

/// The stages and writers a message needs, without Kafka: shared by the worker and
/// `dlq replay`.
pub fn build_pipeline(
    settings: &Settings,
    metrics: &WorkerMetrics,
    pool: Pool,
    shutdown: CancellationToken,
) -> Result<PipelineParts, WorkerError> {
    let moderator = Moderator::from_dir(&settings.worker.moderation_dir)?;
    tracing::info!(
        terms = moderator.term_count(),
        "moderation word lists loaded"
    );
    let enricher = Enricher::new(&settings.nlp, metrics.enrich.clone());
    let outage = Arc::new(DatabaseOutage::new(settings.storage.max_outage));
    let (writer, writer_handle) = BatchWriter::new(
        pool,
        settings.storage.clone(),
        metrics.storage.clone(),
        outage.clone(),
        shutdown.clone(),
    );
    let (dlq, dlq_handle) =
        DeadLetterWriter::new(settings.dlq.dir.clone(), metrics.dead_letters.clone());
    let pipeline = Arc::new(Pipeline {
        moderator: Arc::new(moderator),
        enricher,
        writer: writer_handle,
        dead_letters: dlq_handle,
        intake: Arc::new(Intake::new(outage)),
        turns: Arc::default(),
        metrics: metrics.pipeline.clone(),
        shutdown,
    });
    Ok(PipelineParts {
        pipeline,
        writer,
        dead_letters: dlq,
    })
}

/// The leave may take this long even when the grace period is spent: a revoke takes a
/// round trip or two, and a worker that leaves hands its partitions over at once instead
/// of after the session timeout.
const MIN_LEAVE_WAIT: Duration = Duration::from_secs(1);

/// The worker role, built: the consumer, the pipeline and its writers, and the
/// background tasks; [`Worker::run`] runs them.
pub struct Worker {
    consumer: Arc<MessageConsumer>,
    replayer: Option<Arc<DeadLetterReplayer>>,
    reenricher: Option<Arc<AutoReenricher>>,
    partitions: Arc<PartitionMaintainer>,
    maintenance_every: Duration,
    rollups: Arc<RollupFolder>,
    parts: PipelineParts,
    concurrency: usize,
    restarts: Restarts,
    shutdown: CancellationToken,
}

impl Worker {
    pub(crate) fn build(
        settings: &Settings,
        metrics: &WorkerMetrics,
        pool: Pool,
        shutdown: CancellationToken,
    ) -> Result<Worker, WorkerError> {
        let parts = build_pipeline(settings, metrics, pool.clone(), shutdown.clone())?;
        let pipeline = &parts.pipeline;
        let consumer = Arc::new(MessageConsumer::new(
            &settings.kafka,
            &settings.worker,
            metrics.consumer.clone(),
        )?);
        let replayer = settings.dlq.auto_replay.then(|| {
            Arc::new(DeadLetterReplayer::new(
                settings.dlq.clone(),
                pipeline.clone(),
                pool.clone(),
                metrics.auto_replay.clone(),
            ))
        });
        let reenricher = settings.worker.reenrich.then(|| {
            Arc::new(AutoReenricher::new(
                settings.worker.clone(),
                pool.clone(),
                pipeline.enricher.clone(),
                metrics.reenrich.clone(),
            ))
        });
        Ok(Worker {
            consumer,
            replayer,
            reenricher,
            rollups: Arc::new(RollupFolder::new(
                pool.clone(),
                settings.rollups.clone(),
                metrics.rollups.clone(),
            )),
            partitions: Arc::new(PartitionMaintainer::new(pool, settings.partitions.clone())),
            maintenance_every: settings.worker.partition_maintenance_interval,
            parts,
            concurrency: settings.worker.concurrency.get(),
            restarts: metrics.restarts.clone(),
            shutdown,
        })
    }

    /// `/health` probe for the worker's Kafka connection.
    pub fn kafka_probe(&self) -> Arc<dyn crate::telemetry::Probe> {
        Arc::new(ConsumerProbe(self.consumer.clone()))
    }

    /// The outage dead letters this worker replays by itself, for `/dead-letters/drained`
    /// (none when `dlq.auto_replay` is off).
    pub fn dead_letter_backlog(&self) -> Option<Arc<dyn DeadLetterBacklog>> {
        self.replayer
            .clone()
            .map(|r| r as Arc<dyn DeadLetterBacklog>)
    }

    /// `/health` probe that fails while consumption is paused, saying why.
    pub fn intake_probe(&self) -> Arc<dyn crate::telemetry::Probe> {
        Arc::new(IntakeProbe(self.parts.pipeline.intake.clone()))
    }

    /// Runs until shutdown, then drains within `grace`.
    pub async fn run(self, grace: Duration) {
        let restarts = self.restarts.clone();
        let shutdown = self.shutdown.clone();
        let (pipeline, writers) = self.parts.start(&restarts);
        let commit_task = spawn_supervised(
            Component::OffsetCommitter,
            &restarts,
            &shutdown,
            &self.consumer,
            MessageConsumer::commit_periodically,
        );
        let every = self.maintenance_every;
        let maintenance_task = spawn_supervised(
            Component::PartitionMaintainer,
            &restarts,
            &shutdown,
            &self.partitions,
            move |maintainer, stop| async move {
                maintainer.run_until(every, stop.cancelled_owned()).await
            },
        );
        let rollup_task = spawn_supervised(
            Component::RollupFolder,
            &restarts,
            &shutdown,
            &self.rollups,
            |folder, stop| async move { folder.run_until(stop.cancelled_owned()).await },
        );
        let replay_task = self.replayer.as_ref().map(|replayer| {
            spawn_supervised(
                Component::DeadLetterReplayer,
                &restarts,
                &shutdown,
                replayer,
                DeadLetterReplayer::run,
            )
        });

        let slots = Arc::new(Semaphore::new(self.concurrency));
        let reenrich_task = self.reenricher.as_ref().map(|reenricher| {
            let slots = slots.clone();
            spawn_supervised(
                Component::Reenricher,
                &restarts,
                &shutdown,
                reenricher,
                move |reenricher, stop| reenricher.run(slots.clone(), stop),
            )
        });
        let consumer = self.consumer.clone();
        let loop_pipeline = pipeline.clone();
        let tasks = TaskTracker::new();
        let loop_tasks = tasks.clone();
        let stop = shutdown.clone();
        supervise(Component::Consumer, restarts, shutdown.clone(), move || {
            consumer.clone().run(
                loop_pipeline.clone(),
                slots.clone(),
                loop_tasks.clone(),
                stop.clone(),
            )
        })
        .await;

        let deadline = tokio::time::Instant::now() + grace;
        tasks.close();
        match tokio::time::timeout_at(deadline, tasks.wait()).await {
            Ok(_) => tracing::info!("in-flight messages finished"),
            Err(_) => tracing::warn!(
                "grace period over; unfinished messages stay uncommitted and will be re-delivered"
            ),
        }
        self.consumer.commit(CommitMode::Sync);
        drop(commit_task.await);
        // Now, so that the partitions move to the other workers while the writers drain,
        // and because a close with partitions still assigned can hang in librdkafka.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.consumer.leave_group(left.max(MIN_LEAVE_WAIT)).await;
        drop(maintenance_task.await);
        drop(rollup_task.await);
        for task in [replay_task, reenrich_task].into_iter().flatten() {
            drop(task.await);
        }
        // The writers stop once the last handles (held by the pipeline) are gone.
        drop(self.replayer);
        drop(pipeline);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left.max(Duration::from_secs(1)), writers.drained())
            .await
            .is_err()
        {
            tracing::warn!("writers still busy at the end of the grace period");
        }
        tracing::info!("worker stopped");
    }
}

struct ConsumerProbe(Arc<MessageConsumer>);

impl crate::telemetry::Probe for ConsumerProbe {
    fn probe(&self, within: Duration) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.clone().check(within))
    }
}
