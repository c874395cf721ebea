//! The one Prometheus registry of a process and its text exposition.
//!
//! Each component owns its metrics (a small struct next to its code, registered once on
//! this registry, as `enrich::EnrichMetrics` is); telemetry knows none of them.
//! The names are a fixed contract with dashboards and alert rules.
//!
//! A labelled series only exists once it has a value, and `rate()` or `increase()` over
//! a series that appears with the first event reads 0 for that event: each component
//! creates every label set it knows at 0 when it registers ([`export_at_zero`]).

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{Encoder, Registry, TextEncoder};

/// Latency buckets for request, produce and write paths: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry every component registers its metrics on, served on `/metrics`; cheap
/// to clone (the registry is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry holding the process collector (CPU, memory, file descriptors).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics { registry })
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format served on `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which the
        // registry never produces.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Registers `metric` on `registry` and returns it, so a component's `register` reads as
/// one line per metric.
pub fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Creates each label set of `known` at 0 in `family`: the owner of the label values
/// calls it when it registers, so the series exist before their first event.
pub fn export_at_zero<T, const N: usize>(
    family: &MetricVec<T>,
    known: impl IntoIterator<Item = [&'static str; N]>,
) where
    T: MetricVecBuilder,
{
    for labels in known {
        family.with_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounterVec, Opts};

    use super::*;

    #[test]
    fn known_label_sets_are_exported_at_zero_before_any_event() {
        let metrics = Metrics::new().expect("registers");
        let family = IntCounterVec::new(Opts::new("things_total", "test"), &["kind", "status"])
            .expect("valid");
        let family = register(metrics.registry(), family).expect("registers");
        assert!(!metrics.render().contains("things_total{"));
        export_at_zero(&family, [["a", "ok"], ["b", "failed"]]);
        let text = metrics.render();
        for series in [
            r#"things_total{kind="a",status="ok"} 0"#,
            r#"things_total{kind="b",status="failed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing");
        }
    }

    #[test]
    fn the_process_collector_is_registered() {
        let metrics = Metrics::new().expect("registers");
        assert!(
            metrics.render().contains("process_"),
            "process metrics missing"
        );
    }
}
