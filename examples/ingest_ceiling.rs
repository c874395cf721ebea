//! The ingest API with Kafka taken out: every valid message is "acknowledged" at once.
//! `make bench` measures this as the HTTP server's own ceiling (request parsing, admission,
//! envelope encoding, the 202), so the real service's rate can be read as a fraction of it.
//!
//! Usage: `ingest_ceiling [ADDR]` (default 127.0.0.1:18088); stops on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chat_analytics::config::Settings;
use chat_analytics::http_server::{self, serve, Connections};
use chat_analytics::ingest::{Admission, ApiKeys, IngestApi, IngestMetrics};
use chat_analytics::queue::{Delivery, PublishError, Publisher};
use chat_analytics::telemetry::HealthChecks;

/// Acknowledges without sending anything anywhere.
struct InstantAck;

impl Publisher for InstantAck {
    async fn publish(&self, _key: &str, _payload: Vec<u8>) -> Result<Delivery, PublishError> {
        Ok(Delivery {
            partition: 0,
            offset: 0,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18088".to_owned())
        .parse()
        .context("the argument must be an address such as 127.0.0.1:18088")?;
    let settings = Settings::load_from(None, Vec::new()).context("default settings")?;
    let shutdown = chat_analytics::shutdown::on_signal().context("signal handlers")?;
    let api = IngestApi::new(
        InstantAck,
        ApiKeys::from_settings(&settings.auth.keys).context("api keys")?,
        Admission::new(settings.kafka.max_in_flight.get(), &settings.api),
        HealthChecks::default(),
        IngestMetrics::register(&prometheus::Registry::new()).context("metrics")?,
        settings.api.clone(),
        shutdown.clone(),
    );
    let listener =
        http_server::listen(addr, false).with_context(|| format!("cannot listen on {addr}"))?;
    serve(
        "ingest-ceiling",
        listener,
        api,
        Connections::unmetered(),
        shutdown,
        Duration::from_secs(2),
    )
    .await;
    Ok(())
}
