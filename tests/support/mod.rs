//! Shared test harness: the real Kafka and Postgres started by `make test`
//! (`scripts/infra.sh up`), a fresh topic per test so tests run in parallel without
//! seeing each other's records, and the service built in-process on port 0.

#![allow(dead_code)] // each test binary uses its own subset of the harness

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use chat_analytics::app::{App, Role};
use chat_analytics::config::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BROKERS: &str = "127.0.0.1:9092";

/// The metric names fixed by SPEC.md ("Metrics"): dashboards and alerts rely on them.
pub const FIXED_METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds",
    "nlp_api_duration_seconds",
    "nlp_api_errors_total",
    "circuit_breaker_state",
    "queue_depth",
    "active_workers",
    "db_write_duration_seconds",
    "kafka_produce_duration_seconds",
    "messages_processed_total",
    "dead_letters_total",
    "moderation_hits_total",
    "component_restarts_total",
    "end_to_end_latency_seconds",
];

/// Settings as a deployment would have them, with ports and topic made unique.
pub fn test_settings(topic: &str) -> Settings {
    let mut settings = Settings::load_from(None, Vec::new()).expect("default settings load");
    settings.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.kafka.topic = topic.into();
    settings.shutdown.grace = Duration::from_secs(3);
    settings
}

/// What an end-to-end test starts with: a topic, database and nlp-sim of its own, and the
/// settings that point an in-process service at them (the topic is `settings.kafka.topic`).
/// Change `settings` before spawning apps; [`Pipeline::finish`] stops the apps and drops the
/// database.
pub struct Pipeline {
    pub db: TestDb,
    pub nlp: NlpSim,
    pub settings: Settings,
}

impl Pipeline {
    /// A topic with `partitions` partitions and nlp-sim answering in about 5 ms.
    pub async fn start(partitions: i32) -> Pipeline {
        let (topic, db, nlp) = (
            create_topic(partitions).await,
            TestDb::create().await,
            NlpSim::start(5).await,
        );
        let mut settings = test_settings(&topic);
        settings.postgres.url = chat_analytics::config::SecretUrl::new(db.url.clone());
        settings.kafka.consumer_group = format!("test-group-{}", Uuid::new_v4().simple());
        settings.nlp.url = nlp.analyze_url().parse().expect("nlp-sim URL");
        settings.dlq.dir = temp_dir("dlq");
        settings.worker.session_timeout = Duration::from_secs(6);
        Pipeline { db, nlp, settings }
    }

    /// The service in `role`, in this process, with this pipeline's settings.
    pub async fn spawn(&self, role: Role) -> TestApp {
        TestApp::spawn(role, self.settings.clone()).await
    }

    /// Environment overrides that point a worker process at this pipeline's topic, group,
    /// database and nlp-sim, with a dead-letter directory of its own and its admin
    /// listener on `admin_port`.
    pub fn worker_env(&self, admin_port: u16) -> Vec<(String, String)> {
        let var = |key: &str, value: String| (format!("CHAT_ANALYTICS__{key}"), value);
        vec![
            var("KAFKA__TOPIC", self.settings.kafka.topic.clone()),
            var(
                "KAFKA__CONSUMER_GROUP",
                self.settings.kafka.consumer_group.clone(),
            ),
            var("POSTGRES__URL", self.db.url.clone()),
            var("NLP__URL", self.nlp.analyze_url()),
            var("DLQ__DIR", temp_dir("dlq").display().to_string()),
            var("ADMIN__LISTEN", format!("127.0.0.1:{admin_port}")),
            var(
                "WORKER__SESSION_TIMEOUT_MS",
                self.settings.worker.session_timeout.as_millis().to_string(),
            ),
        ]
    }

    /// Stops `apps` in order, then drops the database.
    pub async fn finish(self, apps: impl IntoIterator<Item = TestApp>) {
        for app in apps {
            app.stop().await;
        }
        self.db.drop_db().await;
    }
}

/// A unique topic name with `partitions` partitions, created on the real broker.
pub async fn create_topic(partitions: i32) -> String {
    let topic = format!("test.{}", Uuid::new_v4().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic request (is Kafka up? run `scripts/infra.sh up`)");
    for result in results {
        result.expect("topic created");
    }
    topic
}

/// The service running in this process.
pub struct TestApp {
    pub api: String,
    pub admin: String,
    pub topic: String,
    pub shutdown: CancellationToken,
    handle: JoinHandle<()>,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(role: Role, settings: Settings) -> TestApp {
        let shutdown = CancellationToken::new();
        let app = App::build(&settings, role, shutdown.clone())
            .await
            .expect("app builds");
        // A worker-only app has no API listener.
        let api = app
            .api_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let admin = format!("http://{}", app.admin_addr().expect("admin addr"));
        let handle = tokio::spawn(app.run());
        TestApp {
            api,
            admin,
            topic: settings.kafka.topic.clone(),
            shutdown,
            handle,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
        }
    }

    /// POSTs `body` as JSON to `path` on the API listener.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// Posts `n` messages in batches of up to 500, from 50 bots named `{bot_prefix}-N`;
    /// returns the accepted ids.
    pub async fn post_messages(&self, n: usize, bot_prefix: &str) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut sent = 0;
        while sent < n {
            let size = (n - sent).min(500);
            let batch: Vec<_> = (sent..sent + size)
                .map(|i| {
                    serde_json::json!({
                        "bot_id": format!("{bot_prefix}-{}", i % 50),
                        "text": format!("message number {i} is great"),
                    })
                })
                .collect();
            let response = self
                .post("/v1/messages/batch", &serde_json::json!(batch))
                .await;
            assert_eq!(response.status(), 202, "batch accepted");
            let body: serde_json::Value = response.json().await.expect("json");
            ids.extend(
                body["message_ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_str().expect("id").to_owned()),
            );
            sent += size;
        }
        ids
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("app stops within 10s")
            .expect("app task ends cleanly");
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: serde_json::Value,
    pub partition: i32,
    pub offset: i64,
}

/// Reads `topic` from the beginning until `expected` records arrived (or `within` ran
/// out), then keeps reading briefly so duplicates or extras would show up too.
pub async fn read_topic(topic: &str, expected: usize, within: Duration) -> Vec<Record> {
    // Every partition assigned from its start, not subscribed: no group to join, and no
    // rebalance for the close to meet (librdkafka can hang closing a consumer whose group
    // is assigning partitions, its issue 4884). librdkafka's assign still wants a group id.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set(
            "group.id",
            format!("test-reader-{}", Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("partition listed");
    }
    assert!(partitions.count() > 0, "{topic} has partitions");
    consumer.assign(&partitions).expect("assign");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut settle_until: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let until = settle_until.unwrap_or(deadline).min(deadline);
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.recv()).await {
            Ok(Ok(msg)) => {
                records.push(Record {
                    key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: msg
                        .payload()
                        .and_then(|p| serde_json::from_slice(p).ok())
                        .unwrap_or(serde_json::Value::Null),
                    partition: msg.partition(),
                    offset: msg.offset(),
                });
                if records.len() >= expected && settle_until.is_none() {
                    settle_until = Some(tokio::time::Instant::now() + Duration::from_millis(750));
                }
            }
            Ok(Err(err)) => panic!("consumer error: {err}"),
            Err(_) => break,
        }
    }
    records
}

/// Records indexed by `message.message_id`.
pub fn by_message_id(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut map: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in records {
        let id = r.value["message"]["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        map.entry(id).or_default().push(r);
    }
    map
}

pub const PG_ADMIN_URL: &str = "postgres://chat:chat@127.0.0.1:5432/postgres";

/// A database of its own for one test, migrated; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: deadpool_postgres::Pool,
}

static STALE_DBS_DROPPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect("connect to Postgres (is it up? run `scripts/infra.sh up`)");
    tokio::spawn(connection);
    client
}

impl TestDb {
    pub async fn create() -> TestDb {
        // Databases left by an earlier, interrupted run go first (once per test binary).
        STALE_DBS_DROPPED
            .get_or_init(|| async {
                let client = admin_client().await;
                let stale = client
                    .query(
                        // Only those nobody is connected to: another test process on
                        // this machine may be using its own right now.
                        "SELECT datname FROM pg_database d WHERE datname LIKE 'chat_test_%'
                            AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                             WHERE a.datname = d.datname)",
                        &[],
                    )
                    .await
                    .expect("list databases");
                for row in stale {
                    let name: String = row.get(0);
                    drop_database(&client, &name).await;
                }
            })
            .await;
        let name = format!("chat_test_{}", Uuid::new_v4().simple());
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let url = format!("postgres://chat:chat@127.0.0.1:5432/{name}");
        let mut settings = Settings::load_from(None, Vec::new()).expect("defaults");
        settings.postgres.url = chat_analytics::config::SecretUrl::new(url.clone());
        let pool = chat_analytics::storage::connect_pool(&settings.postgres).expect("pool");
        chat_analytics::storage::migrate(&pool)
            .await
            .expect("migrations apply");
        TestDb { name, url, pool }
    }

    /// Migrates as `migrate` does with `settings` (creating `chat_analyst` with its
    /// configured password, the default one on loopback) and logs in as that role.
    pub async fn migrate_and_connect_analyst(&self, settings: &Settings) -> tokio_postgres::Client {
        let password = settings
            .postgres
            .analyst_password()
            .expect("the default password is allowed on loopback");
        chat_analytics::storage::prepare_database(
            &self.pool,
            &settings.storage,
            &settings.partitions,
            password,
        )
        .await
        .expect("migrate");
        let url = format!(
            "postgres://chat_analyst:{}@127.0.0.1:5432/{}",
            password.expose(),
            self.name
        );
        let (analyst, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("chat_analyst logs in with the configured password");
        tokio::spawn(connection);
        analyst
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.pool.get().await.expect("connection");
        client.query_one(sql, &[]).await.expect("query").get(0)
    }

    /// Stored message ids, for exactly-once checks.
    pub async fn message_ids(&self) -> Vec<String> {
        let client = self.pool.get().await.expect("connection");
        client
            .query("SELECT message_id::text FROM messages", &[])
            .await
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Polls until `count(sql)` reaches `expected` or `within` runs out; returns the last count.
    pub async fn wait_for_count(&self, sql: &str, expected: i64, within: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let n = self.count(sql).await;
            if n >= expected || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `messages` holds `expected` rows; returns the last count.
    pub async fn wait_for_messages(&self, expected: i64, within: Duration) -> i64 {
        self.wait_for_count("SELECT count(*) FROM messages", expected, within)
            .await
    }

    /// Every accepted id is stored, each once, and nothing else is.
    pub async fn assert_stored_exactly_once(&self, accepted: &[String]) {
        let stored = self.message_ids().await;
        let unique: HashSet<&String> = stored.iter().collect();
        assert_eq!(unique.len(), stored.len(), "no message stored twice");
        let expected: HashSet<&String> = accepted.iter().collect();
        assert_eq!(unique, expected, "stored ids are exactly the accepted ids");
    }

    /// Waits until every accepted id is stored, then checks that each is stored once.
    pub async fn assert_all_stored_once(&self, accepted: &[String], within: Duration) {
        let n = self.wait_for_messages(accepted.len() as i64, within).await;
        assert_eq!(n, accepted.len() as i64, "every accepted message stored");
        self.assert_stored_exactly_once(accepted).await;
    }

    pub async fn drop_db(self) {
        self.pool.close();
        drop_database(&admin_client().await, &self.name).await;
    }
}

/// Drops a test database. Clean-up, not the behaviour under test: an autovacuum worker
/// (which a non-superuser's `WITH (FORCE)` cannot end) only delays it, and a database
/// that still cannot be dropped is removed by the next run's stale clean-up.
async fn drop_database(client: &tokio_postgres::Client, name: &str) {
    for _ in 0..20 {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        match client.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e) => {
                eprintln!("drop database {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    eprintln!("database {name} left for the next run's clean-up");
}

/// A free loopback port (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process of the real binary, killed on drop if still running.
pub struct ChildProcess {
    pub child: tokio::process::Child,
    pub name: &'static str,
    log_path: std::path::PathBuf,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // A failing test names the log that says why.
        if std::thread::panicking() {
            eprintln!("{}'s log: {}", self.name, self.log_path.display());
        }
    }
}

impl ChildProcess {
    pub fn spawn(name: &'static str, args: &[&str], env: &[(String, String)]) -> ChildProcess {
        let log_path = scratch_dir().join(format!("{name}-{}.log", Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-analytics"))
            .args(args)
            .envs(env.iter().cloned())
            .env("CHAT_ANALYTICS__LOG__LEVEL", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chat-analytics");
        ChildProcess {
            child,
            name,
            log_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("running child has a pid")
    }

    /// Sends `signal` (e.g. "TERM", "KILL") through kill(1).
    pub async fn signal(&self, signal: &str) {
        let status = tokio::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    pub async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {within:?}", self.name))
            .expect("wait")
    }
}

/// Waits until `url` answers 200.
pub async fn wait_until_ready(url: &str, within: Duration) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reference NLP server as a child process, with fault knobs over HTTP.
pub struct NlpSim {
    pub process: ChildProcess,
    pub base: String,
}

impl NlpSim {
    pub async fn start(latency_ms: u64) -> NlpSim {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let latency = latency_ms.to_string();
        let process = ChildProcess::spawn(
            "nlp-sim",
            &["nlp-sim", "--listen", &listen, "--latency-ms", &latency],
            &[],
        );
        let base = format!("http://{listen}");
        wait_until_ready(&format!("{base}/health"), Duration::from_secs(20)).await;
        NlpSim { process, base }
    }

    pub fn analyze_url(&self) -> String {
        format!("{}/v1/analyze", self.base)
    }

    pub async fn set_faults(&self, faults: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/admin/faults", self.base))
            .json(&faults)
            .send()
            .await
            .expect("faults request");
        assert_eq!(r.status(), 200, "nlp-sim accepted {faults}");
    }
}

/// Reads one sample from a /metrics page, named exactly as it appears there, labels and
/// all (`name{label="value"}`); 0 when the page has no such line.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| *name == series)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

pub async fn scrape(admin_base: &str) -> String {
    reqwest::get(format!("{admin_base}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// Scrapes `admin_base` until `series` reaches `at_least`; returns that page. Panics with
/// `what` if it has not within `within`.
pub async fn wait_for_metric(
    admin_base: &str,
    series: &str,
    at_least: f64,
    within: Duration,
    what: &str,
) -> String {
    wait_for_page(admin_base, within, what, |page| {
        metric_value(page, series) >= at_least
    })
    .await
}

/// Scrapes `/metrics` until `done` holds for the page, which it returns; panics with
/// `what` after `within`.
pub async fn wait_for_page(
    admin_base: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let page = scrape(admin_base).await;
        if done(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where this test run's scratch files go: under cargo's `target/tmp`, which `make test`
/// empties when it starts, so a failed run's logs stay to be read and nothing piles up in
/// the machine's temporary directory run after run.
fn scratch_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-analytics-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A fresh scratch directory (dead letters, reports).
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = scratch_dir().join(format!("{label}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A file of this repository by its path from the root.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The text of a file of this repository.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One query of a Grafana dashboard's panel.
pub struct DashboardQuery {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// Every query of every panel of the dashboard at `relative`, rows' nested panels
/// included, as written (Grafana's variables not rendered).
pub fn dashboard_queries(relative: &str) -> Vec<DashboardQuery> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<DashboardQuery>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(DashboardQuery {
                        panel: title.to_owned(),
                        ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                        expr: expr.to_owned(),
                    });
                }
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read_repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"));
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{relative} has no panels")),
        &mut out,
    );
    out
}
