#!/usr/bin/env bash
# `make bench`: the whole stack on this one machine (Kafka, Postgres, nlp-sim at 200 ms mean,
# the service in release mode, the load generator), the steady and the many-connections
# scenarios, the service's RSS and CPU sampled once a second, and a one-screen summary with
# pass/fail against each target of SPEC.md. Everything lands in bench/results/<UTC time>/.
#
# Knobs (environment): RATE (10000), DURATION (60 s), CONNECTIONS (2000, steady scenario),
# MANY_CONNECTIONS (50000), MANY_RATE (2000), MANY_DURATION (30 s), SOURCE_IPS (4),
# NLP_LATENCY_MS (200). Each run is bounded in time; only loopback addresses are used.
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
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_http() {
    local url="$1" deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { say "$url did not answer within 60 s"; return 1; }
        sleep 0.2
    done
}

say "infrastructure and release build"
scripts/infra.sh up >&2
cargo build --release >&2
scripts/infra.sh kafka-topic "$TOPIC" 12 >&2
# Each component's own ceiling, measured alone before the service starts.
OUT="$OUT/ceilings" scripts/bench_ceilings.sh >"$OUT/ceilings.md"

# An autovacuum worker can hold the old database for a moment (a non-superuser's FORCE
# cannot end it): retry the drop.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    PGPASSWORD=chat psql -q -h 127.0.0.1 -U chat -d postgres \
        -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >&2 && break
    sleep 1
done
PGPASSWORD=chat psql -q -h 127.0.0.1 -U chat -d postgres -c "CREATE DATABASE $DB" >&2

export CHAT_ANALYTICS__KAFKA__TOPIC="$TOPIC"
export CHAT_ANALYTICS__KAFKA__CONSUMER_GROUP="bench-$STAMP"
export CHAT_ANALYTICS__POSTGRES__URL="$DB_URL"
export CHAT_ANALYTICS__NLP__URL="http://127.0.0.1:$NLP_PORT/v1/analyze"
export CHAT_ANALYTICS__API__LISTEN="127.0.0.1:$API_PORT"
export CHAT_ANALYTICS__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT"
export CHAT_ANALYTICS__DLQ__DIR="$OUT/dlq"
export CHAT_ANALYTICS__LOG__LEVEL=warn
"$BIN" migrate >"$OUT/migrate.json"

say "nlp-sim (mean latency $NLP_LATENCY_MS ms) and the service"
"$BIN" nlp-sim --listen "127.0.0.1:$NLP_PORT" --latency-ms "$NLP_LATENCY_MS" 2>"$OUT/nlp-sim.log" &
pids+=($!)
# 50,000 connections need more descriptors than the default limit (root may raise it).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$BIN" serve 2>"$OUT/service.log" &
service=$!
pids+=("$service")
wait_http "http://127.0.0.1:$NLP_PORT/health"
wait_http "http://127.0.0.1:$ADMIN_PORT/health"

# RSS (kB) and CPU (% of one core) of the service, once a second, from /proc.
sample_resources() {
    local ticks prev=0 now rss
    ticks="$(getconf CLK_TCK)"
    echo "t_s,rss_kb,cpu_pct"
    local t=0
    while kill -0 "$service" 2>/dev/null; do
        read -r -a stat <"/proc/$service/stat" || break
        now=$((stat[13] + stat[14]))
        rss="$(awk '/^VmRSS/ {print $2}' "/proc/$service/status" 2>/dev/null || echo 0)"
        [ "$t" -eq 0 ] || echo "$t,$rss,$(( (now - prev) * 100 / ticks ))"
        prev=$now
        t=$((t + 1))
        sleep 1
    done
}
sample_resources >"$OUT/resources.csv" &
pids+=($!)

API="http://127.0.0.1:$API_PORT"
say "steady: $RATE msg/s over $CONNECTIONS connections for $DURATION s"
"$BIN" loadgen --url "$API" --rate "$RATE" --connections "$CONNECTIONS" --duration "$DURATION" \
    --warmup 5 --source-ips "$SOURCE_IPS" --postgres-url "$DB_URL" --out "$OUT/steady" \
    | tee "$OUT/steady.txt" >&2

say "many connections: $MANY_CONNECTIONS connections, $MANY_RATE msg/s for $MANY_DURATION s"
"$BIN" loadgen --url "$API" --rate "$MANY_RATE" --connections "$MANY_CONNECTIONS" \
    --duration "$MANY_DURATION" --warmup 5 --source-ips "$SOURCE_IPS" --out "$OUT/connections" \
    | tee "$OUT/connections.txt" >&2

curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$OUT/metrics.txt" || true
kill -TERM "$service"
wait "$service" || say "service exited with status $?"

python3 scripts/bench_summary.py "$OUT" | tee "$OUT/summary.md"
