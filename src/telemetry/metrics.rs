//! Every Prometheus metric the service exports, named in one place (the names are a
//! fixed contract with dashboards and alert rules).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for request and produce paths: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Handles to the registered metrics; cheap to clone (each handle is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub kafka_produce_duration: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route and status"),
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
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(kafka_produce_duration.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_request_duration,
            kafka_produce_duration,
        })
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
        m.http_requests.with_label_values(&["/v1/messages", "202"]).inc();
        m.http_request_duration
            .with_label_values(&["/v1/messages"])
            .observe(0.01);
        m.kafka_produce_duration.observe(0.002);
        let text = m.render();
        assert!(text.contains("http_requests_total{route=\"/v1/messages\",status=\"202\"} 1"));
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("kafka_produce_duration_seconds_count 1"));
    }
}
