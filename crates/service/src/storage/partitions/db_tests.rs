//! Partition maintenance, retention and analyst views against a real PostgreSQL.
//!
//! Each test creates its own database (`chat_test_<pid>_<n>_<nanos>`) from the admin URL in
//! `CHAT_ANALYTICS_TEST_PG_ADMIN_URL` (default `postgres://chat:chat@127.0.0.1:5432/postgres`,
//! a role with CREATEDB), applies the compiled-in migrations, and drops it afterwards, even
//! when the test fails, so tests run in parallel without seeing each other's partitions.

use std::collections::BTreeMap;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use futures::SinkExt;
use tokio_postgres::{Client, NoTls};

use super::{
    apply_retention, ensure_partitions, list_partitions, ArchiveStep, PartitionError,
    PartitionMaintainer,
};
use crate::config::PartitionSettings;
use crate::storage::fulltext::{full_text_search_enabled, set_full_text_search, FTS_INDEX};
use crate::storage::MIGRATIONS;

const ADMIN_URL_ENV: &str = "CHAT_ANALYTICS_TEST_PG_ADMIN_URL";
const DEFAULT_ADMIN_URL: &str = "postgres://chat:chat@127.0.0.1:5432/postgres";

/// A throw-away database with the migrations applied; dropped (sessions and all) on drop.
struct TestDb {
    name: String,
    config: tokio_postgres::Config,
    admin: tokio_postgres::Config,
}

impl TestDb {
    async fn create() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin: tokio_postgres::Config = url.parse().expect("admin URL parses");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!(
            "chat_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin_client = connect(&admin).await;
        admin_client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let mut config = admin.clone();
        config.dbname(&name);
        let db = TestDb {
            name,
            config,
            admin,
        };
        let client = db.connect().await;
        for (migration, sql) in MIGRATIONS {
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("migration {migration}: {e}"));
        }
        db
    }

    async fn connect(&self) -> Client {
        connect(&self.config).await
    }

    fn pool(&self) -> deadpool_postgres::Pool {
        let manager = deadpool_postgres::Manager::new(self.config.clone(), NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(4)
            .build()
            .expect("pool builds")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a fresh thread with its own runtime can
        // block on the DROP without stalling it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleanup");
            runtime.block_on(async move {
                let client = connect(&admin).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect to Postgres");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid RFC 3339")
        .with_timezone(&Utc)
}

/// Scratch directory for archives, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "chat-analytics-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Inserts one message with the given sent_at and text; everything else defaulted.
async fn insert_message(client: &Client, bot_id: &str, sent_at: DateTime<Utc>, text: &str) {
    client
        .execute(
            "INSERT INTO messages (message_id, bot_id, text, sent_at, received_at, nlp_status)
             VALUES (gen_random_uuid(), $1, $2, $3, $3, 'ok')",
            &[&bot_id, &text, &sent_at],
        )
        .await
        .expect("insert message");
}

/// Message count per UTC day, over the whole table.
async fn counts_by_day(client: &Client) -> BTreeMap<String, i64> {
    client
        .query(
            "SELECT to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), count(*)
               FROM messages GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("count by day")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("count query")
        .get(0)
}

async fn partition_names(client: &Client) -> Vec<String> {
    list_partitions(client)
        .await
        .expect("list partitions")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[tokio::test]
async fn ensure_creates_the_window_and_a_second_call_does_nothing() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;

    let created = ensure_partitions(&mut client, day(2024, 3, 10), 7)
        .await
        .expect("first call");

    let expected: Vec<String> = (9..=17)
        .map(|d| format!("messages_p202403{d:02}"))
        .collect();
    assert_eq!(created, expected);
    let again = ensure_partitions(&mut client, day(2024, 3, 10), 7)
        .await
        .expect("second call");
    assert!(again.is_empty(), "second call created {again:?}");

    let partitions = list_partitions(&client).await.expect("list");
    let p10 = partitions
        .iter()
        .find(|p| p.name == "messages_p20240310")
        .expect("day partition listed");
    assert_eq!(p10.lower, Some(at("2024-03-10T00:00:00Z")));
    assert_eq!(p10.upper, Some(at("2024-03-11T00:00:00Z")));
    assert!(partitions.iter().any(|p| p.is_default));
    assert_eq!(partitions.len(), 10, "9 days + default: {partitions:?}");

    // A message at the very start of a day routes into that day's partition.
    insert_message(&client, "bot-a", at("2024-03-10T00:00:00Z"), "hi").await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM ONLY messages_p20240310").await,
        1
    );
}

#[tokio::test]
async fn rows_waiting_in_the_default_partition_move_into_the_new_day_and_none_are_lost() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    // No daily partitions yet: everything lands in messages_default.
    for sent_at in [
        "2024-03-09T12:00:00Z",
        "2024-03-10T00:00:00Z",
        "2024-03-10T23:59:59.999999Z",
        "2024-03-10T08:30:00+05:30", // 03:00 UTC, same day
        "2024-03-11T00:00:00Z",
        "2024-03-01T10:00:00Z", // before the window: stays in default
        "2024-04-30T10:00:00Z", // after the window: stays in default
    ] {
        insert_message(&client, "bot-a", at(sent_at), "waiting").await;
    }
    let before = counts_by_day(&client).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM ONLY messages_default").await,
        7
    );

    ensure_partitions(&mut client, day(2024, 3, 10), 2)
        .await
        .expect("ensure with rows in default");

    assert_eq!(
        counts_by_day(&client).await,
        before,
        "counts by day changed"
    );
    let by_partition: BTreeMap<String, i64> = client
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM messages GROUP BY 1",
            &[],
        )
        .await
        .expect("rows per partition")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected: BTreeMap<String, i64> = [
        ("messages_default", 2),
        ("messages_p20240309", 1),
        ("messages_p20240310", 3),
        ("messages_p20240311", 1),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), n))
    .collect();
    assert_eq!(by_partition, expected);

    // The moved rows kept their identity: the primary key still deduplicates them.
    let duplicate = client
        .execute(
            "INSERT INTO messages
             SELECT * FROM messages WHERE sent_at = '2024-03-10 00:00:00+00'
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .expect("idempotent re-insert");
    assert_eq!(duplicate, 0);
}

#[tokio::test]
async fn two_maintainers_ensuring_at_once_both_succeed() {
    let db = TestDb::create().await;
    let setup = db.connect().await;
    for hour in 0..24 {
        let sent_at = at(&format!("2024-03-10T{hour:02}:15:00Z"));
        insert_message(&setup, "bot-a", sent_at, "default row").await;
    }
    let (mut a, mut b, mut c) = (db.connect().await, db.connect().await, db.connect().await);

    let (ra, rb, rc) = tokio::join!(
        ensure_partitions(&mut a, day(2024, 3, 10), 7),
        ensure_partitions(&mut b, day(2024, 3, 10), 7),
        ensure_partitions(&mut c, day(2024, 3, 10), 7),
    );

    let mut all: Vec<String> = [ra, rb, rc]
        .into_iter()
        .flat_map(|r| r.expect("every concurrent call succeeds"))
        .collect();
    all.sort();
    let expected: Vec<String> = (9..=17)
        .map(|d| format!("messages_p202403{d:02}"))
        .collect();
    assert_eq!(all, expected, "each partition created exactly once");
    assert_eq!(
        count(&setup, "SELECT count(*) FROM ONLY messages_p20240310").await,
        24
    );
    assert_eq!(count(&setup, "SELECT count(*) FROM messages").await, 24);
}

#[tokio::test]
async fn retention_archives_old_partitions_to_csv_gz_then_drops_them_and_keeps_newer_ones() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    let archive = TempDir::new("archive");
    // Old days (Jan 4th..6th) and current days (Mar 9th..11th).
    ensure_partitions(&mut client, day(2024, 1, 5), 1)
        .await
        .expect("old partitions");
    ensure_partitions(&mut client, day(2024, 3, 10), 1)
        .await
        .expect("current partitions");
    let awkward = [
        "plain",
        "comma, \"quoted\" and\nnew line",
        "\\N looks like null",
        "ünïcødé ✓",
        "",
    ];
    for (i, text) in awkward.iter().enumerate() {
        let sent_at = at(&format!("2024-01-05T{:02}:00:00Z", 10 + i));
        insert_message(&client, "bot-a", sent_at, text).await;
    }
    insert_message(&client, "bot-b", at("2024-01-06T23:59:59Z"), "late").await;
    insert_message(&client, "bot-a", at("2024-03-09T12:00:00Z"), "recent").await;
    insert_message(&client, "bot-a", at("2024-03-10T12:00:00Z"), "recent").await;
    client
        .batch_execute(
            "UPDATE messages SET nlp = '{\"k\": [1, \"a,b\"]}', flagged_terms = '{x,\"y z\"}',
                                 sentiment_score = 0.1, metadata = '{}'
              WHERE text = 'plain';
             CREATE TABLE expected AS SELECT * FROM messages WHERE sent_at < '2024-02-01';",
        )
        .await
        .expect("snapshot of old rows");

    let archived = apply_retention(&mut client, day(2024, 3, 10), 30, &archive.0)
        .await
        .expect("retention");

    let summary: Vec<(String, u64)> = archived.iter().map(|a| (a.name.clone(), a.rows)).collect();
    assert_eq!(
        summary,
        [
            ("messages_p20240104".to_owned(), 0),
            ("messages_p20240105".to_owned(), 5),
            ("messages_p20240106".to_owned(), 1),
        ]
    );
    for done in &archived {
        assert_eq!(done.path, archive.0.join(format!("{}.csv.gz", done.name)));
        let on_disk = std::fs::metadata(&done.path).expect("archive exists").len();
        assert_eq!(done.bytes, on_disk);
    }
    let left = std::fs::read_dir(&archive.0)
        .expect("read archive dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(left, 0, "temporary files left behind");

    // Dropped, while the recent partitions and their rows are untouched.
    let names = partition_names(&client).await;
    assert!(
        !names.iter().any(|n| n.starts_with("messages_p202401")),
        "{names:?}"
    );
    for kept in [
        "messages_p20240309",
        "messages_p20240310",
        "messages_p20240311",
    ] {
        assert!(names.iter().any(|n| n == kept), "{kept} missing: {names:?}");
    }
    assert_eq!(count(&client, "SELECT count(*) FROM messages").await, 2);

    // The archive decompresses to a header plus one CSV record per row, and loads back
    // into a table shaped like messages with exactly the rows that were dropped.
    let mut csv = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&archived[1].path).expect("open archive"))
        .read_to_end(&mut csv)
        .expect("gunzip archive");
    assert!(csv.starts_with(b"\"message_id\",\"bot_id\"") || csv.starts_with(b"message_id,bot_id"));
    assert_eq!(count_csv_records(&csv), 1 + 5);
    client
        .batch_execute("CREATE TABLE restored (LIKE messages)")
        .await
        .expect("restore table");
    for done in &archived {
        restore(&client, &done.path).await;
    }
    assert_eq!(count(&client, "SELECT count(*) FROM restored").await, 6);
    let differences = count(
        &client,
        "SELECT count(*) FROM (
             (SELECT * FROM restored EXCEPT ALL SELECT * FROM expected)
             UNION ALL
             (SELECT * FROM expected EXCEPT ALL SELECT * FROM restored)) d",
    )
    .await;
    assert_eq!(differences, 0, "restored rows differ from the dropped ones");

    // Nothing older is left: a second pass has nothing to do.
    let again = apply_retention(&mut client, day(2024, 3, 10), 30, &archive.0)
        .await
        .expect("second retention pass");
    assert!(again.is_empty());
}

#[tokio::test]
async fn a_failed_archive_drops_nothing() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    let scratch = TempDir::new("not-a-dir");
    let not_a_dir = scratch.0.join("archive");
    std::fs::write(&not_a_dir, b"a file where the archive directory should be").expect("file");
    ensure_partitions(&mut client, day(2024, 1, 5), 0)
        .await
        .expect("old partitions");
    insert_message(&client, "bot-a", at("2024-01-05T10:00:00Z"), "keep me").await;
    let before = partition_names(&client).await;

    let result = apply_retention(&mut client, day(2024, 3, 10), 30, &not_a_dir).await;

    match result {
        Err(PartitionError::Archive {
            partition, step, ..
        }) => {
            assert_eq!(partition, "messages_p20240104");
            assert_eq!(step, ArchiveStep::CreateDir);
        }
        other => panic!("expected an archive error, got {other:?}"),
    }
    assert_eq!(partition_names(&client).await, before);
    assert_eq!(
        count(&client, "SELECT count(*) FROM ONLY messages_p20240105").await,
        1
    );
}

#[tokio::test]
async fn the_maintainer_creates_ahead_and_applies_retention_in_one_pass() {
    let db = TestDb::create().await;
    let archive = TempDir::new("maintainer");
    let maintainer = PartitionMaintainer::new(
        db.pool(),
        PartitionSettings {
            ahead_days: 2,
            retention_days: NonZeroU32::new(3).expect("not zero"),
            archive_dir: archive.0.clone(),
        },
    );
    maintainer.ensure(day(2024, 3, 1)).await.expect("old days");

    let report = maintainer.run_once(day(2024, 3, 10)).await.expect("pass");

    assert_eq!(
        report.created,
        [
            "messages_p20240309",
            "messages_p20240310",
            "messages_p20240311",
            "messages_p20240312"
        ]
    );
    let archived: Vec<&str> = report.archived.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        archived,
        [
            "messages_p20240229",
            "messages_p20240301",
            "messages_p20240302",
            "messages_p20240303"
        ]
    );
}

#[tokio::test]
async fn message_keys_older_than_retention_are_pruned_and_newer_ones_kept() {
    let db = TestDb::create().await;
    let archive = TempDir::new("keys");
    let client = db.connect().await;
    // 25,000 keys stored on 2024-03-01 (more than one delete chunk), 10 on 2024-03-08.
    client
        .batch_execute(
            "INSERT INTO message_keys (message_id, sent_at, stored_at) \
             SELECT gen_random_uuid(), '2024-03-01', '2024-03-01 12:00+00' \
               FROM generate_series(1, 25000); \
             INSERT INTO message_keys (message_id, sent_at, stored_at) \
             SELECT gen_random_uuid(), '2024-03-08', '2024-03-08 12:00+00' \
               FROM generate_series(1, 10);",
        )
        .await
        .expect("keys");
    let maintainer = PartitionMaintainer::new(
        db.pool(),
        PartitionSettings {
            ahead_days: 1,
            retention_days: NonZeroU32::new(3).expect("not zero"),
            archive_dir: archive.0.clone(),
        },
    );
    maintainer
        .retain(day(2024, 3, 10))
        .await
        .expect("retention");
    assert_eq!(
        count(&client, "SELECT count(*) FROM message_keys").await,
        10,
        "keys stored before 2024-03-07 go, later ones stay"
    );
}

#[tokio::test]
async fn full_text_search_index_switches_on_and_off_and_reaches_new_partitions() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    ensure_partitions(&mut client, day(2024, 3, 10), 0)
        .await
        .expect("partitions");
    insert_message(
        &client,
        "bot-a",
        at("2024-03-10T10:00:00Z"),
        "the parcel is late",
    )
    .await;

    set_full_text_search(&mut client, true).await.expect("on");
    set_full_text_search(&mut client, true)
        .await
        .expect("on again is a no-op");
    assert!(full_text_search_enabled(&client).await.expect("state"));
    ensure_partitions(&mut client, day(2024, 3, 20), 0)
        .await
        .expect("later partitions");
    let indexed_partitions = count(
        &client,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages_text_fts_idx'::regclass",
    )
    .await;
    let partitions = count(
        &client,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass",
    )
    .await;
    assert_eq!(
        indexed_partitions, partitions,
        "every partition has the index"
    );
    let hits = count(
        &client,
        "SELECT count(*) FROM messages
          WHERE to_tsvector('simple', text) @@ plainto_tsquery('simple', 'parcel late')",
    )
    .await;
    assert_eq!(hits, 1);

    set_full_text_search(&mut client, false).await.expect("off");
    set_full_text_search(&mut client, false)
        .await
        .expect("off again is a no-op");
    assert!(!full_text_search_enabled(&client).await.expect("state"));
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM pg_class WHERE relname LIKE '{FTS_INDEX}%'")
        )
        .await,
        0
    );
}

/// One hand-made row for the view tests.
struct Row {
    bot: &'static str,
    sent_at: &'static str,
    label: Option<&'static str>,
    score: Option<f32>,
    toxicity: Option<f32>,
    flagged: bool,
    nlp_status: &'static str,
}

async fn insert_rows(client: &Client, rows: &[Row]) {
    for row in rows {
        client
            .execute(
                // With what the row adds to the rollups, as the worker's statement does
                // (the views read the rollups).
                "WITH stored AS (
                     INSERT INTO messages (message_id, bot_id, text, sent_at, received_at,
                                           sentiment_label, sentiment_score, toxicity, flagged,
                                           nlp_status)
                     VALUES (gen_random_uuid(), $1, 'x', $2, $2, $3, $4, $5, $6, $7)
                     RETURNING *)
                 INSERT INTO rollup_pending
                 SELECT date_trunc('minute', sent_at, 'UTC'), bot_id, count(*),
                        count(sentiment_label), count(sentiment_score),
                        coalesce(sum(sentiment_score::float8::numeric), 0),
                        count(*) FILTER (WHERE sentiment_label = 'negative'),
                        count(*) FILTER (WHERE sentiment_label = 'neutral'),
                        count(*) FILTER (WHERE sentiment_label = 'positive'),
                        count(toxicity), coalesce(sum(toxicity::float8::numeric), 0),
                        max(toxicity), count(*) FILTER (WHERE flagged),
                        count(*) FILTER (WHERE nlp_status <> 'ok')
                   FROM stored GROUP BY 1, 2",
                &[
                    &row.bot,
                    &at(row.sent_at),
                    &row.label,
                    &row.score,
                    &row.toxicity,
                    &row.flagged,
                    &row.nlp_status,
                ],
            )
            .await
            .expect("insert row");
    }
}

/// The figures of one view row, in column order after bot_id and bucket.
#[derive(Debug)]
struct Figures {
    messages: i64,
    analyzed: i64,
    avg_sentiment: Option<f64>,
    negative_share: Option<f64>,
    positive_share: Option<f64>,
    avg_toxicity: Option<f64>,
    max_toxicity: Option<f32>,
    flagged: i64,
    flagged_rate: f64,
    nlp_not_ok_share: f64,
}

async fn figures(client: &Client, sql: &str, bot: &str) -> BTreeMap<DateTime<Utc>, Figures> {
    client
        .query(sql, &[&bot])
        .await
        .expect("view query")
        .iter()
        .map(|r| {
            (
                r.get("bucket"),
                Figures {
                    messages: r.get("messages"),
                    analyzed: r.get("analyzed_messages"),
                    avg_sentiment: r.get("avg_sentiment_score"),
                    negative_share: r.get("negative_share"),
                    positive_share: r.get("positive_share"),
                    avg_toxicity: r.get("avg_toxicity"),
                    max_toxicity: r.get("max_toxicity"),
                    flagged: r.get("flagged_messages"),
                    flagged_rate: r.get("flagged_rate"),
                    nlp_not_ok_share: r.get("nlp_not_ok_share"),
                },
            )
        })
        .collect()
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() < 1e-6)
}

#[tokio::test]
async fn views_report_volume_sentiment_toxicity_and_flagged_rate_per_bot_per_bucket() {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    ensure_partitions(&mut client, day(2024, 3, 10), 1)
        .await
        .expect("partitions");
    let ok = "ok";
    insert_rows(
        &client,
        &[
            Row {
                bot: "a",
                sent_at: "2024-03-10T10:05:00Z",
                label: Some("positive"),
                score: Some(0.75),
                toxicity: Some(0.25),
                flagged: false,
                nlp_status: ok,
            },
            Row {
                bot: "a",
                sent_at: "2024-03-10T10:45:00Z",
                label: Some("negative"),
                score: Some(-0.5),
                toxicity: Some(0.75),
                flagged: true,
                nlp_status: ok,
            },
            Row {
                bot: "a",
                sent_at: "2024-03-10T10:59:59Z",
                label: None,
                score: None,
                toxicity: None,
                flagged: false,
                nlp_status: "breaker_open",
            },
            Row {
                bot: "a",
                sent_at: "2024-03-10T11:00:00Z",
                label: Some("neutral"),
                score: Some(0.0),
                toxicity: Some(0.5),
                flagged: false,
                nlp_status: ok,
            },
            Row {
                bot: "a",
                sent_at: "2024-03-11T01:00:00Z",
                label: None,
                score: None,
                toxicity: None,
                flagged: true,
                nlp_status: "failed_after_retries",
            },
            Row {
                bot: "b",
                sent_at: "2024-03-10T10:30:00Z",
                label: Some("negative"),
                score: Some(-1.0),
                toxicity: Some(1.0),
                flagged: true,
                nlp_status: ok,
            },
        ],
    )
    .await;

    let hourly = figures(
        &client,
        "SELECT * FROM messages_hourly WHERE bot_id = $1",
        "a",
    )
    .await;
    assert_eq!(hourly.len(), 3, "{hourly:?}");
    let h10 = &hourly[&at("2024-03-10T10:00:00Z")];
    assert_eq!((h10.messages, h10.analyzed, h10.flagged), (3, 2, 1));
    assert!(close(h10.avg_sentiment, 0.125), "{h10:?}");
    assert!(close(h10.negative_share, 0.5) && close(h10.positive_share, 0.5));
    assert!(close(h10.avg_toxicity, 0.5), "{h10:?}");
    assert_eq!(h10.max_toxicity, Some(0.75));
    assert!(close(Some(h10.flagged_rate), 1.0 / 3.0));
    assert!(close(Some(h10.nlp_not_ok_share), 1.0 / 3.0));
    let h11 = &hourly[&at("2024-03-10T11:00:00Z")];
    assert_eq!((h11.messages, h11.flagged), (1, 0));
    assert!(close(h11.negative_share, 0.0) && close(h11.positive_share, 0.0));
    let next_day = &hourly[&at("2024-03-11T01:00:00Z")];
    assert_eq!((next_day.messages, next_day.analyzed), (1, 0));
    assert_eq!(next_day.avg_sentiment, None);
    assert_eq!(
        next_day.negative_share, None,
        "no analysed message: no share"
    );
    assert!(close(Some(next_day.nlp_not_ok_share), 1.0));

    // Daily buckets are UTC days whatever the session's time zone.
    client
        .batch_execute("SET TimeZone = 'America/New_York'")
        .await
        .expect("set time zone");
    let daily = figures(
        &client,
        "SELECT * FROM messages_daily WHERE bot_id = $1",
        "a",
    )
    .await;
    let keys: Vec<_> = daily.keys().copied().collect();
    assert_eq!(
        keys,
        [at("2024-03-10T00:00:00Z"), at("2024-03-11T00:00:00Z")]
    );
    let d10 = &daily[&at("2024-03-10T00:00:00Z")];
    assert_eq!((d10.messages, d10.analyzed, d10.flagged), (4, 3, 1));
    assert!(close(d10.avg_sentiment, 0.25 / 3.0), "{d10:?}");
    assert!(close(d10.negative_share, 1.0 / 3.0));
    assert!(close(d10.avg_toxicity, 0.5));
    assert!(close(Some(d10.flagged_rate), 0.25));
    assert!(close(Some(d10.nlp_not_ok_share), 0.25));

    // The range function gives the same figures, limited to the range.
    let ranged = figures(
        &client,
        "SELECT * FROM messages_rollup('hour', '2024-03-10 10:30:00+00', '2024-03-10 12:00:00+00')
          WHERE bot_id = $1",
        "a",
    )
    .await;
    let keys: Vec<_> = ranged.keys().copied().collect();
    assert_eq!(
        keys,
        [at("2024-03-10T10:00:00Z"), at("2024-03-10T11:00:00Z")]
    );
    assert_eq!(ranged[&at("2024-03-10T10:00:00Z")].messages, 2);
    let other = figures(
        &client,
        "SELECT * FROM messages_daily WHERE bot_id = $1",
        "b",
    )
    .await;
    assert_eq!(other[&at("2024-03-10T00:00:00Z")].messages, 1);
}

/// Counts CSV records the slow, obvious way (an independent check of the archiver's
/// own count): a record ends at a newline outside quotes.
fn count_csv_records(csv: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut records = 0;
    for &b in csv {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == b'\n' && !in_quotes {
            records += 1;
        }
    }
    records
}

/// Loads an archive back with `COPY ... FROM STDIN`, the way an analyst would restore it.
async fn restore(client: &Client, path: &Path) {
    let mut csv = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open archive"))
        .read_to_end(&mut csv)
        .expect("gunzip");
    let sink = client
        .copy_in("COPY restored FROM STDIN WITH (FORMAT csv, HEADER)")
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    sink.send(bytes_of(csv)).await.expect("send csv");
    sink.finish().await.expect("finish copy");
}

/// `copy_in` wants a `bytes::Buf`; `std::io::Cursor<Vec<u8>>` is one.
fn bytes_of(data: Vec<u8>) -> std::io::Cursor<Vec<u8>> {
    std::io::Cursor::new(data)
}

/// Write cost of the full-text-search index: 50,000 rows inserted in batches of 1,000
/// with `INSERT ... SELECT FROM UNNEST(...)`, into a fresh database each run, without and
/// with the GIN index, three runs each, interleaved. Prints median rows/s and the ratio.
/// A measurement, not an assertion: run it alone on a quiet machine with
/// `cargo test fts_write_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
async fn fts_write_cost() {
    const ROWS: usize = 50_000;
    const BATCH: usize = 1_000;
    const RUNS: usize = 3;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for run in 0..RUNS {
        for fts in [false, true] {
            let rate = insert_rate(fts, ROWS, BATCH, run as u64).await;
            println!("run {run} fts={fts}: {rate:.0} rows/s");
            if fts {
                with.push(rate)
            } else {
                without.push(rate)
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut without), median(&mut with));
    println!(
        "median without index: {off:.0} rows/s; with index: {on:.0} rows/s; \
         with/without = {:.2} (write cost {:.0}%)",
        on / off,
        (1.0 - on / off) * 100.0
    );
}

async fn insert_rate(fts: bool, rows: usize, batch: usize, seed: u64) -> f64 {
    let db = TestDb::create().await;
    let mut client = db.connect().await;
    let today = Utc::now().date_naive();
    ensure_partitions(&mut client, today, 1)
        .await
        .expect("partitions");
    if fts {
        set_full_text_search(&mut client, true)
            .await
            .expect("fts on");
    }
    let start_of_day = today.and_time(chrono::NaiveTime::MIN).and_utc();
    let mut words = WordSource::new(seed);
    let statement = client
        .prepare(
            "INSERT INTO messages (message_id, bot_id, conversation_id, user_id, text, sent_at,
                                   received_at, sentiment_label, sentiment_score, toxicity,
                                   language, nlp_status, flagged, kafka_partition, kafka_offset)
             SELECT gen_random_uuid(), b, c, u, t, s, s, 'neutral', 0.1, 0.05, 'en', 'ok', false,
                    p, o
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::int[], $7::bigint[]) AS x(b, c, u, t, s, p, o)
             ON CONFLICT DO NOTHING",
        )
        .await
        .expect("prepare insert");
    let started = Instant::now();
    for first in (0..rows).step_by(batch) {
        let n = batch.min(rows - first);
        let ids = first..first + n;
        let bots: Vec<String> = ids.clone().map(|i| format!("bot-{}", i % 500)).collect();
        let conversations: Vec<String> = ids.clone().map(|i| format!("conv-{}", i / 7)).collect();
        let users: Vec<String> = ids.clone().map(|i| format!("user-{}", i % 5000)).collect();
        let texts: Vec<String> = ids.clone().map(|_| words.sentence()).collect();
        let sent: Vec<DateTime<Utc>> = ids
            .clone()
            .map(|i| start_of_day + chrono::TimeDelta::milliseconds(i as i64 * 1_000))
            .collect();
        let partitions: Vec<i32> = ids.clone().map(|i| (i % 12) as i32).collect();
        let offsets: Vec<i64> = ids.map(|i| i as i64).collect();
        client
            .execute(
                &statement,
                &[
                    &bots,
                    &conversations,
                    &users,
                    &texts,
                    &sent,
                    &partitions,
                    &offsets,
                ],
            )
            .await
            .expect("insert batch");
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Deterministic chat-like sentences (8-30 words from a 2,000-word vocabulary, Zipf-ish),
/// so the GIN index sees realistic posting lists rather than one repeated string.
struct WordSource {
    state: u64,
    vocabulary: Vec<String>,
}

impl WordSource {
    fn new(seed: u64) -> WordSource {
        const SYLLABLES: [&str; 20] = [
            "ka", "lo", "mi", "ne", "ra", "to", "su", "pe", "di", "an", "or", "el", "ul", "ve",
            "sh", "qu", "bo", "ti", "za", "re",
        ];
        let vocabulary = (0..2_000)
            .map(|i: usize| {
                let mut word = String::new();
                let mut n = i + 20;
                while n > 0 {
                    word.push_str(SYLLABLES[n % 20]);
                    n /= 20;
                }
                word
            })
            .collect();
        WordSource {
            state: seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
            vocabulary,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn sentence(&mut self) -> String {
        let len = 8 + (self.next() % 23) as usize;
        let size = self.vocabulary.len() as f64;
        let picks: Vec<usize> = (0..len)
            .map(|_| {
                // Squaring a uniform value skews towards common words.
                let u = (self.next() % 10_000) as f64 / 10_000.0;
                (u * u * size) as usize
            })
            .collect();
        picks
            .iter()
            .map(|&i| self.vocabulary[i].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
