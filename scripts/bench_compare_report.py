"""The report of scripts/bench_compare.sh: CPU per message of each kind of process, the P99 of
ingest and the Kafka broker's GC pauses under each configuration, from the run rows of runs.csv,
each run's load generator report and its kafka-gc.log, and what the competing process used
(burner.json, when STEAL asked for one).

    python3 scripts/bench_compare_report.py RESULTS_DIR CLK_TCK > summary.md

A run's µs per message is its ticks over the measured seconds, divided by the rate its load
generator reports as accepted. Runs in which the NLP breaker refused calls are shown but left
out of the medians: the worker and nlp-sim then skip their most expensive stage.
"""
import csv
import json
import os
import statistics
import sys

from bench_summary import kafka_gc

GROUPS = ["ingest", "worker", "nlp_sim", "postgres", "kafka", "load_generator", "machine"]
HEADINGS = ["ingest", "worker", "nlp-sim", "Postgres", "Kafka", "load generator", "machine"]
# The summary's columns: the groups' µs per message, then the P99 of request → 202 and of
# sent → stored (ms), which show whether a change that saves CPU costs latency, and the broker's
# stop-the-world GC time in the load generator's measured window (ms), which every produce
# request in flight waits out.
COLUMNS = GROUPS + ["p99_ms", "e2e_p99_ms", "gc_ms"]
COLUMN_HEADINGS = HEADINGS + ["P99 ingest (ms)", "P99 end to end (ms)", "broker GC (ms)"]


def run_figures(row, clk_tck, accepted_per_s):
    """µs per message of each group for one runs.csv row."""
    seconds = float(row["seconds"])
    per_message = {}
    for group in GROUPS:
        cpu_seconds = int(row[group]) / clk_tck
        per_message[group] = cpu_seconds * 1e6 / (seconds * accepted_per_s)
    return per_message


def load_runs(results, clk_tck):
    """Every run: its configuration index, round, figures, breaker refusals and P99 ingest."""
    runs = []
    with open(os.path.join(results, "runs.csv"), newline="") as f:
        for row in csv.DictReader(f):
            with open(os.path.join(row["dir"], "steady", "report.json")) as r:
                steady = json.load(r)
            report = steady["results"]
            accepted = report["accepted_msgs_per_s"]
            gc = kafka_gc(os.path.join(row["dir"], "kafka-gc.log"), steady)
            e2e = (steady.get("e2e") or {}).get("latency_ms") or {}
            runs.append({
                "config": int(row["config"]),
                "pair": int(row["pair"]),
                "accepted": accepted,
                "p99_ms": report["latency_ms"]["p99"],
                "e2e_p99_ms": e2e.get("p99"),
                "gc_ms": gc["total_ms"] if gc else None,
                "refused": int(row["breaker_refused"]),
                "us": run_figures(row, clk_tck, accepted),
            })
    return runs


def medians(runs, config):
    """Median µs per message of each group and median P99 ingest over the configuration's runs
    without refusals, and how many runs that was."""
    kept = [r for r in runs if r["config"] == config and r["refused"] == 0]
    if not kept:
        return None, 0
    figures = {g: statistics.median(r["us"][g] for r in kept) for g in GROUPS}
    figures["p99_ms"] = statistics.median(r["p99_ms"] for r in kept)
    for column in ("e2e_p99_ms", "gc_ms"):
        known = [r[column] for r in kept if r[column] is not None]
        figures[column] = statistics.median(known) if known else None
    return figures, len(kept)


def load_burner(results):
    """What scripts/cpu_burner.py wrote for the runs (its JSON), or None when none ran."""
    path = os.path.join(results, "burner.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def report(configs, runs, burner=None):
    """summary.md as text; `burner` is load_burner's answer."""
    lines = ["# make bench-compare", "", "Configurations:", ""]
    for i, config in enumerate(configs):
        lines.append(f"{i + 1}. `{config}`" if config else f"{i + 1}. as shipped")
    if burner is not None:
        lines += ["", f"Competing process through every run: STEAL={burner['steal']} of one core asked for; "
                      f"it used {burner['cores']:.3f} of a core ({burner['cpu_s']} s of CPU in {burner['wall_s']} s)."]
    lines += ["", "CPU per accepted message (µs), P99 ingest and end to end (ms, — when the messages were "
              "not looked up in Postgres) and the broker's GC pauses in the load "
              "generator's measured window (ms, — when its GC log was not read), medians of the runs in "
              "which the NLP breaker refused no call; the ratio is to configuration 1:", ""]
    lines.append("| configuration | runs | " + " | ".join(COLUMN_HEADINGS) + " |")
    lines.append("|---|---:|" + "---:|" * len(COLUMNS))
    base, _ = medians(runs, 0)
    for i in range(len(configs)):
        med, n = medians(runs, i)
        if med is None:
            lines.append(f"| {i + 1} | 0 | " + " | ".join("—" for _ in COLUMNS) + " |")
            continue
        cells = []
        for g in COLUMNS:
            if med[g] is None:
                cells.append("—")
                continue
            cell = f"{med[g]:.1f}"
            if i > 0 and base is not None and base[g]:
                cell += f" ({med[g] / base[g]:.2f})"
            cells.append(cell)
        lines.append(f"| {i + 1} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Every run, in the order run:", ""]
    lines.append("| round | configuration | accepted msg/s | P99 ingest (ms) | P99 end to end (ms) | broker GC (ms) "
                 "| breaker refused | " + " | ".join(HEADINGS) + " |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(GROUPS))
    for r in sorted(runs, key=lambda r: (r["pair"], r["config"])):
        e2e, gc = ("—" if r[c] is None else f"{r[c]:.1f}" for c in ("e2e_p99_ms", "gc_ms"))
        lines.append(f"| {r['pair']} | {r['config'] + 1} | {r['accepted']:.0f} | {r['p99_ms']:.1f} | {e2e} | {gc} | "
                     f"{r['refused']} | " + " | ".join(f"{r['us'][g]:.1f}" for g in GROUPS) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: bench_compare_report.py RESULTS_DIR CLK_TCK")
    results, clk_tck = argv[1], int(argv[2])
    with open(os.path.join(results, "configurations.txt")) as f:
        configs = f.read().split("\n")[:-1]
    sys.stdout.write(report(configs, load_runs(results, clk_tck), load_burner(results)))


if __name__ == "__main__":
    main(sys.argv)
