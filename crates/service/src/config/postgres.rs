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
    analyst_password: Secret,
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
    /// Password `migrate` gives the read-only role `chat_analyst`; read it through
    /// [`PostgresSettings::analyst_password`].
    analyst_password: Secret,
}

/// The default analyst password: fine for a database on this machine only.
const DEFAULT_ANALYST_PASSWORD: &str = "analyst";

impl PostgresSettings {
    /// The `chat_analyst` password, refused while it is still the default and the database
    /// is reachable from elsewhere than loopback.
    pub fn analyst_password(&self) -> Result<&Secret, ConfigError> {
        let on_loopback = self
            .url
            .expose()
            .parse::<tokio_postgres::Config>()
            .map(|config| {
                config.get_hosts().iter().all(|host| match host {
                    tokio_postgres::config::Host::Tcp(name) => {
                        name == "localhost"
                            || name
                                .parse::<std::net::IpAddr>()
                                .is_ok_and(|ip| ip.is_loopback())
                    }
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(_) => true,
                })
            })
            .unwrap_or(false);
        if self.analyst_password.expose() == DEFAULT_ANALYST_PASSWORD && !on_loopback {
            return Err(ConfigError::invalid(
                "postgres.analyst_password",
                "<redacted>",
                "the default password only suits a database on loopback: set \
                 postgres.analyst_password (CHAT_ANALYTICS__POSTGRES__ANALYST_PASSWORD)",
            ));
        }
        Ok(&self.analyst_password)
    }
}

/// A password, kept out of logs and `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret in clear, for the database only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
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
            analyst_password: raw.analyst_password,
        })
    }
}
