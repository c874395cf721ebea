//! One cleartext HTTP/2 connection to the NLP API, shared by every call and
//! opened again after it ends.
//!
//! Built on the `h2` crate directly rather than hyper's client: each call
//! opens its stream and sends its body from the calling task, where hyper's
//! client hands every request to a dispatcher task and spawns one more task
//! per request to send the body. At thousands of calls a second those task
//! hops were a large part of the worker's CPU.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream};
use hyper::{Request, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::outcome::AttemptError;
use crate::http_server::CoalescedWrites;

/// Reset streams remembered per connection (h2's default is 10), so an answer
/// to a call that already timed out is dropped quietly instead of counting as
/// a protocol error against the connection.
const REMEMBERED_RESETS: usize = 16_384;
/// Receive windows: thousands of small answers in flight never wait for a
/// window update.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 8 << 20;
/// A ping this often notices a peer that went away without closing the
/// connection; one unanswered for as long closes it, and the next call
/// connects again.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The open connection and its number, so the task of a connection that
/// ended forgets that one and not a newer one.
#[derive(Clone)]
struct Open {
    generation: u64,
    send: SendRequest<Bytes>,
}

/// What every call shares: the open connection, if any.
#[derive(Default)]
struct Slot {
    open: Option<Open>,
    generation: u64,
}

/// An HTTP/2 session with the NLP host: `send` sends one request on it.
#[derive(Clone)]
pub(crate) struct H2Session {
    authority: String,
    max_body_bytes: usize,
    keep_alive: Duration,
    /// Set when the server answered the connection preface in HTTP/1.x: it does
    /// not speak HTTP/2 without negotiation.
    answered_http1: Arc<AtomicBool>,
    slot: Arc<Mutex<Slot>>,
    /// Held while connecting, so a burst of calls after a failure opens one
    /// connection, not one each.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for H2Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Session")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl H2Session {
    /// A session with `url`'s host; nothing is connected until the first call.
    pub(crate) fn new(url: &Uri, max_body_bytes: usize) -> H2Session {
        let authority = url.authority().map_or_else(String::new, |a| {
            let port = a.port_u16().unwrap_or(80);
            // An IPv6 host keeps its brackets: "[::1]:8090".
            format!("{}:{port}", a.host())
        });
        H2Session {
            authority,
            max_body_bytes,
            keep_alive: KEEP_ALIVE,
            answered_http1: Arc::default(),
            slot: Arc::default(),
            connecting: Arc::default(),
        }
    }

    /// Sends `request` with `body` and returns the status and the whole answer
    /// (at most `max_body_bytes`).
    pub(crate) async fn send(
        &self,
        request: Request<()>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), AttemptError> {
        // A connection that fails ends its driver task, which forgets it;
        // calls never close it themselves, so a reset stream costs one call.
        let open = self.open().await?;
        let mut send = open.send.ready().await.map_err(transport)?;
        let (response, mut stream) = send.send_request(request, false).map_err(transport)?;
        stream.send_data(body, true).map_err(transport)?;
        let response = response.await.map_err(transport)?;
        let status = response.status();
        let answer = read_answer(response.into_body(), self.max_body_bytes).await?;
        Ok((status, answer))
    }

    /// Whether the server answered in HTTP/1.x instead of HTTP/2.
    pub(crate) fn answered_http1(&self) -> bool {
        self.answered_http1.load(Ordering::Relaxed)
    }

    /// The open connection, connecting first when there is none.
    async fn open(&self) -> Result<Open, AttemptError> {
        match self.current() {
            Some(open) => Ok(open),
            // Boxed: connecting is rare, and its future would otherwise make
            // every call's future (moved at each spawn) several times larger.
            None => Box::pin(self.connect()).await,
        }
    }

    async fn connect(&self) -> Result<Open, AttemptError> {
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| AttemptError::Connect(format!("tcp connect error: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| AttemptError::Connect(format!("TCP_NODELAY: {e}")))?;
        let (send, mut connection) = h2::client::Builder::new()
            .max_concurrent_reset_streams(REMEMBERED_RESETS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // Calls started together share a write (docs/BENCHMARKS-HISTORY.md).
            .handshake::<_, Bytes>(CoalescedWrites::new(FirstAnswer {
                tcp,
                seen: false,
                answered_http1: self.answered_http1.clone(),
            }))
            .await
            .map_err(transport)?;
        let open = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.generation += 1;
            let open = Open {
                generation: slot.generation,
                send,
            };
            slot.open = Some(open.clone());
            open
        };
        let pings = connection.ping_pong();
        // Weak: once every handle to the session is gone, so is the last
        // `SendRequest`, and the connection ends by itself.
        let slot = Arc::downgrade(&self.slot);
        let generation = open.generation;
        let keep_alive_every = self.keep_alive;
        tokio::spawn(async move {
            // Runs the connection until it ends or stops answering pings;
            // either way the next call opens a new one.
            match pings {
                Some(pings) => {
                    tokio::select! {
                        ended = &mut connection => log_end(ended),
                        () = keep_alive(pings, keep_alive_every) => tracing::debug!("NLP API connection stopped answering pings; closing it"),
                    }
                }
                None => log_end(connection.await),
            }
            if let Some(slot) = slot.upgrade() {
                forget(&slot, generation);
            }
        });
        Ok(open)
    }

    fn current(&self) -> Option<Open> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.open.clone()
    }
}

/// Forgets connection `generation`, if it is still the open one.
fn forget(slot: &Mutex<Slot>, generation: u64) {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if slot
        .open
        .as_ref()
        .is_some_and(|o| o.generation == generation)
    {
        slot.open = None;
    }
}

/// The connection's socket, noting whether the server's first bytes are an
/// HTTP/1.x status line ("HTTP/1.1 400 ..."), which an HTTP/2 server's first
/// frame (SETTINGS) can never begin with.
struct FirstAnswer {
    tcp: TcpStream,
    seen: bool,
    answered_http1: Arc<AtomicBool>,
}

impl AsyncRead for FirstAnswer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if !self.seen {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let head = &new[..new.len().min(5)];
                if b"HTTP/".starts_with(head) {
                    self.answered_http1.store(true, Ordering::Relaxed);
                }
                self.seen = true;
            }
        }
        read
    }
}

impl AsyncWrite for FirstAnswer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The whole answer, at most `limit` bytes; received bytes are handed back
/// to the connection's window as they are read. An answer in one frame (the
/// usual case) is returned without a copy.
async fn read_answer(mut answer: RecvStream, limit: usize) -> Result<Bytes, AttemptError> {
    let mut whole = Bytes::new();
    while let Some(chunk) = answer.data().await {
        let chunk = chunk.map_err(transport)?;
        answer
            .flow_control()
            .release_capacity(chunk.len())
            .map_err(transport)?;
        if whole.len() + chunk.len() > limit {
            return Err(AttemptError::Invalid(format!(
                "body larger than {limit} bytes"
            )));
        }
        whole = if whole.is_empty() {
            chunk
        } else {
            [whole, chunk].concat().into()
        };
    }
    Ok(whole)
}

/// Pings every `every`; returns once a ping goes unanswered for as long.
async fn keep_alive(mut pings: PingPong, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn log_end(ended: Result<(), h2::Error>) {
    if let Err(error) = ended {
        tracing::debug!(%error, "NLP API connection ended");
    }
}

fn transport(e: h2::Error) -> AttemptError {
    AttemptError::Connect(format!("http2 error: {e}"))
}

#[cfg(test)]
#[path = "h2_session_tests.rs"]
mod tests;
