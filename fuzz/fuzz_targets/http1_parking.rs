//! Connection parking, under the real hyper server.
//!
//! Input: one byte giving the size of each read (0: everything in one read), then the
//! bytes a client sends; between reads the client is silent for a moment, which is when
//! the server may park the connection. Served the way the server serves a connection
//! (hyper over `ParkingIo`, a new hyper connection after each park) and, for
//! comparison, by one plain hyper connection. Whenever the connection is parked hyper
//! holds no byte it read, and the client gets exactly the bytes the plain server sends:
//! parking is invisible to clients.

#![no_main]

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use chat_analytics::http_server::fuzzing::{Answers, ParkingIo};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Runtime;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

fuzz_target!(|input: &[u8]| {
    let Some((&read_size, stream)) = input.split_first() else {
        return;
    };
    let read_size = if read_size == 0 {
        stream.len().max(1)
    } else {
        usize::from(read_size)
    };
    let parked = RUNTIME.block_on(serve_with_parking(stream, read_size));
    let plain = RUNTIME.block_on(serve_plain(stream, read_size));
    assert_eq!(
        without_dates(&parked),
        without_dates(&plain),
        "parking changed the answers to {:?}",
        String::from_utf8_lossy(stream)
    );
});

/// Serves the client as `Connections::serve` does; returns what the client received.
async fn serve_with_parking(stream: &[u8], read_size: usize) -> Vec<u8> {
    let client = ScriptedClient::new(stream, read_size);
    let received = client.received.clone();
    let mut io = ParkingIo::new(client);
    loop {
        let answers = io.answers();
        let connection = http1::Builder::new().serve_connection(
            TokioIo::new(io),
            service_fn(move |request| answer(request, answers.clone())),
        );
        let Ok(parts) = connection.without_shutdown().await else {
            break;
        };
        let mut returned = parts.io.into_inner();
        if !returned.take_parked() {
            break;
        }
        assert!(
            parts.read_buf.is_empty(),
            "parked while hyper held {} unparsed bytes of {:?}",
            parts.read_buf.len(),
            String::from_utf8_lossy(stream)
        );
        io = returned;
    }
    let bytes = received.lock().expect("not poisoned").clone();
    bytes
}

/// The same client on one hyper connection that is never parked.
async fn serve_plain(stream: &[u8], read_size: usize) -> Vec<u8> {
    let client = ScriptedClient::new(stream, read_size);
    let received = client.received.clone();
    let answers = Arc::new(Answers::default());
    let connection = http1::Builder::new().serve_connection(
        TokioIo::new(client),
        service_fn(move |request| answer(request, answers.clone())),
    );
    // An error is hyper ending the connection on bad input, as it would in production.
    let _ = connection.await;
    let bytes = received.lock().expect("not poisoned").clone();
    bytes
}

/// Answers with what was asked (method, path, body size), so a request answered twice,
/// lost or merged with another shows in the transcript.
async fn answer(
    request: Request<Incoming>,
    answers: Arc<Answers>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let asked = format!("{} {}", request.method(), request.uri().path());
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len().to_string(),
        Err(_) => "unreadable".to_owned(),
    };
    answers.record();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{asked} {body}"
    )))))
}

/// hyper stamps each answer with the current second.
fn without_dates(transcript: &[u8]) -> String {
    String::from_utf8_lossy(transcript)
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A client playing `stream` in reads of `read_size` bytes, silent once between reads
/// (the read is pending, and the client wakes the reader at once), then closing.
struct ScriptedClient {
    stream: Vec<u8>,
    sent: usize,
    read_size: usize,
    silent_next: bool,
    received: Arc<Mutex<Vec<u8>>>,
}

impl ScriptedClient {
    fn new(stream: &[u8], read_size: usize) -> ScriptedClient {
        ScriptedClient {
            stream: stream.to_vec(),
            sent: 0,
            read_size,
            silent_next: false,
            received: Arc::default(),
        }
    }
}

impl AsyncRead for ScriptedClient {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.silent_next {
            this.silent_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let left = &this.stream[this.sent..];
        let n = left.len().min(this.read_size).min(buf.remaining());
        buf.put_slice(&left[..n]);
        this.sent += n;
        // Silent after each read; at the end, silent once more before closing.
        this.silent_next = n > 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedClient {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.received
            .lock()
            .expect("not poisoned")
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
