//! Keeps long-lived tasks alive: a panic is logged, counted in
//! `component_restarts_total{component}`, and the task started again after a backoff
//! that grows with repeated failures.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A run this long counts as healthy again: the next panic restarts quickly.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A supervised task: the `component` label of `component_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The worker's Kafka read loop, feeding the pool of in-flight messages.
    Consumer,
    /// Commits each partition's durable offsets, every `worker.commit_interval_ms`.
    OffsetCommitter,
    /// Batches processed messages into Postgres inserts.
    BatchWriter,
    /// Appends and fsyncs dead-letter files.
    DeadLetterWriter,
    /// Creates daily partitions ahead and applies retention, on a timer.
    PartitionMaintainer,
    /// Replays outage dead letters once the database takes writes again.
    DeadLetterReplayer,
    /// Fills in NLP data of rows stored without it.
    Reenricher,
    /// Folds pending rollup rows and applies the rollups' retention.
    RollupFolder,
    /// The accept loop of the public ingest listener.
    ApiServer,
    /// Serves the Kafka producer's acknowledgements to the requests awaiting them.
    DeliveryReports,
    /// The accept loop of the admin listener.
    AdminServer,
}

impl Component {
    /// Every component, so each restart series can be exported at 0 from start.
    pub const ALL: [Component; 11] = [
        Component::Consumer,
        Component::OffsetCommitter,
        Component::BatchWriter,
        Component::DeadLetterWriter,
        Component::PartitionMaintainer,
        Component::DeadLetterReplayer,
        Component::Reenricher,
        Component::RollupFolder,
        Component::ApiServer,
        Component::DeliveryReports,
        Component::AdminServer,
    ];

    /// The `component` label value, e.g. `batch_writer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Consumer => "consumer",
            Component::OffsetCommitter => "offset_committer",
            Component::BatchWriter => "batch_writer",
            Component::DeadLetterWriter => "dead_letter_writer",
            Component::PartitionMaintainer => "partition_maintainer",
            Component::DeadLetterReplayer => "dead_letter_replayer",
            Component::Reenricher => "reenricher",
            Component::RollupFolder => "rollup_folder",
            Component::ApiServer => "api_server",
            Component::DeliveryReports => "delivery_reports",
            Component::AdminServer => "admin_server",
        }
    }
}

/// `component_restarts_total{component}`; cheap to clone (an `Arc` inside). Registered
/// once per process and shared by every supervised task.
#[derive(Clone)]
pub struct Restarts(prometheus::IntCounterVec);

impl Restarts {
    /// Registers the counter with every component's series at 0.
    pub fn register(registry: &prometheus::Registry) -> Result<Restarts, prometheus::Error> {
        let restarts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "component_restarts_total",
                "Supervised tasks restarted after a panic, by component",
            ),
            &["component"],
        )?;
        // Registered directly, not through telemetry: telemetry's admin server runs
        // under this supervisor.
        registry.register(Box::new(restarts.clone()))?;
        for component in Component::ALL {
            restarts.with_label_values(&[component.as_str()]);
        }
        Ok(Restarts(restarts))
    }

    #[cfg(test)]
    fn of(&self, component: Component) -> u64 {
        self.0.with_label_values(&[component.as_str()]).get()
    }

    fn count(&self, component: Component) {
        self.0.with_label_values(&[component.as_str()]).inc();
    }
}

/// Runs `make()` until it returns normally or `shutdown` fires; restarts it on panic.
pub async fn supervise<F, Fut>(
    component: Component,
    restarts: Restarts,
    shutdown: CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // No jitter: restarts of one component are not a crowd that needs spreading.
    let backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF, 0.0);
    let mut failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(make()).await;
        match outcome {
            Ok(()) => return,
            Err(err) if err.is_panic() => {
                let reason = panic_message(err.into_panic());
                tracing::error!(component = component.as_str(), panic = %reason, "component panicked; restarting");
                restarts.count(component);
            }
            Err(_) => return,
        }
        if started.elapsed() > HEALTHY_AFTER {
            failures = 0;
        }
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(backoff.delay(failures)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Spawns a shared component's `run` under [`supervise`]: each start gets the component
/// and `shutdown` (its stop signal), and a panic restarts it until `shutdown` fires.
pub fn spawn_supervised<T, F, Fut>(
    component: Component,
    restarts: &Restarts,
    shutdown: &CancellationToken,
    target: &Arc<T>,
    run: F,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (target, stop) = (target.clone(), shutdown.clone());
    tokio::spawn(supervise(
        component,
        restarts.clone(),
        shutdown.clone(),
        move || run(target.clone(), stop.clone()),
    ))
}

/// Runs one future, turning a panic into an error with its message.
///
/// Not an `async fn`: one would keep its argument and the future made from it side by
/// side, twice the size of `fut`, in every message's task and every request's.
pub fn catch_panic<T>(fut: impl Future<Output = T>) -> impl Future<Output = Result<T, String>> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .map(|result| result.map_err(panic_message))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_counted_after_waits_of_100_ms_doubling_to_10_s() {
        let restarts = Restarts::register(&prometheus::Registry::new()).expect("metric");
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = starts.clone();
        supervise(
            Component::Consumer,
            restarts.clone(),
            CancellationToken::new(),
            move || {
                let log = log.clone();
                async move {
                    let runs = {
                        let mut log = log.lock().expect("not poisoned");
                        log.push(tokio::time::Instant::now());
                        log.len()
                    };
                    if runs < 10 {
                        panic!("boom");
                    }
                }
            },
        )
        .await;
        assert_eq!(restarts.of(Component::Consumer), 9);
        let starts = starts.lock().expect("not poisoned");
        let waits: Vec<_> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000].map(ms)
        );
    }

    #[test]
    fn all_lists_every_component_once() {
        for component in Component::ALL {
            // A new variant does not compile here until it is added to ALL too.
            match component {
                Component::Consumer
                | Component::OffsetCommitter
                | Component::BatchWriter
                | Component::DeadLetterWriter
                | Component::PartitionMaintainer
                | Component::DeadLetterReplayer
                | Component::Reenricher
                | Component::RollupFolder
                | Component::ApiServer
                | Component::DeliveryReports
                | Component::AdminServer => {}
            }
        }
        let names: std::collections::HashSet<_> =
            Component::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Component::ALL.len());
    }

    #[tokio::test]
    async fn catch_panic_reports_the_message() {
        let err = catch_panic(async { panic!("bad message {}", 7) }).await;
        assert_eq!(err, Err::<(), _>("bad message 7".to_owned()));
        assert_eq!(catch_panic(async { 5 }).await, Ok(5));
    }
}
