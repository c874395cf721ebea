//! The worker's two autoscaling overlays (KEDA, and an HPA on prometheus-adapter's
//! external metric) and the adapter's rules.

use std::collections::BTreeMap;

use chat_analytics::config::Settings;
use serde_yaml::Value;

use crate::compose::compose;
use crate::k8s_manifests::{
    adapter_config, containers, k8s_autoscalers, k8s_container_env, k8s_worker_statefulset,
    scale_target, without_listen, K8S_BASE, K8S_KEDA, K8S_PROMETHEUS_ADAPTER,
};
use crate::manifest::{command_args, flag_value, scalar, yaml};
use crate::monitoring::assert_known_metrics;
use crate::support::read_repo_file as read;

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
