//! deploy/prometheus/ and deploy/grafana/: scrape targets, alert rules and dashboard
//! queries name only metrics the service exports.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::compose::{compose, compose_settings, volume_strings, COMPOSE_SERVICE};
use crate::manifest::{host_and_port, yaml};
use crate::support::{read_repo_file as read, FIXED_METRICS};

/// The operations dashboard.
const DASHBOARD: &str = "deploy/grafana/chat-analytics.json";

/// Metrics the service exports beyond the fixed set.
const EXTRA_METRICS: &[&str] = &["consumer_paused", "http_connections", "rollup_pending_rows"];

/// Histograms the service exports beyond the fixed ones.
const EXTRA_HISTOGRAMS: &[&str] = &["rollup_fold_duration_seconds"];

/// The fixed metrics that are histograms, queried through their `_bucket`, `_count` and
/// `_sum` series.
const FIXED_HISTOGRAMS: &[&str] = &[
    "http_request_duration_seconds",
    "nlp_api_duration_seconds",
    "db_write_duration_seconds",
    "kafka_produce_duration_seconds",
    "end_to_end_latency_seconds",
];

#[test]
fn prometheus_scrapes_metrics_from_the_admin_port() {
    let compose = compose();
    let admin_port = compose_settings(&compose).admin.listen.port();
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let job = prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|job| job["job_name"].as_str() == Some(COMPOSE_SERVICE))
        .expect("a scrape job named chat-analytics");
    let path = job["metrics_path"].as_str().unwrap_or("/metrics");
    assert_eq!(path, "/metrics");
    let targets: Vec<&str> = job["static_configs"]
        .as_sequence()
        .expect("static_configs")
        .iter()
        .flat_map(|c| c["targets"].as_sequence().expect("targets").iter())
        .map(|t| t.as_str().expect("target is a string"))
        .collect();
    assert!(!targets.is_empty());
    for target in targets {
        let (host, port) = host_and_port(target);
        assert_eq!(port, admin_port, "target {target} is not the admin port");
        assert!(
            compose["services"].get(host.as_str()).is_some(),
            "{host} is no compose service"
        );
    }
}

#[test]
fn prometheus_loads_the_alert_rules_that_compose_mounts() {
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let rule_files: Vec<&str> = prometheus["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(rule_files, ["alerts.yml"]);
    let compose = compose();
    let mounts = volume_strings(&compose["services"]["prometheus"]);
    for (file, target) in [
        (
            "./deploy/prometheus/prometheus.yml",
            "/etc/prometheus/prometheus.yml",
        ),
        (
            "./deploy/prometheus/alerts.yml",
            "/etc/prometheus/alerts.yml",
        ),
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| m.starts_with(&format!("{file}:{target}"))),
            "prometheus does not mount {file} at {target}: {mounts:?}"
        );
    }
}

#[test]
fn every_alert_has_a_duration_a_severity_and_a_description() {
    let rules = alert_rules();
    assert!(
        rules.len() >= 8,
        "expected the alert set of the brief, got {}",
        rules.len()
    );
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(rule["for"].as_str().is_some(), "{name} has no `for`");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name} severity is {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or("");
            assert!(!text.trim().is_empty(), "{name} has no {annotation}");
        }
    }
}

#[test]
fn alert_rules_query_only_known_metric_names() {
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap_or("?");
        let expr = rule["expr"].as_str().expect("expr");
        assert_known_metrics(expr, &format!("alert {name}"));
    }
}

#[test]
fn dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus datasource variable");
    let var_ref = format!(
        "${{{}}}",
        datasource["name"].as_str().expect("variable name")
    );

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"].as_str(),
            Some(var_ref.as_str()),
            "panel {title}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
    }
}

#[test]
fn dashboard_queries_only_known_metric_names() {
    let exprs = dashboard_exprs();
    assert!(!exprs.is_empty());
    for (title, expr) in exprs {
        assert_known_metrics(&expr, &format!("dashboard panel {title:?}"));
    }
}

#[test]
fn dashboard_charts_every_fixed_metric() {
    let used: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .map(|m| base_metric(&m).to_owned())
        .collect();
    let missing: Vec<&&str> = FIXED_METRICS
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

#[test]
fn metric_name_extraction_ignores_functions_labels_ranges_and_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(foo_bucket{route="/v1/x", a=~"5.."}[$__rate_interval])))
           > 0.05 and on (instance) bar offset 5m unless max without (kind) (baz) > 300e6 or up == 0"#,
    );
    assert_eq!(
        names,
        ["bar", "baz", "foo_bucket", "up"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
}

fn alert_rules() -> Vec<Value> {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .collect()
}

pub(crate) fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("the Grafana dashboard is not valid JSON: {e}"))
}

/// (panel title, PromQL) for every query of every panel, rows' nested panels included.
fn dashboard_exprs() -> Vec<(String, String)> {
    crate::support::dashboard_queries(DASHBOARD)
        .into_iter()
        .map(|query| (query.panel, query.expr))
        .collect()
}

/// A histogram series name back to its metric: `x_seconds_bucket` → `x_seconds`.
fn base_metric(name: &str) -> &str {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if FIXED_HISTOGRAMS.contains(&base) || EXTRA_HISTOGRAMS.contains(&base) {
                return base;
            }
        }
    }
    name
}

fn is_known_metric(name: &str) -> bool {
    FIXED_METRICS.contains(&base_metric(name))
        || EXTRA_METRICS.contains(&name)
        || EXTRA_HISTOGRAMS.contains(&base_metric(name))
        || name == "up"
        || name.starts_with("process_")
}

pub(crate) fn assert_known_metrics(expr: &str, origin: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{origin}: no metric found in {expr}");
    for name in names {
        assert!(
            is_known_metric(&name),
            "{origin}: `{name}` is not a fixed metric name ({expr})"
        );
    }
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (in `{}` or grouping clauses), durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Aggregations may be followed by `by (...)` before their parenthesis.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_past = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|&c| c == close)
            .map_or(chars.len(), |p| from + p + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_past(i + 1, c),
            '{' => i = skip_past(i + 1, '}'),
            '[' => i = skip_past(i + 1, ']'),
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_:".contains(chars[i])) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let is_call = chars.get(next) == Some(&'(');
                if GROUPING.contains(&word.as_str()) {
                    if is_call {
                        i = skip_past(next + 1, ')');
                    }
                } else if word == "offset" {
                    // `offset 5m`: the duration after it is no metric.
                    while next < chars.len() && !chars[next].is_whitespace() {
                        next += 1;
                    }
                    i = next;
                } else if !is_call
                    && !KEYWORDS.contains(&word.to_lowercase().as_str())
                    && !AGGREGATIONS.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}
