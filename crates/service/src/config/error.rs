//! The one error a configuration can fail with.

use std::path::PathBuf;

/// A configuration that cannot be used. A bad value names its key, the value and what a
/// valid one looks like; the process exits with `EX_USAGE` on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Unreadable {
        /// The file as given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not even the raw shape: an unknown key, or a value of the wrong type (the message
    /// of the `config` crate names the key and the value).
    #[error("invalid configuration: {0}")]
    Parse(#[from] config::ConfigError),
    /// A value of the right type that breaks a rule: a range, a format, or a rule tying
    /// two sections together.
    #[error("invalid configuration: `{key}` = {value:?}: {reason}")]
    Invalid {
        /// Config path of the key, e.g. `nlp.max_attempts`.
        key: &'static str,
        /// The rejected value as written (or a placeholder for a secret).
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
}

impl ConfigError {
    pub(super) fn invalid(
        key: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
