#!/usr/bin/env python3
"""Accounts for every message id of a `make chaos` run, and says PASS or FAIL.

Usage: scripts/chaos_accounting.py DIR, where DIR is what scripts/chaos.sh wrote:

  ledger.csv     every attempt of every message (the load generator's --ledger)
  stored.csv     message_id,rows of the `messages` table at the end
  dlq/           the dead-letter files (dead-letters-*.jsonl, searched recursively)
  events.csv     the timeline: process starts and exits, each fault's start and end
  samples.csv    queue_depth and consumer_paused of every worker, once a second
  undecodable.txt  the markers of the undecodable records published during the run
  run.json       the knobs

Writes DIR/report.json and DIR/report.md, prints the Markdown, and exits 1 on FAIL.

Definitions (also in the report): an id is *accepted* when any of its requests got a 202;
*lost* when accepted but neither in `messages` nor in a dead-letter file at the end;
*duplicated* when `messages` holds more than one row for it; a dead letter is *left* when
its message is not in `messages` at the end (not replayed).
"""
import csv
import gzip
import glob
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import bench_summary

# Outcomes of an attempt that got no HTTP answer (see crates/loadgen/src/ledger.rs).
NO_ANSWER = {"connect", "timeout", "closed", "io", "bad_response", "unanswered"}
REFUSED = {"429", "503"}
# librdkafka reports consumer lag every 5 s: a worker's queue_depth means nothing before
# its first report.
LAG_REPORT_SECS = 6
# The pre-fault level of queue_depth is the highest value over this window before a fault.
BASELINE_SECS = 30

# Flags kept per id while reading the ledger.
ACCEPTED, REFUSED_ONCE, UNANSWERED_ONCE, WITH_SENT_AT, RESENT, RETRIED, ANSWERED = (1 << i for i in range(7))


def commit():
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()
    head = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": head, "uncommitted_changes": dirty}


def read_ledger(path):
    """Per id: flags; per attempt: counts; per second: answers."""
    ids = {}
    attempts = Counter()
    outcomes = Counter()
    retry_after_missing = 0
    no_answer_attempts = 0
    per_second = defaultdict(Counter)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            flags = ids.get(row["message_id"], 0)
            outcome, cause = row["outcome"], row["cause"]
            attempts[cause] += 1
            outcomes[outcome] += 1
            second = int(row["at_ms"]) // 1000
            if row["sent_at"] == "1":
                flags |= WITH_SENT_AT
            if cause == "resend":
                flags |= RESENT
            elif cause == "retry":
                flags |= RETRIED
            if outcome == "202":
                flags |= ACCEPTED | ANSWERED
                per_second[second]["accepted"] += 1
            elif outcome in REFUSED:
                flags |= REFUSED_ONCE | ANSWERED
                per_second[second]["refused"] += 1
                if row["retry_after"] != "1":
                    retry_after_missing += 1
            elif outcome in NO_ANSWER:
                flags |= UNANSWERED_ONCE
                no_answer_attempts += 1
                per_second[second]["no_answer"] += 1
            elif outcome != "unsent":
                flags |= ANSWERED
                per_second[second]["other"] += 1
            ids[row["message_id"]] = flags
    return ids, attempts, outcomes, retry_after_missing, no_answer_attempts, per_second


def read_stored(path):
    with open(path, newline="") as f:
        return {row[0]: int(row[1]) for row in csv.reader(f)}


def read_dead_letters(directory, markers):
    """Ids dead-lettered (any stage but decode), by stage; decode dead letters by marker."""
    by_id = {}
    stages = Counter()
    decode_markers = set()
    for path in sorted(glob.glob(os.path.join(directory, "**", "dead-letters-*.jsonl"), recursive=True)):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                letter = json.loads(line)
                stage = letter.get("stage", "?")
                stages[stage] += 1
                message = letter.get("message") or {}
                if stage == "decode":
                    raw = str(message.get("raw_value", ""))
                    decode_markers.update(m for m in markers if m in raw)
                elif "message_id" in message:
                    by_id[message["message_id"]] = stage
    return by_id, stages, decode_markers


def read_events(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_samples(path, events):
    """queue_depth summed over the workers that answered, per sampling round, leaving out a
    worker's samples until its first lag report."""
    starts = defaultdict(list)
    for e in events:
        if e["event"] == "start" and e["name"].startswith("worker-"):
            starts[e["name"]].append(int(e["at_ms"]))
    rounds = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            at = int(row["at_ms"])
            started = max((s for s in starts[row["worker"]] if s <= at), default=None)
            fresh = started is not None and at - started < LAG_REPORT_SECS * 1000
            at_round, depth, paused, reliable = rounds.get(row["round"], (at, 0, 0, True))
            rounds[row["round"]] = (at_round, depth + int(float(row["queue_depth"] or 0)),
                                    max(paused, int(float(row["consumer_paused"] or 0))), reliable and not fresh)
    return sorted(rounds.values())


def read_backlog(path):
    """(at_ms, reenrich_backlog) of each sample that has one, in time order."""
    with open(path, newline="") as f:
        return sorted((int(r["at_ms"]), int(float(r["reenrich_backlog"])))
                      for r in csv.DictReader(f) if r.get("reenrich_backlog"))


def read_rows(path):
    """(received_ms, end_to_end_s, has_nlp) of every stored row."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return [(int(r[0]), float(r[1]), r[2] == "t") for r in csv.reader(f)]


def p99(values):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)


def nlp_recovery(events, backlog, rows):
    """For the nlp-outage scenario: when the API healed, when every row had NLP data again,
    and the live messages' P99 end to end before, during, while re-enriching, after."""
    start = next((int(e["at_ms"]) for e in events if e["event"] == "fault-start" and e["name"] == "nlp-outage"), None)
    healed = next((int(e["at_ms"]) for e in events if e["event"] == "fault-end" and e["name"] == "nlp-outage"), None)
    if start is None or healed is None:
        return None
    peak = max((b for at, b in backlog if at >= start), default=None)
    done = next((at for at, b in backlog if at > healed and b == 0), None)
    load_end = max((r[0] for r in rows), default=healed)
    windows = [("before the outage", start - 60_000, start), ("during the outage", start, healed),
               ("while re-enriching", healed, done if done is not None else load_end),
               ("after", done if done is not None else load_end, load_end + 1)]
    return {
        "healed_at_s": round((healed - start) / 1000, 1),
        "backlog_peak": peak,
        "all_enriched_after_heal_s": None if done is None else round((done - healed) / 1000, 1),
        "p99_end_to_end_ms": {name: p99([e2e for at, e2e, _ in rows if lo <= at < hi]) for name, lo, hi in windows},
        "messages": {name: sum(1 for at, _, _ in rows if lo <= at < hi) for name, lo, hi in windows},
    }


def faults(events, samples, per_second):
    """Each fault: when, how long, and how long after it ended queue_depth was back under
    its level before the fault."""
    starts = {}
    notes = defaultdict(list)
    out = []
    for e in events:
        at = int(e["at_ms"])
        if e["event"] == "fault-start":
            starts[e["name"]] = (at, e["detail"])
        elif e["event"] == "exit":
            notes["all"].append((at, f"{e['name']}: {e['detail']}"))
        elif e["event"] == "fault-skipped":
            out.append({"fault": e["name"], "skipped": e["detail"]})
        elif e["event"] == "fault-end" and e["name"] in starts:
            begin, detail = starts.pop(e["name"])
            out.append(fault_figures(e["name"], detail, begin, at, samples, per_second, notes["all"]))
    load_start = next((int(e["at_ms"]) for e in events if e["event"] == "load-start"), 0)
    for f in out:
        if "start_ms" in f:
            f["at_s"] = round((f["start_ms"] - load_start) / 1000, 1)
    return out


def fault_figures(name, detail, begin, end, samples, per_second, exits):
    before = [d for at, d, _, ok in samples if begin - BASELINE_SECS * 1000 <= at < begin and ok]
    baseline = max(before) if before else None
    during = [(at, d, p) for at, d, p, ok in samples if begin <= at and ok]
    peak = max((d for at, d, _ in during if at <= end + 60_000), default=None)
    paused = max((p for at, _, p in during if at <= end), default=0)
    recovered = None
    if baseline is not None:
        recovered = next((at for at, d, _ in during if at >= end and d <= baseline), None)
    window_end = recovered if recovered is not None else end
    seconds = range(begin // 1000, window_end // 1000 + 1)
    answers = Counter()
    for s in seconds:
        answers.update(per_second.get(s, {}))
    return {
        "fault": name,
        "detail": detail,
        "start_ms": begin,
        "end_ms": end,
        "lasted_s": round((end - begin) / 1000, 1),
        "queue_depth_before": baseline,
        "queue_depth_peak": peak,
        "recovered_after_end_s": None if recovered is None else round((recovered - end) / 1000, 1),
        "consumer_paused_seen": paused > 0,
        "answers_until_recovered": dict(answers),
        "exits": [text for at, text in exits if begin <= at <= end],
    }


def account(out_dir):
    run = json.load(open(os.path.join(out_dir, "run.json")))
    ids, attempts, outcomes, retry_after_missing, no_answer_attempts, per_second = read_ledger(
        os.path.join(out_dir, "ledger.csv"))
    stored = read_stored(os.path.join(out_dir, "stored.csv"))
    markers_path = os.path.join(out_dir, "undecodable.txt")
    markers = open(markers_path).read().split() if os.path.exists(markers_path) else []
    dead, stages, decode_found = read_dead_letters(os.path.join(out_dir, "dlq"), markers)
    events = read_events(os.path.join(out_dir, "events.csv"))
    samples = read_samples(os.path.join(out_dir, "samples.csv"), events)
    rows_path = os.path.join(out_dir, "rows.csv")
    rows = read_rows(rows_path if os.path.exists(rows_path) else rows_path + ".gz")

    accepted = {i for i, f in ids.items() if f & ACCEPTED}
    stored_sent = {i for i in ids if i in stored}
    lost = [i for i in accepted if i not in stored and i not in dead]
    duplicated = {i: n for i, n in stored.items() if n > 1}
    dead_left = [i for i in dead if i not in stored]
    stored_unaccepted = [i for i in stored_sent if i not in accepted]
    a = {
        "ids_sent": len(ids),
        "ids_without_sent_at": sum(1 for f in ids.values() if not f & WITH_SENT_AT),
        "ids_resent_on_purpose": sum(1 for f in ids.values() if f & RESENT),
        "ids_retried": sum(1 for f in ids.values() if f & RETRIED),
        "requests": dict(attempts),
        "answers": dict(outcomes),
        "accepted": len(accepted),
        "stored": len(stored_sent),
        "rows": sum(stored[i] for i in stored_sent),
        "dead_lettered": len(dead),
        "dead_letters_by_stage": dict(stages),
        "replayed": sum(1 for i in dead if i in stored),
        "dead_letters_left": len(dead_left),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "duplicated_extra_rows": sum(n - 1 for n in duplicated.values()),
        "duplicated_without_sent_at": sum(1 for i in duplicated if i in ids and not ids[i] & WITH_SENT_AT),
        "stored_without_202": len(stored_unaccepted),
        "stored_without_202_after_no_answer": sum(1 for i in stored_unaccepted if ids[i] & UNANSWERED_ONCE),
        "stored_without_202_only_refused": sum(
            1 for i in stored_unaccepted if not ids[i] & UNANSWERED_ONCE and ids[i] & REFUSED_ONCE),
        "never_accepted_never_stored": sum(1 for i in ids if i not in accepted and i not in stored),
        "stored_ids_never_sent": sum(1 for i in stored if i not in ids),
        "requests_without_answer": no_answer_attempts,
        "refusals_without_retry_after": retry_after_missing,
        "undecodable_published": len(markers),
        "undecodable_dead_lettered": len(decode_found),
        "rows_without_nlp": sum(1 for _, _, has_nlp in rows if not has_nlp),
        "nlp_recovery": nlp_recovery(events, read_backlog(os.path.join(out_dir, "samples.csv")), rows),
        "examples": {"lost": sorted(lost)[:5], "duplicated": sorted(duplicated)[:5], "dead_letters_left": sorted(dead_left)[:5]},
    }
    return run, a, faults(events, samples, per_second)


def check(name, passed, detail):
    return {"check": name, "passed": bool(passed), "detail": detail}


# The end-of-run checks. Each takes the run's knobs and its accounting and returns one
# verdict; the run passes only if every one does. A further invariant (one that needs the
# database queries it through psql with run["database"]) is one more function in CHECKS.
def nothing_lost(run, a):
    return check("nothing lost", a["lost"] == 0, f"{a['lost']} accepted ids neither stored nor dead-lettered")


def nothing_duplicated(run, a):
    return check("nothing duplicated", a["duplicated"] == 0,
                 f"{a['duplicated']} ids with more than one row ({a['duplicated_without_sent_at']} of them sent without sent_at)")


def every_refusal_says_when(run, a):
    return check("every 429/503 carries Retry-After", a["refusals_without_retry_after"] == 0,
                 f"{a['refusals_without_retry_after']} without")


def no_dead_letter_left(run, a):
    return check("no dead letter left unreplayed", a["dead_letters_left"] == 0,
                 f"{a['dead_letters_left']} dead-lettered ids not in messages at the end")


def undecodable_records_dead_lettered(run, a):
    return check("every undecodable record dead-lettered", a["undecodable_dead_lettered"] == a["undecodable_published"],
                 f"{a['undecodable_dead_lettered']} of {a['undecodable_published']} found as decode dead letters")


def stored_ids_were_sent(run, a):
    return check("every stored id was sent by the client", a["stored_ids_never_sent"] == 0,
                 f"{a['stored_ids_never_sent']} stored ids not in the ledger")


def every_row_enriched(run, a):
    # pg-outage injects no NLP fault: its rows without NLP data are reported, not judged.
    if run.get("scenario") == "pg-outage":
        return None
    return check("every row has NLP data at the end (re-enriched after the NLP faults)",
                 a["rows_without_nlp"] == 0, f"{a['rows_without_nlp']} rows without NLP data")


def rollups_exact(run, a):
    # sql/checks/rollup_mismatches.sql: rollup rows differing from the raw rows' aggregate.
    sql = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sql", "checks", "rollup_mismatches.sql")
    result = subprocess.run(
        ["psql", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "chat",
         "-d", run["database"], "-f", sql],
        env={**os.environ, "PGPASSWORD": "chat"}, capture_output=True, text=True)
    if result.returncode != 0:
        return check("rollups equal the raw rows", False, f"psql failed: {result.stderr.strip()}")
    counts = dict(line.split("|") for line in result.stdout.split() if "|" in line)
    wrong = {level: int(n) for level, n in counts.items() if int(n) != 0}
    return check("rollups equal the raw rows", len(counts) == 4 and not wrong,
                 "; ".join(f"{level}: {n} rows differ" for level, n in wrong.items()) or
                 f"{len(counts)} rollups checked column by column, 0 rows differ")


CHECKS = [nothing_lost, nothing_duplicated, every_refusal_says_when, no_dead_letter_left,
          undecodable_records_dead_lettered, stored_ids_were_sent, every_row_enriched, rollups_exact]


DEFINITIONS = [
    ("ids_sent", "ids sent", "distinct message ids in the ledger"),
    ("ids_without_sent_at", "of which without sent_at", "the API used the time it received them"),
    ("ids_retried", "ids retried", "after a 429/503 or no answer, same id"),
    ("ids_resent_on_purpose", "ids re-sent on purpose", "a second time whatever the answer, same id"),
    ("accepted", "accepted", "ids with a 202 on any of their requests"),
    ("stored", "stored", "ids sent with at least one row in `messages`"),
    ("dead_lettered", "dead-lettered", "ids in a dead-letter file (any stage but decode)"),
    ("replayed", "replayed", "dead-lettered ids that are in `messages` at the end"),
    ("dead_letters_left", "dead letters left", "dead-lettered ids not in `messages` at the end"),
    ("lost", "**lost**", "accepted, but neither in `messages` nor in a dead-letter file"),
    ("duplicated", "**duplicated**", "ids with more than one row in `messages`"),
    ("duplicated_extra_rows", "extra rows", "rows beyond the first of duplicated ids"),
    ("stored_without_202", "stored without a 202", "stored, though no request of the id got a 202 (not an error when an answer was lost)"),
    ("stored_without_202_only_refused", "of which only refused", "every answer was 429/503, yet the message was stored"),
    ("never_accepted_never_stored", "refused and not stored", "the client was told no, and nothing was stored"),
    ("stored_ids_never_sent", "stored ids never sent", "rows whose id is not in the ledger (the readiness probe aside)"),
    ("requests_without_answer", "requests without an answer", "attempts that timed out, were cut or never answered"),
    ("refusals_without_retry_after", "429/503 without Retry-After", "answers that broke the API's promise"),
    ("undecodable_published", "undecodable records published", "straight to the topic during the dead-letter fault"),
    ("undecodable_dead_lettered", "undecodable records dead-lettered", "found as `decode` dead letters"),
    ("rows_without_nlp", "rows without NLP data at the end", "not re-enriched after the NLP faults"),
]


def markdown(report):
    m, c, r, a = report["machine"], report["commit"], report["run"], report["accounting"]
    lines = [f"# make chaos {report['stamp']}: {report['verdict']}", ""]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB memory, {m['kernel']}; "
                 "Kafka, Postgres, nlp-sim and the load generator on the same machine.")
    lines.append(f"Commit: `{c['commit']}`{' with uncommitted changes' if c['uncommitted_changes'] else ''}.")
    lines += ["", "## Settings", "", "| knob | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r.items()]
    lines += ["", "## Every id", "", "| figure | count | meaning |", "|---|---|---|"]
    lines += [f"| {label} | {a[key]} | {meaning} |" for key, label, meaning in DEFINITIONS]
    lines += ["", f"Requests by cause: {a['requests']}. Answers: {a['answers']}. "
              f"Dead letters by stage: {a['dead_letters_by_stage']}."]
    if any(a["examples"].values()):
        lines += ["", f"Examples: {a['examples']}"]
    lines += ["", "## Faults", "",
              "Times in seconds from the start of the load. *Recovered* is how long after the fault "
              f"ended the workers' summed `queue_depth` was back under its highest value in the {BASELINE_SECS} s "
              "before the fault (lag is reported every 5 s; a worker's first report comes up to "
              f"{LAG_REPORT_SECS} s after its start). Answers are those of all attempts from the fault's start "
              "until it recovered.", "",
              "| fault | at | lasted | queue_depth before / peak | recovered after | answers meanwhile | consumer paused | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for f in report["faults"]:
        if "skipped" in f:
            lines.append(f"| {f['fault']} | | | | | | | skipped: {f['skipped']} |")
            continue
        rec = "not within the run" if f["recovered_after_end_s"] is None else f"{f['recovered_after_end_s']} s"
        notes = "; ".join([f["detail"], *f["exits"]])
        lines.append(f"| {f['fault']} | {f['at_s']} | {f['lasted_s']} s | {f['queue_depth_before']} / "
                     f"{f['queue_depth_peak']} | {rec} | {f['answers_until_recovered']} | "
                     f"{'yes' if f['consumer_paused_seen'] else 'no'} | {notes} |")
    if r.get("scenario") == "pg-outage":
        pg = next((f for f in report["faults"] if f.get("fault") == "postgres-stop"), None)
        if pg:
            back = "was not back under it within the run" if pg["recovered_after_end_s"] is None \
                else f"was back under it at T+{pg['recovered_after_end_s']} s"
            lines += ["", f"Postgres back at T = {pg['at_s'] + pg['lasted_s']:.1f} s into the load; `queue_depth` "
                      f"(before the outage at most {pg['queue_depth_before']}, peak {pg['queue_depth_peak']}) {back}."]
    nlp = a.get("nlp_recovery")
    if nlp:
        after = "not within the run" if nlp["all_enriched_after_heal_s"] is None \
            else f"{nlp['all_enriched_after_heal_s']} s after it healed"
        lines += ["", "## NLP outage and re-enrichment", "",
                  f"The NLP API failed every call from 0 s to {nlp['healed_at_s']} s; up to "
                  f"{nlp['backlog_peak']} rows waited for NLP data; every row had it again {after}.", "",
                  "| messages received | count | P99 end to end (ms) |", "|---|---:|---:|"]
        lines += [f"| {w} | {nlp['messages'][w]} | {nlp['p99_end_to_end_ms'][w]} |" for w in nlp["messages"]]
    lines += ["", "## End-of-run checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['check']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", f"**{report['verdict']}**", ""]
    return "\n".join(lines)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    run, a, fault_list = account(out_dir)
    checks = [c for c in (rule(run, a) for rule in CHECKS) if c is not None]
    report = {
        "stamp": os.path.basename(os.path.normpath(out_dir)).removeprefix("chaos-"),
        "machine": bench_summary.machine_facts(),
        "commit": commit(),
        "run": run,
        "accounting": a,
        "faults": fault_list,
        "checks": checks,
        "verdict": "PASS" if all(c["passed"] for c in checks) else "FAIL",
    }
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    md = markdown(report)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(md)
    print(md)
    sys.exit(0 if report["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    main()
