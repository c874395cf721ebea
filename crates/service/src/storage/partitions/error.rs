//! What failed in partition maintenance, on which partition, at which step.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// What was being done when a partition operation failed; part of every error so an
/// operator knows whether data moved, was exported, or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Begin,
    Lock,
    ReadCatalog,
    CreateTable,
    MoveRows,
    Attach,
    CountRows,
    Export,
    Detach,
    Drop,
    Commit,
    CreateIndex,
    DropIndex,
    PruneKeys,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Begin => "begin transaction",
            Step::Lock => "lock",
            Step::ReadCatalog => "read catalog",
            Step::CreateTable => "create table",
            Step::MoveRows => "move rows from the default partition",
            Step::Attach => "attach partition",
            Step::CountRows => "count rows",
            Step::PruneKeys => "delete expired message keys",
            Step::Export => "export (COPY TO STDOUT)",
            Step::Detach => "detach partition",
            Step::Drop => "drop table",
            Step::Commit => "commit",
            Step::CreateIndex => "create index",
            Step::DropIndex => "drop index",
        })
    }
}

/// The file-system side of archiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStep {
    CreateDir,
    CreateTempFile,
    Write,
    Sync,
    Rename,
    SyncDir,
}

impl fmt::Display for ArchiveStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveStep::CreateDir => "create archive directory",
            ArchiveStep::CreateTempFile => "create temporary file",
            ArchiveStep::Write => "write compressed data",
            ArchiveStep::Sync => "fsync archive file",
            ArchiveStep::Rename => "rename into place",
            ArchiveStep::SyncDir => "fsync archive directory",
        })
    }
}

/// A partition operation that failed; names the partition (or `messages` for work on the
/// whole table) and the step. Whenever one is returned, the transaction was rolled back.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("no database connection for partition maintenance: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("partition {partition}: {step} failed: {source}")]
    Db {
        partition: String,
        step: Step,
        source: tokio_postgres::Error,
    },
    #[error("partition {partition}: {step} ({path}) failed, nothing dropped: {source}")]
    Archive {
        partition: String,
        step: ArchiveStep,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "partition {partition}: archive {path} holds {archived} rows but the table holds \
         {expected}; nothing dropped"
    )]
    RowCountMismatch {
        partition: String,
        path: PathBuf,
        expected: u64,
        archived: u64,
    },
    #[error("partition {partition}: archive writer stopped abnormally: {source}")]
    ArchiveTask {
        partition: String,
        source: tokio::task::JoinError,
    },
    #[error("date {day} ± {days} days is outside the dates partitions can be named for")]
    DateOutOfRange { day: NaiveDate, days: u32 },
}

impl PartitionError {
    /// The partition (or `messages`) the error is about, for logs and metrics labels.
    pub fn partition(&self) -> Option<&str> {
        match self {
            PartitionError::Db { partition, .. }
            | PartitionError::Archive { partition, .. }
            | PartitionError::RowCountMismatch { partition, .. }
            | PartitionError::ArchiveTask { partition, .. } => Some(partition),
            PartitionError::Pool(_) | PartitionError::DateOutOfRange { .. } => None,
        }
    }
}

/// Builds the `map_err` closure for a database step on `partition`.
pub(in crate::storage) fn db(
    partition: &str,
    step: Step,
) -> impl FnOnce(tokio_postgres::Error) -> PartitionError + '_ {
    move |source| PartitionError::Db {
        partition: partition.to_owned(),
        step,
        source,
    }
}

/// Builds the `map_err` closure for a file-system step of archiving `partition` at
/// `path`.
pub(super) fn archive_err<'a>(
    partition: &'a str,
    step: ArchiveStep,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> PartitionError + 'a {
    move |source| PartitionError::Archive {
        partition: partition.to_owned(),
        step,
        path: path.to_owned(),
        source,
    }
}
