//! `/dead-letters/drained`: lets an orchestrator's pre-stop hook wait until this worker
//! has replayed the dead letters of a database outage, so that a scale-down does not leave
//! them on a volume no running worker reads.

use std::time::Duration;

use futures::future::BoxFuture;
use hyper::StatusCode;
use serde::Serialize;

use crate::http_server::{json_response, HttpResponse};

/// Longest wait a caller may ask for.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(600);

/// Dead letters this process replays by itself.
pub trait DeadLetterBacklog: Send + Sync + 'static {
    /// Looks at the dead letters at once and waits up to `within` until none is pending.
    fn wait_replayed(&self, within: Duration) -> BoxFuture<'_, Backlog>;
}

/// Where the replay stood when the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// A look at the directory found nothing left to replay.
    pub drained: bool,
    /// Dead letters waiting at the last look (it may be older than the wait while the
    /// database is unavailable: no look is made then).
    pub pending: usize,
}

/// The answer to `GET /dead-letters/drained?wait_secs=N`: 200 once nothing is pending,
/// 503 after the wait otherwise; the body is the [`Backlog`].
pub async fn drained_response(
    backlog: &dyn DeadLetterBacklog,
    query: Option<&str>,
) -> HttpResponse {
    let within = match wait_from_query(query) {
        Ok(within) => within,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": {"code": "invalid_query", "message": message, "field": "wait_secs"}}),
            )
        }
    };
    let backlog = backlog.wait_replayed(within).await;
    let status = if backlog.drained {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &backlog)
}

/// `wait_secs` from the query string: absent means 0; larger than the maximum is capped.
fn wait_from_query(query: Option<&str>) -> Result<Duration, String> {
    let mut wait = Duration::ZERO;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "wait_secs" => {
                let secs: u64 = value.parse().map_err(|_| {
                    format!("wait_secs must be a whole number of seconds, got {value:?}")
                })?;
                wait = Duration::from_secs(secs).min(MAX_DRAIN_WAIT);
            }
            other => return Err(format!("unknown query parameter {other:?}; only wait_secs")),
        }
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_read_from_the_query_and_capped() {
        assert_eq!(wait_from_query(None), Ok(Duration::ZERO));
        assert_eq!(wait_from_query(Some("")), Ok(Duration::ZERO));
        assert_eq!(
            wait_from_query(Some("wait_secs=90")),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(wait_from_query(Some("wait_secs=86400")), Ok(MAX_DRAIN_WAIT));
    }

    #[test]
    fn a_bad_wait_or_an_unknown_parameter_is_refused() {
        let bad = wait_from_query(Some("wait_secs=-1")).expect_err("negative");
        assert!(bad.contains("whole number"), "{bad}");
        assert!(wait_from_query(Some("wait_secs=")).is_err());
        let unknown = wait_from_query(Some("wait=5")).expect_err("unknown");
        assert!(unknown.contains("\"wait\""), "{unknown}");
    }
}
