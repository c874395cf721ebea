//! The admin listener: liveness, readiness (`/health`) and Prometheus `/metrics`, kept
//! off the public API port so scraping never competes with chatbots for admission.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use super::health::HealthChecks;
use super::metrics::Metrics;
use crate::http_server::{json_response, HttpHandler, HttpResponse};

/// How long `/health` waits for each dependency.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The admin listener's handler: `/livez`, `/health` and `/metrics`.
pub struct AdminHandler {
    metrics: Metrics,
    health: HealthChecks,
}

impl AdminHandler {
    pub(crate) fn new(metrics: Metrics, health: HealthChecks) -> Arc<Self> {
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
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (_, "/livez" | "/health" | "/metrics") => {
                let mut response = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({"error": {"code": "method_not_allowed", "message": "this route only accepts GET", "field": null}}),
                );
                response
                    .headers_mut()
                    .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
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

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::http_server::{listen, serve, Connections};

    #[tokio::test]
    async fn another_method_on_an_admin_route_is_405_naming_get() {
        let listener = listen("127.0.0.1:0".parse().expect("address"), false).expect("listens");
        let addr = listener.local_addr().expect("bound");
        let handler = AdminHandler::new(Metrics::new().expect("metrics"), HealthChecks::default());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            "admin",
            listener,
            handler,
            Connections::unmetered(),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        let client = reqwest::Client::new();
        let trace = reqwest::Method::from_bytes(b"TRACE").expect("method");
        for path in ["/livez", "/health", "/metrics"] {
            let response = client
                .request(trace.clone(), format!("http://{addr}{path}"))
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 405, "{path}");
            assert_eq!(response.headers()["allow"], "GET", "{path}");
        }
        let unknown = client
            .get(format!("http://{addr}/nope"))
            .send()
            .await
            .expect("answered");
        assert_eq!(unknown.status(), 404);
        shutdown.cancel();
        server.await.expect("server stops");
    }
}
