//! Retention: each expired partition archived, checked, then detached and dropped, in one
//! transaction that rolls back (dropping nothing) on any failure.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use tokio_postgres::Client;

use super::catalog::parent_columns;
use super::ddl::{lock, MAINTENANCE_LOCK};
use super::export::{discard, export_to_temp_file, publish};
use super::{
    db, list_partitions, quote_ident, retention_cutoff, DailyPartition, PartitionError,
    PartitionInfo, Step, PARENT_TABLE,
};

/// Advisory lock key ("chatrtnt") serialising retention runs, so two workers never
/// export the same partition at once.
const RETENTION_LOCK: i64 = 0x6368_6174_7274_6e74;

/// A partition that was archived and dropped by [`apply_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedPartition {
    /// `messages_pYYYYMMDD`.
    pub name: String,
    /// The day the partition held.
    pub day: NaiveDate,
    /// Rows exported (equal to the rows the partition held).
    pub rows: u64,
    /// Size of the compressed archive.
    pub bytes: u64,
    /// The archive: `archive_dir/messages_pYYYYMMDD.csv.gz`.
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
