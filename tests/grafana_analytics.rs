//! `deploy/grafana/chat-analytics-analytics.json`, the analysts' dashboard on a PostgreSQL
//! data source: its shape, and every query it sends, rendered as Grafana renders its macros
//! and variables and run as `chat_analyst` on the seeded data
//! (`tests/data/analytics_seed.sql`), before the rollup folder ran and after. Each answers
//! rows, in the shape its panel reads, without reading the raw `messages` table.

mod support;

use std::collections::BTreeSet;

use chat_analytics::config::Settings;
use chat_analytics::storage::fold_pending;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;
use support::{read_repo_file as read, TestDb};
use tokio_postgres::types::Type;

const DASHBOARD: &str = "deploy/grafana/chat-analytics-analytics.json";
const OPERATIONS_DASHBOARD: &str = "deploy/grafana/chat-analytics.json";
/// Grafana's plugin id of its PostgreSQL data source (11.x).
const POSTGRES_PLUGIN: &str = "grafana-postgresql-datasource";
const DATASOURCE_REF: &str = "${datasource}";
/// A multi-value selection of the `bot` variable.
const SELECTED_BOTS: [&str; 2] = ["bot-01", "bot-02"];
/// The panel whose figure is checked against the raw rows.
const TOTAL_PANEL: &str = "Messages in range";

// ---------------------------------------------------------------------------------------
// The dashboard's shape.

#[test]
fn dashboard_is_a_grafana_dashboard_on_a_postgresql_datasource_variable() {
    let dashboard = dashboard();
    let operations = read_json(OPERATIONS_DASHBOARD);
    let version = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!(version >= 36, "schemaVersion {version}");
    assert_eq!(
        dashboard["schemaVersion"], operations["schemaVersion"],
        "both dashboards are written for the same Grafana"
    );
    let uid = dashboard["uid"].as_str().unwrap_or_default();
    assert!(!uid.is_empty(), "a uid");
    assert_ne!(
        Some(uid),
        operations["uid"].as_str(),
        "provisioned side by side, the dashboards need their own uid"
    );

    let datasource = variable(&dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], POSTGRES_PLUGIN);

    let bot = variable(&dashboard, "bot");
    assert_eq!(bot["type"], "query");
    assert_eq!(bot["multi"], true, "bot is multi-value");
    assert_eq!(bot["includeAll"], true, "bot offers All");
    assert_eq!(bot["datasource"]["uid"], DATASOURCE_REF);
    assert!(query_text(bot).is_some_and(|q| !q.trim().is_empty()));

    let all = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &all {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
    }
    let charts: Vec<&Value> = all.iter().filter(|p| p["type"] != "row").collect();
    assert!(charts.len() >= 6, "{} panels", charts.len());
    for panel in charts {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], DATASOURCE_REF, "panel {title}");
        assert_eq!(
            panel["datasource"]["type"], POSTGRES_PLUGIN,
            "panel {title}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let origin = format!("panel {title:?} query {}", target["refId"]);
            assert_eq!(target["datasource"]["uid"], DATASOURCE_REF, "{origin}");
            assert_eq!(target["rawQuery"], true, "{origin}");
            assert_eq!(target["editorMode"], "code", "{origin}");
            assert!(
                matches!(target["format"].as_str(), Some("time_series" | "table")),
                "{origin}: format {}",
                target["format"]
            );
            assert!(
                target["rawSql"]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{origin}: no rawSql"
            );
        }
    }

    let queries = queries(&dashboard);
    assert!(queries.iter().any(|q| q.format == "time_series"));
    for query in &queries {
        assert!(
            !reads_raw_messages(&query.sql),
            "{}: reads the raw messages table; dashboards read the rollups\n{}",
            query.origin,
            query.sql
        );
    }
}

#[test]
fn the_raw_table_check_tells_the_table_from_columns_and_rollups() {
    for raw in [
        "SELECT count(*) FROM messages WHERE bot_id IN ('a')",
        "select 1 from public.messages",
        "SELECT 1 FROM ONLY \"messages\" m",
        "SELECT * FROM messages_daily d JOIN messages m USING (bot_id)",
    ] {
        assert!(reads_raw_messages(raw), "{raw}");
    }
    for rollup in [
        "SELECT bucket AS time, messages FROM messages_rollup('hour', now(), now())",
        "SELECT sum(messages) FROM messages_daily JOIN flagged_terms_daily USING (bot_id)",
        "SELECT messages FROM messages_hourly",
    ] {
        assert!(!reads_raw_messages(rollup), "{rollup}");
    }
}

#[test]
fn rendering_substitutes_macros_and_variables_as_grafana_does() {
    let from = Utc::now() - Duration::days(7);
    let to = Utc::now();
    let sql = "SELECT '$unit', ${unit} FROM f($__timeFrom(), $__timeTo()) \
               WHERE bot_id IN ($bot) AND x = $botany";
    let rendered = render(
        sql,
        from,
        to,
        &[
            ("unit".to_owned(), "hour".to_owned()),
            ("bot".to_owned(), "'bot-01','bot-02'".to_owned()),
        ],
    );
    assert_eq!(
        rendered,
        format!(
            "SELECT 'hour', hour FROM f('{}', '{}') WHERE bot_id IN ('bot-01','bot-02') \
             AND x = $botany",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        )
    );
    assert_eq!(quote("it's"), "'it''s'");
}

// ---------------------------------------------------------------------------------------
// Every query, run as chat_analyst.

#[tokio::test]
async fn every_query_answers_rows_as_chat_analyst_from_the_rollups_only() {
    let dashboard = dashboard();
    let queries = queries(&dashboard);

    let db = TestDb::create().await;
    let settings = Settings::load_from(None, Vec::new()).expect("defaults");
    let analyst = db.migrate_and_connect_analyst(&settings).await;
    let mut owner = db.pool.get().await.expect("connection");
    owner
        .batch_execute(&read("tests/data/analytics_seed.sql"))
        .await
        .expect("the seed runs as the owner");

    // The raw table and its partitions: what no plan may read.
    let raw_relations: BTreeSet<String> = analyst
        .query(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.oid = 'messages'::regclass
                 OR c.oid IN (SELECT inhrelid FROM pg_inherits
                               WHERE inhparent = 'messages'::regclass)",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(raw_relations.len() > 1, "messages and its partitions");

    // The range Grafana sends, whole seconds; whole minutes here so the raw count below
    // covers exactly what the rollups do.
    let to = Utc::now()
        .duration_trunc(Duration::minutes(1))
        .expect("truncates");
    let from = to - Duration::days(7);

    // What the `bot` variable lists, hence what "All" renders to.
    let bot_variable = variable(&dashboard, "bot");
    let bot_query = query_text(bot_variable).expect("bot query");
    let listed: Vec<String> = analyst
        .query(&render(&bot_query, from, to, &[]), &[])
        .await
        .unwrap_or_else(|e| panic!("the bot variable's query: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    for bot in SELECTED_BOTS {
        assert!(listed.iter().any(|b| b == bot), "{bot} in {listed:?}");
    }
    let selected: Vec<String> = SELECTED_BOTS.iter().map(|b| (*b).to_owned()).collect();

    for phase in ["pending", "folded"] {
        if phase == "folded" {
            // As the worker leaves them: everything moved into the minute, hour and day
            // rollups, so the queries read those rather than rollup_pending.
            while let Some(folded) = fold_pending(&mut owner, 100_000, chrono::Utc::now())
                .await
                .expect("fold")
            {
                if folded.rollup_rows < 100_000 && folded.term_rows < 100_000 {
                    break;
                }
            }
            assert_eq!(db.count("SELECT count(*) FROM rollup_pending").await, 0);
        }
        let mut ran = BTreeSet::new();
        for bots in [&selected, &listed] {
            for values in variable_values(&dashboard, bots) {
                for query in &queries {
                    let sql = render(&query.sql, from, to, &values);
                    if !ran.insert(sql.clone()) {
                        continue;
                    }
                    let origin = format!("{phase}: {} with {values:?}", query.origin);
                    check(&analyst, &origin, &sql, &query.format, bots, &raw_relations).await;
                }
            }
        }

        // The total the stat shows is the raw rows' count for the same range and bots.
        let total = queries
            .iter()
            .find(|q| q.origin.starts_with(&format!("panel {TOTAL_PANEL:?}")))
            .unwrap_or_else(|| panic!("a panel titled {TOTAL_PANEL:?}"));
        let values = vec![("bot".to_owned(), render_multi(&selected))];
        let shown: i64 = analyst
            .query_one(&render(&total.sql, from, to, &values), &[])
            .await
            .expect("total")
            .get(0);
        let raw: i64 = owner
            .query_one(
                "SELECT count(*) FROM messages
                  WHERE bot_id = ANY ($1) AND sent_at >= $2 AND sent_at < $3",
                &[&selected, &from, &to],
            )
            .await
            .expect("raw count")
            .get(0);
        assert!(
            raw > 0,
            "the seed has messages of {selected:?} in the range"
        );
        assert_eq!(shown, raw, "{phase}: {TOTAL_PANEL} against the raw rows");
    }

    drop(owner);
    drop(analyst);
    db.drop_db().await;
}

/// Runs one rendered query as the analyst and checks its answer's shape and its plan.
async fn check(
    analyst: &tokio_postgres::Client,
    origin: &str,
    sql: &str,
    format: &str,
    bots: &[String],
    raw_relations: &BTreeSet<String>,
) {
    assert!(
        !sql.contains('$'),
        "{origin}: a macro or variable left unsubstituted\n{sql}"
    );
    let statement = analyst
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{origin}: {}\n{sql}", describe(&e)));
    let rows = analyst
        .query(&statement, &[])
        .await
        .unwrap_or_else(|e| panic!("{origin}: {}\n{sql}", describe(&e)));
    assert!(!rows.is_empty(), "{origin}: no rows\n{sql}");

    let columns = statement.columns();
    if format == "time_series" {
        let time = columns
            .iter()
            .find(|c| c.name() == "time")
            .unwrap_or_else(|| panic!("{origin}: no column named time\n{sql}"));
        assert_eq!(time.type_(), &Type::TIMESTAMPTZ, "{origin}: time column");
        let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.get("time")).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{origin}: Grafana needs rows sorted by time\n{sql}"
        );
    }
    if columns.iter().any(|c| c.name() == "metric") {
        for row in &rows {
            let metric: String = row.get("metric");
            assert!(
                bots.contains(&metric),
                "{origin}: series {metric:?} is not a selected bot\n{sql}"
            );
        }
    }

    let plan: Value = analyst
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{origin}: explain: {}", describe(&e)))
        .get(0);
    let mut read = BTreeSet::new();
    relations(&plan, &mut read);
    assert!(!read.is_empty(), "{origin}: its plan reads no table\n{sql}");
    let raw: Vec<&String> = read.intersection(raw_relations).collect();
    assert!(raw.is_empty(), "{origin}: its plan reads {raw:?}\n{sql}");
}

/// A database error with the server's message, not only "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), ToString::to_string)
}

/// Every "Relation Name" in an EXPLAIN (FORMAT JSON) plan.
fn relations(plan: &Value, out: &mut BTreeSet<String>) {
    match plan {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("Relation Name", Value::String(name)) => {
                        out.insert(name.clone());
                    }
                    _ => relations(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| relations(i, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Reading the dashboard.

fn read_json(relative: &str) -> Value {
    serde_json::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

fn dashboard() -> Value {
    read_json(DASHBOARD)
}

fn variables(dashboard: &Value) -> &[Value] {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    variables(dashboard)
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name}"))
}

/// Every panel, the nested panels of (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<Value> {
    fn walk(panels: &[Value], out: &mut Vec<Value>) {
        for panel in panels {
            out.push(panel.clone());
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    out
}

/// A query variable's SQL: a string, or the SQL query editor's object form.
fn query_text(variable: &Value) -> Option<String> {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["rawSql"].as_str())
        .map(str::to_owned)
}

/// A query the dashboard sends: where it is, its SQL, and how Grafana reads the answer.
struct Query {
    origin: String,
    sql: String,
    format: String,
}

/// Every panel's every target, and every query variable's query.
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                origin: format!("panel {title:?} query {}", target["refId"]),
                sql: target["rawSql"].as_str().unwrap_or_default().to_owned(),
                format: target["format"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    for var in variables(dashboard).iter().filter(|v| v["type"] == "query") {
        out.push(Query {
            origin: format!("variable {}", var["name"]),
            sql: query_text(var).unwrap_or_default(),
            format: "variable".to_owned(),
        });
    }
    out
}

/// The options of a custom variable: `a,b,c`, each possibly `text : value`.
fn custom_options(variable: &Value) -> Vec<String> {
    variable["query"]
        .as_str()
        .expect("a custom variable's query")
        .split(',')
        .map(|option| {
            let option = option.trim();
            option
                .split_once(" : ")
                .map_or(option, |(_, value)| value)
                .to_owned()
        })
        .collect()
}

/// The variable assignments to run each query with: `bot` as `bots`, and every option of
/// every custom variable (the others at their current value).
fn variable_values(dashboard: &Value, bots: &[String]) -> Vec<Vec<(String, String)>> {
    let customs: Vec<(String, Vec<String>, String)> = variables(dashboard)
        .iter()
        .filter(|v| v["type"] == "custom")
        .map(|v| {
            let options = custom_options(v);
            let current = v["current"]["value"]
                .as_str()
                .map_or_else(|| options[0].clone(), str::to_owned);
            (
                v["name"].as_str().expect("name").to_owned(),
                options,
                current,
            )
        })
        .collect();
    let base: Vec<(String, String)> = [
        ("bot".to_owned(), render_multi(bots)),
        // Not used today; rendered as Grafana would for a week on a wide panel.
        ("__interval".to_owned(), "10m".to_owned()),
        ("__interval_ms".to_owned(), "600000".to_owned()),
    ]
    .into_iter()
    .chain(customs.iter().map(|(n, _, c)| (n.clone(), c.clone())))
    .collect();
    let mut out = vec![base.clone()];
    for (name, options, _) in &customs {
        for option in options {
            let mut values = base.clone();
            for (n, v) in &mut values {
                if n == name {
                    v.clone_from(option);
                }
            }
            out.push(values);
        }
    }
    out
}

/// A multi-value (or All) SQL variable as Grafana renders it: each value quoted, comma-joined.
fn render_multi(values: &[String]) -> String {
    values
        .iter()
        .map(|v| quote(v))
        .collect::<Vec<_>>()
        .join(",")
}

/// Grafana's SQL quoting of one value of a multi-value variable.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `sql` as Grafana's PostgreSQL data source sends it: `$__timeFrom()` and `$__timeTo()`
/// as quoted RFC 3339 UTC literals, `$name` and `${name}` from `values`; anything else is
/// left as it was.
fn render(
    sql: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    values: &[(String, String)],
) -> String {
    let literal = |t: DateTime<Utc>| format!("'{}'", t.format("%Y-%m-%dT%H:%M:%SZ"));
    let sql = sql
        .replace("$__timeFrom()", &literal(from))
        .replace("$__timeTo()", &literal(to));
    let lookup = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match lookup(name).filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(&value);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `sql` names the raw `messages` table as a relation (after FROM or JOIN,
/// possibly `ONLY`, schema-qualified or quoted); `messages` as a column or a name such as
/// messages_daily is no match.
fn reads_raw_messages(sql: &str) -> bool {
    let lower = sql.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"'))
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).enumerate().any(|(i, pair)| {
        if pair[0] != "from" && pair[0] != "join" {
            return false;
        }
        let mut relation = pair[1];
        if relation == "only" {
            relation = words.get(i + 2).copied().unwrap_or_default();
        }
        let relation = relation.trim_matches('"');
        let relation = relation.strip_prefix("public.").unwrap_or(relation);
        relation.trim_matches('"') == "messages"
    })
}
