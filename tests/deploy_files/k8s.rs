//! deploy/k8s/: the base (deploy/k8s/base) and the dead-letter replay Job run the roles
//! with probes, ports, volumes and stop times that agree with the service.
//! scripts/validate-k8s.sh checks that Kubernetes and KEDA accept the manifests; these
//! tests check them against the service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_analytics::config::Settings;
use serde_yaml::Value;

use crate::k8s_manifests::{
    all_containers, containers, k8s_container_env, k8s_documents, k8s_example_secret,
    k8s_kustomizations, k8s_pod_specs, k8s_worker_statefulset, k8s_workloads, mount_holding,
    pod_labels, pre_stop_ms, resolve_port, scratch_dir, selects, without_listen,
    DRAIN_WAIT_MAX_SECS, K8S_JOBS, K8S_REPLAY_JOB,
};
use crate::manifest::{
    assert_names_are_config_keys, command_args, default_settings, flag_value, normalize,
    relative_to_repo, scalar, yaml, yaml_documents,
};
use crate::support::repo_path;

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
