//! One client connection's life: hyper serves it while requests come, the socket is
//! parked (holding no buffers) while the client is idle, and on shutdown an idle
//! connection closes at once while a request in progress is finished first.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::parking::ParkingIo;
use super::{internal_error, HttpHandler, HttpResponse};
use crate::supervisor::catch_panic;

type InFlight = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

/// How long a client may keep a connection without using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// An idle keep-alive connection is closed after this long without a request
    /// (`None`: never).
    pub idle: Option<Duration>,
    /// A request head must arrive in full within this long of its first byte, so a
    /// client trickling bytes cannot hold a connection (and hyper's buffers) forever.
    pub header_read: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            idle: Some(Duration::from_secs(300)),
            header_read: Duration::from_secs(30),
        }
    }
}

/// `http_connections{server,state}`: open client connections of every server in the
/// process; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ConnectionMetrics {
    connections: prometheus::IntGaugeVec,
}

impl ConnectionMetrics {
    pub(crate) fn register(
        registry: &prometheus::Registry,
    ) -> Result<ConnectionMetrics, prometheus::Error> {
        let connections = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "http_connections",
                "Open client connections, by server and state (active: served by hyper; parked: idle, holding no buffers)",
            ),
            &["server", "state"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        Ok(ConnectionMetrics { connections })
    }

    /// The connection gauges of one server.
    pub fn connections(&self, server: &str) -> Connections {
        Connections::new(
            self.connections.with_label_values(&[server, "active"]),
            self.connections.with_label_values(&[server, "parked"]),
        )
    }
}

/// The connections a server has open: tracked for the drain, told when to close, and
/// counted (served by hyper, or parked) for the operators.
#[derive(Clone)]
pub struct Connections {
    tasks: TaskTracker,
    closing: CancellationToken,
    idle_timeout: Option<Duration>,
    /// Built once (every request burst starts a hyper connection); shared, since each
    /// connection's task holds a copy of this struct.
    http1: Arc<http1::Builder>,
    active: IntGauge,
    parked: IntGauge,
}

impl Connections {
    pub(crate) fn new(active: IntGauge, parked: IntGauge) -> Connections {
        let timeouts = ConnectionTimeouts::default();
        Connections {
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            idle_timeout: timeouts.idle,
            http1: http1_builder(timeouts.header_read),
            active,
            parked,
        }
    }

    pub(crate) fn with_timeouts(mut self, timeouts: ConnectionTimeouts) -> Connections {
        self.idle_timeout = timeouts.idle;
        self.http1 = http1_builder(timeouts.header_read);
        self
    }

    /// For servers nobody monitors (tests, examples).
    pub fn unmetered() -> Connections {
        let gauge = || IntGauge::new("connections", "unregistered").expect("a valid metric name");
        Connections::new(gauge(), gauge())
    }

    pub(super) fn open<H: HttpHandler>(
        &self,
        name: &'static str,
        stream: TcpStream,
        handler: Arc<H>,
    ) {
        let connections = self.clone();
        self.tasks.spawn(async move {
            connections.active.inc();
            connections.run(name, stream, handler).await;
            connections.active.dec();
        });
    }

    /// Asks every connection to close once its request in progress is answered, and
    /// waits for them.
    pub(super) async fn close_all(&self) {
        self.tasks.close();
        self.closing.cancel();
        self.tasks.wait().await;
    }

    async fn run<H: HttpHandler>(&self, name: &'static str, stream: TcpStream, handler: Arc<H>) {
        let mut io = ParkingIo::new(stream);
        loop {
            // Boxed so a parked connection's task is not sized for hyper's state.
            io = match Box::pin(self.serve(name, io, handler.clone())).await {
                Some(io) => io,
                None => return,
            };
            self.active.dec();
            self.parked.inc();
            let woken = tokio::select! {
                readable = io.readable() => readable.is_ok(),
                () = idle_expiry(self.idle_timeout) => false,
                () = self.closing.cancelled() => false,
            };
            self.parked.dec();
            self.active.inc();
            if !woken {
                return;
            }
        }
    }

    /// Serves requests until the client goes idle (the socket comes back to be parked)
    /// or the connection ends (`None`).
    async fn serve<H: HttpHandler>(
        &self,
        name: &'static str,
        io: ParkingIo,
        handler: Arc<H>,
    ) -> Option<ParkingIo> {
        let answers = io.answers();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let answers = answers.clone();
            // Boxed: hyper keeps room for one in-flight future while it serves a
            // connection; an unboxed handler future would cost its whole size there.
            let in_flight: InFlight = Box::pin(async move {
                // A bug in one request's handling answers 500 instead of dropping the
                // connection without a word.
                let response = catch_panic(handler.handle(req))
                    .await
                    .unwrap_or_else(|panic| {
                        tracing::error!(server = name, %panic, "request handler panicked");
                        internal_error()
                    });
                answers.record();
                Ok::<_, Infallible>(response)
            });
            in_flight
        });
        let mut conn = self.http1.serve_connection(TokioIo::new(io), service);
        let closing = self.closing.cancelled();
        tokio::pin!(closing);
        let mut draining = false;
        let ended = poll_fn(|cx| {
            if !draining && closing.as_mut().poll(cx).is_ready() {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            conn.poll_without_shutdown(cx)
        })
        .await;
        if let Err(err) = ended {
            tracing::debug!(server = name, error = %err, "connection ended with an error");
            return None;
        }
        let parts = conn.into_parts();
        let mut io = parts.io.into_inner();
        if !io.take_parked() || draining {
            return None;
        }
        if !parts.read_buf.is_empty() {
            // Parking requires every byte read to belong to an answered request.
            tracing::error!(
                server = name,
                bytes = parts.read_buf.len(),
                "unparsed bytes left at an idle point; closing the connection"
            );
            return None;
        }
        Some(io)
    }
}

fn http1_builder(header_read: Duration) -> Arc<http1::Builder> {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    Arc::new(builder)
}

/// Resolves when a parked connection has been idle too long; never without a limit.
async fn idle_expiry(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}
