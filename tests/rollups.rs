//! The rollups equal the aggregate of the raw rows, column by column, after any mix of
//! batches, duplicates, conflicting copies, failed (dead-lettered) batches and their
//! replay, re-enrichment and partial folds; the analyst role reads them and nothing else.

mod support;

use std::sync::Arc;

use chat_analytics::config::{SecretUrl, Settings};
use chat_analytics::domain::{NlpDocument, NlpFields, NlpStatus, ProcessedMessage};
use chat_analytics::ingest::parse_single;
use chat_analytics::storage::{
    connect_pool, fold_pending, insert_messages, prune_rollups, update_enrichment,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use support::TestDb;
use uuid::Uuid;

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f32 {
        (self.below(1_000_001) as f32) / 1_000_000.0
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TERMS: [&str; 4] = ["darn", "heck", "scam", "idiot"];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 22, 0, 0)
        .single()
        .expect("a valid time")
}

fn message(rng: &mut Rng, id: Uuid, text: &str) -> ProcessedMessage {
    // Two days and a bit around UTC midnights, to the microsecond.
    let sent_at = start() + Duration::microseconds(rng.below(50 * 3_600_000_000) as i64);
    let bot = format!("bot-{}", rng.below(6));
    let body = json!({
        "message_id": id.to_string(),
        "bot_id": bot,
        "text": text,
        "sent_at": sent_at.to_rfc3339(),
    });
    let message = parse_single(body.to_string().as_bytes()).expect("a valid message");
    let nlp = if rng.chance(75) {
        analysed(rng)
    } else {
        let statuses = [
            NlpStatus::BreakerOpen,
            NlpStatus::Failed,
            NlpStatus::Rejected,
        ];
        NlpFields::missing(statuses[rng.below(3) as usize])
    };
    let flagged_terms: Vec<String> = if rng.chance(15) {
        let first = rng.below(4) as usize;
        let second = rng.below(4) as usize;
        let mut terms = vec![TERMS[first].to_owned()];
        if second != first {
            terms.push(TERMS[second].to_owned());
        }
        terms
    } else {
        Vec::new()
    };
    ProcessedMessage {
        message: Arc::new(message),
        received_at: sent_at,
        nlp,
        flagged: !flagged_terms.is_empty(),
        flagged_terms,
        source: None,
    }
}

fn analysed(rng: &mut Rng) -> NlpFields {
    let labels = ["positive", "neutral", "negative"];
    NlpFields {
        sentiment_label: Some(labels[rng.below(3) as usize].to_owned()),
        sentiment_score: Some(rng.unit() * 2.0 - 1.0),
        toxicity: Some(rng.unit()),
        language: Some("en".to_owned()),
        raw: Some(NlpDocument::parse(r#"{"generated": true}"#).expect("JSON")),
        status: NlpStatus::Ok,
    }
}

/// Rows of the rollup query `a` not in the raw query `b` and the other way round, as text,
/// compared exactly.
async fn mismatches(db: &TestDb, a: &str, b: &str) -> Vec<String> {
    let sql = format!(
        "WITH a AS ({a}), b AS ({b})
         SELECT 'rollups only: ' || x::text FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b) x
         UNION ALL
         SELECT 'raw rows only: ' || y::text FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a) y"
    );
    let client = db.pool.get().await.expect("connection");
    client
        .query(&sql, &[])
        .await
        .expect("compare")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// Where `messages_rollup(unit, from, to, zone)` (arguments as SQL expressions) differs
/// from the same figures aggregated from the raw rows; means and shares to 9 digits.
async fn figure_mismatches(
    db: &TestDb,
    unit: &str,
    from: &str,
    to: &str,
    zone: &str,
) -> Vec<String> {
    mismatches(
        db,
        &format!(
            "SELECT bot_id, bucket, messages, analyzed_messages,
                    round(avg_sentiment_score::numeric, 9), round(negative_share::numeric, 9),
                    round(positive_share::numeric, 9), round(avg_toxicity::numeric, 9), max_toxicity,
                    flagged_messages, round(flagged_rate::numeric, 9), round(nlp_not_ok_share::numeric, 9)
               FROM messages_rollup({unit}, {from}, {to}, {zone})"
        ),
        &format!(
            "SELECT bot_id, date_trunc({unit}, sent_at, {zone}), count(*), count(sentiment_label),
                    round(avg(sentiment_score::float8)::numeric, 9),
                    round((count(*) FILTER (WHERE sentiment_label = 'negative')::float8
                           / NULLIF(count(sentiment_label), 0))::numeric, 9),
                    round((count(*) FILTER (WHERE sentiment_label = 'positive')::float8
                           / NULLIF(count(sentiment_label), 0))::numeric, 9),
                    round(avg(toxicity::float8)::numeric, 9), max(toxicity),
                    count(*) FILTER (WHERE flagged),
                    round((count(*) FILTER (WHERE flagged)::float8 / count(*))::numeric, 9),
                    round((count(*) FILTER (WHERE nlp_status <> 'ok')::float8 / count(*))::numeric, 9)
               FROM messages
              WHERE sent_at >= date_trunc('minute', ({from})::timestamptz, 'UTC')
                AND date_trunc('minute', sent_at, 'UTC') < ({to})::timestamptz
              GROUP BY 1, 2"
        ),
    )
    .await
}

/// Where the analysts' views `messages_hourly` and `messages_daily` differ from the raw rows.
async fn assert_views_exact(db: &TestDb, when: &str) {
    for (view, unit) in [("messages_hourly", "hour"), ("messages_daily", "day")] {
        let wrong = mismatches(
            db,
            &format!(
                "SELECT bot_id, bucket, messages, flagged_messages, round(avg_toxicity::numeric, 9)
                   FROM {view}"
            ),
            &format!(
                "SELECT bot_id, date_trunc('{unit}', sent_at, 'UTC'), count(*),
                        count(*) FILTER (WHERE flagged), round(avg(toxicity::float8)::numeric, 9)
                   FROM messages GROUP BY 1, 2"
            ),
        )
        .await;
        assert!(wrong.is_empty(), "{when}: {view}: {wrong:#?}");
    }
}

async fn assert_exact(db: &TestDb, when: &str) {
    // Every rollup (folded + pending) against the raw rows, column by column.
    let client = db.pool.get().await.expect("connection");
    let checked = client
        .query(include_str!("../sql/checks/rollup_mismatches.sql"), &[])
        .await
        .expect("rollup check");
    assert_eq!(
        checked.len(),
        4,
        "minute, hour, day and flagged terms checked"
    );
    for row in checked {
        let (rollup, wrong): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(
            wrong, 0,
            "{when}: {wrong} rows of {rollup} differ from the raw rows"
        );
    }
    // The analysts' function, in a zone half an hour off UTC and over a range cut
    // mid-hour, against the same figures computed from the raw rows.
    let figures = figure_mismatches(
        db,
        "'day'",
        "'2026-11-21 03:17+00'",
        "'2026-11-22 19:45+00'",
        "'Asia/Kolkata'",
    )
    .await;
    assert!(
        figures.is_empty(),
        "{when}: messages_rollup differs: {figures:#?}"
    );
    assert_views_exact(db, when).await;
}

#[tokio::test]
async fn rollups_equal_the_raw_rows_after_duplicates_failures_replays_reenrichment_and_folds() {
    let db = TestDb::create().await;
    // A pool whose transactions are read-only: every insert through it fails, as a batch
    // does when the database refuses it; its rows go to the dead letters.
    let mut settings = Settings::load_from(None, Vec::new()).expect("defaults");
    settings.postgres.url = SecretUrl::new(format!(
        "{}?options=-c%20default_transaction_read_only%3Don",
        db.url
    ));
    let refusing = connect_pool(&settings.postgres).expect("pool");
    // The minute mark (sql/0011) before all the data: each fold's present moves it through
    // the two days, so folds find pending rows of closed minutes (late ones) and of open
    // ones, and close minutes folded earlier.
    db.pool
        .get()
        .await
        .expect("connection")
        .batch_execute("UPDATE rollup_minutes_folded SET through = '2026-11-20 22:00+00'")
        .await
        .expect("the mark set");

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut stored: Vec<ProcessedMessage> = Vec::new();
    let mut dead_letters: Vec<ProcessedMessage> = Vec::new();
    for round in 0..60 {
        let mut batch: Vec<ProcessedMessage> = (0..1 + rng.below(120))
            .map(|_| message(&mut rng, Uuid::new_v4(), "hello there"))
            .collect();
        // Copies of stored messages: the same content (a duplicate) or another (a conflict).
        for _ in 0..rng.below(15) {
            if stored.is_empty() {
                break;
            }
            let earlier = &stored[rng.below(stored.len() as u64) as usize];
            let mut copy = earlier.clone();
            if rng.chance(30) {
                copy = message(
                    &mut rng,
                    earlier.message.message_id.as_uuid(),
                    "other words",
                );
            }
            batch.push(copy);
        }
        // A message id appears once per statement, as the batch writer guarantees.
        let mut seen = std::collections::HashSet::new();
        batch.retain(|m| seen.insert(m.message.message_id.as_uuid()));

        if rng.chance(20) {
            assert!(
                insert_messages(&refusing, &batch).await.is_err(),
                "round {round}: a read-only transaction refused the batch"
            );
            dead_letters.extend(batch);
        } else {
            insert_messages(&db.pool, &batch).await.expect("insert");
            stored.extend(batch);
        }
        // Dead letters replayed, now and then, some of them twice.
        if rng.chance(25) && !dead_letters.is_empty() {
            let replay: Vec<ProcessedMessage> = std::mem::take(&mut dead_letters);
            insert_messages(&db.pool, &replay).await.expect("replay");
            insert_messages(&db.pool, &replay[..replay.len() / 2])
                .await
                .expect("replayed again");
            stored.extend(replay);
        }
        // Re-enrichment of some rows stored without NLP data (and of some that have it,
        // which must change nothing).
        if rng.chance(40) {
            let mut rows = Vec::new();
            for m in &stored {
                if rng.chance(10) {
                    rows.push((
                        m.message.message_id.as_uuid(),
                        m.sent_at(),
                        analysed(&mut rng),
                    ));
                }
            }
            let client = db.pool.get().await.expect("connection");
            update_enrichment(&client, &rows).await.expect("re-enrich");
        }
        // Partial folds: a few rows at a time, so folded and pending rows mix.
        if rng.chance(50) {
            let mut client = db.pool.get().await.expect("connection");
            let present = start() + Duration::minutes(50 * round);
            for _ in 0..rng.below(4) {
                fold_pending(&mut client, 1 + rng.below(40) as i64, present)
                    .await
                    .expect("fold")
                    .expect("no other folder holds the lock");
            }
        }
        if round % 5 == 4 {
            assert_exact(&db, &format!("after round {round}")).await;
        }
    }
    let rows = db.count("SELECT count(*) FROM messages").await;
    let unenriched_fixed = db
        .count("SELECT count(*) FROM messages WHERE nlp_status = 'ok' AND nlp ? 'generated'")
        .await;
    assert!(rows > 1_000, "the run stored a real volume ({rows} rows)");
    assert!(unenriched_fixed > 0, "re-enrichment changed rows");

    // Everything folded and every minute closed: the pending tables empty, the rollups
    // alone still exact.
    let mut client = db.pool.get().await.expect("connection");
    let after_the_data = start() + Duration::hours(60);
    while let Some(folded) = fold_pending(&mut client, 1_000, after_the_data)
        .await
        .expect("fold")
    {
        if folded.rollup_rows < 1_000 && folded.term_rows < 1_000 {
            break;
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM rollup_pending").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM messages_per_minute WHERE bucket >= rollup_minutes_mark()")
            .await,
        0,
        "every minute closed"
    );
    for level in ["hour", "day"] {
        let wrong = mismatches(
            &db,
            &format!(
                "SELECT bucket, bot_id, messages, toxicity_max, sentiment_sum
                   FROM messages_per_{level}"
            ),
            &format!(
                "SELECT date_trunc('{level}', sent_at, 'UTC'), bot_id, count(*), max(toxicity),
                        coalesce(sum(sentiment_score::float8::numeric), 0)
                   FROM messages GROUP BY 1, 2"
            ),
        )
        .await;
        assert!(wrong.is_empty(), "messages_per_{level} alone: {wrong:#?}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM flagged_terms_pending").await,
        0
    );
    assert_exact(&db, "after the last fold").await;

    // Raw retention drops rows; rollups keep them until their own retention.
    let before: i64 = db
        .count("SELECT sum(messages)::bigint FROM messages_per_day")
        .await;
    client
        .batch_execute("DELETE FROM messages WHERE sent_at < '2026-11-21'")
        .await
        .expect("raw rows expire");
    assert_eq!(
        db.count("SELECT sum(messages)::bigint FROM messages_per_day")
            .await,
        before
    );
    let cutoff = Utc
        .with_ymd_and_hms(2026, 11, 22, 0, 0, 0)
        .single()
        .expect("time");
    prune_rollups(
        &client,
        cutoff,
        Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0)
            .single()
            .expect("time"),
    )
    .await
    .expect("rollup retention");
    assert_eq!(
        db.count("SELECT count(*) FROM messages_per_minute WHERE bucket < '2026-11-22'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM messages_per_day WHERE bucket < '2026-11-21'")
            .await,
        0
    );
    assert!(
        db.count("SELECT count(*) FROM messages_per_hour WHERE bucket >= '2026-11-21' AND bucket < '2026-11-22'")
            .await
            > 0,
        "hours newer than the cutoff are kept"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn the_analyst_role_reads_messages_rollups_and_views_and_nothing_else() {
    let db = TestDb::create().await;
    let settings = Settings::load_from(None, Vec::new()).expect("defaults");
    let analyst = db.migrate_and_connect_analyst(&settings).await;

    for readable in [
        "SELECT count(*) FROM messages",
        "SELECT count(*) FROM messages_per_minute",
        "SELECT count(*) FROM messages_per_hour",
        "SELECT count(*) FROM messages_per_day",
        "SELECT count(*) FROM rollup_minutes_folded",
        "SELECT count(*) FROM messages_hourly",
        "SELECT count(*) FROM messages_daily",
        "SELECT count(*) FROM flagged_terms_daily",
        "SELECT count(*) FROM messages_rollup('hour', now() - interval '1 day', now())",
    ] {
        analyst
            .query_one(readable, &[])
            .await
            .unwrap_or_else(|e| panic!("{readable}: {e}"));
    }
    let timeout: String = analyst
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(timeout, "30s");
    for (setting, expected) in [("jit", "off"), ("work_mem", "64MB")] {
        let value: String = analyst
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(value, expected, "{setting}");
    }

    let denied = |sql: &'static str| {
        let analyst = &analyst;
        async move {
            let error = analyst
                .batch_execute(sql)
                .await
                .expect_err(&format!("{sql} is refused"));
            error.code().cloned()
        }
    };
    use tokio_postgres::error::SqlState;
    for hidden in [
        "SELECT * FROM message_keys",
        "SELECT * FROM schema_migrations",
        "SELECT * FROM messages_default",
    ] {
        assert_eq!(
            denied(hidden).await,
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{hidden}"
        );
    }
    // Read-only by default, and without the privilege even when read-only is switched off.
    assert_eq!(
        denied("DELETE FROM messages").await,
        Some(SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    analyst
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .expect("a session setting");
    for write in [
        "DELETE FROM messages",
        "DELETE FROM messages_per_day",
        "INSERT INTO rollup_pending (bucket, bot_id) VALUES (now(), 'x')",
        "CREATE TABLE mine (x int)",
    ] {
        assert_eq!(
            denied(write).await,
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{write}"
        );
    }
    drop(analyst);
    db.drop_db().await;
}

#[tokio::test]
async fn messages_rollup_equals_the_raw_rows_in_every_unit_zone_and_range() {
    let db = TestDb::create().await;
    let settings = Settings::load_from(None, Vec::new()).expect("defaults");
    chat_analytics::storage::prepare_database(
        &db.pool,
        &settings.storage,
        &settings.partitions,
        settings.postgres.analyst_password().expect("loopback"),
    )
    .await
    .expect("migrate");
    let mut client = db.pool.get().await.expect("connection");
    client
        .batch_execute(include_str!("data/analytics_seed.sql"))
        .await
        .expect("the seed loads");
    // Fold part of what the seed left pending, so answers mix day, hour and minute rows
    // with pending ones, and pending rows both with and without a folded row to join.
    let pending = db.count("SELECT count(*) FROM rollup_pending").await;
    assert!(pending > 1_000, "{pending} pending rows");
    let folded = fold_pending(&mut client, pending / 2, Utc::now())
        .await
        .expect("fold")
        .expect("something to fold");
    assert!(folded.rollup_rows > 0);
    drop(client);

    let ranges = [
        ("'-infinity'", "'infinity'"),
        (
            "date_trunc('day', now(), 'UTC') - interval '8 days' + interval '3 hours 17 minutes'",
            "now() - interval '2 days 15 minutes'",
        ),
        (
            "date_trunc('hour', now()) - interval '4 hours 30 minutes'",
            "now()",
        ),
        (
            "date_trunc('day', now(), 'UTC') - interval '7 days'",
            "date_trunc('day', now(), 'UTC')",
        ),
    ];
    // Whole hours off UTC, half and three quarters of an hour off, and daylight saving.
    let zones = [
        "'UTC'",
        "'America/New_York'",
        "'Asia/Kolkata'",
        "'Asia/Kathmandu'",
    ];
    let units = [
        "'minute'",
        "'hour'",
        "'day'",
        "'week'",
        "'month'",
        "'millennium'",
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (from, to) in ranges {
        for zone in zones {
            for unit in units {
                let wrong = figure_mismatches(&db, unit, from, to, zone).await;
                checked += 1;
                if !wrong.is_empty() {
                    failures.push(format!(
                        "messages_rollup({unit}, {from}, {to}, {zone}): {} rows differ, e.g. {:?}",
                        wrong.len(),
                        &wrong[..wrong.len().min(4)]
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 96);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the views, which read the same merged rows.
    assert_views_exact(&db, "after a partial fold").await;
    db.drop_db().await;
}

/// Rows the executed plan of `sql` read in the scans `counted` picks, summed over them.
async fn rows_read(
    client: &tokio_postgres::Client,
    sql: &str,
    counted: impl Fn(&serde_json::Value) -> bool,
) -> f64 {
    fn walk(
        node: &serde_json::Value,
        counted: &dyn Fn(&serde_json::Value) -> bool,
        total: &mut f64,
    ) {
        if counted(node) {
            let rows = node["Actual Rows"].as_f64().unwrap_or_default();
            let loops = node["Actual Loops"].as_f64().unwrap_or(1.0);
            *total += rows * loops;
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            walk(child, counted, total);
        }
    }
    let explained: serde_json::Value = client
        .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), &[])
        .await
        .expect("explain")
        .get(0);
    let mut total = 0.0;
    walk(&explained[0]["Plan"], &counted, &mut total);
    total
}

/// Rows that `messages_rollup(sql)` read from the hour and minute rollups to sum into its
/// buckets (the scans probing them for a set of buckets; not the probe for the newest
/// minute), from the executed plan.
async fn summed_hour_and_minute_rows(client: &tokio_postgres::Client, sql: &str) -> f64 {
    rows_read(client, sql, |node| {
        let relation = node["Relation Name"].as_str().unwrap_or_default();
        let probes_buckets = ["Index Cond", "Recheck Cond", "Filter"]
            .iter()
            .any(|key| node[key].as_str().is_some_and(|c| c.contains("ANY")));
        matches!(relation, "messages_per_hour" | "messages_per_minute") && probes_buckets
    })
    .await
}

#[tokio::test]
async fn a_range_reaching_past_the_newest_data_takes_todays_day_row_whole() {
    let db = TestDb::create().await;
    let mut client = db.pool.get().await.expect("connection");
    // The seed's messages run until now; all folded and every minute closed (the present
    // of the fold is past the newest), so every level has today's rows and readers add
    // nothing.
    client
        .batch_execute(include_str!("data/analytics_seed.sql"))
        .await
        .expect("the seed loads");
    while fold_pending(&mut client, 100_000, Utc::now() + Duration::minutes(2))
        .await
        .expect("fold")
        .is_some_and(|folded| folded.rollup_rows > 0)
    {}
    let until_now = "SELECT * FROM messages_rollup('day', \
                     date_trunc('day', now(), 'UTC') - interval '9 days', now())";
    assert_eq!(
        summed_hour_and_minute_rows(&client, until_now).await,
        0.0,
        "ten days until now are ten day rows"
    );
    // Ending mid-day before the newest data, that day is cut, so it is summed from its
    // hours and minutes.
    let cut = "SELECT * FROM messages_rollup('day', \
               date_trunc('day', now(), 'UTC') - interval '9 days', \
               date_trunc('day', now(), 'UTC') - interval '12 hours 30 seconds')";
    assert!(
        summed_hour_and_minute_rows(&client, cut).await > 0.0,
        "a range ending yesterday at noon sums that day from hour and minute rows"
    );
    drop(client);
    db.drop_db().await;
}

/// Which page of `table` each bot's row is on.
async fn pages_by_bot(
    client: &tokio_postgres::Client,
    table: &str,
) -> std::collections::HashMap<String, i64> {
    let sql = format!("SELECT bot_id, ((ctid::text)::point)[0]::bigint FROM {table}");
    client
        .query(&sql, &[])
        .await
        .expect("pages of the rollup's rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The folder updates an hour's and a day's row for every (bot, minute) it closes and every
/// late pending row: with room left on their pages (sql/0010), each new version stays on
/// its row's page (a HOT update, no new index entry). On full pages, most would move. The
/// rows here are late (their minute long closed), so each fold updates all 400.
#[tokio::test]
async fn the_folders_updates_of_hour_and_day_rows_stay_on_their_pages() {
    let db = TestDb::create().await;
    let mut client = db.pool.get().await.expect("connection");
    // Enough bots that their day rows fill several pages.
    let append = "INSERT INTO rollup_pending
                  SELECT '2026-11-20 22:00:00+00', 'bot-' || g, 1, 1, 1, 0.5, 0, 0, 1, 1,
                         0.25, 0.25, 0, 0
                    FROM generate_series(1, 400) AS g";
    client.batch_execute(append).await.expect("pending rows");
    while fold_pending(&mut client, 100_000, Utc::now())
        .await
        .expect("fold")
        .is_some_and(|folded| folded.rollup_rows > 0)
    {}
    let mut before = Vec::new();
    for table in ["messages_per_hour", "messages_per_day"] {
        before.push(pages_by_bot(&client, table).await);
    }
    client.batch_execute(append).await.expect("pending rows");
    let folded = fold_pending(&mut client, 100_000, Utc::now())
        .await
        .expect("fold")
        .expect("no other folder");
    assert_eq!(folded.rollup_rows, 400);
    for (table, before) in ["messages_per_hour", "messages_per_day"]
        .into_iter()
        .zip(before)
    {
        let after = pages_by_bot(&client, table).await;
        assert_eq!(after.len(), 400, "{table}: one row per bot");
        assert!(
            before
                .values()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 2,
            "{table}: the rows fill several pages"
        );
        let stayed = after
            .iter()
            .filter(|(bot, page)| before.get(*bot) == Some(*page))
            .count();
        assert!(
            stayed >= 380,
            "{table}: {stayed} of 400 updated rows stayed on their page"
        );
        let messages: i64 = client
            .query_one(&format!("SELECT sum(messages)::bigint FROM {table}"), &[])
            .await
            .expect("sum")
            .get(0);
        assert_eq!(messages, 800, "{table}: both rounds counted");
    }
    drop(client);
    db.drop_db().await;
}

/// The hour and day rollups take a minute once it closes (sql/0011): until then readers add
/// its minute rows; the mark never moves back; and a writer that does not know the mark (a
/// worker older than the migration) is refused, so it cannot count open minutes twice.
#[tokio::test]
async fn hours_and_days_take_each_minute_once_it_closes() {
    let db = TestDb::create().await;
    let mut client = db.pool.get().await.expect("connection");
    let minute = |m: i64| start() + Duration::minutes(m);
    let mark = || async {
        db.count("SELECT extract(epoch FROM through)::bigint FROM rollup_minutes_folded")
            .await
    };
    client
        .batch_execute("UPDATE rollup_minutes_folded SET through = '2026-11-20 22:00+00'")
        .await
        .expect("the mark set");
    let append = |at: DateTime<Utc>, messages: i64| {
        format!(
            "INSERT INTO rollup_pending
             SELECT '{}', 'bot-' || g, {messages}, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, {messages}
               FROM generate_series(1, 3) AS g",
            at.to_rfc3339()
        )
    };
    let hour_and_day = || async {
        (
            db.count("SELECT coalesce(sum(messages), 0)::bigint FROM messages_per_hour")
                .await,
            db.count("SELECT coalesce(sum(messages), 0)::bigint FROM messages_per_day")
                .await,
        )
    };
    let views = || async {
        (
            db.count("SELECT coalesce(sum(messages), 0)::bigint FROM messages_hourly")
                .await,
            db.count("SELECT coalesce(sum(messages), 0)::bigint FROM messages_daily")
                .await,
        )
    };

    // Minute 0, folded during minute 0: in the minute rollup only.
    client
        .batch_execute(&append(minute(0), 2))
        .await
        .expect("pending");
    let at = minute(0) + Duration::seconds(30);
    fold_pending(&mut client, 1_000, at)
        .await
        .expect("fold")
        .expect("no other folder");
    assert_eq!(hour_and_day().await, (0, 0), "minute 0 is open");
    assert_eq!(views().await, (6, 6), "readers add the open minute");
    assert_eq!(mark().await, minute(0).timestamp());

    // Minute 1 starts: minute 0 closes into the hours and days; minute 1's rows stay open.
    client
        .batch_execute(&append(minute(1), 5))
        .await
        .expect("pending");
    fold_pending(&mut client, 1_000, minute(1) + Duration::seconds(1))
        .await
        .expect("fold")
        .expect("no other folder");
    assert_eq!(
        hour_and_day().await,
        (6, 6),
        "minute 0 closed, minute 1 open"
    );
    assert_eq!(views().await, (21, 21));
    assert_eq!(mark().await, minute(1).timestamp());

    // A late row for minute 0 goes straight to all three; a fold with an earlier present
    // (another replica's clock) leaves the mark where it is.
    client
        .batch_execute(&append(minute(0), 1))
        .await
        .expect("pending");
    fold_pending(&mut client, 1_000, minute(0))
        .await
        .expect("fold")
        .expect("no other folder");
    assert_eq!(
        mark().await,
        minute(1).timestamp(),
        "the mark never moves back"
    );
    assert_eq!(hour_and_day().await, (9, 9), "the late row counted once");
    assert_eq!(views().await, (24, 24));
    assert_eq!(
        db.count("SELECT sum(messages)::bigint FROM messages_per_minute")
            .await,
        24
    );

    // The guard: no setting, no write; the folder's setting lets it through.
    let refused = client
        .batch_execute("UPDATE messages_per_hour SET messages = messages + 1")
        .await
        .expect_err("a writer that does not know the mark is refused");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("rollup_minutes_folded")),
        "{refused}"
    );
    for table in ["messages_per_hour", "messages_per_day"] {
        let insert = format!("INSERT INTO {table} SELECT * FROM messages_per_minute LIMIT 0");
        assert!(client.batch_execute(&insert).await.is_err(), "{table}");
    }
    client
        .batch_execute(
            "BEGIN;
             SET LOCAL chat_analytics.rollup_writer = 'minute_mark';
             INSERT INTO messages_per_day SELECT * FROM messages_per_minute LIMIT 0;
             COMMIT;",
        )
        .await
        .expect("a writer that knows the mark");
    drop(client);
    db.drop_db().await;
}

/// One bot's hourly and daily figures read that bot's open minutes, not every bot's: with
/// 50,000 bots sending, the open minute holds a row per bot (sql/0011 reads them
/// unmaterialized so that the filter reaches the minute rollup's index).
#[tokio::test]
async fn one_bots_figures_read_only_its_open_minutes() {
    let db = TestDb::create().await;
    let client = db.pool.get().await.expect("connection");
    client
        .batch_execute(
            "UPDATE rollup_minutes_folded SET through = '2026-11-20 22:00+00';
             INSERT INTO messages_per_minute
             SELECT '2026-11-20 22:00+00', 'bot-' || g, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, 1
               FROM generate_series(1, 2000) AS g;
             ANALYZE messages_per_minute;",
        )
        .await
        .expect("open minute rows of 2,000 bots");
    for view in ["messages_hourly", "messages_daily"] {
        let sql = format!("SELECT * FROM {view} WHERE bot_id = 'bot-7'");
        let figures = client.query(&sql, &[]).await.expect("figures");
        assert_eq!(figures.len(), 1, "{view}: one bucket for bot-7");
        let read = rows_read(&client, &sql, |node| {
            node["Relation Name"].as_str() == Some("messages_per_minute")
        })
        .await;
        // Its row, once for each of the two reads of what is pending.
        assert!(
            read <= 2.0,
            "{view}: read {read} open minute rows for one bot"
        );
        let all = client
            .query(&format!("SELECT * FROM {view}"), &[])
            .await
            .expect("every bot");
        assert_eq!(all.len(), 2000, "{view}: every bot's open minute counted");
    }
    drop(client);
    db.drop_db().await;
}
