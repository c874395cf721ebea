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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid postgres settings: {0}")]
    Config(String),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Partitions(#[from] partitions::PartitionError),
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: tokio_postgres::Error,
    },
}
