//! The HTTP server (HTTP/1.1, and HTTP/2 with prior knowledge on the same
//! port): accept loop, per-connection service and routes.
//!
//! | route                | does |
//! |----------------------|------|
//! | `POST /v1/analyze`   | faults (delay, hang, 500), then [`analyze`] → 200, or 400 for a bad body |
//! | `GET /admin/faults`  | the current [`FaultSettings`](super::FaultSettings) |
//! | `POST /admin/faults` | update any subset of them; 400 names a bad field |
//! | `GET /health`        | 200 `{"status": "ok"}`; never delayed by faults |
//!
//! Other paths answer 404, known paths with the wrong method 405; every
//! error has the project's body `{"error": {"code", "message", "field"?}}`.
//!
//! Built to hold thousands of keep-alive connections at ~10,000 requests/s
//! on two shared cores: each connection is one task with its own random
//! number generator, knobs are read without locks, and request bodies are
//! parsed without copying the text. Only `/v1/analyze` is subject to faults,
//! so health checks and the admin API keep working while the simulated NLP
//! service is "down".

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_analytics::http_server::{json_response, CoalescedWrites, HttpResponse};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, ALLOW};
use hyper::service::Service;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::analysis::analyze;
use super::faults::{Faults, Outcome, Plan};
use super::lexicon::Lexicon;
use super::NlpSimError;

/// Largest request body accepted. Chat messages are at most 4,096
/// characters; this leaves room for escapes and multi-byte text while
/// bounding the work one request can cause.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// After the shutdown signal, open connections get this long to finish
/// their current request before `serve` returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error such as running out of file descriptors, so
/// the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Streams one HTTP/2 client may have open at once. A worker multiplexes all
/// its calls (≈2,500 in flight) over one connection; hyper's default of 200
/// would queue the rest on the client.
const MAX_CONCURRENT_STREAMS: u32 = 10_000;
/// Streams a client may reset before the server has taken them up. A worker
/// whose calls time out resets them; h2's default of 20 (a guard against
/// rapid-reset floods) would end the connection, and with it every call in
/// flight, the first time a busy server fell behind by 20 timed-out calls.
const MAX_PENDING_ACCEPT_RESETS: usize = MAX_CONCURRENT_STREAMS as usize;

/// An injected hang was released by shutdown. Returned as the service error
/// so hyper drops the connection without ever answering, as a hang should.
#[derive(Debug, thiserror::Error)]
#[error("request held unanswered until shutdown (injected hang)")]
pub struct HangReleased;

/// State shared by every connection.
struct App {
    faults: Faults,
    lexicon: Lexicon,
    /// Becomes `true` when the server shuts down; releases hung requests.
    stopping: watch::Receiver<bool>,
}

/// Runs the accept loop until `shutdown` resolves, then drains connections.
pub(super) async fn run(
    listener: TcpListener,
    faults: Faults,
    seed: Option<u64>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NlpSimError> {
    let lexicon = Lexicon::embedded()?;
    let (stop_sender, stopping) = watch::channel(false);
    let app = Arc::new(App {
        faults,
        lexicon,
        stopping: stopping.clone(),
    });
    // Every connection task holds a clone of `done`; `recv` on the other end
    // returns `None` once the last one has finished (mini-redis's pattern).
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut rngs = RngSource::new(seed);
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    handle_accept_error(&error).await;
                    continue;
                }
            },
        };
        let service = ConnectionService {
            app: Arc::clone(&app),
            rng: RefCell::new(rngs.next_rng()),
        };
        tokio::spawn(serve_connection(
            stream,
            service,
            stopping.clone(),
            done.clone(),
        ));
    }
    drop(listener);
    info!("nlp-sim stopping: no new connections, draining open ones");
    // `app` holds a receiver, so there is always one to send to.
    let _ = stop_sender.send(true);
    drop(done);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done.recv())
        .await
        .is_err()
    {
        warn!(grace = ?SHUTDOWN_GRACE, "nlp-sim: connections still open after the grace period");
    }
    info!("nlp-sim stopped");
    Ok(())
}

/// Per-connection errors (the peer gave up) are routine; running out of
/// descriptors or memory is worth a warning and a pause.
async fn handle_accept_error(error: &io::Error) {
    match error.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => {
            debug!(%error, "nlp-sim: accept failed for one connection");
        }
        _ => {
            warn!(%error, "nlp-sim: accept failed; backing off");
            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
        }
    }
}

/// Serves one keep-alive connection until the peer closes it or the server
/// stops, in which case the request in progress may finish first.
async fn serve_connection(
    stream: TcpStream,
    service: ConnectionService,
    mut stopping: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "nlp-sim: could not disable Nagle's algorithm");
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).pipeline_flush(true);
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
    // Answers finished together leave in one write: a worker's calls share one
    // connection, thousands a second.
    let stream = CoalescedWrites::new(stream);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop_requested(&mut stopping) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "nlp-sim: connection ended with an error");
    }
}

/// Resolves once the server is stopping (or its stop sender is gone).
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it straight away.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// Hands each connection its own generator: seeded deterministically from
/// `--seed` and the connection's ordinal when given, from the OS otherwise.
struct RngSource {
    seed: Option<u64>,
    connections: u64,
}

impl RngSource {
    fn new(seed: Option<u64>) -> Self {
        Self {
            seed,
            connections: 0,
        }
    }

    fn next_rng(&mut self) -> SmallRng {
        self.connections = self.connections.wrapping_add(1);
        match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed.wrapping_add(self.connections)),
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }
}

/// The hyper service of one connection. `call` runs on the connection's own
/// task (HTTP/2 included: only the returned futures are spawned), so the
/// generator needs no lock, only a `RefCell` borrowed synchronously in `call`.
struct ConnectionService {
    app: Arc<App>,
    rng: RefCell<SmallRng>,
}

impl Service<Request<Incoming>> for ConnectionService {
    type Response = HttpResponse;
    type Error = HangReleased;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HangReleased>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let plan = if is_analyze(&request) {
            let settings = self.app.faults.snapshot();
            settings.plan(self.app.faults.latency_cv(), &mut *self.rng.borrow_mut())
        } else {
            Plan::HEALTHY
        };
        let app = Arc::clone(&self.app);
        Box::pin(async move { app.handle(request, plan).await })
    }
}

fn is_analyze<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST && request.uri().path() == ANALYZE
}

const ANALYZE: &str = "/v1/analyze";
const FAULTS: &str = "/admin/faults";
const HEALTH: &str = "/health";

impl App {
    /// Routes one request; `plan` is what the fault knobs decided for it.
    async fn handle<B>(&self, request: Request<B>, plan: Plan) -> Result<HttpResponse, HangReleased>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let response = match (parts.method, parts.uri.path()) {
            (Method::POST, ANALYZE) => return self.analyze(body, plan).await,
            (Method::GET, HEALTH) => json_response(StatusCode::OK, &Health { status: "ok" }),
            (Method::GET, FAULTS) => json_response(StatusCode::OK, &self.faults.snapshot()),
            (Method::POST, FAULTS) => self.update_faults(body).await,
            (_, ANALYZE) => method_not_allowed("POST"),
            (_, HEALTH) => method_not_allowed("GET"),
            (_, FAULTS) => method_not_allowed("GET, POST"),
            (_, path) => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
                None,
            ),
        };
        Ok(response)
    }

    /// `POST /v1/analyze`: the body is read first (so the connection stays
    /// reusable whatever happens), then the fault plan runs, then the text
    /// is analysed.
    async fn analyze<B>(&self, body: B, plan: Plan) -> Result<HttpResponse, HangReleased>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(response) => return Ok(response),
        };
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        match plan.outcome {
            Outcome::Answer => {}
            Outcome::Error => {
                return Ok(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "injected_fault",
                    "injected failure (error_rate)".to_owned(),
                    None,
                ))
            }
            Outcome::Hang => {
                self.wait_for_shutdown().await;
                return Err(HangReleased);
            }
        }
        // serde would also accept a struct written as an array; the
        // contract says object, so say so.
        if bytes.trim_ascii_start().first() == Some(&b'[') {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "the body must be a JSON object with a string \"text\"".to_owned(),
                None,
            ));
        }
        let request: AnalyzeRequest<'_> = match serde_json::from_slice(&bytes) {
            Ok(request) => request,
            Err(error) => return Ok(bad_analyze_request(&bytes, &error)),
        };
        let analysis = analyze(&self.lexicon, &request.text, request.lang_hint.as_deref());
        Ok(json_response(StatusCode::OK, &analysis))
    }

    /// Parks a hung request without polling until the server stops.
    async fn wait_for_shutdown(&self) {
        stop_requested(&mut self.stopping.clone()).await;
    }

    /// `POST /admin/faults`: validates the whole update before applying any
    /// of it, and answers the full settings now in force.
    async fn update_faults<B>(&self, body: B) -> HttpResponse
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(response) => return response,
        };
        let update: Value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    error.to_string(),
                    None,
                )
            }
        };
        match self.faults.update(|current| current.apply_json(&update)) {
            Ok(settings) => {
                info!(
                    latency_ms = settings.latency_ms(),
                    error_rate = settings.error_rate(),
                    hang_rate = settings.hang_rate(),
                    "nlp-sim: fault settings changed"
                );
                json_response(StatusCode::OK, &settings)
            }
            Err(error) => error_response(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                error.to_string(),
                error.field().map(str::to_owned),
            ),
        }
    }
}

/// The body of `POST /v1/analyze`. The text is borrowed from the request
/// bytes unless it contains escapes. Unknown fields are ignored so that
/// clients may send extra context.
#[derive(Debug, Deserialize)]
struct AnalyzeRequest<'a> {
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    lang_hint: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// The project-wide error body.
#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
async fn read_body<B>(body: B) -> Result<Bytes, HttpResponse>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body must be at most {MAX_BODY_BYTES} bytes"),
            None,
        )),
        Err(error) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("could not read the request body: {error}"),
            None,
        )),
    }
}

/// A 400 for an analyze body that serde refused, naming the field when the
/// JSON was well-formed but had the wrong shape. Runs only on the error
/// path, so re-parsing costs nothing on the hot path.
fn bad_analyze_request(bytes: &[u8], error: &serde_json::Error) -> HttpResponse {
    if error.is_syntax() || error.is_eof() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            error.to_string(),
            None,
        );
    }
    let field = offending_field(bytes);
    let message = match field {
        Some("text") => "text is required and must be a string".to_owned(),
        Some(_) => "lang_hint must be a string such as \"en\", or null".to_owned(),
        None => format!("the body must be an object with a string \"text\": {error}"),
    };
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        message,
        field.map(str::to_owned),
    )
}

fn offending_field(bytes: &[u8]) -> Option<&'static str> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let object = value.as_object()?;
    if !matches!(object.get("text"), Some(Value::String(_))) {
        return Some("text");
    }
    match object.get("lang_hint") {
        None | Some(Value::Null | Value::String(_)) => None,
        Some(_) => Some("lang_hint"),
    }
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route accepts {allow}"),
        None,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn error_response(
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
) -> HttpResponse {
    json_response(
        status,
        &ErrorBody {
            error: ErrorDetail {
                code,
                message,
                field,
            },
        },
    )
}

/// Lets the tests call `App::handle` directly with in-memory bodies, to
/// test routing and fault plans without sockets.
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use http_body_util::Full;

    /// An `App` with the embedded lexicon; `stop` plays the server's
    /// shutdown signal.
    pub(in super::super) struct TestApp {
        app: App,
        pub stop: watch::Sender<bool>,
    }

    impl TestApp {
        pub fn new(faults: Faults) -> Self {
            let (stop, stopping) = watch::channel(false);
            let app = App {
                faults,
                lexicon: Lexicon::embedded().expect("embedded lexicon"),
                stopping,
            };
            Self { app, stop }
        }

        pub async fn request(
            &self,
            method: Method,
            path: &str,
            body: &str,
            plan: Plan,
        ) -> Result<HttpResponse, HangReleased> {
            let mut request = Request::new(Full::new(Bytes::from(body.to_owned())));
            *request.method_mut() = method;
            *request.uri_mut() = path.parse().expect("test path is a valid URI");
            self.app.handle(request, plan).await
        }
    }

    /// The body of a response as JSON.
    pub async fn body_json(response: HttpResponse) -> Value {
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        serde_json::from_slice(&bytes).expect("response body is JSON")
    }
}
