//! `nlp-sim`: the reference NLP API server, with latency and fault injection.
//!
//! The worker enriches every message through an external NLP API. To develop,
//! test and load-test that path without a real provider, this crate serves
//! the same contract (`POST /v1/analyze`, see the spec's "NLP API contract")
//! with real, if simple, lexicon-based analysis, and lets testers make it
//! slow, failing or silent on demand, at start-up (flags) or at run time
//! (`POST /admin/faults`).
//!
//! It takes only the listener binder and the JSON response helper of the
//! service's `http_server`, rather than keeping copies of its own.
//!
//! # Layout
//!
//! - [`analysis`]: pure text → [`Analysis`] (sentiment, toxicity, language,
//!   keywords).
//! - [`lexicon`]: the word lists under `data/`, embedded in the binary.
//! - [`faults`]: the knobs ([`FaultSettings`], shared as [`Faults`]) and the
//!   per-request [`Plan`] drawn from them.
//! - [`server`]: hyper accept loop (HTTP/1.1 and h2c), connections, routes.
//! - `tests` (test builds only): the routes called in memory, and the real
//!   server on a loopback port driven by an HTTP client.
//!
//! A request flows `server` → `faults` (delay, then hang / 500 / go on) →
//! `analysis` (which reads `lexicon`) → JSON back out.

#![warn(missing_docs)]

pub mod analysis;
pub mod faults;
pub mod lexicon;
pub mod server;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tracing::info;

pub use analysis::{analyze, Analysis, Sentiment, SentimentLabel};
pub use faults::{FaultError, FaultSettings, Faults, Outcome, Plan};
pub use lexicon::{Lexicon, LexiconError};

/// Flags of the `chat-analytics nlp-sim` subcommand.
///
/// Flatten into the binary's CLI with `NlpSim(nlp_sim::NlpSimArgs)` and hand
/// the value to [`run`].
#[derive(Debug, Clone, clap::Args)]
pub struct NlpSimArgs {
    /// Address to serve the NLP API and its admin routes on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Mean delay before each analysis answer, in milliseconds (0: none).
    #[arg(long, default_value_t = faults::DEFAULT_LATENCY_MS,
          value_parser = clap::value_parser!(u64).range(0..=faults::MAX_LATENCY_MS))]
    pub latency_ms: u64,

    /// Probability (0 to 1) that an analysis request gets HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = faults::parse_rate_arg)]
    pub error_rate: f64,

    /// Probability (0 to 1) that an analysis request is never answered.
    #[arg(long, default_value_t = 0.0, value_parser = faults::parse_rate_arg)]
    pub hang_rate: f64,

    /// Spread of the latency (standard deviation / mean; 0: always the mean).
    #[arg(long, default_value_t = faults::DEFAULT_LATENCY_CV)]
    pub latency_cv: f64,

    /// Seed for latency and fault draws, for reproducible runs (each
    /// connection derives its own stream from it). Random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum NlpSimError {
    /// The `--listen` address could not be bound.
    #[error("nlp-sim could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said (in use, not permitted, ...).
        #[source]
        source: io::Error,
    },
    /// A fault flag is out of range.
    #[error("nlp-sim: invalid fault settings: {0}")]
    Faults(#[from] FaultError),
    /// A word list compiled into the binary is malformed: a defect of the
    /// build, not of the flags.
    #[error("nlp-sim: {0}")]
    Lexicon(#[from] LexiconError),
}

/// Runs the `nlp-sim` subcommand: validates the flags, binds `--listen` and
/// serves until `shutdown` resolves (e.g. on SIGTERM), then drains.
pub async fn run(
    args: NlpSimArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NlpSimError> {
    let settings = FaultSettings::new(args.latency_ms, args.error_rate, args.hang_rate)?;
    let faults = Faults::new(settings, args.latency_cv)?;
    let listener = chat_analytics::http_server::listen(args.listen, false).map_err(|source| {
        NlpSimError::Bind {
            addr: args.listen,
            source,
        }
    })?;
    info!(
        listen = %args.listen,
        latency_ms = settings.latency_ms(),
        latency_cv = args.latency_cv,
        error_rate = settings.error_rate(),
        hang_rate = settings.hang_rate(),
        seed = ?args.seed,
        "nlp-sim listening"
    );
    serve(listener, faults, args.seed, shutdown).await
}

/// Serves the NLP API on an already-bound listener until `shutdown`
/// resolves; then stops accepting, releases hung requests, lets requests in
/// progress finish (up to [`server::SHUTDOWN_GRACE`]) and returns.
///
/// Taking a listener (rather than an address) lets tests bind port 0 and
/// read the port back. Keep a clone of `faults` to change the knobs
/// in-process; `POST /admin/faults` changes the same values.
pub async fn serve(
    listener: TcpListener,
    faults: Faults,
    seed: Option<u64>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NlpSimError> {
    server::run(listener, faults, seed, shutdown).await
}
