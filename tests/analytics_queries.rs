//! Every ready query of docs/ANALYTICS.md runs as `chat_analyst` on the seed data
//! (tests/data/analytics_seed.sql) and returns rows; the blocks marked
//! `<!-- time-bounded: N days -->` read raw rows and their plan keeps only the daily
//! partitions of their range, and no unmarked block reads raw rows at all.

mod support;

use std::collections::BTreeSet;

use chat_analytics::config::Settings;
use support::TestDb;

const DOC: &str = "docs/ANALYTICS.md";
const MARKER: &str = "<!-- time-bounded:";

/// One ```sql block of the document.
struct Block {
    /// 1-based line of its opening fence.
    line: usize,
    /// The `###` heading above it.
    title: String,
    sql: String,
    /// Days of `sent_at` it reads, from the marker right before it.
    bounded_days: Option<usize>,
}

impl Block {
    fn name(&self) -> String {
        format!("{DOC}:{} ({})", self.line, self.title)
    }
}

/// The days of a `<!-- time-bounded: N days -->` marker.
fn marker_days(line: &str, number: usize) -> usize {
    let inner = line
        .strip_prefix(MARKER)
        .and_then(|rest| rest.strip_suffix("-->"))
        .unwrap_or_else(|| panic!("{DOC}:{number}: malformed marker {line:?}"));
    let mut words = inner.split_whitespace();
    let days = words.next().and_then(|n| n.parse().ok());
    match (days, words.next(), words.next()) {
        (Some(days), Some("day" | "days"), None) if days > 0 => days,
        _ => panic!("{DOC}:{number}: expected `{MARKER} N days -->`, found {line:?}"),
    }
}

/// Every ```sql block with its heading and marker. A marker must be the last non-blank
/// line before a block, so none is silently attached to the wrong query or to nothing.
fn sql_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut title = String::new();
    let mut marker: Option<(usize, usize)> = None;
    let mut lines = doc.lines().enumerate().map(|(i, line)| (i + 1, line));
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "```sql" {
            let mut sql = String::new();
            let mut closed = false;
            for (_, body) in lines.by_ref() {
                if body.trim() == "```" {
                    closed = true;
                    break;
                }
                sql.push_str(body);
                sql.push('\n');
            }
            assert!(closed, "{DOC}:{number}: the ```sql block is never closed");
            blocks.push(Block {
                line: number,
                title: title.clone(),
                sql,
                bounded_days: marker.take().map(|(_, days)| days),
            });
        } else if trimmed.starts_with(MARKER) {
            assert!(marker.is_none(), "{DOC}:{number}: two markers in a row");
            marker = Some((number, marker_days(trimmed, number)));
        } else if !trimmed.is_empty() {
            if let Some((at, _)) = marker {
                panic!("{DOC}:{at}: the marker is not right before a ```sql block");
            }
            if let Some(heading) = trimmed.strip_prefix("### ") {
                heading.clone_into(&mut title);
            }
        }
    }
    assert!(marker.is_none(), "{DOC}: a marker ends the document");
    blocks
}

/// The daily partitions (`messages_pYYYYMMDD`) a plan reads, and whether it reads the
/// default partition.
fn partitions_in(plan: &str) -> (BTreeSet<String>, bool) {
    const PREFIX: &str = "messages_p";
    let mut daily = BTreeSet::new();
    for (at, _) in plan.match_indices(PREFIX) {
        let rest = &plan[at + PREFIX.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 8 {
            daily.insert(plan[at..at + PREFIX.len() + 8].to_owned());
        }
    }
    (daily, plan.contains("messages_default"))
}

#[test]
fn the_document_is_parsed_as_written() {
    let doc = "### One\n\n```sql\nSELECT 1;\n```\n### Two\n<!-- time-bounded: 3 days -->\n\n```sql\nSELECT 2\n  FROM x;\n```\n";
    let blocks = sql_blocks(doc);
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0].title.as_str(), blocks[0].bounded_days),
        ("One", None)
    );
    assert_eq!(blocks[1].sql, "SELECT 2\n  FROM x;\n");
    assert_eq!(
        (
            blocks[1].title.as_str(),
            blocks[1].bounded_days,
            blocks[1].line
        ),
        ("Two", Some(3), 9)
    );
    let plan = "Seq Scan on messages_p20261130 messages_1\n\
                Index Scan using messages_p20261201_bot_id_sent_at_idx on messages_p20261201 m\n\
                Seq Scan on messages_p2026 x";
    let (daily, default) = partitions_in(plan);
    assert_eq!(
        daily.into_iter().collect::<Vec<_>>(),
        ["messages_p20261130", "messages_p20261201"]
    );
    assert!(!default);
}

#[test]
#[should_panic(expected = "not right before")]
fn a_marker_away_from_its_block_is_refused() {
    sql_blocks("<!-- time-bounded: 1 day -->\nSome text.\n```sql\nSELECT 1\n```\n");
}

#[tokio::test]
async fn every_ready_query_runs_as_the_analyst_returns_rows_and_prunes_partitions() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ANALYTICS.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/ANALYTICS.md is readable");
    let blocks = sql_blocks(&doc);
    assert!(
        blocks.len() >= 10,
        "{DOC} has {} ```sql blocks, expected at least 10",
        blocks.len()
    );
    let bounded = blocks.iter().filter(|b| b.bounded_days.is_some()).count();
    assert!(
        bounded >= 3,
        "{DOC} has {bounded} time-bounded blocks, expected at least 3"
    );

    let db = TestDb::create().await;
    let mut settings = Settings::load_from(None, Vec::new()).expect("defaults");
    // With the full-text index, as where analysts search text: the documented search
    // must use it.
    settings.storage.full_text_search = true;
    let analyst = db.migrate_and_connect_analyst(&settings).await;
    let seed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/analytics_seed.sql");
    let seed = std::fs::read_to_string(seed_path).expect("the seed is readable");
    let owner = db.pool.get().await.expect("connection");
    owner.batch_execute(&seed).await.expect("the seed loads");
    let daily_partitions: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'messages'::regclass AND c.relname ~ '^messages_p[0-9]{8}$'",
            &[],
        )
        .await
        .expect("count partitions")
        .get(0);
    let daily_partitions = usize::try_from(daily_partitions).expect("a count");
    drop(owner);
    // The seed's 10 days and the ones created ahead: pruning has something to remove.
    assert!(daily_partitions > 10, "{daily_partitions} daily partitions");

    let mut failures = Vec::new();
    for block in &blocks {
        let name = block.name();
        match analyst.query(block.sql.as_str(), &[]).await {
            Ok(rows) if rows.is_empty() => failures.push(format!("{name}: no rows")),
            Ok(_) => {}
            Err(error) => {
                failures.push(format!("{name}: {error:?}"));
                continue;
            }
        }
        let plan: String = match analyst
            .query(format!("EXPLAIN\n{}", block.sql).as_str(), &[])
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(error) => {
                failures.push(format!("{name}: EXPLAIN: {error:?}"));
                continue;
            }
        };
        // A search must use the expression messages_text_fts_idx is built on; each
        // partition's piece of the index is named after it.
        if block.sql.contains("to_tsvector(") && !plan.contains("_to_tsvector_idx") {
            failures.push(format!(
                "{name}: full-text search that does not use the full-text index:\n{plan}"
            ));
        }
        let (read, default) = partitions_in(&plan);
        match block.bounded_days {
            Some(days) => {
                println!("{name}: reads {} {read:?}", read.len());
                if read.is_empty() {
                    failures.push(format!(
                        "{name}: marked time-bounded but reads no partition of messages:\n{plan}"
                    ));
                } else if read.len() >= daily_partitions || read.len() > days + 1 || default {
                    failures.push(format!(
                        "{name}: a range of {days} day(s) reads {} of {daily_partitions} daily \
                         partitions{}:\n{plan}",
                        read.len(),
                        if default { " and the default one" } else { "" }
                    ));
                }
            }
            None if !read.is_empty() || default => failures.push(format!(
                "{name}: reads raw rows of messages without a `{MARKER} N days -->` marker \
                 (and so without its bound checked):\n{plan}"
            )),
            None => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries in {DOC} failed:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
    drop(analyst);
    db.drop_db().await;
}
