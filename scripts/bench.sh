#!/usr/bin/env bash
# `make bench`: the whole stack on this one machine (Kafka, Postgres, nlp-sim at 200 ms mean,
# the service in release mode, the load generator), the steady and the many-connections
# scenarios, the service's RSS and CPU sampled once a second, and a one-screen summary with
# pass/fail against each target of SPEC.md. Everything lands in bench/results/<UTC time>/.
#
# The service runs as one `worker` process and as many `ingest` processes as it takes to hold
# MANY_CONNECTIONS under this machine's open-file limit, sharing the API port (SO_REUSEPORT,
# `api.reuse_port`); RSS and CPU are the sums over all of them.
#
# Knobs (environment): RATE (10000), DURATION (60 s), CONNECTIONS (2000, steady scenario),
# MANY_CONNECTIONS (50000), MANY_RATE (2000), MANY_DURATION (30 s), SOURCE_IPS (4),
# NLP_LATENCY_MS (200), NLP_HTTP2 (true), INGEST_PROCESSES (computed from the open-file limit),
# RUNTIME_THREADS (1: runtime threads of the ingest processes and the load generator,
# `runtime.worker_threads`), WORKER_THREADS and NLP_THREADS (0: one per core). Each run is
# bounded in time; only loopback addresses are used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE="${RATE:-10000}"
DURATION="${DURATION:-60}"
CONNECTIONS="${CONNECTIONS:-2000}"
MANY_CONNECTIONS="${MANY_CONNECTIONS:-50000}"
MANY_RATE="${MANY_RATE:-2000}"
MANY_DURATION="${MANY_DURATION:-30}"
SOURCE_IPS="${SOURCE_IPS:-4}"
NLP_LATENCY_MS="${NLP_LATENCY_MS:-200}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/$STAMP"
BIN=./target/release/chat-analytics
TOPIC="bench.messages.$STAMP"
DB="chat_bench"
DB_URL="postgres://chat:chat@127.0.0.1:5432/$DB"
NLP_PORT=18090
API_PORT=18080
ADMIN_PORT=18081
mkdir -p "$OUT"

say() { printf 'bench: %s\n' "$*" >&2; }

pids=()
topic_created=false
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # A run's topic holds its ~700,000 records; left behind, every run would add 12 partitions
    # for the broker to carry. (The database stays until the next run, for queries.)
    if $topic_created; then
        timeout 60 scripts/infra.sh kafka-topic-delete "$TOPIC" >/dev/null 2>&1 \
            || say "could not delete topic $TOPIC"
    fi
}
trap cleanup EXIT

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

say "infrastructure and release build"
scripts/infra.sh up >&2
cargo build --release --bin chat-analytics --example ingest_ceiling >&2
scripts/infra.sh kafka-topic "$TOPIC" 12 >&2
topic_created=true

drop_db "$DB"
PGPASSWORD=chat psql -q -h 127.0.0.1 -U chat -d postgres -c "CREATE DATABASE $DB" >&2

export CHAT_ANALYTICS__KAFKA__TOPIC="$TOPIC"
export CHAT_ANALYTICS__KAFKA__CONSUMER_GROUP="bench-$STAMP"
export CHAT_ANALYTICS__POSTGRES__URL="$DB_URL"
export CHAT_ANALYTICS__NLP__URL="http://127.0.0.1:$NLP_PORT/v1/analyze"
# nlp-sim speaks h2c: one multiplexed connection instead of ~2,000 (NLP_HTTP2=false compares).
export CHAT_ANALYTICS__NLP__HTTP2="${NLP_HTTP2:-true}"
export CHAT_ANALYTICS__API__LISTEN="127.0.0.1:$API_PORT"
export CHAT_ANALYTICS__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT"
export CHAT_ANALYTICS__DLQ__DIR="$OUT/dlq"
export CHAT_ANALYTICS__LOG__LEVEL=warn
# Seven processes on two cores: one runtime thread each spends less CPU on cross-thread
# wake-ups and work-stealing than one per core (docs/BENCHMARKS-HISTORY.md, tuning log
# step 14). The worker and nlp-sim keep one per core: on one thread, answers and timers
# queued behind bursts of work, NLP calls overran their 300 ms timeout four times as often
# and a backlog built up.
export CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${RUNTIME_THREADS:-1}"
"$BIN" migrate >"$OUT/migrate.json"

say "nlp-sim (mean latency $NLP_LATENCY_MS ms) and the service"
CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${NLP_THREADS:-0}" "$BIN" nlp-sim --listen "127.0.0.1:$NLP_PORT" --latency-ms "$NLP_LATENCY_MS" 2>"$OUT/nlp-sim.log" &
pids+=($!)
# 50,000 connections need more descriptors than the default limit (root may raise it); what
# one process cannot hold, more ingest processes on the same port do.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile="$(ulimit -n)"
[ "$nofile" != unlimited ] || nofile=1048576
# Headroom per process for Kafka, Postgres and NLP sockets and the kernel's uneven spread.
per_process=$((nofile - 2000))
INGEST_PROCESSES="${INGEST_PROCESSES:-$(((MANY_CONNECTIONS + per_process - 1) / per_process))}"
say "service: 1 worker + $INGEST_PROCESSES ingest process(es) on port $API_PORT (open-file limit $nofile)"

service_pids=()
admins=("127.0.0.1:$ADMIN_PORT")
CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${WORKER_THREADS:-0}" "$BIN" worker 2>"$OUT/worker.log" &
service_pids+=($!)
for i in $(seq 1 "$INGEST_PROCESSES"); do
    admin="127.0.0.1:$((ADMIN_PORT + i))"
    admins+=("$admin")
    CHAT_ANALYTICS__API__REUSE_PORT=true CHAT_ANALYTICS__ADMIN__LISTEN="$admin" \
        "$BIN" ingest 2>"$OUT/ingest-$i.log" &
    service_pids+=($!)
done
pids+=("${service_pids[@]}")
wait_http "http://127.0.0.1:$NLP_PORT/health"
for admin in "${admins[@]}"; do wait_http "http://$admin/health"; done

# RSS (kB) and CPU (% of one core) of the service, summed over its processes, once a second,
# from /proc; the worker's share in its own columns, and the whole machine's busy CPU (% of
# one core, everything included: Kafka, Postgres, nlp-sim, the load generator).
sample_resources() {
    local ticks t=0 pid i rss ticks_now cpu total_rss total_cpu worker_rss worker_cpu stat
    local busy prev_busy=0 machine
    local -A prev=()
    ticks="$(getconf CLK_TCK)"
    echo "t_s,rss_kb,cpu_pct,worker_rss_kb,worker_cpu_pct,machine_cpu_pct"
    while kill -0 "${service_pids[0]}" 2>/dev/null; do
        total_rss=0 total_cpu=0 worker_rss=0 worker_cpu=0
        for i in "${!service_pids[@]}"; do
            pid="${service_pids[$i]}"
            read -r -a stat <"/proc/$pid/stat" 2>/dev/null || continue
            ticks_now=$((stat[13] + stat[14]))
            # An exiting process has no VmRSS line any more.
            rss="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
            rss="${rss:-0}"
            cpu=$(( (ticks_now - ${prev[$pid]:-$ticks_now}) * 100 / ticks ))
            prev[$pid]=$ticks_now
            total_rss=$((total_rss + rss))
            total_cpu=$((total_cpu + cpu))
            if [ "$i" -eq 0 ]; then worker_rss=$rss worker_cpu=$cpu; fi
        done
        busy="$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
        machine=$(( (busy - prev_busy) * 100 / ticks ))
        prev_busy=$busy
        [ "$t" -eq 0 ] || echo "$t,$total_rss,$total_cpu,$worker_rss,$worker_cpu,$machine"
        t=$((t + 1))
        sleep 1
    done
}
sample_resources >"$OUT/resources.csv" &
pids+=($!)

API="http://127.0.0.1:$API_PORT"
# Measure a running pipeline, not its start-up: wait until one message has gone all the way
# to Postgres (the worker has joined its group and has partitions, nlp-sim answers).
probe_id="$(cat /proc/sys/kernel/random/uuid)"
curl -fsS -o /dev/null -XPOST "$API/v1/messages" -H 'content-type: application/json' \
    -d "{\"message_id\":\"$probe_id\",\"bot_id\":\"bench-probe\",\"text\":\"ready?\"}"
deadline=$((SECONDS + 60))
until [ "$(PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$DB" \
    -c "SELECT count(*) FROM messages WHERE message_id = '$probe_id'")" = 1 ]; do
    [ "$SECONDS" -lt "$deadline" ] || { say "the probe message was not stored within 60 s"; exit 1; }
    sleep 0.5
done
say "steady: $RATE msg/s over $CONNECTIONS connections for $DURATION s"
# The warm-up rises to the rate over 5 s and holds it 5 s more: a step from idle to the full
# rate, with every process cold, leaves a backlog that the worker pool (≈ 90% busy at this
# rate) drains only slowly, and the measured minute would be about that start.
"$BIN" loadgen --url "$API" --rate "$RATE" --connections "$CONNECTIONS" --duration "$DURATION" \
    --warmup 10 --warmup-ramp --source-ips "$SOURCE_IPS" --postgres-url "$DB_URL" --out "$OUT/steady" \
    | tee "$OUT/steady.txt" >&2

say "many connections: $MANY_CONNECTIONS connections, $MANY_RATE msg/s for $MANY_DURATION s"
"$BIN" loadgen --url "$API" --rate "$MANY_RATE" --connections "$MANY_CONNECTIONS" \
    --duration "$MANY_DURATION" --warmup 5 --source-ips "$SOURCE_IPS" --out "$OUT/connections" \
    | tee "$OUT/connections.txt" >&2

for i in "${!admins[@]}"; do
    curl -fsS "http://${admins[$i]}/metrics" >"$OUT/metrics-$i.txt" || true
done
for pid in "${service_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${service_pids[@]}"; do wait "$pid" || say "service process $pid exited with status $?"; done

# Each component's ceiling, measured alone once the service has stopped. Run first, the
# ceilings' own aftermath (a million records for the broker to clean up, Postgres
# checkpointing 400,000 rows) took CPU from the steady run.
OUT="$OUT/ceilings" scripts/bench_ceilings.sh >"$OUT/ceilings.md" \
    || say "component ceilings failed; the summary goes without them"

RATE="$RATE" MANY_CONNECTIONS="$MANY_CONNECTIONS" python3 scripts/bench_summary.py "$OUT" | tee "$OUT/summary.md"
