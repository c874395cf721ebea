//! Builds the running service from settings for a role, and runs it until shutdown.
//! Tests build it the same way, on port 0, against the real Kafka and Postgres.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiSettings, Settings};
use crate::http_server::{self, ConnectionMetrics, ConnectionTimeouts, Connections};
use crate::ingest::{Admission, ApiKeys, AuthConfigError, IngestApi, IngestMetrics};
use crate::queue::{DeliveryReports, KafkaPublisher, ProducerError, ProducerMetrics};
use crate::storage::{connect_pool, PostgresProbe, StorageError};
use crate::supervisor::{spawn_supervised, supervise, Component, Restarts};
use crate::telemetry::{AdminHandler, HealthChecks, Metrics, Probe};
use crate::worker::{Worker, WorkerError, WorkerMetrics};

/// Which parts of the pipeline this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest API and worker together (the local default).
    Serve,
    /// The HTTP API only.
    Ingest,
    /// Consume, moderate, enrich, store.
    Worker,
}

impl Role {
    fn runs_api(self) -> bool {
        matches!(self, Role::Serve | Role::Ingest)
    }

    fn runs_worker(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

/// Why [`App::build`] failed: the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A listener could not be bound (address in use, no permission).
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `api` or `admin`.
        what: &'static str,
        /// The address from the settings.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Kafka producer could not be created (roles that run the API).
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// An `auth.keys` entry has a `bot_ids` pattern that is not a valid glob.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// The Postgres pool could not be set up, or the migrations at start
    /// (`storage.migrate_on_start`) failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A metric could not be registered (a name registered twice).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The worker could not be built: its Kafka consumer or the moderation word lists.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A setting refused at start because of how it combines with another
    /// (the default analyst password for a database off loopback).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The ingest role's parts.
struct Api {
    handler: Arc<IngestApi<KafkaPublisher>>,
    listener: Arc<TcpListener>,
    connections: Connections,
    publisher: KafkaPublisher,
}

/// Listeners are bound in `build`, so a port conflict fails start-up, not later.
pub struct App {
    api: Option<Api>,
    worker: Option<Worker>,
    admin: Arc<AdminHandler>,
    admin_listener: Arc<TcpListener>,
    restarts: Restarts,
    admin_connections: Connections,
    shutdown: CancellationToken,
    grace: Duration,
}

impl App {
    /// Builds what `role` runs from `settings`: the Kafka producer and ingest handler, the
    /// Postgres pool (migrated first with `storage.migrate_on_start`) and worker, the health
    /// probes, and binds both listeners. Nothing is served until [`App::run`].
    pub async fn build(
        settings: &Settings,
        role: Role,
        shutdown: CancellationToken,
    ) -> Result<App, StartupError> {
        let metrics = Metrics::new()?;
        let components = ComponentMetrics::register(&metrics)?;
        let mut health = HealthChecks::default();
        let publisher = if role.runs_api() {
            let publisher = KafkaPublisher::new(&settings.kafka, components.producer)?;
            health = health.with(
                "kafka",
                Arc::new(KafkaProbe(publisher.clone())) as Arc<dyn Probe>,
            );
            Some(publisher)
        } else {
            None
        };
        let worker = if role.runs_worker() {
            let pool = connect_pool(&settings.postgres)?;
            health = health.with("postgres", Arc::new(PostgresProbe(pool.clone())));
            if settings.storage.migrate_on_start {
                crate::storage::prepare_database(
                    &pool,
                    &settings.storage,
                    &settings.partitions,
                    settings.postgres.analyst_password()?,
                )
                .await?;
            }
            let worker = Worker::build(settings, &components.worker, pool, shutdown.clone())?;
            health = health.with("consumer", worker.intake_probe());
            if publisher.is_none() {
                health = health.with("kafka", worker.kafka_probe());
            }
            Some(worker)
        } else {
            None
        };
        let api = match publisher {
            Some(publisher) => Some(Api {
                handler: IngestApi::new(
                    publisher.clone(),
                    ApiKeys::from_settings(&settings.auth.keys)?,
                    Admission::new(settings.kafka.max_in_flight.get(), &settings.api),
                    health.clone(),
                    components.ingest,
                    settings.api.clone(),
                    shutdown.clone(),
                ),
                listener: Arc::new(bind("api", settings.api.listen, settings.api.reuse_port)?),
                connections: components
                    .connections
                    .connections("api_server")
                    .with_timeouts(connection_timeouts(&settings.api)),
                publisher,
            }),
            None => None,
        };
        let admin_listener = Arc::new(bind("admin", settings.admin.listen, false)?);
        let backlog = worker.as_ref().and_then(Worker::dead_letter_backlog);
        Ok(App {
            api,
            worker,
            admin: AdminHandler::new(metrics, health, backlog),
            admin_listener,
            restarts: components.restarts,
            admin_connections: components.connections.connections("admin_server"),
            shutdown,
            grace: settings.shutdown.grace,
        })
    }

    /// The API's address, when this role serves one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|a| a.listener.local_addr().ok())
    }

    /// The admin listener's address (`/livez`, `/health`, `/metrics`); with port 0 in the
    /// settings, the one the OS picked.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Serves until the shutdown token fires, then drains requests, flushes the
    /// producer and lets the worker finish, all within the grace period.
    pub async fn run(self) {
        let admin = tokio::spawn(supervised_server(
            Component::AdminServer,
            self.admin_listener,
            self.admin,
            self.admin_connections,
            self.restarts.clone(),
            self.shutdown.clone(),
            self.grace,
        ));
        let worker = self.worker.map(|w| tokio::spawn(w.run(self.grace)));
        if let Some(api) = self.api {
            serve_api(
                api,
                self.restarts.clone(),
                self.shutdown.clone(),
                self.grace,
            )
            .await;
        }
        if let Some(worker) = worker {
            if worker.await.is_err() {
                tracing::error!("worker task ended abnormally");
            }
        }
        if admin.await.is_err() {
            tracing::warn!("admin server task ended abnormally");
        }
    }
}

/// An HTTP server whose accept loop is restarted (on the same socket) if it panics. The
/// socket is closed once the loop has stopped for good, before open connections drain:
/// with `api.reuse_port` the kernel then sends new connections to the other processes.
async fn supervised_server<H: http_server::HttpHandler>(
    component: Component,
    listener: Arc<TcpListener>,
    handler: Arc<H>,
    connections: Connections,
    restarts: Restarts,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let watched = connections.clone();
    let stop = shutdown.clone();
    // `supervise` owns (and drops on return) the only other handle on the listener.
    supervise(component, restarts, shutdown, move || {
        http_server::accept(
            component.as_str(),
            listener.clone(),
            handler.clone(),
            watched.clone(),
            stop.clone(),
        )
    })
    .await;
    http_server::drain(component.as_str(), connections, grace).await;
}

async fn serve_api(api: Api, restarts: Restarts, shutdown: CancellationToken, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let housekeeping = tokio::spawn(forget_idle_bots(api.handler.clone(), shutdown.clone()));
    // Requests still draining after the shutdown signal await their acknowledgements, so
    // the reports are served until the producer is flushed, on a stop signal of their own.
    let reports_stop = CancellationToken::new();
    let delivery_reports = spawn_supervised(
        Component::DeliveryReports,
        &restarts,
        &reports_stop,
        &api.publisher.delivery_reports(),
        DeliveryReports::run,
    );
    supervised_server(
        Component::ApiServer,
        api.listener,
        api.handler,
        api.connections,
        restarts,
        shutdown,
        grace,
    )
    .await;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match api
        .publisher
        .flush(left.max(Duration::from_millis(100)))
        .await
    {
        Ok(()) => tracing::info!("producer flushed"),
        Err(err) => tracing::error!(error = %err, "producer flush incomplete"),
    }
    reports_stop.cancel();
    if delivery_reports.await.is_err() {
        tracing::warn!("delivery report task ended abnormally");
    }
    housekeeping.abort();
}

/// The metrics of every component, each registered once by the component that owns it.
///
/// Every role registers all of them, not only those it runs: one binary has one metric
/// set, so every process answers the same queries (an ingest process exports
/// `queue_depth` and `messages_processed_total{outcome}` at 0). The cost is a few dozen
/// series at 0.
struct ComponentMetrics {
    ingest: IngestMetrics,
    producer: ProducerMetrics,
    connections: ConnectionMetrics,
    restarts: Restarts,
    worker: WorkerMetrics,
}

impl ComponentMetrics {
    fn register(metrics: &Metrics) -> Result<ComponentMetrics, prometheus::Error> {
        let registry = metrics.registry();
        let restarts = Restarts::register(registry)?;
        Ok(ComponentMetrics {
            ingest: IngestMetrics::register(registry)?,
            producer: ProducerMetrics::register(registry)?,
            connections: ConnectionMetrics::register(registry)?,
            worker: WorkerMetrics::register(registry, restarts.clone())?,
            restarts,
        })
    }
}

fn connection_timeouts(api: &ApiSettings) -> ConnectionTimeouts {
    ConnectionTimeouts {
        idle: api.idle_timeout,
        header_read: api.header_read_timeout,
    }
}

fn bind(
    what: &'static str,
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<TcpListener, StartupError> {
    http_server::listen(addr, reuse_port).map_err(|source| StartupError::Bind {
        what,
        addr,
        source,
    })
}

/// Trims the per-bot rate limiter's memory once a minute.
async fn forget_idle_bots(api: Arc<IngestApi<KafkaPublisher>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => api.admission().forget_idle_bots(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// `/health` probe: the broker answers a metadata request for our topic.
struct KafkaProbe(KafkaPublisher);

impl Probe for KafkaProbe {
    fn probe(&self, within: Duration) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.check(within))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_s_metrics_are_exported_with_their_known_series_at_zero() {
        let metrics = Metrics::new().expect("registry");
        let components = ComponentMetrics::register(&metrics).expect("each registers once");
        components.producer.produce_duration.observe(0.002);
        let text = metrics.render();
        assert!(text.contains("kafka_produce_duration_seconds_count 1"));
        for name in [
            "http_request_duration_seconds_bucket",
            "nlp_api_errors_total",
            "nlp_api_duration_seconds",
            "circuit_breaker_state",
            "queue_depth",
            "active_workers",
            "moderation_hits_total",
            "end_to_end_latency_seconds_count",
            "db_write_duration_seconds_count",
            "dead_letters_pending",
            "reenrich_backlog",
            "rows_reenriched_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        for series in [
            r#"http_requests_total{route="/v1/messages",status="202"} 0"#,
            r#"http_requests_total{route="/v1/messages",status="503"} 0"#,
            r#"http_request_duration_seconds_count{route="/v1/messages"} 0"#,
            r#"messages_processed_total{outcome="stored"} 0"#,
            r#"dead_letters_replayed_total{outcome="stored"} 0"#,
            r#"dead_letters_total{stage="decode"} 0"#,
            r#"dead_letters_total{stage="storage"} 0"#,
            r#"component_restarts_total{component="consumer"} 0"#,
            r#"component_restarts_total{component="admin_server"} 0"#,
            r#"nlp_api_errors_total{kind="timeout"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing");
        }
        assert!(
            !text.contains("consumer_paused{"),
            "pause reasons are exported by a consuming process only"
        );
    }
}
