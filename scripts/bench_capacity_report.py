#!/usr/bin/env python3
"""The rules and the report of `make bench-capacity` (scripts/bench_capacity.sh).

    bench_capacity_report.py pool-size --rate R [--latency-ms 200] [--headroom 1.25] [--minimum N]
        The worker pool a rate needs by Little's law: rate x NLP latency x headroom messages
        in flight, rounded up, never below --minimum (the configured pool).
    bench_capacity_report.py step REPORT_JSON
        Whether one step passed (exit 0) or not (exit 1), with the reasons on stderr.
    bench_capacity_report.py report OUT_DIR [settings, as stated in the report]
        Reads OUT_DIR/steps.csv (rate,pool,dir per step, in order), each step's loadgen
        report.json and, when the environment's STEAL is above 0, OUT_DIR/burner.json; writes
        OUT_DIR/report.json, OUT_DIR/p99.svg and prints report.md. Exits 0 when the capacity
        meets TARGET_CAPACITY, else 1.
    bench_capacity_report.py combine OUT_DIR RUN_DIR...
        Several runs' report.json (RUNS > 1): the median capacity with each run's, and per
        offered rate the runs that reached it, how many passed and the median P99s; writes
        OUT_DIR/report.json and OUT_DIR/p99.svg (the medians) and prints report.md. Exits 0
        when the median capacity meets TARGET_CAPACITY, else 1.

A step passes when, over its measured part, P99 ingest (intended send to 202) is under 50 ms,
P99 end to end (sent_at to row committed, every accepted message found) under 400 ms, at least
99% of the offered requests were accepted, and nothing failed but deliberate 429s. The capacity
is the highest rate of the passing steps before the first failing one. Python standard
library only (the plot is SVG written by hand).
"""
import argparse
import csv
import json
import math
import os
import statistics
import sys
from fractions import Fraction
from xml.sax.saxutils import escape

import bench_summary  # the machine line and the competing process, as `make bench` states them

P99_INGEST_MS = 50.0
P99_E2E_MS = 400.0
MIN_ACCEPTED = 0.99
TARGET_CAPACITY = 15000


def pool_size(rate, latency_ms, headroom, minimum):
    """Messages in flight at `rate` msg/s when each waits `latency_ms` for the NLP API
    (Little's law), times `headroom`, rounded up; never below `minimum`. Exact arithmetic:
    10,000/s x 200 ms x 1.25 is 2,500, not 2,501."""
    need = Fraction(str(rate)) * Fraction(str(latency_ms)) / 1000 * Fraction(str(headroom))
    return max(int(minimum), math.ceil(need))


def step_verdict(report):
    """One step's figures from its loadgen report.json, whether it passed, and why not."""
    r = report.get("results") or {}
    offered = r.get("measured_requests") or 0
    accepted = r.get("accepted_requests") or 0
    statuses = r.get("status_counts") or {}
    errors = sum(n for code, n in statuses.items() if code not in ("202", "429")) + sum((r.get("failures") or {}).values())
    ingest = r.get("latency_ms") or {}
    e2e = report.get("e2e") or {}
    e2e_latency = e2e.get("latency_ms") or {}
    p99_ingest = ingest.get("p99") if ingest.get("count") else None
    p99_e2e = e2e_latency.get("p99") if e2e_latency.get("count") else None
    ratio = accepted / offered if offered else 0.0
    reasons = []
    if p99_ingest is None or p99_ingest >= P99_INGEST_MS:
        reasons.append(f"P99 ingest {p99_ingest} ms, not under {P99_INGEST_MS:g}")
    if not e2e:
        reasons.append(f"no end-to-end figures ({report.get('e2e_error') or report.get('_error') or 'no e2e in the report'})")
    elif e2e.get("missing", 0) > 0:
        reasons.append(f"{e2e['missing']} accepted messages not stored when the lookup gave up")
    if e2e and (p99_e2e is None or p99_e2e >= P99_E2E_MS):
        reasons.append(f"P99 end to end {p99_e2e} ms, not under {P99_E2E_MS:g}")
    if ratio < MIN_ACCEPTED:
        reasons.append(f"{ratio:.2%} of {offered} offered requests accepted, under {MIN_ACCEPTED:.0%}")
    if errors:
        reasons.append(f"{errors} errors other than 429")
    return {
        "rate": (report.get("config") or {}).get("rate"),
        "p99_ingest_ms": p99_ingest,
        "p99_e2e_ms": p99_e2e,
        "offered_requests": offered,
        "accepted_requests": accepted,
        "accepted_ratio": round(ratio, 5),
        "accepted_msgs_per_s": r.get("accepted_msgs_per_s"),
        "throttled": statuses.get("429", 0),
        "errors": errors,
        "e2e_missing": e2e.get("missing"),
        "pass": not reasons,
        "reasons": reasons,
    }


def capacity(steps):
    """Highest rate of the passing steps before the first failing one (steps in the order
    run); None when the first step failed."""
    best = None
    for s in steps:
        if not s["pass"]:
            break
        best = s["rate"]
    return best


def read_steps(out):
    """Each step of OUT_DIR/steps.csv with its verdict and the pool it ran with."""
    steps = []
    with open(os.path.join(out, "steps.csv")) as f:
        for row in csv.DictReader(f):
            v = step_verdict(bench_summary.load(os.path.join(out, row["dir"], "report.json")))
            v["rate"] = float(row["rate"])  # what was offered, even when the report is missing
            v["pool"] = int(row["pool"])
            v["dir"] = row["dir"]
            steps.append(v)
    return steps


def svg_plot(steps, cap=None, width=760, height=460):
    """Both P99s against the offered rate, log latency axis, the two targets as dashed lines;
    a hollow point is a failing step. Returns the SVG document as text."""
    left, right, top, bottom = 78, 24, 48, 88
    pw, ph = width - left - right, height - top - bottom
    rates = [s["rate"] for s in steps] or [TARGET_CAPACITY]
    lo_x, hi_x = min(rates), max(rates)
    pad = max(500.0, (hi_x - lo_x) * 0.05)
    lo_x, hi_x = lo_x - pad, hi_x + pad
    values = [v for s in steps for v in (s["p99_ingest_ms"], s["p99_e2e_ms"]) if v and v > 0]
    lo_exp = math.floor(math.log10(min(values + [P99_INGEST_MS])))
    hi_exp = math.ceil(math.log10(max(values + [P99_E2E_MS]) * 1.2))
    lo_y, hi_y = 10.0 ** lo_exp, 10.0 ** hi_exp

    def x(rate):
        return left + (rate - lo_x) / (hi_x - lo_x) * pw

    def y(ms):
        ms = min(max(ms, lo_y), hi_y)
        return top + (math.log10(hi_y) - math.log10(ms)) / (math.log10(hi_y) - math.log10(lo_y)) * ph

    title = "P99 latency against offered rate"
    if cap is not None:
        title += f" — capacity {cap:.0f} msg/s (target ≥ {TARGET_CAPACITY})"
    el = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for decade in (10.0 ** e for e in range(lo_exp, hi_exp + 1)):
        el.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>')
        el.append(f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
    for rate in sorted(set(rates)):
        el.append(f'<line x1="{x(rate):.1f}" x2="{x(rate):.1f}" y1="{top + ph}" y2="{top + ph + 5}" stroke="black"/>')
        el.append(f'<text x="{x(rate):.1f}" y="{top + ph + 18}" text-anchor="middle">{rate / 1000:g}k</text>')
    el.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    el.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 40}" text-anchor="middle">offered rate (msg/s)</text>')
    el.append(f'<text transform="translate(18 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">P99 latency (ms, log scale)</text>')
    series = [("ingest", "p99_ingest_ms", P99_INGEST_MS, "#1f77b4", "P99 ingest (to 202)"),
              ("e2e", "p99_e2e_ms", P99_E2E_MS, "#d62728", "P99 end to end (to row committed)")]
    for i, (name, key, limit, colour, label) in enumerate(series):
        el.append(f'<line class="target-{name}" x1="{left}" x2="{left + pw}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                  f'stroke="{colour}" stroke-dasharray="6 4"/>')
        el.append(f'<text x="{left + 4}" y="{y(limit) - 4:.1f}" fill="{colour}">target {limit:g} ms</text>')
        points = [(x(s["rate"]), y(s[key]), s["pass"]) for s in steps if s[key] and s[key] > 0]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            el.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, ok in points:
            el.append(f'<circle class="{name}" cx="{px:.1f}" cy="{py:.1f}" r="4" stroke="{colour}" '
                      f'stroke-width="2" fill="{colour if ok else "white"}"/>')
        lx, ly = left + i * 250, height - 14
        el.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        el.append(f'<text x="{lx + 26}" y="{ly}">{escape(label)}</text>')
    el.append(f'<text x="{left + 500}" y="{height - 14}">hollow point: step failed</text>')
    if cap is not None:
        el.append(f'<line class="capacity" x1="{x(cap):.1f}" x2="{x(cap):.1f}" y1="{top}" y2="{top + ph}" stroke="green" stroke-dasharray="2 3"/>')
        el.append(f'<text x="{x(cap) + 4:.1f}" y="{top + 14}" fill="green">capacity</text>')
    el.append("</svg>")
    return "\n".join(el) + "\n"


def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def report(out, args):
    steps = read_steps(out)
    cap = capacity(steps)
    lower_bound = bool(steps) and all(s["pass"] for s in steps)
    steal = bench_summary.steal(out)
    doc = {
        "machine": bench_summary.machine(),
        "machine_probe": bench_summary.load(os.path.join(out, "machine-probe.json")),
        "steal": steal,
        "settings": {k: getattr(args, k) for k in ("step_seconds", "warmup", "connections", "nlp_latency_ms", "headroom", "max_rate")},
        "rule": {"p99_ingest_ms_below": P99_INGEST_MS, "p99_e2e_ms_below": P99_E2E_MS,
                 "accepted_at_least": MIN_ACCEPTED, "errors_other_than_429": 0},
        "steps": steps,
        "capacity_msgs_per_s": cap,
        "capacity_is_lower_bound": lower_bound,
        "target_msgs_per_s": TARGET_CAPACITY,
        "pass": cap is not None and cap >= TARGET_CAPACITY,
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(doc, f, indent=2)
    with open(os.path.join(out, "p99.svg"), "w") as f:
        f.write(svg_plot(steps, cap))

    if not steps:
        verdict = "unknown: no step ran"
    else:
        why = (": the first step failed" if cap is None
               else f": every step up to MAX_RATE ({args.max_rate:.0f}) passed" if lower_bound else "")
        verdict = f"{capacity_text(doc)} msg/s{why}"
    lines = [f"# make bench-capacity — {os.path.normpath(out).split('bench/results/', 1)[-1]}", "",
             f"Machine: {doc['machine']}", "",
             bench_summary.probe_line(doc["machine_probe"], "the steps"), "",
             bench_summary.steal_line(steal, "every step"), "",
             f"**Capacity: {verdict}** (target ≥ {TARGET_CAPACITY}: {'PASS' if doc['pass'] else 'FAIL'}).", "",
             f"Steps of {args.step_seconds:g} s after a {args.warmup:g} s warm-up (rising over its first half), "
             f"{args.connections} connections, nlp-sim at {args.nlp_latency_ms:g} ms; worker pool = rate x "
             f"{args.nlp_latency_ms:g} ms x {args.headroom:g}, never below the configured one. A step passes with "
             f"P99 ingest < {P99_INGEST_MS:g} ms, P99 end to end < {P99_E2E_MS:g} ms (every accepted message "
             f"stored), ≥ {MIN_ACCEPTED:.0%} of offered requests accepted and no errors but 429.", "",
             "| offered (msg/s) | worker pool | accepted (msg/s) | accepted | P99 ingest (ms) | P99 end to end (ms) | 429 | other errors | |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in steps:
        lines.append(f"| {s['rate']:.0f} | {s['pool']} | {fmt(s['accepted_msgs_per_s'], '.0f')} | {s['accepted_ratio']:.2%} | "
                     f"{fmt(s['p99_ingest_ms'])} | {fmt(s['p99_e2e_ms'])} | {s['throttled']} | {s['errors']} | "
                     f"{'PASS' if s['pass'] else 'FAIL: ' + '; '.join(s['reasons'])} |")
    lines += ["", "Plot: p99.svg (both P99s against the offered rate). Each step's loadgen report: step-<rate>/."]
    print("\n".join(lines))
    return 0 if doc["pass"] else 1


def capacity_text(run):
    """A run's capacity as its report states it: a rate, "≥ rate" when every step passed up
    to MAX_RATE, "below rate" when the first step failed."""
    steps = run.get("steps") or []
    cap = run.get("capacity_msgs_per_s")
    if cap is None:
        return f"below {steps[0]['rate']:.0f}" if steps else "no report"
    return f"≥ {cap:.0f}" if run.get("capacity_is_lower_bound") else f"{cap:.0f}"


def median_run(runs):
    """The run whose capacity is the median (a run whose first step failed, or without a
    report, ranks below every rate); of an even count the lower middle, so that two runs
    never report the better one."""
    ranked = sorted(runs, key=lambda r: -1 if r.get("capacity_msgs_per_s") is None else r["capacity_msgs_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def per_rate(runs):
    """Per offered rate, over the runs that stepped it: how many, how many passed, and the
    median and min–max of each P99 where measured."""
    rates = sorted({s["rate"] for r in runs for s in r.get("steps") or []})
    rows = []
    for rate in rates:
        steps = [s for r in runs for s in r.get("steps") or [] if s["rate"] == rate]
        row = {"rate": rate, "runs": len(steps), "passed": sum(1 for s in steps if s["pass"])}
        for key in ("p99_ingest_ms", "p99_e2e_ms"):
            values = [s[key] for s in steps if s[key] is not None]
            row[key] = statistics.median(values) if values else None
            row[key + "_min"] = min(values) if values else None
            row[key + "_max"] = max(values) if values else None
        rows.append(row)
    return rows


def combine(out, run_dirs):
    runs = []
    for d in run_dirs:
        run = bench_summary.load(os.path.join(d, "report.json"))
        run["dir"] = os.path.basename(os.path.normpath(d))
        runs.append(run)
    middle = median_run(runs)
    cap = middle.get("capacity_msgs_per_s")
    rates = per_rate(runs)
    doc = {
        "machine": bench_summary.machine(),
        "runs": [{"dir": r["dir"], "capacity_msgs_per_s": r.get("capacity_msgs_per_s"),
                  "capacity_is_lower_bound": r.get("capacity_is_lower_bound"), "capacity": capacity_text(r),
                  "machine_probe": r.get("machine_probe"), "steal": r.get("steal"), "error": r.get("_error")} for r in runs],
        "capacity_msgs_per_s": cap,
        "capacity": capacity_text(middle),
        "capacity_is_lower_bound": bool(middle.get("capacity_is_lower_bound")),
        "per_rate": rates,
        "target_msgs_per_s": TARGET_CAPACITY,
        "pass": cap is not None and cap >= TARGET_CAPACITY,
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(doc, f, indent=2)
    medians = [{"rate": r["rate"], "p99_ingest_ms": r["p99_ingest_ms"], "p99_e2e_ms": r["p99_e2e_ms"],
                "pass": r["passed"] * 2 > r["runs"]} for r in rates]
    with open(os.path.join(out, "p99.svg"), "w") as f:
        f.write(svg_plot(medians, cap))

    def spread(row, key):
        if row[key] is None:
            return "–"
        return f"{row[key]:.1f} ({row[key + '_min']:.1f}–{row[key + '_max']:.1f})"

    lines = [f"# make bench-capacity — {os.path.normpath(out).split('bench/results/', 1)[-1]}: median of {len(runs)} runs", "",
             f"Machine: {doc['machine']}", "",
             f"**Capacity: {doc['capacity']} msg/s, the median run's** (runs: {', '.join(r['capacity'] for r in doc['runs'])}; "
             f"target ≥ {TARGET_CAPACITY}: {'PASS' if doc['pass'] else 'FAIL'}).", "",
             "Each run started its own stack and stepped the rate until a step failed; a run whose first step failed "
             "ranks below every rate, and of an even number of runs the lower middle one is the median.", "",
             "| run | capacity (msg/s) | kernel costs: a system call, a wake-up round trip | competing process (cores used) |",
             "|---|---:|---|---:|"]
    for r in doc["runs"]:
        probe = r["machine_probe"] or {}
        kernel = (f"{probe['syscall_ns']} ns, {probe['wakeup_round_trip_us']} µs"
                  if "syscall_ns" in probe else "not measured")
        steal = r["steal"] or {}
        if not steal.get("requested"):
            competing = "none"
        else:
            competing = "no report" if steal.get("cores_used") is None else steal["cores_used"]
        lines.append(f"| {r['dir']} | {r['capacity']} | {kernel} | {competing} |")
    lines += ["", "Per offered rate, over the runs that reached it (P99 in ms, median and min–max):", "",
              "| offered (msg/s) | runs | passed | P99 ingest | P99 end to end |", "|---:|---:|---:|---:|---:|"]
    for row in rates:
        lines.append(f"| {row['rate']:.0f} | {row['runs']} | {row['passed']} | {spread(row, 'p99_ingest_ms')} | {spread(row, 'p99_e2e_ms')} |")
    lines += ["", "Plot: p99.svg (the median P99s against the offered rate; hollow where most runs failed the step). "
              "Each run's report: run-N/report.md."]
    print("\n".join(lines))
    return 0 if doc["pass"] else 1


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pool-size")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--headroom", type=float, default=1.25)
    p.add_argument("--minimum", type=int, default=1)
    p = sub.add_parser("step")
    p.add_argument("report_json")
    p = sub.add_parser("report")
    p.add_argument("out")
    p.add_argument("--step-seconds", type=float, default=30)
    p.add_argument("--warmup", type=float, default=10)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--nlp-latency-ms", type=float, default=200)
    p.add_argument("--headroom", type=float, default=1.25)
    p.add_argument("--max-rate", type=float, default=40000)
    p = sub.add_parser("combine")
    p.add_argument("out")
    p.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "pool-size":
        print(pool_size(args.rate, args.latency_ms, args.headroom, args.minimum))
        return 0
    if args.command == "step":
        v = step_verdict(bench_summary.load(args.report_json))
        print(f"bench-capacity: {v['rate'] or 0:.0f} msg/s: " + ("pass" if v["pass"] else "FAIL: " + "; ".join(v["reasons"])), file=sys.stderr)
        return 0 if v["pass"] else 1
    if args.command == "combine":
        return combine(args.out, args.runs)
    return report(args.out, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
