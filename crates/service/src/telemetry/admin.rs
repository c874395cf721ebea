//! The admin listener: liveness, readiness (`/health`), Prometheus `/metrics` and, on a
//! worker, `/dead-letters/drained` for pre-stop hooks; kept off the public API port so
//! scraping never competes with chatbots for admission.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use super::drain::{drained_response, DeadLetterBacklog};
use super::health::HealthChecks;
use super::metrics::Metrics;
use crate::http_server::{json_response, HttpHandler, HttpResponse};

/// How long `/health` waits for each dependency.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The admin listener's handler: `/livez`, `/health`, `/metrics` and, where this process
/// replays dead letters by itself, `/dead-letters/drained`.
pub struct AdminHandler {
    metrics: Metrics,
    health: HealthChecks,
    backlog: Option<Arc<dyn DeadLetterBacklog>>,
}

impl AdminHandler {
    pub(crate) fn new(
        metrics: Metrics,
        health: HealthChecks,
        backlog: Option<Arc<dyn DeadLetterBacklog>>,
    ) -> Arc<Self> {
        Arc::new(AdminHandler {
            metrics,
            health,
            backlog,
        })
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
            (&Method::GET, "/dead-letters/drained") => match &self.backlog {
                Some(backlog) => drained_response(backlog.as_ref(), req.uri().query()).await,
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": {"code": "not_found", "message": "this process replays no dead letters by itself (a worker with dlq.auto_replay on does)", "field": null}}),
                ),
            },
            (_, "/livez" | "/health" | "/metrics" | "/dead-letters/drained") => {
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
    use crate::telemetry::Backlog;

    /// An admin listener on a free port, serving until the token is cancelled.
    fn serve_admin(
        backlog: Option<Arc<dyn DeadLetterBacklog>>,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = listen("127.0.0.1:0".parse().expect("address"), false).expect("listens");
        let addr = listener.local_addr().expect("bound");
        let handler = AdminHandler::new(
            Metrics::new().expect("metrics"),
            HealthChecks::default(),
            backlog,
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            "admin",
            listener,
            handler,
            Connections::unmetered(),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        (addr, shutdown, server)
    }

    #[tokio::test]
    async fn another_method_on_an_admin_route_is_405_naming_get() {
        let (addr, shutdown, server) = serve_admin(None);
        let client = reqwest::Client::new();
        let trace = reqwest::Method::from_bytes(b"TRACE").expect("method");
        for path in ["/livez", "/health", "/metrics", "/dead-letters/drained"] {
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
        let no_backlog = client
            .get(format!("http://{addr}/dead-letters/drained?wait_secs=5"))
            .send()
            .await
            .expect("answered");
        assert_eq!(
            no_backlog.status(),
            404,
            "a process without a replayer says so"
        );
        shutdown.cancel();
        server.await.expect("server stops");
    }

    /// A backlog that ends every wait with `left` pending, recording the waits asked for.
    struct FixedBacklog {
        left: usize,
        waits: std::sync::Mutex<Vec<Duration>>,
    }

    impl DeadLetterBacklog for FixedBacklog {
        fn wait_replayed(&self, within: Duration) -> futures::future::BoxFuture<'_, Backlog> {
            self.waits.lock().expect("not poisoned").push(within);
            Box::pin(async move {
                Backlog {
                    drained: self.left == 0,
                    pending: self.left,
                }
            })
        }
    }

    async fn drained(left: usize, query: &str) -> (u16, serde_json::Value, Vec<Duration>) {
        let backlog = Arc::new(FixedBacklog {
            left,
            waits: std::sync::Mutex::default(),
        });
        let (addr, shutdown, server) = serve_admin(Some(backlog.clone()));
        let response = reqwest::get(format!("http://{addr}/dead-letters/drained{query}"))
            .await
            .expect("answered");
        let status = response.status().as_u16();
        let body = response.json().await.expect("JSON body");
        shutdown.cancel();
        server.await.expect("server stops");
        let waits = backlog.waits.lock().expect("not poisoned").clone();
        (status, body, waits)
    }

    #[tokio::test]
    async fn drained_is_200_when_nothing_is_pending_and_503_with_the_count_otherwise() {
        let (status, body, waits) = drained(0, "?wait_secs=90").await;
        assert_eq!(
            (status, body),
            (200, serde_json::json!({"drained": true, "pending": 0}))
        );
        assert_eq!(waits, [Duration::from_secs(90)]);

        let (status, body, waits) = drained(7, "").await;
        assert_eq!(
            (status, body),
            (503, serde_json::json!({"drained": false, "pending": 7}))
        );
        assert_eq!(waits, [Duration::ZERO], "no wait asked: just report");

        let (status, body, waits) = drained(0, "?wait_secs=soon").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["field"], "wait_secs");
        assert!(waits.is_empty(), "a bad query waits for nothing");
    }
}
