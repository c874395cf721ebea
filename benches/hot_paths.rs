//! Criterion micro-benchmarks of the CPU-bound hot paths (issue 4, item 6).
//!
//! - `ingest`: request body → validated `ChatMessage` → Kafka envelope bytes, the
//!   work the API does per request before publishing;
//! - `moderation`: `Moderator::check` with the shipped word lists on ordinary chat,
//!   on the labelled evasions of `tests/data/moderation_evasions.tsv`, and on a
//!   maximum-size (4 KiB) message;
//! - `worker`: the per-record envelope decode, and the JSON column values the batch
//!   INSERT builds (`flagged_terms`, `metadata`). The INSERT itself needs a database
//!   and is measured by `make bench`, not here;
//! - `nlp_sim`: the reference NLP server's analysis (sentiment, toxicity, language,
//!   keywords) of the load generator's chat lines: it shares the bench machine's cores.
//!
//! Run with `cargo bench --bench hot_paths`. Timings are kept short (1 s warm-up, 3 s
//! measurement, 30 samples) so the whole run takes about a minute.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chat_analytics::domain::{
    ChatMessage, NlpDocument, NlpFields, NlpStatus, ProcessedMessage, SourcePosition,
};
use chat_analytics::ingest::{parse_batch, parse_single};
use chat_analytics::moderation::Moderator;
use chat_analytics::queue::{encode_message, Envelope};
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loadgen::payload::chat_text;
use nlp_sim::{analyze, Lexicon};
use serde_json::{json, Value};
use uuid::Uuid;

/// Messages per batch request and per worker batch.
const BATCH: usize = 100;

/// The API's default `api.max_batch_messages`.
const MAX_BATCH_MESSAGES: usize = 500;

/// The longest text the API accepts is 4096 characters; this is 4096 bytes of ASCII.
const LONG_MESSAGE_BYTES: usize = 4096;

/// A typical single message: 118 characters of text, ids and a little metadata.
const SINGLE_TEXT: &str = "Hi, I ordered the blue jacket last week (order #48213) and it \
    still hasn't arrived. Can you check the tracking for me?";

/// Ordinary chat of the kind a support bot relays: what most traffic looks like.
const CLEAN_LINES: &[&str] = &[
    "hi, is anyone there?",
    "I can't log in to my account since this morning",
    "thanks, that fixed it!",
    "what are your opening hours on sunday?",
    "my order #48213 still hasn't arrived, can you check the tracking please",
    "the app keeps crashing when I open settings on my phone",
    "great service, really happy with it 😀",
    "I want a refund, this product is garbage",
    "could you send me the invoice again please, I lost the email",
    "the checkout page shows an error 502 when I pay with my card",
    "why was I charged twice?? I only placed one order",
    "love the new update, the dark mode looks amazing",
    "your bot is useless, let me talk to a human",
    "when will the blue one be back in stock? I need it before friday",
    "merci beaucoup, très bon service",
    "need help with my booking for 3 people on friday at 7pm",
];

/// Abuse and spam as it shows up in real traffic: a small share of messages.
const FLAGGED_LINES: &[&str] = &[
    "this is bullshit, I've been waiting for two weeks",
    "click here for a crypto giveaway, double your bitcoin",
];

/// One message in this many of a batch is abusive or spam.
const FLAGGED_EVERY: usize = 10;

fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn received_at() -> DateTime<Utc> {
    "2026-11-23T10:00:00.123456Z"
        .parse()
        .expect("valid timestamp")
}

/// Deterministic, distinct message ids, as clients sending idempotency keys use.
fn message_id(n: usize) -> String {
    Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0000 + n as u128)
        .hyphenated()
        .to_string()
}

fn message_json(n: usize, text: &str) -> Value {
    json!({
        "message_id": message_id(n),
        "bot_id": format!("support-bot-{:05}", n % 500),
        "conversation_id": format!("conv-{:05}-{}", n % 500, n / 20),
        "user_id": format!("user-{}", 10_000 + n * 7),
        "text": text,
        "sent_at": "2026-11-23T09:59:59.870Z",
        "metadata": {
            "channel": "web",
            "locale": "en-GB",
            "client": {"app": "support-widget", "version": "3.14.2"},
            "tags": ["orders", "tracking"]
        }
    })
}

fn batch_body() -> Vec<u8> {
    let items: Vec<Value> = (0..BATCH)
        .map(|n| {
            let text = if n % FLAGGED_EVERY == FLAGGED_EVERY - 1 {
                FLAGGED_LINES[(n / FLAGGED_EVERY) % FLAGGED_LINES.len()]
            } else {
                CLEAN_LINES[n % CLEAN_LINES.len()]
            };
            message_json(n, text)
        })
        .collect();
    serde_json::to_vec(&items).expect("serialisable")
}

fn bench_ingest(c: &mut Criterion) {
    let now = received_at();
    let single = serde_json::to_vec(&message_json(0, SINGLE_TEXT)).expect("serialisable");
    let parsed = parse_single(&single).expect("valid single message");
    let batch = batch_body();
    assert_eq!(
        parse_batch(&batch, MAX_BATCH_MESSAGES)
            .expect("valid batch")
            .len(),
        BATCH
    );

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single/parse", |b| {
        b.iter(|| parse_single(black_box(&single)))
    });
    group.bench_function("single/encode", |b| {
        b.iter(|| encode_message(black_box(&parsed), now))
    });
    group.bench_function("single/parse+encode", |b| {
        b.iter(|| {
            let message = parse_single(black_box(&single)).expect("valid");
            encode_message(&message, now)
        })
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch100/parse+encode", |b| {
        b.iter(|| {
            let messages = parse_batch(black_box(&batch), MAX_BATCH_MESSAGES).expect("valid");
            messages
                .iter()
                .map(|m| encode_message(m, now))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

/// The abusive rows of the moderation evaluation set: disguised abuse and spam.
fn evasive_lines() -> Vec<String> {
    let path = project_path("tests/data/moderation_evasions.tsv");
    let contents = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    contents
        .lines()
        .filter_map(|line| line.strip_prefix("abusive\t"))
        .map(str::to_owned)
        .collect()
}

/// Clean chat lines joined until the text is exactly [`LONG_MESSAGE_BYTES`] long.
fn long_message() -> String {
    let mut text = String::with_capacity(LONG_MESSAGE_BYTES + 128);
    for line in CLEAN_LINES.iter().cycle() {
        if text.len() >= LONG_MESSAGE_BYTES {
            break;
        }
        text.push_str(line);
        text.push(' ');
    }
    let mut end = LONG_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn total_bytes<S: AsRef<str>>(lines: &[S]) -> u64 {
    lines.iter().map(|l| l.as_ref().len() as u64).sum()
}

fn bench_moderation(c: &mut Criterion) {
    let moderator =
        Moderator::from_dir(&project_path("config/moderation")).expect("shipped word lists load");
    let evasive = evasive_lines();
    assert!(!evasive.is_empty(), "evaluation set has abusive rows");
    let long = long_message();
    assert!(
        !moderator.check(&long).flagged,
        "the long message is clean chat"
    );

    let mut group = c.benchmark_group("moderation");
    group.throughput(Throughput::Bytes(total_bytes(CLEAN_LINES)));
    group.bench_function(format!("clean_chat/{}_lines", CLEAN_LINES.len()), |b| {
        b.iter(|| {
            CLEAN_LINES
                .iter()
                .filter(|l| moderator.check(black_box(l)).flagged)
                .count()
        })
    });
    group.throughput(Throughput::Bytes(total_bytes(&evasive)));
    group.bench_function(format!("evasive/{}_lines", evasive.len()), |b| {
        b.iter(|| {
            evasive
                .iter()
                .filter(|l| moderator.check(black_box(l)).flagged)
                .count()
        })
    });
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("clean_4KiB_message", |b| {
        b.iter(|| moderator.check(black_box(&long)))
    });
    group.finish();
}

/// What the worker hands the batch writer: moderated, enriched, with a source offset.
fn processed(message: ChatMessage, moderator: &Moderator, offset: i64) -> ProcessedMessage {
    let verdict = moderator.check(message.text.as_str());
    ProcessedMessage {
        received_at: received_at(),
        nlp: NlpFields {
            sentiment_label: Some("negative".into()),
            sentiment_score: Some(-0.42),
            toxicity: Some(0.08),
            language: Some("en".into()),
            raw: Some(
                NlpDocument::parse(
                    r#"{"sentiment": {"label": "negative", "score": -0.42}, "toxicity": 0.08, "language": "en"}"#,
                )
                .expect("JSON"),
            ),
            status: NlpStatus::Ok,
        },
        flagged: verdict.flagged,
        flagged_terms: verdict.terms,
        source: Some(SourcePosition {
            partition: 3,
            offset,
        }),
        message: Arc::new(message),
    }
}

fn bench_worker(c: &mut Criterion) {
    let now = received_at();
    let moderator =
        Moderator::from_dir(&project_path("config/moderation")).expect("shipped word lists load");
    let messages = parse_batch(&batch_body(), MAX_BATCH_MESSAGES).expect("valid batch");
    let records: Vec<Vec<u8>> = messages.iter().map(|m| encode_message(m, now)).collect();
    let rows: Vec<ProcessedMessage> = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| processed(m, &moderator, i as i64))
        .collect();
    assert_eq!(
        rows.iter().filter(|r| r.flagged).count(),
        BATCH / FLAGGED_EVERY,
        "every flagged line is caught, no clean one is"
    );

    let mut group = c.benchmark_group("worker");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode/100_records", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| Envelope::decode(black_box(r)).expect("valid envelope"))
                .collect::<Vec<_>>()
        })
    });
    // The two JSON columns of the batch INSERT, built as `storage::insert_messages`
    // builds them (the other columns are borrowed slices, no work).
    group.bench_function("insert_json_columns/100_rows", |b| {
        b.iter(|| {
            let rows = black_box(&rows);
            let terms: Vec<Value> = rows
                .iter()
                .map(|r| Value::from(r.flagged_terms.clone()))
                .collect();
            let metadata: Vec<Option<Value>> = rows
                .iter()
                .map(|r| r.message.metadata.clone().map(Value::from))
                .collect();
            (terms, metadata)
        })
    });
    group.finish();
}

fn bench_nlp_sim(c: &mut Criterion) {
    let lexicon = Lexicon::embedded().expect("embedded word lists parse");
    let texts: Vec<String> = (0..1_000).map(chat_text).collect();
    let mut group = c.benchmark_group("nlp_sim");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("analyze/1000_loadgen_lines", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| analyze(&lexicon, black_box(t), None))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = bench_ingest, bench_moderation, bench_worker, bench_nlp_sim
}
criterion_main!(hot_paths);
