#!/usr/bin/env python3
"""Combined summary of several `make bench` runs: every figure as the median of the runs.

    bench_median.py OUT_DIR RUN_DIR...

Reads RUN_DIR/summary.json of each run (scripts/bench_summary.py); writes OUT_DIR/summary.json
and prints Markdown. Every number of the runs' summaries is given as its median with its
spread: min, max and each run's value (None where a run lacks it). A target passes only when
its median meets the goal (the `target` text of the check: `< 50`, `>= 9900`, `= 50000`, `0`)
and more than half of the runs passed it by their own rule, which also holds what the median
cannot see (e.g. end-to-end rows missing); how many runs passed is shown either way. A run
without a summary.json (it failed before writing one) passed nothing. Exits 0 when every
target passes, else 1, like bench_summary.py.
"""
import json
import os
import re
import statistics
import sys

GOAL = re.compile(r"^\s*(>=|<=|==|=|>|<)?\s*(-?\d+(?:\.\d+)?)\s*$")


def load(run_dir):
    """A run's summary, or None when it has none (or an unreadable one)."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def figures(node, path=()):
    """Every number in a summary by its path ("steady/statuses/202"); a list item goes by its
    `what` or `stage` (so runs line up by name, not position), else by its index."""
    if is_number(node):
        return {"/".join(path): node}
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(figures(value, path + (str(key),)))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            name = (item.get("what") or item.get("stage")) if isinstance(item, dict) else None
            out.update(figures(item, path + (str(name if name is not None else i),)))
    return out


def spread(values):
    """Median, min and max of the values present, and every run's value (None: missing)."""
    present = [v for v in values if is_number(v)]
    if not present:
        return {"median": None, "min": None, "max": None, "runs": values}
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "runs": values}


def goal_met(goal, value):
    """Whether value meets a goal written as in the summaries' `target`; None when the goal
    is not a comparison with a number (then only the runs' own verdicts count)."""
    m = GOAL.match(goal or "")
    if not m:
        return None
    if value is None:
        return False
    op, limit = m.group(1) or "=", float(m.group(2))
    return {
        ">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit,
        "=": value == limit, "==": value == limit,
    }[op]


def combine_checks(summaries):
    """One entry per target (by `what`, in the runs' order) with the median, spread, how many
    runs passed and the verdict."""
    names = []
    for s in summaries:
        for c in (s or {}).get("checks", []):
            if c.get("what") not in names:
                names.append(c.get("what"))
    combined = []
    for name in names:
        per_run = [next((c for c in (s or {}).get("checks", []) if c.get("what") == name), None) for s in summaries]
        values = [c.get("value") if c else None for c in per_run]
        passed = sum(1 for c in per_run if c and c.get("pass") is True)
        goal = next((c.get("target") for c in per_run if c and c.get("target") is not None), None)
        entry = {"what": name, "target": goal, **spread(values)}
        met = goal_met(goal, entry["median"])
        majority = 2 * passed > len(summaries)
        entry.update(runs_passed=passed, runs_total=len(summaries), median_meets_goal=met)
        entry["pass"] = majority and met is not False
        combined.append(entry)
    return combined


def combine(summaries, names):
    """The combined summary of runs `names` whose summaries are `summaries` (None: missing)."""
    per_run = [figures(s) if s else {} for s in summaries]
    paths = []
    for f in per_run:
        paths.extend(p for p in f if p not in paths and not p.startswith("checks/"))
    present = [s for s in summaries if s]
    errors = [f"{n}: no summary.json" for n, s in zip(names, summaries) if not s]
    errors += [f"{n}: {e}" for n, s in zip(names, summaries) if s for e in s.get("errors", [])]
    return {
        "runs": names,
        "runs_with_summary": len(present),
        "machine": present[0].get("machine") if present else None,
        "steal_requested": next((s["steal"].get("requested") for s in present if isinstance(s.get("steal"), dict)), 0),
        "checks": combine_checks(summaries),
        "figures": {p: spread([f.get(p) for f in per_run]) for p in paths},
        "errors": errors,
    }


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def fmt_spread(s):
    span = "–" if s["min"] is None else f"{fmt(s['min'])}–{fmt(s['max'])}"
    return fmt(s["median"]), span, ", ".join(fmt(v) for v in s["runs"])


def markdown(combined, title):
    n = len(combined["runs"])
    lines = [f"# make bench — {title}: median of {n} run{'s' if n != 1 else ''}", ""]
    lines += [f"Machine: {combined['machine']}", ""]
    cores = combined["figures"].get("steal/cores_used")
    if combined["steal_requested"]:
        used = "it left no report" if not cores or cores["median"] is None else \
            "it used {} of a core (median; {}; runs: {})".format(*fmt_spread(cores))
        lines += [f"Competing process: STEAL={combined['steal_requested']} of one core asked for through both scenarios; {used}.", ""]
    else:
        lines += ["Competing process: none (STEAL=0).", ""]
    lines += ["A target passes when its median meets the goal and more than half of the runs passed it.", ""]
    lines += ["| target | median | min–max | runs | goal | runs passed | |", "|---|---:|---:|---|---|---:|---|"]
    for c in combined["checks"]:
        med, rng, runs = fmt_spread(c)
        lines.append(f"| {c['what']} | {med} | {rng} | {runs} | {c['target']} | {c['runs_passed']}/{c['runs_total']} | {'PASS' if c['pass'] else 'FAIL'} |")
    lines += ["", "Every other figure of the runs' summary.json:", ""]
    lines += ["| figure | median | min–max | runs |", "|---|---:|---:|---|"]
    for path, s in combined["figures"].items():
        med, rng, runs = fmt_spread(s)
        lines.append(f"| {path} | {med} | {rng} | {runs} |")
    lines += ["", "Each run's own summary: " + ", ".join(f"{r}/summary.md" for r in combined["runs"]) + "."]
    lines += [f"\n{e}" for e in combined["errors"]]
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    out, run_dirs = argv[0], argv[1:]
    combined = combine([load(d) for d in run_dirs], [os.path.basename(os.path.normpath(d)) for d in run_dirs])
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(combined, f, indent=2)
    print(markdown(combined, os.path.normpath(out).split("bench/results/", 1)[-1]))
    return 0 if combined["checks"] and all(c["pass"] for c in combined["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
