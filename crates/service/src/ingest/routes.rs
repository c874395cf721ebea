//! The public API's request handling: route, authenticate, read, parse, admit,
//! publish, answer. Every path ends in a response with the one error shape; bad input
//! never becomes a 500.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::field::{display, Empty};
use tracing::Instrument;

use super::admission::Admission;
use super::auth::ApiKeys;
use super::error::ApiError;
use super::metrics::IngestMetrics;
use super::request::{parse_batch, parse_single};
use super::route::Route;
use crate::config::ApiSettings;
use crate::domain::{to_storage_precision, ChatMessage};
use crate::http_server::{json_response, HttpHandler, HttpResponse};
use crate::queue::{encode_message, PublishError, Publisher};
use crate::telemetry::{health_response, livez_response, HealthChecks};

/// Everything a request needs; shared by all connections.
pub struct IngestApi<P> {
    publisher: P,
    keys: ApiKeys,
    admission: Admission,
    health: HealthChecks,
    metrics: IngestMetrics,
    settings: ApiSettings,
    shutdown: CancellationToken,
}

impl<P: Publisher> IngestApi<P> {
    /// The API's handler, shared by all connections: accepted messages go to `publisher`;
    /// once `shutdown` fires, new posts are refused with 503 `shutting_down`.
    pub fn new(
        publisher: P,
        keys: ApiKeys,
        admission: Admission,
        health: HealthChecks,
        metrics: IngestMetrics,
        settings: ApiSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(IngestApi {
            publisher,
            keys,
            admission,
            health,
            metrics,
            settings,
            shutdown,
        })
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    async fn route(&self, route: Route, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
        match (route, req.method()) {
            (Route::Message | Route::Batch, &Method::POST) => self.accept(route, req).await,
            (Route::Message | Route::Batch, _) => Err(ApiError::method_not_allowed("POST")),
            (Route::Health, &Method::GET) => Ok(health_response(&self.health).await),
            (Route::Livez, &Method::GET) => Ok(livez_response()),
            (Route::Health | Route::Livez, _) => Err(ApiError::method_not_allowed("GET")),
            (Route::Unknown, _) => Err(ApiError::not_found()),
        }
    }

    async fn accept(&self, route: Route, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(self.unavailable("shutting_down", "the service is shutting down"));
        }
        let caller = self
            .keys
            .authenticate(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))?;
        if !is_json(req.headers().get(CONTENT_TYPE).map(|v| v.as_bytes())) {
            return Err(ApiError::unsupported_media_type());
        }
        let body = self.read_body(req).await?;
        // Microseconds, as Postgres keeps them: it is the stored sent_at of a message
        // posted without one.
        let received_at = to_storage_precision(Utc::now());
        let messages = match route {
            Route::Batch => parse_batch(&body, self.settings.max_batch_messages.get())?,
            _ => vec![parse_single(&body)?],
        };
        record_messages(&tracing::Span::current(), &messages);
        for message in &messages {
            caller.may_post_for(&message.bot_id)?;
        }
        for message in &messages {
            self.admission.check_rate(&message.bot_id, 1)?;
        }
        let _admitted = self.admission.admit(messages.len())?;
        self.publish_all(&messages, received_at).await?;
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
        Ok(match route {
            Route::Batch => json_response(
                StatusCode::ACCEPTED,
                &json!({"accepted": ids.len(), "message_ids": ids}),
            ),
            _ => json_response(
                StatusCode::ACCEPTED,
                &json!({"message_id": ids[0], "status": "accepted"}),
            ),
        })
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let limit = self.settings.max_body_bytes.get();
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::payload_too_large(limit))
            }
            Err(err) => Err(ApiError::bad_request(
                "unreadable_body",
                format!("could not read the request body: {err}"),
            )),
        }
    }

    /// Publishes every message concurrently; succeeds only if the broker acknowledged all.
    async fn publish_all(
        &self,
        messages: &[ChatMessage],
        received_at: chrono::DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let results = join_all(messages.iter().map(|m| {
            let publish = self
                .publisher
                .publish(m.bot_id.as_str(), encode_message(m, received_at));
            // A single message's ids are on the request span already; a batch's are not.
            let span = if messages.len() > 1 {
                tracing::debug_span!("message", message_id = %m.message_id, bot_id = m.bot_id.as_str())
            } else {
                tracing::Span::none()
            };
            publish.instrument(span)
        }))
        .await;
        let failed: Vec<(&ChatMessage, PublishError)> = messages
            .iter()
            .zip(results)
            .filter_map(|(m, result)| result.err().map(|err| (m, err)))
            .collect();
        let Some((_, first)) = failed.first() else {
            return Ok(());
        };
        // The request's span is at debug, so the line names the messages itself.
        match messages {
            [message] => tracing::warn!(
                message_id = %message.message_id,
                bot_id = message.bot_id.as_str(),
                error = %first,
                "publish failed"
            ),
            _ => tracing::warn!(
                failed = failed.len(),
                total = messages.len(),
                message_ids = %FailedIds(&failed),
                error = %first,
                "publish failed"
            ),
        }
        if failed
            .iter()
            .all(|(_, err)| matches!(err, PublishError::Overloaded))
        {
            return Err(self.overloaded());
        }
        let what = if messages.len() == 1 {
            format!("the message was not accepted ({first})")
        } else {
            format!(
                "{} of {} messages were not acknowledged ({first}); retry the batch (messages with a message_id cannot be duplicated by a retry)",
                failed.len(),
                messages.len()
            )
        };
        Err(self.unavailable(
            "kafka_unavailable",
            format!("message queue unavailable: {what}"),
        ))
    }

    fn unavailable(&self, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::unavailable(code, message, self.settings.retry_after_unavailable_secs)
    }

    fn overloaded(&self) -> ApiError {
        ApiError::too_many_requests(
            "overloaded",
            "the message queue is saturated; retry later",
            self.settings.retry_after_overloaded_secs,
        )
    }
}

impl<P: Publisher> HttpHandler for IngestApi<P> {
    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let started = Instant::now();
        let route = Route::of(req.uri().path());
        // The fields left empty are filled in once known: the message ids after parsing,
        // the status at the end.
        // At debug: at info every request would pay for its fields; the lines a request
        // logs at info or above name its messages themselves.
        let span = tracing::debug_span!(
            "http_request",
            method = req.method().as_str(),
            route = route.label(),
            message_id = Empty,
            bot_id = Empty,
            messages = Empty,
            status = Empty,
        );
        let response = self
            .route(route, req)
            .instrument(span.clone())
            .await
            .unwrap_or_else(ApiError::into_response);
        span.record("status", response.status().as_u16());
        self.metrics
            .requests
            .with_label_values(&[route.label(), response.status().as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[route.label()])
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// Puts a request's message ids on its span, so its log lines and the worker's for the
/// same message can be joined: one message's ids on the request itself, a batch's count
/// (each message's ids are on its publish span).
fn record_messages(span: &tracing::Span, messages: &[ChatMessage]) {
    match messages {
        [message] => {
            span.record("message_id", display(&message.message_id));
            span.record("bot_id", message.bot_id.as_str());
        }
        _ => {
            span.record("messages", messages.len());
        }
    }
}

/// The ids of a batch's messages that were not acknowledged, comma-separated.
struct FailedIds<'a>(&'a [(&'a ChatMessage, PublishError)]);

impl std::fmt::Display for FailedIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (message, _)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", message.message_id)?;
        }
        Ok(())
    }
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{LogFormat, Settings};
    use crate::http_server::{listen, serve, Connections};
    use crate::queue::Delivery;
    use crate::telemetry::capture::CapturedLogs;

    /// A broker that is never there: every publish fails, which the API logs.
    struct Unreachable;

    impl Publisher for Unreachable {
        async fn publish(&self, _: &str, _: Vec<u8>) -> Result<Delivery, PublishError> {
            Err(PublishError::Unavailable("no broker".into()))
        }
    }

    /// Posts `body` to `path` of an API whose broker is never there (every publish fails
    /// and is logged) and returns the "publish failed" line, logged in JSON at `level`.
    async fn publish_failure_logged_at(
        level: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (logs, _guard) = CapturedLogs::start(LogFormat::Json, level);
        let settings = Settings::load_from(None, std::iter::empty()).expect("defaults load");
        let api = IngestApi::new(
            Unreachable,
            ApiKeys::from_settings(&[]).expect("no keys"),
            Admission::new(100, &settings.api),
            HealthChecks::default(),
            IngestMetrics::register(&prometheus::Registry::new()).expect("metrics"),
            settings.api.clone(),
            CancellationToken::new(),
        );
        let listener = listen("127.0.0.1:0".parse().expect("address"), false).expect("listens");
        let addr = listener.local_addr().expect("bound");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            "api",
            listener,
            api,
            Connections::unmetered(),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        let response = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 503);
        shutdown.cancel();
        server.await.expect("server stops");

        let lines = logs.lines();
        let line = lines
            .iter()
            .find(|l| l.contains("publish failed"))
            .unwrap_or_else(|| panic!("no publish failure logged: {lines:?}"));
        serde_json::from_str(line).expect("a JSON line")
    }

    const ID: &str = "6f1c2a9e-59a4-4a8c-9a4e-2d1d5f0b7c11";

    // One thread, so the server and client tasks log through this thread's subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn at_info_a_failed_publish_names_its_message_without_the_request_span() {
        let line = publish_failure_logged_at(
            "info",
            "/v1/messages",
            json!({"message_id": ID, "bot_id": "bot-7", "text": "hello"}),
        )
        .await;
        assert_eq!(line["fields"]["message_id"], ID, "{line}");
        assert_eq!(line["fields"]["bot_id"], "bot-7", "{line}");
        assert!(
            line.get("span").is_none(),
            "the request span is off at info: {line}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_info_a_failed_batch_names_every_message_not_acknowledged() {
        let other = "0190b7a0-0000-7000-8000-000000000002";
        let line = publish_failure_logged_at(
            "info",
            "/v1/messages/batch",
            json!([
                {"message_id": ID, "bot_id": "bot-7", "text": "hello"},
                {"message_id": other, "bot_id": "bot-8", "text": "there"}
            ]),
        )
        .await;
        assert_eq!(line["fields"]["failed"], 2, "{line}");
        assert_eq!(line["fields"]["total"], 2, "{line}");
        assert_eq!(
            line["fields"]["message_ids"],
            format!("{ID},{other}"),
            "{line}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_debug_a_request_s_lines_carry_its_span() {
        let line = publish_failure_logged_at(
            "debug",
            "/v1/messages",
            json!({"message_id": ID, "bot_id": "bot-7", "text": "hello"}),
        )
        .await;
        let span = &line["span"];
        assert_eq!(span["name"], "http_request");
        assert_eq!(span["method"], "POST");
        assert_eq!(span["route"], "/v1/messages");
        assert_eq!(span["message_id"], ID);
        assert_eq!(span["bot_id"], "bot-7");
        assert_eq!(line["spans"][0]["message_id"], ID, "{line}");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some(b"application/json")));
        assert!(is_json(Some(b"Application/JSON; charset=utf-8")));
        assert!(!is_json(Some(b"text/plain")));
        assert!(!is_json(Some(b"application/jsonx")));
        assert!(!is_json(None));
    }
}
