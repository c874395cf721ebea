//! The shipped monitoring files against a real Prometheus: Debian's `prometheus` (2.42)
//! runs `deploy/prometheus/prometheus.yml` and `alerts.yml`, with only the scrape targets
//! pointed at this test's stack (the service in-process as `serve`, real Kafka topic, its
//! own database, nlp-sim). Under steady traffic every PromQL expression of the Grafana
//! operations dashboard (`deploy/grafana/chat-analytics.json`) must return data; then an
//! NLP outage injected through nlp-sim must put `ChatAnalyticsCircuitBreakerOpen` into
//! pending (or firing), and it must not have been before the outage.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chat_analytics::app::Role;
use serde_json::{json, Value};
use support::{free_port, metric_value, read_repo_file, scrape, temp_dir, Pipeline, TestApp};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const ALERT_RULES: &str = "deploy/prometheus/alerts.yml";
const DASHBOARD: &str = "deploy/grafana/chat-analytics.json";
/// The scrape job of the service in prometheus.yml, and the one of Prometheus itself.
const SERVICE_JOB: &str = "chat-analytics";
const SELF_JOB: &str = "prometheus";
const BREAKER_ALERT: &str = "ChatAnalyticsCircuitBreakerOpen";
/// What Grafana's interval variables become here: four scrapes of the service's 5 s
/// interval and more, as Grafana's `$__rate_interval` is with its default 15 s.
const RATE_WINDOW: &str = "1m";
const GRAFANA_INTERVALS: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];

// ---------------------------------------------------------------------------------------
// Prometheus as a child process.

/// Debian's `prometheus` binary, found on PATH.
fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`prometheus` is not on PATH: this test runs Debian's Prometheus 2.42 against \
                 the stack. Install Debian's `prometheus` package \
                 (`sudo apt-get install --no-install-recommends prometheus`; .ci/run installs it)"
            )
        })
}

/// `deploy/prometheus/prometheus.yml` with only the targets changed: the service's job
/// scrapes `service_target` (this test's admin listener) instead of `chat-analytics:8081`,
/// and Prometheus's own job scrapes `self_target` (where this Prometheus listens) instead
/// of `localhost:9090`. Job names, labels, intervals and rule_files stay as shipped.
fn test_config(shipped: &str, service_target: &str, self_target: &str) -> String {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(shipped).expect("prometheus.yml is valid YAML");
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .expect("prometheus.yml has a scrape_configs list");
    for (job_name, target) in [(SERVICE_JOB, service_target), (SELF_JOB, self_target)] {
        let matching: Vec<&mut serde_yaml::Value> = jobs
            .iter_mut()
            .filter(|job| job["job_name"].as_str() == Some(job_name))
            .collect();
        let [job] = <[_; 1]>::try_from(matching).unwrap_or_else(|found| {
            panic!(
                "prometheus.yml should have exactly one job `{job_name}`, has {}",
                found.len()
            )
        });
        let static_configs = job["static_configs"]
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("job `{job_name}` has no static_configs list"));
        assert_eq!(
            static_configs.len(),
            1,
            "job `{job_name}`: one static config expected, to point it at the test's target"
        );
        let targets = static_configs[0]["targets"]
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("job `{job_name}`: static config without targets"));
        assert_eq!(
            targets.len(),
            1,
            "job `{job_name}`: one target expected, found {targets:?}"
        );
        targets[0] = serde_yaml::Value::String(target.to_owned());
    }
    serde_yaml::to_string(&config).expect("config serialises")
}

struct Prometheus {
    child: tokio::process::Child,
    base: String,
    dir: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on a free port with the shipped config and rules in a scratch
    /// directory, scraping `service_target`; waits until it is ready.
    async fn start(service_target: &str) -> Prometheus {
        let binary = prometheus_binary();
        let dir = temp_dir("prometheus");
        let listen = format!("127.0.0.1:{}", free_port());
        let config = test_config(&read_repo_file(PROMETHEUS_CONFIG), service_target, &listen);
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        std::fs::copy(support::repo_path(ALERT_RULES), dir.join("alerts.yml"))
            .expect("copy alerts.yml");
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("prometheus log file");
        let child = tokio::process::Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(log_file.try_clone().expect("prometheus log file"))
            .stderr(log_file)
            // Killed with its handle, whichever way the test ends (see Drop below).
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut prometheus = Prometheus {
            child,
            base: format!("http://{listen}"),
            dir,
            log,
            http: reqwest::Client::new(),
        };
        prometheus.wait_ready(Duration::from_secs(30)).await;
        prometheus
    }

    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("prometheus status") {
                panic!(
                    "prometheus exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {within:?}; its log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// GET on the HTTP API; the `data` of a `success` answer, or why there is none.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .expect("a Prometheus API URL");
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("GET {path}: {status}, not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "GET {path}: {status}, {} {}",
                body["errorType"], body["error"]
            ));
        }
        Ok(body["data"].clone())
    }

    /// An instant query's samples (vector or scalar results alike, as (labels, value)).
    async fn query(&self, expr: &str) -> Result<Vec<(Value, String)>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        let sample = |s: &Value| s["value"][1].as_str().unwrap_or("?").to_owned();
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .ok_or("vector result without samples")?
                .iter()
                .map(|s| (s["metric"].clone(), sample(s)))
                .collect()),
            Some("scalar") => Ok(vec![(
                json!({}),
                data["result"][1].as_str().unwrap_or("?").to_owned(),
            )]),
            other => Err(format!("unexpected result type {other:?}: {data}")),
        }
    }

    /// The alerting rule `name` as the rules API shows it (state, health, alerts).
    async fn alert_rule(&self, name: &str) -> Value {
        let data = self
            .api("/api/v1/rules", &[("type", "alert")])
            .await
            .unwrap_or_else(|e| panic!("rules API: {e}; prometheus log:\n{}", self.log_tail()));
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .expect("rules API answers groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| (*r).clone())
            .unwrap_or_else(|| {
                let names: Vec<&Value> = rules.iter().map(|r| &r["name"]).collect();
                panic!("Prometheus has no alerting rule {name}; it loaded {names:?}")
            })
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("kill prometheus");
    }
}

impl Drop for Prometheus {
    /// Kills Prometheus however the test ends; keeps its directory (log, config) when the
    /// test failed.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "prometheus config, log and TSDB kept in {}",
                self.dir.display()
            );
        } else {
            // Best effort: this test's own scratch space.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Traffic.

const TEXTS: [&str; 4] = [
    "I love this, it is wonderful!",
    "this is terrible and I hate it",
    // A moderation hit (config/moderation/spam.txt), for moderation_hits_total.
    "click here for free money",
    "what time does the store open tomorrow",
];

/// Messages posted in the background, one every 100 ms and a batch of 5 every second, so
/// both ingestion routes and every stage downstream have data in any one-minute window.
struct Traffic {
    stop: CancellationToken,
    handle: JoinHandle<BTreeMap<String, usize>>,
}

impl Traffic {
    fn start(app: &TestApp) -> Traffic {
        let (http, api) = (app.http.clone(), app.api.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut answers: BTreeMap<String, usize> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0usize.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped.cancelled() => break,
                }
                let message =
                    |n: usize| json!({"bot_id": format!("bot-{}", n % 20), "text": TEXTS[n % 4]});
                let mut posts = vec![("/v1/messages", message(i))];
                if i % 10 == 0 {
                    let batch: Vec<Value> = (0..5).map(|k| message(i + k)).collect();
                    posts.push(("/v1/messages/batch", json!(batch)));
                }
                for (route, body) in posts {
                    let status = http
                        .post(format!("{api}{route}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("POST {route}: {e}"))
                        .status();
                    *answers.entry(format!("{route} {status}")).or_default() += 1;
                }
            }
            answers
        });
        Traffic { stop, handle }
    }

    /// Stops sending; the answers by route and status.
    async fn stop(self) -> BTreeMap<String, usize> {
        self.stop.cancel();
        self.handle.await.expect("traffic task")
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard's queries.

/// (panel title, refId, PromQL) of every target of every panel, rows' panels included,
/// with Grafana's interval variables replaced by [`RATE_WINDOW`].
fn dashboard_queries() -> Vec<(String, String, String)> {
    let out: Vec<_> = support::dashboard_queries(DASHBOARD)
        .into_iter()
        .map(|query| {
            let mut expr = query.expr;
            for variable in GRAFANA_INTERVALS {
                expr = expr.replace(variable, RATE_WINDOW);
            }
            assert!(
                !expr.contains('$'),
                "panel {:?}: a Grafana variable this test does not render: {expr}",
                query.panel
            );
            (query.panel, query.ref_id, expr)
        })
        .collect();
    assert!(!out.is_empty(), "{DASHBOARD} has no PromQL queries");
    out
}

/// Why a query shows nothing on its panel, or None when it has data: at least one sample
/// that is a number (`NaN`, e.g. a quantile of a histogram with no observations in the
/// window, is a gap in Grafana, not data).
async fn missing_data(prometheus: &Prometheus, expr: &str) -> Option<String> {
    match prometheus.query(expr).await {
        Err(e) => Some(format!("query failed: {e}")),
        Ok(samples) if samples.is_empty() => Some("empty result".into()),
        Ok(samples) => {
            let has_number = samples
                .iter()
                .any(|(_, v)| v.parse::<f64>().is_ok_and(|v| !v.is_nan()));
            (!has_number).then(|| format!("only NaN samples: {samples:?}"))
        }
    }
}

/// Polls every dashboard query until all of them have data (rate() needs two scrapes in
/// its window); panics listing those that still have none after `within`.
async fn wait_for_dashboard_data(prometheus: &Prometheus, within: Duration) {
    let queries = dashboard_queries();
    let deadline = Instant::now() + within;
    loop {
        let mut failing = Vec::new();
        for (title, ref_id, expr) in &queries {
            if let Some(why) = missing_data(prometheus, expr).await {
                failing.push(format!(
                    "  panel {title:?} ({ref_id}): {expr}\n    -> {why}"
                ));
            }
        }
        if failing.is_empty() {
            eprintln!("all {} dashboard queries return data", queries.len());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} dashboard queries ({DASHBOARD}) still return no data after {within:?} \
             of traffic:\n{}",
            failing.len(),
            queries.len(),
            failing.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The breaker alert.

/// The labels alerts.yml gives the rule.
fn rule_labels(name: &str) -> BTreeMap<String, String> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read_repo_file(ALERT_RULES)).expect("alerts.yml is valid YAML");
    let rule = rules["groups"]
        .as_sequence()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .find(|r| r["alert"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("alerts.yml has no alert {name}"));
    rule["labels"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().expect("label name").to_owned(),
                v.as_str().expect("label value").to_owned(),
            )
        })
        .collect()
}

/// One line per poll for the failure message: rule state and its alerts' states.
fn describe(rule: &Value) -> String {
    let alerts: Vec<String> = rule["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{} {}", a["state"], a["labels"]))
        .collect();
    format!(
        "rule {} (health {}, last evaluation {}), alerts {alerts:?}",
        rule["state"], rule["health"], rule["lastEvaluation"]
    )
}

fn is_active(state: &Value) -> bool {
    state == "pending" || state == "firing"
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_with_the_shipped_config_sees_the_dashboard_data_and_the_breaker_alert() {
    let started = std::time::Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let fx = Pipeline::start(3).await;
    let app = fx.spawn(Role::Serve).await;
    let target = app
        .admin
        .strip_prefix("http://")
        .expect("admin base is http://host:port")
        .to_owned();
    let prometheus = Prometheus::start(&target).await;
    progress(&format!(
        "stack up (admin {target}), prometheus at {}",
        prometheus.base
    ));

    // The rewritten job scrapes this stack, with the job name and labels of the file.
    let up = format!(r#"up{{job="{SERVICE_JOB}",service="chat-analytics",instance="{target}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = prometheus.query(&up).await;
        if samples
            .as_ref()
            .is_ok_and(|s| s.iter().any(|(_, v)| v == "1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape the service at {target}: {up} gives {samples:?}; \
             prometheus log:\n{}",
            prometheus.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    progress("target up");

    let traffic = Traffic::start(&app);
    wait_for_dashboard_data(&prometheus, Duration::from_secs(60)).await;
    progress("dashboard queries answered");

    // Before the outage: the rule is loaded and was evaluated after the dashboard's
    // breaker panel had data (so on scraped gauges, not on an empty TSDB), and it is not
    // active.
    let scraped_by = chrono::Utc::now();
    let within = Duration::from_secs(40);
    let deadline = Instant::now() + within;
    let before = loop {
        let rule = prometheus.alert_rule(BREAKER_ALERT).await;
        let evaluated = rule["lastEvaluation"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if rule["health"] == "ok" && evaluated.is_some_and(|t| t > scraped_by) {
            break rule;
        }
        assert!(
            Instant::now() < deadline,
            "{BREAKER_ALERT} not evaluated since {scraped_by} within {within:?}: {}",
            describe(&rule)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let active_before = is_active(&before["state"])
        || before["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| is_active(&a["state"]));
    assert!(
        !active_before,
        "{BREAKER_ALERT} is active before any NLP outage: {}",
        describe(&before)
    );
    progress(&format!("before the outage: {}", describe(&before)));

    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;
    progress("nlp-sim answers 500 to every call");

    let mut expected = rule_labels(BREAKER_ALERT);
    expected.insert("alertname".into(), BREAKER_ALERT.into());
    expected.insert("instance".into(), target.clone());
    let within = Duration::from_secs(90);
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    let alert = loop {
        let rule = prometheus.alert_rule(BREAKER_ALERT).await;
        let line = describe(&rule);
        if seen.last() != Some(&line) {
            progress(&line);
            seen.push(line);
        }
        let active = rule["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| is_active(&a["state"]))
            .cloned();
        if let Some(alert) = active {
            break alert;
        }
        if Instant::now() >= deadline {
            let page = scrape(&app.admin).await;
            panic!(
                "{BREAKER_ALERT} not pending or firing within {within:?} of the NLP outage \
                 (circuit_breaker_state on the admin listener now: {}, \
                 nlp_api_errors_total{{kind=\"status_5xx\"}}: {}); states seen:\n{}",
                metric_value(&page, "circuit_breaker_state"),
                metric_value(&page, r#"nlp_api_errors_total{kind="status_5xx"}"#),
                seen.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let labels: BTreeMap<String, String> = alert["labels"]
        .as_object()
        .expect("alert labels")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        labels, expected,
        "{BREAKER_ALERT} is {} with other labels than alerts.yml gives it for this instance",
        alert["state"]
    );
    progress(&format!("{BREAKER_ALERT} is {}", alert["state"]));

    let answers = traffic.stop().await;
    progress(&format!("traffic: {answers:?}"));
    assert!(
        answers.keys().all(|k| k.ends_with(" 202 Accepted")),
        "the NLP outage does not touch ingestion: every post is accepted, answers {answers:?}"
    );
    prometheus.stop().await;
    fx.finish([app]).await;
}
