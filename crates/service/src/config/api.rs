//! `[api]`: the public ingestion listener.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::value::{count, positive, socket_addr, within};
use super::ConfigError;

/// Longest idle keep-alive a connection may be given: a week.
const MAX_IDLE_TIMEOUT_SECS: u64 = 604_800;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    listen: String,
    max_body_bytes: usize,
    max_batch_messages: usize,
    retry_after_overloaded_secs: u32,
    retry_after_unavailable_secs: u32,
    per_bot_rate_per_sec: u32,
    per_bot_burst: u32,
    reuse_port: bool,
    idle_timeout_secs: u64,
    header_read_timeout_secs: u64,
}

/// How the ingestion API listens, what it accepts, and how it sheds load.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Address of the public listener (`/v1/messages`, `/v1/messages/batch`, `/health`,
    /// `/livez`).
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: NonZeroUsize,
    /// Most messages in one `POST /v1/messages/batch`.
    pub max_batch_messages: NonZeroUsize,
    /// `Retry-After` on 429, in whole seconds as the header carries them.
    pub retry_after_overloaded_secs: u32,
    /// `Retry-After` on 503, in whole seconds.
    pub retry_after_unavailable_secs: u32,
    /// `None` when `per_bot_rate_per_sec` is 0.
    pub per_bot_limit: Option<PerBotLimit>,
    /// Share `listen` with other processes (SO_REUSEPORT).
    pub reuse_port: bool,
    /// An idle keep-alive connection is closed after this long; `None` (0) never.
    pub idle_timeout: Option<Duration>,
    /// A request's head must arrive within this long of its first byte.
    pub header_read_timeout: Duration,
}

/// A per-bot token bucket: `rate` messages a second, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerBotLimit {
    /// Sustained messages per second one `bot_id` may post.
    pub rate: NonZeroU32,
    /// Messages a bot may post at once above the rate: the bucket's size.
    pub burst: NonZeroU32,
}

impl TryFrom<Raw> for ApiSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let per_bot_limit = match NonZeroU32::new(raw.per_bot_rate_per_sec) {
            None => None,
            Some(rate) => Some(PerBotLimit {
                rate,
                burst: NonZeroU32::new(raw.per_bot_burst).ok_or_else(|| {
                    ConfigError::invalid(
                        "api.per_bot_burst",
                        raw.per_bot_burst,
                        "must be at least 1 when api.per_bot_rate_per_sec is set",
                    )
                })?,
            }),
        };
        if raw.idle_timeout_secs > MAX_IDLE_TIMEOUT_SECS {
            return Err(ConfigError::invalid(
                "api.idle_timeout_secs",
                raw.idle_timeout_secs,
                "must be at most 604800 (a week); 0 keeps idle connections forever",
            ));
        }
        Ok(ApiSettings {
            listen: socket_addr("api.listen", &raw.listen)?,
            max_body_bytes: positive("api.max_body_bytes", raw.max_body_bytes)?,
            max_batch_messages: count("api.max_batch_messages", raw.max_batch_messages, 10_000)?,
            retry_after_overloaded_secs: raw.retry_after_overloaded_secs,
            retry_after_unavailable_secs: raw.retry_after_unavailable_secs,
            per_bot_limit,
            reuse_port: raw.reuse_port,
            idle_timeout: (raw.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(raw.idle_timeout_secs)),
            header_read_timeout: Duration::from_secs(within(
                "api.header_read_timeout_secs",
                raw.header_read_timeout_secs,
                1..=3_600,
            )?),
        })
    }
}
