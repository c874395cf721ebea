#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/k8s/ offline, without a cluster or Docker:
#
#   - every kustomization under deploy/k8s/ (the base, each autoscaling overlay, the
#     prometheus-adapter rules, the dead-letter replay Job) is rendered with kustomize, and
#     every manifest file that no kustomization renders (the example Secret) is read as is;
#   - every object of a Kubernetes kind is checked with kubernetes-validate's schemas in
#     strict mode (an unknown field fails, not only a wrong type), for each Kubernetes
#     version of K8S_VERSIONS;
#   - every KEDA ScaledObject is checked against the openAPIV3Schema of KEDA's own CRD
#     (config/crd/bases/keda.sh_scaledobjects.yaml of the pinned KEDA module), made strict
#     the way the API server prunes: an object schema with properties and without
#     x-kubernetes-preserve-unknown-fields admits no other field; its metadata against
#     Kubernetes' ObjectMeta; the CRD's CEL rules by a check of each (a rule this script
#     does not know fails); and the metadata of each `kafka` trigger against the parameters
#     KEDA's Kafka scaler declares (names, booleans, integers, enums), since the CRD leaves
#     trigger metadata free-form and a misspelt key would silently fall back to a default;
#   - a ConfigMap holding a `config.yaml` is prometheus-adapter's configuration: it is
#     checked against the adapter's config format (the adapter itself refuses unknown
#     fields).
#
# Any object of a kind none of these can check fails the run: nothing is skipped silently.
# tests/deploy_files/ checks the same files' consistency with the service (config keys,
# ports, partitions); this script checks that Kubernetes, KEDA and the adapter accept them.
#
# The tools are installed, pinned, under .cache/ by scripts/install-test-tools.sh (which
# `make test` runs first): kustomize (built with `go install`), kubernetes-validate (in a
# venv) and KEDA's CRD and Kafka scaler source (from the KEDA Go module).
#
# Usage: scripts/validate-k8s.sh
#
# Environment:
#   K8S_VERSIONS               Kubernetes versions to validate against (default "1.32 1.37":
#                              the oldest these manifests support, where the StatefulSet's
#                              persistentVolumeClaimRetentionPolicy is GA, and the newest
#                              kubernetes-validate ships)
#   CHAT_ANALYTICS_CACHE_DIR   cache directory (default: <repo>/.cache)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CHAT_ANALYTICS_CACHE_DIR:-$ROOT/.cache}"
K8S_DIR="$ROOT/deploy/k8s"
K8S_VERSIONS="${K8S_VERSIONS:-1.32 1.37}"
KUSTOMIZE="$CACHE_DIR/bin/kustomize"
VALIDATE_PY="$CACHE_DIR/kubernetes-validate/bin/python"
KEDA_DIR="$CACHE_DIR/keda"

say() { printf 'validate-k8s: %s\n' "$*"; }
die() { printf 'validate-k8s: error: %s\n' "$*" >&2; exit 1; }

missing() { die "$1 is missing: run scripts/install-test-tools.sh"; }
[ -x "$KUSTOMIZE" ] || missing "kustomize ($KUSTOMIZE)"
[ -x "$VALIDATE_PY" ] || missing "kubernetes-validate's venv ($VALIDATE_PY)"
for file in VERSION keda.sh_scaledobjects.yaml kafka_scaler.go; do
    [ -f "$KEDA_DIR/$file" ] || missing "KEDA's $file ($KEDA_DIR)"
done

say "kustomize $("$KUSTOMIZE" version), kubernetes-validate $("$VALIDATE_PY" -m kubernetes_validate --version), KEDA $(cat "$KEDA_DIR/VERSION"), Kubernetes $K8S_VERSIONS"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Render each kustomization into its own file, named after its directory.
rendered=()
while IFS= read -r kustomization; do
    dir="$(dirname "$kustomization")"
    relative="${dir#"$ROOT"/}"
    out="$scratch/$(printf '%s' "$relative" | tr '/' '_').yaml"
    if ! "$KUSTOMIZE" build "$dir" >"$out" 2>"$out.err"; then
        cat "$out.err" >&2
        die "kustomize build $relative failed"
    fi
    say "rendered $relative ($(grep -c '^kind:' "$out") objects)"
    rendered+=("$relative=$out")
done < <(find "$K8S_DIR" -name kustomization.yaml | sort)
[ "${#rendered[@]}" -gt 0 ] || die "no kustomization.yaml under $K8S_DIR"

"$VALIDATE_PY" - "$ROOT" "$KEDA_DIR" "$K8S_VERSIONS" "${rendered[@]}" <<'PY'
import os
import re
import sys

import jsonschema
import yaml
from referencing import Registry, Resource
from kubernetes_validate import utils as kv

root, keda_dir, versions = sys.argv[1], sys.argv[2], sys.argv[3].split()
rendered = [arg.split("=", 1) for arg in sys.argv[4:]]
k8s_dir = os.path.join(root, "deploy", "k8s")
failures = []
checked = {}


def fail(where, message):
    failures.append(f"{where}: {message}")


def path_of(error, prefix):
    return ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path]) or "(top level)"


def report(where, validator, document, what, prefix=""):
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        fail(where, f"{what}: {path_of(error, prefix)}: {error.message}")
    return not errors


# ---------------------------------------------------------------------------------------
# Which files each kustomization renders: the others are checked as they are.

def covered_files():
    covered = set()
    for dirpath, _, files in os.walk(k8s_dir):
        if "kustomization.yaml" not in files:
            continue
        with open(os.path.join(dirpath, "kustomization.yaml")) as f:
            kustomization = yaml.safe_load(f) or {}
        entries = list(kustomization.get("resources", []))
        entries += [p.get("path") for p in kustomization.get("patches", []) if p.get("path")]
        entries += kustomization.get("patchesStrategicMerge", [])
        for entry in entries:
            path = os.path.normpath(os.path.join(dirpath, entry))
            if os.path.isfile(path):
                covered.add(path)
    return covered


covered = covered_files()
standalone = []
for dirpath, _, files in os.walk(k8s_dir):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and path not in covered:
            standalone.append((os.path.relpath(path, root), path))

sources = [(label, path) for label, path in rendered] + sorted(standalone)


# ---------------------------------------------------------------------------------------
# Kubernetes kinds: kubernetes-validate's strict schemas.

schema_versions = kv.all_versions()


def k8s_schema_dir(version):
    matching = [v for v in schema_versions if kv.major_minor(v) == kv.major_minor(version)]
    if not matching:
        sys.exit(f"validate-k8s: kubernetes-validate has no schemas for Kubernetes {version} "
                 f"(it has {', '.join(sorted(set(map(kv.major_minor, schema_versions)), key=kv.Version))})")
    return matching[-1], "v%s-local-strict" % matching[-1]


def k8s_validator(version, document):
    full, schema_dir = k8s_schema_dir(version)
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", document["apiVersion"])
    name = "kubernetes-json-schema/%s/%s-%s.json" % (schema_dir, document["kind"].lower(), api_version)
    try:
        schema = kv.schema_contents(name, full)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents("kubernetes-json-schema/%s/_definitions.json" % schema_dir, full)
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def object_meta_validator(version):
    full, schema_dir = k8s_schema_dir(version)
    definitions = kv.schema_contents("kubernetes-json-schema/%s/_definitions.json" % schema_dir, full)
    registry = Resource.from_contents(definitions) @ Registry()
    schema = {"$ref": definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_k8s(where, document):
    ok = True
    for version in versions:
        validator = k8s_validator(version, document)
        if validator is None:
            fail(where, f"no Kubernetes {version} schema for {document['apiVersion']} {document['kind']}, "
                        "and no other check for it in this script")
            return False
        ok &= report(where, validator, document, f"Kubernetes {version}")
    return ok


# ---------------------------------------------------------------------------------------
# KEDA ScaledObject: the CRD's openAPIV3Schema, strict.

with open(os.path.join(keda_dir, "keda.sh_scaledobjects.yaml")) as f:
    crd = yaml.safe_load(f)
with open(os.path.join(keda_dir, "VERSION")) as f:
    keda_version = f.read().strip()
crd_group = crd["spec"]["group"]
crd_kind = crd["spec"]["names"]["kind"]
crd_versions = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
cel_rules = []


def strict_schema(node, where="openAPIV3Schema"):
    """An OpenAPI v3 structural schema as JSON Schema, with unknown fields refused."""
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub, f"{where}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value, f"{where}[]")
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub, where) for sub in value]
        elif key == "x-kubernetes-validations":
            cel_rules.extend((where, rule["rule"], rule.get("message", "")) for rule in value)
        elif key.startswith("x-kubernetes-") or key == "nullable":
            pass
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (node.get("type") == "object" and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


scaledobject_schemas = {
    name: jsonschema.Draft202012Validator(strict_schema(v["schema"]["openAPIV3Schema"]))
    for name, v in crd_versions.items()
}


# The CRD's CEL rules (x-kubernetes-validations on spec), each checked by hand here; a rule
# not listed fails the run, so a KEDA upgrade that adds one is noticed.
CEL_CHECKS = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) "
    "? self.maxReplicaCount : 100)":
        lambda spec: spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100),
}


def cel_check(rule, spec):
    check = CEL_CHECKS.get(re.sub(r"\s+", " ", rule).strip())
    return None if check is None else check(spec)


# The Kafka scaler's parameters: `keda:"name=...,order=...,..."` tags of kafkaMetadata.
def kafka_parameters():
    with open(os.path.join(keda_dir, "kafka_scaler.go")) as f:
        source = f.read()
    body = re.search(r"type kafkaMetadata struct \{(.*?)\n\}", source, re.S)
    if not body:
        sys.exit("validate-k8s: no `type kafkaMetadata struct` in KEDA's kafka_scaler.go: "
                 "the scaler's source changed, update this script")
    parameters = {}
    for go_type, tag in re.findall(r"^\s*\w+\s+(\S+)\s+`keda:\"([^\"]*)\"`", body.group(1), re.M):
        fields = dict(part.split("=", 1) if "=" in part else (part, "") for part in tag.split(","))
        orders = fields.get("order", "").split(";")
        if "triggerMetadata" not in orders:
            continue
        parameters[fields["name"]] = {
            "type": go_type,
            "enum": fields["enum"].split(";") if "enum" in fields else None,
            "required": "optional" not in fields and "default" not in fields,
            "from_env": "resolvedEnv" in orders,
        }
    if len(parameters) < 5 or "lagThreshold" not in parameters:
        sys.exit("validate-k8s: could not read the Kafka scaler's parameters from kafka_scaler.go")
    return parameters


KAFKA_PARAMETERS = kafka_parameters()


def check_kafka_trigger(where, metadata):
    known = dict(KAFKA_PARAMETERS)
    for name, parameter in KAFKA_PARAMETERS.items():
        if parameter["from_env"]:
            known[name + "FromEnv"] = {"type": "string", "enum": None, "required": False}
    for key, value in metadata.items():
        parameter = known.get(key)
        if parameter is None:
            fail(where, f"kafka trigger: unknown metadata `{key}` (KEDA {keda_version}'s Kafka scaler "
                        f"reads {', '.join(sorted(KAFKA_PARAMETERS))})")
            continue
        if parameter["enum"] and value not in parameter["enum"]:
            fail(where, f"kafka trigger: {key} is {value!r}, not one of {parameter['enum']}")
        elif parameter["type"] == "bool" and value not in ("true", "false"):
            fail(where, f"kafka trigger: {key} is {value!r}, not \"true\" or \"false\"")
        elif parameter["type"].startswith("int") and not re.fullmatch(r"-?[0-9]+", value):
            fail(where, f"kafka trigger: {key} is {value!r}, not an integer")
    for name, parameter in KAFKA_PARAMETERS.items():
        if parameter["required"] and name not in metadata and name + "FromEnv" not in metadata:
            fail(where, f"kafka trigger: {name} is required")


def validate_scaledobject(where, document):
    group, _, version = document["apiVersion"].partition("/")
    if group != crd_group or version not in scaledobject_schemas:
        fail(where, f"{document['apiVersion']} is not a served version of KEDA {keda_version}'s "
                    f"{crd_kind} ({', '.join(crd_group + '/' + v for v in crd_versions)})")
        return False
    ok = report(where, scaledobject_schemas[version], document, f"KEDA {keda_version} CRD")
    for k8s_version in versions:
        ok &= report(where, object_meta_validator(k8s_version), document.get("metadata", {}),
                     f"Kubernetes {k8s_version} ObjectMeta", prefix="metadata")
    spec = document.get("spec", {})
    for rule_where, rule, message in cel_rules:
        verdict = cel_check(rule, spec) if rule_where == "openAPIV3Schema.spec" else None
        if verdict is None:
            fail(where, f"the CRD's CEL rule at {rule_where} is not checked by this script: {rule!r}")
            ok = False
        elif not verdict:
            fail(where, f"CEL rule at {rule_where}: {message}")
            ok = False
    for trigger in spec.get("triggers", []):
        if trigger.get("type") == "kafka":
            before = len(failures)
            check_kafka_trigger(where, trigger.get("metadata", {}))
            ok &= len(failures) == before
    return ok


# ---------------------------------------------------------------------------------------
# prometheus-adapter's config (pkg/config of the adapter; loaded with yaml.UnmarshalStrict).

def closed(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


STRING = {"type": "string"}
RESOURCE_MAPPING = closed({
    "template": STRING,
    "overrides": {"type": "object", "additionalProperties": closed(
        {"group": STRING, "resource": STRING}, ["resource"])},
})
DISCOVERY_RULE = closed({
    "seriesQuery": STRING,
    "seriesFilters": {"type": ["array", "null"], "items": {
        **closed({"is": STRING, "isNot": STRING}), "minProperties": 1, "maxProperties": 1}},
    "resources": RESOURCE_MAPPING,
    "name": closed({"matches": STRING, "as": STRING}),
    "metricsQuery": STRING,
    "labelValueReplacements": {"type": "array", "items": closed({"find": STRING, "replace": STRING})},
}, ["seriesQuery", "resources", "metricsQuery"])
RESOURCE_RULE = closed({"containerQuery": STRING, "nodeQuery": STRING,
                        "resources": RESOURCE_MAPPING, "containerLabel": STRING})
ADAPTER_CONFIG = jsonschema.Draft202012Validator(closed({
    "rules": {"type": "array", "items": DISCOVERY_RULE},
    "externalRules": {"type": "array", "items": DISCOVERY_RULE},
    "resourceRules": closed({"cpu": RESOURCE_RULE, "memory": RESOURCE_RULE, "window": STRING}),
}))


def validate_adapter_config(where, text):
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(where, f"config.yaml is not YAML: {e}")
        return False
    ok = report(where, ADAPTER_CONFIG, config, "prometheus-adapter config", prefix="data.config.yaml")
    for section in ("rules", "externalRules"):
        for i, rule in enumerate((config or {}).get(section) or []):
            query = rule.get("metricsQuery", "")
            for placeholder in re.findall(r"<<\s*\.?(\w+)\s*>>", query):
                if placeholder not in ("Series", "LabelMatchers", "GroupBy"):
                    fail(where, f"{section}.{i}.metricsQuery: unknown template field <<.{placeholder}>>")
                    ok = False
            for needed in ("Series", "LabelMatchers"):
                if f"<<.{needed}>>" not in query:
                    fail(where, f"{section}.{i}.metricsQuery does not use <<.{needed}>>")
                    ok = False
    return ok


# ---------------------------------------------------------------------------------------

for label, path in sources:
    with open(path) as f:
        try:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            fail(label, f"not YAML: {e}")
            continue
    if not documents:
        fail(label, "no object")
    for document in documents:
        if not isinstance(document, dict) or "apiVersion" not in document or "kind" not in document:
            fail(label, "an object without apiVersion and kind")
            continue
        name = (document.get("metadata") or {}).get("name", "?")
        where = f"{label}: {document['kind']} {name}"
        if document["kind"] == crd_kind and document["apiVersion"].startswith(crd_group + "/"):
            ok = validate_scaledobject(where, document)
            how = f"KEDA {keda_version} CRD"
        else:
            ok = validate_k8s(where, document)
            how = "Kubernetes " + "/".join(versions)
            data = document.get("data") or {}
            if document["kind"] == "ConfigMap" and "config.yaml" in data:
                ok &= validate_adapter_config(where, data["config.yaml"])
                how += ", prometheus-adapter config"
        checked[where] = ok
        print(f"validate-k8s: {'ok  ' if ok else 'FAIL'} {where} ({how})")

if failures:
    print(f"\nvalidate-k8s: {len(failures)} problem(s):", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    sys.exit(1)
print(f"validate-k8s: ok: {len(checked)} objects from {len(sources)} renderings and files")
PY
