//! Field types that can only hold valid values ("parse, don't validate").
//!
//! Deserialising one of these (for example from a Kafka envelope) runs the same checks
//! as the HTTP edge, so a value that crossed a process boundary is re-proven, not trusted.

use serde::{Deserialize, Serialize};

/// Why a field value was refused; `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// Stable reason, the `code` of the API's 400: `invalid_length`, `invalid_characters`,
    /// `invalid_type` or `too_large`.
    pub code: &'static str,
    /// The rule the value broke, for people, e.g. `must be 1-128 characters`.
    pub message: String,
}

impl FieldError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            code,
            message: message.into(),
        }
    }
}

/// Longest `bot_id`, in characters (ASCII only, so also bytes).
pub const MAX_BOT_ID_CHARS: usize = 128;
/// Longest `conversation_id` or `user_id`, in Unicode characters.
pub const MAX_LABEL_CHARS: usize = 128;
/// Longest message text, in Unicode characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Largest `metadata` object, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// `bot_id`: 1-128 characters of `[A-Za-z0-9._:-]`. Also the Kafka key, so one bot's
/// messages stay in order on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BotId(String);

impl BotId {
    /// Accepts 1-128 characters of `[A-Za-z0-9._:-]`.
    pub fn parse(raw: String) -> Result<BotId, FieldError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if raw.is_empty() || raw.len() > MAX_BOT_ID_CHARS {
            return Err(FieldError::new(
                "invalid_length",
                format!("must be 1-{MAX_BOT_ID_CHARS} characters"),
            ));
        }
        if !raw.bytes().all(allowed) {
            return Err(FieldError::new(
                "invalid_characters",
                "may only contain A-Z, a-z, 0-9 and . _ : -",
            ));
        }
        Ok(BotId(raw))
    }

    /// The id as the client sent it; also the Kafka record key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BotId {
    type Error = FieldError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        BotId::parse(raw)
    }
}

impl From<BotId> for String {
    fn from(id: BotId) -> String {
        id.0
    }
}

/// Message body: 1-4096 Unicode characters (not bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageText(String);

impl MessageText {
    /// Accepts 1-4096 Unicode characters without NUL (which Postgres `text` cannot hold).
    pub fn parse(raw: String) -> Result<MessageText, FieldError> {
        // Postgres text cannot hold NUL; refusing it here keeps a 202 storable.
        if raw.contains('\0') {
            return Err(FieldError::new(
                "invalid_characters",
                "must not contain NUL characters",
            ));
        }
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(FieldError::new(
                "invalid_length",
                format!("must be 1-{MAX_TEXT_CHARS} characters (got {chars})"),
            ));
        }
        Ok(MessageText(raw))
    }

    /// The text as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageText {
    type Error = FieldError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        MessageText::parse(raw)
    }
}

impl From<MessageText> for String {
    fn from(t: MessageText) -> String {
        t.0
    }
}

/// `conversation_id` / `user_id`: free-form, at most 128 characters, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// Accepts up to 128 Unicode characters without NUL; empty is allowed.
    pub fn parse(raw: String) -> Result<Label, FieldError> {
        if raw.contains('\0') {
            return Err(FieldError::new(
                "invalid_characters",
                "must not contain NUL characters",
            ));
        }
        if raw.chars().count() > MAX_LABEL_CHARS {
            return Err(FieldError::new(
                "invalid_length",
                format!("must be at most {MAX_LABEL_CHARS} characters"),
            ));
        }
        Ok(Label(raw))
    }

    /// The label as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = FieldError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Label::parse(raw)
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}

/// Client metadata: a JSON object of at most 4 KiB serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

impl Metadata {
    /// Accepts a JSON object of at most 4096 bytes serialised, without NUL in any key or
    /// string (which `jsonb` cannot hold).
    pub fn parse(raw: serde_json::Value) -> Result<Metadata, FieldError> {
        let serde_json::Value::Object(map) = raw else {
            return Err(FieldError::new("invalid_type", "must be a JSON object"));
        };
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(FieldError::new(
                "too_large",
                format!("must be at most {MAX_METADATA_BYTES} bytes serialized (got {size})"),
            ));
        }
        if contains_nul(&map) {
            return Err(FieldError::new(
                "invalid_characters",
                "must not contain NUL characters (not storable as jsonb)",
            ));
        }
        Ok(Metadata(map))
    }

    /// The object, as stored in the `metadata` jsonb column.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

fn contains_nul(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    fn value_has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(value_has_nul),
            serde_json::Value::Object(m) => contains_nul(m),
            _ => false,
        }
    }
    map.iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v))
}

impl TryFrom<serde_json::Value> for Metadata {
    type Error = FieldError;
    fn try_from(raw: serde_json::Value) -> Result<Self, Self::Error> {
        Metadata::parse(raw)
    }
}

impl From<Metadata> for serde_json::Value {
    fn from(m: Metadata) -> serde_json::Value {
        serde_json::Value::Object(m.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_id_accepts_the_documented_alphabet() {
        assert!(BotId::parse("Bot_1.eu-west:7".into()).is_ok());
        assert!(BotId::parse("a".repeat(128)).is_ok());
    }

    #[test]
    fn bot_id_rejects_empty_long_and_foreign_characters() {
        assert_eq!(
            BotId::parse(String::new()).unwrap_err().code,
            "invalid_length"
        );
        assert_eq!(
            BotId::parse("a".repeat(129)).unwrap_err().code,
            "invalid_length"
        );
        for bad in ["a b", "bot/1", "bôt", "a\n"] {
            assert_eq!(
                BotId::parse(bad.into()).unwrap_err().code,
                "invalid_characters",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(MessageText::parse("é".repeat(4096)).is_ok());
        assert!(MessageText::parse("é".repeat(4097)).is_err());
        assert!(MessageText::parse(String::new()).is_err());
        assert!(MessageText::parse("a\0b".into()).is_err());
    }

    #[test]
    fn label_limit_is_128_characters() {
        assert!(Label::parse("x".repeat(128)).is_ok());
        assert!(Label::parse("x".repeat(129)).is_err());
        assert!(Label::parse(String::new()).is_ok());
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(Metadata::parse(serde_json::json!({"a": 1})).is_ok());
        assert_eq!(
            Metadata::parse(serde_json::json!([1])).unwrap_err().code,
            "invalid_type"
        );
        let big = serde_json::json!({ "k": "x".repeat(4096) });
        assert_eq!(Metadata::parse(big).unwrap_err().code, "too_large");
        let nul = serde_json::json!({ "k": ["a\u{0}"] });
        assert_eq!(Metadata::parse(nul).unwrap_err().code, "invalid_characters");
    }

    #[test]
    fn deserialising_revalidates() {
        let bad: Result<BotId, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.is_err());
        let good: BotId = serde_json::from_str("\"b1\"").expect("valid");
        assert_eq!(good.as_str(), "b1");
    }
}
