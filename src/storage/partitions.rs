//! Daily partitions of `messages`: created ahead of time, archived and dropped after
//! retention, and the switch for the full-text-search index.
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

use std::fmt;
use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use deadpool_postgres::Pool;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::config::PartitionSettings;

/// The partitioned table the partitions belong to (created by `sql/0001_messages.sql`).
pub const PARENT_TABLE: &str = "messages";
/// The full-text-search index on `messages.text`; see [`set_full_text_search`].
pub const FTS_INDEX: &str = "messages_text_fts_idx";

const PARTITION_PREFIX: &str = "messages_p";

/// Advisory lock key ("chatpart") held by every transaction that changes the set of
/// partitions or their indexes, so two maintainers (or a maintainer and a migration)
/// never interleave DDL on `messages`.
const MAINTENANCE_LOCK: i64 = 0x6368_6174_7061_7274;
/// Advisory lock key ("chatrtnt") serialising retention runs, so two workers never
/// export the same partition at once.
const RETENTION_LOCK: i64 = 0x6368_6174_7274_6e74;

/// Session settings for maintenance transactions. `lock_timeout` bounds how long DDL
/// may queue behind (and so in front of) the ingest path's writes: a pass that cannot
/// get its locks quickly gives up and is retried on the next tick. UTC and ISO dates
/// make bounds and archived timestamps read the same on every server.
const TX_SETTINGS: &str = "SET LOCAL lock_timeout = '5s'; \
     SET LOCAL TimeZone = 'UTC'; \
     SET LOCAL DateStyle = 'ISO, YMD'; \
     SET LOCAL extra_float_digits = 1";

/// Matches the text `pg_get_expr(relpartbound, oid)` gives for a range partition on one
/// column with literal bounds; `MINVALUE`/`MAXVALUE`/`DEFAULT` do not match.
const RANGE_BOUND_PATTERN: &str = r"^FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)$";

/// Rows are handed from the COPY stream to the gzip thread in chunks of about this size.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the COPY stream and the gzip thread (bounded memory).
const EXPORT_CHANNEL_DEPTH: usize = 16;

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
fn db(partition: &str, step: Step) -> impl FnOnce(tokio_postgres::Error) -> PartitionError + '_ {
    move |source| PartitionError::Db {
        partition: partition.to_owned(),
        step,
        source,
    }
}

/// Builds the `map_err` closure for a file-system step of archiving `partition` at
/// `path`.
fn archive_err<'a>(
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

/// One day's partition. The only way to get a partition name or bound into SQL: it is
/// built from a date (years 1..=9999, which Postgres and the `YYYYMMDD` name both
/// accept), so formatted DDL can never carry anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DailyPartition {
    day: NaiveDate,
}

impl DailyPartition {
    /// The partition for `day`, or `None` outside years 1..=9999.
    pub fn for_day(day: NaiveDate) -> Option<DailyPartition> {
        (1..=9999)
            .contains(&day.year())
            .then_some(DailyPartition { day })
    }

    /// Reads a name we generate (`messages_pYYYYMMDD`); anything else is not ours.
    pub fn parse_name(name: &str) -> Option<DailyPartition> {
        let digits = name.strip_prefix(PARTITION_PREFIX)?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let day = NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
        DailyPartition::for_day(day)
    }

    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// `messages_pYYYYMMDD`.
    pub fn name(&self) -> String {
        format!("{PARTITION_PREFIX}{}", self.day.format("%Y%m%d"))
    }

    /// Inclusive lower bound: the day at 00:00 UTC.
    pub fn start(&self) -> DateTime<Utc> {
        self.day.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// Exclusive upper bound: the next day at 00:00 UTC.
    pub fn end(&self) -> DateTime<Utc> {
        self.start() + chrono::TimeDelta::days(1)
    }

    /// `FOR VALUES FROM (...) TO (...)`, with explicit `+00` offsets so the session time
    /// zone cannot shift the bounds.
    fn bound_sql(&self) -> String {
        format!(
            "FOR VALUES FROM ('{}') TO ('{}')",
            self.start().format("%Y-%m-%d %H:%M:%S+00"),
            self.end().format("%Y-%m-%d %H:%M:%S+00"),
        )
    }

    /// True when this partition's range and `[lower, upper)` share an instant.
    fn overlaps(&self, lower: DateTime<Utc>, upper: DateTime<Utc>) -> bool {
        lower < self.end() && upper > self.start()
    }
}

impl fmt::Display for DailyPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The partitions `ensure_partitions` maintains: yesterday (late messages around
/// midnight) through today + `ahead_days`.
pub fn partition_window(
    today: NaiveDate,
    ahead_days: u32,
) -> Result<Vec<DailyPartition>, PartitionError> {
    let out_of_range = || PartitionError::DateOutOfRange {
        day: today,
        days: ahead_days,
    };
    let first = today
        .checked_sub_days(Days::new(1))
        .ok_or_else(out_of_range)?;
    (0..=u64::from(ahead_days) + 1)
        .map(|offset| {
            first
                .checked_add_days(Days::new(offset))
                .and_then(DailyPartition::for_day)
                .ok_or_else(out_of_range)
        })
        .collect()
}

/// The instant before which a partition must end to be archived: today 00:00 UTC minus
/// `retention_days`. With 30, on March 31st the partitions of March 1st..30th and
/// today are kept, February 29th and older go.
pub fn retention_cutoff(
    today: NaiveDate,
    retention_days: u32,
) -> Result<DateTime<Utc>, PartitionError> {
    today
        .checked_sub_days(Days::new(u64::from(retention_days)))
        .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        .ok_or(PartitionError::DateOutOfRange {
            day: today,
            days: retention_days,
        })
}

/// A partition of `messages` as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// Range bounds, when the partition is a plain `FROM (ts) TO (ts)` range.
    pub lower: Option<DateTime<Utc>>,
    pub upper: Option<DateTime<Utc>>,
    /// True for `messages_default` (or whatever the DEFAULT partition is called).
    pub is_default: bool,
}

impl PartitionInfo {
    /// The daily partition this is, if it is one we created: our name *and* exactly that
    /// day's bounds. Hand-made partitions are never touched by retention.
    pub fn as_daily(&self) -> Option<DailyPartition> {
        let daily = DailyPartition::parse_name(&self.name)?;
        (self.lower == Some(daily.start()) && self.upper == Some(daily.end())).then_some(daily)
    }
}

/// Lists the partitions attached to `messages`, with their bounds read back from the
/// catalog. The bound text is cast back to `timestamptz` in the same session that
/// printed it, so the session's TimeZone and DateStyle cannot garble it.
pub async fn list_partitions(
    client: &impl GenericClient,
) -> Result<Vec<PartitionInfo>, PartitionError> {
    let rows = client
        .query(
            "SELECT c.relname::text,
                    m.bound[1]::timestamptz,
                    m.bound[2]::timestamptz,
                    pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               CROSS JOIN LATERAL (
                   SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), $2) AS bound
               ) m
              WHERE i.inhparent = $1::text::regclass
              ORDER BY c.relname",
            &[&PARENT_TABLE, &RANGE_BOUND_PATTERN],
        )
        .await
        .map_err(db(PARENT_TABLE, Step::ReadCatalog))?;
    rows.iter()
        .map(|row| {
            Ok(PartitionInfo {
                name: row.try_get(0)?,
                lower: row.try_get(1)?,
                upper: row.try_get(2)?,
                is_default: row.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(db(PARENT_TABLE, Step::ReadCatalog))
}

/// Creates the daily partitions for yesterday..=today+`ahead_days` that do not exist yet
/// and returns their names (empty when all exist: safe to call as often as you like).
///
/// All in one transaction under the maintenance advisory lock. For each missing day: a
/// new table shaped like `messages`, the default partition's rows of that day moved
/// into it, then `ATTACH PARTITION` (which builds the parent's indexes on it). A day
/// whose range is already covered by another partition (say a hand-made monthly one)
/// is skipped with a warning rather than failing the whole window.
pub async fn ensure_partitions(
    client: &mut Client,
    today: NaiveDate,
    ahead_days: u32,
) -> Result<Vec<String>, PartitionError> {
    let window = partition_window(today, ahead_days)?;
    let tx = client
        .transaction()
        .await
        .map_err(db(PARENT_TABLE, Step::Begin))?;
    lock(&tx, MAINTENANCE_LOCK).await?;
    let existing = list_partitions(&tx).await?;
    let missing = missing_partitions(&window, &existing);
    if missing.is_empty() {
        tx.commit().await.map_err(db(PARENT_TABLE, Step::Commit))?;
        return Ok(Vec::new());
    }
    let columns = parent_columns(&tx).await?;
    let default = existing
        .iter()
        .find(|p| p.is_default)
        .map(|p| p.name.clone());
    if let Some(default) = &default {
        // ATTACH takes this lock anyway (to check the default holds no rows of the new
        // range); taking it first means no row can slip into the default between our
        // move and the attach, and there is no lock upgrade to deadlock on.
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            quote_ident(default)
        ))
        .await
        .map_err(db(default, Step::Lock))?;
    }
    let mut created = Vec::with_capacity(missing.len());
    for partition in missing {
        create_partition(&tx, partition, &columns, default.as_deref()).await?;
        created.push(partition.name());
    }
    tx.commit().await.map_err(db(PARENT_TABLE, Step::Commit))?;
    tracing::info!(partitions = ?created, "created partitions");
    Ok(created)
}

/// The days of `window` that need creating; warns about days another partition covers.
fn missing_partitions<'w>(
    window: &'w [DailyPartition],
    existing: &[PartitionInfo],
) -> Vec<&'w DailyPartition> {
    window
        .iter()
        .filter(|day| {
            if existing.iter().any(|p| p.as_daily() == Some(**day)) {
                return false;
            }
            let clash = existing.iter().find(|p| {
                p.name == day.name()
                    || matches!((p.lower, p.upper), (Some(lo), Some(up)) if day.overlaps(lo, up))
            });
            if let Some(clash) = clash {
                tracing::warn!(
                    partition = %day,
                    existing = %clash.name,
                    "not creating daily partition: an existing partition covers or names it"
                );
                return false;
            }
            true
        })
        .collect()
}

/// Creates one day's table, moves its rows out of the default partition, attaches it.
async fn create_partition(
    tx: &Transaction<'_>,
    partition: &DailyPartition,
    columns: &str,
    default: Option<&str>,
) -> Result<(), PartitionError> {
    let name = partition.name();
    let table = quote_ident(&name);
    let parent = quote_ident(PARENT_TABLE);
    tx.batch_execute(&format!(
        "CREATE TABLE {table} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    ))
    .await
    .map_err(db(&name, Step::CreateTable))?;
    if let Some(default) = default {
        let moved = tx
            .execute(
                &format!(
                    "WITH moved AS (
                         DELETE FROM {default} WHERE sent_at >= $1 AND sent_at < $2
                         RETURNING {columns})
                     INSERT INTO {table} ({columns}) SELECT {columns} FROM moved",
                    default = quote_ident(default),
                ),
                &[&partition.start(), &partition.end()],
            )
            .await
            .map_err(db(&name, Step::MoveRows))?;
        if moved > 0 {
            tracing::info!(partition = %name, rows = moved, "moved rows out of the default partition");
        }
    }
    tx.batch_execute(&format!(
        "ALTER TABLE {parent} ATTACH PARTITION {table} {}",
        partition.bound_sql()
    ))
    .await
    .map_err(db(&name, Step::Attach))
}

/// A partition that was archived and dropped by [`apply_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedPartition {
    pub name: String,
    pub day: NaiveDate,
    /// Rows exported (equal to the rows the partition held).
    pub rows: u64,
    /// Size of the compressed archive.
    pub bytes: u64,
    pub path: PathBuf,
}

/// Archives then drops every daily partition that ends on or before
/// [`retention_cutoff`], oldest first; returns what it archived.
///
/// Each partition gets its own transaction: lock it against writes (a late message for
/// that day waits, then lands in the default partition once the day is gone), count it,
/// stream it to `archive_dir/messages_pYYYYMMDD.csv.gz` (temp name, fsync, rename, fsync
/// of the directory), check the count, then detach and drop, then commit. A failure at
/// any point rolls back and drops nothing; partitions archived before it stay archived
/// (and were logged). An archive left by a run that failed after the rename is simply
/// replaced next time.
///
/// Only partitions we created (name *and* bounds of a day) are considered; rows that
/// sit in the default partition are not archived here.
pub async fn apply_retention(
    client: &mut Client,
    today: NaiveDate,
    retention_days: u32,
    archive_dir: &Path,
) -> Result<Vec<ArchivedPartition>, PartitionError> {
    let cutoff = retention_cutoff(today, retention_days)?;
    let mut expired: Vec<DailyPartition> = list_partitions(&*client)
        .await?
        .iter()
        .filter_map(PartitionInfo::as_daily)
        .filter(|p| p.end() <= cutoff)
        .collect();
    expired.sort();
    let mut archived = Vec::with_capacity(expired.len());
    for partition in expired {
        if let Some(done) = archive_and_drop(client, partition, archive_dir).await? {
            tracing::info!(
                partition = %done.name,
                rows = done.rows,
                bytes = done.bytes,
                path = %done.path.display(),
                "archived and dropped partition"
            );
            archived.push(done);
        }
    }
    Ok(archived)
}

/// One partition's archive-then-drop transaction; `None` if another worker got there
/// first.
async fn archive_and_drop(
    client: &mut Client,
    partition: DailyPartition,
    archive_dir: &Path,
) -> Result<Option<ArchivedPartition>, PartitionError> {
    let name = partition.name();
    let table = quote_ident(&name);
    let tx = client.transaction().await.map_err(db(&name, Step::Begin))?;
    lock(&tx, RETENTION_LOCK).await?;
    let still_there = list_partitions(&tx)
        .await?
        .iter()
        .any(|p| p.as_daily() == Some(partition));
    if !still_there {
        return Ok(None);
    }
    // SHARE: readers go on, writers wait, so the archive is the whole partition.
    tx.batch_execute(&format!("LOCK TABLE ONLY {table} IN SHARE MODE"))
        .await
        .map_err(db(&name, Step::Lock))?;
    let expected: i64 = tx
        .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db(&name, Step::CountRows))?;
    let columns = parent_columns(&tx).await?;
    let copy = format!(
        "COPY (SELECT {columns} FROM ONLY {table} ORDER BY sent_at) \
         TO STDOUT WITH (FORMAT csv, HEADER)"
    );
    let staged = export_to_temp_file(&tx, &name, &copy, archive_dir).await?;
    let path = archive_dir.join(format!("{name}.csv.gz"));
    let expected = u64::try_from(expected).unwrap_or_default();
    if staged.rows != expected {
        discard(staged.temp_path).await;
        return Err(PartitionError::RowCountMismatch {
            partition: name,
            path,
            expected,
            archived: staged.rows,
        });
    }
    publish(&name, &staged.temp_path, &path, archive_dir).await?;
    // Same lock as ensure_partitions: DETACH also locks the default partition, which
    // ensure_partitions holds while it moves rows; taking the advisory lock first keeps
    // the two from deadlocking on each other.
    // This wait is bounded by lock_timeout: if a long row move holds the lock, this
    // pass gives up (nothing dropped) and the next one retries.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MAINTENANCE_LOCK])
        .await
        .map_err(db(&name, Step::Lock))?;
    tx.batch_execute(&format!(
        "ALTER TABLE {} DETACH PARTITION {table}",
        quote_ident(PARENT_TABLE)
    ))
    .await
    .map_err(db(&name, Step::Detach))?;
    tx.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .map_err(db(&name, Step::Drop))?;
    tx.commit().await.map_err(db(&name, Step::Commit))?;
    Ok(Some(ArchivedPartition {
        name,
        day: partition.day(),
        rows: staged.rows,
        bytes: staged.bytes,
        path,
    }))
}

/// An export written and fsynced under a temporary name, not yet in place.
struct StagedArchive {
    temp_path: PathBuf,
    rows: u64,
    bytes: u64,
}

/// Streams `COPY ... TO STDOUT` into a gzip file under a temporary name in `dir`.
///
/// Compression and file I/O are blocking, so they run on a blocking thread fed through a
/// bounded channel: memory stays at a few chunks whatever the partition size, and the
/// runtime's workers keep serving the ingest path. On any failure the temp file is
/// removed.
async fn export_to_temp_file(
    tx: &Transaction<'_>,
    partition: &str,
    copy_sql: &str,
    dir: &Path,
) -> Result<StagedArchive, PartitionError> {
    let temp_path = dir.join(format!(
        ".{partition}.csv.gz.{}.{}.tmp",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let file = {
        let (owned, dir, temp) = (partition.to_owned(), dir.to_owned(), temp_path.clone());
        run_blocking(partition, move || create_temp_file(&owned, &dir, &temp)).await??
    };
    let (sender, receiver) = mpsc::channel::<Vec<u8>>(EXPORT_CHANNEL_DEPTH);
    let writer = {
        let (partition, temp_path) = (partition.to_owned(), temp_path.clone());
        tokio::task::spawn_blocking(move || write_gzip(&partition, &temp_path, file, receiver))
    };
    let streamed = stream_copy(tx, partition, copy_sql, sender).await;
    let written = writer
        .await
        .map_err(|source| PartitionError::ArchiveTask {
            partition: partition.to_owned(),
            source,
        })
        .and_then(|result| result);
    // A write error explains a stream that stopped because the writer went away, so it
    // takes precedence; otherwise a stream error means the file is incomplete.
    let outcome = match (streamed, written) {
        (_, Err(write_error)) => Err(write_error),
        (Err(copy_error), Ok(_)) => Err(copy_error),
        (Ok(()), Ok((rows, bytes))) => Ok((rows, bytes)),
    };
    match outcome {
        Ok((rows, bytes)) => Ok(StagedArchive {
            temp_path,
            rows,
            bytes,
        }),
        Err(error) => {
            discard(temp_path).await;
            Err(error)
        }
    }
}

/// Runs blocking file work off the async workers.
async fn run_blocking<T: Send + 'static>(
    partition: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PartitionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| PartitionError::ArchiveTask {
            partition: partition.to_owned(),
            source,
        })
}

/// Creates the archive directory if needed and a fresh temp file in it.
fn create_temp_file(
    partition: &str,
    dir: &Path,
    temp_path: &Path,
) -> Result<std::fs::File, PartitionError> {
    std::fs::create_dir_all(dir).map_err(archive_err(partition, ArchiveStep::CreateDir, dir))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp_path)
        .map_err(archive_err(
            partition,
            ArchiveStep::CreateTempFile,
            temp_path,
        ))
}

/// Reads the COPY stream and hands it to the writer in chunks of ~64 KiB (Postgres sends
/// one message per row; one channel hop per row would cost more than the row).
async fn stream_copy(
    tx: &Transaction<'_>,
    partition: &str,
    copy_sql: &str,
    sender: mpsc::Sender<Vec<u8>>,
) -> Result<(), PartitionError> {
    let export_error = db(partition, Step::Export);
    let stream = match tx.copy_out(copy_sql).await {
        Ok(stream) => stream,
        Err(e) => return Err(export_error(e)),
    };
    pin_mut!(stream);
    let mut chunk = Vec::with_capacity(EXPORT_CHUNK_BYTES);
    loop {
        match stream.try_next().await {
            Ok(Some(data)) => {
                chunk.extend_from_slice(&data);
                if chunk.len() >= EXPORT_CHUNK_BYTES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK_BYTES));
                    if sender.send(full).await.is_err() {
                        // The writer failed; its error is reported by the caller.
                        return Ok(());
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return Err(export_error(e)),
        }
    }
    if !chunk.is_empty() {
        // As above: a closed channel means the writer's error is the one to report.
        let _ = sender.send(chunk).await;
    }
    Ok(())
}

/// Compresses the chunks into `file`, counting CSV records, and fsyncs it. Returns
/// (data rows, compressed bytes).
fn write_gzip(
    partition: &str,
    temp_path: &Path,
    file: std::fs::File,
    mut receiver: mpsc::Receiver<Vec<u8>>,
) -> Result<(u64, u64), PartitionError> {
    let archive_error = |step| archive_err(partition, step, temp_path);
    let mut counter = CsvRecordCounter::default();
    let mut gzip = GzEncoder::new(
        BufWriter::with_capacity(EXPORT_CHUNK_BYTES, file),
        Compression::default(),
    );
    while let Some(chunk) = receiver.blocking_recv() {
        counter.feed(&chunk);
        gzip.write_all(&chunk)
            .map_err(archive_error(ArchiveStep::Write))?;
    }
    let file = gzip
        .finish()
        .map_err(archive_error(ArchiveStep::Write))?
        .into_inner()
        .map_err(|e| archive_error(ArchiveStep::Write)(e.into_error()))?;
    file.sync_all().map_err(archive_error(ArchiveStep::Sync))?;
    let bytes = file
        .metadata()
        .map_err(archive_error(ArchiveStep::Sync))?
        .len();
    // The first record is the header.
    Ok((counter.records.saturating_sub(1), bytes))
}

/// Moves the fsynced temp file to its final name and fsyncs the directory, so the
/// archive survives a crash before the partition is dropped.
async fn publish(
    partition: &str,
    temp_path: &Path,
    path: &Path,
    dir: &Path,
) -> Result<(), PartitionError> {
    let (owned_partition, temp, dest, dir) = (
        partition.to_owned(),
        temp_path.to_owned(),
        path.to_owned(),
        dir.to_owned(),
    );
    let result = run_blocking(partition, move || {
        std::fs::rename(&temp, &dest).map_err(archive_err(
            &owned_partition,
            ArchiveStep::Rename,
            &dest,
        ))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(archive_err(&owned_partition, ArchiveStep::SyncDir, &dir))
    })
    .await
    .and_then(|result| result);
    if result.is_err() {
        discard(temp_path.to_owned()).await;
    }
    result
}

/// Best-effort removal of a temp file after a failure; the failure itself is what gets
/// reported.
async fn discard(temp_path: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&temp_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err((temp_path, e)),
        _ => Ok(()),
    })
    .await;
    if let Ok(Err((path, error))) = removed {
        tracing::warn!(path = %path.display(), %error, "could not remove temporary archive file");
    }
}

/// Counts CSV records in Postgres' `COPY ... (FORMAT csv)` output, across chunk
/// boundaries. Postgres quotes any field holding `"`, `,`, CR or LF and doubles inner
/// quotes, so a record ends at every LF outside quotes, and toggling on each `"` tracks
/// "inside quotes" exactly (a doubled quote toggles twice).
#[derive(Debug, Default)]
struct CsvRecordCounter {
    in_quotes: bool,
    records: u64,
}

impl CsvRecordCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.records += 1,
                _ => {}
            }
        }
    }
}

/// Turns the full-text-search index on `messages.text` on or off.
///
/// On: `CREATE INDEX IF NOT EXISTS messages_text_fts_idx ON messages USING gin
/// (to_tsvector('simple', text))` on the partitioned parent, which builds it on every
/// partition and on every partition attached later. It is not `CONCURRENTLY` (Postgres
/// cannot do that on a partitioned parent), so writes wait while it builds: switch it on
/// before the data grows, or in a quiet hour. Queries must use the same expression,
/// `to_tsvector('simple', text) @@ plainto_tsquery('simple', $1)`, to use it.
/// Off: drops it (on all partitions). Both are no-ops when already in that state.
pub async fn set_full_text_search(
    client: &mut Client,
    enabled: bool,
) -> Result<(), PartitionError> {
    let tx = client
        .transaction()
        .await
        .map_err(db(PARENT_TABLE, Step::Begin))?;
    lock(&tx, MAINTENANCE_LOCK).await?;
    let (sql, step) = if enabled {
        (
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING gin (to_tsvector('simple', text))",
                quote_ident(FTS_INDEX),
                quote_ident(PARENT_TABLE)
            ),
            Step::CreateIndex,
        )
    } else {
        (
            format!("DROP INDEX IF EXISTS {}", quote_ident(FTS_INDEX)),
            Step::DropIndex,
        )
    };
    tx.batch_execute(&sql)
        .await
        .map_err(db(PARENT_TABLE, step))?;
    tx.commit().await.map_err(db(PARENT_TABLE, Step::Commit))?;
    tracing::info!(
        enabled,
        index = FTS_INDEX,
        "full-text search index switched"
    );
    Ok(())
}

/// Whether the full-text-search index currently exists on `messages`.
pub async fn full_text_search_enabled(client: &impl GenericClient) -> Result<bool, PartitionError> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index
                             WHERE indrelid = $1::text::regclass
                               AND indexrelid = to_regclass($2::text))",
            &[&PARENT_TABLE, &FTS_INDEX],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db(PARENT_TABLE, Step::ReadCatalog))
}

/// Takes a transaction-scoped advisory lock (released at commit or rollback, so a crashed
/// maintainer can never leave it held), then applies [`TX_SETTINGS`]. This first wait is
/// not bounded (the settings come after it): waiting for another maintainer is the point.
async fn lock(tx: &Transaction<'_>, key: i64) -> Result<(), PartitionError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(db(PARENT_TABLE, Step::Lock))?;
    tx.batch_execute(TX_SETTINGS)
        .await
        .map_err(db(PARENT_TABLE, Step::Lock))
}

/// `"message_id", "bot_id", ...`: the parent's columns in order, so moved rows and
/// archives never depend on a partition's physical column order.
async fn parent_columns(client: &impl GenericClient) -> Result<String, PartitionError> {
    let rows = client
        .query(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            &[&PARENT_TABLE],
        )
        .await
        .map_err(db(PARENT_TABLE, Step::ReadCatalog))?;
    let names = rows
        .iter()
        .map(|row| row.try_get::<_, String>(0).map(|name| quote_ident(&name)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(PARENT_TABLE, Step::ReadCatalog))?;
    Ok(names.join(", "))
}

/// Quotes an SQL identifier (`"name"`, inner quotes doubled). Names here are generated,
/// but quoting costs nothing and keeps a future caller from making them injectable.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub created: Vec<String>,
    pub archived: Vec<ArchivedPartition>,
}

/// Runs [`ensure_partitions`] and [`apply_retention`] with the configured settings, on
/// a timer in the worker and once from the `migrate` and `partitions` commands.
pub struct PartitionMaintainer {
    pool: Pool,
    settings: PartitionSettings,
}

impl PartitionMaintainer {
    /// A maintainer on `pool`, with settings checked at load.
    pub fn new(pool: Pool, settings: PartitionSettings) -> Self {
        PartitionMaintainer { pool, settings }
    }

    /// Creates the partitions ahead only (what `migrate` needs before writes start).
    pub async fn ensure(&self, today: NaiveDate) -> Result<Vec<String>, PartitionError> {
        let mut client = self.pool.get().await?;
        ensure_partitions(&mut client, today, self.settings.ahead_days).await
    }

    /// Archives and drops what retention says is expired, then the message keys older
    /// than the same cutoff.
    pub async fn retain(&self, today: NaiveDate) -> Result<Vec<ArchivedPartition>, PartitionError> {
        let mut client = self.pool.get().await?;
        let archived = apply_retention(
            &mut client,
            today,
            self.settings.retention_days.get(),
            &self.settings.archive_dir,
        )
        .await?;
        let cutoff = retention_cutoff(today, self.settings.retention_days.get())?;
        let pruned = super::keys::prune_message_keys(&client, cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, %cutoff, "expired message keys deleted");
        }
        Ok(archived)
    }

    /// One pass: create ahead, then retention. Retention runs even when creation failed
    /// (a stuck creation must not let the disk fill up); the first error is returned and
    /// the other logged.
    pub async fn run_once(&self, today: NaiveDate) -> Result<MaintenanceReport, PartitionError> {
        let created = self.ensure(today).await;
        let archived = self.retain(today).await;
        match (created, archived) {
            (Ok(created), Ok(archived)) => Ok(MaintenanceReport { created, archived }),
            (Err(error), Err(also)) => {
                tracing::warn!(error = %also, "retention failed too");
                Err(error)
            }
            (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
        }
    }

    /// Runs a pass now and then every `every` until `stop` completes; a failed pass is
    /// logged and retried at the next tick (partitions exist days ahead, so one missed
    /// pass costs nothing). Uses tokio's clock, so tests can pause time.
    pub async fn run_until(&self, every: Duration, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pin_mut!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            let today = Utc::now().date_naive();
            match self.run_once(today).await {
                Ok(report) => tracing::debug!(
                    created = report.created.len(),
                    archived = report.archived.len(),
                    "partition maintenance pass done"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    partition = error.partition().unwrap_or("-"),
                    "partition maintenance pass failed; retrying at the next tick"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn names_and_bounds_come_from_the_date() {
        let p = DailyPartition::for_day(day(2024, 2, 29)).expect("in range");
        assert_eq!(p.name(), "messages_p20240229");
        assert_eq!(
            p.bound_sql(),
            "FOR VALUES FROM ('2024-02-29 00:00:00+00') TO ('2024-03-01 00:00:00+00')"
        );
        assert_eq!(DailyPartition::parse_name("messages_p20240229"), Some(p));
    }

    #[test]
    fn parse_name_rejects_what_we_did_not_create() {
        for name in [
            "messages_default",
            "messages_p2024022",
            "messages_p202402290",
            "messages_p20240230",
            "messages_p+0240229",
            "other_p20240229",
        ] {
            assert_eq!(DailyPartition::parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn years_outside_postgres_and_the_name_format_are_refused() {
        assert_eq!(DailyPartition::for_day(day(10000, 1, 1)), None);
        assert_eq!(DailyPartition::for_day(day(0, 1, 1)), None);
    }

    #[test]
    fn window_is_yesterday_through_today_plus_ahead() {
        let window = partition_window(day(2024, 12, 30), 3).expect("in range");
        let names: Vec<_> = window.iter().map(DailyPartition::name).collect();
        assert_eq!(
            names,
            [
                "messages_p20241229",
                "messages_p20241230",
                "messages_p20241231",
                "messages_p20250101",
                "messages_p20250102"
            ]
        );
    }

    #[test]
    fn retention_keeps_the_last_n_full_days() {
        let cutoff = retention_cutoff(day(2024, 3, 31), 30).expect("in range");
        let kept = DailyPartition::for_day(day(2024, 3, 1)).expect("in range");
        let gone = DailyPartition::for_day(day(2024, 2, 29)).expect("in range");
        assert!(kept.end() > cutoff);
        assert!(gone.end() <= cutoff);
    }

    #[test]
    fn csv_counter_ignores_newlines_inside_quotes_across_chunks() {
        let csv = b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\n\"\n3,plain\n";
        for split in 0..csv.len() {
            let mut counter = CsvRecordCounter::default();
            counter.feed(&csv[..split]);
            counter.feed(&csv[split..]);
            assert_eq!(counter.records, 4, "split at {split}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("messages_p20240101"), "\"messages_p20240101\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
