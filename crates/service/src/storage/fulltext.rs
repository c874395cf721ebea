//! The full-text-search index on `messages.text`: switched on or off by
//! `storage.full_text_search`, which trades search speed for write cost.

use tokio_postgres::{Client, GenericClient};

use super::partitions::{
    db, lock, quote_ident, PartitionError, Step, MAINTENANCE_LOCK, PARENT_TABLE,
};

/// The full-text-search index on `messages.text`; see [`set_full_text_search`].
pub const FTS_INDEX: &str = "messages_text_fts_idx";

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
