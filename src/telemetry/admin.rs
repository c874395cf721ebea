//! The admin listener: liveness, readiness (`/health`) and Prometheus `/metrics`, kept
//! off the public API port so scraping never competes with chatbots for admission.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::health::HealthChecks;
use super::metrics::Metrics;
use crate::http_server::{json_response, HttpHandler, HttpResponse};

/// How long `/health` waits for each dependency.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct AdminHandler {
    metrics: Metrics,
    health: HealthChecks,
}

impl AdminHandler {
    pub fn new(metrics: Metrics, health: HealthChecks) -> Arc<Self> {
        Arc::new(AdminHandler { metrics, health })
    }
}

impl HttpHandler for AdminHandler {
    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/livez") => livez_response(),
            (&Method::GET, "/health") => health_response(&self.health).await,
            (&Method::GET, "/metrics") => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": {"code": "not_found", "message": "no such admin route", "field": null}}),
            ),
        }
    }
}

/// The process is up and serving; says nothing about dependencies.
pub fn livez_response() -> HttpResponse {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// 200 when every dependency answers, 503 otherwise, with one line per dependency.
pub async fn health_response(health: &HealthChecks) -> HttpResponse {
    let report = health.run(HEALTH_PROBE_TIMEOUT).await;
    let status = if report.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &report)
}
