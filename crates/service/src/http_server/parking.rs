//! The socket of one keep-alive connection, as hyper sees it. hyper keeps two 8 KiB
//! buffers for as long as a connection is open, even idle; with tens of thousands of
//! mostly idle bots that is most of the service's memory. So when the client has nothing
//! in flight (every request received in full and answered, every answer flushed, nothing
//! more to read), this socket reports end-of-stream to hyper. hyper then finishes the
//! connection as a client that closed while idle, without writing or closing anything,
//! and the server takes the socket back and parks it until the next request arrives.
//!
//! The stream type is a parameter only so the fuzz targets can drive hyper over an
//! in-memory stream; the server uses a `TcpStream`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::framing::RequestFraming;

/// What the request handlers of one connection have answered; shared by its service
/// and its socket. Both run in the connection's task, so relaxed ordering suffices.
#[derive(Debug, Default)]
pub struct Answers {
    given: AtomicU64,
    unflushed: AtomicBool,
}

impl Answers {
    /// Called as a handler hands its response to hyper, which writes it before it
    /// reads again.
    pub fn record(&self) {
        self.unflushed.store(true, Ordering::Relaxed);
        self.given.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection's socket that reports end-of-stream to hyper while the client is idle,
/// so the server can park it without hyper's buffers.
pub struct ParkingIo<S = TcpStream> {
    stream: S,
    framing: RequestFraming,
    answers: Arc<Answers>,
    parked: bool,
}

impl<S> ParkingIo<S> {
    /// Wraps a freshly accepted stream: nothing read, nothing answered yet.
    pub fn new(stream: S) -> ParkingIo<S> {
        ParkingIo {
            stream,
            framing: RequestFraming::default(),
            answers: Arc::default(),
            parked: false,
        }
    }

    /// The connection's answer count, for its request handlers to [`Answers::record`] into.
    pub fn answers(&self) -> Arc<Answers> {
        self.answers.clone()
    }

    /// Whether hyper was last told end-of-stream because the client was idle (rather
    /// than because the client closed, or hyper ended the connection itself).
    pub fn take_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked)
    }

    /// hyper holds nothing of this client's: no partial request, no unanswered request,
    /// no unflushed answer.
    fn client_idle(&self) -> bool {
        self.framing.at_boundary()
            && self.answers.given.load(Ordering::Relaxed) == self.framing.completed()
            && !self.answers.unflushed.load(Ordering::Relaxed)
    }
}

impl ParkingIo<TcpStream> {
    /// Waits until the parked connection has bytes (or an end) to read.
    pub(super) async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParkingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.framing.observe(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.client_idle() => {
                this.parked = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParkingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    /// hyper flushes the socket only once its own buffer is empty, so a completed
    /// flush means every answer given so far has reached the kernel.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(())))
            && this.answers.unflushed.swap(false, Ordering::Relaxed)
            && this.client_idle()
        {
            // hyper waits for the socket after a slow answer (it saw the socket empty
            // while the handler ran), so it would not read again until the client
            // sends more. One more poll lets the read above report the idle client.
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
