#!/usr/bin/env bash
# `make chaos`: faults under load, and every message id accounted for afterwards.
#
# The stack runs as separate processes on private ports, with its own topic, consumer group,
# database and dead-letter directory: nlp-sim, INGEST_PROCESSES `ingest` processes sharing one
# API port (`api.reuse_port`) and a `worker` (a second one joins for a while). The load
# generator sends RATE msg/s with client message ids, WITHOUT_SENT_AT of the messages without
# `sent_at`, retries refusals and unanswered requests (RETRIES, honouring Retry-After) and
# re-sends RESEND of the requests on purpose, and writes every attempt of every message to
# a ledger. Meanwhile a timeline of faults runs. Once the load ends and the worker has
# drained, scripts/chaos_accounting.py compares the ledger with the `messages` table and the
# dead-letter files, and writes report.json and report.md to bench/results/chaos-<UTC time>/.
# The exit status is 0 only if the run passes (nothing lost or duplicated, every 429/503
# with Retry-After, no dead letter left unreplayed, every undecodable record dead-lettered).
#
# It stops and starts Kafka and Postgres, so it needs the broker to have been started by
# scripts/infra.sh of the checkout whose state directory CHAT_ANALYTICS_INFRA_DIR names (this
# one by default), and the machine to itself for the run. Bounded: well under 15 minutes
# with the default knobs.
#
# Scenarios (SCENARIO):
#   timeline (default): after WARMUP s, one fault after another, GAP s apart:
#     worker SIGKILL (restarted 2 s later); Postgres immediate stop for PG_OUTAGE s; NLP 100%
#     errors for NLP_ERRORS_SECS s, then 50% hangs for NLP_HANGS_SECS s; Kafka SIGKILL for
#     KAFKA_OUTAGE s; worker SIGTERM (restarted once it exits); a second worker joining for
#     SECOND_WORKER_SECS s, then SIGTERM (two rebalances); the dead-letter directory
#     unwritable (chattr +i) for DLQ_READONLY_SECS s while UNDECODABLE undecodable records are
#     published to the topic; one ingest process SIGTERM'd (restarted once it exits).
#   pg-outage: BEFORE s of load, Postgres stopped (immediate) for OUTAGE s, then AFTER s more
#     of load; the report says when Postgres was back and when queue_depth was back under its
#     pre-outage level, e.g. `make chaos SCENARIO=pg-outage RATE=10000 OUTAGE=60`.
#   nlp-outage: BEFORE s of load, the NLP API failing every call for OUTAGE s, then AFTER s
#     more of load; the report says when the API healed, when the worker had re-enriched
#     every row stored without NLP data, and the live messages' P99 end to end before,
#     during, while re-enriching and after, e.g.
#     `make chaos SCENARIO=nlp-outage RATE=2000 OUTAGE=30 AFTER=360`.
#
# Other knobs (environment): RATE (1500), CONNECTIONS (200), INGEST_PROCESSES (2),
# WITHOUT_SENT_AT (0.5), RESEND (0.05), RETRIES (4), NLP_LATENCY_MS (200), DRAIN_SECS (240:
# longest wait for the worker to finish after the load), MAX_OUTAGE_SECS (unset: the
# service's default; else passed as storage.max_outage_secs), RUNTIME_THREADS (1: runtime
# threads of the ingest processes), LOG_LEVEL (info). Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIO="${SCENARIO:-timeline}"
RATE="${RATE:-1500}"
CONNECTIONS="${CONNECTIONS:-200}"
INGEST_PROCESSES="${INGEST_PROCESSES:-2}"
WITHOUT_SENT_AT="${WITHOUT_SENT_AT:-0.5}"
RESEND="${RESEND:-0.05}"
RETRIES="${RETRIES:-4}"
NLP_LATENCY_MS="${NLP_LATENCY_MS:-200}"
DRAIN_SECS="${DRAIN_SECS:-240}"
MAX_OUTAGE_SECS="${MAX_OUTAGE_SECS:-}"
WARMUP="${WARMUP:-20}"
GAP="${GAP:-30}"
PG_OUTAGE="${PG_OUTAGE:-15}"
NLP_ERRORS_SECS="${NLP_ERRORS_SECS:-20}"
NLP_HANGS_SECS="${NLP_HANGS_SECS:-20}"
KAFKA_OUTAGE="${KAFKA_OUTAGE:-15}"
SECOND_WORKER_SECS="${SECOND_WORKER_SECS:-30}"
DLQ_READONLY_SECS="${DLQ_READONLY_SECS:-10}"
UNDECODABLE="${UNDECODABLE:-20}"
BEFORE="${BEFORE:-40}"
OUTAGE="${OUTAGE:-60}"
AFTER="${AFTER:-150}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/chaos-$STAMP"
RUN="$OUT/run"
BIN=./target/release/chat-analytics
TOPIC="chaos.messages.$STAMP"
DB=chat_chaos
DB_URL="postgres://chat:chat@127.0.0.1:5432/$DB"
NLP_PORT=19090
API_PORT=19080
ADMIN_BASE=19100
DLQ_DIR="$OUT/dlq"
KAFKA=127.0.0.1:9092
mkdir -p "$RUN" "$DLQ_DIR"

say() { printf 'chaos: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }
now_ms() { date +%s%3N; }

# The run's events, one CSV line each: when, what, which, and a free-form detail.
event() {
    local detail="${3:-}"
    printf '%s,%s,%s,%s\n' "$(now_ms)" "$1" "$2" "${detail//,/;}" >>"$OUT/events.csv"
    say "$1 $2${3:+: $3}"
}

declare -A PIDS=() ADMIN=() STARTS=()
topic_created=false
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local name
    rm -f "$RUN/sampling"
    chattr -R -i "$DLQ_DIR" 2>/dev/null || true
    for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
    for name in "${!PIDS[@]}"; do wait "${PIDS[$name]}" 2>/dev/null || true; done
    # A fault may have been cut short: leave the infrastructure running for the next user.
    scripts/infra.sh up >/dev/null 2>&1 || say "could not bring Kafka and Postgres back up"
    if $topic_created; then
        timeout 60 scripts/infra.sh kafka-topic-delete "$TOPIC" >/dev/null 2>&1 \
            || say "could not delete topic $TOPIC"
    fi
}
trap cleanup EXIT

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

infra() { scripts/infra.sh "$@" >>"$OUT/infra.log" 2>&1; }

# The workers the sampler reads, as `name admin-port` lines (rewritten whole, then renamed).
publish_workers() {
    local name
    for name in "${!ADMIN[@]}"; do
        case "$name" in worker-*) [ -z "${PIDS[$name]:-}" ] || echo "$name ${ADMIN[$name]}" ;; esac
    done >"$RUN/workers.tmp"
    mv "$RUN/workers.tmp" "$RUN/workers"
}

# start NAME ROLE ADMIN_PORT [ENV=VALUE ...]: one service process, its log numbered by start.
start() {
    local name="$1" role="$2" port="$3"
    shift 3
    STARTS[$name]=$((${STARTS[$name]:-0} + 1))
    env CHAT_ANALYTICS__ADMIN__LISTEN="127.0.0.1:$port" "$@" \
        "$BIN" "$role" 2>"$OUT/$name.${STARTS[$name]}.log" &
    PIDS[$name]=$!
    ADMIN[$name]=$port
    event start "$name" "pid ${PIDS[$name]}"
    publish_workers
}

start_worker() { start "$1" worker "$2" CHAT_ANALYTICS__RUNTIME__WORKER_THREADS=0; }

start_ingest() {
    start "ingest-$1" ingest "$((ADMIN_BASE + 10 + $1))" \
        CHAT_ANALYTICS__API__REUSE_PORT=true \
        CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${RUNTIME_THREADS:-1}"
}

# stop NAME SIGNAL: signal the process, wait for it, record how it ended and how long it took.
stop() {
    local name="$1" sig="$2" pid="${PIDS[$1]}" started status=0
    started=$(now_ms)
    kill -s "$sig" "$pid" 2>/dev/null || true
    wait "$pid" || status=$?
    unset "PIDS[$name]"
    publish_workers
    event exit "$name" "SIG$sig; exit status $status after $(( $(now_ms) - started )) ms"
}

nlp_faults() {
    curl -fsS -o /dev/null -XPOST "http://127.0.0.1:$NLP_PORT/admin/faults" \
        -H 'content-type: application/json' -d "$1"
}

# Seconds since the load started: `at S` waits until then.
LOAD_START_MS=0
at() {
    local target=$((LOAD_START_MS + $1 * 1000)) now
    now=$(now_ms)
    if [ "$now" -lt "$target" ]; then
        sleep "$(printf '%d.%03d' $(((target - now) / 1000)) $(((target - now) % 1000)))"
    else
        say "the timeline runs $(((now - target) / 1000)) s late at its ${1} s mark"
    fi
}

# Once a second, queue_depth, consumer_paused (any reason) and reenrich_backlog of every
# worker that answers.
sample_workers() {
    local round=0 name port
    echo "round,at_ms,worker,queue_depth,consumer_paused,reenrich_backlog"
    while [ -f "$RUN/sampling" ]; do
        while read -r name port; do
            curl -fsS -m 1 "http://127.0.0.1:$port/metrics" 2>/dev/null \
                | awk -v r="$round" -v t="$(now_ms)" -v w="$name" '
                    $1 == "queue_depth" { q = $2 } $1 ~ /^consumer_paused/ && $2 > p { p = $2 }
                    $1 == "reenrich_backlog" { b = $2 }
                    END { if (q != "") printf "%s,%s,%s,%s,%s,%s\n", r, t, w, q, p + 0, b }' || true
        done <"$RUN/workers"
        round=$((round + 1))
        sleep 1
    done
}

# ----- the faults ------------------------------------------------------------------------

fault_worker_kill() {
    event fault-start worker-kill "SIGKILL worker-a"
    stop worker-a KILL
    sleep 2
    start_worker worker-a "$ADMIN_BASE"
    event fault-end worker-kill "worker-a restarted"
}

fault_postgres() {
    local secs="$1"
    event fault-start postgres-stop "immediate stop for $secs s"
    infra postgres-stop --immediate
    sleep "$secs"
    infra postgres-start
    event fault-end postgres-stop "Postgres accepts connections again"
}

fault_nlp() {
    event fault-start nlp-errors "100% errors for $NLP_ERRORS_SECS s"
    nlp_faults '{"error_rate": 1.0, "hang_rate": 0.0}'
    sleep "$NLP_ERRORS_SECS"
    nlp_faults '{"error_rate": 0.0, "hang_rate": 0.0}'
    event fault-end nlp-errors "NLP healthy"
    event fault-start nlp-hangs "50% hangs for $NLP_HANGS_SECS s"
    nlp_faults '{"error_rate": 0.0, "hang_rate": 0.5}'
    sleep "$NLP_HANGS_SECS"
    nlp_faults '{"error_rate": 0.0, "hang_rate": 0.0}'
    event fault-end nlp-hangs "NLP healthy"
}

fault_kafka() {
    event fault-start kafka-kill "SIGKILL of the broker for $KAFKA_OUTAGE s"
    infra kafka-stop --kill
    sleep "$KAFKA_OUTAGE"
    infra kafka-start
    event fault-end kafka-kill "the broker accepts clients again"
}

fault_worker_term() {
    event fault-start worker-term "SIGTERM worker-a"
    stop worker-a TERM
    start_worker worker-a "$ADMIN_BASE"
    event fault-end worker-term "worker-a restarted"
}

fault_second_worker() {
    event fault-start second-worker "worker-b joins for $SECOND_WORKER_SECS s"
    start_worker worker-b "$((ADMIN_BASE + 1))"
    sleep "$SECOND_WORKER_SECS"
    stop worker-b TERM
    event fault-end second-worker "worker-b left"
}

fault_dlq_unwritable() {
    local probe="$RUN/chattr-probe" i files
    touch "$probe"
    if ! chattr +i "$probe" 2>/dev/null; then
        event fault-skipped dlq-unwritable "chattr +i is not available here (needs root and ext4 or alike)"
        return 0
    fi
    chattr -i "$probe"
    files=("$DLQ_DIR"/dead-letters-*.jsonl)
    [ -e "${files[0]}" ] || files=()
    chattr +i "$DLQ_DIR" "${files[@]}"
    event fault-start dlq-unwritable "chattr +i on the dead-letter directory and ${#files[@]} file(s) for $DLQ_READONLY_SECS s"
    # Undecodable records make the worker write dead letters while it cannot.
    for i in $(seq 1 "$UNDECODABLE"); do echo "chaos-undecodable-$STAMP-$i"; done >"$OUT/undecodable.txt"
    sed 's/^\(.*-\([0-9]*\)\)$/undecodable-\2|\1 {not an envelope/' "$OUT/undecodable.txt" \
        | kcat -P -b "$KAFKA" -t "$TOPIC" -K '|' 2>>"$OUT/infra.log"
    event published undecodable "$UNDECODABLE records"
    sleep "$DLQ_READONLY_SECS"
    chattr -R -i "$DLQ_DIR"
    event fault-end dlq-unwritable "the dead-letter directory is writable again"
}

fault_ingest_term() {
    event fault-start ingest-term "SIGTERM ingest-1 (the others keep the port)"
    stop ingest-1 TERM
    start_ingest 1
    event fault-end ingest-term "ingest-1 restarted"
}

# The timeline scenario: fault marks (seconds into the load) with room for each fault.
timeline() {
    local t=$WARMUP
    at "$t"; fault_worker_kill
    t=$((t + 2 + GAP)); at "$t"; fault_postgres "$PG_OUTAGE"
    t=$((t + PG_OUTAGE + 5 + GAP)); at "$t"; fault_nlp
    t=$((t + NLP_ERRORS_SECS + NLP_HANGS_SECS + GAP)); at "$t"; fault_kafka
    t=$((t + KAFKA_OUTAGE + 15 + GAP)); at "$t"; fault_worker_term
    t=$((t + 20 + GAP)); at "$t"; fault_second_worker
    t=$((t + SECOND_WORKER_SECS + 15 + GAP)); at "$t"; fault_dlq_unwritable
    t=$((t + DLQ_READONLY_SECS + GAP)); at "$t"; fault_ingest_term
}
timeline_secs() {
    echo $((WARMUP + 2 + PG_OUTAGE + 5 + NLP_ERRORS_SECS + NLP_HANGS_SECS + KAFKA_OUTAGE + 15 \
        + 20 + SECOND_WORKER_SECS + 15 + DLQ_READONLY_SECS + 20 + 8 * GAP))
}

pg_outage() { at "$BEFORE"; fault_postgres "$OUTAGE"; }
nlp_outage() {
    at "$BEFORE"
    event fault-start nlp-outage "100% errors for $OUTAGE s"
    nlp_faults '{"error_rate": 1.0, "hang_rate": 0.0}'
    sleep "$OUTAGE"
    nlp_faults '{"error_rate": 0.0, "hang_rate": 0.0}'
    event fault-end nlp-outage "NLP healthy"
}

case "$SCENARIO" in
    timeline) LOAD_SECS="$(timeline_secs)" ;;
    pg-outage | nlp-outage) LOAD_SECS=$((BEFORE + OUTAGE + AFTER)) ;;
    *) die "SCENARIO=$SCENARIO: expected timeline, pg-outage or nlp-outage" ;;
esac

# ----- set-up ----------------------------------------------------------------------------

say "infrastructure and release build"
scripts/infra.sh up >&2
command -v kcat >/dev/null || scripts/infra.sh install >&2
command -v kcat >/dev/null || die "kcat is needed to publish undecodable records"
infra_status="$(scripts/infra.sh status)"
grep -q '^kafka .*, started by infra.sh' <<<"$infra_status" \
    || die "the broker on $KAFKA was not started from this checkout's infra state; set CHAT_ANALYTICS_INFRA_DIR to the state directory of the one that started it"
cargo build --release --bin chat-analytics >&2
scripts/infra.sh kafka-topic "$TOPIC" 12 >&2
topic_created=true
drop_db "$DB"
PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d postgres -c "CREATE DATABASE $DB" >&2

export CHAT_ANALYTICS__KAFKA__TOPIC="$TOPIC"
export CHAT_ANALYTICS__KAFKA__CONSUMER_GROUP="chaos-$STAMP"
export CHAT_ANALYTICS__POSTGRES__URL="$DB_URL"
export CHAT_ANALYTICS__NLP__URL="http://127.0.0.1:$NLP_PORT/v1/analyze"
export CHAT_ANALYTICS__NLP__HTTP2=true
export CHAT_ANALYTICS__API__LISTEN="127.0.0.1:$API_PORT"
export CHAT_ANALYTICS__DLQ__DIR="$DLQ_DIR"
export CHAT_ANALYTICS__LOG__LEVEL="${LOG_LEVEL:-info}"
# Only a service that knows the key accepts it (the configuration refuses unknown keys).
[ -z "$MAX_OUTAGE_SECS" ] || export CHAT_ANALYTICS__STORAGE__MAX_OUTAGE_SECS="$MAX_OUTAGE_SECS"
"$BIN" migrate >"$RUN/migrate.json"

cat >"$OUT/run.json" <<EOF
{"scenario": "$SCENARIO", "rate": $RATE, "connections": $CONNECTIONS,
 "ingest_processes": $INGEST_PROCESSES, "without_sent_at": $WITHOUT_SENT_AT,
 "resend": $RESEND, "retries": $RETRIES, "nlp_latency_ms": $NLP_LATENCY_MS,
 "load_secs": $LOAD_SECS, "drain_secs": $DRAIN_SECS, "max_outage_secs": "${MAX_OUTAGE_SECS:-service default}",
 "warmup": $WARMUP, "gap": $GAP, "pg_outage": $PG_OUTAGE, "nlp_errors_secs": $NLP_ERRORS_SECS,
 "nlp_hangs_secs": $NLP_HANGS_SECS, "kafka_outage": $KAFKA_OUTAGE,
 "second_worker_secs": $SECOND_WORKER_SECS, "dlq_readonly_secs": $DLQ_READONLY_SECS,
 "undecodable": $UNDECODABLE, "before": $BEFORE, "outage": $OUTAGE, "after": $AFTER,
 "topic": "$TOPIC", "database": "$DB"}
EOF

say "nlp-sim, $INGEST_PROCESSES ingest processes on port $API_PORT, one worker"
echo "at_ms,event,name,detail" >"$OUT/events.csv"
: >"$RUN/workers"
CHAT_ANALYTICS__RUNTIME__WORKER_THREADS=0 "$BIN" nlp-sim --listen "127.0.0.1:$NLP_PORT" \
    --latency-ms "$NLP_LATENCY_MS" 2>"$OUT/nlp-sim.log" &
PIDS[nlp-sim]=$!
start_worker worker-a "$ADMIN_BASE"
for i in $(seq 1 "$INGEST_PROCESSES"); do start_ingest "$i"; done
wait_http "http://127.0.0.1:$NLP_PORT/health"
for name in "${!ADMIN[@]}"; do wait_http "http://127.0.0.1:${ADMIN[$name]}/health"; done

# A running pipeline, not its start-up: one message all the way to Postgres first.
probe_id="$(cat /proc/sys/kernel/random/uuid)"
curl -fsS -o /dev/null -XPOST "http://127.0.0.1:$API_PORT/v1/messages" \
    -H 'content-type: application/json' \
    -d "{\"message_id\":\"$probe_id\",\"bot_id\":\"chaos-probe\",\"text\":\"ready?\"}"
deadline=$((SECONDS + 60))
until [ "$(PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$DB" \
    -c "SELECT count(*) FROM messages WHERE message_id = '$probe_id'")" = 1 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "the probe message was not stored within 60 s"
    sleep 0.5
done

touch "$RUN/sampling"
sample_workers >"$OUT/samples.csv" &
PIDS[sampler]=$!

# ----- load and faults -------------------------------------------------------------------

say "$SCENARIO: $RATE msg/s for $LOAD_SECS s over $CONNECTIONS connections"
event load-start loadgen "$RATE msg/s for $LOAD_SECS s"
LOAD_START_MS=$(now_ms)
"$BIN" loadgen --url "http://127.0.0.1:$API_PORT" --rate "$RATE" --connections "$CONNECTIONS" \
    --duration "$((LOAD_SECS - 10))" --warmup 10 --warmup-ramp --retries "$RETRIES" \
    --resend "$RESEND" --without-sent-at "$WITHOUT_SENT_AT" --ledger "$OUT/ledger.csv" \
    --out "$OUT/load" >"$OUT/load.txt" 2>"$OUT/loadgen.log" &
PIDS[loadgen]=$!
case "$SCENARIO" in
    timeline) timeline ;;
    pg-outage) pg_outage ;;
    nlp-outage) nlp_outage ;;
esac
loadgen_status=0
wait "${PIDS[loadgen]}" || loadgen_status=$?
unset "PIDS[loadgen]"
event load-end loadgen "exit status $loadgen_status"
[ "$loadgen_status" -eq 0 ] || die "the load generator failed (see $OUT/loadgen.log)"

# ----- drain -----------------------------------------------------------------------------

rows() {
    PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$DB" -c 'SELECT count(*) FROM messages' \
        2>/dev/null || echo unknown
}
backlog() {
    PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$DB" -c \
        "SELECT count(*) FROM messages WHERE nlp_status <> 'ok'" 2>/dev/null || echo unknown
}
lag() {
    local name total=0 q
    for name in "${!PIDS[@]}"; do
        case "$name" in worker-*) ;; *) continue ;; esac
        q="$(curl -fsS -m 2 "http://127.0.0.1:${ADMIN[$name]}/metrics" 2>/dev/null \
            | awk '$1 == "queue_depth" { print $2 }')" || q=
        total=$((total + ${q:-0}))
    done
    echo "$total"
}
say "waiting for the worker to drain (at most $DRAIN_SECS s)"
deadline=$((SECONDS + DRAIN_SECS)) last=-1 stable_since=$SECONDS
while [ "$SECONDS" -lt "$deadline" ]; do
    now_rows="$(rows)"
    [ "$now_rows" = "$last" ] || stable_since=$SECONDS
    last="$now_rows"
    # Lag is reported every 5 s; rows unchanged for 15 s means replays are done too; rows
    # stored without NLP data during an NLP fault are re-enriched by the worker meanwhile
    # (pg-outage injects no NLP fault and does not wait for that).
    if [ "$(lag)" = 0 ] && [ $((SECONDS - stable_since)) -ge 15 ] \
        && { [ "$SCENARIO" = pg-outage ] || [ "$(backlog)" = 0 ]; }; then
        break
    fi
    sleep 5
done
event drained worker "$last rows; lag $(lag); rows without NLP data $(backlog)"
rm -f "$RUN/sampling"
for role in ingest- worker- nlp-sim sampler; do
    for name in "${!PIDS[@]}"; do
        case "$name" in "$role"*) stop "$name" TERM ;; esac
    done
done

PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d "$DB" -c \
    "\\copy (SELECT message_id, count(*) FROM messages WHERE bot_id <> 'chaos-probe' GROUP BY message_id) TO '$OUT/stored.csv' WITH (FORMAT csv)"

# Per row: when it was received, its end to end (sent_at to row committed), and whether it
# still lacks NLP data at the end.
per_row="SELECT (extract(epoch FROM received_at) * 1000)::bigint,"
per_row+=" round(extract(epoch FROM processed_at - sent_at)::numeric, 4), nlp_status = 'ok'"
per_row+=" FROM messages WHERE bot_id <> 'chaos-probe'"
PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d "$DB" -c \
    "\\copy ($per_row) TO '$OUT/rows.csv' WITH (FORMAT csv)"

status=0
python3 scripts/chaos_accounting.py "$OUT" | tee "$OUT/summary.txt" || status=$?
gzip -f "$OUT/ledger.csv" "$OUT/rows.csv"
exit "$status"
