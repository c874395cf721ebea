//! What failed in partition maintenance, on which partition, at which step.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// What was being done when a partition operation failed; part of every error so an
/// operator knows whether data moved, was exported, or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the transaction.
    Begin,
    /// Taking the maintenance or retention advisory lock, or a table lock.
    Lock,
    /// Reading partitions, or the full-text index, from the Postgres catalog.
    ReadCatalog,
    /// Creating a day's table shaped like `messages`.
    CreateTable,
    /// Moving a day's rows out of the default partition into its new table.
    MoveRows,
    /// `ATTACH PARTITION` of a new day.
    Attach,
    /// Counting an expired partition's rows before its export.
    CountRows,
    /// Streaming a partition out with `COPY ... TO STDOUT`.
    Export,
    /// `DETACH PARTITION` of an archived day.
    Detach,
    /// Dropping an archived day's table.
    Drop,
    /// Committing the transaction.
    Commit,
    /// Creating the full-text-search index.
    CreateIndex,
    /// Dropping the full-text-search index.
    DropIndex,
    /// Deleting `message_keys` older than the retention cutoff.
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
    /// Creating `archive_dir` when it does not exist.
    CreateDir,
    /// Creating the temporary file the export goes to.
    CreateTempFile,
    /// Writing the gzip stream.
    Write,
    /// fsync of the finished archive file (or reading its size).
    Sync,
    /// Renaming the temporary file to `messages_pYYYYMMDD.csv.gz`.
    Rename,
    /// fsync of the directory, so the rename survives a crash.
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
    /// No connection could be had from the pool.
    #[error("no database connection for partition maintenance: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement of a step failed.
    #[error("partition {partition}: {step} failed: {source}")]
    Db {
        /// The partition, `messages` for work on the whole table, or `message_keys`.
        partition: String,
        /// The step that failed.
        step: Step,
        /// The database's error.
        source: tokio_postgres::Error,
    },
    /// A file-system step of writing the archive failed; nothing was dropped.
    #[error("partition {partition}: {step} ({path}) failed, nothing dropped: {source}")]
    Archive {
        /// The partition being archived.
        partition: String,
        /// The step that failed.
        step: ArchiveStep,
        /// The file or directory the step worked on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The archive holds another number of rows than the table; nothing was dropped.
    #[error(
        "partition {partition}: archive {path} holds {archived} rows but the table holds \
         {expected}; nothing dropped"
    )]
    RowCountMismatch {
        /// The partition being archived.
        partition: String,
        /// The archive file written.
        path: PathBuf,
        /// Rows the partition held (`count(*)`).
        expected: u64,
        /// CSV data rows written to the archive.
        archived: u64,
    },
    /// A blocking file task of the archive (compressing, renaming into place) panicked or
    /// was cancelled.
    #[error("partition {partition}: archive writer stopped abnormally: {source}")]
    ArchiveTask {
        /// The partition being archived.
        partition: String,
        /// The task's join error.
        source: tokio::task::JoinError,
    },
    /// The window of days to create, or the retention cutoff, falls outside the dates a
    /// partition can be named for (years 1 to 9999).
    #[error("date {day} ± {days} days is outside the dates partitions can be named for")]
    DateOutOfRange {
        /// Today, the day counted from.
        day: NaiveDate,
        /// `partitions.ahead_days` or `partitions.retention_days`.
        days: u32,
    },
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
