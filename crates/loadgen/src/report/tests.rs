use std::time::Duration;

use chrono::DateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::recording::{ACCEPTED, THROTTLED};
use super::{summarize, LoadReport, Recorder, RunConfig};
use crate::client::{Completion, FailureKind, Outcome, Response};
use crate::resend::Cause;
use crate::schedule::{Schedule, WarmUp};

fn answered(status: u16, retry_after: bool) -> Outcome {
    Outcome::Answered(Response {
        status,
        retry_after,
        retry_after_secs: retry_after.then_some(1),
        keep_alive: true,
    })
}

fn done(s: &Schedule, seq: u64, after_ms: u64, outcome: Outcome) -> Completion {
    let intended = s.intended(seq);
    Completion {
        conn: 0,
        seq,
        started: intended,
        completed: intended + Duration::from_millis(after_ms),
        outcome,
        ids: vec![Uuid::now_v7()],
        open: true,
        reconnected: false,
    }
}

fn sample_report() -> LoadReport {
    let start = Instant::now();
    let s = Schedule::new(
        start,
        100.0,
        Duration::from_secs(1),
        Duration::from_secs(2),
        WarmUp::FullRate,
    );
    let mut rec = Recorder::new(s.clone(), 1, true);
    // Warm-up: ignored.
    rec.record(done(&s, 5, 1, answered(ACCEPTED, false)));
    for seq in 100..270 {
        rec.record(done(&s, seq, 3, answered(ACCEPTED, false)));
    }
    for seq in 270..290 {
        rec.record(done(&s, seq, 1, answered(THROTTLED, seq % 2 == 0)));
    }
    for seq in 290..295 {
        rec.record(done(&s, seq, 1, answered(400, false)));
    }
    for seq in 295..300 {
        rec.record(done(&s, seq, 10_000, Outcome::Failed(FailureKind::Timeout)));
    }
    let (raw, ids) = rec.finish();
    assert_eq!(ids.len(), 170);
    let results = summarize(&[raw], 2.0);
    LoadReport {
        started_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
        config: RunConfig {
            url: "http://127.0.0.1:8080".into(),
            rate: 100.0,
            connections: 4,
            bots: 4,
            duration_s: 2.0,
            warmup_s: 1.0,
            ..RunConfig::default()
        },
        results,
        ..LoadReport::default()
    }
}

#[test]
fn counts_every_status_and_failure() {
    let r = sample_report();
    let res = &r.results;
    assert_eq!(res.warmup_completed, 1);
    assert_eq!(res.completed, 200);
    assert_eq!(res.status_counts.get("202"), Some(&170));
    assert_eq!(res.status_counts.get("429"), Some(&20));
    assert_eq!(res.status_counts.get("400"), Some(&5));
    assert_eq!(res.failures.get("timeout"), Some(&5));
    assert_eq!(res.retry_after_missing, 10);
    assert_eq!(r.error_count(), 10);
    assert_eq!(res.accepted_messages, 170);
    assert!((res.accepted_msgs_per_s - 85.0).abs() < 1e-9);
    assert_eq!(res.latency_ms.count, 170);
    assert!(
        (res.latency_ms.p50 - 3.0).abs() < 0.01,
        "{:?}",
        res.latency_ms
    );
}

#[test]
fn follow_ups_are_counted_apart_from_the_scheduled_requests() {
    let s = Schedule::new(
        Instant::now(),
        100.0,
        Duration::ZERO,
        Duration::from_secs(1),
        WarmUp::FullRate,
    );
    let mut rec = Recorder::new(s.clone(), 1, false);
    rec.record(done(&s, 0, 1, answered(503, true)));
    rec.record_follow_up(Cause::Retry, &answered(ACCEPTED, false));
    rec.record_follow_up(Cause::Resend, &answered(ACCEPTED, false));
    rec.record_follow_up(Cause::Resend, &answered(503, false));
    let results = summarize(&[rec.finish().0], 1.0);
    assert_eq!(results.completed, 1);
    assert_eq!(results.status_counts.get("503"), Some(&1));
    assert_eq!(results.accepted_requests, 0);
    assert_eq!(results.follow_ups["retry"]["202"], 1);
    assert_eq!(results.follow_ups["resend"]["202"], 1);
    assert_eq!(results.follow_ups["resend"]["503"], 1);
    assert_eq!(results.retry_after_missing, 1);
    let md = LoadReport {
        results,
        ..LoadReport::default()
    }
    .to_markdown();
    assert!(md.contains("| resend | 503 | 1 |"), "{md}");
}

#[test]
fn timeline_buckets_by_completion_second() {
    let r = sample_report();
    let t = &r.results.timeline;
    // Timeouts completed 10 s late: the timeline reaches second 11.
    assert!(t.len() >= 12, "{}", t.len());
    assert_eq!(t[0].accepted_messages, 100);
    assert_eq!(t[1].accepted_messages, 70);
    assert_eq!(t[1].throttled, 20);
    assert_eq!(t[1].errors, 5);
    assert!(t.iter().skip(2).any(|s| s.errors == 5));
}

#[test]
fn figures_from_several_processes_add_up_exactly() {
    let start = Instant::now();
    let s = Schedule::new(
        start,
        100.0,
        Duration::ZERO,
        Duration::from_secs(2),
        WarmUp::FullRate,
    );
    let mut whole = Recorder::new(s.clone(), 1, false);
    let mut halves = [
        Recorder::new(s.clone(), 1, false),
        Recorder::new(s.clone(), 1, false),
    ];
    for seq in 0..200 {
        let outcome = if seq % 7 == 0 {
            answered(THROTTLED, true)
        } else {
            answered(ACCEPTED, false)
        };
        let ms = 1 + seq % 50;
        whole.record(done(&s, seq, ms, outcome));
        halves[(seq % 2) as usize].record(done(&s, seq, ms, outcome));
    }
    let one = summarize(&[whole.finish().0], 2.0);
    let [a, b] = halves;
    let mut two = summarize(&[a.finish().0, b.finish().0], 2.0);
    // Each half was handed the whole schedule here, so the scheduled
    // count doubles; everything measured must match exactly.
    assert_eq!(two.measured_requests, 2 * one.measured_requests);
    two.measured_requests = one.measured_requests;
    assert_eq!(one, two);
}

#[test]
fn json_and_markdown_carry_the_figures() {
    let r = sample_report();
    let json = r.to_json().expect("json");
    let back: LoadReport = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json value");
    assert_eq!(v["results"]["status_counts"]["429"], 20);
    assert_eq!(v["results"]["latency_ms"]["count"], 170);
    let md = r.to_markdown();
    assert!(md.contains("| HTTP 202 | 170 |"), "{md}");
    assert!(md.contains("| HTTP 429 | 20 |"));
    assert!(md.contains("| no answer: timeout | 5 |"));
    assert!(md.contains("85 msg/s"));
    assert!(md.contains("| request → 202 | 170 | 3.00 |"), "{md}");
    assert!(md.contains("latency.png"));
}
