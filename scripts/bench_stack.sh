# shellcheck shell=bash
# The bench stack, started the same way for scripts/bench.sh and scripts/bench_capacity.sh
# (sourced after scripts/bench_lib.sh; the caller sets `say`, STAMP and OUT, and installs
# `trap stack_cleanup EXIT`): Kafka and Postgres (scripts/infra.sh), a fresh topic and the
# database chat_bench, nlp-sim, one `worker` and INGEST_PROCESSES `ingest` processes sharing
# the API port (SO_REUSEPORT, `api.reuse_port`), and the competing CPU burner (STEAL).
#
# Knobs (environment): NLP_LATENCY_MS (200), NLP_HTTP2 (auto), MANY_CONNECTIONS (50000: the
# ingest processes are as many as it takes to hold that many connections under the open-file
# limit, so both benches run the same stack), INGEST_PROCESSES (computed from it),
# RUNTIME_THREADS (1: runtime threads of the ingest processes and the load generator,
# `runtime.worker_threads`), WORKER_THREADS and NLP_THREADS (0: one per core), TOPIC_PARTITIONS
# (12, as scripts/infra.sh creates chat.messages), STEAL (0: share of one core a competing
# process keeps busy, from 0 to 1; 0 starts none), BENCH_BIN (./target/release/chat-analytics:
# another build to run instead, as scripts/bench_compare.sh compares builds), WARM_RATE
# (3000), WARM_ROUND (15) and WARM_MAX (120; 0 skips it) for the broker's warm-up
# (stack_warm_broker), LOG_LEVEL (unset: the shipped `log.level`, info).

NLP_LATENCY_MS="${NLP_LATENCY_MS:-200}"
TOPIC_PARTITIONS="${TOPIC_PARTITIONS:-12}"
MANY_CONNECTIONS="${MANY_CONNECTIONS:-50000}"
STEAL="${STEAL:-0}"
BIN="${BENCH_BIN:-./target/release/chat-analytics}"
TOPIC="bench.messages.$STAMP"
DB="chat_bench"
DB_URL="postgres://chat:chat@127.0.0.1:5432/$DB"
NLP_PORT=18090
API_PORT=18080
ADMIN_PORT=18081
API="http://127.0.0.1:$API_PORT"

check_steal "$STEAL" || exit 64

# Every background process the bench started, stopped by stack_cleanup; service_pids holds
# the worker first, then the ingest processes; admins their admin addresses, in that order.
pids=()
service_pids=()
admins=()
burner_pid=
nlp_pid=
topic_created=false

stack_cleanup() {
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

# Stops the processes "$@" (SIGTERM, then waits for each) and drops them from pids, so that
# stack_cleanup never signals a process id the system has handed out again since.
stop_pids() {
    local pid kept=() stopped=" $* "
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" || say "process $pid exited with status $?"; done
    for pid in "${pids[@]}"; do [[ "$stopped" == *" $pid "* ]] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

# Infrastructure, release build (of the cargo targets "$@"), topic, empty database, the
# service's settings (exported, so every process started later has them), migrations.
stack_prepare() {
    say "infrastructure and release build"
    scripts/infra.sh up >&2
    cargo build --release "$@" >&2
    scripts/infra.sh kafka-topic "$TOPIC" "$TOPIC_PARTITIONS" >&2
    topic_created=true

    drop_db "$DB"
    PGPASSWORD=chat psql -q -h 127.0.0.1 -U chat -d postgres -c "CREATE DATABASE $DB" >&2

    export CHAT_ANALYTICS__KAFKA__TOPIC="$TOPIC"
    export CHAT_ANALYTICS__KAFKA__CONSUMER_GROUP="bench-$STAMP"
    export CHAT_ANALYTICS__POSTGRES__URL="$DB_URL"
    export CHAT_ANALYTICS__NLP__URL="http://127.0.0.1:$NLP_PORT/v1/analyze"
    # The shipped "auto": nlp-sim speaks h2c, so one multiplexed connection instead of ~2,000
    # (NLP_HTTP2=false compares).
    export CHAT_ANALYTICS__NLP__HTTP2="${NLP_HTTP2:-auto}"
    export CHAT_ANALYTICS__API__LISTEN="127.0.0.1:$API_PORT"
    export CHAT_ANALYTICS__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT"
    export CHAT_ANALYTICS__DLQ__DIR="$OUT/dlq"
    # The log level is the shipped one (info, as deployed) unless LOG_LEVEL sets another:
    # at info each message's span costs the worker about 2.6 µs (docs/BENCHMARKS-HISTORY.md).
    if [ -n "${LOG_LEVEL:-}" ]; then export CHAT_ANALYTICS__LOG__LEVEL="$LOG_LEVEL"; fi
    # Seven processes on two cores: one runtime thread each spends less CPU on cross-thread
    # wake-ups and work-stealing than one per core (docs/BENCHMARKS-HISTORY.md, tuning log
    # step 14). The worker and nlp-sim keep one per core: on one thread, answers and timers
    # queued behind bursts of work, NLP calls overran their 300 ms timeout four times as often
    # and a backlog built up.
    export CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${RUNTIME_THREADS:-1}"
    "$BIN" migrate >"$OUT/migrate.json"
}

# nlp-sim, the worker and the ingest processes, each answering its health check.
stack_start() {
    local i admin nofile per_process
    say "nlp-sim (mean latency $NLP_LATENCY_MS ms) and the service"
    CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${NLP_THREADS:-0}" "$BIN" nlp-sim \
        --listen "127.0.0.1:$NLP_PORT" --latency-ms "$NLP_LATENCY_MS" 2>"$OUT/nlp-sim.log" &
    nlp_pid=$!
    pids+=("$nlp_pid")
    # 50,000 connections need more descriptors than the default limit (root may raise it); what
    # one process cannot hold, more ingest processes on the same port do.
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    nofile="$(ulimit -n)"
    [ "$nofile" != unlimited ] || nofile=1048576
    # Headroom per process for Kafka, Postgres and NLP sockets and the kernel's uneven spread.
    per_process=$((nofile - 2000))
    INGEST_PROCESSES="${INGEST_PROCESSES:-$(((MANY_CONNECTIONS + per_process - 1) / per_process))}"
    say "service: 1 worker + $INGEST_PROCESSES ingest process(es) on port $API_PORT (open-file limit $nofile)"

    stack_start_worker
    for i in $(seq 1 "$INGEST_PROCESSES"); do
        admin="127.0.0.1:$((ADMIN_PORT + i))"
        admins+=("$admin")
        CHAT_ANALYTICS__API__REUSE_PORT=true CHAT_ANALYTICS__ADMIN__LISTEN="$admin" \
            "$BIN" ingest 2>"$OUT/ingest-$i.log" &
        service_pids+=($!)
        pids+=($!)
    done
    wait_http "http://127.0.0.1:$NLP_PORT/health"
    for admin in "${admins[@]}"; do wait_http "http://$admin/health"; done
}

# Starts the worker (first in service_pids and admins; its log appends across restarts) with
# the settings exported at the time, e.g. CHAT_ANALYTICS__WORKER__CONCURRENCY.
stack_start_worker() {
    CHAT_ANALYTICS__RUNTIME__WORKER_THREADS="${WORKER_THREADS:-0}" "$BIN" worker 2>>"$OUT/worker.log" &
    service_pids[0]=$!
    pids+=($!)
    admins[0]="127.0.0.1:$ADMIN_PORT"
}

# Stops the worker gracefully (it commits its offsets) and starts it again: settings read at
# start take effect. Returns once it answers its health check and a message goes through.
stack_restart_worker() {
    stop_pids "${service_pids[0]}"
    stack_start_worker
    wait_http "http://${admins[0]}/health"
    stack_wait_stored
}

# Stops every service process (worker and ingest), gracefully.
stack_stop_service() {
    stop_pids "${service_pids[@]}"
}

# Posts one message and waits (up to 60 s) until it is in Postgres: the worker has joined its
# group and has partitions, nlp-sim answers. Measure a running pipeline, not its start-up.
stack_wait_stored() {
    local probe_id deadline
    probe_id="$(cat /proc/sys/kernel/random/uuid)"
    curl -fsS -o /dev/null -XPOST "$API/v1/messages" -H 'content-type: application/json' \
        -d "{\"message_id\":\"$probe_id\",\"bot_id\":\"bench-probe\",\"text\":\"ready?\"}"
    deadline=$((SECONDS + 60))
    until [ "$(PGPASSWORD=chat psql -X -A -t -h 127.0.0.1 -U chat -d "$DB" \
        -c "SELECT count(*) FROM messages WHERE message_id = '$probe_id'")" = 1 ]; do
        [ "$SECONDS" -lt "$deadline" ] || { say "the probe message was not stored within 60 s"; exit 1; }
        sleep 0.5
    done
}

# A broker that has carried no load since it started compiles its hot paths (the JVM's JIT)
# in the first tens of seconds of load: its compiler threads took 10 s of CPU in the first
# 30 s at 5,000 msg/s on a 2-core machine (docs/BENCHMARKS-HISTORY.md, "A fresh broker"), and a
# run measured then measures that. So the first stack after a broker start sends WARM_RATE
# msg/s in rounds of WARM_ROUND seconds until a round in which the compilers used under 5% of
# one core (at most WARM_MAX seconds), waits for the worker to catch up, and marks that
# broker (its process id and start time) as warm. Reports under $OUT/broker-warm-up/.
stack_warm_broker() {
    local broker marker mark round=0 before after used=() limit settled drained
    local rate="${WARM_RATE:-3000}" seconds="${WARM_ROUND:-15}" max="${WARM_MAX:-120}"
    [[ "$rate" =~ ^[1-9][0-9]*$ && "$seconds" =~ ^[1-9][0-9]*$ && "$max" =~ ^[0-9]+$ ]] \
        || { say "WARM_RATE=$rate WARM_ROUND=$seconds WARM_MAX=$max: whole numbers, the first two above 0"; exit 64; }
    [ "$max" -gt 0 ] || return 0
    broker="$(pgrep -f kafka.Kafka | head -1)"
    [ -n "$broker" ] || { say "no Kafka broker process found: no warm-up"; return 0; }
    marker="${CHAT_ANALYTICS_INFRA_DIR:-var/infra}/kafka/warm"
    mark="$broker $(awk '{ print $22 }' "/proc/$broker/stat")"
    [ "$(cat "$marker" 2>/dev/null)" != "$mark" ] || return 0
    limit=$(($(getconf CLK_TCK) * seconds * 5 / 100))
    say "broker warm-up: $rate msg/s in ${seconds}-second rounds until its JIT compilers settle"
    settled=false
    while ! $settled && [ $((round * seconds)) -lt "$max" ]; do
        round=$((round + 1))
        before="$(jit_compiler_ticks "$broker")"
        "$BIN" loadgen --url "$API" --rate "$rate" --connections 1000 --duration "$seconds" \
            --out "$OUT/broker-warm-up/round-$round" >/dev/null 2>&1 \
            || say "broker warm-up: the load generator failed in round $round"
        after="$(jit_compiler_ticks "$broker")"
        used+=("$((after - before))")
        [ $((after - before)) -ge "$limit" ] || settled=true
    done
    $settled || say "broker warm-up: its compilers still took $limit ticks or more in the last round"
    say "broker warm-up: $((round * seconds)) s; compiler ticks per round: ${used[*]} (a round under $limit ends it)"
    drained=false
    for _ in $(seq 1 120); do
        if [ "$(curl -fsS "http://${admins[0]}/metrics" 2>/dev/null \
            | awk '$1 == "queue_depth" { print $2 }')" = 0 ]; then
            drained=true
            break
        fi
        sleep 0.5
    done
    $drained || say "broker warm-up: the worker still had a backlog 60 s after it"
    echo "$mark" >"$marker"
}

# What every bench does between starting its stack and measuring: a message through the
# pipeline, a warm broker, and a quiet machine, the processes "$@" (a competing process)
# left out of the last.
# shellcheck disable=SC2120 # only bench-compare has a process to leave out
stack_settle() {
    stack_wait_stored
    stack_warm_broker
    wait_quiet "$@"
}

# Starts the competing process (scripts/cpu_burner.py) keeping STEAL of one core busy; on
# burner_stop it writes what it really used to $1 (JSON). Nothing happens when STEAL is 0.
burner_start() {
    steal_wanted || return 0
    say "competing process: $STEAL of one core busy (scripts/cpu_burner.py)"
    python3 scripts/cpu_burner.py --steal "$STEAL" --out "$1" &
    burner_pid=$!
    pids+=("$burner_pid")
}

burner_stop() {
    [ -n "$burner_pid" ] || return 0
    stop_pids "$burner_pid"
    burner_pid=
}
