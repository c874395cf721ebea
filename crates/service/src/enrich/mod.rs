//! The enrich stage: ask the NLP API about a message, and when that is not
//! possible in time, say why instead of failing the message.
//!
//! [`Enricher::enrich`] never returns an error: a message is always stored,
//! with NLP data ([`NlpStatus::Ok`]) or without it and a status saying why.
//! That keeps the worker's pipeline simple and means an NLP outage degrades
//! the data, never the ingestion.
//!
//! # Policy (spec, "NLP API contract")
//!
//! * each attempt: 300 ms deadline ([`NlpSettings::attempt_timeout`]);
//! * up to 3 attempts, waiting 100 ms then 200 ms (×2 each, capped at
//!   400 ms) plus up to 50% jitter;
//! * only transient errors are retried (timeout, connection, 5xx, 429), and
//!   only while the retry budget allows: retries ≤ 20% of first attempts
//!   over 10 s (plus 10/s), so a broad outage cannot fill the worker pool
//!   with retries;
//! * a circuit breaker opens at ≥ 50% breaker failures over 10 s once 20
//!   calls were seen, stays open 30 s, then lets ~10% of calls through as
//!   trials, and at least one a second so a quiet bot's messages are trials
//!   too: 5 consecutive trial successes close it, one failure re-opens it.
//!
//! # Layout
//!
//! * `outcome.rs`: [`Enrichment`] (with its [`NlpStatus`]), [`NlpAnalysis`] (parsed
//!   and range-checked answer), [`AttemptError`] (retry / breaker classification);
//! * `client.rs`: one HTTP attempt, over HTTP/2 (h2c) or HTTP/1.1 (`nlp.http2`);
//! * `h2_session.rs`: the one shared HTTP/2 connection, re-opened when it ends;
//! * `retry.rs`: `RetryBudget` (the backoff is [`crate::backoff::Backoff`]);
//! * `breaker.rs`: the circuit breaker and [`BreakerState`];
//! * `window.rs`: the sliding bucketed counters both of those use;
//! * `metrics.rs`: [`EnrichMetrics`] (`nlp_api_duration_seconds`,
//!   `nlp_api_errors_total{kind}`, `circuit_breaker_state`).
//!
//! All time goes through `tokio::time`, so tests pause and advance the clock.
//! Apart from its tests (which also run against the real nlp-sim), the folder
//! depends on nothing else in the project but its settings ([`NlpSettings`],
//! parsed and checked at load) and the shared backoff.

mod breaker;
mod client;
mod h2_session;
mod metrics;
mod outcome;
mod retry;
mod window;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::NlpSettings;
use crate::domain::NlpStatus;
pub use breaker::BreakerState;
use breaker::{Breaker, BreakerConfig};
use client::NlpClient;
pub use metrics::{EnrichMetrics, DURATION_BUCKETS, ERROR_KINDS};
pub use outcome::{AttemptError, Enrichment, NlpAnalysis};
use retry::RetryBudget;

/// How a call waits out a retry back-off. A caller that holds something
/// worth lending out meanwhile (the worker's pool slot) gives it back for the
/// wait; [`Sleep`] only sleeps.
pub trait BackoffWait: Send {
    /// Returns once `delay` has passed and the caller may attempt again.
    fn wait(&mut self, delay: Duration) -> impl Future<Output = ()> + Send;
}

/// Waits out a back-off holding nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

impl BackoffWait for Sleep {
    async fn wait(&mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// The NLP enrichment stage with its whole failure policy.
///
/// Cheap to clone (one `Arc`): every worker task holds a clone and they share
/// one connection pool, one breaker and one retry budget.
#[derive(Clone, Debug)]
pub struct Enricher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: NlpClient,
    breaker: Breaker,
    budget: RetryBudget,
    backoff: Backoff,
    max_attempts: u32,
    metrics: EnrichMetrics,
}

impl Enricher {
    /// Builds the client, breaker and budget from settings checked at load.
    /// `metrics` are the caller's (registered wherever it exports them).
    pub fn new(settings: &NlpSettings, metrics: EnrichMetrics) -> Enricher {
        let client = NlpClient::new(settings);
        let breaker = Breaker::new(
            BreakerConfig {
                failure_ratio: settings.breaker_failure_ratio,
                min_calls: u64::from(settings.breaker_min_calls.get()),
                window: settings.breaker_window,
                open_for: settings.breaker_open,
                half_open_ratio: settings.breaker_half_open_ratio,
                close_after: settings.breaker_half_open_successes.get(),
            },
            metrics.breaker_state.clone(),
        );
        let budget = RetryBudget::new(
            settings.retry_budget_ratio,
            settings.retry_budget_min_per_sec,
            settings.retry_budget_window,
        );
        let backoff = Backoff::new(
            settings.backoff_base,
            settings.backoff_max,
            settings.backoff_jitter_ratio,
        );
        Enricher {
            inner: Arc::new(Inner {
                client,
                breaker,
                budget,
                backoff,
                max_attempts: settings.max_attempts.get(),
                metrics,
            }),
        }
    }

    /// Enriches one message text; never fails (see [`NlpStatus`] for the
    /// fallbacks). Worst case with defaults: 3 × 300 ms + ~450 ms of backoff.
    ///
    /// Cancel-safe: dropping the future mid-call leaves the breaker untouched
    /// (an unfinished call is neither a success nor a failure).
    pub async fn enrich(&self, text: &str) -> Enrichment {
        self.enrich_with(text, &mut Sleep).await
    }

    /// [`Enricher::enrich`], with each retry back-off waited out by `backoff`.
    pub async fn enrich_with<W: BackoffWait>(&self, text: &str, backoff: &mut W) -> Enrichment {
        let this = &*self.inner;
        let mut attempts = 0;
        loop {
            if attempts > 0 {
                // Ask the budget before waiting: a retry that will not be
                // allowed should not wait (or hold anything) through the backoff.
                if !this.budget.try_withdraw() {
                    this.metrics.error("budget_exhausted");
                    tracing::debug!(attempts, "NLP retry refused by the retry budget");
                    return Enrichment::fallback(NlpStatus::Failed, attempts);
                }
                backoff.wait(this.backoff.jittered(attempts)).await;
            }
            let Some(permit) = this.breaker.try_acquire() else {
                this.metrics.error("breaker_open");
                return Enrichment::fallback(NlpStatus::BreakerOpen, attempts);
            };
            if attempts == 0 {
                this.budget.deposit();
            }
            attempts += 1;
            match self.attempt(permit, text).await {
                Ok(analysis) => return Enrichment::ok(analysis, attempts),
                Err(error) => {
                    tracing::debug!(attempts, %error, "NLP API attempt failed");
                    if !error.is_retryable() || attempts >= this.max_attempts {
                        return Enrichment::fallback(error.final_status(), attempts);
                    }
                }
            }
        }
    }

    /// One attempt, no retry, for work that can wait (re-enriching stored rows): it adds
    /// to the breaker's evidence like any call, but neither draws on nor feeds the retry
    /// budget, which is for live messages.
    pub async fn enrich_once(&self, text: &str) -> Enrichment {
        let this = &*self.inner;
        let Some(permit) = this.breaker.try_acquire() else {
            this.metrics.error("breaker_open");
            return Enrichment::fallback(NlpStatus::BreakerOpen, 0);
        };
        match self.attempt(permit, text).await {
            Ok(analysis) => Enrichment::ok(analysis, 1),
            Err(error) => Enrichment::fallback(error.final_status(), 1),
        }
    }

    /// One HTTP attempt under a breaker permit: timed, and its result told to the breaker
    /// and the metrics.
    async fn attempt(
        &self,
        permit: breaker::Permit,
        text: &str,
    ) -> Result<NlpAnalysis, AttemptError> {
        let this = &*self.inner;
        let started = Instant::now();
        let result = this.client.attempt(text).await;
        this.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => this.breaker.record(permit, false),
            Err(error) => {
                this.breaker.record(permit, error.is_breaker_failure());
                this.metrics.error(error.metric_kind());
            }
        }
        result
    }

    /// The breaker's state now (for health checks and tests).
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }
}
