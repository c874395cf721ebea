#!/usr/bin/env bash
# `make bench-worker`: how fast one `worker` drains a backlog, and what each record costs it.
# The topic is filled once through the real API (the bench stack of scripts/bench_stack.sh:
# ingest processes and the load generator; the stack's own worker is stopped first), then
# drained from the start by a new worker and consumer group per mode, each into a fresh
# database:
#
#   instant  nlp-sim answering at once (latency 0): the whole pipeline, NLP call included
#   down     the NLP API unreachable (a closed port): the breaker opens and every message is
#            stored without NLP data, i.e. the storage path alone
#
# Rows/s is RECORDS over the time from the first to the last processed message (the group's
# start-up left out); CPU is each process's, from /proc, over the same time: the worker's per
# record, Postgres' per row (every `postgres` process), nlp-sim's per call, and the machine's;
# the worker's peak resident memory (VmHWM) over its whole life, start-up included. What a row
# costs on disk: the WAL the server wrote from the worker's start to its exit (the folds and any
# checkpoint's full-page images included; nothing else writes meanwhile) and the size of
# `messages` (every partition, its indexes and TOAST) and of `message_keys`, each per row.
# The report states the machine's kernel costs too (examples/machine_probe.rs, run once on the
# quiet machine before the first drain), as `make bench` does.
# Issue targets: the worker >= 40,000 rows/s with an instant NLP API, >= 75,000 rows/s down.
#
# The backlog looks like the steady scenario of `make bench`: one message per request, one bot
# per connection, so a batch of the worker holds many bots (what the rollups cost depends on
# it: batches of a few bots fold into a few rows, batches of many bots into one row per message).
#
# Two worker configurations, alternated on the one backlog (optional): A and B are each a set of
# environment assignments for the draining worker (empty: as shipped), e.g.
# A='CHAT_ANALYTICS__STORAGE__BATCH_MAX_ROWS=500' B='', or A='BENCH_BIN=<another build>' for that
# build's worker (the backlog is filled by the stack's own). Each of ROUNDS rounds drains the backlog
# once per mode and configuration, A first; the summary gives each drain and, per mode and
# configuration, the medians and B's ratio to A. Without A and B: one configuration, as shipped.
#
# Writes bench/results/worker-<UTC time>/: summary.md, summary.json, each drain's metrics and
# the workers' log (worker.log). Knobs (environment): RECORDS (1000000), MODES ("instant down"), FILL_RATE
# (12000 msg/s), CONNECTIONS (2000, one bot each), DRAIN_TIMEOUT (600 s), ROUNDS (1), A and B, and
# the stack's (WORKER_THREADS, NLP_THREADS, ...). Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RECORDS="${RECORDS:-1000000}"
MODES="${MODES:-instant down}"
FILL_RATE="${FILL_RATE:-12000}"
CONNECTIONS="${CONNECTIONS:-2000}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-600}"
# Two ingest processes fill at FILL_RATE; the many-connections scenario is not run here.
export MANY_CONNECTIONS="${MANY_CONNECTIONS:-$CONNECTIONS}"
export INGEST_PROCESSES="${INGEST_PROCESSES:-2}"
export NLP_LATENCY_MS=0

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/worker-$STAMP"

say() { printf 'bench-worker: %s\n' "$*" >&2; }
die() { printf 'bench-worker: error: %s\n' "$*" >&2; exit 64; }

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
# shellcheck source=scripts/bench_stack.sh
source scripts/bench_stack.sh

[[ "$RECORDS" =~ ^[1-9][0-9]*$ ]] || die "RECORDS=$RECORDS: a whole number above 0"
for mode in $MODES; do
    [[ "$mode" =~ ^(instant|down)$ ]] || die "MODES: '$mode' is neither instant nor down"
done
ROUNDS="${ROUNDS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: a whole number above 0"
# The configurations drained: their labels and assignments.
if [ -n "${A+set}${B+set}" ]; then
    labels=(A B)
    declare -A assignments=([A]="${A:-}" [B]="${B:-}")
else
    labels=(shipped)
    declare -A assignments=([shipped]="")
fi
for label in "${labels[@]}"; do
    check_assignments "$label" "${assignments[$label]}" || exit 64
done
mkdir -p "$OUT"
trap stack_cleanup EXIT
stack_prepare --bin chat-analytics --example machine_probe
stack_start
stop_pids "${service_pids[0]}"

duration="$(awk -v n="$RECORDS" -v r="$FILL_RATE" 'BEGIN { printf "%.3f", n / r }')"
say "filling $TOPIC with $RECORDS messages at $FILL_RATE msg/s from $CONNECTIONS bots"
"$BIN" loadgen --url "$API" --rate "$FILL_RATE" --connections "$CONNECTIONS" --duration "$duration" --warmup 0 --out "$OUT/fill" >"$OUT/fill.txt" 2>&1 \
    || { tail -n 20 "$OUT/fill.txt" >&2; die "the load generator failed"; }
accepted="$(jq -r '.results.accepted_messages' "$OUT/fill/report.json")"
# The load generator may leave a few requests unanswered at its deadline; the backlog is what
# was accepted, and it must be nearly all.
[ "$accepted" -ge $((RECORDS * 99 / 100)) ] 2>/dev/null \
    || die "only $accepted of $RECORDS messages accepted while filling (see $OUT/fill.txt)"
RECORDS="$accepted"
stack_stop_service
wait_quiet
probe_machine "$OUT/machine-probe.json"

processed() {
    curl -fsS "http://${admins[0]}/metrics" 2>/dev/null \
        | awk '/^messages_processed_total/ { n += $2 } END { printf "%d", n }'
}
# One line of figures: ticks of the draining worker, nlp-sim, Postgres and the machine, and the time.
snapshot() {
    echo "$(pid_ticks "${service_pids[0]}") $(ticks_of -f "^$BIN nlp-sim") $(ticks_of -x postgres) $(machine_ticks) $(date +%s.%N)"
}

# One drain's figures as a JSON line, from: mode, records, rows stored, NLP statuses (JSON),
# clock ticks per second, the snapshots at the first and the last processed message, the
# worker's metrics at the end, the configuration's label, the round, the worker's peak
# resident memory in kB (VmHWM), the WAL bytes written and the bytes of `messages` and of
# `message_keys`.
mode_figures() {
    python3 - "$@" <<'PY'
import json, sys
mode, records, stored, statuses, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
config, round_, peak_kb = sys.argv[9], int(sys.argv[10]), int(sys.argv[11])
wal_bytes, messages_bytes, keys_bytes = (int(x) for x in sys.argv[12:15])
metrics = {}
for line in open(sys.argv[8]):
    if line and not line.startswith("#"):
        name, _, value = line.rpartition(" ")
        metrics[name] = float(value)
folds = metrics.get("rollup_fold_duration_seconds_count", 0)
a = [float(x) for x in sys.argv[6].split()]
b = [float(x) for x in sys.argv[7].split()]
secs = b[4] - a[4]
cores = [(b[i] - a[i]) / tck / secs for i in range(4)]
rate = records / secs
print(json.dumps({
    "mode": mode, "config": config, "round": round_, "records": records, "rows_stored": stored, "nlp_status": statuses,
    "seconds": round(secs, 2), "rows_per_sec": round(rate),
    "worker_peak_rss_mb": round(peak_kb / 1024, 1),
    "worker_cores": round(cores[0], 3), "nlp_sim_cores": round(cores[1], 3),
    "postgres_cores": round(cores[2], 3), "machine_cores": round(cores[3], 3),
    "worker_us_per_record": round(cores[0] * 1e6 / rate, 1),
    "postgres_us_per_row": round(cores[2] * 1e6 / rate, 1),
    "nlp_sim_us_per_record": round(cores[1] * 1e6 / rate, 1),
    "rows_per_batch": round(records / max(metrics.get("db_write_duration_seconds_count", 0), 1)),
    "pending_rollup_rows_per_row": round(metrics.get("rollup_rows_folded_total", 0) / records, 3),
    "folds": int(folds),
    "fold_ms_mean": round(metrics.get("rollup_fold_duration_seconds_sum", 0) * 1000 / max(folds, 1), 1),
    "wal_bytes_per_row": round(wal_bytes / max(stored, 1)),
    "messages_bytes_per_row": round(messages_bytes / max(stored, 1)),
    "message_keys_bytes_per_row": round(keys_bytes / max(stored, 1)),
}))
PY
}

# Exports a configuration's assignments, keeping what they replace for restore_config.
apply_config() {
    local word name words
    replaced=()
    read -r -a words <<<"$1"
    for word in "${words[@]}"; do
        name="${word%%=*}"
        if [ -n "${!name+set}" ]; then replaced+=("$name=${!name}"); else replaced+=("$name"); fi
        export "${word?}"
    done
}
restore_config() {
    local item
    for item in "${replaced[@]}"; do
        if [[ "$item" == *=* ]]; then export "${item?}"; else unset "$item"; fi
    done
}

# One value from database $1: the result of query $2, unaligned.
query() {
    PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$1" -c "$2"
}

# Drains the backlog once: mode $1, configuration $2, round $3; appends the figures to results.
drain() {
    local mode="$1" label="$2" round="$3"
    local tag="$mode-$label-$round" db="chat_bench_worker" nlp_url worker deadline first last stored statuses peak_kb
    local wal_start wal_bytes sizes
    drop_db "$db"
    PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d postgres -c "CREATE DATABASE $db" >&2
    export CHAT_ANALYTICS__POSTGRES__URL="postgres://chat:chat@127.0.0.1:5432/$db"
    "$BIN" migrate >"$OUT/migrate-$tag.json"
    nlp_url="http://127.0.0.1:$NLP_PORT/v1/analyze"
    # Nothing listens on port 9 (discard) here: every call is refused at once.
    [ "$mode" = instant ] || nlp_url="http://127.0.0.1:9/v1/analyze"
    wait_quiet
    say "$tag: draining $RECORDS records with a new consumer group [${assignments[$label]}]"
    wal_start="$(query "$db" 'SELECT pg_current_wal_lsn()')"
    apply_config "${assignments[$label]}"
    BIN="${BENCH_BIN:-$BIN}" CHAT_ANALYTICS__KAFKA__CONSUMER_GROUP="drain-$tag-$STAMP" \
        CHAT_ANALYTICS__NLP__URL="$nlp_url" CHAT_ANALYTICS__WORKER__REENRICH=false \
        CHAT_ANALYTICS__DLQ__DIR="$OUT/dlq-$tag" stack_start_worker
    restore_config
    worker="${service_pids[0]}"
    wait_http "http://${admins[0]}/health"
    deadline=$((SECONDS + DRAIN_TIMEOUT))
    until [ "$(processed)" -gt 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$tag: nothing processed within $DRAIN_TIMEOUT s"
        sleep 0.1
    done
    first="$(snapshot)"
    until [ "$(processed)" -ge "$RECORDS" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$tag: $(processed) of $RECORDS processed within $DRAIN_TIMEOUT s"
        sleep 0.2
    done
    last="$(snapshot)"
    curl -fsS "http://${admins[0]}/metrics" >"$OUT/metrics-$tag.txt"
    peak_kb="$(awk '/^VmHWM:/ { print $2 }' "/proc/$worker/status")"
    stop_pids "$worker"
    wal_bytes="$(query "$db" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal_start')::bigint")"
    stored="$(query "$db" 'SELECT count(*) FROM messages')"
    statuses="$(query "$db" "SELECT coalesce(json_object_agg(nlp_status, n), '{}') FROM (SELECT nlp_status, count(*) AS n FROM messages GROUP BY 1) s")"
    sizes="$(query "$db" "SELECT (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('messages'))::bigint || ' ' || pg_total_relation_size('message_keys')")"
    # shellcheck disable=SC2086 # two numbers, split on purpose
    results+=("$(mode_figures "$mode" "$RECORDS" "$stored" "$statuses" "$(getconf CLK_TCK)" "$first" "$last" \
        "$OUT/metrics-$tag.txt" "$label" "$round" "$peak_kb" "$wal_bytes" $sizes)")
    say "$tag: ${results[-1]}"
}

results=()
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        for label in "${labels[@]}"; do
            drain "$mode" "$label" "$round"
        done
    done
done

configurations=""
for label in "${labels[@]}"; do
    configurations+="${configurations:+; }$label: ${assignments[$label]:-as shipped}"
done
python3 - "$OUT" "$configurations" "${results[@]}" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, "scripts")
import bench_summary
out, rows = sys.argv[1], [json.loads(r) for r in sys.argv[3:]]
probe = bench_summary.load(os.path.join(out, "machine-probe.json"))
goal = {"instant": 40000, "down": 75000}
modes = list(dict.fromkeys(r["mode"] for r in rows))
labels = list(dict.fromkeys(r["config"] for r in rows))
figures = ["rows_per_sec", "worker_us_per_record", "postgres_us_per_row", "nlp_sim_us_per_record", "machine_cores", "worker_peak_rss_mb",
           "wal_bytes_per_row", "messages_bytes_per_row", "message_keys_bytes_per_row"]
medians = {}
for mode in modes:
    for label in labels:
        runs = [r for r in rows if r["mode"] == mode and r["config"] == label]
        # A median of an even count is a mean of two: rounded as the drains' own figures are.
        medians[(mode, label)] = {f: round(statistics.median(r[f] for r in runs), 3 if f == "machine_cores" else 1)
                                  for f in figures}
        medians[(mode, label)]["all_stored"] = all(r["rows_stored"] == r["records"] for r in runs)
json.dump({"machine": bench_summary.machine_facts(), "machine_probe": probe,
           "configurations": sys.argv[2], "modes": rows,
           "medians": [{"mode": m, "config": c, **v} for (m, c), v in medians.items()]},
          open(os.path.join(out, "summary.json"), "w"), indent=2)
lines = [f"# make bench-worker — {os.path.basename(out)}", "",
         f"Machine: {bench_summary.machine('Kafka, Postgres and nlp-sim')}.", "",
         bench_summary.probe_line(probe, "the drains"), ""]
if labels != ["shipped"]:
    lines += [f"Configurations (the draining worker's environment): {sys.argv[2]}.", ""]
lines += ["| mode | config | round | records | stored | rows/s | worker µs/record | Postgres µs/row | nlp-sim µs/call | worker cores | machine cores | worker peak RSS (MB) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['mode']} | {r['config']} | {r['round']} | {r['records']} | {r['rows_stored']} | {r['rows_per_sec']} "
                 f"| {r['worker_us_per_record']} | {r['postgres_us_per_row']} | {r['nlp_sim_us_per_record']} "
                 f"| {r['worker_cores']} | {r['machine_cores']} | {r['worker_peak_rss_mb']} |")
lines += ["", "Medians per mode and configuration; the goal is judged on the median rows/s, every drain storing every record:", "",
          "| mode | config | rows/s | goal | worker µs/record | Postgres µs/row | nlp-sim µs/call | machine cores | worker peak RSS (MB) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
for (mode, label), v in medians.items():
    verdict = "PASS" if v["rows_per_sec"] >= goal[mode] and v["all_stored"] else "FAIL"
    lines.append(f"| {mode} | {label} | {v['rows_per_sec']:.0f} | >= {goal[mode]} {verdict} | {v['worker_us_per_record']} "
                 f"| {v['postgres_us_per_row']} | {v['nlp_sim_us_per_record']} | {v['machine_cores']} | {v['worker_peak_rss_mb']} |")
if labels == ["A", "B"]:
    lines += ["", "B against A (ratio of the medians):", "", "| mode | rows/s | worker µs/record | Postgres µs/row | machine cores | worker peak RSS |",
              "|---|---:|---:|---:|---:|---:|"]
    for mode in modes:
        a, b = medians[(mode, "A")], medians[(mode, "B")]
        ratio = lambda f: f"{b[f] / a[f]:.2f}" if a[f] else "—"
        lines.append(f"| {mode} | {ratio('rows_per_sec')} | {ratio('worker_us_per_record')} | {ratio('postgres_us_per_row')} | {ratio('machine_cores')} | {ratio('worker_peak_rss_mb')} |")
lines += ["", "| mode | config | round | rows per batch | pending rollup rows per row | folds | fold time, mean (ms) |", "|---|---|---:|---:|---:|---:|---:|"]
lines += [f"| {r['mode']} | {r['config']} | {r['round']} | {r['rows_per_batch']} | {r['pending_rollup_rows_per_row']} | {r['folds']} | {r['fold_ms_mean']} |" for r in rows]
lines += ["", "Bytes per stored row: the WAL written from the worker's start to its exit, and the size of `messages` (partitions, indexes, TOAST) and of `message_keys` at the end:", "",
          "| mode | config | round | WAL | messages | message_keys |", "|---|---|---:|---:|---:|---:|"]
lines += [f"| {r['mode']} | {r['config']} | {r['round']} | {r['wal_bytes_per_row']} | {r['messages_bytes_per_row']} | {r['message_keys_bytes_per_row']} |" for r in rows]
lines += ["", "NLP status of the stored rows: " + "; ".join(f"{r['mode']} {r['config']} {r['round']} {r['nlp_status']}" for r in rows)]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
