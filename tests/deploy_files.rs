//! The deployment files — `Dockerfile`, `docker-compose.yml`, `deploy/prometheus/`,
//! `deploy/grafana/`, `deploy/k8s/` — are run only by people with Docker or Kubernetes,
//! never by `make test`. These tests keep them true to the service: every
//! `CHAT_ANALYTICS__SECTION__KEY` they set must be a setting the service accepts, ports,
//! topic and credentials must agree with the settings, and every metric a dashboard or
//! alert queries must be one of the fixed names of SPEC.md. Renaming a config key or a
//! metric breaks a test here instead of a deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_analytics::config::Settings;
use serde::Deserialize;
use serde_yaml::Value;

/// The metric names fixed by SPEC.md ("Metrics"): dashboards and alerts rely on them.
const FIXED_METRICS: &[&str] = &[
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

/// Metrics the service exports beyond the fixed set.
const EXTRA_METRICS: &[&str] = &["consumer_paused", "http_connections"];

/// The fixed metrics that are histograms, queried through their `_bucket`, `_count` and
/// `_sum` series.
const FIXED_HISTOGRAMS: &[&str] = &[
    "http_request_duration_seconds",
    "nlp_api_duration_seconds",
    "db_write_duration_seconds",
    "kafka_produce_duration_seconds",
    "end_to_end_latency_seconds",
];

const ENV_PREFIX: &str = "CHAT_ANALYTICS__";

/// The compose service running the service itself (`serve`).
const COMPOSE_SERVICE: &str = "chat-analytics";

// ---------------------------------------------------------------------------------------
// docker-compose.yml

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

// ---------------------------------------------------------------------------------------
// deploy/prometheus/

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

// ---------------------------------------------------------------------------------------
// deploy/grafana/

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

// ---------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn runtime_image_ships_config_and_sql_and_exposes_both_ports() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "expected a multi-stage build");
    let runtime = stages.last().expect("a runtime stage");
    let copied: Vec<String> = runtime
        .iter()
        .filter(|(op, args)| op == "COPY" && !args.contains("--from"))
        .map(|(_, args)| args.clone())
        .collect();
    for dir in ["config", "sql"] {
        assert!(
            copied.iter().any(|args| args
                .split_whitespace()
                .next()
                .is_some_and(|src| { src.trim_end_matches('/') == dir })),
            "the runtime stage does not COPY {dir}/: {copied:?}"
        );
    }
    assert!(
        runtime.iter().any(|(op, args)| op == "COPY"
            && args.contains("--from")
            && args.contains("chat-analytics")),
        "the runtime stage does not copy the binary from the builder"
    );

    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, args)| args.split_whitespace().map(|p| p.trim_end_matches("/tcp")))
        .map(|p| p.parse().expect("EXPOSE takes port numbers"))
        .collect();
    let defaults = default_settings();
    for port in [defaults.api.listen.port(), defaults.admin.listen.port()] {
        assert!(
            exposed.contains(&port),
            "port {port} is not exposed: {exposed:?}"
        );
    }

    let entrypoint = instruction(runtime, "ENTRYPOINT").expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint).expect("exec-form ENTRYPOINT");
    assert_eq!(entrypoint, ["chat-analytics"]);
    let user = instruction(runtime, "USER").expect("the runtime stage sets a USER");
    assert!(
        !matches!(user.as_str(), "root" | "0" | "0:0"),
        "runs as root"
    );
}

#[test]
fn builder_stage_copies_every_file_the_sources_include() {
    // `include_str!` of a file outside the copied folders would build here and fail in
    // `docker build`. Test fixtures under tests/ never reach a release build.
    let stages = dockerfile_stages();
    let copied: BTreeSet<String> = stages[0]
        .iter()
        .filter(|(op, args)| op == "COPY" && !args.contains("--from"))
        .flat_map(|(_, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources
                .iter()
                .map(|s| s.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for required in ["Cargo.toml", "Cargo.lock", "src", "crates"] {
        assert!(
            copied.contains(required),
            "the builder does not COPY {required}: {copied:?}"
        );
    }
    let root = repo_path("");
    let sources = [repo_path("src"), repo_path("crates")];
    for (file, included) in sources.iter().flat_map(|dir| included_files(dir)) {
        let relative = included.strip_prefix(&root).unwrap_or_else(|_| {
            panic!(
                "{} includes {} from outside the repository",
                file.display(),
                included.display()
            )
        });
        let top = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        if top == "tests" {
            continue;
        }
        assert!(
            copied.contains(top.as_ref()),
            "{} includes {}, but the builder stage copies only {copied:?}",
            file.display(),
            relative.display()
        );
    }
}

#[test]
fn image_environment_alone_lets_every_subcommand_load_its_settings() {
    // The image also runs `migrate`, `nlp-sim` and `hash-key`: its own ENV must never make
    // the settings invalid (for example by binding the API publicly without keys).
    let stages = dockerfile_stages();
    let runtime = stages.last().expect("a runtime stage");
    let env: Vec<(String, String)> = runtime
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV in KEY=VALUE form");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    assert_names_are_config_keys(&env, "Dockerfile");
    if let Err(err) = Settings::load_from(None, env.clone()) {
        panic!("the image's ENV {env:?} is refused: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// deploy/k8s/

#[test]
fn k8s_manifests_parse_and_deploy_an_ingest_and_a_worker_role() {
    let roles: BTreeSet<String> = k8s_pod_specs("Deployment")
        .iter()
        .flat_map(|(_, spec)| containers(spec))
        .flat_map(|c| command_args(&c))
        .filter(|arg| !arg.starts_with('-') && !arg.contains('/'))
        .collect();
    for role in ["ingest", "worker"] {
        assert!(
            roles.contains(role),
            "no Deployment runs `{role}`: {roles:?}"
        );
    }
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().expect("resources") {
        let file = resource.as_str().expect("resource path");
        assert!(
            repo_path(&format!("deploy/k8s/{file}")).exists(),
            "{file} is listed but missing"
        );
    }
}

#[test]
fn k8s_probes_check_health_and_livez_on_the_admin_port() {
    let admin_port = default_settings().admin.listen.port();
    let deployments = k8s_pod_specs("Deployment");
    assert!(deployments.len() >= 2);
    for (name, spec) in &deployments {
        for container in &containers(spec) {
            for (probe, path) in [("readinessProbe", "/health"), ("livenessProbe", "/livez")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{name} {probe}");
                let port = resolve_port(container, &get["port"]);
                assert_eq!(port, admin_port, "{name} {probe} probes port {port}");
            }
        }
    }
}

#[test]
fn k8s_service_exposes_the_api_and_admin_ports_of_the_ingest_pods() {
    let defaults = default_settings();
    let services = k8s_documents("Service");
    let (_, service) = services.first().expect("a Service");
    let ports: BTreeMap<u64, String> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().expect("port"),
                p["targetPort"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for port in [defaults.api.listen.port(), defaults.admin.listen.port()] {
        assert!(
            ports.contains_key(&u64::from(port)),
            "Service lacks port {port}: {ports:?}"
        );
    }
    let selector = &service["spec"]["selector"];
    let (name, ingest) = k8s_pod_specs("Deployment")
        .into_iter()
        .find(|(_, spec)| {
            containers(spec)
                .iter()
                .any(|c| command_args(c).contains(&"ingest".to_owned()))
        })
        .expect("an ingest Deployment");
    let labels = &ingest["__labels"];
    for (key, value) in selector.as_mapping().expect("selector") {
        assert_eq!(
            &labels[key.as_str().unwrap_or("")],
            value,
            "Service selector misses {name}"
        );
    }
    let container = &containers(&ingest)[0];
    for (port, target) in &ports {
        let resolved = resolve_port(container, &Value::String(target.clone()));
        assert_eq!(u64::from(resolved), *port, "targetPort {target}");
    }
}

#[test]
fn k8s_pods_get_longer_to_stop_than_the_shutdown_grace() {
    for (name, spec) in k8s_pod_specs("Deployment") {
        let env = k8s_container_env(&containers(&spec)[0]);
        let settings = Settings::load_from(None, without_listen(env)).expect("settings");
        let grace_s = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} sets no terminationGracePeriodSeconds"));
        let pre_stop_ms: u64 = containers(&spec)
            .iter()
            .map(pre_stop_sleep_ms)
            .max()
            .unwrap_or(0);
        assert!(
            Duration::from_secs(grace_s)
                > settings.shutdown.grace + Duration::from_millis(pre_stop_ms),
            "{name}: {grace_s} s is not above preStop {pre_stop_ms} ms + shutdown.grace_ms {}",
            settings.shutdown.grace.as_millis()
        );
    }
}

#[test]
fn k8s_dead_letter_dir_is_on_a_writable_volume() {
    for (name, spec) in k8s_pod_specs("Deployment") {
        for container in &containers(&spec) {
            let env = without_listen(k8s_container_env(container));
            let dlq = Settings::load_from(None, env).expect("settings").dlq.dir;
            assert!(
                dlq.is_absolute(),
                "{name}: dlq.dir {} is relative",
                dlq.display()
            );
            let writable = container["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|m| {
                    let mount = m["mountPath"].as_str().unwrap_or("");
                    !mount.is_empty()
                        && dlq.starts_with(mount)
                        && m["readOnly"].as_bool() != Some(true)
                });
            assert!(
                writable,
                "{name}: {} is not on a writable volume",
                dlq.display()
            );
        }
    }
}

#[test]
fn every_k8s_override_is_a_setting_the_service_accepts() {
    let secret = k8s_example_secret();
    let dir = scratch_dir("k8s");
    let mut checked = 0;
    for kind in ["Deployment", "Job"] {
        for (name, spec) in k8s_pod_specs(kind) {
            for container in &containers(&spec) {
                let env = k8s_container_env(container);
                assert_names_are_config_keys(&env, &format!("deploy/k8s {kind} {name}"));
                let args = command_args(container);
                let file = flag_value(&args, "--config").map(|path| {
                    let file_name = Path::new(path).file_name().expect("file name");
                    let content = secret
                        .get(file_name.to_str().expect("utf-8"))
                        .unwrap_or_else(|| panic!("{name}: no example for --config {path}"));
                    let local = dir.join(file_name);
                    std::fs::write(&local, content).expect("write config");
                    local
                });
                if let Err(err) = Settings::load_from(file.as_deref(), env.clone()) {
                    panic!("deploy/k8s {kind} {name}: the service refuses {env:?}: {err}");
                }
                checked += 1;
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        checked >= 3,
        "expected the ingest, worker and migrate containers"
    );
}

// ---------------------------------------------------------------------------------------
// The PromQL metric-name extractor the checks above rely on.

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

// ---------------------------------------------------------------------------------------
// Helpers: reading the files.

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    value.apply_merge().expect("YAML merge keys");
    value
}

fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn default_settings() -> Settings {
    Settings::load_from(None, Vec::new()).expect("the defaults load")
}

/// The settings the compose `chat-analytics` container starts with.
fn compose_settings(compose: &Value) -> Settings {
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

fn our_overrides(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .cloned()
        .collect()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// `command` (or k8s `args`) as a list of arguments.
fn command_args(service: &Value) -> Vec<String> {
    let command = if service["command"].is_null() {
        &service["args"]
    } else {
        &service["command"]
    };
    match command {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
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

fn volume_strings(service: &Value) -> Vec<String> {
    service["volumes"]
        .as_sequence()
        .map_or_else(Vec::new, |v| v.iter().map(scalar).collect())
}

fn host_and_port(authority: &str) -> (String, u16) {
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{authority} has no port"));
    (
        host.to_owned(),
        port.parse()
            .unwrap_or_else(|_| panic!("bad port in {authority}")),
    )
}

fn postgres_config(url: &str) -> tokio_postgres::Config {
    url.parse()
        .unwrap_or_else(|e| panic!("not a postgres URL: {e}"))
}

fn single_host(config: &tokio_postgres::Config) -> String {
    match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
        other => panic!("expected one TCP host, got {other:?}"),
    }
}

/// "30s", "1m30s", "500ms" → milliseconds.
fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            unit => panic!("unknown unit {unit:?} in {text}"),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    total
}

/// `CHAT_ANALYTICS__SECTION__KEY` must name a key present in config/default.toml.
fn assert_names_are_config_keys(env: &[(String, String)], origin: &str) {
    let defaults: toml::Table = toml::from_str(&read("config/default.toml")).expect("default.toml");
    for (name, _) in env {
        let path = name.strip_prefix(ENV_PREFIX).expect("prefixed");
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let found = match parts.as_slice() {
            [section, key] => defaults
                .get(section)
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key(key)),
            _ => false,
        };
        assert!(
            found,
            "{origin}: {name} is not SECTION__KEY of a key in config/default.toml"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Helpers: Prometheus and Grafana.

fn alert_rules() -> Vec<Value> {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/chat-analytics.json"))
        .unwrap_or_else(|e| panic!("the Grafana dashboard is not valid JSON: {e}"))
}

/// (panel title, PromQL) for every query of every panel, rows' nested panels included.
fn dashboard_exprs() -> Vec<(String, String)> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard()["panels"].as_array().expect("panels"), &mut out);
    out
}

/// A histogram series name back to its metric: `x_seconds_bucket` → `x_seconds`.
fn base_metric(name: &str) -> &str {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if FIXED_HISTOGRAMS.contains(&base) {
                return base;
            }
        }
    }
    name
}

fn is_known_metric(name: &str) -> bool {
    FIXED_METRICS.contains(&base_metric(name))
        || EXTRA_METRICS.contains(&name)
        || name == "up"
        || name.starts_with("process_")
}

fn assert_known_metrics(expr: &str, origin: &str) {
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

// ---------------------------------------------------------------------------------------
// Helpers: Dockerfile.

/// The Dockerfile's instructions, one list per stage, as (INSTRUCTION, arguments) with
/// line continuations joined and comments dropped.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.trim().is_empty()) {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let op = op.to_uppercase();
        if op == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((op, args.trim().to_owned()));
        }
    }
    stages
}

/// (source file, absolute path) of every `include_str!`/`include_bytes!` under `dir`.
fn included_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(included_files(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for macro_name in ["include_str!(", "include_bytes!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                let Some(literal) = rest.strip_prefix('"') else {
                    continue;
                };
                let Some(end) = literal.find('"') else {
                    continue;
                };
                let base = path.parent().expect("parent");
                let resolved = normalize(&base.join(&literal[..end]));
                found.push((path.clone(), resolved));
            }
        }
    }
    found
}

/// Resolves `..` and `.` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn instruction(stage: &[(String, String)], op: &str) -> Option<String> {
    stage
        .iter()
        .rev()
        .find(|(o, _)| o == op)
        .map(|(_, args)| args.clone())
}

// ---------------------------------------------------------------------------------------
// Helpers: Kubernetes.

/// Every document of `kind` in deploy/k8s/*.yaml, with the file it came from.
fn k8s_documents(kind: &str) -> Vec<(String, Value)> {
    let dir = repo_path("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = format!(
            "deploy/k8s/{}",
            file.file_name().expect("name").to_string_lossy()
        );
        for doc in yaml_documents(&relative) {
            assert!(
                doc["kind"].as_str().is_some(),
                "{relative}: a document without kind"
            );
            if doc["kind"].as_str() == Some(kind) {
                let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
                found.push((name, doc));
            }
        }
    }
    found
}

/// (name, pod spec) of each workload of `kind`; the pod template's labels are copied into
/// the spec under `__labels` for selector checks.
fn k8s_pod_specs(kind: &str) -> Vec<(String, Value)> {
    k8s_documents(kind)
        .into_iter()
        .map(|(name, doc)| {
            let template = &doc["spec"]["template"];
            let mut spec = template["spec"].clone();
            if let Value::Mapping(map) = &mut spec {
                map.insert("__labels".into(), template["metadata"]["labels"].clone());
            }
            (name, spec)
        })
        .collect()
}

fn containers(spec: &Value) -> Vec<Value> {
    spec["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// A probe or Service port, numeric or named after one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(number) = port.as_u64() {
        return u16::try_from(number).expect("port fits u16");
    }
    let name = port.as_str().expect("port is a number or a name");
    container["ports"]
        .as_sequence()
        .expect("container ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .map(|p| u16::try_from(p).expect("port fits u16"))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// A container's CHAT_ANALYTICS__ environment: its ConfigMaps (envFrom) then its `env`,
/// with values from the example Secret standing in for secretKeyRef.
fn k8s_container_env(container: &Value) -> Vec<(String, String)> {
    let config_maps: BTreeMap<String, Value> = k8s_documents("ConfigMap").into_iter().collect();
    let secret = k8s_example_secret();
    let mut env = Vec::new();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let map = config_maps
                .get(name)
                .unwrap_or_else(|| panic!("no ConfigMap {name}"));
            for (k, v) in map["data"].as_mapping().expect("ConfigMap data") {
                env.push((scalar(k), scalar(v)));
            }
        }
    }
    for var in container["env"].as_sequence().into_iter().flatten() {
        let name = scalar(&var["name"]);
        let value = if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            secret
                .get(key)
                .unwrap_or_else(|| panic!("example Secret lacks {key}"))
                .clone()
        } else {
            scalar(&var["value"])
        };
        env.push((name, value));
    }
    our_overrides(&env)
}

/// The example Secret's `stringData`: the keys the manifests may reference.
fn k8s_example_secret() -> BTreeMap<String, String> {
    let secrets = k8s_documents("Secret");
    let (_, secret) = secrets.first().expect("deploy/k8s has an example Secret");
    secret["stringData"]
        .as_mapping()
        .expect("stringData")
        .iter()
        .map(|(k, v)| (scalar(k), scalar(v)))
        .collect()
}

/// For checks that are about other keys: keeps the API on loopback so the auth rule for
/// public binds does not apply.
fn without_listen(env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| k != "CHAT_ANALYTICS__API__LISTEN")
        .collect()
}

fn pre_stop_sleep_ms(container: &Value) -> u64 {
    let command = &container["lifecycle"]["preStop"]["exec"]["command"];
    let args: Vec<String> = command
        .as_sequence()
        .map_or_else(Vec::new, |c| c.iter().map(scalar).collect());
    match args.as_slice() {
        [] => 0,
        [sleep, seconds] if sleep.ends_with("sleep") => {
            seconds.parse::<u64>().expect("sleep seconds") * 1000
        }
        other => panic!("unrecognised preStop {other:?}: count its time in this test"),
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deploy-files-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
