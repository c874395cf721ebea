//! The partitions of `messages` as the Postgres catalog describes them.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::{db, quote_ident, DailyPartition, PartitionError, Step, PARENT_TABLE};

/// Matches the text `pg_get_expr(relpartbound, oid)` gives for a range partition on one
/// column with literal bounds; `MINVALUE`/`MAXVALUE`/`DEFAULT` do not match.
const RANGE_BOUND_PATTERN: &str = r"^FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)$";

/// A partition of `messages` as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition's table name.
    pub name: String,
    /// Range bounds, when the partition is a plain `FROM (ts) TO (ts)` range.
    pub lower: Option<DateTime<Utc>>,
    /// Exclusive upper bound; `None` as for `lower`.
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

/// `"message_id", "bot_id", ...`: the parent's columns in order, so moved rows and
/// archives never depend on a partition's physical column order.
pub(super) async fn parent_columns(client: &impl GenericClient) -> Result<String, PartitionError> {
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
