//! Shared test harness: the real Kafka and Postgres started by `make test`
//! (`scripts/infra.sh up`), a fresh topic per test so tests run in parallel without
//! seeing each other's records, and the service built in-process on port 0.

#![allow(dead_code)] // each test binary uses its own subset of the harness

use std::collections::HashMap;
use std::time::Duration;

use chat_analytics::app::{App, Role};
use chat_analytics::config::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BROKERS: &str = "127.0.0.1:9092";

/// Settings as a deployment would have them, with ports and topic made unique.
pub fn test_settings(topic: &str) -> Settings {
    let mut settings = Settings::load_from(None, Vec::new()).expect("default settings load");
    settings.api.listen = "127.0.0.1:0".into();
    settings.admin.listen = "127.0.0.1:0".into();
    settings.kafka.topic = topic.into();
    settings.shutdown.grace_ms = 3_000;
    settings
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
        let api = format!("http://{}", app.api_addr().expect("api addr"));
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
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set(
            "group.id",
            format!("test-reader-{}", Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
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
