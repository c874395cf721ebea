//! What one enrichment produced, and why an attempt failed.
//!
//! The worker stores an [`Enrichment`] whatever happened: either the NLP fields
//! or a fallback whose [`NlpStatus`] tells analysts (and `reenrich`) why the
//! row has none. [`AttemptError`] is the one place that decides, per failure,
//! whether to retry and whether the circuit breaker should hear about it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::{NlpDocument, NlpStatus};

/// Sentiment labels the NLP contract allows.
const SENTIMENT_LABELS: [&str; 3] = ["positive", "neutral", "negative"];

/// A validated NLP answer: every field is inside the contract's ranges, so
/// storage and analysts can trust it without checking again.
#[derive(Debug, Clone, PartialEq)]
pub struct NlpAnalysis {
    /// `positive`, `neutral` or `negative`.
    pub sentiment_label: String,
    /// In `-1.0..=1.0`.
    pub sentiment_score: f32,
    /// In `0.0..=1.0`.
    pub toxicity: f32,
    /// ISO 639-1 two-letter lowercase code, or `und` when unknown.
    pub language: String,
    /// Keywords as the API returned them.
    pub keywords: Vec<String>,
    /// The whole response body, kept for the `nlp` jsonb column so fields the
    /// contract adds later are not lost.
    pub raw: NlpDocument,
}

/// The wire shape of the answer; extra fields are allowed (kept in `raw`).
#[derive(Deserialize)]
struct WireAnalysis {
    sentiment: WireSentiment,
    toxicity: f64,
    language: String,
    keywords: Vec<String>,
}

#[derive(Deserialize)]
struct WireSentiment {
    label: String,
    score: f64,
}

impl NlpAnalysis {
    /// Parses a response body: not JSON is [`AttemptError::Decode`]; any field
    /// missing, mistyped or out of range is [`AttemptError::Invalid`] naming it.
    /// The fields are read straight into their types, and the body is kept as
    /// text rather than as a JSON tree: building that tree and writing it out
    /// again cost a tenth of the worker's CPU per message.
    pub fn from_body(body: &[u8]) -> Result<NlpAnalysis, AttemptError> {
        let raw: Box<RawValue> =
            serde_json::from_slice(body).map_err(|e| AttemptError::Decode(e.to_string()))?;
        let wire: WireAnalysis = serde_json::from_str(raw.get())
            .map_err(|e| AttemptError::Invalid(format!("response shape: {e}")))?;
        let label = wire.sentiment.label;
        if !SENTIMENT_LABELS.contains(&label.as_str()) {
            return Err(AttemptError::Invalid(format!(
                "sentiment.label {label:?} is not one of {SENTIMENT_LABELS:?}"
            )));
        }
        let score = in_range("sentiment.score", wire.sentiment.score, -1.0, 1.0)?;
        let toxicity = in_range("toxicity", wire.toxicity, 0.0, 1.0)?;
        if !is_language_code(&wire.language) {
            return Err(AttemptError::Invalid(format!(
                "language {:?} is not a two-letter ISO 639-1 code or \"und\"",
                wire.language
            )));
        }
        Ok(NlpAnalysis {
            sentiment_label: label,
            sentiment_score: score,
            toxicity,
            language: wire.language,
            keywords: wire.keywords,
            raw: raw.into(),
        })
    }
}

fn in_range(field: &str, value: f64, min: f64, max: f64) -> Result<f32, AttemptError> {
    if (min..=max).contains(&value) {
        Ok(value as f32)
    } else {
        Err(AttemptError::Invalid(format!(
            "{field} {value} is outside {min}..={max}"
        )))
    }
}

fn is_language_code(code: &str) -> bool {
    code == "und" || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()))
}

/// What one enrichment produced: the worker stores this whatever happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrichment {
    /// Why the row has (or lacks) NLP data.
    pub status: NlpStatus,
    /// Present exactly when `status` is [`NlpStatus::Ok`].
    pub analysis: Option<NlpAnalysis>,
    /// HTTP attempts made (0 when the breaker refused the first one).
    pub attempts: u32,
}

impl Enrichment {
    /// A successful enrichment.
    pub fn ok(analysis: NlpAnalysis, attempts: u32) -> Enrichment {
        Enrichment {
            status: NlpStatus::Ok,
            analysis: Some(analysis),
            attempts,
        }
    }

    /// A message to store without NLP data, with the reason.
    pub fn fallback(status: NlpStatus, attempts: u32) -> Enrichment {
        Enrichment {
            status,
            analysis: None,
            attempts,
        }
    }
}

/// Why one HTTP attempt failed.
///
/// | error             | retried | breaker failure | `nlp_api_errors_total{kind}` |
/// |-------------------|---------|-----------------|------------------------------|
/// | `Timeout`         | yes     | yes             | `timeout`                    |
/// | `Connect`         | yes     | yes             | `connect`                    |
/// | `Status(5xx)`     | yes     | yes             | `status_5xx`                 |
/// | `Status(429)`     | yes     | yes             | `status_4xx`                 |
/// | `Status(other)`   | no      | no              | `status_4xx` / `invalid`     |
/// | `Decode`          | no      | no              | `invalid`                    |
/// | `Invalid`         | no      | no              | `invalid`                    |
///
/// Breaker failures are signs of the dependency's health (slow, down,
/// overloaded: 429 is the API shedding load, so it counts). A 4xx or a body
/// outside the contract means *our* request or the API's code is wrong; the
/// API answered, so for the breaker that attempt counts as a success, and
/// opening the breaker would only hide the bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// No complete answer within the per-attempt timeout.
    #[error("NLP API did not answer within the attempt timeout")]
    Timeout,
    /// Could not connect, or the connection broke before a full response.
    #[error("NLP API connection failed: {0}")]
    Connect(String),
    /// The API answered with a non-2xx HTTP status.
    #[error("NLP API answered HTTP {0}")]
    Status(u16),
    /// The body is not JSON.
    #[error("NLP API body is not JSON: {0}")]
    Decode(String),
    /// The body is JSON but outside the contract (shape, range, size).
    #[error("NLP API answer is outside the contract: {0}")]
    Invalid(String),
}

impl AttemptError {
    /// Whether another attempt could plausibly succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Timeout | AttemptError::Connect(_) => true,
            AttemptError::Status(code) => *code == 429 || (500..=599).contains(code),
            AttemptError::Decode(_) | AttemptError::Invalid(_) => false,
        }
    }

    /// Whether the circuit breaker should count this as the dependency failing.
    pub fn is_breaker_failure(&self) -> bool {
        // Same set as the retryable one today; kept separate because the two
        // questions differ (a future error kind may be one and not the other).
        match self {
            AttemptError::Timeout | AttemptError::Connect(_) => true,
            AttemptError::Status(code) => *code == 429 || (500..=599).contains(code),
            AttemptError::Decode(_) | AttemptError::Invalid(_) => false,
        }
    }

    /// The `kind` label of `nlp_api_errors_total` for this error.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            AttemptError::Timeout => "timeout",
            AttemptError::Connect(_) => "connect",
            AttemptError::Status(code) if (500..=599).contains(code) => "status_5xx",
            AttemptError::Status(code) if (400..=499).contains(code) => "status_4xx",
            AttemptError::Status(_) | AttemptError::Decode(_) | AttemptError::Invalid(_) => {
                "invalid"
            }
        }
    }

    /// The fallback status when this error ends the enrichment.
    pub fn final_status(&self) -> NlpStatus {
        if self.is_retryable() {
            NlpStatus::Failed
        } else {
            NlpStatus::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn from_json(raw: &Value) -> Result<NlpAnalysis, AttemptError> {
        NlpAnalysis::from_body(raw.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({
            "sentiment": {"label": "negative", "score": -0.75},
            "toxicity": 0.25,
            "language": "en",
            "keywords": ["refund", "late"],
            "model": "lexicon-v1"
        })
    }

    fn invalid_reason(raw: Value) -> String {
        match from_json(&raw) {
            Err(AttemptError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_answer_parses_with_every_field_and_keeps_raw() {
        let a = from_json(&valid()).expect("valid");
        assert_eq!(a.sentiment_label, "negative");
        assert_eq!(a.sentiment_score, -0.75);
        assert_eq!(a.toxicity, 0.25);
        assert_eq!(a.language, "en");
        assert_eq!(a.keywords, ["refund", "late"]);
        let raw: Value = serde_json::from_str(a.raw.as_raw().get()).expect("JSON");
        assert_eq!(raw, valid());
    }

    #[test]
    fn und_and_range_edges_are_valid() {
        let mut raw = valid();
        raw["language"] = json!("und");
        raw["sentiment"]["score"] = json!(1.0);
        raw["toxicity"] = json!(0.0);
        raw["keywords"] = json!([]);
        assert!(from_json(&raw).is_ok());
    }

    #[test]
    fn out_of_contract_answers_are_invalid_and_name_the_field() {
        let cases: [(&str, Value, &str); 8] = [
            ("/sentiment/label", json!("angry"), "sentiment.label"),
            ("/sentiment/score", json!(1.5), "sentiment.score"),
            ("/sentiment/score", json!(-1.01), "sentiment.score"),
            ("/toxicity", json!(-0.1), "toxicity"),
            ("/toxicity", json!(2), "toxicity"),
            ("/language", json!("EN"), "language"),
            ("/language", json!("eng"), "language"),
            ("/keywords", json!([1, 2]), "shape"),
        ];
        for (pointer, value, expected) in cases {
            let mut raw = valid();
            *raw.pointer_mut(pointer).expect("pointer") = value.clone();
            let reason = invalid_reason(raw);
            assert!(
                reason.contains(expected),
                "{pointer}={value}: {reason:?} should name {expected}"
            );
        }
    }

    #[test]
    fn missing_fields_are_invalid() {
        for field in ["sentiment", "toxicity", "language", "keywords"] {
            let mut raw = valid();
            raw.as_object_mut().expect("object").remove(field);
            assert!(invalid_reason(raw).contains(field));
        }
        invalid_reason(json!([1, 2, 3]));
    }

    #[test]
    fn a_body_that_is_not_json_is_a_decode_error() {
        for body in [&b"not json"[..], b"{\"sentiment\":", b""] {
            assert!(
                matches!(NlpAnalysis::from_body(body), Err(AttemptError::Decode(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn classification_table() {
        use AttemptError::*;
        let table: [(AttemptError, bool, bool, &str, NlpStatus); 9] = [
            (Timeout, true, true, "timeout", NlpStatus::Failed),
            (
                Connect("refused".into()),
                true,
                true,
                "connect",
                NlpStatus::Failed,
            ),
            (Status(500), true, true, "status_5xx", NlpStatus::Failed),
            (Status(503), true, true, "status_5xx", NlpStatus::Failed),
            (Status(429), true, true, "status_4xx", NlpStatus::Failed),
            (Status(400), false, false, "status_4xx", NlpStatus::Rejected),
            (Status(302), false, false, "invalid", NlpStatus::Rejected),
            (
                Decode("eof".into()),
                false,
                false,
                "invalid",
                NlpStatus::Rejected,
            ),
            (
                Invalid("x".into()),
                false,
                false,
                "invalid",
                NlpStatus::Rejected,
            ),
        ];
        for (err, retry, breaker, kind, status) in table {
            assert_eq!(err.is_retryable(), retry, "{err:?} retryable");
            assert_eq!(err.is_breaker_failure(), breaker, "{err:?} breaker");
            assert_eq!(err.metric_kind(), kind, "{err:?} kind");
            assert_eq!(err.final_status(), status, "{err:?} status");
        }
    }
}
