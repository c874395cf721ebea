//! Command line: a global `--config` and one subcommand per role or tool.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "chat-analytics", version, about = "Chat analytics pipeline: HTTP → Kafka → moderation, NLP → Postgres")]
pub struct Cli {
    /// Configuration file, layered over the built-in defaults; environment variables
    /// CHAT_ANALYTICS__SECTION__KEY override both.
    #[arg(long, global = true, value_name = "FILE", default_value = "config/default.toml")]
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
    /// Apply the SQL migrations under sql/ and create partitions.
    Migrate,
    /// Print the hex SHA-256 of an API key, for `[[auth.keys]] sha256` (reads the key from stdin).
    HashKey,
}
