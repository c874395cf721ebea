//! The session against a small `h2` server on 127.0.0.1:0 that answers, closes
//! or falls silent, counting the connections it accepts.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;

use super::*;

/// How the fake server treats each connection.
#[derive(Clone, Copy)]
enum Peer {
    /// Answers `requests` requests with `{"ok":1}` in two DATA frames, then
    /// closes the connection (GOAWAY).
    AnswerThenClose { requests: usize },
    /// Accepts the connection and never reads from it again.
    Silent,
}

struct FakeServer {
    url: Uri,
    connections: Arc<AtomicUsize>,
    /// Connections the server saw end.
    ended: Arc<AtomicUsize>,
}

impl FakeServer {
    async fn start(peer: Peer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1/analyze", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let connections = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (counted, counted_ended) = (connections.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let ended = counted_ended.clone();
                tokio::spawn(async move {
                    serve(tcp, peer).await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakeServer {
            url,
            connections,
            ended,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(tcp: TcpStream, peer: Peer) {
    let requests = match peer {
        Peer::AnswerThenClose { requests } => requests,
        Peer::Silent => {
            let _held = tcp;
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return;
        }
    };
    let Ok(mut connection) = h2::server::handshake(tcp).await else {
        return;
    };
    for _ in 0..requests {
        let Some(Ok((request, mut respond))) = connection.accept().await else {
            return;
        };
        let mut body = request.into_body();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let Ok(mut answer) = respond.send_response(hyper::Response::new(()), false) else {
            return;
        };
        let _ = answer.send_data(Bytes::from_static(b"{\"ok\":"), false);
        let _ = answer.send_data(Bytes::from_static(b"1}"), true);
    }
    // Polling the connection flushes the answers, then the GOAWAY.
    connection.graceful_shutdown();
    while connection.accept().await.is_some() {}
}

fn post(url: &Uri) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = url.clone();
    request
}

async fn call(session: &H2Session, url: &Uri) -> Result<(StatusCode, Bytes), AttemptError> {
    let body = Bytes::from_static(b"{\"text\":\"hi\"}");
    tokio::time::timeout(Duration::from_millis(500), session.send(post(url), body))
        .await
        .unwrap_or(Err(AttemptError::Timeout))
}

#[tokio::test]
async fn an_answer_in_several_frames_is_joined() {
    let server = FakeServer::start(Peer::AnswerThenClose { requests: 1 }).await;
    let session = H2Session::new(&server.url, 1024);
    let (status, answer) = call(&session, &server.url).await.expect("answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&answer[..], b"{\"ok\":1}");
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused() {
    let server = FakeServer::start(Peer::AnswerThenClose { requests: 1 }).await;
    let session = H2Session::new(&server.url, 7);
    match call(&session, &server.url).await {
        Err(AttemptError::Invalid(message)) => assert!(message.contains("7 bytes"), "{message}"),
        other => panic!("expected an oversized answer to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_the_server_closed_is_opened_again() {
    let server = FakeServer::start(Peer::AnswerThenClose { requests: 2 }).await;
    let session = H2Session::new(&server.url, 1024);
    for _ in 0..2 {
        call(&session, &server.url).await.expect("answer");
    }
    assert_eq!(server.connections(), 1, "both calls share one connection");
    // The server has closed it; a call that raced the GOAWAY may fail, the
    // ones after it go over a new connection.
    let mut answered = false;
    for _ in 0..20 {
        if call(&session, &server.url).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answered,
        "no call succeeded after the server closed the connection"
    );
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn dropping_the_session_ends_its_connection() {
    let server = FakeServer::start(Peer::AnswerThenClose { requests: 5 }).await;
    let session = H2Session::new(&server.url, 1024);
    call(&session, &server.url).await.expect("answer");
    assert_eq!(server.ended.load(Ordering::SeqCst), 0);
    drop(session);
    for _ in 0..40 {
        if server.ended.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the connection outlived its session");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_left_for_a_new_connection() {
    let server = FakeServer::start(Peer::Silent).await;
    let mut session = H2Session::new(&server.url, 1024);
    session.keep_alive = Duration::from_millis(100);
    // One ping after 100 ms, unanswered 100 ms later: the connection is
    // dropped, which ends the call waiting on it if its timeout has not.
    assert!(call(&session, &server.url).await.is_err());
    assert_eq!(server.connections(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(call(&session, &server.url).await.is_err());
    assert_eq!(server.connections(), 2, "the silent connection was kept");
}
