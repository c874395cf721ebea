#!/usr/bin/env bash
# `make bench`: the whole stack on this one machine (Kafka, Postgres, nlp-sim at 200 ms mean,
# the service in release mode, the load generator), the steady and the many-connections
# scenarios, the service's RSS and CPU sampled once a second, and a one-screen summary with
# pass/fail against each target of SPEC.md. Everything lands in bench/results/<UTC time>/.
#
# The service runs as one `worker` process and as many `ingest` processes as it takes to hold
# MANY_CONNECTIONS under this machine's open-file limit, sharing the API port (SO_REUSEPORT,
# `api.reuse_port`); RSS and CPU are the sums over all of them. scripts/bench_stack.sh starts
# that stack (bench-capacity starts the same one).
#
# RUNS (3) single runs, each with its own stack and component ceilings, go to run-1/ ...
# run-N/ of the results directory, each with the single run's summary.md and summary.json;
# scripts/bench_median.py then writes the combined summary.md and summary.json next to them:
# every figure as the median of the runs with min-max and each run's value, a target passed
# only when its median meets it and most runs passed it. RUNS=1 is a single run written
# straight into bench/results/<UTC time>/, as before.
#
# STEAL (0): share of one core, from 0 to 1, that a competing process (scripts/cpu_burner.py)
# keeps busy through the steady and many-connections scenarios, e.g. `make bench STEAL=0.5`:
# the targets with part of the machine gone. It stops before the ceilings, which stay those
# of each component alone; the summary states STEAL and the share of a core it really used.
#
# Other knobs (environment): RATE (10000), DURATION (60 s), CONNECTIONS (2000, steady
# scenario), MANY_CONNECTIONS (50000), MANY_RATE (2000), MANY_DURATION (30 s), SOURCE_IPS (4),
# NLP_LATENCY_MS (200), NLP_HTTP2 (auto), INGEST_PROCESSES (computed from the open-file limit),
# RUNTIME_THREADS (1: runtime threads of the ingest processes and the load generator,
# `runtime.worker_threads`), WORKER_THREADS and NLP_THREADS (0: one per core). Each run is
# bounded in time; only loopback addresses are used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS="${RUNS:-3}"
RATE="${RATE:-10000}"
DURATION="${DURATION:-60}"
CONNECTIONS="${CONNECTIONS:-2000}"
MANY_RATE="${MANY_RATE:-2000}"
MANY_DURATION="${MANY_DURATION:-30}"
SOURCE_IPS="${SOURCE_IPS:-4}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
# A run of several writes each single run into a sub-directory (BENCH_OUT, set below).
OUT="${BENCH_OUT:-bench/results/$STAMP}"

say() { printf 'bench: %s\n' "$*" >&2; }

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
# shellcheck source=scripts/bench_stack.sh
source scripts/bench_stack.sh

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { say "RUNS=$RUNS: a whole number from 1"; exit 64; }
mkdir -p "$OUT"
if [ "$RUNS" -gt 1 ]; then
    # Each run starts its own stack, measures, stops it and measures the ceilings, as a
    # single run does.
    repeat_runs scripts/bench.sh
    python3 scripts/bench_median.py "$OUT" "${run_dirs[@]}" | tee "$OUT/summary.md"
    exit
fi

trap stack_cleanup EXIT
stack_prepare --bin chat-analytics --example ingest_ceiling --example machine_probe
stack_start

# RSS (kB) and CPU (% of one core) of the service, summed over its processes, once a second,
# from /proc; the worker's share in its own columns, then the CPU of every other process on
# the machine by kind (nlp-sim, Postgres, Kafka, the load generator), the whole machine's
# busy CPU (% of one core, everything included), the time the hypervisor gave this virtual
# machine's CPUs to others (`steal` in /proc/stat, % of one core), and the scenario running
# (the `phase` file), so CPU per message is taken at the steady rate only. A sample's figures are divided
# by the time since the last one, measured: on a busy machine the loop takes longer than its
# one-second sleep, and taking it as one second overstated every CPU figure.
#
# The sampler shares the machine it measures: each second it reads /proc with the shell's own
# `read` and starts only its sleep, and every fifth second it looks up the processes of each
# kind (pgrep). With an awk per file and three pgreps every second it took 1.8% of the
# machine at the steady rate, now 0.5% (`perf`, 2026-12-04). A process started between two
# look-ups counts whole when first seen (its ticks since it started); one gone is skipped.
# The load generator is matched by the binary's name, not its path: above the open-file limit
# it runs shards of itself by their absolute path.
sample_resources() {
    local ticks page_kb t=0 pid i rss cpu total_rss total_cpu worker_rss worker_cpu stat statm
    local busy_ticks steal_ticks prev_busy=0 machine phase nlp postgres kafka loadgen
    local now_us prev_us elapsed_us busy_us interval_us prev_stolen=0 steal_pct
    local -a postgres_pids=() kafka_pids=() loadgen_pids=()
    local -A prev=()
    ticks="$(getconf CLK_TCK)"
    page_kb=$(($(getconf PAGESIZE) / 1024))
    prev_us="${EPOCHREALTIME/./}" busy_us="${EPOCHREALTIME/./}"
    # Sets `cpu` to the CPU (% of one core) the processes "$@" used since the last sample (one
    # first seen now counts whole: it started within the interval). No subshell, so `prev`
    # keeps each process's ticks for the next sample.
    cpu_of() {
        local p used=0 now
        for p in "$@"; do
            # Braced: a process gone since it was listed fails the redirection itself, which
            # a trailing 2>/dev/null on the command would not silence.
            { read -r -a stat <"/proc/$p/stat"; } 2>/dev/null || continue
            now=$((stat[13] + stat[14]))
            used=$((used + now - ${prev[$p]:-0}))
            prev[$p]=$now
        done
        cpu=$((used * 100000000 / (ticks * elapsed_us)))
    }
    echo "t_s,rss_kb,cpu_pct,worker_rss_kb,worker_cpu_pct,nlp_cpu_pct,postgres_cpu_pct,kafka_cpu_pct,loadgen_cpu_pct,machine_cpu_pct,hypervisor_steal_pct,phase"
    while kill -0 "${service_pids[0]}" 2>/dev/null; do
        if [ $((t % 5)) -eq 0 ]; then
            mapfile -t postgres_pids < <(pgrep -x postgres)
            mapfile -t kafka_pids < <(pgrep -f kafka.Kafka)
            mapfile -t loadgen_pids < <(pgrep -f "${BIN##*/} loadgen")
        fi
        total_rss=0 total_cpu=0 worker_rss=0 worker_cpu=0
        now_us="${EPOCHREALTIME/./}"
        elapsed_us=$((now_us - prev_us > 0 ? now_us - prev_us : 1))
        prev_us=$now_us
        for i in "${!service_pids[@]}"; do
            pid="${service_pids[$i]}"
            cpu_of "$pid"
            # Resident pages, the second field of statm (VmRSS of status); an exiting
            # process has none.
            rss=0
            { read -r -a statm <"/proc/$pid/statm" && rss=$((statm[1] * page_kb)); } 2>/dev/null || true
            total_rss=$((total_rss + rss))
            total_cpu=$((total_cpu + cpu))
            if [ "$i" -eq 0 ]; then worker_rss=$rss worker_cpu=$cpu; fi
        done
        cpu_of "$nlp_pid"
        nlp=$cpu
        cpu_of "${postgres_pids[@]}"
        postgres=$cpu
        cpu_of "${kafka_pids[@]}"
        kafka=$cpu
        cpu_of "${loadgen_pids[@]}"
        loadgen=$cpu
        # Its own interval: the reads above take a varying time.
        read_machine_ticks
        now_us="${EPOCHREALTIME/./}"
        interval_us=$((now_us - busy_us > 0 ? now_us - busy_us : 1))
        machine=$(( (busy_ticks - prev_busy) * 100000000 / (ticks * interval_us) ))
        steal_pct=$(( (steal_ticks - prev_stolen) * 100000000 / (ticks * interval_us) ))
        prev_busy=$busy_ticks prev_stolen=$steal_ticks busy_us=$now_us
        phase=""
        { read -r phase <"$OUT/phase"; } 2>/dev/null || true
        [ "$t" -eq 0 ] || echo "$t,$total_rss,$total_cpu,$worker_rss,$worker_cpu,$nlp,$postgres,$kafka,$loadgen,$machine,$steal_pct,$phase"
        t=$((t + 1))
        sleep 1
    done
}
sample_resources >"$OUT/resources.csv" &
pids+=($!)

stack_settle
probe_machine "$OUT/machine-probe.json"
# The competing process runs through both scenarios and stops before the ceilings, which
# stay those of each component alone.
burner_start "$OUT/burner.json"
say "steady: $RATE msg/s over $CONNECTIONS connections for $DURATION s"
echo steady >"$OUT/phase"
# The warm-up rises to the rate over 5 s and holds it 5 s more: a step from idle to the full
# rate, with every process cold, leaves a backlog that the worker pool (≈ 90% busy at this
# rate) drains only slowly, and the measured minute would be about that start.
"$BIN" loadgen --url "$API" --rate "$RATE" --connections "$CONNECTIONS" --duration "$DURATION" \
    --warmup 10 --warmup-ramp --source-ips "$SOURCE_IPS" --postgres-url "$DB_URL" --out "$OUT/steady" \
    | tee "$OUT/steady.txt" >&2
kafka_gc_pauses "$OUT/kafka-gc.log"

say "many connections: $MANY_CONNECTIONS connections, $MANY_RATE msg/s for $MANY_DURATION s"
echo connections >"$OUT/phase"
"$BIN" loadgen --url "$API" --rate "$MANY_RATE" --connections "$MANY_CONNECTIONS" \
    --duration "$MANY_DURATION" --warmup 5 --source-ips "$SOURCE_IPS" --out "$OUT/connections" \
    | tee "$OUT/connections.txt" >&2

echo stopping >"$OUT/phase"
burner_stop

for i in "${!admins[@]}"; do
    curl -fsS "http://${admins[$i]}/metrics" >"$OUT/metrics-$i.txt" || true
done
stack_stop_service

# Each component's ceiling, measured alone once the service has stopped. Run first, the
# ceilings' own aftermath (a million records for the broker to clean up, Postgres
# checkpointing 400,000 rows) took CPU from the steady run.
OUT="$OUT/ceilings" scripts/bench_ceilings.sh >"$OUT/ceilings.md" \
    || say "component ceilings failed; the summary goes without them"

RATE="$RATE" MANY_CONNECTIONS="$MANY_CONNECTIONS" STEAL="$STEAL" python3 scripts/bench_summary.py "$OUT" | tee "$OUT/summary.md"
