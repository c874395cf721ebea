//! Applies the plain-SQL migrations under `sql/` in order, once each, recording them in
//! `schema_migrations`. An advisory lock lets several replicas start at once safely.

use deadpool_postgres::Pool;

use super::StorageError;
use crate::config::{PartitionSettings, Secret, StorageSettings};

/// The migrations, compiled in so the binary never runs against a mismatched folder.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_messages",
        include_str!("../../../../sql/0001_messages.sql"),
    ),
    ("0002_views", include_str!("../../../../sql/0002_views.sql")),
    (
        "0003_message_keys",
        include_str!("../../../../sql/0003_message_keys.sql"),
    ),
    (
        "0004_unenriched_index",
        include_str!("../../../../sql/0004_unenriched_index.sql"),
    ),
    (
        "0005_rollups",
        include_str!("../../../../sql/0005_rollups.sql"),
    ),
    (
        "0006_analyst",
        include_str!("../../../../sql/0006_analyst.sql"),
    ),
    (
        "0007_rollup_reads",
        include_str!("../../../../sql/0007_rollup_reads.sql"),
    ),
    (
        "0008_rollup_figures",
        include_str!("../../../../sql/0008_rollup_figures.sql"),
    ),
    (
        "0009_minute_rollup_by_bot",
        include_str!("../../../../sql/0009_minute_rollup_by_bot.sql"),
    ),
    (
        "0010_hour_day_fillfactor",
        include_str!("../../../../sql/0010_hour_day_fillfactor.sql"),
    ),
    (
        "0011_hour_day_from_closed_minutes",
        include_str!("../../../../sql/0011_hour_day_from_closed_minutes.sql"),
    ),
];

/// Arbitrary constant naming "chat-analytics migrations" for pg_advisory_lock.
const MIGRATION_LOCK: i64 = 0x0063_6861_746d_6967;

/// Applies pending migrations; returns the names applied by this call.
pub async fn migrate(pool: &Pool) -> Result<Vec<&'static str>, StorageError> {
    let mut client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 name text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_pending(&mut client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(
    client: &mut deadpool_postgres::Object,
) -> Result<Vec<&'static str>, StorageError> {
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let done = client
            .query_opt("SELECT 1 FROM schema_migrations WHERE name = $1", &[name])
            .await?
            .is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|source| StorageError::Migration { name, source })?;
        tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name])
            .await?;
        tx.commit().await?;
        tracing::info!(migration = name, "applied");
        applied.push(*name);
    }
    Ok(applied)
}

/// Everything `migrate` does: migrations, partitions ahead, and the full-text index
/// switched to what the settings say.
pub async fn prepare_database(
    pool: &Pool,
    storage: &StorageSettings,
    partitions: &PartitionSettings,
    analyst_password: &Secret,
) -> Result<PreparedDatabase, StorageError> {
    let applied = migrate(pool).await?;
    // One connection for both steps; a pool failure is reported as the partition step's,
    // as it was when that step checked out its own.
    let mut client = pool
        .get()
        .await
        .map_err(super::partitions::PartitionError::Pool)?;
    let created = super::partitions::ensure_partitions(
        &mut client,
        chrono::Utc::now().date_naive(),
        partitions.ahead_days,
    )
    .await?;
    super::fulltext::set_full_text_search(&mut client, storage.full_text_search).await?;
    set_analyst_password(&client, analyst_password).await?;
    Ok(PreparedDatabase {
        migrations_applied: applied,
        partitions_created: created,
        full_text_search: storage.full_text_search,
    })
}

/// Lets `chat_analyst` (sql/0006_analyst.sql) log in with the configured password. Run on
/// every `migrate`, so changing the setting and migrating again rotates it.
async fn set_analyst_password(
    client: &deadpool_postgres::Object,
    password: &Secret,
) -> Result<(), StorageError> {
    // DDL takes no parameters: the server quotes the password as a literal itself.
    let statement: String = client
        .query_one(
            "SELECT format('ALTER ROLE chat_analyst WITH LOGIN PASSWORD %L', $1::text)",
            &[&password.expose()],
        )
        .await?
        .try_get(0)?;
    // Roles are shared by the server's databases: two migrations at once (of two
    // databases, or two replicas) can collide on the role's catalog row; the loser retries.
    let mut attempt = 1;
    loop {
        match client.batch_execute(&statement).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 5 => {
                tracing::debug!(%error, attempt, "setting the analyst password; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// What [`prepare_database`] did; `migrate` prints it as JSON.
#[derive(Debug, serde::Serialize)]
pub struct PreparedDatabase {
    /// Migrations this run applied, by name; empty when the schema was up to date.
    pub migrations_applied: Vec<&'static str>,
    /// Daily partitions created, `messages_pYYYYMMDD`.
    pub partitions_created: Vec<String>,
    /// Whether the full-text-search index is now on.
    pub full_text_search: bool,
}
