//! One raw value to its typed form. Each failure is a [`ConfigError::Invalid`] naming the
//! key, the value and the rule, so every section reports mistakes the same way.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// `value`, when it lies within `range`.
pub(super) fn within<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        return Ok(value);
    }
    let reason = format!("must be between {} and {}", range.start(), range.end());
    Err(ConfigError::invalid(key, value, reason))
}

/// `value`, when it is at most `max`.
pub(super) fn at_most<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    max: T,
) -> Result<T, ConfigError> {
    if value <= max {
        return Ok(value);
    }
    Err(ConfigError::invalid(
        key,
        value,
        format!("must be at most {max}"),
    ))
}

/// A count of at least 1 as its non-zero type (`NonZeroU32`, `NonZeroUsize`).
pub(super) fn positive<T: Copy + Display, N: TryFrom<T>>(
    key: &'static str,
    value: T,
) -> Result<N, ConfigError> {
    N::try_from(value).map_err(|_| ConfigError::invalid(key, value, "must be greater than 0"))
}

/// A count from 1 to `max`, as its non-zero type.
pub(super) fn count<T: Copy + Display + PartialOrd + From<u8>, N: TryFrom<T>>(
    key: &'static str,
    value: T,
    max: T,
) -> Result<N, ConfigError> {
    positive(key, within(key, value, T::from(1)..=max)?)
}

/// A `*_ms` key that must not be 0.
pub(super) fn positive_millis(key: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    positive::<u64, std::num::NonZeroU64>(key, ms).map(|ms| Duration::from_millis(ms.get()))
}

/// A `*_secs` key that must not be 0.
pub(super) fn positive_secs(key: &'static str, secs: u64) -> Result<Duration, ConfigError> {
    positive::<u64, std::num::NonZeroU64>(key, secs).map(|secs| Duration::from_secs(secs.get()))
}

/// A listener address: an IP and a port, no host names (nothing to resolve at start).
pub(super) fn socket_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::invalid(key, value, "must be an IP:port socket address"))
}

/// Text that is more than white space.
pub(super) fn non_empty(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, value, "must not be empty"));
    }
    Ok(value)
}

/// A path that names something.
pub(super) fn non_empty_path(key: &'static str, value: PathBuf) -> Result<PathBuf, ConfigError> {
    if value.as_os_str().is_empty() {
        return Err(ConfigError::invalid(key, "", "must not be empty"));
    }
    Ok(value)
}
