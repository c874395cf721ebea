//! Keeps long-lived tasks alive: a panic is logged, counted in
//! `component_restarts_total{component}`, and the task started again after a backoff
//! that grows with repeated failures.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A run this long counts as healthy again: the next panic restarts quickly.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A supervised task: the `component` label of `component_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Consumer,
    OffsetCommitter,
    BatchWriter,
    DeadLetterWriter,
    PartitionMaintainer,
    DeadLetterReplayer,
    Reenricher,
    ApiServer,
    AdminServer,
}

impl Component {
    /// Every component, so each restart series can be exported at 0 from start.
    pub const ALL: [Component; 9] = [
        Component::Consumer,
        Component::OffsetCommitter,
        Component::BatchWriter,
        Component::DeadLetterWriter,
        Component::PartitionMaintainer,
        Component::DeadLetterReplayer,
        Component::Reenricher,
        Component::ApiServer,
        Component::AdminServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Consumer => "consumer",
            Component::OffsetCommitter => "offset_committer",
            Component::BatchWriter => "batch_writer",
            Component::DeadLetterWriter => "dead_letter_writer",
            Component::PartitionMaintainer => "partition_maintainer",
            Component::DeadLetterReplayer => "dead_letter_replayer",
            Component::Reenricher => "reenricher",
            Component::ApiServer => "api_server",
            Component::AdminServer => "admin_server",
        }
    }
}

/// Runs `make()` until it returns normally or `shutdown` fires; restarts it on panic.
pub async fn supervise<F, Fut>(
    component: Component,
    restarts: prometheus::IntCounterVec,
    shutdown: CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(make()).await;
        match outcome {
            Ok(()) => return,
            Err(err) if err.is_panic() => {
                let reason = panic_message(err.into_panic());
                let component = component.as_str();
                tracing::error!(component, panic = %reason, "component panicked; restarting");
                restarts.with_label_values(&[component]).inc();
            }
            Err(_) => return,
        }
        if started.elapsed() > HEALTHY_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one future, turning a panic into an error with its message.
pub async fn catch_panic<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(panic_message)
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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_counted() {
        let restarts = prometheus::IntCounterVec::new(
            prometheus::Opts::new("component_restarts_total", "test"),
            &["component"],
        )
        .expect("metric");
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        supervise(
            Component::Consumer,
            restarts.clone(),
            CancellationToken::new(),
            move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 3 {
                        panic!("boom");
                    }
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(restarts.with_label_values(&["consumer"]).get(), 3);
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
                | Component::ApiServer
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
