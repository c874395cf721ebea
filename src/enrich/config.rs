//! User-facing settings of the enrich stage (the `[nlp]` config section).
//!
//! Defaults are the spec's client policy; [`EnrichSettings::validate`] rejects
//! values that would silently disable a protection, naming the key so the
//! operator can fix the file or the `CHAT_ANALYTICS__NLP__*` variable.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the NLP client: endpoint, per-attempt timeout, retries, retry
/// budget, circuit breaker and connection pool.
///
/// Every field has a default (`#[serde(default)]`), so a config with only
/// `url` (or nothing) gets the spec's policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichSettings {
    /// `POST` endpoint of the NLP API. Plain `http://` only: this client is
    /// built without TLS (the API runs next to the workers).
    pub url: String,
    /// `lang_hint` sent with every request.
    pub lang_hint: String,
    /// Deadline of one HTTP attempt, connect to last body byte.
    pub attempt_timeout_ms: u64,
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each later one.
    pub backoff_base_ms: u64,
    /// Cap of the doubled wait.
    pub backoff_max_ms: u64,
    /// Jitter added to each wait, as a fraction of it: the wait is drawn
    /// uniformly from `[d, d * (1 + ratio)]`, so retries of messages that
    /// failed together do not arrive together.
    pub backoff_jitter_ratio: f64,
    /// Error ratio (breaker failures / calls) in the window that opens the breaker.
    pub breaker_failure_ratio: f64,
    /// Calls the window must hold before the ratio is trusted.
    pub breaker_min_calls: u32,
    /// Length of the sliding window (kept as 10 buckets).
    pub breaker_window_ms: u64,
    /// How long the breaker stays open before letting trial calls through.
    pub breaker_open_ms: u64,
    /// Share of calls let through as trials while half-open; at rates where
    /// that is under one a second, one call a second is let through instead.
    pub breaker_half_open_ratio: f64,
    /// Consecutive successful trials that close a half-open breaker.
    pub breaker_half_open_successes: u32,
    /// Retries allowed per first attempt in the budget window (0.2 = 20%).
    pub retry_budget_ratio: f64,
    /// Retries per second always allowed, so a quiet service can still retry.
    pub retry_budget_min_per_sec: u32,
    /// Length of the retry budget's window (kept as 10 buckets).
    pub retry_budget_window_ms: u64,
    /// Idle keep-alive connections kept to the API: sized to the worker's
    /// concurrency so a burst does not close and reopen sockets.
    pub max_connections: usize,
    /// Speak HTTP/2 without negotiation (h2c "prior knowledge") to an API that
    /// supports it, as nlp-sim does: every call shares one multiplexed
    /// connection instead of one socket per call in flight, so there is no
    /// storm of new connections when the pool is cold or the API restarts.
    pub http2: bool,
}

impl Default for EnrichSettings {
    fn default() -> Self {
        EnrichSettings {
            url: "http://127.0.0.1:8090/v1/analyze".to_owned(),
            lang_hint: "en".to_owned(),
            attempt_timeout_ms: 300,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 400,
            backoff_jitter_ratio: 0.5,
            breaker_failure_ratio: 0.5,
            breaker_min_calls: 20,
            breaker_window_ms: 10_000,
            breaker_open_ms: 30_000,
            breaker_half_open_ratio: 0.1,
            breaker_half_open_successes: 5,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_sec: 10,
            retry_budget_window_ms: 10_000,
            max_connections: 2_500,
            http2: false,
        }
    }
}

/// Why the enrich stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// A setting is out of range; `key` is its config path (`nlp.<field>`).
    #[error("invalid configuration: `{key}` = {value}: {reason}")]
    InvalidSetting {
        /// Config path of the bad key, e.g. `nlp.max_attempts`.
        key: &'static str,
        /// The rejected value, as written.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

fn invalid(key: &'static str, value: impl ToString, reason: &'static str) -> EnrichError {
    EnrichError::InvalidSetting {
        key,
        value: value.to_string(),
        reason,
    }
}

fn check(
    ok: bool,
    key: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> Result<(), EnrichError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, value, reason))
    }
}

fn ratio(key: &'static str, value: f64, allow_zero: bool) -> Result<(), EnrichError> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
    let reason = if allow_zero {
        "must be between 0 and 1"
    } else {
        "must be greater than 0 and at most 1"
    };
    check(ok, key, value, reason)
}

impl EnrichSettings {
    /// Checks every key; the first bad one is returned, named.
    pub fn validate(&self) -> Result<(), EnrichError> {
        self.parsed_url()?;
        check(
            !self.lang_hint.is_empty(),
            "nlp.lang_hint",
            &self.lang_hint,
            "must not be empty",
        )?;
        check(
            (1..=60_000).contains(&self.attempt_timeout_ms),
            "nlp.attempt_timeout_ms",
            self.attempt_timeout_ms,
            "must be between 1 and 60000",
        )?;
        check(
            (1..=10).contains(&self.max_attempts),
            "nlp.max_attempts",
            self.max_attempts,
            "must be between 1 and 10",
        )?;
        check(
            self.backoff_base_ms >= 1 || self.max_attempts == 1,
            "nlp.backoff_base_ms",
            self.backoff_base_ms,
            "must be at least 1 when retries are on (a zero wait retries in a hot loop)",
        )?;
        check(
            self.backoff_max_ms >= self.backoff_base_ms,
            "nlp.backoff_max_ms",
            self.backoff_max_ms,
            "must be at least nlp.backoff_base_ms",
        )?;
        ratio("nlp.backoff_jitter_ratio", self.backoff_jitter_ratio, true)?;
        ratio(
            "nlp.breaker_failure_ratio",
            self.breaker_failure_ratio,
            false,
        )?;
        check(
            self.breaker_min_calls >= 1,
            "nlp.breaker_min_calls",
            self.breaker_min_calls,
            "must be at least 1",
        )?;
        check(
            self.breaker_window_ms >= 100,
            "nlp.breaker_window_ms",
            self.breaker_window_ms,
            "must be at least 100 (10 buckets of at least 10 ms)",
        )?;
        check(
            self.breaker_open_ms >= 1,
            "nlp.breaker_open_ms",
            self.breaker_open_ms,
            "must be at least 1",
        )?;
        ratio(
            "nlp.breaker_half_open_ratio",
            self.breaker_half_open_ratio,
            false,
        )?;
        check(
            self.breaker_half_open_successes >= 1,
            "nlp.breaker_half_open_successes",
            self.breaker_half_open_successes,
            "must be at least 1",
        )?;
        ratio("nlp.retry_budget_ratio", self.retry_budget_ratio, true)?;
        check(
            self.retry_budget_window_ms >= 100,
            "nlp.retry_budget_window_ms",
            self.retry_budget_window_ms,
            "must be at least 100 (10 buckets of at least 10 ms)",
        )?;
        check(
            self.max_connections >= 1,
            "nlp.max_connections",
            self.max_connections,
            "must be at least 1",
        )
    }

    /// The endpoint as a URI, if it is a plain-HTTP URL.
    pub(crate) fn parsed_url(&self) -> Result<hyper::Uri, EnrichError> {
        let url: hyper::Uri = self
            .url
            .parse()
            .map_err(|_| invalid("nlp.url", &self.url, "must be an absolute http:// URL"))?;
        check(
            url.scheme_str() == Some("http") && url.host().is_some_and(|h| !h.is_empty()),
            "nlp.url",
            &self.url,
            "must be an http:// URL with a host (this client has no TLS)",
        )?;
        Ok(url)
    }

    /// Per-attempt deadline.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_key(settings: &EnrichSettings) -> &'static str {
        match settings.validate() {
            Err(EnrichError::InvalidSetting { key, .. }) => key,
            other => panic!("expected InvalidSetting, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_spec_policy_and_valid() {
        let s = EnrichSettings::default();
        assert_eq!(s.url, "http://127.0.0.1:8090/v1/analyze");
        assert_eq!(s.attempt_timeout_ms, 300);
        assert_eq!(s.max_attempts, 3);
        assert_eq!((s.backoff_base_ms, s.backoff_max_ms), (100, 400));
        assert_eq!(s.breaker_failure_ratio, 0.5);
        assert_eq!(s.breaker_window_ms, 10_000);
        assert_eq!(s.breaker_open_ms, 30_000);
        assert_eq!(s.breaker_half_open_ratio, 0.1);
        assert_eq!(s.retry_budget_ratio, 0.2);
        s.validate().expect("defaults valid");
    }

    #[test]
    fn missing_keys_take_defaults() {
        let s: EnrichSettings =
            serde_json::from_str(r#"{"url": "http://127.0.0.1:9000/x", "max_attempts": 2}"#)
                .expect("deserialize");
        assert_eq!(s.max_attempts, 2);
        assert_eq!(s.attempt_timeout_ms, 300);
        assert_eq!(s.url, "http://127.0.0.1:9000/x");
        s.validate().expect("valid");
    }

    #[test]
    fn each_bad_value_is_named() {
        type Edit = fn(&mut EnrichSettings);
        let cases: [(Edit, &str); 18] = [
            (|s| s.url = "not a url".into(), "nlp.url"),
            (|s| s.url = "https://nlp.local/v1/analyze".into(), "nlp.url"),
            (|s| s.lang_hint.clear(), "nlp.lang_hint"),
            (|s| s.attempt_timeout_ms = 0, "nlp.attempt_timeout_ms"),
            (|s| s.max_attempts = 0, "nlp.max_attempts"),
            (|s| s.max_attempts = 11, "nlp.max_attempts"),
            (|s| s.backoff_base_ms = 0, "nlp.backoff_base_ms"),
            (|s| s.backoff_max_ms = 50, "nlp.backoff_max_ms"),
            (
                |s| s.backoff_jitter_ratio = -0.1,
                "nlp.backoff_jitter_ratio",
            ),
            (
                |s| s.breaker_failure_ratio = 0.0,
                "nlp.breaker_failure_ratio",
            ),
            (
                |s| s.breaker_failure_ratio = f64::NAN,
                "nlp.breaker_failure_ratio",
            ),
            (|s| s.breaker_min_calls = 0, "nlp.breaker_min_calls"),
            (|s| s.breaker_window_ms = 10, "nlp.breaker_window_ms"),
            (|s| s.breaker_open_ms = 0, "nlp.breaker_open_ms"),
            (
                |s| s.breaker_half_open_ratio = 1.5,
                "nlp.breaker_half_open_ratio",
            ),
            (
                |s| s.breaker_half_open_successes = 0,
                "nlp.breaker_half_open_successes",
            ),
            (|s| s.retry_budget_ratio = 2.0, "nlp.retry_budget_ratio"),
            (|s| s.max_connections = 0, "nlp.max_connections"),
        ];
        for (edit, key) in cases {
            let mut s = EnrichSettings::default();
            edit(&mut s);
            assert_eq!(bad_key(&s), key);
        }
    }

    #[test]
    fn one_attempt_needs_no_backoff() {
        let s = EnrichSettings {
            max_attempts: 1,
            backoff_base_ms: 0,
            ..EnrichSettings::default()
        };
        s.validate().expect("no retries, no backoff needed");
    }

    #[test]
    fn the_error_message_names_key_value_and_rule() {
        let s = EnrichSettings {
            max_attempts: 0,
            ..EnrichSettings::default()
        };
        let msg = s.validate().expect_err("invalid").to_string();
        assert_eq!(
            msg,
            "invalid configuration: `nlp.max_attempts` = 0: must be between 1 and 10"
        );
    }
}
