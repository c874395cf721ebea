//! What operators see: metrics, health, the admin listener and log set-up.

mod admin;
mod drain;
mod health;
mod logging;
mod metrics;

pub use admin::{health_response, livez_response, AdminHandler, HEALTH_PROBE_TIMEOUT};
pub use drain::{Backlog, DeadLetterBacklog};
pub use health::{HealthChecks, HealthReport, Probe};
#[cfg(test)]
pub(crate) use logging::capture;
pub use logging::init_logging;
pub use metrics::{export_at_zero, register, Metrics, LATENCY_BUCKETS};
