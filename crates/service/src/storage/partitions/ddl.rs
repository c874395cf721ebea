//! Creating the days ahead, under the advisory lock every DDL on `messages` takes.

use chrono::NaiveDate;
use tokio_postgres::{Client, Transaction};

use super::catalog::parent_columns;
use super::{
    db, list_partitions, partition_window, quote_ident, DailyPartition, PartitionError,
    PartitionInfo, Step, PARENT_TABLE,
};

/// Advisory lock key ("chatpart") held by every transaction that changes the set of
/// partitions or their indexes, so two maintainers (or a maintainer and a migration)
/// never interleave DDL on `messages`.
pub(in crate::storage) const MAINTENANCE_LOCK: i64 = 0x6368_6174_7061_7274;

/// Session settings for maintenance transactions. `lock_timeout` bounds how long DDL
/// may queue behind (and so in front of) the ingest path's writes: a pass that cannot
/// get its locks quickly gives up and is retried on the next tick. UTC and ISO dates
/// make bounds and archived timestamps read the same on every server.
const TX_SETTINGS: &str = "SET LOCAL lock_timeout = '5s'; \
     SET LOCAL TimeZone = 'UTC'; \
     SET LOCAL DateStyle = 'ISO, YMD'; \
     SET LOCAL extra_float_digits = 1";

/// Takes a transaction-scoped advisory lock (released at commit or rollback, so a crashed
/// maintainer can never leave it held), then applies [`TX_SETTINGS`]. This first wait is
/// not bounded (the settings come after it): waiting for another maintainer is the point.
pub(in crate::storage) async fn lock(tx: &Transaction<'_>, key: i64) -> Result<(), PartitionError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(db(PARENT_TABLE, Step::Lock))?;
    tx.batch_execute(TX_SETTINGS)
        .await
        .map_err(db(PARENT_TABLE, Step::Lock))
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
