//! Keeps `docs/openapi.yaml` true: every status code it documents for an operation is
//! produced by the real server, every status the server gives is documented, and
//! bodies carry the documented required properties and headers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use chat_analytics::app::Role;
use chat_analytics::config::{ApiKeySettings, PerBotLimit};
use chat_analytics::ingest::hash_key;
use serde_json::{json, Value};
use support::{create_topic, test_settings, TestApp};

const KEY: &str = "openapi-test-key";

type Operation = (String, String);

struct Observed {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Option<Value>,
}

#[derive(Default)]
struct Observations(BTreeMap<Operation, BTreeMap<u16, Observed>>);

impl Observations {
    async fn record(&mut self, path: &str, method: &str, response: reqwest::Response) {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let is_json = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = if is_json {
            Some(response.json().await.expect("declared JSON is JSON"))
        } else {
            None
        };
        self.0
            .entry((path.to_owned(), method.to_owned()))
            .or_default()
            .insert(
                status,
                Observed {
                    status,
                    headers,
                    body,
                },
            );
    }
}

fn load_spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml exists");
    serde_yaml::from_str(&text).expect("openapi.yaml is valid YAML")
}

fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let path = reference.trim_start_matches("#/");
            let target = path.split('/').fold(spec, |n, part| &n[part]);
            assert!(!target.is_null(), "dangling $ref {reference}");
            resolve(spec, target)
        }
        None => node,
    }
}

fn documented(spec: &Value) -> BTreeMap<Operation, BTreeSet<u16>> {
    let mut ops = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let codes = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|c| c.parse::<u16>().expect("numeric status"))
                .collect();
            ops.insert((path.clone(), method.to_uppercase()), codes);
        }
    }
    ops
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: String,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}{path}", app.api))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("sent")
}

/// Drives each documented situation against real servers.
async fn observe_everything() -> Observations {
    let mut seen = Observations::default();
    let topic = create_topic(1).await;

    // A normal deployment with API keys.
    let mut keyed = test_settings(&topic);
    keyed.auth.keys = vec![ApiKeySettings {
        name: "test".into(),
        sha256: hash_key(KEY).parse().expect("hex digest"),
        bot_ids: vec!["*".into()],
    }];
    let app = TestApp::spawn(Role::Ingest, keyed).await;
    let one = json!({"bot_id": "b1", "text": "hi"});
    let huge = json!({"bot_id": "b1", "text": "x".repeat(70_000)}).to_string();
    for (path, ok_body) in [
        ("/v1/messages", one.to_string()),
        ("/v1/messages/batch", json!([one, one]).to_string()),
    ] {
        let k = Some(KEY);
        seen.record(
            path,
            "POST",
            post_raw(&app, path, "application/json", ok_body.clone(), k).await,
        )
        .await;
        seen.record(
            path,
            "POST",
            post_raw(&app, path, "application/json", "{".into(), k).await,
        )
        .await;
        seen.record(
            path,
            "POST",
            post_raw(&app, path, "application/json", ok_body.clone(), None).await,
        )
        .await;
        seen.record(
            path,
            "POST",
            post_raw(&app, path, "application/json", huge.clone(), k).await,
        )
        .await;
        seen.record(
            path,
            "POST",
            post_raw(&app, path, "text/plain", ok_body, k).await,
        )
        .await;
    }
    for path in ["/health", "/livez"] {
        let r = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .expect("sent");
        seen.record(path, "GET", r).await;
    }
    let r = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("sent");
    seen.record("/metrics", "GET", r).await;
    app.stop().await;

    // Overload: a per-bot rate limit of 1/s, and a batch larger than the in-flight cap.
    let mut tight = test_settings(&topic);
    tight.api.per_bot_limit = Some(PerBotLimit {
        rate: NonZeroU32::MIN,
        burst: NonZeroU32::MIN,
    });
    tight.kafka.max_in_flight = NonZeroUsize::new(10).expect("not zero");
    let app = TestApp::spawn(Role::Ingest, tight).await;
    let first = app.post("/v1/messages", &one).await;
    assert_eq!(first.status(), 202);
    // The bucket refills one token a second: a few quick posts hit the limit even on a
    // slow machine.
    for _ in 0..5 {
        let r = app.post("/v1/messages", &one).await;
        let limited = r.status() == 429;
        seen.record("/v1/messages", "POST", r).await;
        if limited {
            break;
        }
    }
    let wide: Vec<_> = (0..10)
        .map(|i| json!({"bot_id": format!("w{i}"), "text": "x"}))
        .collect();
    seen.record(
        "/v1/messages/batch",
        "POST",
        app.post("/v1/messages/batch", &json!(wide)).await,
    )
    .await;
    app.stop().await;

    // Kafka unreachable.
    let mut down = test_settings(&topic);
    down.kafka.brokers = "127.0.0.1:1".into();
    down.kafka.publish_timeout = Duration::from_millis(500);
    let app = TestApp::spawn(Role::Ingest, down).await;
    for path in ["/v1/messages", "/v1/messages/batch"] {
        let body = if path.ends_with("batch") {
            json!([one])
        } else {
            one.clone()
        };
        seen.record(path, "POST", app.post(path, &body).await).await;
    }
    let r = app
        .http
        .get(format!("{}/health", app.api))
        .send()
        .await
        .expect("sent");
    seen.record("/health", "GET", r).await;
    app.stop().await;
    seen
}

#[tokio::test]
async fn openapi_documents_exactly_the_statuses_the_server_answers() {
    let spec = load_spec();
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let documented = documented(&spec);
    let seen = observe_everything().await;

    let observed: BTreeMap<Operation, BTreeSet<u16>> = seen
        .0
        .iter()
        .map(|(op, by_status)| (op.clone(), by_status.keys().copied().collect()))
        .collect();
    assert_eq!(
        observed, documented,
        "server statuses (left) and docs/openapi.yaml (right) disagree"
    );

    for ((path, method), by_status) in &seen.0 {
        let op = &spec["paths"][path][method.to_lowercase()];
        for observed in by_status.values() {
            let response = resolve(&spec, &op["responses"][observed.status.to_string()]);
            if let Some(headers) = response["headers"].as_object() {
                for name in headers.keys() {
                    assert!(
                        observed.headers.contains_key(name.as_str()),
                        "{method} {path} {} lacks documented header {name}",
                        observed.status
                    );
                }
            }
            let schema = &response["content"]["application/json"]["schema"];
            if schema.is_null() {
                continue;
            }
            let schema = resolve(&spec, schema);
            let body = observed.body.as_ref().unwrap_or_else(|| {
                panic!(
                    "{method} {path} {} documents JSON but sent none",
                    observed.status
                )
            });
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().expect("property name");
                assert!(
                    body.get(key).is_some(),
                    "{method} {path} {}: body {body} lacks required {key}",
                    observed.status
                );
            }
            if let Some(inner) = schema["properties"]["error"].as_object() {
                for required in inner["required"].as_array().into_iter().flatten() {
                    let key = required.as_str().expect("property name");
                    assert!(body["error"].get(key).is_some(), "{body} lacks error.{key}");
                }
            }
        }
    }
}
