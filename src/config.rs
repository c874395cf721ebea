//! The typed settings tree: built-in defaults (`config/default.toml`, compiled in),
//! then the `--config` file, then `CHAT_ANALYTICS__SECTION__KEY` environment variables.
//!
//! Everything is checked once, here, at start-up: a bad value stops the process with a
//! message naming the key and the value, instead of surfacing later as a runtime error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::enrich::EnrichSettings;
use crate::storage::partitions::PartitionSettings;
use crate::storage::StorageSettings;
use crate::worker::WorkerSettings;

/// The defaults every deployment starts from; the file on disk mirrors it.
const DEFAULTS: &str = include_str!("../config/default.toml");
const ENV_PREFIX: &str = "CHAT_ANALYTICS";
const ENV_SEPARATOR: &str = "__";
/// More runtime threads than this is a typo, not a machine.
const MAX_RUNTIME_THREADS: usize = 1_024;

/// A configuration that cannot be used; the message names the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] config::ConfigError),
    #[error("invalid configuration: `{key}` = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub api: ApiSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub kafka: KafkaSettings,
    pub postgres: PostgresSettings,
    pub nlp: EnrichSettings,
    pub dlq: DlqSettings,
    pub worker: WorkerSettings,
    pub storage: StorageSettings,
    pub partitions: PartitionSettings,
    pub shutdown: ShutdownSettings,
    pub runtime: RuntimeSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_batch_messages: usize,
    pub retry_after_overloaded_secs: u32,
    pub retry_after_unavailable_secs: u32,
    pub per_bot_rate_per_sec: u32,
    pub per_bot_burst: u32,
    pub reuse_port: bool,
    pub idle_timeout_secs: u64,
    pub header_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub allow_anonymous: bool,
    pub keys: Vec<ApiKeySettings>,
}

/// One API key as configured: only its SHA-256 is ever stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    pub name: String,
    pub sha256: String,
    #[serde(default = "match_every_bot")]
    pub bot_ids: Vec<String>,
}

fn match_every_bot() -> Vec<String> {
    vec!["*".to_owned()]
}

impl std::fmt::Debug for ApiKeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySettings")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("bot_ids", &self.bot_ids)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub publish_timeout_ms: u64,
    pub max_in_flight: usize,
    pub linger_ms: u64,
    pub compression: String,
    pub consumer_group: String,
    pub fetch_min_bytes: u32,
    pub fetch_max_wait_ms: u64,
}

/// Connection string wrapped so it never ends up in logs with its password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted url>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: SecretUrl,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqSettings {
    pub dir: PathBuf,
    /// Replay outage dead letters by themselves once the database is back.
    pub auto_replay: bool,
    pub replay_interval_secs: u64,
    pub replay_rate_per_sec: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// 0 leaves the choice to tokio.
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: ranges, addresses, URLs, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_listen("api.listen", &self.api.listen)?;
        parse_listen("admin.listen", &self.admin.listen)?;
        positive("api.max_body_bytes", self.api.max_body_bytes)?;
        if !(1..=3_600).contains(&self.api.header_read_timeout_secs) {
            return Err(ConfigError::invalid(
                "api.header_read_timeout_secs",
                self.api.header_read_timeout_secs,
                "must be from 1 to 3600",
            ));
        }
        if self.api.idle_timeout_secs > 604_800 {
            return Err(ConfigError::invalid(
                "api.idle_timeout_secs",
                self.api.idle_timeout_secs,
                "must be at most 604800 (a week); 0 keeps idle connections forever",
            ));
        }
        if !(1..=10_000).contains(&self.api.max_batch_messages) {
            return Err(ConfigError::invalid(
                "api.max_batch_messages",
                self.api.max_batch_messages,
                "must be between 1 and 10000",
            ));
        }
        if self.api.per_bot_rate_per_sec > 0 && self.api.per_bot_burst == 0 {
            return Err(ConfigError::invalid(
                "api.per_bot_burst",
                self.api.per_bot_burst,
                "must be at least 1 when api.per_bot_rate_per_sec is set",
            ));
        }
        non_empty("kafka.brokers", &self.kafka.brokers)?;
        non_empty("kafka.consumer_group", &self.kafka.consumer_group)?;
        if !is_valid_topic(&self.kafka.topic) {
            return Err(ConfigError::invalid(
                "kafka.topic",
                &self.kafka.topic,
                "a Kafka topic is 1-249 characters of [A-Za-z0-9._-]",
            ));
        }
        positive("kafka.publish_timeout_ms", self.kafka.publish_timeout_ms)?;
        if self.kafka.linger_ms >= self.kafka.publish_timeout_ms {
            return Err(ConfigError::invalid(
                "kafka.linger_ms",
                self.kafka.linger_ms,
                "must be below kafka.publish_timeout_ms",
            ));
        }
        if self.kafka.max_in_flight < 10 {
            return Err(ConfigError::invalid(
                "kafka.max_in_flight",
                self.kafka.max_in_flight,
                "must be at least 10",
            ));
        }
        if !(1..=100_000_000).contains(&self.kafka.fetch_min_bytes) {
            return Err(ConfigError::invalid(
                "kafka.fetch_min_bytes",
                self.kafka.fetch_min_bytes,
                "must be between 1 and 100000000",
            ));
        }
        // Longer than the session timeout would look like a dead consumer to the group.
        if self.kafka.fetch_max_wait_ms > 5_000 {
            return Err(ConfigError::invalid(
                "kafka.fetch_max_wait_ms",
                self.kafka.fetch_max_wait_ms,
                "must be at most 5000",
            ));
        }
        const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.kafka.compression.as_str()) {
            return Err(ConfigError::invalid(
                "kafka.compression",
                &self.kafka.compression,
                "must be one of none, gzip, snappy, lz4, zstd",
            ));
        }
        let pg_url = self.postgres.url.expose();
        if pg_url.parse::<tokio_postgres::Config>().is_err() {
            return Err(ConfigError::invalid(
                "postgres.url",
                "<redacted>",
                "not a valid PostgreSQL connection string",
            ));
        }
        positive("postgres.pool_size", self.postgres.pool_size)?;
        positive(
            "postgres.connect_timeout_ms",
            self.postgres.connect_timeout_ms,
        )?;
        self.nlp.validate().map_err(
            |crate::enrich::EnrichError::InvalidSetting { key, value, reason }| {
                ConfigError::invalid(key, value, reason)
            },
        )?;
        self.partitions
            .validate()
            .map_err(|e| ConfigError::invalid(e.key, e.value, e.reason))?;
        if self.dlq.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("dlq.dir", "", "must not be empty"));
        }
        positive("shutdown.grace_ms", self.shutdown.grace_ms)?;
        if !(1..=100_000).contains(&self.worker.concurrency) {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                self.worker.concurrency,
                "must be between 1 and 100000",
            ));
        }
        positive("worker.commit_interval_ms", self.worker.commit_interval_ms)?;
        if self.worker.session_timeout_ms < 1_000 {
            return Err(ConfigError::invalid(
                "worker.session_timeout_ms",
                self.worker.session_timeout_ms,
                "must be at least 1000",
            ));
        }
        positive(
            "worker.partition_maintenance_interval_s",
            self.worker.partition_maintenance_interval_s,
        )?;
        if !(1..=10_000).contains(&self.storage.batch_max_rows) {
            return Err(ConfigError::invalid(
                "storage.batch_max_rows",
                self.storage.batch_max_rows,
                "must be between 1 and 10000",
            ));
        }
        positive(
            "storage.concurrent_batches",
            self.storage.concurrent_batches,
        )?;
        positive("storage.write_attempts", self.storage.write_attempts)?;
        positive("dlq.replay_interval_secs", self.dlq.replay_interval_secs)?;
        positive(
            "worker.reenrich_interval_secs",
            self.worker.reenrich_interval_secs,
        )?;
        positive(
            "worker.reenrich_max_in_flight",
            self.worker.reenrich_max_in_flight,
        )?;
        positive("dlq.replay_rate_per_sec", self.dlq.replay_rate_per_sec)?;
        if self.storage.outage_retry_max_ms < self.storage.write_backoff_ms {
            return Err(ConfigError::invalid(
                "storage.outage_retry_max_ms",
                self.storage.outage_retry_max_ms,
                "must be at least storage.write_backoff_ms",
            ));
        }
        if self.storage.concurrent_batches > self.postgres.pool_size {
            return Err(ConfigError::invalid(
                "storage.concurrent_batches",
                self.storage.concurrent_batches,
                "must not exceed postgres.pool_size",
            ));
        }
        if self.runtime.worker_threads > MAX_RUNTIME_THREADS {
            return Err(ConfigError::invalid(
                "runtime.worker_threads",
                self.runtime.worker_threads,
                format!("must be at most {MAX_RUNTIME_THREADS}; 0 picks one per CPU core"),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                &self.log.level,
                "not a valid tracing filter",
            ));
        }
        for key in &self.auth.keys {
            let valid_hash =
                key.sha256.len() == 64 && key.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_hash {
                return Err(ConfigError::invalid(
                    "auth.keys.sha256",
                    format!("<key {:?}>", key.name),
                    "must be the 64 hex digits of the key's SHA-256",
                ));
            }
            if key.bot_ids.is_empty() {
                return Err(ConfigError::invalid(
                    "auth.keys.bot_ids",
                    format!("<key {:?}>", key.name),
                    "must name at least one bot_id pattern (\"*\" for all)",
                ));
            }
        }
        self.check_exposure()
    }

    /// An API on a non-loopback address with no key would accept anyone's messages:
    /// that has to be asked for explicitly.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        let addr = parse_listen("api.listen", &self.api.listen)?;
        if !addr.ip().is_loopback() && self.auth.keys.is_empty() && !self.auth.allow_anonymous {
            return Err(ConfigError::invalid(
                "api.listen",
                &self.api.listen,
                "binding to a non-loopback address needs API keys ([[auth.keys]]) or an explicit \
                 auth.allow_anonymous = true",
            ));
        }
        Ok(())
    }

    pub fn api_addr(&self) -> SocketAddr {
        // validate() already proved the address parses.
        parse_listen("api.listen", &self.api.listen).unwrap_or(DEFAULT_API_ADDR)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        parse_listen("admin.listen", &self.admin.listen).unwrap_or(DEFAULT_ADMIN_ADDR)
    }
}

const DEFAULT_API_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

fn parse_listen(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::invalid(key, value, "must be an IP:port socket address"))
}

fn positive<T: PartialEq + Default + ToString>(
    key: &'static str,
    value: T,
) -> Result<(), ConfigError> {
    if value == T::default() {
        return Err(ConfigError::invalid(key, value, "must be greater than 0"));
    }
    Ok(())
}

fn non_empty(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, value, "must not be empty"));
    }
    Ok(())
}

fn is_valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(s.api.listen, "127.0.0.1:8080");
        assert_eq!(s.admin.listen, "127.0.0.1:8081");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.topic, "chat.messages");
        assert_eq!(s.kafka.consumer_group, "chat-analytics-worker");
        assert_eq!(
            s.postgres.url.expose(),
            "postgres://chat:chat@127.0.0.1:5432/chat_analytics"
        );
        assert_eq!(s.nlp.url, "http://127.0.0.1:8090/v1/analyze");
        assert_eq!(s.dlq.dir, PathBuf::from("var/dlq"));
        assert_eq!(s.api.max_body_bytes, 64 * 1024);
        assert_eq!(s.kafka.max_in_flight, 10_000);
    }

    #[test]
    fn environment_overrides_any_key() {
        let s = Settings::load_from(
            None,
            env(&[
                ("CHAT_ANALYTICS__KAFKA__PUBLISH_TIMEOUT_MS", "750"),
                ("CHAT_ANALYTICS__API__LISTEN", "127.0.0.1:9999"),
                ("CHAT_ANALYTICS__KAFKA__TOPIC", "other.topic"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("overrides load");
        assert_eq!(s.kafka.publish_timeout_ms, 750);
        assert_eq!(s.api.listen, "127.0.0.1:9999");
        assert_eq!(s.kafka.topic, "other.topic");
    }

    #[test]
    fn a_bad_number_names_the_key_and_value() {
        let err = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__KAFKA__PUBLISH_TIMEOUT_MS", "soon")]),
        )
        .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("publish_timeout_ms"), "{msg}");
        assert!(msg.contains("soon"), "{msg}");
    }

    #[test]
    fn a_bad_address_names_the_key_and_value() {
        let err = Settings::load_from(None, env(&[("CHAT_ANALYTICS__API__LISTEN", "localhost")]))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("api.listen") && msg.contains("localhost"),
            "{msg}"
        );
    }

    #[test]
    fn a_retention_that_would_drop_live_partitions_is_refused() {
        let err = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__PARTITIONS__RETENTION_DAYS", "0")]),
        )
        .expect_err("must fail");
        assert!(
            err.to_string().contains("partitions.retention_days"),
            "{err}"
        );
    }

    #[test]
    fn connection_timeouts_are_bounded() {
        for (key, value) in [
            ("CHAT_ANALYTICS__API__HEADER_READ_TIMEOUT_SECS", "0"),
            ("CHAT_ANALYTICS__API__HEADER_READ_TIMEOUT_SECS", "86400"),
            (
                "CHAT_ANALYTICS__API__IDLE_TIMEOUT_SECS",
                "18446744073709551615",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)])).expect_err("must fail");
            let name = key
                .trim_start_matches("CHAT_ANALYTICS__API__")
                .to_lowercase();
            assert!(err.to_string().contains(&format!("api.{name}")), "{err}");
        }
        let never = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__API__IDLE_TIMEOUT_SECS", "0")]),
        )
        .expect("0 keeps idle connections");
        assert_eq!(never.api.idle_timeout_secs, 0);
    }

    #[test]
    fn runtime_threads_default_to_tokio_and_are_bounded() {
        let defaults = Settings::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(defaults.runtime.worker_threads, 0);
        let one = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__RUNTIME__WORKER_THREADS", "1")]),
        )
        .expect("1 thread is valid");
        assert_eq!(one.runtime.worker_threads, 1);
        let err = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__RUNTIME__WORKER_THREADS", "100000")]),
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("runtime.worker_threads"), "{err}");
    }

    #[test]
    fn public_bind_without_keys_needs_explicit_opt_in() {
        let err = Settings::load_from(
            None,
            env(&[("CHAT_ANALYTICS__API__LISTEN", "0.0.0.0:8080")]),
        )
        .expect_err("must refuse");
        assert!(err.to_string().contains("allow_anonymous"), "{err}");

        let ok = Settings::load_from(
            None,
            env(&[
                ("CHAT_ANALYTICS__API__LISTEN", "0.0.0.0:8080"),
                ("CHAT_ANALYTICS__AUTH__ALLOW_ANONYMOUS", "true"),
            ]),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn config_file_layers_over_defaults_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("ca-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[kafka]\ntopic = \"t1\"\n[[auth.keys]]\nname = \"k\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nbot_ids = [\"support-*\"]\n",
        )
        .expect("write");
        let s = Settings::load_from(Some(&good), env(&[])).expect("file loads");
        assert_eq!(s.kafka.topic, "t1");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.auth.keys.len(), 1);
        assert!(!format!("{:?}", s.auth.keys[0]).contains("9f86"));

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[kafka]\ntopik = \"t1\"\n").expect("write");
        let err = Settings::load_from(Some(&bad), env(&[])).expect_err("unknown key");
        assert!(err.to_string().contains("topik"), "{err}");

        let missing = dir.join("missing.toml");
        assert!(matches!(
            Settings::load_from(Some(&missing), env(&[])),
            Err(ConfigError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let s = Settings::load_from(None, env(&[])).expect("defaults load");
        assert!(!format!("{s:?}").contains("chat:chat"));
    }
}
