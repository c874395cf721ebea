//! The enrich stage's Prometheus metrics (names are a fixed contract with the
//! dashboards and alert rules).
//!
//! They are created against a registry the caller passes in, never a global
//! one, so tests and several `Enricher`s in one process do not collide.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Per-attempt latency buckets, 5 ms to 2 s, dense around the 200 ms mean
/// latency and the 300 ms attempt timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.5, 0.75, 1.0, 2.0,
];

/// Every value of the `kind` label of `nlp_api_errors_total`.
pub const ERROR_KINDS: [&str; 7] = [
    "timeout",
    "connect",
    "status_5xx",
    "status_4xx",
    "invalid",
    "breaker_open",
    "budget_exhausted",
];

/// Handles to the enrich metrics; cheap to clone (each is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct EnrichMetrics {
    /// `nlp_api_duration_seconds`: one observation per HTTP attempt, timeouts
    /// included (they land at the attempt timeout).
    pub duration: prometheus::Histogram,
    /// `nlp_api_errors_total{kind}`: failed attempts by cause, plus calls the
    /// breaker refused (`breaker_open`) and retries the budget refused
    /// (`budget_exhausted`).
    pub errors: prometheus::IntCounterVec,
    /// `circuit_breaker_state`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: prometheus::IntGauge,
}

impl EnrichMetrics {
    /// Creates the three metrics and registers them in `registry`.
    ///
    /// Every `kind` series is created at 0 so alert expressions such as
    /// `rate(nlp_api_errors_total{kind="timeout"}[1m])` exist before the first error.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = EnrichMetrics::unregistered()?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.breaker_state.clone()))?;
        Ok(metrics)
    }

    /// The metrics without any registry, for tests and tools that export nothing.
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "nlp_api_duration_seconds",
                "Duration of one NLP API HTTP attempt, timeouts included",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "nlp_api_errors_total",
                "NLP API failures by kind: failed attempts, breaker rejections, retries refused by the budget",
            ),
            &["kind"],
        )?;
        for kind in ERROR_KINDS {
            errors.with_label_values(&[kind]);
        }
        let breaker_state = IntGauge::new(
            "circuit_breaker_state",
            "NLP API circuit breaker state: 0 closed, 1 open, 2 half-open",
        )?;
        Ok(EnrichMetrics {
            duration,
            errors,
            breaker_state,
        })
    }

    /// Counts one error of `kind` (one of [`ERROR_KINDS`]).
    pub(crate) fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn registers_the_fixed_names_with_zeroed_kinds() {
        let registry = Registry::new();
        let m = EnrichMetrics::register(&registry).expect("register");
        m.duration.observe(0.2);
        m.error("timeout");
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .expect("encode");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.contains("nlp_api_duration_seconds_bucket{le=\"0.005\"} 0"));
        assert!(text.contains("nlp_api_duration_seconds_bucket{le=\"2\"} 1"));
        assert!(text.contains("nlp_api_errors_total{kind=\"timeout\"} 1"));
        assert!(text.contains("nlp_api_errors_total{kind=\"budget_exhausted\"} 0"));
        assert!(text.contains("circuit_breaker_state 0"));
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let registry = Registry::new();
        EnrichMetrics::register(&registry).expect("first");
        assert!(EnrichMetrics::register(&registry).is_err());
    }
}
