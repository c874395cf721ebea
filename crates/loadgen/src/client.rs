//! One keep-alive connection: raw HTTP/1.1 over a tokio `TcpStream`.
//!
//! A chatbot holds one connection and sends one message at a time, so each
//! connection here has at most one request in flight (no pipelining). When
//! every connection is busy, the next request waits for one in the driver, and
//! its latency, measured from its intended send time, grows: that is the
//! queueing a real fleet of bots would see.
//!
//! HTTP is written and parsed by hand (`httparse` for the response head) rather
//! than through a client library because 50,000 idle connections must cost
//! little: an idle connection is a socket and a small task; request and
//! response buffers exist only while a request is in flight.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use uuid::Uuid;

use super::payload::{self, BotPlan, MessageSpec};

/// Largest response head we accept; the API's heads are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body we read; a 500-message batch answer is about 20 KiB.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Initial response buffer: enough for a single-message answer in one read.
const READ_BUFFER_BYTES: usize = 512;
/// Response headers parsed; hyper sends about five.
const MAX_HEADERS: usize = 32;

/// Where requests go, with the request heads prepared once.
#[derive(Debug)]
pub struct Target {
    /// Resolved address of the API listener (always loopback).
    pub addr: SocketAddr,
    /// `POST .../v1/messages` head up to `Content-Length: `.
    single_head: Box<[u8]>,
    /// `POST .../v1/messages/batch` head up to `Content-Length: `.
    batch_head: Box<[u8]>,
}

/// Why `--url` cannot be used.
#[derive(Debug, Error)]
pub enum TargetError {
    /// Not of the form `http://host[:port][/base]`.
    #[error("--url {url:?}: {reason}")]
    Invalid {
        /// `--url` as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host could not be resolved.
    #[error("--url {url:?}: cannot resolve {authority:?}: {source}")]
    Resolve {
        /// `--url` as given.
        url: String,
        /// The `host[:port]` that was looked up.
        authority: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host resolves only to addresses off this machine.
    #[error(
        "--url {url:?} resolves to {addrs:?}, not a loopback address: the load \
         generator only targets services on this machine (127.0.0.0/8 or ::1)"
    )]
    NotLoopback {
        /// `--url` as given.
        url: String,
        /// Every address it resolved to.
        addrs: Vec<SocketAddr>,
    },
}

impl Target {
    /// Parses `http://host[:port][/base]`, resolves it, and insists on a
    /// loopback address: this tool floods its target, and on a shared machine
    /// the only safe target is one on the same host.
    pub async fn resolve(url: &str, api_key: Option<&str>) -> Result<Target, TargetError> {
        let invalid = |reason| TargetError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only plain http:// URLs are supported"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid("expected http://host[:port][/path]"));
        }
        if base.contains(['?', '#', ' ']) {
            return Err(invalid("the base path may not carry a query or fragment"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|source| TargetError::Resolve {
                url: url.to_owned(),
                authority: authority.to_owned(),
                source,
            })?
            .collect();
        let addr = addrs
            .iter()
            .copied()
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| TargetError::NotLoopback {
                url: url.to_owned(),
                addrs: addrs.clone(),
            })?;
        let head = |path: &str| -> Box<[u8]> {
            let mut h = format!(
                "POST {base}{path} HTTP/1.1\r\nHost: {authority}\r\n\
                 User-Agent: chat-analytics-loadgen\r\nContent-Type: application/json\r\n"
            );
            if let Some(key) = api_key {
                h.push_str("Authorization: Bearer ");
                h.push_str(key);
                h.push_str("\r\n");
            }
            h.push_str("Content-Length: ");
            h.into_bytes().into_boxed_slice()
        };
        Ok(Target {
            addr,
            single_head: head("/v1/messages"),
            batch_head: head("/v1/messages/batch"),
        })
    }

    /// Encodes a full request around `body`.
    fn encode(&self, batch: bool, body: &[u8]) -> Vec<u8> {
        let head = if batch {
            &self.batch_head
        } else {
            &self.single_head
        };
        let len = body.len().to_string();
        let mut out = Vec::with_capacity(head.len() + len.len() + 4 + body.len());
        out.extend_from_slice(head);
        out.extend_from_slice(len.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// Opens a TCP connection, optionally from a chosen loopback source address.
///
/// One source address has about 28,000 ephemeral ports towards one server
/// address; spreading sockets over 127.0.0.x sources multiplies that. The
/// socket is bound with `IP_BIND_ADDRESS_NO_PORT` so the kernel picks the port
/// at connect time by the full 4-tuple instead of reserving one per bind.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        bind_address_no_port(&socket);
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    // Requests are written in one piece and answered in one: never wait for
    // Nagle's timer.
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a valid open socket owned by `socket` for the whole
    // call, and the option value points at a live c_int of the given size.
    // Failure only means the kernel reserves a port at bind time, which still
    // works with fewer connections, so the result is ignored.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &TcpSocket) {}

/// A parsed response: only what the report needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Whether a `Retry-After` header came with it (the API promises one on
    /// 429 and 503).
    pub retry_after: bool,
    /// Its value when given in seconds (the API's form), for a client that
    /// waits as told before trying again.
    pub retry_after_secs: Option<u64>,
    /// Whether the server lets us reuse the connection.
    pub keep_alive: bool,
}

/// Why a request got no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// Could not (re)open the connection.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// The server closed the connection before answering.
    Closed,
    /// A socket error while writing or reading.
    Io,
    /// The answer was not valid HTTP/1.x or was too large.
    BadResponse,
}

impl FailureKind {
    /// Label used in the report.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Closed => "closed",
            FailureKind::Io => "io",
            FailureKind::BadResponse => "bad_response",
        }
    }
}

/// An exchange that went wrong.
#[derive(Debug, Error)]
enum ExchangeError {
    #[error("connection closed by the server (nothing read: {nothing_read})")]
    Closed { nothing_read: bool },
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("bad response: {0}")]
    Bad(&'static str),
}

impl ExchangeError {
    fn kind(&self) -> FailureKind {
        match self {
            ExchangeError::Closed { .. } => FailureKind::Closed,
            ExchangeError::Io(_) => FailureKind::Io,
            ExchangeError::Bad(_) => FailureKind::BadResponse,
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Writes one request and reads its whole response.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Response, ExchangeError> {
    buf.clear();
    // A failed write means the server never got the request: for a reused
    // connection that is the stale keep-alive case, safe to retry.
    stream
        .write_all(request)
        .await
        .map_err(|_| ExchangeError::Closed { nothing_read: true })?;
    loop {
        let head = read_head(stream, buf).await?;
        if (100..200).contains(&head.status) {
            // An interim answer (e.g. 100 Continue): the real one follows.
            buf.drain(..head.len);
            continue;
        }
        let framing = head.framing;
        buf.drain(..head.len);
        let closed = read_body(stream, buf, framing).await?;
        return Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            retry_after_secs: head.retry_after_secs,
            keep_alive: head.keep_alive && !closed,
        });
    }
}

/// A parsed response head.
struct Head {
    len: usize,
    status: u16,
    retry_after: bool,
    retry_after_secs: Option<u64>,
    keep_alive: bool,
    framing: Framing,
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, ExchangeError> {
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ExchangeError::Bad("response head too large"));
        }
        let n = match stream.read_buf(buf).await {
            Ok(n) => n,
            // Reset before any answer: the server dropped the connection.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(ExchangeError::Closed {
                nothing_read: buf.is_empty(),
            });
        }
    }
}

/// Parses the head if complete; `Ok(None)` asks for more bytes.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Bad("unparsable response head")),
    };
    let status = resp.code.ok_or(ExchangeError::Bad("no status code"))?;
    let mut keep_alive = resp.version == Some(1);
    let mut retry_after = false;
    let mut retry_after_secs = None;
    let mut framing = Framing::UntilClose;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(ExchangeError::Bad("bad content-length"))?;
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if contains_token(h.value, b"chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                keep_alive = false;
            } else if contains_token(h.value, b"keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = !h.value.is_empty();
            retry_after_secs = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    if let Framing::Length(n) = framing {
        if n > MAX_BODY_BYTES {
            return Err(ExchangeError::Bad("response body too large"));
        }
    }
    Ok(Some(Head {
        len,
        status,
        retry_after,
        retry_after_secs,
        keep_alive,
        framing,
    }))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// Reads (and discards) the body; `buf` starts with the bytes after the head.
/// Returns whether the server closed the connection to end it.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> Result<bool, ExchangeError> {
    loop {
        let complete = match framing {
            Framing::Length(n) => buf.len() >= n,
            Framing::Chunked => chunked_len(buf)?.is_some(),
            Framing::UntilClose => false,
        };
        if complete {
            return Ok(false);
        }
        if buf.len() > MAX_BODY_BYTES {
            return Err(ExchangeError::Bad("response body too large"));
        }
        if stream.read_buf(buf).await? == 0 {
            return match framing {
                Framing::UntilClose => Ok(true),
                _ => Err(ExchangeError::Closed {
                    nothing_read: false,
                }),
            };
        }
    }
}

/// Length of a complete chunked body at the start of `buf`, or `None` if more
/// bytes are needed. Trailers are not expected from the API and not allowed.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, ExchangeError> {
    let mut pos = 0;
    loop {
        let (skip, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ExchangeError::Bad("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| ExchangeError::Bad("chunk too large"))?;
        let end = pos
            .checked_add(skip)
            .and_then(|p| p.checked_add(size))
            .and_then(|p| p.checked_add(2))
            .ok_or(ExchangeError::Bad("chunk too large"))?;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ExchangeError::Bad("chunk not terminated"));
        }
        if size == 0 {
            return Ok(Some(end));
        }
        pos = end;
    }
}

/// Everything a connection task needs besides its own socket, shared by all.
#[derive(Debug)]
pub struct ConnContext {
    pub target: Target,
    /// Global number of this process's first connection (several processes
    /// may share a run); bots are assigned by global number.
    pub first_conn: u32,
    pub bots: BotPlan,
    /// 0: single messages; N: batches of N.
    pub batch: u32,
    /// Per-request deadline, from the moment the connection picks it up.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Keep accepted message ids for the end-to-end lookup.
    pub collect_ids: bool,
    /// Hand each new request to the driver as it leaves, for the driver to
    /// send it again or write it to the ledger.
    pub keep_requests: bool,
    /// Share of messages (0 to 1) sent without `sent_at`.
    pub without_sent_at: f64,
}

/// Salt of the share of messages sent without `sent_at`.
const WITHOUT_SENT_AT_SALT: u64 = 0x5e7a;

/// A request as it went out, kept when it may be sent again with the same
/// message ids or written to the ledger.
#[derive(Debug)]
pub struct Prepared {
    /// The whole HTTP request.
    pub bytes: Vec<u8>,
    /// Each message's id, and whether it carried `sent_at`.
    pub messages: Vec<(Uuid, bool)>,
}

/// One request handed to an idle connection.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index in the schedule.
    pub seq: u64,
    /// Intended send time on the wall clock, written as `sent_at`.
    pub sent_at: DateTime<Utc>,
    /// A request sent before, to send again as it was (same message ids);
    /// `None` builds a new one.
    pub again: Option<Arc<Prepared>>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered(Response),
    Failed(FailureKind),
}

impl Outcome {
    /// The HTTP status, or the kind of failure when there was no answer.
    pub fn label(&self) -> String {
        match self {
            Outcome::Answered(r) => r.status.to_string(),
            Outcome::Failed(kind) => kind.label().to_owned(),
        }
    }
}

/// A finished request, reported back to the driver.
#[derive(Debug)]
pub struct Completion {
    pub conn: u32,
    pub seq: u64,
    /// When the connection picked the request up (intended time + queueing).
    pub started: Instant,
    /// When the whole response had been read, or the request failed.
    pub completed: Instant,
    pub outcome: Outcome,
    /// Ids of the messages in a new request (empty unless ids are collected).
    pub ids: Vec<Uuid>,
    /// Whether the connection is still open afterwards.
    pub open: bool,
    /// Whether the connection had to be re-opened for this request.
    pub reconnected: bool,
}

/// Messages from connection tasks to the driver.
#[derive(Debug)]
pub enum Event {
    Connected {
        conn: u32,
    },
    /// The first connect failed; the reason is the OS error's text (EMFILE,
    /// EADDRNOTAVAIL, ... tell which limit a big run hit) or "timeout".
    ConnectFailed {
        conn: u32,
        reason: String,
    },
    /// A new request is leaving (only when `ConnContext::keep_requests`).
    Started {
        conn: u32,
        request: Arc<Prepared>,
    },
    Done(Completion),
}

/// The life of one connection: open it, then serve jobs one at a time until
/// the driver closes the job channel.
///
/// A broken or server-closed connection is re-opened lazily by the next job,
/// whose latency then includes the reconnect, as a real bot's would. A request
/// that finds a reused connection closed before any byte of answer (the
/// server dropped an idle keep-alive) is retried once on a fresh connection:
/// the message id makes the retry idempotent.
pub async fn run_connection(
    conn: u32,
    source: Option<IpAddr>,
    ctx: Arc<ConnContext>,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::UnboundedSender<Event>,
) {
    let first = timeout(ctx.connect_timeout, connect(ctx.target.addr, source)).await;
    let stream = match first {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => {
            tracing::debug!(conn, %err, "connect failed");
            let reason = err.to_string();
            let _ = events.send(Event::ConnectFailed { conn, reason });
            return;
        }
        Err(_) => {
            let reason = "timeout".to_owned();
            let _ = events.send(Event::ConnectFailed { conn, reason });
            return;
        }
    };
    if events.send(Event::Connected { conn }).is_err() {
        return;
    }
    let mut slot = Some(stream);
    let mut nth: u64 = 0;
    let mut served_on_stream: u64 = 0;
    while let Some(mut job) = jobs.recv().await {
        let started = Instant::now();
        let (request, ids) = match job.again.take() {
            Some(sent_before) => (sent_before, Vec::new()),
            None => {
                let bot = ctx.bots.bot_for(ctx.first_conn + conn, nth);
                nth += 1;
                let (request, ids) = build_request(&ctx, bot, &job);
                if ctx.keep_requests {
                    let request = request.clone();
                    if events.send(Event::Started { conn, request }).is_err() {
                        return;
                    }
                }
                (request, ids)
            }
        };
        let mut reconnected = false;
        let result = timeout(ctx.timeout, async {
            let mut retried = false;
            loop {
                if slot.is_none() {
                    let s = connect(ctx.target.addr, source)
                        .await
                        .map_err(|_| FailureKind::Connect)?;
                    slot = Some(s);
                    reconnected = true;
                    served_on_stream = 0;
                }
                let Some(s) = slot.as_mut() else {
                    return Err(FailureKind::Connect);
                };
                let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
                match exchange(s, &request.bytes, &mut buf).await {
                    Ok(r) => return Ok(r),
                    Err(ExchangeError::Closed { nothing_read: true })
                        if served_on_stream > 0 && !retried =>
                    {
                        slot = None;
                        retried = true;
                    }
                    Err(e) => return Err(e.kind()),
                }
            }
        })
        .await;
        let outcome = match result {
            Ok(Ok(r)) => Outcome::Answered(r),
            Ok(Err(kind)) => Outcome::Failed(kind),
            Err(_) => Outcome::Failed(FailureKind::Timeout),
        };
        match outcome {
            Outcome::Answered(r) if r.keep_alive => served_on_stream += 1,
            _ => slot = None,
        }
        let done = Completion {
            conn,
            seq: job.seq,
            started,
            completed: Instant::now(),
            outcome,
            ids,
            open: slot.is_some(),
            reconnected,
        };
        if events.send(Event::Done(done)).is_err() {
            return;
        }
    }
    if let Some(mut s) = slot {
        let _ = s.shutdown().await;
    }
}

/// The request for `job` from `bot`, and the message ids inside (empty
/// unless `ctx.collect_ids`).
fn build_request(ctx: &ConnContext, bot: u32, job: &Job) -> (Arc<Prepared>, Vec<Uuid>) {
    let count = ctx.batch.max(1) as usize;
    let mut body = Vec::with_capacity(256 * count);
    let specs: Vec<MessageSpec> = (0..count)
        .map(|i| {
            let seq = job.seq * count as u64 + i as u64;
            let omit = payload::in_share(seq, WITHOUT_SENT_AT_SALT, ctx.without_sent_at);
            MessageSpec {
                id: Uuid::now_v7(),
                bot,
                seq,
                sent_at: (!omit).then_some(job.sent_at),
            }
        })
        .collect();
    let ids = if ctx.collect_ids {
        specs.iter().map(|s| s.id).collect()
    } else {
        Vec::new()
    };
    if ctx.batch == 0 {
        payload::write_message(&mut body, &specs[0]);
    } else {
        payload::write_batch(&mut body, &specs);
    }
    let prepared = Prepared {
        bytes: ctx.target.encode(ctx.batch > 0, &body),
        messages: specs.iter().map(|s| (s.id, s.sent_at.is_some())).collect(),
    };
    (Arc::new(prepared), ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Head {
        match parse_head(bytes) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("incomplete head"),
            Err(e) => panic!("bad head: {e}"),
        }
    }

    #[test]
    fn parses_a_202_with_content_length() {
        let h = head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\n\r\n{\"a\":\"b\"}...");
        assert_eq!(h.status, 202);
        assert!(h.keep_alive);
        assert!(!h.retry_after);
        assert!(matches!(h.framing, Framing::Length(12)));
    }

    #[test]
    fn sees_retry_after_and_connection_close() {
        let h = head(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.status, 429);
        assert!(h.retry_after);
        assert_eq!(h.retry_after_secs, Some(1));
        assert!(!h.keep_alive);
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(matches!(parse_head(b"HTTP/1.1 202 Acc"), Ok(None)));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_at_the_zero_chunk() {
        assert!(matches!(
            chunked_len(b"5\r\nhello\r\n0\r\n\r\n"),
            Ok(Some(15))
        ));
        assert!(matches!(chunked_len(b"5\r\nhello\r\n"), Ok(None)));
        assert!(matches!(chunked_len(b"5\r\nhel"), Ok(None)));
    }

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        let t = Target::resolve("http://127.0.0.1:8080", None).await;
        assert!(t.is_ok());
        let t = Target::resolve("http://10.1.2.3:8080", None).await;
        assert!(matches!(t, Err(TargetError::NotLoopback { .. })));
        let t = Target::resolve("https://127.0.0.1:8080", None).await;
        assert!(matches!(t, Err(TargetError::Invalid { .. })));
    }

    #[tokio::test]
    async fn requests_carry_path_length_and_key() {
        let t = Target::resolve("http://127.0.0.1:9/base/", Some("k3y"))
            .await
            .expect("target");
        let req = t.encode(true, b"[]");
        let text = String::from_utf8(req).expect("utf8");
        assert!(text.starts_with("POST /base/v1/messages/batch HTTP/1.1\r\n"));
        assert!(text.contains("Host: 127.0.0.1:9\r\n"));
        assert!(text.contains("Authorization: Bearer k3y\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n[]"));
    }
}
