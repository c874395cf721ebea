//! The deployment files — `Dockerfile`, `docker-compose.yml`, `deploy/prometheus/`,
//! `deploy/grafana/`, `deploy/k8s/` — are run only by people with Docker or Kubernetes,
//! never by `make test` (which only validates the Kubernetes manifests offline:
//! scripts/validate-k8s.sh). These tests keep them true to the service: every
//! `CHAT_ANALYTICS__SECTION__KEY` they set must be a setting the service accepts, ports,
//! topic and credentials must agree with the settings, and every metric a dashboard or
//! alert queries must be one of the fixed names of SPEC.md. Renaming a config key or a
//! metric breaks a test here instead of a deployment.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_analytics::config::Settings;
use serde::Deserialize;
use serde_yaml::Value;
use support::{read_repo_file as read, repo_path, FIXED_METRICS};

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
// deploy/k8s/: the base (deploy/k8s/base), the two worker autoscaling overlays, the
// prometheus-adapter rules and the dead-letter replay Job. scripts/validate-k8s.sh checks
// that Kubernetes and KEDA accept them; these tests check them against the service.

#[test]
fn k8s_manifests_parse_and_deploy_an_ingest_and_a_worker_role() {
    let roles = |kind: &str| -> BTreeSet<String> {
        k8s_pod_specs(kind)
            .iter()
            .flat_map(|(_, spec)| containers(spec))
            .flat_map(|c| command_args(&c))
            .filter(|arg| !arg.starts_with('-') && !arg.contains('/'))
            .collect()
    };
    assert!(
        roles("Deployment").contains("ingest"),
        "no Deployment runs `ingest`"
    );
    assert!(
        roles("StatefulSet").contains("worker"),
        "no StatefulSet runs `worker`"
    );
    assert!(
        !roles("Deployment").contains("worker"),
        "the worker runs as a StatefulSet only (its dead letters are on its claim)"
    );
    for kustomization in k8s_kustomizations() {
        let dir = kustomization.parent().expect("parent").to_owned();
        let doc = yaml(&relative_to_repo(&kustomization));
        for resource in doc["resources"].as_sequence().expect("resources") {
            let path = dir.join(resource.as_str().expect("resource path"));
            assert!(
                path.exists(),
                "{}: {} is listed but missing",
                kustomization.display(),
                path.display()
            );
        }
    }
}

#[test]
fn k8s_probes_check_health_and_livez_on_the_admin_port() {
    let admin_port = default_settings().admin.listen.port();
    let workloads = k8s_workloads();
    assert!(workloads.len() >= 2);
    for (name, spec) in &workloads {
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
    let (name, ingest) = k8s_pod_specs("Deployment")
        .into_iter()
        .find(|(_, spec)| {
            containers(spec)
                .iter()
                .any(|c| command_args(c).contains(&"ingest".to_owned()))
        })
        .expect("an ingest Deployment");
    let labels = &ingest["__labels"];
    let services = k8s_documents("Service");
    let (_, service) = services
        .iter()
        .find(|(_, s)| selects(&s["spec"]["selector"], labels))
        .expect("a Service selecting the ingest pods");
    assert_ne!(
        service["spec"]["clusterIP"].as_str(),
        Some("None"),
        "the ingest Service balances connections"
    );
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
    let container = &containers(&ingest)[0];
    for (port, target) in &ports {
        let resolved = resolve_port(container, &Value::String(target.clone()));
        assert_eq!(u64::from(resolved), *port, "{name}: targetPort {target}");
    }
}

#[test]
fn k8s_pods_get_longer_to_stop_than_the_pre_stop_hook_and_the_shutdown_grace() {
    for (name, spec) in k8s_workloads() {
        let env = k8s_container_env(&containers(&spec)[0]);
        let settings = Settings::load_from(None, without_listen(env)).expect("settings");
        let grace_s = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} sets no terminationGracePeriodSeconds"));
        let pre_stop_ms: u64 = containers(&spec).iter().map(pre_stop_ms).max().unwrap_or(0);
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
    for (name, spec) in k8s_workloads() {
        for container in &containers(&spec) {
            let env = without_listen(k8s_container_env(container));
            let dlq = Settings::load_from(None, env).expect("settings").dlq.dir;
            assert!(
                dlq.is_absolute(),
                "{name}: dlq.dir {} is relative",
                dlq.display()
            );
            let mount = mount_holding(container, &dlq)
                .unwrap_or_else(|| panic!("{name}: {} is on no volume", dlq.display()));
            assert_ne!(
                mount["readOnly"].as_bool(),
                Some(true),
                "{name}: {} is on a read-only volume",
                dlq.display()
            );
        }
    }
}

#[test]
fn the_worker_keeps_its_dead_letters_on_a_claim_of_its_own_that_outlives_it() {
    let (name, set) = k8s_worker_statefulset();
    let spec = &set["spec"];
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let retention = &spec["persistentVolumeClaimRetentionPolicy"];
    for when in ["whenScaled", "whenDeleted"] {
        assert_eq!(
            retention[when].as_str(),
            Some("Retain"),
            "{name}: a claim deleted {when} would delete dead letters answered 202"
        );
    }

    // dlq.dir is on a claim from the volumeClaimTemplates, not on a pod volume.
    let pod = &spec["template"]["spec"];
    let container = &containers(pod)[0];
    let env = without_listen(k8s_container_env(container));
    let dlq = Settings::load_from(None, env).expect("settings").dlq.dir;
    let mount = mount_holding(container, &dlq).expect("dlq.dir is mounted");
    let volume = mount["name"].as_str().expect("mount name");
    let is_pod_volume = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|v| v["name"].as_str() == Some(volume));
    assert!(
        !is_pod_volume,
        "{name}: {} is on pod volume {volume}, lost with the pod",
        dlq.display()
    );
    let template = spec["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates")
        .iter()
        .find(|t| t["metadata"]["name"].as_str() == Some(volume))
        .unwrap_or_else(|| panic!("{name}: no volumeClaimTemplate named {volume}"));
    let modes: Vec<String> = template["spec"]["accessModes"]
        .as_sequence()
        .expect("accessModes")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(modes, ["ReadWriteOnce"], "{name}: one claim per pod");
    assert!(
        template["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .is_some(),
        "{name}: the claim requests no storage"
    );

    // The StatefulSet's serviceName is a headless Service of its pods, and a PDB covers them.
    let labels = &pod_labels(&set);
    let service_name = spec["serviceName"].as_str().expect("serviceName");
    let services = k8s_documents("Service");
    let (_, service) = services
        .iter()
        .find(|(n, _)| n == service_name)
        .unwrap_or_else(|| panic!("no Service {service_name} for the StatefulSet"));
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    assert!(selects(&service["spec"]["selector"], labels));
    assert!(
        k8s_documents("PodDisruptionBudget")
            .iter()
            .any(|(_, pdb)| selects(&pdb["spec"]["selector"]["matchLabels"], labels)),
        "no PodDisruptionBudget covers the workers"
    );
}

#[test]
fn the_worker_waits_for_its_dead_letters_to_be_replayed_before_it_stops() {
    let (name, set) = k8s_worker_statefulset();
    let admin_port = default_settings().admin.listen.port();
    let container = &containers(&set["spec"]["template"]["spec"])[0];
    let get = &container["lifecycle"]["preStop"]["httpGet"];
    let path = get["path"]
        .as_str()
        .expect("the worker's preStop is an httpGet");
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    assert_eq!(route, "/dead-letters/drained", "{name}");
    let wait: u64 = query
        .strip_prefix("wait_secs=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name}: {path} sets no wait_secs"));
    assert!(
        (1..=DRAIN_WAIT_MAX_SECS).contains(&wait),
        "{name}: wait_secs={wait} is not a wait the endpoint honours"
    );
    assert_eq!(resolve_port(container, &get["port"]), admin_port, "{name}");
    // That the grace period covers it: k8s_pods_get_longer_to_stop_than_the_pre_stop_hook….
}

#[test]
fn the_replay_job_is_run_by_hand_and_never_rereads_its_own_output() {
    // Not reachable from the base: applying the base must not run it.
    for kustomization in k8s_kustomizations() {
        let doc = yaml(&relative_to_repo(&kustomization));
        let dir = kustomization.parent().expect("parent");
        if dir.ends_with("jobs") {
            continue;
        }
        for resource in doc["resources"].as_sequence().expect("resources") {
            let path = normalize(&dir.join(resource.as_str().expect("path")));
            assert!(
                !path.starts_with(repo_path(K8S_JOBS)),
                "{} applies the replay Job",
                kustomization.display()
            );
        }
    }

    let job = yaml_documents(K8S_REPLAY_JOB)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Job"))
        .expect("a Job");
    assert_eq!(job["spec"]["backoffLimit"].as_u64(), Some(0));
    let pod = &job["spec"]["template"]["spec"];
    let all = all_containers(pod);
    let dlq_command = |sub: &str| {
        all.iter()
            .find_map(|c| {
                let args = command_args(c);
                (args.len() == 3 && args[0] == "dlq" && args[1] == sub)
                    .then(|| (c.clone(), PathBuf::from(&args[2])))
            })
            .unwrap_or_else(|| panic!("no container runs `dlq {sub} PATH`"))
    };
    let (stats, stats_path) = dlq_command("stats");
    let (replay, replayed) = dlq_command("replay");
    assert_eq!(stats_path, replayed, "stats and replay read the same place");
    assert!(
        pod["initContainers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == stats["name"]),
        "`dlq stats` runs first, as an init container"
    );

    // The replayed directory is the claim a worker wrote, mounted where the worker has it.
    let worker_dlq = {
        let (_, set) = k8s_worker_statefulset();
        let container = &containers(&set["spec"]["template"]["spec"])[0];
        let env = without_listen(k8s_container_env(container));
        Settings::load_from(None, env).expect("settings").dlq.dir
    };
    assert_eq!(replayed, worker_dlq);
    let claim_volume = |container: &Value| {
        let mount = mount_holding(container, &replayed).expect("the replayed dir is mounted");
        let volume = mount["name"].as_str().expect("mount name").to_owned();
        let source = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(volume.as_str()))
            .expect("the mount's volume");
        let claim = source["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or_else(|| panic!("{volume} is not a PersistentVolumeClaim"))
            .to_owned();
        (
            mount["mountPath"].as_str().expect("mountPath").to_owned(),
            claim,
        )
    };
    let (mount_path, claim) = claim_volume(&replay);
    assert_eq!(claim_volume(&stats).1, claim);
    let (_, set) = k8s_worker_statefulset();
    let template = set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("claim template name");
    let set_name = set["metadata"]["name"].as_str().expect("name");
    assert!(
        claim.starts_with(&format!("{template}-{set_name}-")),
        "{claim} is not the name pattern of the worker's claims ({template}-{set_name}-N)"
    );

    // Messages that fail again go below the replayed directory, on the same claim.
    let env = k8s_container_env(&replay);
    assert_names_are_config_keys(&env, K8S_REPLAY_JOB);
    let failures = Settings::load_from(None, without_listen(env))
        .expect("the replay Job's settings")
        .dlq
        .dir;
    assert!(
        failures.starts_with(&replayed) && failures != replayed,
        "`dlq replay` would write its failures ({}) where it reads ({})",
        failures.display(),
        replayed.display()
    );
    assert!(failures.starts_with(&mount_path), "failures off the claim");

    // ...where neither the worker's automatic replay nor `dlq replay DIR` looks.
    let dir = scratch_dir("replay-failures");
    let below = dir.join(failures.strip_prefix(&replayed).expect("below"));
    std::fs::create_dir_all(&below).expect("mkdir");
    std::fs::write(below.join("dead-letters-2026-01-01.jsonl"), "{}\n").expect("write");
    std::fs::write(dir.join("dead-letters-2026-01-02.jsonl"), "{}\n").expect("write");
    let found = chat_analytics::deadletter::dead_letter_files(&dir).expect("list");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        found,
        [dir.join("dead-letters-2026-01-02.jsonl")],
        "a file in a subdirectory would be replayed"
    );
}

#[test]
fn each_autoscaling_overlay_adds_one_worker_autoscaler_that_owns_the_worker_count() {
    let (_, set) = k8s_worker_statefulset();
    let set_name = set["metadata"]["name"].as_str().expect("name").to_owned();
    assert!(
        k8s_autoscalers(K8S_BASE)
            .iter()
            .all(|(_, doc)| scale_target(doc) != ("StatefulSet".to_owned(), set_name.clone())),
        "the base scales the worker: it would fight the overlays' autoscalers"
    );
    for (overlay, kind) in [
        (K8S_KEDA, "ScaledObject"),
        (K8S_PROMETHEUS_ADAPTER, "HorizontalPodAutoscaler"),
    ] {
        let kustomization = yaml(&format!("{overlay}/kustomization.yaml"));
        let resources: Vec<&str> = kustomization["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            resources.contains(&"../../base"),
            "{overlay}: {resources:?}"
        );
        let scalers = k8s_autoscalers(overlay);
        assert_eq!(
            scalers.len(),
            1,
            "{overlay}: one autoscaler, for the worker"
        );
        let (name, scaler) = &scalers[0];
        assert_eq!(scaler["kind"].as_str(), Some(kind), "{overlay}");
        assert_eq!(
            scale_target(scaler),
            ("StatefulSet".to_owned(), set_name.clone()),
            "{overlay}: {name} scales something else"
        );
        // The StatefulSet's own replica count goes: it would reset the autoscaler's at
        // every apply.
        let drops_replicas = kustomization["patches"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| {
                p["target"]["kind"].as_str() == Some("StatefulSet")
                    && p["target"]["name"].as_str() == Some(set_name.as_str())
                    && p["patch"].as_str().is_some_and(|text| {
                        let ops: Value = serde_yaml::from_str(text).expect("JSON patch");
                        ops.as_sequence().into_iter().flatten().any(|op| {
                            op["op"].as_str() == Some("remove")
                                && op["path"].as_str() == Some("/spec/replicas")
                        })
                    })
            });
        assert!(drops_replicas, "{overlay} keeps the StatefulSet's replicas");
    }
}

#[test]
fn autoscalers_stay_within_the_partitions_and_scale_down_slowly() {
    let partitions = topic_partitions();
    let (_, set) = k8s_worker_statefulset();
    let set_name = set["metadata"]["name"].as_str().expect("name").to_owned();
    let mut worker_scalers = 0;
    for dir in [K8S_BASE, K8S_KEDA, K8S_PROMETHEUS_ADAPTER] {
        for (name, doc) in k8s_autoscalers(dir) {
            let spec = &doc["spec"];
            let (min, max, behavior) = if doc["kind"].as_str() == Some("ScaledObject") {
                (
                    spec["minReplicaCount"].as_u64(),
                    spec["maxReplicaCount"].as_u64(),
                    &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
                )
            } else {
                (
                    spec["minReplicas"].as_u64(),
                    spec["maxReplicas"].as_u64(),
                    &spec["behavior"],
                )
            };
            let min = min.unwrap_or_else(|| panic!("{dir} {name}: no minimum"));
            let max = max.unwrap_or_else(|| panic!("{dir} {name}: no maximum"));
            assert!(
                (2..=max).contains(&min),
                "{dir} {name}: min {min}, max {max}"
            );
            let window = behavior["scaleDown"]["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap_or_else(|| panic!("{dir} {name}: no scale-down stabilisation"));
            if scale_target(&doc) == ("StatefulSet".to_owned(), set_name.clone()) {
                worker_scalers += 1;
                assert!(
                    max <= u64::from(partitions),
                    "{dir} {name}: {max} workers for {partitions} partitions: some would idle"
                );
                // Each step is a consumer-group rebalance.
                assert!(
                    window >= 600,
                    "{dir} {name}: {window} s of scale-down stabilisation would thrash rebalances"
                );
            } else {
                assert!(window >= 60, "{dir} {name}: {window} s");
            }
        }
    }
    assert_eq!(
        worker_scalers, 2,
        "the KEDA and the prometheus-adapter variant"
    );
}

#[test]
fn the_keda_trigger_reads_the_lag_of_the_workers_group_and_topic() {
    let (_, set) = k8s_worker_statefulset();
    let container = &containers(&set["spec"]["template"]["spec"])[0];
    let settings = Settings::load_from(None, without_listen(k8s_container_env(container)))
        .expect("the worker's settings");
    let scalers = k8s_autoscalers(K8S_KEDA);
    let (name, scaler) = scalers.first().expect("a ScaledObject");
    let triggers = scaler["spec"]["triggers"].as_sequence().expect("triggers");
    assert_eq!(triggers.len(), 1, "{name}: one trigger, the lag");
    let trigger = &triggers[0];
    assert_eq!(trigger["type"].as_str(), Some("kafka"));
    let meta = |key: &str| {
        trigger["metadata"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: kafka trigger without {key}"))
    };
    assert_eq!(meta("bootstrapServers"), settings.kafka.brokers);
    assert_eq!(meta("consumerGroup"), settings.kafka.consumer_group);
    assert_eq!(meta("topic"), settings.kafka.topic);
    assert_eq!(
        meta("allowIdleConsumers"),
        "false",
        "idle consumers are replicas beyond the partitions"
    );
    assert_eq!(
        meta("offsetResetPolicy"),
        worker_offset_reset(),
        "a partition without a committed offset must count as the worker will read it"
    );
    let threshold: u64 = meta("lagThreshold").parse().expect("lagThreshold");
    assert!(threshold > 0);
    // The prometheus-adapter variant aims at the same lag per worker.
    let hpas = k8s_autoscalers(K8S_PROMETHEUS_ADAPTER);
    let (_, hpa) = hpas.first().expect("the worker HPA");
    let target = &hpa["spec"]["metrics"][0]["external"]["target"];
    assert_eq!(target["type"].as_str(), Some("AverageValue"));
    assert_eq!(
        scalar(&target["averageValue"]),
        threshold.to_string(),
        "the two variants aim at different lags"
    );
}

#[test]
fn every_metric_an_hpa_reads_is_served_by_the_adapter_rules_from_known_metrics() {
    let config = adapter_config();
    let served = |section: &str| -> BTreeMap<String, Value> {
        config[section]
            .as_sequence()
            .unwrap_or_else(|| panic!("adapter config without {section}"))
            .iter()
            .map(|rule| {
                let name = rule["name"]["as"].as_str().expect("name.as").to_owned();
                (name, rule.clone())
            })
            .collect()
    };
    let (pods, external) = (served("rules"), served("externalRules"));
    for rules in [&pods, &external] {
        for (name, rule) in rules {
            let series_query = rule["seriesQuery"].as_str().expect("seriesQuery");
            let series: String = series_query
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            assert_known_metrics(series_query, &format!("adapter rule {name}"));
            let query = rule["metricsQuery"]
                .as_str()
                .expect("metricsQuery")
                .replace("<<.Series>>", &series)
                .replace("<<.LabelMatchers>>", r#"namespace="chat""#)
                .replace("<<.GroupBy>>", "namespace");
            assert_known_metrics(&query, &format!("adapter rule {name}"));
        }
    }

    let mut read = 0;
    for dir in [K8S_BASE, K8S_KEDA, K8S_PROMETHEUS_ADAPTER] {
        for (name, doc) in k8s_autoscalers(dir) {
            for metric in doc["spec"]["metrics"].as_sequence().into_iter().flatten() {
                let (rules, key) = match metric["type"].as_str() {
                    Some("Pods") => (&pods, "pods"),
                    Some("External") => (&external, "external"),
                    _ => continue,
                };
                let metric_name = metric[key]["metric"]["name"].as_str().expect("name");
                assert!(
                    rules.contains_key(metric_name),
                    "{dir} {name} reads {metric_name}, which no adapter {key} rule serves"
                );
                read += 1;
            }
        }
    }
    assert_eq!(read, 2, "ingest's requests per second and the workers' lag");
    assert!(
        external.values().any(|rule| rule["seriesQuery"]
            .as_str()
            .is_some_and(|q| q.starts_with("queue_depth"))),
        "the worker HPA's lag comes from queue_depth"
    );
}

#[test]
fn every_k8s_override_is_a_setting_the_service_accepts() {
    let secret = k8s_example_secret();
    let dir = scratch_dir("k8s");
    let mut checked = 0;
    let mut pods: Vec<(String, Value)> = Vec::new();
    for kind in ["Deployment", "StatefulSet", "Job"] {
        pods.extend(
            k8s_pod_specs(kind)
                .into_iter()
                .map(|(name, spec)| (format!("{kind} {name}"), spec)),
        );
    }
    for doc in yaml_documents(K8S_REPLAY_JOB) {
        pods.push((
            format!("{K8S_REPLAY_JOB} Job"),
            doc["spec"]["template"]["spec"].clone(),
        ));
    }
    for (name, spec) in pods {
        for container in &all_containers(&spec) {
            let env = k8s_container_env(container);
            assert_names_are_config_keys(&env, &format!("deploy/k8s {name}"));
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
                panic!("deploy/k8s {name}: the service refuses {env:?}: {err}");
            }
            checked += 1;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        checked >= 5,
        "expected the ingest, worker, migrate and both replay Job containers"
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
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("the Grafana dashboard is not valid JSON: {e}"))
}

/// (panel title, PromQL) for every query of every panel, rows' nested panels included.
fn dashboard_exprs() -> Vec<(String, String)> {
    support::dashboard_queries(DASHBOARD)
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

/// Everything that always applies.
const K8S_BASE: &str = "deploy/k8s/base";
/// The base plus the worker's KEDA ScaledObject.
const K8S_KEDA: &str = "deploy/k8s/autoscaling/keda";
/// The base plus the worker's HPA on prometheus-adapter's external metric.
const K8S_PROMETHEUS_ADAPTER: &str = "deploy/k8s/autoscaling/prometheus-adapter";
/// prometheus-adapter's rules, as a ConfigMap.
const K8S_ADAPTER_CONFIG: &str =
    "deploy/k8s/autoscaling/prometheus-adapter-rules/adapter-config.yaml";
/// The dead-letter replay Job, outside the base.
const K8S_JOBS: &str = "deploy/k8s/jobs";
const K8S_REPLAY_JOB: &str = "deploy/k8s/jobs/dlq-replay-job.yaml";
/// The longest wait `GET /dead-letters/drained?wait_secs=N` honours.
const DRAIN_WAIT_MAX_SECS: u64 = 600;

/// Every document of `kind` in the base's files (deploy/k8s/base/*.yaml, the example
/// Secret included), with its name.
fn k8s_documents(kind: &str) -> Vec<(String, Value)> {
    k8s_documents_in(K8S_BASE, kind)
}

/// Every document of `kind` in `dir`/*.yaml (kustomization.yaml aside), with its name.
fn k8s_documents_in(dir: &str, kind: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = relative_to_repo(&file);
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

/// Every kustomization.yaml under deploy/k8s/.
fn k8s_kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo_path("deploy/k8s"), &mut found);
    found.sort();
    assert!(found.len() >= 4, "base, two overlays, rules: {found:?}");
    found
}

fn relative_to_repo(path: &Path) -> String {
    path.strip_prefix(repo_path(""))
        .expect("inside the repository")
        .to_string_lossy()
        .into_owned()
}

/// (name, pod spec) of each workload of `kind` in the base; the pod template's labels are
/// copied into the spec under `__labels` for selector checks.
fn k8s_pod_specs(kind: &str) -> Vec<(String, Value)> {
    k8s_documents(kind)
        .into_iter()
        .map(|(name, doc)| {
            let mut spec = doc["spec"]["template"]["spec"].clone();
            if let Value::Mapping(map) = &mut spec {
                map.insert("__labels".into(), pod_labels(&doc));
            }
            (name, spec)
        })
        .collect()
}

/// The long-running roles: Deployments and StatefulSets.
fn k8s_workloads() -> Vec<(String, Value)> {
    let mut workloads = k8s_pod_specs("Deployment");
    workloads.extend(k8s_pod_specs("StatefulSet"));
    workloads
}

/// The StatefulSet that runs `worker`.
fn k8s_worker_statefulset() -> (String, Value) {
    k8s_documents("StatefulSet")
        .into_iter()
        .find(|(_, doc)| {
            containers(&doc["spec"]["template"]["spec"])
                .iter()
                .any(|c| command_args(c).contains(&"worker".to_owned()))
        })
        .expect("a StatefulSet running `worker`")
}

fn pod_labels(workload: &Value) -> Value {
    workload["spec"]["template"]["metadata"]["labels"].clone()
}

/// Every label of `selector` is on `labels` with the same value.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_mapping().is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
    })
}

/// HorizontalPodAutoscalers and KEDA ScaledObjects of `dir`'s own files.
fn k8s_autoscalers(dir: &str) -> Vec<(String, Value)> {
    let mut found = k8s_documents_in(dir, "HorizontalPodAutoscaler");
    found.extend(k8s_documents_in(dir, "ScaledObject"));
    found
}

/// (kind, name) an autoscaler scales.
fn scale_target(autoscaler: &Value) -> (String, String) {
    let target = &autoscaler["spec"]["scaleTargetRef"];
    (scalar(&target["kind"]), scalar(&target["name"]))
}

/// The adapter's config.yaml, from its ConfigMap.
fn adapter_config() -> Value {
    let docs = yaml_documents(K8S_ADAPTER_CONFIG);
    let text = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .and_then(|d| d["data"]["config.yaml"].as_str())
        .expect("a ConfigMap with config.yaml");
    serde_yaml::from_str(text).expect("config.yaml is YAML")
}

/// The partitions of the topic as the stacks create it: scripts/infra.sh for `make run`
/// and the tests, docker-compose.yml's kafka-init; both must agree.
fn topic_partitions() -> u32 {
    let infra = read("scripts/infra.sh");
    let line = infra
        .lines()
        .find(|l| l.starts_with("KAFKA_TOPIC_PARTITIONS="))
        .expect("scripts/infra.sh sets KAFKA_TOPIC_PARTITIONS");
    let digits: String = line
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let infra_partitions: u32 = digits.parse().expect("a number of partitions");
    let init = command_args(&compose()["services"]["kafka-init"]);
    let compose_partitions: u32 = flag_value(&init, "--partitions")
        .expect("--partitions")
        .parse()
        .expect("a number");
    assert_eq!(infra_partitions, compose_partitions, "the stacks disagree");
    infra_partitions
}

/// The worker consumer's auto.offset.reset, from its source.
fn worker_offset_reset() -> String {
    let source = read("crates/service/src/queue/consumer.rs");
    let at = source
        .find(r#".set("auto.offset.reset", ""#)
        .expect("the consumer sets auto.offset.reset");
    let rest = &source[at + r#".set("auto.offset.reset", ""#.len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

fn containers(spec: &Value) -> Vec<Value> {
    spec["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// Init containers, then containers.
fn all_containers(spec: &Value) -> Vec<Value> {
    let mut all = spec["initContainers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    all.extend(containers(spec));
    all
}

/// The volume mount of `container` that holds `path`: the deepest mount above it.
fn mount_holding(container: &Value, path: &Path) -> Option<Value> {
    container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mount| !mount.is_empty() && path.starts_with(mount))
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .cloned()
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
    let (_, secret) = secrets
        .first()
        .expect("deploy/k8s/base has an example Secret");
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

/// The longest a container's preStop hook can take: a `sleep N`, or the dead-letter drain's
/// `wait_secs=N` (capped as the endpoint caps it).
fn pre_stop_ms(container: &Value) -> u64 {
    let pre_stop = &container["lifecycle"]["preStop"];
    if let Some(path) = pre_stop["httpGet"]["path"].as_str() {
        let wait = path
            .split_once('?')
            .and_then(|(_, query)| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("wait_secs="))
            })
            .unwrap_or_else(|| panic!("unrecognised preStop httpGet {path}: count its time here"));
        let secs: u64 = wait.parse().expect("wait_secs is a number");
        return secs.min(DRAIN_WAIT_MAX_SECS) * 1000;
    }
    let command = &pre_stop["exec"]["command"];
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
