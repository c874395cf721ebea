//! PostgreSQL: connection pool, migrations, and (in the worker) batched writes.

mod batch_writer;
mod enrichment;
pub mod fulltext;
mod insert;
mod keys;
mod migrate;
mod outage;
pub mod partitions;
mod pool;
mod rollups;

pub use batch_writer::{BatchWriter, BatchWriterHandle, StorageMetrics, StoreOutcome};
pub use enrichment::{
    count_unenriched, lock_unenriched, select_unenriched, update_enrichment, UnenrichedCursor,
    UnenrichedRow,
};
pub use insert::{insert_messages, FailureKind, InsertError, RowWrite};
pub use keys::prune_message_keys;
pub use migrate::{migrate, prepare_database, PreparedDatabase, MIGRATIONS};
pub use outage::{DatabaseOutage, OutageVerdict};
pub use pool::{accepts_writes, connect_pool, PostgresProbe};
pub use rollups::{fold_pending, prune_rollups, Folded, RollupError, RollupFolder, RollupMetrics};

/// Why Postgres could not be set up or prepared for writes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The driver refused `postgres.url` or the pool settings.
    #[error("invalid postgres settings: {0}")]
    Config(String),
    /// No connection could be had from the pool (unreachable, refused, timed out).
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Creating the partitions ahead or switching the full-text index failed.
    #[error(transparent)]
    Partitions(#[from] partitions::PartitionError),
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {name} failed: {source}")]
    Migration {
        /// The migration, e.g. `0001_messages`.
        name: &'static str,
        /// The database's error.
        source: tokio_postgres::Error,
    },
}
