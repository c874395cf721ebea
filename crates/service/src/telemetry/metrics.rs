//! Every Prometheus metric the service exports, named in one place (the names are a
//! fixed contract with dashboards and alert rules).
//!
//! A labelled series only exists once it has a value, and `rate()` or `increase()` over
//! a series that appears with the first event reads 0 for that event: every known label
//! set is created at 0 at start ([`Metrics::export_at_zero`]).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::enrich::EnrichMetrics;
use crate::http_server::Connections;

/// Latency buckets for request and produce paths: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// End-to-end buckets, around the 400 ms target.
const E2E_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The values the labels of the labelled metrics can take. Telemetry sits below the
/// stages, so the caller gathers them from the types that own them.
#[derive(Debug, Clone, Default)]
pub struct KnownLabels {
    /// `(route, status)` pairs of `http_requests_total`; their routes also label
    /// `http_request_duration_seconds`.
    pub requests: Vec<(&'static str, &'static str)>,
    /// `messages_processed_total{outcome}` and `dead_letters_replayed_total{outcome}`.
    pub outcomes: Vec<&'static str>,
    /// `dead_letters_total{stage}`.
    pub dead_letter_stages: Vec<&'static str>,
    /// `component_restarts_total{component}`.
    pub components: Vec<&'static str>,
}

/// Handles to the registered metrics; cheap to clone (each handle is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub kafka_produce_duration: Histogram,
    pub enrich: EnrichMetrics,
    pub queue_depth: IntGauge,
    pub active_workers: IntGauge,
    pub db_write_duration: Histogram,
    pub messages_processed: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub moderation_hits: IntCounter,
    pub component_restarts: IntCounterVec,
    pub end_to_end_latency: Histogram,
    pub consumer_paused: IntGaugeVec,
    pub dead_letters_pending: IntGauge,
    pub reenrich_backlog: IntGauge,
    pub rows_reenriched: IntCounter,
    pub dead_letters_replayed: IntCounterVec,
    pub http_connections: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request received to response ready, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let kafka_produce_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kafka_produce_duration_seconds",
                "Time from handing a record to the producer to the broker's acknowledgement",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let queue_depth = IntGauge::new(
            "queue_depth",
            "Consumer lag: records in assigned partitions not yet consumed",
        )?;
        let active_workers = IntGauge::new(
            "active_workers",
            "Messages holding a worker pool slot (moderation and enrichment; bounded by worker.concurrency)",
        )?;
        let db_write_duration = Histogram::with_opts(
            HistogramOpts::new(
                "db_write_duration_seconds",
                "Time of one batch INSERT attempt",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let messages_processed = IntCounterVec::new(
            Opts::new(
                "messages_processed_total",
                "Messages finished by the worker, by outcome",
            ),
            &["outcome"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "dead_letters_total",
                "Messages written to the dead-letter file, by stage",
            ),
            &["stage"],
        )?;
        let moderation_hits = IntCounter::new(
            "moderation_hits_total",
            "Messages flagged by keyword moderation",
        )?;
        let component_restarts = IntCounterVec::new(
            Opts::new(
                "component_restarts_total",
                "Supervised tasks restarted after a panic, by component",
            ),
            &["component"],
        )?;
        let end_to_end_latency = Histogram::with_opts(
            HistogramOpts::new(
                "end_to_end_latency_seconds",
                "From a message's sent_at to its row being committed",
            )
            .buckets(E2E_BUCKETS.to_vec()),
        )?;
        let consumer_paused = IntGaugeVec::new(
            Opts::new(
                "consumer_paused",
                "1 while consumption is paused, by reason (dead_letters_unwritable, database_unavailable)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(kafka_produce_duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(active_workers.clone()))?;
        registry.register(Box::new(db_write_duration.clone()))?;
        registry.register(Box::new(messages_processed.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(moderation_hits.clone()))?;
        registry.register(Box::new(component_restarts.clone()))?;
        registry.register(Box::new(end_to_end_latency.clone()))?;
        let http_connections = IntGaugeVec::new(
            Opts::new(
                "http_connections",
                "Open client connections, by server and state (active: served by hyper; parked: idle, holding no buffers)",
            ),
            &["server", "state"],
        )?;
        registry.register(Box::new(consumer_paused.clone()))?;
        let dead_letters_pending = IntGauge::new(
            "dead_letters_pending",
            "Dead letters of a database outage in this worker's directory not yet replayed",
        )?;
        let dead_letters_replayed = IntCounterVec::new(
            Opts::new(
                "dead_letters_replayed_total",
                "Outage dead letters replayed automatically, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(dead_letters_pending.clone()))?;
        let reenrich_backlog = IntGauge::new(
            "reenrich_backlog",
            "Rows stored without NLP data that the worker will re-enrich once the NLP API is healthy",
        )?;
        let rows_reenriched = IntCounter::new(
            "rows_reenriched_total",
            "Rows stored without NLP data whose NLP data the worker filled in afterwards",
        )?;
        registry.register(Box::new(reenrich_backlog.clone()))?;
        registry.register(Box::new(rows_reenriched.clone()))?;
        registry.register(Box::new(dead_letters_replayed.clone()))?;
        registry.register(Box::new(http_connections.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let enrich = EnrichMetrics::register(&registry)?;
        Ok(Metrics {
            registry,
            http_requests,
            http_request_duration,
            kafka_produce_duration,
            enrich,
            queue_depth,
            active_workers,
            db_write_duration,
            messages_processed,
            dead_letters,
            moderation_hits,
            component_restarts,
            end_to_end_latency,
            consumer_paused,
            dead_letters_pending,
            reenrich_backlog,
            rows_reenriched,
            dead_letters_replayed,
            http_connections,
        })
    }

    /// Creates every label set in `known` at 0 (the `nlp_api_errors_total` kinds are
    /// created with the enrich metrics).
    pub fn export_at_zero(&self, known: &KnownLabels) {
        for (route, status) in &known.requests {
            self.http_requests.with_label_values(&[route, status]);
            self.http_request_duration.with_label_values(&[route]);
        }
        for outcome in &known.outcomes {
            self.messages_processed.with_label_values(&[outcome]);
            self.dead_letters_replayed.with_label_values(&[outcome]);
        }
        for stage in &known.dead_letter_stages {
            self.dead_letters.with_label_values(&[stage]);
        }
        for component in &known.components {
            self.component_restarts.with_label_values(&[component]);
        }
    }

    /// The connection gauges of one HTTP server.
    pub fn connections(&self, server: &str) -> Connections {
        Connections::new(
            self.http_connections.with_label_values(&[server, "active"]),
            self.http_connections.with_label_values(&[server, "parked"]),
        )
    }

    pub fn registry(&self) -> &Registry {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_fixed_names() {
        let m = Metrics::new().expect("registers");
        m.http_requests
            .with_label_values(&["/v1/messages", "202"])
            .inc();
        m.http_request_duration
            .with_label_values(&["/v1/messages"])
            .observe(0.01);
        m.kafka_produce_duration.observe(0.002);
        let text = m.render();
        assert!(text.contains("http_requests_total{route=\"/v1/messages\",status=\"202\"} 1"));
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("kafka_produce_duration_seconds_count 1"));
        for name in [
            "nlp_api_errors_total",
            "circuit_breaker_state",
            "queue_depth",
            "active_workers",
            "moderation_hits_total",
            "end_to_end_latency_seconds_count",
            "db_write_duration_seconds_count",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }

    #[test]
    fn known_label_sets_are_exported_at_zero_before_any_event() {
        let m = Metrics::new().expect("registers");
        let before = m.render();
        m.export_at_zero(&KnownLabels {
            requests: vec![("/v1/messages", "202"), ("/v1/messages", "503")],
            outcomes: vec!["stored"],
            dead_letter_stages: vec!["decode", "storage"],
            components: vec!["consumer"],
        });
        let text = m.render();
        for series in [
            r#"http_requests_total{route="/v1/messages",status="202"} 0"#,
            r#"http_requests_total{route="/v1/messages",status="503"} 0"#,
            r#"http_request_duration_seconds_count{route="/v1/messages"} 0"#,
            r#"messages_processed_total{outcome="stored"} 0"#,
            r#"dead_letters_total{stage="decode"} 0"#,
            r#"dead_letters_total{stage="storage"} 0"#,
            r#"component_restarts_total{component="consumer"} 0"#,
        ] {
            assert!(
                !before.contains(series),
                "{series} only exists once created"
            );
            assert!(text.lines().any(|l| l == series), "{series} missing");
        }
    }
}
