#!/usr/bin/env python3
"""One-screen summary of a `make bench` run: figures and pass/fail against SPEC targets.

Reads <dir>/steady/report.json, <dir>/connections/report.json, <dir>/resources.csv, the Kafka
broker's GC pauses <dir>/kafka-gc.log and, when STEAL asked for a competing process,
<dir>/burner.json (written by scripts/bench.sh and scripts/cpu_burner.py); writes
<dir>/summary.json and prints Markdown. Environment: RATE, MANY_CONNECTIONS (the targets), STEAL (the share of a core the competing process was asked for).
"""
import csv
import datetime
import json
import os
import platform
import re
import sys

TARGET_RATE = float(os.environ.get("RATE", "10000"))
TARGET_CONNECTIONS = int(os.environ.get("MANY_CONNECTIONS", "50000"))
STEAL = float(os.environ.get("STEAL") or "0")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"_error": f"{path}: {e}"}


def machine_facts():
    """The machine a run happened on, from /proc: what every bench and chaos report states."""
    model, mem_kb = "unknown", 0
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1048576, 1),
            "kernel": f"{platform.system()} {platform.release()}"}


def machine(sharing="Kafka, Postgres, nlp-sim and the load generator"):
    """The machine as a sentence, with what shared it during the run."""
    m = machine_facts()
    return f"{m['cores']} CPU ({m['cpu']}), {m['memory_gib']:.1f} GiB RAM, {m['kernel']}; {sharing} on the same machine"


def median(values):
    return sorted(values)[len(values) // 2] if values else None


def fractions(steady, ceilings, e2e):
    """Each stage's rate in the steady run next to the ceiling of its component alone."""
    rate = steady.get("accepted_msgs_per_s")
    if not rate or "_error" in ceilings:
        return []
    rows = []
    http = ceilings.get("http", {}).get("accepted_per_sec")
    if http:
        rows.append(("HTTP ingest (202 without Kafka)", rate, http))
    kafka = ceilings.get("kafka", {}).get("records_per_sec")
    if kafka:
        rows.append(("Kafka produce", rate, kafka))
    # The worker claims every key in message_keys and appends the rollup deltas: its ceiling
    # is the rollups statement's (the keyed one's in reports from before the rollups).
    runs = ceilings.get("postgres", {}).get("runs", [])
    worker_statement = "rollups" if any(r.get("statement") == "rollups" for r in runs) else "keyed"
    pg = max((r.get("rows_per_sec", 0) for r in runs if r.get("statement", "keyed") == worker_statement), default=0)
    if pg and e2e.get("found"):
        label = "with message keys and rollups" if worker_statement == "rollups" else "with message keys"
        rows.append((f"Postgres insert {label} (rows stored)", rate, pg))
    return [{"stage": name, "rate": round(r), "ceiling": round(c), "fraction": round(r / c, 3)} for name, r, c in rows]


def steal(out):
    """What the competing process was asked for and what it really used (cores = its CPU
    seconds over its wall seconds; None when none ran or it left no report)."""
    burner = load(os.path.join(out, "burner.json")) if STEAL > 0 else {}
    return {"requested": STEAL, "cores_used": burner.get("cores"), "cpu_s": burner.get("cpu_s"), "wall_s": burner.get("wall_s")}


def steal_line(s, span="both scenarios"):
    if not s["requested"]:
        return "Competing process: none (STEAL=0)."
    if s["cores_used"] is None:
        return f"Competing process: STEAL={s['requested']} asked for, but it left no report (burner.json)."
    return (f"Competing process: STEAL={s['requested']} of one core asked for through {span}; "
            f"it used {s['cores_used']:.2f} of a core ({s['cpu_s']} s of CPU in {s['wall_s']} s).")


def probe_line(probe, before="the scenarios"):
    """The machine's kernel costs (examples/machine_probe.rs), or why they are missing."""
    if "_error" in probe:
        return f"Kernel costs: not measured ({probe['_error']})."
    return (f"Kernel costs, measured on the quiet machine before {before} (examples/machine_probe.rs): "
            f"a system call {probe['syscall_ns']} ns, a wake-up round trip between two threads "
            f"{probe['wakeup_round_trip_us']} µs.")


# Seconds at the start of the steady phase that are the load generator's warm-up.
WARMUP_SECONDS = 10


# resources.csv's CPU columns for each kind of process, besides the service's `cpu_pct`.
PROCESS_COLUMNS = {
    "worker": "worker_cpu_pct",
    "nlp_sim": "nlp_cpu_pct",
    "postgres": "postgres_cpu_pct",
    "kafka": "kafka_cpu_pct",
    "load_generator": "loadgen_cpu_pct",
    "machine": "machine_cpu_pct",
}

# resources.csv's share of the CPUs no process of this machine had: time the hypervisor gave
# them to other virtual machines (`steal`), % of one core. Not a cost per message.
HYPERVISOR_COLUMNS = {"hypervisor_steal": "hypervisor_steal_pct"}


def steady_resources(path):
    """RSS (MB, every sample), and at the steady rate the service's CPU (% of one core per
    second) and each kind of process's (the ingest processes', the service's less the
    worker's, PROCESS_COLUMNS and HYPERVISOR_COLUMNS; a column the file lacks gives an empty
    list) from resources.csv. The steady phase is the rows marked `steady` without
    its first WARMUP_SECONDS; files without a phase column (older runs) count every row,
    as they used to."""
    columns = {**PROCESS_COLUMNS, **HYPERVISOR_COLUMNS}
    rss, cpu, processes = [], [], {kind: [] for kind in ["ingest", *columns]}
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return rss, cpu, processes
    try:
        rss = [int(row["rss_kb"]) / 1024 for row in rows]
        if rows and "phase" in rows[0]:
            rows = [row for row in rows if row["phase"] == "steady"][WARMUP_SECONDS:]
        for row in rows:
            cpu.append(int(row["cpu_pct"]))
            if row.get("worker_cpu_pct"):
                processes["ingest"].append(int(row["cpu_pct"]) - int(row["worker_cpu_pct"]))
            for kind, column in columns.items():
                if row.get(column):
                    processes[kind].append(int(row[column]))
    except (ValueError, KeyError):
        pass
    return rss, cpu, processes


def hypervisor_line(steal_pct):
    """The hypervisor's steal at the steady rate, for the summary; nothing when not sampled."""
    if steal_pct is None:
        return ""
    return f"taken by the hypervisor for other machines: {steal_pct}% of one core; "


def us_per_message(processes, rate):
    """Each kind of process's median CPU per accepted message at the steady rate (µs); kinds
    without samples, and the hypervisor's share, are left out."""
    if not rate:
        return {}
    return {kind: round(median(pct) / 100 * 1e6 / rate, 1) for kind, pct in processes.items()
            if pct and kind not in HYPERVISOR_COLUMNS}


def worker_metrics(out):
    """The worker's last scrape of the run (metrics-0.txt), series → value; {} without one."""
    values = {}
    try:
        with open(os.path.join(out, "metrics-0.txt")) as f:
            for line in f:
                if line.startswith("#"):
                    continue
                name, _, value = line.rpartition(" ")
                try:
                    values[name] = float(value)
                except ValueError:
                    continue
    except OSError:
        return {}
    return values


def folds(metrics):
    """The worker's rollup folds over the run."""
    count = metrics.get("rollup_fold_duration_seconds_count")
    if not count:
        return None
    return {"folds": int(count), "mean_ms": round(1000 * metrics["rollup_fold_duration_seconds_sum"] / count, 1)}


def nlp_calls(metrics):
    """What enrichment did over the run: the calls made, their mean time and how many timed
    out, and the calls the open breaker and the retry budget refused. Runs of the same code
    differ most in how long the breaker stayed open."""
    calls = metrics.get("nlp_api_duration_seconds_count")
    if calls is None:
        return None

    def errors(kind):
        return int(metrics.get(f'nlp_api_errors_total{{kind="{kind}"}}', 0))

    return {
        "calls": int(calls),
        "mean_call_ms": round(1000 * metrics.get("nlp_api_duration_seconds_sum", 0) / calls, 1) if calls else None,
        "timed_out": errors("timeout"),
        "refused_by_breaker": errors("breaker_open"),
        "retries_refused_by_budget": errors("budget_exhausted"),
    }


# A stop-the-world pause as the broker's JVM logs it (-Xlog:gc, scripts/infra.sh):
# "[2026-12-03T01:14:18.833+0000][352.298s][info][gc ] GC(37) Pause Young (Normal) (G1 Evacuation
# Pause) 701M->186M(1024M) 57.633ms". The line that opens a pause has no duration and is skipped.
GC_PAUSE = re.compile(r"^\[(\S+?)\].*\bGC\(\d+\) Pause .* ([0-9.]+)ms$")


def utc_time(text):
    """An RFC 3339 time as the load generator writes it (nanoseconds, "Z"), or None."""
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)$", text or "")
    if not m:
        return None
    fraction = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")


def kafka_gc(path, steady):
    """The broker's stop-the-world GC pauses within the steady scenario's measured window
    (from the load generator's start, warm-up and duration): how many, their total and
    longest (ms), and the share of the window they took. Every produce request in flight
    waits out a pause, so its length reaches the 202's tail. None without the log or the
    window."""
    start = utc_time(steady.get("started_at"))
    config = steady.get("config") or {}
    window_s = config.get("duration_s")
    if start is None or "warmup_s" not in config or not window_s:
        return None
    start += datetime.timedelta(seconds=config["warmup_s"])
    end = start + datetime.timedelta(seconds=window_s)
    pauses = []
    try:
        with open(path) as f:
            for line in f:
                m = GC_PAUSE.match(line.strip())
                if not m:
                    continue
                try:
                    at = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z")
                except ValueError:
                    continue
                if start <= at <= end:
                    pauses.append(float(m.group(2)))
    except OSError:
        return None
    total = sum(pauses)
    return {
        "pauses": len(pauses),
        "total_ms": round(total, 1),
        "max_ms": round(max(pauses), 1) if pauses else 0.0,
        "share_of_window": round(total / (1000 * window_s), 4),
    }


def main(out):
    steady = load(os.path.join(out, "steady", "report.json"))
    many = load(os.path.join(out, "connections", "report.json"))
    ceilings = load(os.path.join(out, "ceilings", "ceilings.json"))
    rss, cpu, processes = steady_resources(os.path.join(out, "resources.csv"))
    metrics = worker_metrics(out)

    s = steady.get("results", {})
    statuses = s.get("status_counts", {})
    errors = sum(n for code, n in statuses.items() if code not in ("202", "429")) + sum(s.get("failures", {}).values())
    e2e = steady.get("e2e") or {}
    # Service CPU (ingest + worker) per accepted message at the steady rate.
    rate = s.get("accepted_msgs_per_s") or 0
    us_per_msg = round(median(cpu) / 100 * 1e6 / rate, 1) if cpu and rate else None
    checks = [
        ("throughput (msg/s accepted)", s.get("accepted_msgs_per_s", 0), f">= {0.99 * TARGET_RATE:.0f}", s.get("accepted_msgs_per_s", 0) >= 0.99 * TARGET_RATE),
        ("errors other than 429", errors, "0", errors == 0 and "results" in steady),
        ("P99 ingest latency (ms)", s.get("latency_ms", {}).get("p99"), "< 50", (s.get("latency_ms", {}).get("p99") or 1e9) < 50),
        ("P99 end-to-end latency (ms)", e2e.get("latency_ms", {}).get("p99"), "< 400", (e2e.get("latency_ms", {}).get("p99") or 1e9) < 400 and e2e.get("missing", 1) == 0),
        ("connections held open", many.get("connections", {}).get("connected"), f"= {TARGET_CONNECTIONS}", many.get("connections", {}).get("connected", 0) >= TARGET_CONNECTIONS),
        ("service RSS max (MB)", round(max(rss), 1) if rss else None, "< 300", bool(rss) and max(rss) < 300),
        ("service CPU per message at the steady rate (µs, median second)", us_per_msg, "<= 35", us_per_msg is not None and us_per_msg <= 35),
    ]
    summary = {
        "machine": machine(),
        "machine_probe": load(os.path.join(out, "machine-probe.json")),
        "steal": steal(out),
        "steady": {"offered_rate": TARGET_RATE, "statuses": statuses, "e2e_found": e2e.get("found"), "e2e_missing": e2e.get("missing")},
        "cpu_pct_median": median(cpu),
        "worker_cpu_pct_median": median(processes["worker"]),
        "machine_cpu_pct_median": median(processes["machine"]),
        "hypervisor_steal_pct_median": median(processes["hypervisor_steal"]),
        "us_per_message": us_per_message(processes, rate),
        "fractions_of_ceilings": fractions(s, ceilings, e2e),
        "rollup_folds": folds(metrics),
        "nlp": nlp_calls(metrics),
        "kafka_gc": kafka_gc(os.path.join(out, "kafka-gc.log"), steady),
        "checks": [{"what": w, "value": v, "target": t, "pass": bool(p)} for w, v, t, p in checks],
        "errors": [d["_error"] for d in (steady, many) if "_error" in d],
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"# make bench — {os.path.normpath(out).split('bench/results/', 1)[-1]}\n")
    print(f"Machine: {summary['machine']}\n")
    print(f"{probe_line(summary['machine_probe'])}\n")
    print(f"{steal_line(summary['steal'])}\n")
    print("| target | measured | goal | |")
    print("|---|---|---|---|")
    for w, v, t, p in checks:
        print(f"| {w} | {v} | {t} | {'PASS' if p else 'FAIL'} |")
    if summary["fractions_of_ceilings"]:
        print("\nEach stage at the steady rate, as a fraction of its component's ceiling measured alone:\n")
        print("| stage | steady rate (/s) | ceiling alone (/s) | fraction |")
        print("|---|---:|---:|---:|")
        for row in summary["fractions_of_ceilings"]:
            print(f"| {row['stage']} | {row['rate']} | {row['ceiling']} | {row['fraction']:.1%} |")
    print(f"\nAt the steady rate (median second, warm-up left out): service CPU {summary['cpu_pct_median']}% of one core "
          f"(worker {summary['worker_cpu_pct_median']}%, the rest the ingest processes); whole machine: "
          f"{summary['machine_cpu_pct_median']}% of one core (of {100 * (os.cpu_count() or 1)}{', the competing process included' if STEAL else ''}); "
          f"{hypervisor_line(summary['hypervisor_steal_pct_median'])}statuses (steady): {statuses}")
    if summary["us_per_message"]:
        print("\nCPU per accepted message at the steady rate (µs, median second; the machine's includes everything):\n")
        print("| " + " | ".join(summary["us_per_message"]) + " |")
        print("|" + "---:|" * len(summary["us_per_message"]))
        print("| " + " | ".join(str(v) for v in summary["us_per_message"].values()) + " |")
    if summary["rollup_folds"]:
        f = summary["rollup_folds"]
        print(f"\nRollup folds (worker, whole run): {f['folds']} transactions, {f['mean_ms']} ms on average.")
    if summary["nlp"]:
        n = summary["nlp"]
        print(f"\nNLP calls (worker, whole run): {n['calls']} made, {n['mean_call_ms']} ms on average, "
              f"{n['timed_out']} timed out; {n['refused_by_breaker']} refused by the open breaker (those "
              f"messages stored without NLP data, to be enriched again), {n['retries_refused_by_budget']} "
              f"retries refused by the retry budget.")
    if summary["kafka_gc"]:
        g = summary["kafka_gc"]
        print(f"\nKafka broker GC (steady scenario, measured window): {g['pauses']} stop-the-world pauses, "
              f"{g['total_ms']} ms in all ({g['share_of_window']:.2%} of the window), the longest {g['max_ms']} ms; "
              f"every produce request in flight waits out a pause.")
    for err in summary["errors"]:
        print(f"\nmissing report: {err}")
    return 0 if all(p for *_, p in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
