#!/usr/bin/env bash
# `make bench-capacity`: the capacity, the highest offered rate at which the stack of `make
# bench` (scripts/bench_stack.sh: Kafka, Postgres, nlp-sim at 200 ms mean, one worker and the
# same ingest processes, all on this machine) still meets the targets; SPEC.md wants at least
# 15,000 msg/s.
#
# The stack starts once; then the offered rate steps up from START_RATE by RATE_STEP (10000,
# 12500, 15000, ...), each step STEP_SECONDS measured after a WARMUP that rises to the rate over
# its first half, with end-to-end latency read back from Postgres. Before a step the worker pool
# (`worker.concurrency`) is set to what Little's law asks at that rate: rate x NLP_LATENCY_MS x
# HEADROOM messages in flight, never below the configured pool (CHAT_ANALYTICS__WORKER__CONCURRENCY
# if set, else config/default.toml); the pool is read at start, so the worker is restarted when
# it changes. A step passes with P99 ingest < 50 ms, P99 end to end < 400 ms (every accepted
# message stored), >= 99% of the offered requests accepted and no errors but 429
# (scripts/bench_capacity_report.py holds the rule). The run stops after the first failing step
# or once the next step would pass MAX_RATE.
#
# Writes bench/results/capacity-<UTC time>/: step-<rate>/ (each step's loadgen report), steps.csv,
# report.json, report.md and p99.svg (both P99s against the offered rate). Exits 0 when the
# capacity meets the target.
#
# RUNS (3) such runs, each with its own stack, go to run-1/ ... run-N/ of the results
# directory; its report.md then gives the median run's capacity with every run's, and per
# offered rate the runs that reached it, how many passed and the median P99s (p99.svg plots
# those): one run's capacity moves by a step or more with the machine's minute. RUNS=1 is one
# run written straight into the results directory.
#
# Knobs (environment): RUNS (3), START_RATE (10000), RATE_STEP (2500), MAX_RATE (40000), STEP_SECONDS (30),
# WARMUP (10 s), CONNECTIONS (2000), SOURCE_IPS (4), HEADROOM (1.25), STEAL (0: share of one
# core a competing process, scripts/cpu_burner.py, keeps busy through every step), and the
# stack's: NLP_LATENCY_MS (200), NLP_HTTP2, MANY_CONNECTIONS, INGEST_PROCESSES, RUNTIME_THREADS,
# WORKER_THREADS, NLP_THREADS (scripts/bench_stack.sh). Loopback only; each step is bounded
# (its duration, the warm-up and at most 30 s waiting for the last rows).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

START_RATE="${START_RATE:-10000}"
RATE_STEP="${RATE_STEP:-2500}"
MAX_RATE="${MAX_RATE:-40000}"
STEP_SECONDS="${STEP_SECONDS:-30}"
WARMUP="${WARMUP:-10}"
CONNECTIONS="${CONNECTIONS:-2000}"
SOURCE_IPS="${SOURCE_IPS:-4}"
HEADROOM="${HEADROOM:-1.25}"

RUNS="${RUNS:-3}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
# A run of several writes each single run into a sub-directory (BENCH_OUT, set below).
OUT="${BENCH_OUT:-bench/results/capacity-$STAMP}"
REPORT=scripts/bench_capacity_report.py

say() { printf 'bench-capacity: %s\n' "$*" >&2; }
die() { printf 'bench-capacity: error: %s\n' "$*" >&2; exit 64; }

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
# shellcheck source=scripts/bench_stack.sh
source scripts/bench_stack.sh

for knob in START_RATE RATE_STEP MAX_RATE; do
    [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || die "$knob=${!knob}: a whole number of msg/s above 0"
done
# The pool a step runs with is never below the one the service would run with.
BASE_POOL="${CHAT_ANALYTICS__WORKER__CONCURRENCY:-$(awk '/^\[/ { section = $0 } section == "[worker]" && $1 == "concurrency" { print $3 }' config/default.toml)}"
[[ "$BASE_POOL" =~ ^[1-9][0-9]*$ ]] || die "cannot tell the configured worker.concurrency (got '$BASE_POOL')"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS=$RUNS: a whole number from 1"
mkdir -p "$OUT"
if [ "$RUNS" -gt 1 ]; then
    repeat_runs scripts/bench_capacity.sh
    python3 "$REPORT" combine "$OUT" "${run_dirs[@]}" | tee "$OUT/report.md"
    exit
fi

pool_for() {
    python3 "$REPORT" pool-size --rate "$1" --latency-ms "$NLP_LATENCY_MS" --headroom "$HEADROOM" --minimum "$BASE_POOL"
}

trap stack_cleanup EXIT
stack_prepare --bin chat-analytics --example machine_probe
export CHAT_ANALYTICS__WORKER__CONCURRENCY
CHAT_ANALYTICS__WORKER__CONCURRENCY="$(pool_for "$START_RATE")"
stack_start
stack_settle
probe_machine "$OUT/machine-probe.json"
burner_start "$OUT/burner.json"

echo "rate,pool,dir" >"$OUT/steps.csv"
rate=$START_RATE
while [ "$rate" -le "$MAX_RATE" ]; do
    pool="$(pool_for "$rate")"
    if [ "$pool" != "$CHAT_ANALYTICS__WORKER__CONCURRENCY" ]; then
        say "worker pool $CHAT_ANALYTICS__WORKER__CONCURRENCY -> $pool for $rate msg/s: restarting the worker"
        CHAT_ANALYTICS__WORKER__CONCURRENCY="$pool"
        stack_restart_worker
    fi
    step="step-$rate"
    say "$rate msg/s over $CONNECTIONS connections for $STEP_SECONDS s (warm-up $WARMUP s), worker pool $pool"
    "$BIN" loadgen --url "$API" --rate "$rate" --connections "$CONNECTIONS" --duration "$STEP_SECONDS" \
        --warmup "$WARMUP" --warmup-ramp --source-ips "$SOURCE_IPS" --postgres-url "$DB_URL" \
        --out "$OUT/$step" | tee "$OUT/$step.txt" >&2 \
        || say "the load generator failed at $rate msg/s (the step fails without its report)"
    echo "$rate,$pool,$step" >>"$OUT/steps.csv"
    python3 "$REPORT" step "$OUT/$step/report.json" || break
    rate=$((rate + RATE_STEP))
done

burner_stop
stack_stop_service

STEAL="$STEAL" python3 "$REPORT" report "$OUT" --step-seconds "$STEP_SECONDS" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --nlp-latency-ms "$NLP_LATENCY_MS" --headroom "$HEADROOM" \
    --max-rate "$MAX_RATE" | tee "$OUT/report.md"
