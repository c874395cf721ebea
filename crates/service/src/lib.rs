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
//! - [`storage`]: Postgres pool and migrations.
//! - [`nlp_sim`]: the reference NLP API server; [`loadgen`]: the load generator.
//! - [`telemetry`]: metrics registry, health probes, the admin listener, logging.
//! - [`http_server`]: the HTTP/1.1 server both listeners share: accept loop, idle
//!   connections parked without buffers, timeouts, graceful drain.
//! - [`config`]: the typed settings tree, one file per section, parsed at load; it
//!   imports nothing else of the crate, every component takes its own section from it;
//!   [`cli`]: the command line;
//!   [`app`]: assembles a role from settings; [`shutdown`]: the signal;
//!   [`supervisor`]: restarts long-lived tasks that panic.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod domain;
pub mod enrich;
pub mod http_server;
pub mod ingest;
pub mod loadgen;
pub mod moderation;
pub mod nlp_sim;
pub mod queue;
pub mod shutdown;
pub mod storage;
pub mod supervisor;
pub mod telemetry;
pub mod worker;
