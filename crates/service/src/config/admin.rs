//! `[admin]`: the health and metrics listener.

use std::net::SocketAddr;

use serde::Deserialize;

use super::value::socket_addr;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    listen: String,
}

/// Where `/livez`, `/health` and `/metrics` are served.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address of the admin listener, e.g. `127.0.0.1:8081`.
    pub listen: SocketAddr,
}

impl TryFrom<Raw> for AdminSettings {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        Ok(AdminSettings {
            listen: socket_addr("admin.listen", &raw.listen)?,
        })
    }
}
