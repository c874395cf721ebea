//! The HTTP/1.1 server shared by the ingest API and the admin listener: keep-alive
//! connections that hold no buffers while idle, and on shutdown no new connections
//! while in-flight requests finish within the grace period.

mod coalesced_writes;
mod connection;
mod framing;
mod parking;

pub use coalesced_writes::CoalescedWrites;
pub use connection::{ConnectionMetrics, ConnectionTimeouts, Connections};

/// The connection internals the fuzz targets in `fuzz/` drive directly (cargo-fuzz
/// builds with `--cfg fuzzing`); not part of the API otherwise.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use super::framing::RequestFraming;
    pub use super::parking::{Answers, ParkingIo};
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// A whole response: status, headers and the body in memory.
pub type HttpResponse = Response<Full<Bytes>>;

/// One request in, one complete response out.
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers `req`. A panic in here is caught and answered 500; the connection stays.
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = HttpResponse> + Send;
}

/// Pending-connection queue of every listener (capped by net.core.somaxconn). Fleets of
/// bots or load generators open thousands of connections at once; the usual 128 or 1024
/// would drop SYNs and show up as connect latency that is not the server's.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a deep backlog. With `reuse_port`, several processes of the
/// same user share the address and the kernel spreads new connections over them
/// (SO_REUSEPORT): the way past one process's open-file limit.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `handler` on `listener` until `shutdown` fires, then closes the listener and
/// drains open connections for at most `grace`.
pub async fn serve<H: HttpHandler>(
    name: &'static str,
    listener: TcpListener,
    handler: Arc<H>,
    connections: Connections,
    shutdown: CancellationToken,
    grace: Duration,
) {
    accept(
        name,
        Arc::new(listener),
        handler,
        connections.clone(),
        shutdown,
    )
    .await;
    drain(name, connections, grace).await;
}

/// Accepts connections and serves them until `shutdown` fires. The listener and the
/// connection set are shared so a supervisor can restart this loop on the same socket
/// without losing track of the connections the earlier run opened.
pub async fn accept<H: HttpHandler>(
    name: &'static str,
    listener: Arc<TcpListener>,
    handler: Arc<H>,
    connections: Connections,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Usually EMFILE: back off instead of spinning on the error.
                    tracing::warn!(server = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(server = name, error = %err, "set_nodelay failed");
        }
        connections.open(name, stream, handler.clone());
    }
}

/// Closes every connection `accept` opened: idle ones at once, busy ones once their
/// request in progress is answered, waiting at most `grace`. Call it once the listener
/// is closed (every `accept` has returned and its socket is dropped), so no new
/// connection lands on a server that is going away.
pub async fn drain(name: &'static str, connections: Connections, grace: Duration) {
    tracing::info!(server = name, "stopped accepting; draining connections");
    tokio::select! {
        () = connections.close_all() => tracing::info!(server = name, "all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(server = name, ?grace, "grace period over with connections still open");
        }
    }
}

/// A JSON response with the given status; serialising our own types cannot fail.
pub fn json_response(status: hyper::StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn internal_error() -> HttpResponse {
    json_response(
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"error": {"code": "internal_error", "message": "the server failed to handle this request", "field": null}}),
    )
}

#[cfg(test)]
mod tests;
