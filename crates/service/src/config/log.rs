//! `[log]`: what is logged, and in which format.

use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    level: String,
    format: String,
}

/// The tracing filter and the output format.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter directive known to parse, e.g. `info` or
    /// `chat_analytics=debug,info` (kept as text: the filter itself cannot be cloned).
    pub level: String,
    /// How each log line is written.
    pub format: LogFormat,
}

/// Text for people, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

impl TryFrom<Raw> for LogSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                &raw.level,
                "not a valid tracing filter",
            ));
        }
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::invalid(
                    "log.format",
                    &raw.format,
                    "must be text or json",
                ))
            }
        };
        Ok(LogSettings {
            level: raw.level,
            format,
        })
    }
}
