//! Command line: a global `--config` and one subcommand per role or tool.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chat-analytics",
    version,
    about = "Chat analytics pipeline: HTTP → Kafka → moderation, NLP → Postgres"
)]
pub struct Cli {
    /// Configuration file, layered over the built-in defaults; environment variables
    /// CHAT_ANALYTICS__SECTION__KEY override both.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "config/default.toml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest API and worker in one process (the local default).
    Serve,
    /// The HTTP ingestion API only.
    Ingest,
    /// Consume, moderate, enrich and store messages.
    Worker,
    /// Apply the SQL migrations under sql/, create partitions ahead, set the full-text index.
    Migrate,
    /// Create partitions ahead, apply retention (archive, then drop).
    Partitions,
    /// Dead-letter files: statistics, and replay into Postgres.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Load generator: open-loop rate over keep-alive connections, one bot each;
    /// JSON/Markdown/PNG report.
    Loadgen(loadgen::LoadgenArgs),
    /// The reference NLP API server, with latency and fault injection.
    NlpSim(nlp_sim::NlpSimArgs),
    /// Enrich rows that were stored without NLP data (oldest first).
    Reenrich {
        /// Stop after this many rows.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print the hex SHA-256 of an API key, for `[[auth.keys]] sha256` (reads the key from stdin).
    HashKey,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-process dead letters (moderate, enrich, store); idempotent: replaying the same
    /// file twice adds nothing.
    Replay {
        /// A dead-letters-YYYY-MM-DD.jsonl file, or a directory of them.
        path: PathBuf,
    },
    /// Count dead letters by stage and error.
    Stats {
        /// A dead-letters-YYYY-MM-DD.jsonl file, or a directory of them.
        path: PathBuf,
    },
}
