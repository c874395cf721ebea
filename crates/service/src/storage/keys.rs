//! Retention of `message_keys`: a key is kept as long as raw rows are
//! (`partitions.retention_days`), so a copy of a message posted within that window is
//! recognised. The partition maintainer prunes older keys on each pass.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::partitions::{PartitionError, Step};

const PRUNE_MESSAGE_KEYS: &str = include_str!("../../../../sql/queries/prune_message_keys.sql");
/// Keys deleted per statement.
const PRUNE_CHUNK: i64 = 10_000;

/// Deletes the keys stored before `cutoff`; returns how many.
pub async fn prune_message_keys(
    client: &impl GenericClient,
    cutoff: DateTime<Utc>,
) -> Result<u64, PartitionError> {
    let fail = |source| PartitionError::Db {
        partition: "message_keys".into(),
        step: Step::PruneKeys,
        source,
    };
    let statement = client
        .prepare_cached(PRUNE_MESSAGE_KEYS)
        .await
        .map_err(fail)?;
    let mut pruned = 0;
    loop {
        let deleted = client
            .execute(&statement, &[&cutoff, &PRUNE_CHUNK])
            .await
            .map_err(fail)?;
        pruned += deleted;
        if deleted < PRUNE_CHUNK as u64 {
            return Ok(pruned);
        }
    }
}
