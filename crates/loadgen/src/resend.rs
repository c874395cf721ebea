//! Sending a request again with the same message ids: the retries a careful
//! client makes after a 429, a 5xx or no answer at all, and deliberate
//! re-sends of a share of requests whatever their answer, as a client that
//! lost an answer on the way would make.
//!
//! The message ids make both harmless: the API stores an id once however often
//! it arrives. `make chaos` relies on this to check exactly that under faults.
//! Every follow-up goes back through the driver, so it leaves on whichever
//! connection is free, often to another ingest process than the first try.

use std::time::Duration;

use super::client::Outcome;
use super::payload;

/// Longest `Retry-After` honoured: a larger one is cut to this, so a run stays
/// bounded in time.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Wait before retrying a request that got no answer, or a refusal without
/// `Retry-After`.
pub const NO_HINT_BACKOFF: Duration = Duration::from_secs(1);
/// Salt of the deliberate re-send share, so it is drawn independently of the
/// share of messages without `sent_at`.
const RESEND_SALT: u64 = 0x2e5e;

/// Why an attempt was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The scheduled request itself.
    First,
    /// The previous attempt was refused (429, 5xx) or got no answer.
    Retry,
    /// Sent again on purpose, whatever the previous answer was.
    Resend,
}

impl Cause {
    /// Label used in the ledger and the report.
    pub fn label(self) -> &'static str {
        match self {
            Cause::First => "first",
            Cause::Retry => "retry",
            Cause::Resend => "resend",
        }
    }
}

/// What has happened to one request so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Retries already sent.
    pub retries: u32,
    /// Whether its deliberate re-send has been sent.
    pub resent: bool,
}

impl History {
    /// The history once an attempt for `cause` is under way.
    pub fn after(self, cause: Cause) -> History {
        match cause {
            Cause::First => self,
            Cause::Retry => History {
                retries: self.retries + 1,
                ..self
            },
            Cause::Resend => History {
                resent: true,
                ..self
            },
        }
    }
}

/// When requests go out again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResendPolicy {
    /// Retries of one request after a 429, a 5xx or no answer.
    pub retries: u32,
    /// Share of requests (0 to 1) re-sent once on purpose.
    pub resend_ratio: f64,
    /// A deliberate re-send leaves up to this long after the answer it follows
    /// (spread evenly), so some race the first copy through the pipeline and
    /// some come after it was stored.
    pub resend_within: Duration,
}

impl ResendPolicy {
    /// Nothing is ever sent twice.
    #[cfg(test)]
    pub const NONE: ResendPolicy = ResendPolicy {
        retries: 0,
        resend_ratio: 0.0,
        resend_within: Duration::ZERO,
    };

    /// Whether any request may go out more than once.
    pub fn is_active(&self) -> bool {
        self.retries > 0 || self.resend_ratio > 0.0
    }

    /// The next attempt after one that ended with `outcome`: how long to wait
    /// and why; `None` when request `seq` is finished.
    pub fn next(&self, seq: u64, history: History, outcome: &Outcome) -> Option<(Duration, Cause)> {
        if let Some(wait) = retry_wait(outcome) {
            if history.retries < self.retries {
                return Some((wait, Cause::Retry));
            }
        }
        if !history.resent && payload::in_share(seq, RESEND_SALT, self.resend_ratio) {
            return Some((self.resend_wait(seq), Cause::Resend));
        }
        None
    }

    /// The longest one request's follow-ups can keep a run going after its
    /// first attempt ended, each follow-up taking up to `timeout`.
    pub fn longest_follow_up(&self, timeout: Duration) -> Duration {
        let retries = (MAX_RETRY_AFTER + timeout) * self.retries;
        if self.resend_ratio > 0.0 {
            retries + self.resend_within + timeout
        } else {
            retries
        }
    }

    fn resend_wait(&self, seq: u64) -> Duration {
        // A second hash of the same request: the part of the window it waits.
        self.resend_within
            .mul_f64(payload::fraction(seq, RESEND_SALT + 1))
    }
}

/// How long to wait before retrying after `outcome`; `None` when a retry
/// would not help (accepted, or the request itself is wrong).
fn retry_wait(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Answered(r) if r.status == 429 || r.status >= 500 => Some(
            r.retry_after_secs
                .map_or(NO_HINT_BACKOFF, Duration::from_secs)
                .min(MAX_RETRY_AFTER),
        ),
        Outcome::Answered(_) => None,
        Outcome::Failed(_) => Some(NO_HINT_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::{FailureKind, Response};
    use super::*;

    fn answer(status: u16, retry_after_secs: Option<u64>) -> Outcome {
        Outcome::Answered(Response {
            status,
            retry_after: retry_after_secs.is_some(),
            retry_after_secs,
            keep_alive: true,
        })
    }

    fn policy(retries: u32, resend_ratio: f64) -> ResendPolicy {
        ResendPolicy {
            retries,
            resend_ratio,
            resend_within: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_refusal_is_retried_after_its_retry_after() {
        let p = policy(2, 0.0);
        let h = History::default();
        assert_eq!(
            p.next(1, h, &answer(503, Some(5))),
            Some((Duration::from_secs(5), Cause::Retry))
        );
        assert_eq!(
            p.next(1, h, &answer(429, None)),
            Some((NO_HINT_BACKOFF, Cause::Retry))
        );
        assert_eq!(
            p.next(1, h, &answer(503, Some(3600))),
            Some((MAX_RETRY_AFTER, Cause::Retry))
        );
        assert_eq!(
            p.next(1, h, &Outcome::Failed(FailureKind::Timeout)),
            Some((NO_HINT_BACKOFF, Cause::Retry))
        );
    }

    #[test]
    fn accepted_and_invalid_requests_are_not_retried_and_retries_run_out() {
        let p = policy(2, 0.0);
        let h = History::default();
        assert_eq!(p.next(1, h, &answer(202, None)), None);
        assert_eq!(p.next(1, h, &answer(400, None)), None);
        let spent = h.after(Cause::Retry).after(Cause::Retry);
        assert_eq!(spent.retries, 2);
        assert_eq!(p.next(1, spent, &answer(503, Some(1))), None);
        assert_eq!(policy(0, 0.0).next(1, h, &answer(503, Some(1))), None);
    }

    #[test]
    fn a_share_of_requests_is_resent_once_within_the_window() {
        let p = policy(0, 0.25);
        let accepted = answer(202, None);
        let resent: Vec<Duration> = (0..4_000)
            .filter_map(|seq| p.next(seq, History::default(), &accepted))
            .map(|(wait, cause)| {
                assert_eq!(cause, Cause::Resend);
                wait
            })
            .collect();
        assert!((900..=1_100).contains(&resent.len()), "{}", resent.len());
        assert!(resent.iter().all(|w| *w < Duration::from_secs(3)));
        assert!(resent.iter().any(|w| *w < Duration::from_secs(1)));
        assert!(resent.iter().any(|w| *w > Duration::from_secs(2)));
        let done = History::default().after(Cause::Resend);
        assert!((0..4_000).all(|seq| p.next(seq, done, &accepted).is_none()));
    }

    #[test]
    fn a_failed_resend_is_retried_like_any_request() {
        let p = policy(1, 1.0);
        let h = History::default().after(Cause::Resend);
        assert_eq!(
            p.next(7, h, &answer(503, Some(2))),
            Some((Duration::from_secs(2), Cause::Retry))
        );
        assert!(p.is_active());
        assert!(!ResendPolicy::NONE.is_active());
    }

    #[test]
    fn the_longest_follow_up_bounds_every_wait() {
        let timeout = Duration::from_secs(10);
        // One retry (Retry-After capped at 10 s, then up to 10 s for the answer),
        // then the re-send (up to 3 s later, up to 10 s for the answer).
        assert_eq!(
            policy(1, 0.5).longest_follow_up(timeout),
            Duration::from_secs(33)
        );
        assert_eq!(
            policy(2, 0.0).longest_follow_up(timeout),
            Duration::from_secs(40)
        );
        assert_eq!(
            ResendPolicy::NONE.longest_follow_up(timeout),
            Duration::ZERO
        );
    }
}
