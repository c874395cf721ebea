//! One HTTP attempt against the NLP API, classified into an [`AttemptError`].
//!
//! This file knows HTTP and the wire format, nothing about retries or the
//! breaker: it turns "what happened on the socket" into a typed result that
//! the policy in `mod.rs` acts on.

use std::error::Error as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::config::{EnrichError, EnrichSettings};
use super::outcome::{AttemptError, NlpAnalysis};

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

/// A shared HTTP/1.1 client for the NLP API (connection pool inside).
#[derive(Debug, Clone)]
pub(crate) struct NlpClient {
    http: reqwest::Client,
    url: reqwest::Url,
    lang_hint: String,
    timeout: Duration,
}

impl NlpClient {
    /// Builds the pooled client.
    ///
    /// * the idle pool keeps up to `max_connections` keep-alive sockets, so
    ///   ~2,500 concurrent calls reuse connections instead of reconnecting;
    /// * `tcp_nodelay`: small request/response pairs must not wait on Nagle;
    /// * no proxy from the environment, no redirects, no reqwest-level
    ///   retries: every retry decision is ours and counted by our budget.
    pub(crate) fn new(settings: &EnrichSettings) -> Result<NlpClient, EnrichError> {
        let url = settings.parsed_url()?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(settings.max_connections)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .user_agent("chat-analytics-enrich")
            .build()
            .map_err(EnrichError::Client)?;
        Ok(NlpClient {
            http,
            url,
            lang_hint: settings.lang_hint.clone(),
            timeout: settings.attempt_timeout(),
        })
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
        let response = self
            .http
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            // Read (and drop) the body so the connection can go back to the
            // pool; its content and any error reading it do not matter.
            let _ = read_body(response).await;
            return Err(AttemptError::Status(status.as_u16()));
        }
        let bytes = read_body(response).await?;
        let raw: Value =
            serde_json::from_slice(&bytes).map_err(|e| AttemptError::Decode(e.to_string()))?;
        NlpAnalysis::from_json(raw)
    }
}

/// Reads the body up to [`MAX_BODY_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, AttemptError> {
    let declared = response.content_length().unwrap_or(0);
    if declared > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large() -> AttemptError {
    AttemptError::Invalid(format!("body larger than {MAX_BODY_BYTES} bytes"))
}

/// Classifies a reqwest failure. Anything that is not a decode problem is a
/// transport failure (refused, reset, closed mid-body): the dependency's health.
fn transport_error(e: reqwest::Error) -> AttemptError {
    if e.is_timeout() {
        AttemptError::Timeout
    } else if e.is_decode() {
        AttemptError::Decode(chain(&e))
    } else {
        AttemptError::Connect(chain(&e))
    }
}

/// The error with its causes ("error sending request: connection refused").
fn chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
