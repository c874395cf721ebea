#!/usr/bin/env bash
# `make bench-compare`: configurations of the bench stack run in turn, at a steady rate the
# machine can carry, and the CPU each kind of process spends per message under each. This is
# how the alternated A/B tables of docs/BENCHMARKS-HISTORY.md are measured: one machine
# drifts by more than most changes are worth within an hour, so only runs taken in turn
# compare.
#
# Each argument is one configuration: environment assignments (NAME=value, separated by
# spaces, values without spaces) for the stack of scripts/bench_stack.sh, empty for none:
#
#   scripts/bench_compare.sh 'INGEST_PROCESSES=3' 'INGEST_PROCESSES=1'
#   scripts/bench_compare.sh '' 'CHAT_ANALYTICS__KAFKA__LINGER_MS=20'
#   scripts/bench_compare.sh '' 'BENCH_BIN=var/other-build/release/chat-analytics'
#
# A run starts a fresh stack with its configuration, sends RATE msg/s over CONNECTIONS
# connections (a RAMP-second warm-up, ramping up for its first half, then MEASURE + 10 s),
# reads every process's CPU ticks from /proc over the MEASURE seconds that start 5 s after
# the warm-up, and stops the stack. PAIRS rounds run every configuration once each, in the
# order given. scripts/bench_compare_report.py then writes summary.md: per configuration the
# median µs per message of each kind of process, the median P99 ingest and end to end (the
# load generator looks every message up in Postgres after its run) and the median time the
# Kafka broker spent in stop-the-world GC pauses within the load generator's measured window,
# each with its ratio to the first configuration, and every run; runs in which the NLP breaker
# refused calls are listed but left out of the medians, since the worker and nlp-sim then skip
# their most expensive stage.
#
# Knobs (environment): RATE (6000), CONNECTIONS (2000), RAMP (10), MEASURE (20), PAIRS (3),
# SOURCE_IPS (4), STEAL (0: the share of one core that a competing process,
# scripts/cpu_burner.py, keeps busy through every run, so both configurations are compared
# on a machine with that much gone, as `make bench STEAL=0.5` measures the targets; what it
# really used goes to burner.json and the summary), and every knob of scripts/bench_stack.sh.
# Broker settings read when Kafka starts (scripts/infra.sh's) are not configurations here:
# restart the broker between runs.
# Report in bench/results/compare-<UTC time>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RATE="${RATE:-6000}"
CONNECTIONS="${CONNECTIONS:-2000}"
RAMP="${RAMP:-10}"
MEASURE="${MEASURE:-20}"
PAIRS="${PAIRS:-3}"
SOURCE_IPS="${SOURCE_IPS:-4}"
STEAL="${STEAL:-0}"
RESULTS="bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ)"

say() { printf 'bench-compare: %s\n' "$*" >&2; }

[ "$#" -ge 2 ] || { say "give at least two configurations, e.g. 'INGEST_PROCESSES=3' 'INGEST_PROCESSES=1'"; exit 64; }
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
for config in "$@"; do
    check_assignments "\"$config\"" "$config" || exit 64
done
for knob in RATE CONNECTIONS RAMP MEASURE PAIRS SOURCE_IPS; do
    [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || { say "$knob=${!knob}: a whole number from 1"; exit 64; }
done
check_steal "$STEAL" || exit 64

mkdir -p "$RESULTS"
printf '%s\n' "$@" >"$RESULTS/configurations.txt"
echo "config,pair,dir,seconds,ingest,worker,nlp_sim,postgres,kafka,load_generator,machine,breaker_refused" \
    >"$RESULTS/runs.csv"

# One run of configuration $1 (its index $2, round $3), in a subshell so that its
# assignments and its stack end with it; appends its row to runs.csv.
run_one() {
    local config="$1" index="$2" pair="$3"
    (
        # shellcheck disable=SC2086 # one assignment per word
        [ -z "$config" ] || export $config
        STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
        OUT="$RESULTS/run-$pair-$index"
        mkdir -p "$OUT"
        # shellcheck source=scripts/bench_lib.sh
        source scripts/bench_lib.sh
        # shellcheck source=scripts/bench_stack.sh
        source scripts/bench_stack.sh
        trap stack_cleanup EXIT
        stack_prepare --bin chat-analytics >/dev/null
        stack_start
        stack_settle "$burner"

        "$BIN" loadgen --url "$API" --rate "$RATE" --connections "$CONNECTIONS" \
            --duration $((MEASURE + 10)) --warmup "$RAMP" --warmup-ramp --source-ips "$SOURCE_IPS" \
            --postgres-url "$DB_URL" --out "$OUT/steady" >"$OUT/steady.txt" 2>&1 &
        local loadgen=$! before after started ended i row
        sleep $((RAMP + 5))
        read -r -a before <<<"$(group_ticks)"
        started="$EPOCHREALTIME"
        sleep "$MEASURE"
        read -r -a after <<<"$(group_ticks)"
        ended="$EPOCHREALTIME"
        wait "$loadgen"
        kafka_gc_pauses "$OUT/kafka-gc.log"
        row="$index,$pair,$OUT,$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.3f", b - a }')"
        for i in "${!before[@]}"; do row+=",$((after[i] - before[i]))"; done
        echo "$row" >>"$RESULTS/runs.csv"
    )
}

# CPU ticks, space-separated: ingest, worker, nlp-sim, Postgres, Kafka, load generator, the
# whole machine (busy ticks of /proc/stat), then the calls the NLP breaker refused so far (a
# counter, not ticks). Reads the variables of scripts/bench_stack.sh; pid_ticks, ticks_of and
# machine_ticks are scripts/bench_lib.sh's.
group_ticks() {
    local refused
    refused="$(curl -fsS "http://${admins[0]}/metrics" 2>/dev/null \
        | awk '/^nlp_api_errors_total\{kind="breaker_open"\}/ { printf "%d", $2 }')"
    echo \
        "$(pid_ticks "${service_pids[@]:1}")" "$(pid_ticks "${service_pids[0]}")" \
        "$(pid_ticks "$nlp_pid")" "$(ticks_of -x postgres)" "$(ticks_of -f kafka.Kafka)" \
        "$(ticks_of -f "${BIN##*/} loadgen")" \
        "$(machine_ticks)" "${refused:-0}"
}

# One competing process for all the runs, started before the first: every configuration
# meets the same competition, stack start-ups included. The runs' stacks see STEAL=0, so
# none starts its own.
burner=
stop_burner() {
    [ -n "$burner" ] || return 0
    kill -TERM "$burner" 2>/dev/null || true
    wait "$burner" || true
    burner=
}
trap stop_burner EXIT
if steal_wanted; then
    say "competing process: $STEAL of one core busy through every run (scripts/cpu_burner.py)"
    python3 scripts/cpu_burner.py --steal "$STEAL" --out "$RESULTS/burner.json" &
    burner=$!
fi
export STEAL=0

for pair in $(seq 1 "$PAIRS"); do
    index=0
    for config in "$@"; do
        say "round $pair of $PAIRS: configuration $((index + 1)) of $# (${config:-as shipped})"
        run_one "$config" "$index" "$pair"
        index=$((index + 1))
    done
done
stop_burner
python3 scripts/bench_compare_report.py "$RESULTS" "$(getconf CLK_TCK)" | tee "$RESULTS/summary.md"
