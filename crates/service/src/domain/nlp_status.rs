//! Why a stored message has (or lacks) NLP data: enrichment decides it, storage keeps
//! it, analysts and re-enrichment filter on it.

/// Why a message has (or lacks) NLP data; stored in the `nlp_status` column.
///
/// The strings from [`NlpStatus::as_str`] are a storage contract: rows keep
/// them forever and analysts filter on them, so they never change.
///
/// | variant       | `nlp_status`           | meaning                                       |
/// |---------------|------------------------|-----------------------------------------------|
/// | `Ok`          | `ok`                   | analysed; NLP columns filled                  |
/// | `BreakerOpen` | `breaker_open`         | not called: breaker open / half-open rejected |
/// | `Failed`      | `failed_after_retries` | transient failures until attempts or retry budget ran out |
/// | `Rejected`    | `invalid_response`     | 4xx or a body outside the contract; not retried |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NlpStatus {
    /// The API answered with a valid analysis.
    Ok,
    /// The circuit breaker refused the call (open, or not picked for a
    /// half-open trial): the API was not asked, the message was not delayed.
    /// Also used when the breaker opened between two attempts of one message
    /// (then `attempts` > 0).
    BreakerOpen,
    /// Every attempt failed with a transient error (timeout, connection, 5xx,
    /// 429), or the retry budget allowed no further attempt. Worth re-enriching.
    Failed,
    /// The API refused the request (4xx other than 429) or answered something
    /// outside the contract. Repeating the same request would not help.
    Rejected,
}

impl NlpStatus {
    /// Every status, for exhaustive tests and metric/label pre-registration.
    pub const ALL: [NlpStatus; 4] = [
        NlpStatus::Ok,
        NlpStatus::BreakerOpen,
        NlpStatus::Failed,
        NlpStatus::Rejected,
    ];

    /// The stable string stored in Postgres `messages.nlp_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            NlpStatus::Ok => "ok",
            NlpStatus::BreakerOpen => "breaker_open",
            NlpStatus::Failed => "failed_after_retries",
            NlpStatus::Rejected => "invalid_response",
        }
    }

    /// Reads back a stored `nlp_status` (e.g. for `reenrich`); `None` if unknown.
    pub fn parse(s: &str) -> Option<NlpStatus> {
        NlpStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
    }

    /// True when the message is stored without NLP data.
    pub fn is_fallback(self) -> bool {
        self != NlpStatus::Ok
    }
}

impl std::fmt::Display for NlpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_are_the_storage_contract() {
        let strings: Vec<_> = NlpStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            strings,
            [
                "ok",
                "breaker_open",
                "failed_after_retries",
                "invalid_response"
            ]
        );
        for status in NlpStatus::ALL {
            assert_eq!(NlpStatus::parse(status.as_str()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!(NlpStatus::parse("nope"), None);
        assert!(!NlpStatus::Ok.is_fallback());
        assert!(NlpStatus::BreakerOpen.is_fallback());
    }
}
