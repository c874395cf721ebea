//! `[postgres]`: the database and the connection pool.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::value::{positive, positive_millis};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    url: SecretUrl,
    pool_size: usize,
    connect_timeout_ms: u64,
}

/// The database and how many connections to keep to it.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// A valid libpq connection string or URL.
    pub url: SecretUrl,
    /// Most connections open at once; `storage.concurrent_batches` may not exceed it.
    pub pool_size: NonZeroUsize,
    /// Bounds connecting, and waiting for a pooled connection.
    pub connect_timeout: Duration,
}

/// Connection string wrapped so it never ends up in logs with its password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a connection string (tests use it to point at their own database).
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The connection string in clear, for the driver only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted url>")
    }
}

impl TryFrom<Raw> for PostgresSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if raw.url.expose().parse::<tokio_postgres::Config>().is_err() {
            return Err(ConfigError::invalid(
                "postgres.url",
                "<redacted>",
                "not a valid PostgreSQL connection string",
            ));
        }
        Ok(PostgresSettings {
            url: raw.url,
            pool_size: positive("postgres.pool_size", raw.pool_size)?,
            connect_timeout: positive_millis(
                "postgres.connect_timeout_ms",
                raw.connect_timeout_ms,
            )?,
        })
    }
}
