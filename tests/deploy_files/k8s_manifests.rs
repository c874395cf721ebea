//! Reading deploy/k8s/: documents by kind, workloads, containers and their settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::manifest::{command_args, our_overrides, relative_to_repo, scalar, yaml_documents};
use crate::support::repo_path;

/// Everything that always applies.
pub(crate) const K8S_BASE: &str = "deploy/k8s/base";
/// The base plus the worker's KEDA ScaledObject.
pub(crate) const K8S_KEDA: &str = "deploy/k8s/autoscaling/keda";
/// The base plus the worker's HPA on prometheus-adapter's external metric.
pub(crate) const K8S_PROMETHEUS_ADAPTER: &str = "deploy/k8s/autoscaling/prometheus-adapter";
/// prometheus-adapter's rules, as a ConfigMap.
const K8S_ADAPTER_CONFIG: &str =
    "deploy/k8s/autoscaling/prometheus-adapter-rules/adapter-config.yaml";
/// The dead-letter replay Job, outside the base.
pub(crate) const K8S_JOBS: &str = "deploy/k8s/jobs";
pub(crate) const K8S_REPLAY_JOB: &str = "deploy/k8s/jobs/dlq-replay-job.yaml";
/// The longest wait `GET /dead-letters/drained?wait_secs=N` honours.
pub(crate) const DRAIN_WAIT_MAX_SECS: u64 = 600;

/// Every document of `kind` in the base's files (deploy/k8s/base/*.yaml, the example
/// Secret included), with its name.
pub(crate) fn k8s_documents(kind: &str) -> Vec<(String, Value)> {
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
pub(crate) fn k8s_kustomizations() -> Vec<PathBuf> {
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

/// (name, pod spec) of each workload of `kind` in the base; the pod template's labels are
/// copied into the spec under `__labels` for selector checks.
pub(crate) fn k8s_pod_specs(kind: &str) -> Vec<(String, Value)> {
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
pub(crate) fn k8s_workloads() -> Vec<(String, Value)> {
    let mut workloads = k8s_pod_specs("Deployment");
    workloads.extend(k8s_pod_specs("StatefulSet"));
    workloads
}

/// The StatefulSet that runs `worker`.
pub(crate) fn k8s_worker_statefulset() -> (String, Value) {
    k8s_documents("StatefulSet")
        .into_iter()
        .find(|(_, doc)| {
            containers(&doc["spec"]["template"]["spec"])
                .iter()
                .any(|c| command_args(c).contains(&"worker".to_owned()))
        })
        .expect("a StatefulSet running `worker`")
}

pub(crate) fn pod_labels(workload: &Value) -> Value {
    workload["spec"]["template"]["metadata"]["labels"].clone()
}

/// Every label of `selector` is on `labels` with the same value.
pub(crate) fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_mapping().is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
    })
}

/// HorizontalPodAutoscalers and KEDA ScaledObjects of `dir`'s own files.
pub(crate) fn k8s_autoscalers(dir: &str) -> Vec<(String, Value)> {
    let mut found = k8s_documents_in(dir, "HorizontalPodAutoscaler");
    found.extend(k8s_documents_in(dir, "ScaledObject"));
    found
}

/// (kind, name) an autoscaler scales.
pub(crate) fn scale_target(autoscaler: &Value) -> (String, String) {
    let target = &autoscaler["spec"]["scaleTargetRef"];
    (scalar(&target["kind"]), scalar(&target["name"]))
}

/// The adapter's config.yaml, from its ConfigMap.
pub(crate) fn adapter_config() -> Value {
    let docs = yaml_documents(K8S_ADAPTER_CONFIG);
    let text = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .and_then(|d| d["data"]["config.yaml"].as_str())
        .expect("a ConfigMap with config.yaml");
    serde_yaml::from_str(text).expect("config.yaml is YAML")
}

pub(crate) fn containers(spec: &Value) -> Vec<Value> {
    spec["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// Init containers, then containers.
pub(crate) fn all_containers(spec: &Value) -> Vec<Value> {
    let mut all = spec["initContainers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    all.extend(containers(spec));
    all
}

/// The volume mount of `container` that holds `path`: the deepest mount above it.
pub(crate) fn mount_holding(container: &Value, path: &Path) -> Option<Value> {
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
pub(crate) fn resolve_port(container: &Value, port: &Value) -> u16 {
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
pub(crate) fn k8s_container_env(container: &Value) -> Vec<(String, String)> {
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
pub(crate) fn k8s_example_secret() -> BTreeMap<String, String> {
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
pub(crate) fn without_listen(env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| k != "CHAT_ANALYTICS__API__LISTEN")
        .collect()
}

/// The longest a container's preStop hook can take: a `sleep N`, or the dead-letter drain's
/// `wait_secs=N` (capped as the endpoint caps it).
pub(crate) fn pre_stop_ms(container: &Value) -> u64 {
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

pub(crate) fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deploy-files-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
