//! The load generator against the real service: what it reports matches what the
//! service stored, end-to-end latency included.

mod support;

use std::time::Duration;

use chat_analytics::app::Role;
use support::{temp_dir, ChildProcess, Pipeline};

#[tokio::test]
async fn loadgen_reports_what_the_service_accepted_and_stored() {
    let fx = Pipeline::start(3).await;
    let app = fx.spawn(Role::Serve).await;
    let out = temp_dir("loadgen");
    let out_arg = out.display().to_string();
    let mut loadgen = ChildProcess::spawn(
        "loadgen",
        &[
            "loadgen",
            "--url",
            &app.api,
            "--rate",
            "200",
            "--connections",
            "20",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--postgres-url",
            &fx.db.url,
            "--out",
            &out_arg,
        ],
        &[],
    );
    assert!(
        loadgen.wait(Duration::from_secs(90)).await.success(),
        "loadgen exits 0"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("json");
    let accepted = report["results"]["status_counts"]["202"]
        .as_u64()
        .expect("202 count");
    assert!(
        accepted >= 500,
        "about 600 measured requests at 200/s for 3 s: {accepted}"
    );
    assert_eq!(report["connections"]["connected"], 20);
    assert!(report["results"]["latency_ms"]["p99"]
        .as_f64()
        .is_some_and(|p| p > 0.0));
    let e2e = &report["e2e"];
    assert_eq!(
        e2e["requested"].as_u64(),
        Some(accepted),
        "e2e looks up every accepted message"
    );
    assert_eq!(
        e2e["missing"], 0,
        "every accepted message was stored: {e2e}"
    );
    assert!(e2e["latency_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0));
    let stored = fx
        .db
        .count("SELECT count(*) FROM messages WHERE bot_id LIKE 'loadgen-bot-%'")
        .await;
    assert!(
        stored as u64 >= accepted,
        "rows stored ({stored}) cover the measured 202s ({accepted})"
    );
    for file in ["report.md", "latency.png"] {
        let len = std::fs::metadata(out.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{file} written");
    }
    fx.finish([app]).await;
}
