//! Daily partitions of `messages`: created ahead of time, archived and dropped after
//! retention.
//!
//! # Why it works this way
//!
//! - **Ahead of time.** Every day `D` gets `messages_pYYYYMMDD` covering
//!   `[D 00:00 UTC, D+1 00:00 UTC)`, created for yesterday..today+`ahead_days` so a write
//!   never waits on DDL and never lands in `messages_default` by accident.
//! - **The default partition.** Rows whose day had no partition yet (clock-skewed bots,
//!   back-fills, a maintainer that was down) sit in `messages_default`. Postgres refuses
//!   `CREATE TABLE ... PARTITION OF` for a range the default partition already holds rows
//!   of, so a day is created as a plain table, the default partition's rows of that day
//!   are moved into it, and only then is it attached: one transaction, so a crash leaves
//!   either the old state or the new one, never rows in neither place.
//! - **Races.** Several workers run the maintainer. A transaction-scoped advisory lock
//!   serialises them; the loser re-reads the catalog after the winner committed and finds
//!   nothing left to do.
//! - **Retention never loses data.** A partition is exported with `COPY ... TO STDOUT`
//!   into `archive_dir/messages_pYYYYMMDD.csv.gz` (temp file, fsync, rename, fsync of the
//!   directory), the exported row count is checked against the table, and only then is
//!   the partition detached and dropped, in the same transaction that held writes to it
//!   off during the export. Any failure rolls back and drops nothing.
//! - **SQL text.** DDL cannot take bind parameters, so partition names and bounds are
//!   formatted into SQL; they come only from [`DailyPartition`], which is built from a
//!   date, never from input, and identifiers are quoted anyway.
//!
//! # Layout
//!
//! - `window.rs`: [`DailyPartition`] and the date math (which days to create, which to
//!   retire);
//! - `catalog.rs`: what partitions exist, read back from the Postgres catalog;
//! - `ddl.rs`: the maintenance lock and creating the days ahead;
//! - `archive.rs`: retention, one archive-then-drop transaction per partition;
//! - `export.rs`: the file side of an archive (COPY stream to a fsynced `.csv.gz`);
//! - `maintainer.rs`: [`PartitionMaintainer`], a pass of both on a timer;
//! - `error.rs`: [`PartitionError`], naming the partition and the step that failed.

mod archive;
mod catalog;
mod ddl;
mod error;
mod export;
mod maintainer;
mod window;

#[cfg(test)]
mod db_tests;

pub use archive::{apply_retention, ArchivedPartition};
pub use catalog::{list_partitions, PartitionInfo};
pub use ddl::ensure_partitions;
pub(in crate::storage) use ddl::{lock, MAINTENANCE_LOCK};
pub(in crate::storage) use error::db;
pub use error::{ArchiveStep, PartitionError, Step};
pub use maintainer::{MaintenanceReport, PartitionMaintainer};
pub use window::{partition_window, retention_cutoff, DailyPartition};

/// The partitioned table the partitions belong to (created by `sql/0001_messages.sql`).
pub const PARENT_TABLE: &str = "messages";

/// Quotes an SQL identifier (`"name"`, inner quotes doubled). Names here are generated,
/// but quoting costs nothing and keeps a future caller from making them injectable.
pub(in crate::storage) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("messages_p20240101"), "\"messages_p20240101\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
