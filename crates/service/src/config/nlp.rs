//! `[nlp]`: the NLP API and the enrich stage's failure policy (timeouts, retries, retry
//! budget, circuit breaker). Values that would silently disable a protection are refused.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;

use super::value::{count, non_empty, positive, positive_millis, within};
use super::ConfigError;

/// A sliding window is kept as 10 buckets of at least 10 ms.
const MIN_WINDOW_MS: u64 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    url: String,
    lang_hint: String,
    attempt_timeout_ms: u64,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    backoff_jitter_ratio: f64,
    breaker_failure_ratio: f64,
    breaker_min_calls: u32,
    breaker_window_ms: u64,
    breaker_open_ms: u64,
    breaker_half_open_ratio: f64,
    breaker_half_open_successes: u32,
    retry_budget_ratio: f64,
    retry_budget_min_per_sec: u32,
    retry_budget_window_ms: u64,
    max_connections: usize,
    http2: RawHttp2,
}

/// `http2`: `true`, `false` or `"auto"` (environment values arrive parsed, so
/// `CHAT_ANALYTICS__NLP__HTTP2=true` is the boolean).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawHttp2 {
    Flag(bool),
    Word(String),
}

/// Which HTTP version the NLP client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2Mode {
    /// HTTP/1.1 only, over a pool of keep-alive connections (`false`).
    Off,
    /// HTTP/2 without negotiation (h2c "prior knowledge"), to an API known to speak
    /// it (`true`).
    On,
    /// HTTP/2 first; when the API answers in HTTP/1.x instead, HTTP/1.1 from then on
    /// (`"auto"`, the default).
    Auto,
}

impl RawHttp2 {
    fn mode(self) -> Result<Http2Mode, ConfigError> {
        match self {
            RawHttp2::Flag(true) => Ok(Http2Mode::On),
            RawHttp2::Flag(false) => Ok(Http2Mode::Off),
            RawHttp2::Word(word) if word == "auto" => Ok(Http2Mode::Auto),
            RawHttp2::Word(word) => Err(ConfigError::invalid(
                "nlp.http2",
                word,
                "must be true, false or \"auto\"",
            )),
        }
    }
}

/// Settings of the NLP client: endpoint, per-attempt timeout, retries, retry budget,
/// circuit breaker and connection pool.
#[derive(Debug, Clone)]
pub struct NlpSettings {
    /// `POST` endpoint of the NLP API: `http://` with a host, as the client has no TLS
    /// (the API runs next to the workers).
    pub url: Uri,
    /// `lang_hint` sent with every request.
    pub lang_hint: String,
    /// Deadline of one HTTP attempt, connect to last body byte.
    pub attempt_timeout: Duration,
    /// Attempts in total, the first one included.
    pub max_attempts: NonZeroU32,
    /// Wait before the first retry; doubled for each later one. Not zero when retries
    /// are on: a zero wait would retry in a hot loop.
    pub backoff_base: Duration,
    /// Cap of the doubled wait; at least `backoff_base`.
    pub backoff_max: Duration,
    /// Jitter added to each wait, as a fraction of it: the wait is drawn uniformly from
    /// `[d, d * (1 + ratio)]`, so retries of messages that failed together do not
    /// arrive together.
    pub backoff_jitter_ratio: f64,
    /// Error ratio (breaker failures / calls) in the window that opens the breaker.
    pub breaker_failure_ratio: f64,
    /// Calls the window must hold before the ratio is trusted.
    pub breaker_min_calls: NonZeroU32,
    /// Length of the sliding window (kept as 10 buckets).
    pub breaker_window: Duration,
    /// How long the breaker stays open before letting trial calls through.
    pub breaker_open: Duration,
    /// Share of calls let through as trials while half-open; at rates where that is
    /// under one a second, one call a second is let through instead.
    pub breaker_half_open_ratio: f64,
    /// Consecutive successful trials that close a half-open breaker.
    pub breaker_half_open_successes: NonZeroU32,
    /// Retries allowed per first attempt in the budget window (0.2 = 20%).
    pub retry_budget_ratio: f64,
    /// Retries per second always allowed, so a quiet service can still retry.
    pub retry_budget_min_per_sec: u32,
    /// Length of the retry budget's window (kept as 10 buckets).
    pub retry_budget_window: Duration,
    /// Idle keep-alive connections kept to the API: sized to the worker's concurrency
    /// so a burst does not close and reopen sockets.
    pub max_connections: NonZeroUsize,
    /// Whether to speak HTTP/2 (h2c) to the API. Over HTTP/2 every call shares one
    /// multiplexed connection instead of one socket per call in flight: less CPU per
    /// call, and no storm of new connections when the pool is cold or the API restarts.
    pub http2: Http2Mode,
}

/// A share from 0 (when `allow_zero`) or just above it, to 1.
fn ratio(key: &'static str, value: f64, allow_zero: bool) -> Result<f64, ConfigError> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
    if ok {
        return Ok(value);
    }
    let reason = if allow_zero {
        "must be between 0 and 1"
    } else {
        "must be greater than 0 and at most 1"
    };
    Err(ConfigError::invalid(key, value, reason))
}

fn window(key: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms < MIN_WINDOW_MS {
        return Err(ConfigError::invalid(
            key,
            ms,
            "must be at least 100 (10 buckets of at least 10 ms)",
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn http_url(value: &str) -> Result<Uri, ConfigError> {
    let url: Uri = value
        .parse()
        .map_err(|_| ConfigError::invalid("nlp.url", value, "must be an absolute http:// URL"))?;
    if url.scheme_str() != Some("http") || url.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(
            "nlp.url",
            value,
            "must be an http:// URL with a host (this client has no TLS)",
        ));
    }
    Ok(url)
}

impl TryFrom<Raw> for NlpSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let max_attempts: NonZeroU32 = count("nlp.max_attempts", raw.max_attempts, 10)?;
        if raw.backoff_base_ms == 0 && max_attempts.get() > 1 {
            return Err(ConfigError::invalid(
                "nlp.backoff_base_ms",
                raw.backoff_base_ms,
                "must be at least 1 when retries are on (a zero wait retries in a hot loop)",
            ));
        }
        if raw.backoff_max_ms < raw.backoff_base_ms {
            return Err(ConfigError::invalid(
                "nlp.backoff_max_ms",
                raw.backoff_max_ms,
                "must be at least nlp.backoff_base_ms",
            ));
        }
        Ok(NlpSettings {
            url: http_url(&raw.url)?,
            lang_hint: non_empty("nlp.lang_hint", raw.lang_hint)?,
            attempt_timeout: Duration::from_millis(within(
                "nlp.attempt_timeout_ms",
                raw.attempt_timeout_ms,
                1..=60_000,
            )?),
            max_attempts,
            backoff_base: Duration::from_millis(raw.backoff_base_ms),
            backoff_max: Duration::from_millis(raw.backoff_max_ms),
            backoff_jitter_ratio: ratio(
                "nlp.backoff_jitter_ratio",
                raw.backoff_jitter_ratio,
                true,
            )?,
            breaker_failure_ratio: ratio(
                "nlp.breaker_failure_ratio",
                raw.breaker_failure_ratio,
                false,
            )?,
            breaker_min_calls: positive("nlp.breaker_min_calls", raw.breaker_min_calls)?,
            breaker_window: window("nlp.breaker_window_ms", raw.breaker_window_ms)?,
            breaker_open: positive_millis("nlp.breaker_open_ms", raw.breaker_open_ms)?,
            breaker_half_open_ratio: ratio(
                "nlp.breaker_half_open_ratio",
                raw.breaker_half_open_ratio,
                false,
            )?,
            breaker_half_open_successes: positive(
                "nlp.breaker_half_open_successes",
                raw.breaker_half_open_successes,
            )?,
            retry_budget_ratio: ratio("nlp.retry_budget_ratio", raw.retry_budget_ratio, true)?,
            retry_budget_min_per_sec: raw.retry_budget_min_per_sec,
            retry_budget_window: window("nlp.retry_budget_window_ms", raw.retry_budget_window_ms)?,
            max_connections: positive("nlp.max_connections", raw.max_connections)?,
            http2: raw.http2.mode()?,
        })
    }
}
