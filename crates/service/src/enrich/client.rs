//! One HTTP attempt against the NLP API, classified into an [`AttemptError`].
//!
//! This file knows HTTP and the wire format, nothing about retries or the
//! breaker: it turns "what happened on the socket" into a typed result that
//! the policy in `mod.rs` acts on.
//!
//! Built on hyper-util's pooled client rather than reqwest: over HTTP/2 every
//! timed-out call resets its stream, and a server answer that arrives after
//! the reset is refused by the client; h2 counts those refusals and tears the
//! whole connection down (GOAWAY) after 1,024 of them unless the client keeps
//! track of more reset streams, a limit reqwest does not expose.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;

use super::outcome::{AttemptError, NlpAnalysis};
use crate::config::NlpSettings;

/// Largest response body read; the contract's answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Reset streams remembered per HTTP/2 connection (h2's default is 10), so an
/// answer to a call that already timed out is dropped quietly instead of
/// counting as a protocol error against the connection.
const H2_REMEMBERED_RESETS: usize = 16_384;
/// While calls are in flight, a ping this often notices a dead HTTP/2 peer.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The request body of the NLP contract.
#[derive(Serialize)]
struct AnalyzeRequest<'a> {
    text: &'a str,
    lang_hint: &'a str,
}

/// A shared HTTP/1.1 or HTTP/2 client for the NLP API (connection pool inside).
#[derive(Debug, Clone)]
pub(crate) struct NlpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    lang_hint: String,
    timeout: Duration,
}

impl NlpClient {
    /// Builds the pooled client.
    ///
    /// * HTTP/1.1: the idle pool keeps up to `max_connections` keep-alive
    ///   sockets, so ~2,500 concurrent calls reuse connections instead of
    ///   reconnecting; HTTP/2 (`http2`): one connection carries every call;
    /// * `TCP_NODELAY`: small request/response pairs must not wait on Nagle;
    /// * no proxy, no redirects, no client-level retries: every retry decision
    ///   is ours and counted by our budget.
    pub(crate) fn new(settings: &NlpSettings) -> NlpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(settings.max_connections.get())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        if settings.http2 {
            builder
                .http2_only(true)
                .http2_max_concurrent_reset_streams(H2_REMEMBERED_RESETS)
                .http2_keep_alive_interval(H2_KEEP_ALIVE)
                .http2_keep_alive_timeout(H2_KEEP_ALIVE);
        }
        NlpClient {
            http: builder.build(connector),
            url: settings.url.clone(),
            lang_hint: settings.lang_hint.clone(),
            timeout: settings.attempt_timeout,
        }
    }

    /// One attempt, bounded by the per-attempt timeout (connect, send and
    /// reading the whole body all count against it).
    pub(crate) async fn attempt(&self, text: &str) -> Result<NlpAnalysis, AttemptError> {
        tokio::time::timeout(self.timeout, self.exchange(text))
            .await
            .unwrap_or(Err(AttemptError::Timeout))
    }

    async fn exchange(&self, text: &str) -> Result<NlpAnalysis, AttemptError> {
        let body = AnalyzeRequest {
            text,
            lang_hint: &self.lang_hint,
        };
        let body = serde_json::to_vec(&body).map_err(|e| AttemptError::Decode(e.to_string()))?;
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static("chat-analytics-enrich"),
        );
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| AttemptError::Connect(chain(&e)))?;
        let status = response.status();
        // The whole body is read even for an error status, so an HTTP/1.1
        // connection can go back to the pool.
        let bytes = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    AttemptError::Invalid(format!("body larger than {MAX_BODY_BYTES} bytes"))
                } else {
                    AttemptError::Connect(chain(e.as_ref()))
                }
            })
            .map(|collected| collected.to_bytes());
        if !status.is_success() {
            return Err(AttemptError::Status(status.as_u16()));
        }
        NlpAnalysis::from_body(&bytes?)
    }
}

/// The error with its causes ("client error (Connect): tcp connect error:
/// Connection refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
