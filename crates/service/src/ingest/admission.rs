//! Deciding whether a request may publish now: a cap on publishes in flight (429 from
//! 90% of capacity, so the last 10% absorbs bursts already admitted) and an optional
//! per-bot rate limit.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::error::ApiError;
use crate::config::ApiSettings;
use crate::domain::BotId;

/// Share of `kafka.max_in_flight` at which new publishes are refused.
const ADMIT_UP_TO: f64 = 0.9;

/// Decides whether a request may publish now: a cap on publishes in flight and the
/// optional per-bot rate limit. Shared by every connection of the API.
pub struct Admission {
    in_flight: Arc<Semaphore>,
    limit: u32,
    per_bot: Option<DefaultKeyedRateLimiter<String>>,
    retry_after_secs: u32,
}

/// Held while a request's publishes are in flight; dropping it frees the slots.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// Admits publishes up to 90% of `max_in_flight` (`kafka.max_in_flight`) and applies
    /// `api.per_bot_limit` when set; a refusal is a 429 with
    /// `api.retry_after_overloaded_secs`.
    pub fn new(max_in_flight: usize, api: &ApiSettings) -> Admission {
        let limit = ((max_in_flight as f64) * ADMIT_UP_TO).floor().max(1.0) as u32;
        let per_bot = api.per_bot_limit.map(|limit| {
            RateLimiter::keyed(Quota::per_second(limit.rate).allow_burst(limit.burst))
        });
        Admission {
            in_flight: Arc::new(Semaphore::new(limit as usize)),
            limit,
            per_bot,
            retry_after_secs: api.retry_after_overloaded_secs,
        }
    }

    /// Reserves room for `count` publishes, or answers 429.
    pub fn admit(&self, count: usize) -> Result<Admitted, ApiError> {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        match self.in_flight.clone().try_acquire_many_owned(count) {
            Ok(permit) => Ok(Admitted { _permit: permit }),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => {
                Err(ApiError::too_many_requests(
                    "overloaded",
                    format!(
                        "too many messages in flight (limit {}); retry later",
                        self.limit
                    ),
                    self.retry_after_secs,
                ))
            }
        }
    }

    /// Applies the per-bot rate limit, when configured.
    pub fn check_rate(&self, bot: &BotId, count: usize) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_bot else {
            return Ok(());
        };
        let n =
            NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&bot.as_str().to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(ApiError::too_many_requests(
                "rate_limited",
                format!("bot_id {:?} is over its rate limit", bot.as_str()),
                self.retry_after_secs,
            )),
        }
    }

    /// Forgets bots that have been idle long enough to be back at full burst, so the
    /// limiter's memory follows active bots rather than every bot ever seen.
    pub fn forget_idle_bots(&self) {
        if let Some(limiter) = &self.per_bot {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Publishes admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.limit as usize - self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PerBotLimit, Settings};

    fn api(per_bot_limit: Option<PerBotLimit>) -> ApiSettings {
        ApiSettings {
            per_bot_limit,
            ..Settings::load_from(None, Vec::new())
                .expect("defaults load")
                .api
        }
    }

    #[test]
    fn refuses_from_ninety_percent_of_capacity() {
        let admission = Admission::new(100, &api(None));
        let held: Vec<_> = (0..90).map(|_| admission.admit(1).expect("room")).collect();
        assert_eq!(admission.in_flight(), 90);
        let err = admission.admit(1).err().expect("full");
        assert_eq!(err.status, hyper::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after_secs, Some(1));
        drop(held);
        assert!(admission.admit(90).is_ok());
        assert!(admission.admit(91).is_err());
    }

    #[test]
    fn per_bot_limit_only_hits_the_busy_bot() {
        let admission = Admission::new(
            100,
            &api(Some(PerBotLimit {
                rate: NonZeroU32::MIN,
                burst: NonZeroU32::new(3).expect("not zero"),
            })),
        );
        let busy = BotId::parse("busy".into()).expect("valid");
        let quiet = BotId::parse("quiet".into()).expect("valid");
        for _ in 0..3 {
            admission.check_rate(&busy, 1).expect("within burst");
        }
        assert_eq!(
            admission.check_rate(&busy, 1).expect_err("over").code,
            "rate_limited"
        );
        assert!(admission.check_rate(&quiet, 1).is_ok());
        assert!(
            admission.check_rate(&quiet, 10).is_err(),
            "more than the burst at once"
        );
    }
}
