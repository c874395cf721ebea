//! The server over real sockets, with a raw client so every byte boundary is ours to
//! choose: parking between requests, pipelining, late bodies, chunked bodies, shutdown.

use std::time::Duration;

use http_body_util::BodyExt;
use prometheus::IntGauge;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::*;

/// `/echo` answers with the body's length, `/slow` too after a pause; `/early` answers
/// before reading the body.
struct Echo;

impl HttpHandler for Echo {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> HttpResponse {
        match req.uri().path() {
            "/early" => {
                return json_response(hyper::StatusCode::UNAUTHORIZED, &json!({"len": null}))
            }
            "/slow" => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => {}
        }
        let len = match req.into_body().collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => usize::MAX,
        };
        json_response(hyper::StatusCode::OK, &json!({"len": len}))
    }
}

struct Server {
    addr: SocketAddr,
    active: IntGauge,
    parked: IntGauge,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start() -> Server {
    start_with(ConnectionTimeouts::default()).await
}

async fn start_with(timeouts: ConnectionTimeouts) -> Server {
    let listener = listen("127.0.0.1:0".parse().expect("address"), false).expect("listens");
    let addr = listener.local_addr().expect("bound");
    let active = IntGauge::new("active", "test").expect("gauge");
    let parked = IntGauge::new("parked", "test").expect("gauge");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        "test",
        listener,
        Arc::new(Echo),
        Connections::new(active.clone(), parked.clone()).with_timeouts(timeouts),
        shutdown.clone(),
        Duration::from_secs(30),
    ));
    Server {
        addr,
        active,
        parked,
        shutdown,
        task,
    }
}

/// Waits (bounded) for a gauge to reach a value; the server acts asynchronously.
async fn settles(gauge: &IntGauge, value: i64) -> bool {
    for _ in 0..500 {
        if gauge.get() == value {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.expect("connects"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("sends");
    }

    /// Reads one response: its status and its JSON body.
    async fn response(&mut self) -> (u16, serde_json::Value) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buf).expect("a response")
            {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("a content length");
                let status = response.code.expect("a status");
                if self.buf.len() >= head + length {
                    let body = serde_json::from_slice(&self.buf[head..head + length])
                        .expect("a JSON body");
                    self.buf.drain(..head + length);
                    return (status, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("the response arrives")
                .expect("reads");
            assert!(read > 0, "connection closed before a full response");
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// True once the server has closed the connection (bounded wait).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_served_again() {
    let server = start().await;
    let mut client = RawClient::connect(server.addr).await;
    // A slow answer matters: hyper then waits on the socket instead of reading again.
    for (round, path) in ["/echo", "/slow", "/echo", "/slow"].into_iter().enumerate() {
        client.send(&post(path, "{\"x\":1}")).await;
        assert_eq!(
            client.response().await,
            (200, json!({"len": 7})),
            "round {round}"
        );
        assert!(
            settles(&server.parked, 1).await,
            "parked after round {round}"
        );
        assert_eq!(server.active.get(), 0);
    }
    drop(client);
    assert!(
        settles(&server.parked, 0).await,
        "a closed client is forgotten"
    );
    assert_eq!(server.active.get(), 0);
}

#[tokio::test]
async fn pipelined_requests_split_mid_request_are_all_answered() {
    let server = start().await;
    let mut client = RawClient::connect(server.addr).await;
    let stream = [
        post("/echo", "{}"),
        post("/echo", "{\"ab\":1}"),
        post("/echo", "[1,2,3]"),
    ]
    .concat();
    let cut = stream.len() - 4;
    client.send(&stream[..cut]).await;
    // The third request is incomplete: the connection must stay with hyper.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.parked.get(), 0);
    client.send(&stream[cut..]).await;
    assert_eq!(client.response().await, (200, json!({"len": 2})));
    assert_eq!(client.response().await, (200, json!({"len": 8})));
    assert_eq!(client.response().await, (200, json!({"len": 7})));
    assert!(settles(&server.parked, 1).await);
}

#[tokio::test]
async fn a_body_arriving_after_a_pause_is_read_whole() {
    let server = start().await;
    let mut client = RawClient::connect(server.addr).await;
    let request = post("/echo", "{\"slow\":true}");
    let head_end = request.len() - 13;
    client.send(&request[..head_end]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.parked.get(),
        0,
        "a request in progress is never parked"
    );
    client.send(&request[head_end..]).await;
    assert_eq!(client.response().await, (200, json!({"len": 13})));
}

#[tokio::test]
async fn an_answer_before_the_body_is_never_parked() {
    let server = start().await;
    let mut client = RawClient::connect(server.addr).await;
    let request = post("/early", "{\"ignored\":1}");
    client.send(&request[..request.len() - 5]).await;
    assert_eq!(client.response().await, (401, json!({"len": null})));
    // Answered but not fully received: parking now would lose the body's tail into
    // the next request. hyper closes such a connection instead.
    assert!(client.closed().await);
    assert!(settles(&server.active, 0).await);
    assert_eq!(server.parked.get(), 0);
}

#[tokio::test]
async fn chunked_requests_are_served_without_parking() {
    let server = start().await;
    let mut client = RawClient::connect(server.addr).await;
    let chunked =
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
    for _ in 0..2 {
        client.send(chunked).await;
        assert_eq!(client.response().await, (200, json!({"len": 7})));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((server.active.get(), server.parked.get()), (1, 0));
}

#[tokio::test]
async fn shutdown_closes_parked_connections_and_finishes_busy_ones() {
    let server = start().await;
    let mut idle = RawClient::connect(server.addr).await;
    idle.send(&post("/echo", "{}")).await;
    assert_eq!(idle.response().await.0, 200);
    assert!(settles(&server.parked, 1).await);
    let mut busy = RawClient::connect(server.addr).await;
    let request = post("/echo", "{\"late\":1}");
    busy.send(&request[..request.len() - 3]).await;
    assert!(settles(&server.active, 1).await);

    server.shutdown.cancel();
    assert!(idle.closed().await, "the parked connection closes at once");
    busy.send(&request[request.len() - 3..]).await;
    assert_eq!(busy.response().await, (200, json!({"len": 10})));
    assert!(
        busy.closed().await,
        "the busy connection closes after its answer"
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the drain ends well before the grace period")
        .expect("the server task ends cleanly");
    assert_eq!((server.active.get(), server.parked.get()), (0, 0));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = start_with(ConnectionTimeouts {
        idle: Some(Duration::from_millis(200)),
        header_read: Duration::from_secs(30),
    })
    .await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(&post("/echo", "{}")).await;
    assert_eq!(client.response().await.0, 200);
    assert!(client.closed().await);
    assert!(settles(&server.parked, 0).await);
    assert_eq!(server.active.get(), 0);
}

#[tokio::test]
async fn a_head_trickling_in_past_the_header_timeout_is_cut_off() {
    let server = start_with(ConnectionTimeouts {
        idle: None,
        header_read: Duration::from_millis(200),
    })
    .await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\n").await;
    assert!(client.closed().await);
    assert!(settles(&server.active, 0).await);
}
