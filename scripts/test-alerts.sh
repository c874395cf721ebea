#!/usr/bin/env bash
# Runs the unit tests of the Prometheus alert rules with Prometheus's own tool, promtool:
#
#   - deploy/prometheus/alerts.test.yml   (promtool test rules; it loads alerts.yml)
#
# and checks that the tests cover the rules: every `alert:` of alerts.yml must be expected
# to fire (an `exp_alerts` with at least one alert) and to stay silent (`exp_alerts: []`)
# in some test, and every alertname the tests name must exist in alerts.yml (a misspelt
# name would make a silent test pass without testing anything). A new alert without tests
# fails here.
#
# promtool comes with Debian's `prometheus` package; this script does not install it
# (.ci/run does, and scripts/check-deploy.sh can). Usage: scripts/test-alerts.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALERTS="deploy/prometheus/alerts.yml"
TESTS="deploy/prometheus/alerts.test.yml"

say() { printf 'test-alerts: %s\n' "$*"; }
die() { printf 'test-alerts: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

cd "$ROOT"
have promtool || die "promtool not found: install Debian's prometheus package (apt-get install prometheus), which provides it"
have python3 || die "python3 is needed to check that every alert has tests"
[ -f "$ALERTS" ] || die "$ALERTS not found"
[ -f "$TESTS" ] || die "$TESTS not found"

say "every alert of $ALERTS is tested firing and silent"
python3 - "$ALERTS" "$TESTS" <<'PY'
import re
import sys

alerts_path, tests_path = sys.argv[1], sys.argv[2]

with open(alerts_path) as f:
    alerts = re.findall(r"""^\s*(?:-\s+)?alert:\s*["']?([A-Za-z_:][A-Za-z0-9_:]*)""", f.read(), re.M)
if not alerts:
    sys.exit("no `alert:` found in %s" % alerts_path)

with open(tests_path) as f:
    lines = [line.rstrip("\n") for line in f]


def indent(line):
    return len(line) - len(line.lstrip(" "))


def significant(line):
    return line.strip() and not line.lstrip().startswith("#")


def items_of(start, base):
    """The list items of the `alert_rule_test:` key at lines[start - 1], as line lists."""
    items, i, dash = [], start, None
    while i < len(lines):
        line = lines[i]
        if not significant(line):
            i += 1
            continue
        ind, is_item = indent(line), line.lstrip().startswith("- ")
        if dash is None:
            if not is_item or ind < base:
                break
            dash = ind
        if ind < dash or (ind == dash and not is_item):
            break
        if ind == dash:
            items.append([])
        items[-1].append(line)
        i += 1
    return items


def expectation(item):
    """(alertname, exp_alerts non-empty) of one alert_rule_test item."""
    name, firing = None, None
    for n, line in enumerate(item):
        body = line.lstrip()
        if body.startswith("- "):
            body = body[2:].lstrip()
        m = re.match(r"""alertname:\s*["']?([A-Za-z0-9_:]+)""", body)
        if m:
            name = m.group(1)
        m = re.match(r"exp_alerts:\s*(.*)$", body)
        if m:
            rest = m.group(1).split("#")[0].replace(" ", "")
            if rest:
                firing = rest.startswith("[") and rest != "[]"
            else:
                after = [l for l in item[n + 1:] if significant(l)]
                key_indent = indent(line) + (len(line.lstrip()) - len(body))
                firing = bool(after) and indent(after[0]) >= key_indent and after[0].lstrip().startswith("- ")
    return name, firing


fires, silent, unknown = set(), set(), set()
for i, line in enumerate(lines):
    m = re.match(r"^(\s*)alert_rule_test:\s*$", line)
    if not m:
        continue
    for item in items_of(i + 1, len(m.group(1))):
        name, firing = expectation(item)
        if name is None or firing is None:
            continue
        if name not in alerts:
            unknown.add(name)
        (fires if firing else silent).add(name)

problems = []
for name in alerts:
    if name not in fires:
        problems.append("%s: no test expects it to fire (exp_alerts with an alert)" % name)
    if name not in silent:
        problems.append("%s: no test expects it to stay silent (exp_alerts: [])" % name)
for name in sorted(unknown):
    problems.append("%s: tested in %s but not an alert of %s" % (name, tests_path, alerts_path))
if problems:
    sys.exit("\n".join(["test coverage of the alert rules is incomplete:"] + problems))
print("test-alerts: %d alerts, each expected to fire and to stay silent" % len(alerts))
PY

say "promtool test rules $TESTS"
promtool test rules "$TESTS"

say "ok"
