//! `[auth]`: API keys, and whether an exposed API may run without them.

use std::str::FromStr;

use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    allow_anonymous: bool,
    keys: Vec<RawApiKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    sha256: String,
    /// Omitted: the key may post for every bot.
    #[serde(default = "match_every_bot")]
    bot_ids: Vec<String>,
}

fn match_every_bot() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Who may post.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Bind a non-loopback API with no key at all.
    pub allow_anonymous: bool,
    /// The accepted keys; empty, every request is anonymous.
    pub keys: Vec<ApiKeySettings>,
}

/// One API key as configured: only its SHA-256 is ever stored.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// The key's label in logs and error messages; not secret.
    pub name: String,
    /// SHA-256 of the key: the key itself is never configured.
    pub sha256: KeyHash,
    /// Glob patterns of the `bot_id`s the key may post for; never empty.
    pub bot_ids: Vec<String>,
}

/// The SHA-256 digest of an API key, parsed from its 64 hex digits. Debug output hides
/// it: a digest of a weak key is as good as the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for KeyHash {
    type Err = hex::FromHexError;

    fn from_str(hex_digits: &str) -> Result<Self, Self::Err> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut digest)?;
        Ok(KeyHash(digest))
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl TryFrom<Raw> for AuthSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        Ok(AuthSettings {
            allow_anonymous: raw.allow_anonymous,
            keys: raw
                .keys
                .into_iter()
                .map(ApiKeySettings::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<RawApiKey> for ApiKeySettings {
    type Error = ConfigError;

    /// The value in an error names the key, never its digest.
    fn try_from(raw: RawApiKey) -> Result<Self, ConfigError> {
        let which = format!("<key {:?}>", raw.name);
        let sha256 = raw.sha256.parse().map_err(|_| {
            ConfigError::invalid(
                "auth.keys.sha256",
                &which,
                "must be the 64 hex digits of the key's SHA-256",
            )
        })?;
        if raw.bot_ids.is_empty() {
            return Err(ConfigError::invalid(
                "auth.keys.bot_ids",
                &which,
                "must name at least one bot_id pattern (\"*\" for all)",
            ));
        }
        Ok(ApiKeySettings {
            name: raw.name,
            sha256,
            bot_ids: raw.bot_ids,
        })
    }
}
