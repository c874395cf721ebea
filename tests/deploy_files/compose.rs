//! docker-compose.yml: the service's container runs with settings it accepts, and
//! talks to the compose Kafka, Postgres and nlp-sim on the ports they listen on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chat_analytics::config::Settings;
use serde_yaml::Value;

use crate::manifest::{
    assert_names_are_config_keys, command_args, default_settings, duration_ms, flag_value,
    host_and_port, our_overrides, postgres_config, scalar, single_host, yaml,
};

/// The compose service running the service itself (`serve`).
pub(crate) const COMPOSE_SERVICE: &str = "chat-analytics";

#[test]
fn every_compose_override_is_a_setting_the_service_accepts() {
    let compose = compose();
    let services = services_running_our_image(&compose);
    assert!(
        services.len() >= 3,
        "expected migrate, nlp-sim and chat-analytics to run the service image, got {services:?}"
    );
    let mut overrides_seen = 0;
    for name in &services {
        let env = our_overrides(&compose_environment(&compose["services"][name.as_str()]));
        overrides_seen += env.len();
        assert_names_are_config_keys(&env, &format!("docker-compose.yml service {name}"));
        if let Err(err) = Settings::load_from(None, env.clone()) {
            panic!("docker-compose.yml service {name}: the service refuses {env:?}: {err}");
        }
    }
    assert!(
        overrides_seen > 0,
        "no CHAT_ANALYTICS__ variable found in docker-compose.yml"
    );
}

#[test]
fn a_misspelt_override_is_refused_so_the_check_above_has_teeth() {
    for name in [
        "CHAT_ANALYTICS__KAFKA__TOPIK",
        "CHAT_ANALYTICS__KAFKAA__TOPIC",
        "CHAT_ANALYTICS__AUTH__ALLOW__ANONYMOUS",
    ] {
        let result = Settings::load_from(None, vec![(name.to_owned(), "x".to_owned())]);
        assert!(result.is_err(), "{name} was accepted");
    }
}

#[test]
fn compose_publishes_the_api_and_admin_ports_the_service_listens_on() {
    let compose = compose();
    let settings = compose_settings(&compose);
    let defaults = default_settings();
    let api = settings.api.listen;
    let admin = settings.admin.listen;
    assert_eq!(
        api.port(),
        defaults.api.listen.port(),
        "API port differs from config default"
    );
    assert_eq!(
        admin.port(),
        defaults.admin.listen.port(),
        "admin port differs from config default"
    );
    assert!(
        api.ip().is_unspecified(),
        "inside a container the API must bind 0.0.0.0, got {api}"
    );
    assert!(
        admin.ip().is_unspecified(),
        "inside a container admin must bind 0.0.0.0, got {admin}"
    );

    let published = published_ports(&compose["services"][COMPOSE_SERVICE]);
    for port in [api.port(), admin.port()] {
        assert_eq!(
            published.get(&port),
            Some(&port),
            "container port {port} must be published on the same host port; published: {published:?}"
        );
    }
}

#[test]
fn compose_points_the_service_at_the_compose_kafka_postgres_and_nlp_sim() {
    let compose = compose();
    let settings = compose_settings(&compose);
    let services = compose["services"].as_mapping().expect("services");
    let has_service = |name: &str| services.contains_key(name);

    for broker in settings.kafka.brokers.split(',') {
        let (host, port) = host_and_port(broker);
        assert!(
            has_service(&host),
            "broker {broker} is not a compose service"
        );
        let advertised = env_value(
            &compose["services"][host.as_str()],
            "KAFKA_ADVERTISED_LISTENERS",
        )
        .expect("kafka advertises its listeners");
        assert!(
            advertised.contains(&format!("://{host}:{port}")),
            "kafka advertises {advertised}, the service connects to {broker}"
        );
    }

    let pg = postgres_config(settings.postgres.url.expose());
    let pg_host = single_host(&pg);
    assert!(
        has_service(&pg_host),
        "postgres host {pg_host} is not a compose service"
    );
    assert_eq!(pg.get_ports(), [5432], "the postgres image listens on 5432");

    let nlp = settings.nlp.url.to_string();
    let nlp = nlp.trim_start_matches("http://");
    let (nlp_authority, nlp_path) = nlp.split_once('/').expect("nlp url has a path");
    assert_eq!(
        nlp_path, "v1/analyze",
        "the NLP contract's path is /v1/analyze"
    );
    let (nlp_host, nlp_port) = host_and_port(nlp_authority);
    assert!(
        has_service(&nlp_host),
        "NLP host {nlp_host} is not a compose service"
    );
    let nlp_command = command_args(&compose["services"][nlp_host.as_str()]);
    let listen = flag_value(&nlp_command, "--listen").expect("nlp-sim is given --listen");
    let listen: SocketAddr = listen.parse().expect("nlp-sim --listen is IP:port");
    assert_eq!(
        listen.port(),
        nlp_port,
        "nlp-sim listens on {listen}, the service calls {nlp}"
    );
    assert!(
        listen.ip().is_unspecified(),
        "nlp-sim must bind 0.0.0.0 to be reachable"
    );
}

#[test]
fn kafka_init_creates_the_topic_the_service_produces_to() {
    let compose = compose();
    let settings = compose_settings(&compose);
    assert_eq!(settings.kafka.topic, default_settings().kafka.topic);

    let init = command_args(&compose["services"]["kafka-init"]);
    assert!(
        init.iter().any(|a| a.ends_with("kafka-topics.sh")),
        "{init:?}"
    );
    assert!(init.iter().any(|a| a == "--create"), "{init:?}");
    assert_eq!(
        flag_value(&init, "--topic"),
        Some(settings.kafka.topic.as_str())
    );
    assert_eq!(
        flag_value(&init, "--bootstrap-server"),
        Some(settings.kafka.brokers.as_str()),
        "kafka-init and the service must talk to the same broker"
    );
    let partitions = flag_value(&init, "--partitions").expect("--partitions");
    let broker_default = env_value(&compose["services"]["kafka"], "KAFKA_NUM_PARTITIONS");
    assert_eq!(
        Some(partitions.to_owned()),
        broker_default,
        "auto-created topics would differ"
    );

    let depends = &compose["services"][COMPOSE_SERVICE]["depends_on"]["kafka-init"]["condition"];
    assert_eq!(depends.as_str(), Some("service_completed_successfully"));
}

#[test]
fn compose_postgres_credentials_match_the_default_url() {
    let compose = compose();
    let postgres = &compose["services"]["postgres"];
    let user = env_value(postgres, "POSTGRES_USER");
    let password = env_value(postgres, "POSTGRES_PASSWORD");
    let db = env_value(postgres, "POSTGRES_DB");

    let settings = compose_settings(&compose);
    let default_settings = default_settings();
    for url in [
        default_settings.postgres.url.expose(),
        settings.postgres.url.expose(),
    ] {
        let pg = postgres_config(url);
        assert_eq!(pg.get_user().map(str::to_owned), user, "user in {url}");
        let pg_password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(pg_password, password, "password in {url}");
        assert_eq!(pg.get_dbname().map(str::to_owned), db, "database in {url}");
    }
}

#[test]
fn compose_gives_the_service_longer_to_stop_than_the_shutdown_grace() {
    let compose = compose();
    let settings = compose_settings(&compose);
    let period = compose["services"][COMPOSE_SERVICE]["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period is set (docker's default, 10 s, is below the drain)");
    assert!(
        u128::from(duration_ms(period)) > settings.shutdown.grace.as_millis(),
        "stop_grace_period {period} must exceed shutdown.grace_ms {}",
        settings.shutdown.grace.as_millis()
    );
}

#[test]
fn compose_keeps_dead_letters_on_a_volume() {
    let compose = compose();
    let dlq = compose_settings(&compose).dlq.dir;
    assert!(
        dlq.is_absolute(),
        "give the container an absolute dlq.dir, got {}",
        dlq.display()
    );
    let mounts = volume_strings(&compose["services"][COMPOSE_SERVICE]);
    let on_volume = mounts.iter().any(|m| {
        let target = m.split(':').nth(1).unwrap_or("");
        !target.is_empty() && dlq.starts_with(target)
    });
    assert!(
        on_volume,
        "{} is not on a volume: {mounts:?}",
        dlq.display()
    );
}

pub(crate) fn compose() -> Value {
    yaml("docker-compose.yml")
}

/// The settings the compose `chat-analytics` container starts with.
pub(crate) fn compose_settings(compose: &Value) -> Settings {
    let env = our_overrides(&compose_environment(&compose["services"][COMPOSE_SERVICE]));
    Settings::load_from(None, env).expect("compose settings load")
}

/// Services that run the image built from this repository's Dockerfile.
fn services_running_our_image(compose: &Value) -> Vec<String> {
    let image = compose["services"][COMPOSE_SERVICE]["image"]
        .as_str()
        .expect("chat-analytics image");
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["image"].as_str() == Some(image) || !s["build"].is_null())
        .map(|(name, _)| name.as_str().expect("service name").to_owned())
        .collect()
}

/// A service's `environment`, in either of compose's two forms (mapping or KEY=VALUE list).
fn compose_environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().expect("env name").to_owned(), scalar(v)))
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|item| {
                let item = item.as_str().expect("KEY=VALUE");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_value(service: &Value, name: &str) -> Option<String> {
    compose_environment(service)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
/// Container port → host port, from compose's short syntax ("[IP:]HOST:CONTAINER[/tcp]").
fn published_ports(service: &Value) -> BTreeMap<u16, u16> {
    service["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            let spec = scalar(p);
            let spec = spec.trim_end_matches("/tcp");
            let mut parts = spec.rsplit(':');
            let container = parts
                .next()
                .expect("container port")
                .parse()
                .expect("port number");
            let host = parts
                .next()
                .map_or(container, |h| h.parse().expect("host port"));
            (container, host)
        })
        .collect()
}

pub(crate) fn volume_strings(service: &Value) -> Vec<String> {
    service["volumes"]
        .as_sequence()
        .map_or_else(Vec::new, |v| v.iter().map(scalar).collect())
}
