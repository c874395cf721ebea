//! The ingest API's metrics: requests answered and their latency, by route (and status).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::route::request_labels;
use crate::telemetry::{export_at_zero, register, LATENCY_BUCKETS};

/// Handles to the ingest metrics; cheap to clone (each is an `Arc` inside).
#[derive(Clone)]
pub struct IngestMetrics {
    /// `http_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `http_request_duration_seconds{route}`.
    pub duration: HistogramVec,
}

impl IngestMetrics {
    /// Registers both metrics with every `(route, status)` the API can answer at 0.
    pub fn register(registry: &Registry) -> Result<IngestMetrics, prometheus::Error> {
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests answered, by route and status",
                ),
                &["route", "status"],
            )?,
        )?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from request received to response ready, by route",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        export_at_zero(
            &requests,
            request_labels().map(|(route, status)| [route, status]),
        );
        export_at_zero(&duration, request_labels().map(|(route, _)| [route]));
        Ok(IngestMetrics { requests, duration })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    #[test]
    fn every_known_request_series_is_exported_at_zero() {
        let metrics = Metrics::new().expect("registry");
        let ingest = IngestMetrics::register(metrics.registry()).expect("registers");
        let text = metrics.render();
        for series in [
            r#"http_requests_total{route="/v1/messages",status="202"} 0"#,
            r#"http_requests_total{route="/v1/messages",status="503"} 0"#,
            r#"http_requests_total{route="other",status="404"} 0"#,
            r#"http_request_duration_seconds_count{route="/v1/messages"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing");
        }
        ingest
            .requests
            .with_label_values(&["/v1/messages", "202"])
            .inc();
        ingest
            .duration
            .with_label_values(&["/v1/messages"])
            .observe(0.01);
        let text = metrics.render();
        assert!(text.contains(r#"http_requests_total{route="/v1/messages",status="202"} 1"#));
        assert!(text.contains("http_request_duration_seconds_bucket"));
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let registry = Registry::new();
        IngestMetrics::register(&registry).expect("first");
        assert!(IngestMetrics::register(&registry).is_err());
    }
}
