//! The Postgres connection pool, and its health probe.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use tokio_postgres::NoTls;

use super::StorageError;
use crate::config::PostgresSettings;
use crate::telemetry::Probe;

/// Builds a pool; connections are opened lazily, so this succeeds with Postgres down.
pub fn connect_pool(settings: &PostgresSettings) -> Result<Pool, StorageError> {
    let mut pg: tokio_postgres::Config = settings
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| StorageError::Config(e.to_string()))?;
    pg.connect_timeout(settings.connect_timeout);
    pg.application_name("chat-analytics");
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size.get())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| StorageError::Config(e.to_string()))
}

/// `/health` probe: a pooled connection answers `SELECT 1`.
pub struct PostgresProbe(pub Pool);

impl Probe for PostgresProbe {
    fn probe(&self, within: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let check = async {
                let client = self.0.get().await.map_err(|e| e.to_string())?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            tokio::time::timeout(within, check)
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        })
    }
}

/// True when the database answers and would take writes: reachable, not a standby in
/// recovery, not read-only. What the worker asks before replaying outage dead letters when
/// no write of its own has told it the outage is over.
pub async fn accepts_writes(pool: &Pool, within: Duration) -> bool {
    let check = async {
        let client = pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                &[],
            )
            .await
            .ok()?;
        row.try_get::<_, bool>(0).ok()
    };
    matches!(tokio::time::timeout(within, check).await, Ok(Some(true)))
}
