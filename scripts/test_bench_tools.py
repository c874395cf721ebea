"""Tests of the bench tools' pure parts, without the stack: the medians and verdicts of
scripts/bench_median.py, the capacity rule, pool size, SVG and median of runs of
scripts/bench_capacity_report.py, the competing process of scripts/cpu_burner.py, the A/B report
of scripts/bench_compare_report.py, and the check of STEAL and the wait for a quiet machine
in scripts/bench_lib.sh.

    python3 -m unittest scripts/test_bench_tools.py

A few seconds: the burner test runs the burner for about 2 s, the quiet-machine tests about 6 s.
"""
import argparse
import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_capacity_report as cap  # noqa: E402
import bench_compare_report  # noqa: E402
import bench_median  # noqa: E402
import bench_summary  # noqa: E402
import cpu_burner  # noqa: E402


def run_summary(p99_ingest=30.0, p99_e2e=300.0, e2e_pass=None, cpu=70, kafka_fraction=0.06, pg_fraction=0.3, reverse=False):
    """A per-run summary.json as scripts/bench_summary.py writes it."""
    fractions = [
        {"stage": "Kafka produce", "rate": 9990, "ceiling": 170000, "fraction": kafka_fraction},
        {"stage": "Postgres insert with message keys and rollups (rows stored)", "rate": 9990, "ceiling": 33000, "fraction": pg_fraction},
    ]
    return {
        "machine": "2 CPU (test)",
        "steal": {"requested": 0.5, "cores_used": 0.49, "cpu_s": 45.0, "wall_s": 92.0},
        "steady": {"offered_rate": 10000.0, "statuses": {"202": 600000, "429": 3}, "e2e_found": 600000, "e2e_missing": 0},
        "cpu_pct_median": cpu,
        "machine_cpu_pct_median": 170,
        "fractions_of_ceilings": fractions[::-1] if reverse else fractions,
        "checks": [
            {"what": "P99 ingest latency (ms)", "value": p99_ingest, "target": "< 50", "pass": p99_ingest < 50},
            {"what": "P99 end-to-end latency (ms)", "value": p99_e2e, "target": "< 400",
             "pass": p99_e2e < 400 if e2e_pass is None else e2e_pass},
            {"what": "errors other than 429", "value": 0, "target": "0", "pass": True},
        ],
        "errors": [],
    }


def check(combined, what):
    return next(c for c in combined["checks"] if c["what"] == what)


class MedianOfRuns(unittest.TestCase):
    def test_every_figure_is_the_median_of_the_runs_with_min_max_and_each_run(self):
        runs = [run_summary(cpu=95), run_summary(cpu=60), run_summary(cpu=70)]
        combined = bench_median.combine(runs, ["run-1", "run-2", "run-3"])
        self.assertEqual(combined["figures"]["cpu_pct_median"], {"median": 70, "min": 60, "max": 95, "runs": [95, 60, 70]})
        self.assertEqual(combined["figures"]["steady/statuses/429"]["median"], 3)
        self.assertEqual(check(combined, "P99 ingest latency (ms)")["runs"], [30.0, 30.0, 30.0])

    def test_list_items_line_up_by_name_not_by_position(self):
        runs = [run_summary(kafka_fraction=0.05, pg_fraction=0.30),
                run_summary(kafka_fraction=0.07, pg_fraction=0.32, reverse=True),
                run_summary(kafka_fraction=0.06, pg_fraction=0.31)]
        figures = bench_median.combine(runs, ["a", "b", "c"])["figures"]
        self.assertEqual(figures["fractions_of_ceilings/Kafka produce/fraction"]["runs"], [0.05, 0.07, 0.06])
        self.assertAlmostEqual(figures["fractions_of_ceilings/Kafka produce/fraction"]["median"], 0.06)

    def test_a_target_passes_when_its_median_meets_it_and_most_runs_passed(self):
        combined = bench_median.combine([run_summary(p99_ingest=30), run_summary(p99_ingest=55), run_summary(p99_ingest=41)], list("abc"))
        c = check(combined, "P99 ingest latency (ms)")
        self.assertEqual((c["median"], c["min"], c["max"]), (41, 30, 55))
        self.assertEqual((c["runs_passed"], c["runs_total"]), (2, 3))
        self.assertTrue(c["pass"])

    def test_a_target_fails_when_its_median_misses_it(self):
        combined = bench_median.combine([run_summary(p99_ingest=30), run_summary(p99_ingest=55), run_summary(p99_ingest=60)], list("abc"))
        c = check(combined, "P99 ingest latency (ms)")
        self.assertEqual(c["runs_passed"], 1)
        self.assertFalse(c["pass"])

    def test_a_median_within_the_goal_fails_when_most_runs_failed_by_their_own_rule(self):
        # End-to-end P99 under 400 ms in every run, but rows missing in two of them.
        runs = [run_summary(p99_e2e=300), run_summary(p99_e2e=320, e2e_pass=False), run_summary(p99_e2e=350, e2e_pass=False)]
        c = check(bench_median.combine(runs, list("abc")), "P99 end-to-end latency (ms)")
        self.assertTrue(c["median_meets_goal"])
        self.assertEqual(c["runs_passed"], 1)
        self.assertFalse(c["pass"])

    def test_a_run_without_a_summary_passed_nothing(self):
        two_of_three = bench_median.combine([run_summary(), None, run_summary(p99_ingest=40)], list("abc"))
        c = check(two_of_three, "P99 ingest latency (ms)")
        self.assertEqual(c["runs"], [30.0, None, 40])
        self.assertEqual(c["median"], 35.0)
        self.assertEqual((c["runs_passed"], c["pass"]), (2, True))
        self.assertIn("b: no summary.json", two_of_three["errors"])
        one_of_three = bench_median.combine([run_summary(), None, None], list("abc"))
        self.assertFalse(check(one_of_three, "P99 ingest latency (ms)")["pass"])

    def test_goals_as_the_summaries_write_them(self):
        self.assertTrue(bench_median.goal_met(">= 9900", 9900))
        self.assertFalse(bench_median.goal_met(">= 9900", 9899.9))
        self.assertFalse(bench_median.goal_met("< 50", 50))
        self.assertTrue(bench_median.goal_met("0", 0))
        self.assertFalse(bench_median.goal_met("0", 1))
        self.assertFalse(bench_median.goal_met("= 50000", 49999))
        self.assertFalse(bench_median.goal_met("< 300", None))
        self.assertIsNone(bench_median.goal_met("all of them", 1))

    def test_main_writes_the_combined_summary_and_fails_when_a_target_fails(self):
        with tempfile.TemporaryDirectory() as out:
            dirs = []
            for i, p99 in enumerate([30, 60, 70], 1):
                d = os.path.join(out, f"run-{i}")
                os.mkdir(d)
                with open(os.path.join(d, "summary.json"), "w") as f:
                    json.dump(run_summary(p99_ingest=p99), f)
                dirs.append(d)
            with contextlib.redirect_stdout(io.StringIO()) as md:
                status = bench_median.main([out] + dirs)
            self.assertEqual(status, 1)
            self.assertIn("| P99 ingest latency (ms) | 60 | 30–70 | 30, 60, 70 | < 50 | 1/3 | FAIL |", md.getvalue())
            with open(os.path.join(out, "summary.json")) as f:
                self.assertEqual(json.load(f)["runs"], ["run-1", "run-2", "run-3"])


def step_report(rate=10000.0, p99_ingest=10.0, p99_e2e=300.0, accepted_share=1.0, statuses=None, failures=None, missing=0, e2e=True):
    """A loadgen report.json (crates/loadgen/src/report/) with just the fields the rule reads."""
    offered = int(rate * 30)
    accepted = int(offered * accepted_share)
    report = {
        "config": {"rate": rate},
        "results": {
            "measured_requests": offered,
            "accepted_requests": accepted,
            "accepted_msgs_per_s": accepted / 30,
            "status_counts": statuses if statuses is not None else {"202": accepted},
            "failures": failures or {},
            "latency_ms": {"count": accepted, "p99": p99_ingest},
        },
        "e2e": {"requested": accepted, "found": accepted - missing, "missing": missing,
                "latency_ms": {"count": accepted - missing, "p99": p99_e2e}} if e2e else None,
    }
    if not e2e:
        report["e2e_error"] = "connecting to Postgres for the end-to-end lookup: refused"
    return report


class SteadyResources(unittest.TestCase):
    def write(self, rows, header="t_s,rss_kb,cpu_pct,worker_rss_kb,worker_cpu_pct,machine_cpu_pct,phase"):
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        path = os.path.join(scratch.name, "resources.csv")
        with open(path, "w") as f:
            f.write(header + "\n" + "\n".join(rows) + "\n")
        return path

    def test_cpu_is_taken_at_the_steady_rate_after_the_warm_up_and_rss_over_everything(self):
        rows = [f"{t},100000,5,50000,2,20," for t in range(1, 4)]
        rows += [f"{t},150000,{200 if t < 14 else 80},80000,{150 if t < 14 else 30},180,steady" for t in range(4, 34)]
        rows += [f"{t},400000,20,90000,5,60,connections" for t in range(34, 44)]
        rss, cpu, processes = bench_summary.steady_resources(self.write(rows))
        self.assertEqual(len(cpu), 20, "30 steady seconds less 10 of warm-up")
        self.assertEqual(set(cpu), {80})
        self.assertEqual(set(processes["worker"]), {30})
        self.assertEqual(set(processes["ingest"]), {50}, "the service's CPU less the worker's")
        self.assertEqual(set(processes["machine"]), {180})
        self.assertEqual(processes["postgres"], [], "a column the file lacks")
        self.assertAlmostEqual(max(rss), 400000 / 1024)
        self.assertEqual(len(rss), 43)

    def test_a_file_without_phases_counts_every_row(self):
        header = "t_s,rss_kb,cpu_pct,worker_rss_kb,worker_cpu_pct,machine_cpu_pct"
        rss, cpu, _ = bench_summary.steady_resources(
            self.write([f"{t},1024,{t},512,1,100" for t in range(1, 6)], header))
        self.assertEqual(cpu, [1, 2, 3, 4, 5])
        self.assertEqual(len(rss), 5)


    def test_every_kind_of_process_is_read_and_given_per_message_at_the_steady_rate(self):
        header = ("t_s,rss_kb,cpu_pct,worker_rss_kb,worker_cpu_pct,nlp_cpu_pct,postgres_cpu_pct,"
                  "kafka_cpu_pct,loadgen_cpu_pct,machine_cpu_pct,hypervisor_steal_pct,phase")
        rows = [f"{t},1024,90,512,30,25,{70 + t % 3},20,24,195,{t % 5},steady" for t in range(1, 42)]
        _, _, processes = bench_summary.steady_resources(self.write(rows, header))
        self.assertEqual(len(processes["postgres"]), 31)
        self.assertEqual(bench_summary.median(processes["hypervisor_steal"]), 2)
        figures = bench_summary.us_per_message(processes, 10000)
        self.assertEqual(figures, {"ingest": 60.0, "worker": 30.0, "nlp_sim": 25.0, "postgres": 71.0,
                                   "kafka": 20.0, "load_generator": 24.0, "machine": 195.0},
                         "the hypervisor's share is not a cost per message")
        self.assertEqual(bench_summary.us_per_message(processes, 0), {}, "no rate, no figure")

    def test_the_hypervisors_share_is_stated_only_when_sampled(self):
        self.assertEqual(bench_summary.hypervisor_line(None), "")
        self.assertIn("7% of one core", bench_summary.hypervisor_line(7))

    def test_the_kernel_costs_line_gives_the_probe_figures_or_why_they_are_missing(self):
        line = bench_summary.probe_line({"syscall_ns": 141.6, "wakeup_round_trip_us": 38.06})
        self.assertIn("a system call 141.6 ns", line)
        self.assertIn("a wake-up round trip between two threads 38.06 µs", line)
        with tempfile.TemporaryDirectory() as tmp:
            missing = bench_summary.load(os.path.join(tmp, "machine-probe.json"))
        self.assertIn("Kernel costs: not measured (", bench_summary.probe_line(missing))


class WorkerMetrics(unittest.TestCase):
    PAGE = """# HELP nlp_api_duration_seconds NLP API call time
# TYPE nlp_api_duration_seconds histogram
nlp_api_duration_seconds_bucket{le="0.3"} 900
nlp_api_duration_seconds_sum 250.0
nlp_api_duration_seconds_count 1000
nlp_api_errors_total{kind="breaker_open"} 4000
nlp_api_errors_total{kind="budget_exhausted"} 30
nlp_api_errors_total{kind="timeout"} 120
rollup_fold_duration_seconds_sum 12.5
rollup_fold_duration_seconds_count 50
"""

    def metrics(self, page):
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        with open(os.path.join(scratch.name, "metrics-0.txt"), "w") as f:
            f.write(page)
        return bench_summary.worker_metrics(scratch.name)

    def test_the_runs_nlp_calls_and_what_the_breaker_and_the_budget_refused(self):
        self.assertEqual(bench_summary.nlp_calls(self.metrics(self.PAGE)), {
            "calls": 1000, "mean_call_ms": 250.0, "timed_out": 120,
            "refused_by_breaker": 4000, "retries_refused_by_budget": 30})

    def test_the_runs_rollup_folds(self):
        self.assertEqual(bench_summary.folds(self.metrics(self.PAGE)), {"folds": 50, "mean_ms": 250.0})

    def test_no_scrape_no_figures(self):
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        metrics = bench_summary.worker_metrics(scratch.name)
        self.assertEqual(metrics, {})
        self.assertIsNone(bench_summary.nlp_calls(metrics))
        self.assertIsNone(bench_summary.folds(metrics))


class KafkaGcPauses(unittest.TestCase):
    # The measured window: 10 s of warm-up after 12:00:00.5, then 60 s, 12:00:10.5-12:01:10.5.
    STEADY = {"started_at": "2026-12-03T12:00:00.500000000Z", "config": {"warmup_s": 10.0, "duration_s": 60.0}}
    LOG = """[2026-12-03T12:00:09.000+0000][1.0s][info][gc          ] GC(1) Pause Young (Normal) (G1 Evacuation Pause) 50M->10M(256M) 99.000ms
[2026-12-03T12:00:11.000+0000][3.0s][info][gc,start    ] GC(2) Pause Young (Normal) (G1 Evacuation Pause)
[2026-12-03T12:00:11.020+0000][3.0s][info][gc          ] GC(2) Pause Young (Normal) (G1 Evacuation Pause) 60M->12M(256M) 20.250ms
[2026-12-03T12:00:40.000+0000][32.0s][info][gc          ] GC(3) Pause Remark 100M->100M(256M) 2.500ms
[2026-12-03T12:00:50.000+0000][42.0s][info][gc,phases   ] GC(4)   Evacuate Collection Set: 30.0ms
[2026-12-03T12:01:10.000+0000][62.0s][info][gc          ] GC(4) Pause Young (Normal) (G1 Evacuation Pause) 60M->12M(256M) 57.250ms
[2026-12-03T12:01:11.000+0000][63.0s][info][gc          ] GC(5) Pause Young (Normal) (G1 Evacuation Pause) 60M->12M(256M) 88.000ms
"""

    def log(self, text):
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        path = os.path.join(scratch.name, "kafka-gc.log")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_only_the_pauses_of_the_measured_window_count_and_their_durations_add_up(self):
        gc = bench_summary.kafka_gc(self.log(self.LOG), self.STEADY)
        self.assertEqual(gc, {"pauses": 3, "total_ms": 80.0, "max_ms": 57.2, "share_of_window": 0.0013},
                         "GC(1) is in the warm-up, GC(5) after the window; phases and pause starts are not pauses")

    def test_a_window_without_pauses_says_so(self):
        gc = bench_summary.kafka_gc(self.log(""), self.STEADY)
        self.assertEqual(gc, {"pauses": 0, "total_ms": 0, "max_ms": 0.0, "share_of_window": 0.0})

    def test_no_log_or_no_window_no_figure(self):
        self.assertIsNone(bench_summary.kafka_gc("/nonexistent/kafka-gc.log", self.STEADY))
        self.assertIsNone(bench_summary.kafka_gc(self.log(self.LOG), {"_error": "no steady report"}))

    def test_the_load_generators_times_are_read_with_their_nanoseconds_and_zone(self):
        t = bench_summary.utc_time("2026-12-03T01:13:57.134768026Z")
        self.assertEqual((t.minute, t.second, t.microsecond, t.utcoffset().total_seconds()), (13, 57, 134768, 0))
        self.assertIsNone(bench_summary.utc_time("yesterday"))


class CapacityRule(unittest.TestCase):
    def test_pool_size_follows_littles_law_with_headroom_never_below_the_configured_pool(self):
        self.assertEqual(cap.pool_size(10000, 200, 1.25, 2500), 2500)
        self.assertEqual(cap.pool_size(12500, 200, 1.25, 2500), 3125)
        self.assertEqual(cap.pool_size(15000, 200, 1.25, 2500), 3750)
        self.assertEqual(cap.pool_size(10001, 200, 1.25, 2500), 2501)
        self.assertEqual(cap.pool_size(5000, 200, 1.25, 2500), 2500)
        self.assertEqual(cap.pool_size(20000, 200, 1.25, 8000), 8000)

    def test_a_step_within_every_limit_passes_429s_included(self):
        v = cap.step_verdict(step_report(statuses={"202": 299990, "429": 10}, accepted_share=299990 / 300000))
        self.assertTrue(v["pass"], v["reasons"])
        self.assertEqual(v["throttled"], 10)

    def test_a_step_fails_on_each_limit(self):
        cases = {
            "P99 ingest at 50 ms": step_report(p99_ingest=50.0),
            "P99 end to end at 400 ms": step_report(p99_e2e=400.0),
            "98.9% accepted": step_report(accepted_share=0.989),
            "a 503": step_report(statuses={"202": 300000, "503": 1}),
            "a timeout": step_report(failures={"timeout": 1}),
            "accepted messages not stored": step_report(missing=1),
            "no end-to-end figures": step_report(e2e=False),
            "no report at all": {},
        }
        for name, report in cases.items():
            with self.subTest(name):
                v = cap.step_verdict(report)
                self.assertFalse(v["pass"])
                self.assertTrue(v["reasons"])

    def test_capacity_is_the_highest_passing_rate_before_the_first_failure(self):
        def s(rate, ok):
            return {"rate": rate, "pass": ok}
        self.assertEqual(cap.capacity([s(10000, True), s(12500, True), s(15000, False)]), 12500)
        self.assertEqual(cap.capacity([s(10000, True), s(12500, False), s(15000, True)]), 10000)
        self.assertIsNone(cap.capacity([s(10000, False)]))
        self.assertEqual(cap.capacity([s(10000, True), s(12500, True)]), 12500)

    def test_report_reads_the_steps_and_states_the_capacity(self):
        with tempfile.TemporaryDirectory() as out:
            rows = ["rate,pool,dir"]
            for rate, p99 in [(10000, 250.0), (12500, 300.0), (15000, 350.0), (17500, 450.0)]:
                os.mkdir(os.path.join(out, f"step-{rate}"))
                with open(os.path.join(out, f"step-{rate}", "report.json"), "w") as f:
                    json.dump(step_report(rate=float(rate), p99_e2e=p99), f)
                rows.append(f"{rate},{cap.pool_size(rate, 200, 1.25, 2500)},step-{rate}")
            rows.append("20000,5000,step-20000")  # its loadgen wrote no report: a failing step
            with open(os.path.join(out, "steps.csv"), "w") as f:
                f.write("\n".join(rows) + "\n")
            with open(os.path.join(out, "machine-probe.json"), "w") as f:
                json.dump({"syscall_ns": 150.0, "wakeup_round_trip_us": 40.0}, f)
            args = argparse.Namespace(step_seconds=30.0, warmup=10.0, connections=2000, nlp_latency_ms=200.0, headroom=1.25, max_rate=40000.0)
            with contextlib.redirect_stdout(io.StringIO()) as md:
                status = cap.report(out, args)
            with open(os.path.join(out, "report.json")) as f:
                doc = json.load(f)
            self.assertEqual(status, 0)
            self.assertEqual(doc["capacity_msgs_per_s"], 15000)
            self.assertFalse(doc["capacity_is_lower_bound"])
            self.assertEqual([s["pass"] for s in doc["steps"]], [True, True, True, False, False])
            self.assertEqual(doc["steps"][1]["pool"], 3125)
            self.assertIn("**Capacity: 15000 msg/s** (target ≥ 15000: PASS)", md.getvalue())
            self.assertEqual(doc["machine_probe"], {"syscall_ns": 150.0, "wakeup_round_trip_us": 40.0})
            self.assertIn("before the steps (examples/machine_probe.rs): a system call 150.0 ns", md.getvalue())
            ET.parse(os.path.join(out, "p99.svg"))

    def test_the_verdict_says_when_the_first_step_failed_or_every_step_passed(self):
        args = argparse.Namespace(step_seconds=30.0, warmup=10.0, connections=2000, nlp_latency_ms=200.0, headroom=1.25, max_rate=12500.0)
        for p99s, verdict in [((450.0, 300.0), "**Capacity: below 10000 msg/s: the first step failed** (target ≥ 15000: FAIL)"),
                              ((250.0, 300.0), "**Capacity: ≥ 12500 msg/s: every step up to MAX_RATE (12500) passed** (target ≥ 15000: FAIL)")]:
            with self.subTest(verdict=verdict), tempfile.TemporaryDirectory() as out:
                rows = ["rate,pool,dir"]
                for rate, p99 in zip((10000, 12500), p99s):
                    os.mkdir(os.path.join(out, f"step-{rate}"))
                    with open(os.path.join(out, f"step-{rate}", "report.json"), "w") as f:
                        json.dump(step_report(rate=float(rate), p99_e2e=p99), f)
                    rows.append(f"{rate},2500,step-{rate}")
                with open(os.path.join(out, "steps.csv"), "w") as f:
                    f.write("\n".join(rows) + "\n")
                with contextlib.redirect_stdout(io.StringIO()) as md:
                    self.assertEqual(cap.report(out, args), 1)
                self.assertIn(verdict, md.getvalue())


class CapacityOfRuns(unittest.TestCase):
    """`combine`: the median of several bench-capacity runs."""

    def run_report(self, root, name, steps, lower_bound=False, probe=True, steal=None):
        """One run's report.json as `report` writes it, steps given as (rate, p99 ingest, p99 e2e)."""
        verdicts = [cap.step_verdict(step_report(rate=float(rate), p99_ingest=ingest, p99_e2e=e2e)) for rate, ingest, e2e in steps]
        doc = {"steps": verdicts, "capacity_msgs_per_s": cap.capacity(verdicts), "capacity_is_lower_bound": lower_bound,
               "machine_probe": {"syscall_ns": 150.0, "wakeup_round_trip_us": 30.0} if probe else {"_error": "missing"},
               "steal": steal or {"requested": 0, "cores_used": None}}
        os.mkdir(os.path.join(root, name))
        with open(os.path.join(root, name, "report.json"), "w") as f:
            json.dump(doc, f)
        return os.path.join(root, name)

    def combine(self, root, dirs):
        with contextlib.redirect_stdout(io.StringIO()) as md:
            status = cap.combine(root, dirs)
        with open(os.path.join(root, "report.json")) as f:
            return status, json.load(f), md.getvalue()

    def test_the_median_runs_capacity_with_every_runs_and_the_figures_per_rate(self):
        with tempfile.TemporaryDirectory() as root:
            dirs = [
                self.run_report(root, "run-1", [(8000, 71.1, 335.6)]),
                self.run_report(root, "run-2", [(8000, 22.7, 305.2), (9000, 25.6, 308.0), (10000, 55.9, 341.2)]),
                self.run_report(root, "run-3", [(8000, 28.4, 308.5), (9000, 107.3, 1089.5)], probe=False),
            ]
            status, doc, md = self.combine(root, dirs)
            self.assertEqual(status, 1)
            self.assertEqual(doc["capacity_msgs_per_s"], 8000)
            self.assertEqual([r["capacity"] for r in doc["runs"]], ["below 8000", "9000", "8000"])
            self.assertIn("**Capacity: 8000 msg/s, the median run's** (runs: below 8000, 9000, 8000; target ≥ 15000: FAIL)", md)
            rows = {r["rate"]: r for r in doc["per_rate"]}
            self.assertEqual((rows[8000]["runs"], rows[8000]["passed"]), (3, 2))
            self.assertEqual((rows[8000]["p99_ingest_ms"], rows[8000]["p99_ingest_ms_min"], rows[8000]["p99_ingest_ms_max"]), (28.4, 22.7, 71.1))
            self.assertEqual((rows[9000]["runs"], rows[9000]["passed"], rows[9000]["p99_e2e_ms"]), (2, 1, (308.0 + 1089.5) / 2))
            self.assertEqual((rows[10000]["runs"], rows[10000]["passed"]), (1, 0))
            self.assertIn("| 8000 | 3 | 2 | 28.4 (22.7–71.1) | 308.5 (305.2–335.6) |", md)
            self.assertIn("| run-3 | 8000 | not measured | none |", md)
            ET.parse(os.path.join(root, "p99.svg"))

    def test_runs_whose_first_step_failed_rank_below_every_rate(self):
        with tempfile.TemporaryDirectory() as root:
            dirs = [self.run_report(root, f"run-{i}", [(10000, 80.0, 300.0)]) for i in (1, 2)]
            dirs.append(self.run_report(root, "run-3", [(10000, 20.0, 300.0), (12500, 20.0, 300.0)]))
            status, doc, md = self.combine(root, dirs)
            self.assertEqual(status, 1)
            self.assertIsNone(doc["capacity_msgs_per_s"])
            self.assertEqual(doc["capacity"], "below 10000")

    def test_an_even_count_takes_the_lower_middle_and_a_missing_report_ranks_lowest(self):
        with tempfile.TemporaryDirectory() as root:
            high = [(r, 20.0, 300.0) for r in (10000, 12500, 15000, 17500)] + [(20000, 90.0, 300.0)]
            dirs = [self.run_report(root, "run-1", high), self.run_report(root, "run-2", high[:3] + [(17500, 90.0, 300.0)])]
            status, doc, _ = self.combine(root, dirs)
            self.assertEqual((status, doc["capacity_msgs_per_s"]), (0, 15000))
            os.mkdir(os.path.join(root, "run-3"))  # a run that left no report
            status, doc, md = self.combine(root, dirs + [os.path.join(root, "run-3")])
            self.assertEqual((status, doc["capacity_msgs_per_s"]), (0, 15000))
            self.assertIn("runs: 17500, 15000, no report", md)

    def test_the_competing_process_of_each_run_or_why_it_is_missing(self):
        with tempfile.TemporaryDirectory() as root:
            dirs = [self.run_report(root, "run-1", [(10000, 20.0, 300.0)], steal={"requested": 0.5, "cores_used": 0.47}),
                    self.run_report(root, "run-2", [(10000, 20.0, 300.0)], steal={"requested": 0.5, "cores_used": None})]
            _, _, md = self.combine(root, dirs)
            self.assertIn("| run-1 | 10000 | 150.0 ns, 30.0 µs | 0.47 |", md)
            self.assertIn("| run-2 | 10000 | 150.0 ns, 30.0 µs | no report |", md)


class CapacityPlot(unittest.TestCase):
    steps = [
        {"rate": 10000.0, "p99_ingest_ms": 8.0, "p99_e2e_ms": 250.0, "pass": True},
        {"rate": 12500.0, "p99_ingest_ms": 20.0, "p99_e2e_ms": 320.0, "pass": True},
        {"rate": 15000.0, "p99_ingest_ms": 70.0, "p99_e2e_ms": None, "pass": False},
    ]

    def plot(self):
        return ET.fromstring(cap.svg_plot(self.steps, cap=12500.0))

    @staticmethod
    def circles(svg, name):
        return [c for c in svg.iter("{http://www.w3.org/2000/svg}circle") if c.get("class") == name]

    @staticmethod
    def line_y(svg, name):
        line = next(e for e in svg.iter("{http://www.w3.org/2000/svg}line") if e.get("class") == name)
        return float(line.get("y1"))

    def test_one_point_per_step_and_series_with_a_value(self):
        svg = self.plot()
        self.assertEqual(len(self.circles(svg, "ingest")), 3)
        self.assertEqual(len(self.circles(svg, "e2e")), 2)

    def test_higher_latency_is_drawn_higher_and_targets_sit_where_they_belong(self):
        svg = self.plot()
        ys = [float(c.get("cy")) for c in self.circles(svg, "ingest")]
        self.assertGreater(ys[0], ys[1])
        self.assertGreater(ys[1], ys[2])
        # 20 ms is under the 50 ms line (larger y), 70 ms above it.
        self.assertGreater(ys[1], self.line_y(svg, "target-ingest"))
        self.assertLess(ys[2], self.line_y(svg, "target-ingest"))
        self.assertLess(self.line_y(svg, "target-e2e"), self.line_y(svg, "target-ingest"))
        # Log scale: 8 -> 20 ms (x2.5) spans as far as 20 -> 50 ms (x2.5).
        self.assertAlmostEqual(ys[0] - ys[1], ys[1] - self.line_y(svg, "target-ingest"), delta=0.2)

    def test_failing_steps_are_hollow_and_the_capacity_line_stands_at_its_rate(self):
        svg = self.plot()
        fills = [c.get("fill") for c in self.circles(svg, "ingest")]
        self.assertEqual(fills[2], "white")
        self.assertNotEqual(fills[0], "white")
        capacity = next(e for e in svg.iter("{http://www.w3.org/2000/svg}line") if e.get("class") == "capacity")
        self.assertEqual(capacity.get("x1"), self.circles(svg, "ingest")[1].get("cx"))


class CompetingProcess(unittest.TestCase):
    def test_the_burner_uses_about_steal_of_a_core_and_reports_it_on_sigterm(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "burner.json")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "cpu_burner.py"), "--steal", "0.5", "--out", out],
                                    stderr=subprocess.DEVNULL)
            # Meanwhile, the same duty cycle in this process at another share.
            stop_at = time.monotonic() + 2.0
            wall, cpu = cpu_burner.burn(0.2, 0.01, lambda: time.monotonic() >= stop_at)
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=10), 0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            with open(out) as f:
                reported = json.load(f)
        self.assertAlmostEqual(cpu / wall, 0.2, delta=0.08)
        self.assertEqual(reported["steal"], 0.5)
        self.assertGreater(reported["wall_s"], 1.5)
        self.assertAlmostEqual(reported["cores"], 0.5, delta=0.12)
        # What the kernel counted for it (its start-up included) agrees with what it reported.
        counted = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.assertAlmostEqual(counted / reported["wall_s"], 0.5, delta=0.15)

    def test_the_burner_refuses_a_share_above_one_core(self):
        result = subprocess.run([sys.executable, os.path.join(HERE, "cpu_burner.py"), "--steal", "1.5", "--out", os.devnull],
                                capture_output=True, text=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("from 0 to 1", result.stderr)

    def test_the_summary_states_steal_and_the_share_really_used(self):
        with tempfile.TemporaryDirectory() as out:
            with open(os.path.join(out, "burner.json"), "w") as f:
                json.dump({"steal": 0.5, "cores": 0.47, "cpu_s": 42.3, "wall_s": 90.0}, f)
            with mock.patch.object(bench_summary, "STEAL", 0.5):
                s = bench_summary.steal(out)
            self.assertEqual((s["requested"], s["cores_used"]), (0.5, 0.47))
            self.assertIn("used 0.47 of a core", bench_summary.steal_line(s))
            with mock.patch.object(bench_summary, "STEAL", 0.0):
                self.assertIsNone(bench_summary.steal(out)["cores_used"])


class CompareReport(unittest.TestCase):
    """scripts/bench_compare_report.py on a results directory as scripts/bench_compare.sh writes it."""

    def write_results(self, d, rows):
        """rows: (config, pair, worker ticks, breaker refusals, accepted msg/s[, P99 ingest ms[,
        P99 end to end ms]])."""
        with open(os.path.join(d, "configurations.txt"), "w") as f:
            f.write("\nINGEST_PROCESSES=1\n")
        with open(os.path.join(d, "runs.csv"), "w") as f:
            f.write("config,pair,dir,seconds,ingest,worker,nlp_sim,postgres,kafka,load_generator,machine,breaker_refused\n")
            for config, pair, worker, refused, accepted, *p99 in rows:
                run = os.path.join(d, f"run-{pair}-{config}")
                os.makedirs(os.path.join(run, "steady"))
                latency = {"p99": p99[0] if p99 else 40.0}
                report = {"results": {"accepted_msgs_per_s": accepted, "latency_ms": latency}}
                if len(p99) > 1:
                    report["e2e"] = {"found": 1, "latency_ms": {"p99": p99[1]}}
                with open(os.path.join(run, "steady", "report.json"), "w") as r:
                    json.dump(report, r)
                f.write(f"{config},{pair},{run},20.000,1200,{worker},800,1000,600,500,5000,{refused}\n")

    def test_per_message_figures_medians_without_breaker_runs_and_ratios(self):
        with tempfile.TemporaryDirectory() as d:
            # 100 ticks a second; 20 s at 5,000 msg/s is 100,000 messages, so 1,000 ticks
            # (10 s of CPU) is 100 µs a message.
            self.write_results(d, [
                (0, 1, 1000, 0, 5000, 30.0), (1, 1, 800, 0, 5000, 45.0),
                (0, 2, 1100, 0, 5000, 50.0), (1, 2, 100, 7, 5000, 900.0),
                (0, 3, 900, 0, 5000, 40.0), (1, 3, 900, 0, 5000, 55.0),
            ])
            runs = bench_compare_report.load_runs(d, 100)
            self.assertAlmostEqual(runs[0]["us"]["worker"], 100.0)
            self.assertAlmostEqual(runs[0]["us"]["machine"], 500.0)
            base, n = bench_compare_report.medians(runs, 0)
            self.assertEqual(n, 3)
            self.assertAlmostEqual(base["worker"], 100.0)
            other, n = bench_compare_report.medians(runs, 1)
            # The run whose breaker refused calls is left out: the median of 80 and 90.
            self.assertEqual(n, 2)
            self.assertAlmostEqual(other["worker"], 85.0)
            # P99 ingest: the median of 30, 50 and 40; of 45 and 55, without the breaker run's 900.
            self.assertAlmostEqual(base["p99_ms"], 40.0)
            self.assertAlmostEqual(other["p99_ms"], 50.0)
            text = bench_compare_report.report(["", "INGEST_PROCESSES=1"], runs)
            self.assertIn("1. as shipped", text)
            self.assertIn("2. `INGEST_PROCESSES=1`", text)
            self.assertIn("| 2 | 2 | 120.0 (1.00) | 85.0 (0.85) |", text)
            self.assertIn("| 500.0 (1.00) | 50.0 (1.25) | — | — |", text, "no lookup, no GC log: no figures")
            self.assertIn("| 2 | 2 | 5000 | 900.0 | — | — | 7 |", text)

    def test_the_brokers_gc_pauses_of_each_runs_measured_window(self):
        with tempfile.TemporaryDirectory() as d:
            self.write_results(d, [(0, 1, 1000, 0, 5000), (1, 1, 1000, 0, 5000),
                                   (0, 2, 1000, 0, 5000), (1, 2, 1000, 0, 5000)])
            pauses = {(1, 0): [12.5, 20.0], (1, 1): [80.0], (2, 0): [10.0], (2, 1): [60.0, 40.0]}
            for (pair, config), durations in pauses.items():
                run = os.path.join(d, f"run-{pair}-{config}")
                path = os.path.join(run, "steady", "report.json")
                with open(path) as f:
                    report = json.load(f)
                report.update({"started_at": "2026-12-03T12:00:00Z", "config": {"warmup_s": 10.0, "duration_s": 30.0}})
                with open(path, "w") as f:
                    json.dump(report, f)
                with open(os.path.join(run, "kafka-gc.log"), "w") as f:
                    # One pause in the warm-up, which does not count, then the window's.
                    f.write("[2026-12-03T12:00:05.000+0000][5.0s][info][gc] GC(1) Pause Young (Normal) 9M->1M(256M) 500.0ms\n")
                    for i, ms in enumerate(durations):
                        f.write(f"[2026-12-03T12:00:{15 + i}.000+0000][1.0s][info][gc] GC({i + 2}) Pause Young (Normal) "
                                f"50M->10M(256M) {ms}ms\n")
            runs = bench_compare_report.load_runs(d, 100)
            self.assertEqual([r["gc_ms"] for r in runs], [32.5, 80.0, 10.0, 100.0])
            self.assertAlmostEqual(bench_compare_report.medians(runs, 0)[0]["gc_ms"], 21.25)
            self.assertAlmostEqual(bench_compare_report.medians(runs, 1)[0]["gc_ms"], 90.0)
            text = bench_compare_report.report(["", "X=1"], runs)
            self.assertIn("| 40.0 (1.00) | — | 90.0 (4.24) |", text)
            self.assertIn("| 2 | 2 | 5000 | 40.0 | — | 100.0 | 0 |", text)

    def test_end_to_end_p99_medians_where_the_messages_were_looked_up(self):
        with tempfile.TemporaryDirectory() as d:
            self.write_results(d, [
                (0, 1, 1000, 0, 5000, 30.0, 380.0), (1, 1, 1000, 0, 5000, 30.0, 400.0),
                (0, 2, 1000, 0, 5000, 30.0, 360.0), (1, 2, 1000, 0, 5000, 30.0),
                (0, 3, 1000, 0, 5000, 30.0, 390.0), (1, 3, 1000, 0, 5000, 30.0, 420.0),
            ])
            runs = bench_compare_report.load_runs(d, 100)
            self.assertAlmostEqual(bench_compare_report.medians(runs, 0)[0]["e2e_p99_ms"], 380.0)
            # The run without a lookup is left out of this column only: the median of 400 and 420.
            self.assertAlmostEqual(bench_compare_report.medians(runs, 1)[0]["e2e_p99_ms"], 410.0)
            text = bench_compare_report.report(["", "X=1"], runs)
            self.assertIn("| 30.0 (1.00) | 410.0 (1.08) | — |", text)
            self.assertIn("| 2 | 2 | 5000 | 30.0 | — | — | 0 |", text)
            self.assertIn("| 3 | 1 | 5000 | 30.0 | 390.0 | — | 0 |", text)

    def test_the_competing_process_is_stated_when_one_ran(self):
        with tempfile.TemporaryDirectory() as d:
            self.write_results(d, [(0, 1, 1000, 0, 5000), (1, 1, 1000, 0, 5000)])
            runs = bench_compare_report.load_runs(d, 100)
            self.assertIsNone(bench_compare_report.load_burner(d))
            self.assertNotIn("Competing process", bench_compare_report.report(["", "X=1"], runs))
            with open(os.path.join(d, "burner.json"), "w") as f:
                json.dump({"steal": 0.5, "period_ms": 10.0, "wall_s": 395.193, "cpu_s": 190.261,
                           "cores": 0.4814, "pid": 1}, f)
            text = bench_compare_report.report(["", "X=1"], runs, bench_compare_report.load_burner(d))
            self.assertIn("Competing process through every run: STEAL=0.5 of one core asked for; "
                          "it used 0.481 of a core (190.261 s of CPU in 395.193 s).", text)

    def test_the_accepted_rate_not_the_offered_one_divides(self):
        with tempfile.TemporaryDirectory() as d:
            self.write_results(d, [(0, 1, 1000, 0, 2500), (1, 1, 1000, 0, 5000)])
            runs = bench_compare_report.load_runs(d, 100)
            self.assertAlmostEqual(runs[0]["us"]["worker"], 200.0)
            self.assertAlmostEqual(runs[1]["us"]["worker"], 100.0)

    def test_a_configuration_whose_every_run_had_the_breaker_open_has_no_medians(self):
        with tempfile.TemporaryDirectory() as d:
            self.write_results(d, [(0, 1, 1000, 0, 5000), (1, 1, 1000, 3, 5000)])
            runs = bench_compare_report.load_runs(d, 100)
            self.assertEqual(bench_compare_report.medians(runs, 1), (None, 0))
            self.assertIn("| 2 | 0 | — |", bench_compare_report.report(["", "X=1"], runs))


class CheckSteal(unittest.TestCase):
    """check_steal of scripts/bench_lib.sh, which every bench runs on its STEAL."""

    def check(self, value):
        script = f'say() {{ echo "$*"; }}; source {os.path.join(HERE, "bench_lib.sh")}; check_steal "$1"'
        return subprocess.run(["bash", "-c", script, "check", value], capture_output=True, text=True)

    def test_a_share_of_one_core_from_0_to_1_passes(self):
        for value in ["0", "0.5", ".25", "1", "1.0"]:
            with self.subTest(value=value):
                self.assertEqual(self.check(value).returncode, 0)

    def test_anything_else_fails_and_says_why(self):
        for value in ["1.5", "2", "-0.1", "half", ""]:
            with self.subTest(value=value):
                run = self.check(value)
                self.assertEqual(run.returncode, 1)
                self.assertIn(f"STEAL={value}: a share of one core, from 0 to 1", run.stdout)


class WaitQuiet(unittest.TestCase):
    """wait_quiet of scripts/bench_lib.sh, which every bench runs before it measures.

    The machine's and the processes' CPU ticks are counters in files, each advanced by a
    given number of ticks whenever it is read, so that the machine looks busy or quiet."""

    def run_wait(self, machine_step, process_step, *pids):
        with tempfile.TemporaryDirectory() as tmp:
            script = f"""
                say() {{ echo "$*"; }}
                source {os.path.join(HERE, "bench_lib.sh")}
                tick() {{ local n; n=$(( $(cat "$1") + $2 )); echo "$n" >"$1"; echo "$n"; }}
                echo 0 >{tmp}/machine; echo 0 >{tmp}/process
                machine_ticks() {{ tick {tmp}/machine {machine_step}; }}
                pid_ticks() {{ if [ -n "$1" ]; then tick {tmp}/process {process_step}; else echo 0; fi; }}
                QUIET_SECONDS=2 QUIET_MAX=3 wait_quiet "$@"
            """
            return subprocess.run(["bash", "-c", script, "wait", *pids], capture_output=True, text=True)

    def test_a_quiet_machine_is_measured_at_once(self):
        run = self.run_wait(0, 0)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, "")

    def test_a_busy_machine_is_waited_for_then_measured_anyway(self):
        # 1,000 ticks a second is ten cores busy at any clock rate a Linux kernel reports.
        run = self.run_wait(1000, 0)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("stayed busier than 0.3 of a core for 3 s: measuring anyway", run.stdout)

    def test_the_processes_named_are_left_out(self):
        run = self.run_wait(1000, 1000, "4242")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, "")


if __name__ == "__main__":
    unittest.main()
