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

use std::path::PathBuf;

use serde::Deserialize;

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

/// `[partitions]` settings: how far ahead to create, how long to keep, where archives go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSettings {
    /// Days after today that get a partition in advance (default 7).
    pub ahead_days: u32,
    /// Full days before today that are kept; older partitions are archived then
    /// dropped (default 30).
    pub retention_days: u32,
    /// Where `messages_pYYYYMMDD.csv.gz` archives are written (default `var/archive`).
    pub archive_dir: PathBuf,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings {
            ahead_days: 7,
            retention_days: 30,
            archive_dir: PathBuf::from("var/archive"),
        }
    }
}

/// A `[partitions]` value that cannot be used; names the key like the config loader does.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{key}` = {value}: {reason}")]
pub struct InvalidPartitionSettings {
    pub key: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl PartitionSettings {
    /// Checks the values once at start-up so a typo cannot drop data later.
    pub fn validate(&self) -> Result<(), InvalidPartitionSettings> {
        if self.retention_days == 0 {
            return Err(InvalidPartitionSettings {
                key: "partitions.retention_days",
                value: self.retention_days.to_string(),
                reason: "must be at least 1: 0 would archive and drop yesterday's partition \
                         while late messages still arrive for it",
            });
        }
        if self.retention_days > 36_500 {
            return Err(InvalidPartitionSettings {
                key: "partitions.retention_days",
                value: self.retention_days.to_string(),
                reason: "must be at most 36500 (100 years)",
            });
        }
        if self.ahead_days > 366 {
            return Err(InvalidPartitionSettings {
                key: "partitions.ahead_days",
                value: self.ahead_days.to_string(),
                reason: "must be at most 366: each day is a table, and planning cost grows \
                         with the number of partitions",
            });
        }
        if self.archive_dir.as_os_str().is_empty() {
            return Err(InvalidPartitionSettings {
                key: "partitions.archive_dir",
                value: String::new(),
                reason: "must not be empty",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("messages_p20240101"), "\"messages_p20240101\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn settings_read_from_toml_and_refuse_unknown_keys() {
        let settings: PartitionSettings =
            toml::from_str("ahead_days = 7\nretention_days = 30\narchive_dir = \"var/archive\"")
                .expect("valid settings");
        assert_eq!(settings, PartitionSettings::default());
        let typo = toml::from_str::<PartitionSettings>(
            "ahead_days = 7\nretention_days = 30\narchive_dir = \"a\"\nretention = 1",
        );
        assert!(typo.is_err());
    }

    #[test]
    fn settings_validation_names_the_key() {
        let mut settings = PartitionSettings::default();
        assert!(settings.validate().is_ok());
        settings.retention_days = 0;
        let error = settings.validate().expect_err("0 days is refused");
        assert_eq!(error.key, "partitions.retention_days");
    }
}
