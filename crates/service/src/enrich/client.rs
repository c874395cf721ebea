//! One HTTP attempt against the NLP API, classified into an [`AttemptError`].
//!
//! This file knows HTTP and the wire format, nothing about retries or the
//! breaker: it turns "what happened on the socket" into a typed result that
//! the policy in `mod.rs` acts on.
//!
//! HTTP/2 goes over one [`H2Session`]; HTTP/1.1 over hyper-util's pool of
//! keep-alive connections; `auto` (the default) starts with HTTP/2 and keeps
//! to HTTP/1.1 once the API has answered in it. Not reqwest: over HTTP/2
//! every timed-out call resets its stream, and a server answer that arrives
//! after the reset is refused by the client; h2 counts those refusals and
//! tears the whole connection down (GOAWAY) after 1,024 of them unless the
//! client keeps track of more reset streams, a limit reqwest does not expose.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;

use super::h2_session::H2Session;
use super::outcome::{AttemptError, NlpAnalysis};
use crate::config::{Http2Mode, NlpSettings};

/// Largest response body read; the contract's answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The request body of the NLP contract.
#[derive(Serialize)]
struct AnalyzeRequest<'a> {
    text: &'a str,
    lang_hint: &'a str,
}

type Http1Pool = Client<HttpConnector, Full<Bytes>>;

/// How requests reach the NLP API.
#[derive(Debug, Clone)]
enum Transport {
    Http1(Http1Pool),
    Http2(H2Session),
    /// HTTP/2 until the API answers in HTTP/1.x, then HTTP/1.1 for good.
    Auto {
        session: H2Session,
        pool: Http1Pool,
        http1_only: Arc<AtomicBool>,
    },
}

/// A shared HTTP/1.1 or HTTP/2 client for the NLP API.
#[derive(Debug, Clone)]
pub(crate) struct NlpClient {
    transport: Transport,
    url: Uri,
    lang_hint: String,
    timeout: Duration,
}

impl NlpClient {
    /// Builds the client.
    ///
    /// * HTTP/2 (`http2` true, or "auto" with an API that speaks it): one
    ///   connection carries every call;
    /// * HTTP/1.1: the idle pool keeps up to `max_connections` keep-alive
    ///   sockets, so ~2,500 concurrent calls reuse connections instead of
    ///   reconnecting;
    /// * `TCP_NODELAY`: small request/response pairs must not wait on Nagle;
    /// * no proxy, no redirects, no client-level retries: every retry decision
    ///   is ours and counted by our budget.
    pub(crate) fn new(settings: &NlpSettings) -> NlpClient {
        let transport = match settings.http2 {
            Http2Mode::On => Transport::Http2(H2Session::new(&settings.url, MAX_BODY_BYTES)),
            Http2Mode::Off => Transport::Http1(http1_pool(settings)),
            Http2Mode::Auto => Transport::Auto {
                session: H2Session::new(&settings.url, MAX_BODY_BYTES),
                pool: http1_pool(settings),
                http1_only: Arc::default(),
            },
        };
        NlpClient {
            transport,
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
        let body = Bytes::from(body);
        let (status, answer) = match &self.transport {
            Transport::Http2(session) => session.send(self.request(()), body).await?,
            Transport::Http1(pool) => post_http1(pool, self.request(Full::new(body))).await?,
            Transport::Auto {
                session,
                pool,
                http1_only,
            } => self.post_auto(session, pool, http1_only, body).await?,
        };
        if !status.is_success() {
            return Err(AttemptError::Status(status.as_u16()));
        }
        NlpAnalysis::from_body(&answer)
    }

    /// HTTP/2 until the API answers in HTTP/1.x; that call, and every later
    /// one, then goes over HTTP/1.1.
    async fn post_auto(
        &self,
        session: &H2Session,
        pool: &Http1Pool,
        http1_only: &AtomicBool,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), AttemptError> {
        if !http1_only.load(Ordering::Relaxed) {
            let answer = session.send(self.request(()), body.clone()).await;
            if answer.is_ok() || !session.answered_http1() {
                return answer;
            }
            if !http1_only.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    url = %self.url,
                    "the NLP API answered in HTTP/1.x, not HTTP/2: using HTTP/1.1 from now on"
                );
            }
        }
        // Boxed: hyper's client future is large, and with an API that speaks
        // HTTP/2 this path never runs.
        Box::pin(post_http1(pool, self.request(Full::new(body)))).await
    }

    /// Whether an `auto` client has settled on HTTP/1.1.
    #[cfg(test)]
    pub(crate) fn fell_back_to_http1(&self) -> bool {
        match &self.transport {
            Transport::Auto { http1_only, .. } => http1_only.load(Ordering::Relaxed),
            Transport::Http1(_) | Transport::Http2(_) => false,
        }
    }

    /// The contract's POST, with `body`.
    fn request<B>(&self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static("chat-analytics-enrich"),
        );
        request
    }
}

/// A pool of up to `max_connections` idle keep-alive connections.
fn http1_pool(settings: &NlpSettings) -> Http1Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(settings.max_connections.get())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    builder.build(connector)
}

/// One request over the HTTP/1.1 pool: the status and the whole answer.
async fn post_http1(
    pool: &Http1Pool,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), AttemptError> {
    let response = pool
        .request(request)
        .await
        .map_err(|e| AttemptError::Connect(chain(&e)))?;
    let status = response.status();
    // The whole body is read even for an error status, so the connection
    // can go back to the pool.
    let bytes = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                AttemptError::Invalid(format!("body larger than {MAX_BODY_BYTES} bytes"))
            } else {
                AttemptError::Connect(chain(e.as_ref()))
            }
        })?
        .to_bytes();
    Ok((status, bytes))
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
