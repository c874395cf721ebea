//! # chat-analytics
//!
//! Chatbots post messages over HTTP; the ingest API validates them and answers 202 once
//! Kafka holds them; workers moderate, enrich and store them in partitioned Postgres.
//!
//! # Layout
//!
//! Data flows one way, top to bottom:
//!
//! - [`domain`]: `ChatMessage`, `BotId`, `MessageText`, ...: parsed once at the edge,
//!   trusted everywhere after.
//! - [`ingest`]: the HTTP API: routes, request parsing, API keys, admission (429/503).
//! - [`queue`]: Kafka: the envelope codec, the producer, the consumer client and its
//!   offset tracker.
//! - [`worker`]: the pool: dispatch, the per-message pipeline, supervision, replay and
//!   re-enrichment; the only module that sees several stages.
//! - [`moderation`]: the normaliser and the word-list matcher, a pure stage.
//! - [`enrich`]: the NLP API client: retries, circuit breaker, fallback.
//! - [`storage`]: Postgres pool and migrations, partitions, the batch writer.
//! - [`deadletter`]: the dead-letter files: writer, reader, replay progress.
//! - [`telemetry`]: the metrics registry every component registers its own metrics on,
//!   health probes, the admin listener, logging (with per-request and per-message spans).
//! - [`http_server`]: the HTTP/1.1 server both listeners share: accept loop, idle
//!   connections parked without buffers, timeouts, graceful drain.
//! - [`config`]: the typed settings tree, one file per section, parsed at load; it
//!   imports nothing else of the crate, every component takes its own section from it;
//!   [`app`]: assembles a role from settings; [`shutdown`]: the signal;
//!   [`supervisor`]: restarts long-lived tasks that panic; [`backoff`]: the one
//!   exponential backoff the retrying callers share.
//!
//! The tools that exercise the service, the load generator and the reference NLP API
//! server, are crates of their own (`crates/loadgen`, `crates/nlp-sim`); the
//! `chat-analytics` binary links them for its `loadgen` and `nlp-sim` subcommands.
//!
//! The layers above are checked from the sources by `tests/architecture.rs`: a module
//! imports only those below it, and no file imports another in a circle.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod backoff;
pub mod config;
pub mod deadletter;
pub mod domain;
pub mod enrich;
pub mod http_server;
pub mod ingest;
pub mod moderation;
pub mod queue;
pub mod shutdown;
pub mod storage;
pub mod supervisor;
pub mod telemetry;
pub mod worker;
