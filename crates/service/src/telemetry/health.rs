//! `/health`: each dependency answers a cheap probe within a deadline; the service is
//! healthy only if every probe passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use serde::Serialize;

/// A dependency that can be asked whether it works right now.
pub trait Probe: Send + Sync + 'static {
    /// Checks the dependency within `within`; `Err` says what is wrong.
    fn probe(&self, within: Duration) -> BoxFuture<'_, Result<(), String>>;
}

/// The probes `/health` runs, by name (`kafka`, `postgres`, `consumer`).
#[derive(Clone, Default)]
pub struct HealthChecks {
    probes: Vec<(&'static str, Arc<dyn Probe>)>,
}

/// The `/health` body.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok` when every probe passed, else `unavailable`.
    pub status: &'static str,
    /// Each probe's answer by name: `ok`, or `error: ...`.
    pub checks: BTreeMap<&'static str, String>,
}

impl HealthReport {
    /// Whether every probe passed: `/health` answers 200, else 503.
    pub fn is_healthy(&self) -> bool {
        self.status == "ok"
    }
}

impl HealthChecks {
    pub(crate) fn with(mut self, name: &'static str, probe: Arc<dyn Probe>) -> Self {
        self.probes.push((name, probe));
        self
    }

    /// Runs every probe concurrently; a probe slower than `within` counts as failed.
    pub async fn run(&self, within: Duration) -> HealthReport {
        let results = join_all(self.probes.iter().map(|(name, probe)| async move {
            let outcome = match tokio::time::timeout(within, probe.probe(within)).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => format!("error: no answer within {}ms", within.as_millis()),
            };
            (*name, outcome)
        }))
        .await;
        let healthy = results.iter().all(|(_, outcome)| outcome == "ok");
        HealthReport {
            status: if healthy { "ok" } else { "unavailable" },
            checks: results.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<(), String>);
    impl Probe for Fixed {
        fn probe(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move { self.0.clone() })
        }
    }

    struct Hangs;
    impl Probe for Hangs {
        fn probe(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn healthy_only_when_every_probe_passes() {
        let ok = HealthChecks::default()
            .with("kafka", Arc::new(Fixed(Ok(()))))
            .with("postgres", Arc::new(Fixed(Ok(()))));
        let report = ok.run(Duration::from_millis(100)).await;
        assert!(report.is_healthy());
        assert_eq!(report.checks["kafka"], "ok");

        let bad = ok.with("postgres", Arc::new(Fixed(Err("refused".into()))));
        let report = bad.run(Duration::from_millis(100)).await;
        assert!(!report.is_healthy());
        assert_eq!(report.checks["postgres"], "error: refused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_fails_at_the_deadline() {
        let checks = HealthChecks::default().with("kafka", Arc::new(Hangs));
        let report = checks.run(Duration::from_millis(500)).await;
        assert_eq!(report.status, "unavailable");
        assert!(report.checks["kafka"].contains("500ms"));
    }
}
