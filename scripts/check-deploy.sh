#!/usr/bin/env bash
# Checks the monitoring files with Prometheus's own tool, promtool:
#
#   - deploy/prometheus/prometheus.yml   (promtool check config; it also loads alerts.yml)
#   - deploy/prometheus/alerts.yml       (promtool check rules)
#   - the PromQL of every panel of deploy/grafana/chat-analytics.json, parsed by promtool
#     as recording rules (Grafana's $__rate_interval replaced by 1m)
#
# The consistency of these files with the service (config keys, ports, topic, metric
# names) is tested by tests/deploy_files/ under `make test`; this script adds what only
# promtool can tell: that the files are valid for Prometheus itself.
#
# promtool comes with Debian's `prometheus` package, installed here when missing
# (needs root or passwordless sudo). Usage: scripts/check-deploy.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROMETHEUS_DIR="$ROOT/deploy/prometheus"
DASHBOARD="$ROOT/deploy/grafana/chat-analytics.json"

say() { printf 'check-deploy: %s\n' "$*"; }
die() { printf 'check-deploy: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif have sudo && sudo -n true 2>/dev/null; then sudo -n "$@"
    else die "promtool is missing and installing it needs root or passwordless sudo (Debian package: prometheus)"
    fi
}

install_promtool() {
    have apt-get || die "promtool is missing and there is no apt-get: install Prometheus's promtool by hand"
    local log
    log="$(mktemp)"
    say "promtool not found: apt-get install prometheus"
    # The package's service is not wanted here; in containers policy-rc.d keeps it stopped.
    if ! { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends prometheus; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "installing prometheus failed (log: $log)"
    fi
    rm -f "$log"
    have promtool || die "the prometheus package did not provide promtool"
}

have promtool || install_promtool

say "promtool check config deploy/prometheus/prometheus.yml"
promtool check config "$PROMETHEUS_DIR/prometheus.yml"

say "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules "$PROMETHEUS_DIR/alerts.yml"

have python3 || die "python3 is needed to read the dashboard's queries"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 - "$DASHBOARD" "$scratch/dashboard-queries.yml" <<'PY'
import json
import sys

dashboard_path, rules_path = sys.argv[1], sys.argv[2]
with open(dashboard_path) as f:
    dashboard = json.load(f)


def walk(panels):
    for panel in panels:
        yield panel
        yield from walk(panel.get("panels", []))


rules = []
for panel in walk(dashboard.get("panels", [])):
    for target in panel.get("targets", []):
        expr = target.get("expr")
        if expr:
            expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
            record = "dashboard:panel_%s_%s" % (panel.get("id"), target.get("refId", "A"))
            rules.append((record, expr))
if not rules:
    sys.exit("no queries found in %s" % dashboard_path)
with open(rules_path, "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for record, expr in rules:
        out.write("      - record: %s\n        expr: %s\n" % (record, json.dumps(expr)))
PY
say "promtool check rules on the dashboard's queries"
promtool check rules "$scratch/dashboard-queries.yml"

say "ok"
