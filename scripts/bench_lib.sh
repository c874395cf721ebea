# shellcheck shell=bash
# Shared by the bench scripts (sourced; they set `say`).

# Drops database $1 as user chat. A plain DROP cancels an autovacuum worker on it (likely
# right after heavy inserts), which WITH (FORCE) refuses to do for a non-superuser; FORCE
# is the fallback for stray sessions. Fails, with the server's message, if nothing worked.
drop_db() {
    local db="$1" attempt
    for attempt in 1 2 3; do
        PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d postgres \
            -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 && return 0
        PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d postgres \
            -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 && return 0
        sleep "$attempt"
    done
    PGPASSWORD=chat psql -X -q -h 127.0.0.1 -U chat -d postgres \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}

# Runs the bench script $1 RUNS times, each as a single run (RUNS=1) into $OUT/run-N
# (BENCH_OUT) with its own stack, its report to stderr, so that the caller's stdout carries
# the combined one only. One that fails (a target missed, or the run itself) does not stop
# the others; the combined report counts it. Sets `run_dirs` to the runs' directories.
repeat_runs() {
    local script="$1" i
    run_dirs=()
    for i in $(seq 1 "$RUNS"); do
        run_dirs+=("$OUT/run-$i")
        say "run $i of $RUNS"
        RUNS=1 BENCH_OUT="$OUT/run-$i" "$script" >&2 || say "run $i exited with status $? (1 when a target was missed)"
    done
}

# Fails, saying why, unless $2 is a set of environment assignments on one line: NAME=value
# words, values without spaces (a configuration of bench-compare or bench-worker, named $1).
check_assignments() {
    local word words
    [[ "$2" != *$'\n'* ]] || { say "configuration $1: assignments on one line"; return 1; }
    read -r -a words <<<"$2"
    for word in "${words[@]}"; do
        [[ "$word" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*$ ]] \
            || { say "configuration $1: \"$word\" is not NAME=value"; return 1; }
    done
}

# Fails, saying why, unless $1 is a share of one core from 0 to 1 (STEAL, the competing
# process's share).
check_steal() {
    [[ "$1" =~ ^(0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?)$ ]] || { say "STEAL=$1: a share of one core, from 0 to 1"; return 1; }
}

# True when STEAL asks for a competing process.
steal_wanted() {
    awk -v s="$STEAL" 'BEGIN { exit !(s > 0) }'
}

# Waits up to 60 s for $1 to answer 2xx.
wait_http() {
    local url="$1" deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { say "$url did not answer within 60 s"; return 1; }
        sleep 0.2
    done
}

# CPU ticks (user + system) of every live process `pgrep "$@"` finds.
ticks_of() {
    # shellcheck disable=SC2046 # one process id per word
    pid_ticks $(pgrep "$@" || true)
}

# The whole machine's CPU ticks since boot, every core, from the first line of /proc/stat
# ("cpu user nice system idle iowait irq softirq steal ..."): sets `busy_ticks` (user, nice,
# system, irq, softirq) and `steal_ticks` (time the hypervisor gave these CPUs to other
# virtual machines). No subprocess: bench.sh's resource sampler reads it every second.
# shellcheck disable=SC2034 # steal_ticks is for the caller
read_machine_ticks() {
    local -a cpu
    read -r -a cpu </proc/stat
    busy_ticks=$((cpu[1] + cpu[2] + cpu[3] + cpu[6] + cpu[7])) steal_ticks=${cpu[8]}
}

# Busy CPU ticks of the whole machine (read_machine_ticks), printed.
machine_ticks() {
    read_machine_ticks
    echo "$busy_ticks"
}

# CPU ticks (user + system) of the processes "$@" that are still alive.
pid_ticks() {
    local pid total=0 stat
    for pid in "$@"; do
        { read -r -a stat <"/proc/$pid/stat"; } 2>/dev/null || continue
        total=$((total + stat[13] + stat[14]))
    done
    echo "$total"
}

# Waits until the machine is quiet, the processes "$@" (a competing process) left out: under
# QUIET_CORES (0.3) of a core busy in each of QUIET_SECONDS (5) seconds in a row, for at most
# QUIET_MAX (180) seconds. Work an earlier run leaves behind (the ceilings' million records
# for the broker to clean up, Postgres checkpointing and vacuuming) would otherwise land in
# the next measurement. Says how long it waited, or that it gave up; never fails the run.
# shellcheck disable=SC2120 # most callers have no process to leave out
wait_quiet() {
    local limit="${QUIET_CORES:-0.3}" need="${QUIET_SECONDS:-5}" max="${QUIET_MAX:-180}"
    local hz quiet=0 busy=0 started="$SECONDS" before after last now
    hz="$(getconf CLK_TCK)"
    before=$(($(machine_ticks) - $(pid_ticks "$@")))
    last="$EPOCHREALTIME"
    while [ "$quiet" -lt "$need" ]; do
        if [ $((SECONDS - started)) -ge "$max" ]; then
            say "the machine stayed busier than $limit of a core for $max s: measuring anyway"
            return 0
        fi
        sleep 1
        after=$(($(machine_ticks) - $(pid_ticks "$@")))
        now="$EPOCHREALTIME"
        if awk -v d=$((after - before)) -v hz="$hz" -v a="$last" -v b="$now" -v l="$limit" \
            'BEGIN { exit !(d / hz / (b - a) < l) }'; then
            quiet=$((quiet + 1))
        else
            quiet=0 busy=$((busy + 1))
        fi
        before="$after" last="$now"
    done
    [ "$busy" -eq 0 ] || say "waited $((SECONDS - started)) s for the machine to quiet down"
}

# What a system call and a wake-up round trip between two threads cost on this machine, into
# the JSON file $1 (examples/machine_probe.rs, built by the caller): machines of one kind
# differ most there. Run on the quiet machine, before any load; a failure is said, not fatal.
probe_machine() {
    target/release/examples/machine_probe >"$1" || say "the machine probe failed"
}

# CPU ticks (user + system) of the JIT compiler threads of the JVM with process id $1.
jit_compiler_ticks() {
    local task name line fields total=0
    for task in /proc/"$1"/task/*; do
        { read -r name <"$task/comm" && read -r line <"$task/stat"; } 2>/dev/null || continue
        case "$name" in
            "C1 Compiler"* | "C2 Compiler"*)
                # The fields after the thread's name, which is in parentheses and holds a
                # space: the state first, so utime and stime are the 12th and 13th.
                read -r -a fields <<<"${line##*) }"
                total=$((total + fields[11] + fields[12]))
                ;;
        esac
    done
    echo "$total"
}

# Writes the Kafka broker's stop-the-world GC pauses, one line each as its GC log has them (the
# rotated files too; scripts/infra.sh starts the broker with that log), to $1; bench_summary.py's
# kafka_gc counts those of a run's measured window. Writes nothing without the log (a broker
# started elsewhere), so that no count stands for one that was not taken.
kafka_gc_pauses() {
    local logs=("${CHAT_ANALYTICS_INFRA_DIR:-var/infra}"/kafka/logs/gc.log*)
    [ -e "${logs[0]}" ] || return 0
    grep -h -E ' Pause .*ms$' "${logs[@]}" >"$1" || true
}
