//! API keys: `Authorization: Bearer KEY`, looked up by SHA-256 (keys are never stored in
//! clear), each limited to the bot_id patterns it was issued for.
//!
//! API keys are long random tokens, so a fast hash is enough (no password stretching);
//! the comparison is constant-time so response timing says nothing about near misses.

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::ApiKeySettings;
use crate::domain::BotId;

/// An `auth.keys` entry that cannot be turned into a key matcher.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A `bot_ids` glob does not compile.
    #[error("auth.keys: key {name:?} has an invalid bot_ids pattern {pattern:?}: {source}")]
    BadPattern {
        /// The key's name.
        name: String,
        /// The pattern at fault (the key's patterns joined by commas when the set as a whole
        /// fails).
        pattern: String,
        /// The glob parser's error.
        source: globset::Error,
    },
}

struct ApiKey {
    name: String,
    hash: [u8; 32],
    bots: GlobSet,
}

/// The configured keys; when empty, the API is open (loopback or explicit opt-in only,
/// enforced by config validation).
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

/// Who a request authenticated as.
pub enum Caller<'a> {
    Anonymous,
    Key { name: &'a str, bots: &'a GlobSet },
}

impl Caller<'_> {
    /// A key may only post for the bots it was issued for.
    pub fn may_post_for(&self, bot: &BotId) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous => Ok(()),
            Caller::Key { name, bots } if bots.is_match(bot.as_str()) => {
                tracing::trace!(key = name, bot = bot.as_str(), "key allowed");
                Ok(())
            }
            Caller::Key { .. } => Err(ApiError::unauthorized(
                "bot_not_allowed",
                format!("this API key may not post for bot_id {:?}", bot.as_str()),
            )),
        }
    }
}

impl ApiKeys {
    /// Compiles each key's `bot_ids` globs; a key is kept only as its SHA-256.
    pub fn from_settings(settings: &[ApiKeySettings]) -> Result<ApiKeys, AuthConfigError> {
        let keys = settings
            .iter()
            .map(|k| {
                let mut bots = GlobSetBuilder::new();
                for pattern in &k.bot_ids {
                    let glob =
                        Glob::new(pattern).map_err(|source| AuthConfigError::BadPattern {
                            name: k.name.clone(),
                            pattern: pattern.clone(),
                            source,
                        })?;
                    bots.add(glob);
                }
                let bots = bots.build().map_err(|source| AuthConfigError::BadPattern {
                    name: k.name.clone(),
                    pattern: k.bot_ids.join(","),
                    source,
                })?;
                Ok(ApiKey {
                    name: k.name.clone(),
                    hash: *k.sha256.as_bytes(),
                    bots,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ApiKeys { keys })
    }

    /// Checks the `Authorization` header value, when keys are configured.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller<'_>, ApiError> {
        if self.keys.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let Some(header) = header else {
            return Err(ApiError::unauthorized(
                "missing_api_key",
                "this API needs an Authorization: Bearer <key> header",
            ));
        };
        let token = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_api_key",
                    "Authorization must be of the form: Bearer <key>",
                )
            })?;
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Check every key so the time taken does not depend on which one matched.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found
            .map(|k| Caller::Key {
                name: &k.name,
                bots: &k.bots,
            })
            .ok_or_else(|| ApiError::unauthorized("invalid_api_key", "the API key is not valid"))
    }
}

/// The hex SHA-256 to put in `auth.keys` for a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::from_settings(&[ApiKeySettings {
            name: "support".into(),
            sha256: hash_key("s3cret").parse().expect("hex digest"),
            bot_ids: vec!["support-*".into(), "helpdesk".into()],
        }])
        .expect("valid keys")
    }

    fn bot(id: &str) -> BotId {
        BotId::parse(id.into()).expect("valid")
    }

    #[test]
    fn no_keys_means_open() {
        let open = ApiKeys::from_settings(&[]).expect("empty");
        assert!(matches!(open.authenticate(None), Ok(Caller::Anonymous)));
    }

    #[test]
    fn missing_or_wrong_key_is_refused() {
        let k = keys();
        assert_eq!(
            k.authenticate(None).err().map(|e| e.code),
            Some("missing_api_key")
        );
        assert_eq!(
            k.authenticate(Some(b"Basic abc")).err().map(|e| e.code),
            Some("missing_api_key")
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer nope")).err().map(|e| e.code),
            Some("invalid_api_key")
        );
    }

    #[test]
    fn a_key_is_limited_to_its_bot_patterns() {
        let k = keys();
        let caller = k.authenticate(Some(b"Bearer s3cret")).expect("valid key");
        assert!(caller.may_post_for(&bot("support-eu-1")).is_ok());
        assert!(caller.may_post_for(&bot("helpdesk")).is_ok());
        let err = caller.may_post_for(&bot("sales-1")).expect_err("other bot");
        assert_eq!(err.code, "bot_not_allowed");
        assert_eq!(err.status, hyper::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
