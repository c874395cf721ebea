//! What operators see: metrics, health, the admin listener and log set-up.

mod admin;
mod health;
mod logging;
mod metrics;

pub use admin::{health_response, livez_response, AdminHandler, HEALTH_PROBE_TIMEOUT};
pub use health::{HealthChecks, HealthReport, Probe};
pub use logging::init_logging;
pub use metrics::{KnownLabels, Metrics};
