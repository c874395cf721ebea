//! The HTTP/1.1 accept loop shared by the ingest API and the admin listener: keep-alive
//! connections, and on shutdown no new connections while in-flight requests finish
//! within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::supervisor::catch_panic;

pub type HttpResponse = Response<Full<Bytes>>;

type InFlight = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

/// One request in, one complete response out.
pub trait HttpHandler: Send + Sync + 'static {
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
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    accept(
        name,
        Arc::new(listener),
        handler,
        graceful.clone(),
        shutdown,
    )
    .await;
    drain(name, graceful, grace).await;
}

/// Accepts connections and serves them until `shutdown` fires. The listener and the
/// drain's watcher are shared so a supervisor can restart this loop on the same socket
/// without losing track of the connections the earlier run opened.
pub async fn accept<H: HttpHandler>(
    name: &'static str,
    listener: Arc<TcpListener>,
    handler: Arc<H>,
    graceful: Arc<GracefulShutdown>,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
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
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            // Boxed: hyper keeps room for one in-flight future in every connection for
            // as long as it is open, so an unboxed handler future would cost its whole
            // size on each idle keep-alive connection (docs/BENCHMARKS.md).
            let in_flight: InFlight = Box::pin(async move {
                // A bug in one request's handling answers 500 instead of dropping the
                // connection without a word.
                let response = catch_panic(handler.handle(req))
                    .await
                    .unwrap_or_else(|panic| {
                        tracing::error!(server = name, %panic, "request handler panicked");
                        internal_error()
                    });
                Ok::<_, Infallible>(response)
            });
            in_flight
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(server = name, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Waits, for at most `grace`, until every connection `accept` opened has finished its
/// request in progress. Call it once the listener is closed (every `accept` has returned
/// and its socket is dropped), so no new connection lands on a server that is going away.
pub async fn drain(name: &'static str, graceful: Arc<GracefulShutdown>, grace: Duration) {
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::warn!(
            server = name,
            "an accept loop is still running; not draining"
        );
        return;
    };
    tracing::info!(server = name, "stopped accepting; draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(server = name, "all connections drained"),
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
