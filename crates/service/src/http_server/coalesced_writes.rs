//! A connection's small writes, sent together.
//!
//! One HTTP/2 connection carries the NLP calls of a whole worker: thousands of
//! requests and answers a second, and the connection's task flushed each call's
//! frames on their own, so both ends made about one `write` a call (on loopback each
//! write also runs the receiver's TCP path and wakes its reader). [`CoalescedWrites`]
//! lets a flush wait once for the other tasks ready to run: the calls they start (or
//! the answers they finish) meanwhile go out in the same `write`. The wait is one turn
//! of the runtime's queue, not a timer, so no call waits for a clock tick.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes that are written at once, without waiting for other tasks.
const WRITE_AT_BYTES: usize = 64 * 1024;

/// `IO` whose writes are buffered and whose flushes first let the other ready tasks
/// run once, so small writes made close together leave in one system call. Reads
/// pass through.
pub struct CoalescedWrites<IO> {
    inner: IO,
    buffer: Vec<u8>,
    /// Bytes at the start of `buffer` already handed to `inner`.
    sent: usize,
    /// Set once a flush has let the other ready tasks run before writing.
    yielded: bool,
}

impl<IO> CoalescedWrites<IO> {
    /// Wraps `inner`, with nothing buffered.
    pub fn new(inner: IO) -> CoalescedWrites<IO> {
        CoalescedWrites {
            inner,
            buffer: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> CoalescedWrites<IO> {
    /// Hands every buffered byte to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buffer.clear();
        self.sent = 0;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buffer.len() >= WRITE_AT_BYTES {
            ready!(this.poll_send(cx))?;
        }
        this.buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffer.is_empty() {
            if !this.yielded && this.buffer.len() < WRITE_AT_BYTES {
                // Woken at once, the task goes to the back of the run queue: the
                // tasks ahead of it run first, and the next poll writes.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that counts the writes it is handed.
    #[derive(Default)]
    struct CountingPeer {
        writes: usize,
        received: Vec<u8>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for CountingPeer {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.received.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Counts how often the task it stands for is woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll_flush(io: &mut CoalescedWrites<CountingPeer>, wakes: &Arc<Wakes>) -> Poll<()> {
        let waker = Waker::from(wakes.clone());
        Pin::new(io)
            .poll_flush(&mut Context::from_waker(&waker))
            .map(|flushed| flushed.expect("the peer never fails"))
    }

    fn write(io: &mut CoalescedWrites<CountingPeer>, data: &[u8]) {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let written = Pin::new(io).poll_write(&mut Context::from_waker(&waker), data);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == data.len()));
    }

    #[test]
    fn a_flush_waits_one_turn_and_writes_what_came_meanwhile_in_one_write() {
        let wakes = Arc::new(Wakes::default());
        let mut io = CoalescedWrites::new(CountingPeer::default());
        write(&mut io, b"one ");
        assert!(
            poll_flush(&mut io, &wakes).is_pending(),
            "lets other tasks run first"
        );
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "and wakes itself to come back"
        );
        write(&mut io, b"two");
        assert!(poll_flush(&mut io, &wakes).is_ready());
        assert_eq!(io.inner.writes, 1, "both in one write");
        assert_eq!(io.inner.received, b"one two");
        assert_eq!(io.inner.flushes, 1);

        // The next flush waits its own turn again.
        write(&mut io, b"three");
        assert!(poll_flush(&mut io, &wakes).is_pending());
        assert!(poll_flush(&mut io, &wakes).is_ready());
        assert_eq!(io.inner.writes, 2);
    }

    #[test]
    fn a_flush_with_nothing_buffered_does_not_wait() {
        let wakes = Arc::new(Wakes::default());
        let mut io = CoalescedWrites::new(CountingPeer::default());
        assert!(poll_flush(&mut io, &wakes).is_ready());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
        assert_eq!(io.inner.flushes, 1);
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting() {
        let wakes = Arc::new(Wakes::default());
        let mut io = CoalescedWrites::new(CountingPeer::default());
        write(&mut io, &vec![7u8; WRITE_AT_BYTES]);
        assert!(poll_flush(&mut io, &wakes).is_ready());
        assert_eq!(io.inner.received.len(), WRITE_AT_BYTES);
        // More after a full buffer sends the full one first.
        write(&mut io, &vec![7u8; WRITE_AT_BYTES]);
        write(&mut io, b"x");
        assert_eq!(io.inner.writes, 2);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered_first() {
        let mut io = CoalescedWrites::new(CountingPeer::default());
        io.write_all(b"last words").await.expect("buffered");
        io.shutdown().await.expect("shut down");
        assert_eq!(io.inner.received, b"last words");
        assert!(io.inner.shut);
    }

    #[tokio::test]
    async fn over_a_real_pipe_a_flush_completes_and_reads_pass_through() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(client);
        io.write_all(b"ping").await.expect("buffered");
        io.flush().await.expect("flushed after one turn");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"ping");

        server.write_all(b"pong").await.expect("sent");
        io.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }
}
