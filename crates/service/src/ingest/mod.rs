//! The HTTP ingestion API: `POST /v1/messages` and `/v1/messages/batch`.
//!
//! A request is authenticated, read within the body limit, parsed into domain types,
//! admitted against the in-flight cap, published to Kafka and answered 202 only once
//! the broker acknowledged it.

mod admission;
mod auth;
mod error;
mod metrics;
mod request;
mod route;
mod routes;

pub use admission::Admission;
pub use auth::{hash_key, ApiKeys, AuthConfigError};
pub use error::ApiError;
pub use metrics::IngestMetrics;
pub use request::{parse_batch, parse_single};
pub use routes::IngestApi;
