//! The service's NLP client against the real nlp-sim: HTTP/2 multiplexing and what a
//! timeout leaves of the shared connection. Here rather than beside the client because
//! they need both crates; no Kafka or Postgres.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_analytics::config::{Http2Mode, NlpSettings, Settings};
use chat_analytics::domain::NlpStatus;
use chat_analytics::enrich::{EnrichMetrics, Enricher};
use nlp_sim::{FaultSettings, Faults};
use tokio::net::{TcpListener, TcpStream};

fn enricher(settings: NlpSettings) -> (Enricher, EnrichMetrics) {
    let metrics = EnrichMetrics::unregistered().expect("metrics");
    let enricher = Enricher::new(&settings, metrics.clone());
    (enricher, metrics)
}

/// The shipped `[nlp]` section: the spec's client policy.
fn defaults() -> NlpSettings {
    Settings::load_from(None, Vec::new())
        .expect("defaults load")
        .nlp
}

fn uri(url: &str) -> hyper::Uri {
    url.parse().expect("a test URL")
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("not zero")
}

fn errors(metrics: &EnrichMetrics, kind: &str) -> u64 {
    metrics.errors.with_label_values(&[kind]).get()
}

/// The real nlp-sim behind a counting TCP relay: how many connections the
/// client opened is what HTTP/2 is for.
struct RelayedSim {
    url: String,
    connections: Arc<AtomicUsize>,
    faults: Faults,
}

impl RelayedSim {
    async fn start(latency_ms: u64) -> RelayedSim {
        let sim = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let sim_addr = sim.local_addr().expect("sim addr");
        let settings = FaultSettings::new(latency_ms, 0.0, 0.0).expect("settings");
        let faults = Faults::new(settings, 0.1).expect("faults");
        tokio::spawn(nlp_sim::serve(
            sim,
            faults.clone(),
            Some(7),
            std::future::pending(),
        ));
        let relay = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = relay.local_addr().expect("relay addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = relay.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(sim_addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        RelayedSim {
            url: format!("http://{addr}/v1/analyze"),
            connections,
            faults,
        }
    }
}

#[tokio::test]
async fn by_default_every_call_goes_over_one_http2_connection_to_nlp_sim() {
    let sim = RelayedSim::start(20).await;
    let (enricher, metrics) = enricher(NlpSettings {
        url: uri(&sim.url),
        // 500 analyses on this test's one thread, unoptimised, take about as long as
        // the default 300 ms: what is tested here is the connection count, not speed.
        attempt_timeout: Duration::from_secs(10),
        ..defaults()
    });
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let enricher = enricher.clone();
            tokio::spawn(async move { enricher.enrich(&format!("great product number {i}")).await })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("task");
        assert_eq!(result.status, NlpStatus::Ok);
        let analysis = result.analysis.expect("analysis");
        assert_eq!(analysis.sentiment_label, "positive");
    }
    assert_eq!(sim.connections.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.duration.get_sample_count(), 500);
}

#[tokio::test]
async fn http2_timeouts_leave_the_shared_connection_usable() {
    let sim = RelayedSim::start(400).await;
    let (enricher, metrics) = enricher(NlpSettings {
        url: uri(&sim.url),
        http2: Http2Mode::On,
        max_attempts: nonzero(1),
        breaker_min_calls: nonzero(1_000_000),
        ..defaults()
    });
    let timed_out: Vec<_> = (0..300)
        .map(|i| {
            let enricher = enricher.clone();
            tokio::spawn(async move { enricher.enrich(&format!("slow {i}")).await })
        })
        .collect();
    for task in timed_out {
        assert_eq!(task.await.expect("task").status, NlpStatus::Failed);
    }
    assert_eq!(errors(&metrics, "timeout"), 300);
    assert_eq!(errors(&metrics, "connect"), 0);

    // The late answers to the cancelled calls are dropped quietly; the same
    // connection carries the next calls.
    sim.faults
        .set(FaultSettings::new(5, 0.0, 0.0).expect("faster"));
    for i in 0..50 {
        let result = enricher.enrich(&format!("quick {i}")).await;
        assert_eq!(result.status, NlpStatus::Ok);
    }
    assert_eq!(errors(&metrics, "connect"), 0);
    assert_eq!(sim.connections.load(Ordering::SeqCst), 1);
}
