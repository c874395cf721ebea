//! A connection's small writes, sent together.
//!
//! One HTTP/2 connection carries the NLP calls of a whole worker: thousands of
//! requests and answers a second, each flushed on its own, so both ends made about
//! one `write` a call (and on loopback each write also runs the receiver's TCP path
//! and wakes its reader). [`CoalescedWrites`] holds a flush back for a short delay
//! after the first unsent byte, so whatever the connection writes meanwhile goes out
//! in one `write`. Against answers that take hundreds of milliseconds, a millisecond
//! or two is nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Buffered bytes that are written at once, without waiting for the delay.
const WRITE_AT_BYTES: usize = 64 * 1024;

/// `IO` whose flushes wait up to `delay` after the first byte not yet sent, so
/// small writes close together leave in one system call. Reads pass through.
pub struct CoalescedWrites<IO> {
    inner: IO,
    delay: Duration,
    buffer: Vec<u8>,
    /// Bytes at the start of `buffer` already handed to `inner`.
    sent: usize,
    /// When the buffered bytes are due; reset when the buffer gets its first byte.
    due: Pin<Box<Sleep>>,
}

impl<IO> CoalescedWrites<IO> {
    /// Wraps `inner`; must be called within a Tokio runtime (the delay is its timer).
    pub fn new(inner: IO, delay: Duration) -> CoalescedWrites<IO> {
        CoalescedWrites {
            inner,
            delay,
            buffer: Vec::new(),
            sent: 0,
            due: Box::pin(tokio::time::sleep(delay)),
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
        if this.buffer.is_empty() {
            let due = Instant::now() + this.delay;
            this.due.as_mut().reset(due);
        }
        this.buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffer.is_empty() {
            // Pending until due: the timer wakes the connection's task, which flushes
            // again and finds the delay over.
            if this.buffer.len() < WRITE_AT_BYTES {
                ready!(this.due.as_mut().poll(cx));
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const DELAY: Duration = Duration::from_millis(5);

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

    fn flush_now(io: &mut CoalescedWrites<CountingPeer>) -> Poll<io::Result<()>> {
        let waker = futures::task::noop_waker();
        Pin::new(io).poll_flush(&mut Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn writes_before_the_delay_leave_together_once_it_is_over() {
        let mut io = CoalescedWrites::new(CountingPeer::default(), DELAY);
        io.write_all(b"one ").await.expect("buffered");
        assert!(flush_now(&mut io).is_pending(), "the delay is not over");
        io.write_all(b"two").await.expect("buffered");
        assert!(flush_now(&mut io).is_pending());
        assert_eq!(io.inner.writes, 0);

        io.flush().await.expect("flushed once due");
        assert_eq!(io.inner.writes, 1, "both in one write");
        assert_eq!(io.inner.received, b"one two");
        assert_eq!(io.inner.flushes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_counts_from_the_first_unsent_byte() {
        let mut io = CoalescedWrites::new(CountingPeer::default(), DELAY);
        io.write_all(b"a").await.expect("buffered");
        tokio::time::advance(DELAY - Duration::from_millis(1)).await;
        io.write_all(b"b").await.expect("buffered");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(flush_now(&mut io).is_ready(), "due from the first byte");
        assert_eq!(io.inner.received, b"ab");

        // The next first byte starts a new delay.
        io.write_all(b"c").await.expect("buffered");
        assert!(flush_now(&mut io).is_pending());
        tokio::time::advance(DELAY).await;
        assert!(flush_now(&mut io).is_ready());
        assert_eq!(io.inner.writes, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_is_written_without_waiting() {
        let mut io = CoalescedWrites::new(CountingPeer::default(), DELAY);
        let big = vec![7u8; WRITE_AT_BYTES];
        io.write_all(&big).await.expect("buffered");
        assert!(flush_now(&mut io).is_ready());
        assert_eq!(io.inner.received.len(), WRITE_AT_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_sends_what_is_buffered_first() {
        let mut io = CoalescedWrites::new(CountingPeer::default(), DELAY);
        io.write_all(b"last words").await.expect("buffered");
        io.shutdown().await.expect("shut down");
        assert_eq!(io.inner.received, b"last words");
        assert!(io.inner.shut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_waiting_for_the_delay_wakes_its_task_when_due() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(client, DELAY);
        io.write_all(b"ping").await.expect("buffered");
        let flushed = io.flush();
        tokio::pin!(flushed);
        // Pending at first; the timer, not another write, completes it.
        assert!(futures::poll!(flushed.as_mut()).is_pending());
        flushed.await.expect("flushed when due");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"ping");
    }

    #[tokio::test(start_paused = true)]
    async fn reads_pass_through() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites::new(client, DELAY);
        server.write_all(b"answer").await.expect("sent");
        let mut got = [0u8; 6];
        io.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"answer");
    }
}
