//! The typed settings tree: built-in defaults (`config/default.toml`, compiled in, the
//! only place defaults live), then the `--config` file, then
//! `CHAT_ANALYTICS__SECTION__KEY` environment variables.
//!
//! Each section is read into its raw shape (unknown keys refused) and parsed once, here,
//! into the values the code uses: addresses, durations, enums, non-zero counts. A bad
//! value stops the process with one kind of message naming the key, the value and the
//! rule, instead of surfacing later as a runtime error.
//!
//! # Layout
//!
//! One file per section, each with its raw shape and the `TryFrom` that parses it;
//! `value.rs` holds the rules several sections share, `error.rs` the [`ConfigError`].
//! Every component is built from its own section. This module imports nothing else of
//! the crate: the rest of it imports settings from here.

mod admin;
mod api;
mod auth;
mod dlq;
mod error;
mod kafka;
mod log;
mod nlp;
mod partitions;
mod postgres;
mod rollups;
mod runtime;
mod shutdown;
mod storage;
#[cfg(test)]
mod tests;
mod value;
mod worker;

use std::path::Path;

use serde::Deserialize;

pub use admin::AdminSettings;
pub use api::{ApiSettings, PerBotLimit};
pub use auth::{ApiKeySettings, AuthSettings, KeyHash};
pub use dlq::DlqSettings;
pub use error::ConfigError;
pub use kafka::{Compression, KafkaSettings};
pub use log::{LogFormat, LogSettings};
pub use nlp::{Http2Mode, NlpSettings};
pub use partitions::PartitionSettings;
pub use postgres::{PostgresSettings, Secret, SecretUrl};
pub use rollups::RollupSettings;
pub use runtime::RuntimeSettings;
pub use shutdown::ShutdownSettings;
pub use storage::StorageSettings;
pub use worker::WorkerSettings;

/// The defaults every deployment starts from; the file on disk is this file.
const DEFAULTS: &str = include_str!("../../../../config/default.toml");
const ENV_PREFIX: &str = "CHAT_ANALYTICS";
const ENV_SEPARATOR: &str = "__";

/// Every setting of the service, one field per section of `config/default.toml`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[api]`: the public ingestion listener, what it accepts and how it sheds load.
    pub api: ApiSettings,
    /// `[admin]`: the health and metrics listener.
    pub admin: AdminSettings,
    /// `[auth]`: the API keys.
    pub auth: AuthSettings,
    /// `[kafka]`: the brokers, the topic, producer and consumer tuning.
    pub kafka: KafkaSettings,
    /// `[postgres]`: the database and the connection pool.
    pub postgres: PostgresSettings,
    /// `[nlp]`: the NLP API and enrichment's timeouts, retries and circuit breaker.
    pub nlp: NlpSettings,
    /// `[dlq]`: the dead-letter directory and the automatic replay.
    pub dlq: DlqSettings,
    /// `[worker]`: in-flight messages, offset commits, moderation lists, re-enrichment.
    pub worker: WorkerSettings,
    /// `[storage]`: batched writes, and riding out a database outage.
    pub storage: StorageSettings,
    /// `[partitions]`: daily partitions ahead, retention and archives.
    pub partitions: PartitionSettings,
    /// `[rollups]`: folding pending rollup rows, and the rollups' retention.
    pub rollups: RollupSettings,
    /// `[shutdown]`: how long draining may take.
    pub shutdown: ShutdownSettings,
    /// `[runtime]`: the async runtime's threads.
    pub runtime: RuntimeSettings,
    /// `[log]`: the log filter and format.
    pub log: LogSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    api: api::Raw,
    admin: admin::Raw,
    auth: auth::Raw,
    kafka: kafka::Raw,
    postgres: postgres::Raw,
    nlp: nlp::Raw,
    dlq: dlq::Raw,
    worker: worker::Raw,
    storage: storage::Raw,
    partitions: partitions::Raw,
    rollups: rollups::Raw,
    shutdown: shutdown::Raw,
    runtime: runtime::Raw,
    log: log::Raw,
}

impl Settings {
    /// Loads defaults, then `file` (which must exist when given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment passed in so tests need not touch the
    /// process's own.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let env_map = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let raw: Raw = builder.build()?.try_deserialize()?;
        Settings::try_from(raw)
    }

    /// Rules that tie two sections together.
    fn check_across_sections(&self) -> Result<(), ConfigError> {
        if self.storage.concurrent_batches > self.postgres.pool_size {
            return Err(ConfigError::invalid(
                "storage.concurrent_batches",
                self.storage.concurrent_batches,
                "must not exceed postgres.pool_size",
            ));
        }
        self.check_exposure()
    }

    /// An API on a non-loopback address with no key would accept anyone's messages:
    /// that has to be asked for explicitly.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        let listen = self.api.listen;
        if !listen.ip().is_loopback() && self.auth.keys.is_empty() && !self.auth.allow_anonymous {
            return Err(ConfigError::invalid(
                "api.listen",
                listen,
                "binding to a non-loopback address needs API keys ([[auth.keys]]) or an explicit \
                 auth.allow_anonymous = true",
            ));
        }
        Ok(())
    }
}

impl TryFrom<Raw> for Settings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let settings = Settings {
            api: raw.api.try_into()?,
            admin: raw.admin.try_into()?,
            auth: raw.auth.try_into()?,
            kafka: raw.kafka.try_into()?,
            postgres: raw.postgres.try_into()?,
            nlp: raw.nlp.try_into()?,
            dlq: raw.dlq.try_into()?,
            worker: raw.worker.try_into()?,
            storage: raw.storage.try_into()?,
            partitions: raw.partitions.try_into()?,
            rollups: raw.rollups.try_into()?,
            shutdown: raw.shutdown.try_into()?,
            runtime: raw.runtime.try_into()?,
            log: raw.log.try_into()?,
        };
        settings.check_across_sections()?;
        Ok(settings)
    }
}
