#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, one after another, and reports
# executions and crashes per target. `make fuzz` runs it for FUZZ_SECONDS each (default
# 300); `make test` runs a 20 s smoke of each.
#
# Each target starts from its committed seeds (fuzz/corpus/TARGET, read only) plus what
# earlier runs found (.cache/fuzz/corpus/TARGET, where new inputs are written). A crash
# stops that target, leaves the input in fuzz/artifacts/TARGET/ and fails the run; replay
# it with `cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...`.
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 300)
#   FUZZ_TARGETS     space-separated targets (default: all, as `cargo fuzz list` gives them)
#   FUZZ_SANITIZER   none (default) or address: the code under test is safe Rust, where
#                    AddressSanitizer finds little, and it costs a second full build
#   FUZZ_REPORT_DIR  where report.md goes (default: bench/results/fuzz-<UTC time>/)
#   FUZZ_TARGET_DIR  the fuzz build's target directory, kept outside the checkout so a fresh
#                    clone on the same machine does not compile every dependency again
#                    with nightly (default: ~/.cache/chat-analytics/fuzz-target)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-300}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${FUZZ_REPORT_DIR:-bench/results/fuzz-$STAMP}"
WORK_CORPUS=".cache/fuzz/corpus"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chat-analytics/fuzz-target}"
FUZZ=(cargo +nightly fuzz)

say() { printf 'fuzz: %s\n' "$*" >&2; }

read -r -a targets <<<"${FUZZ_TARGETS:-$("${FUZZ[@]}" list | tr '\n' ' ')}"
mkdir -p "$OUT"

say "building ${#targets[@]} targets (sanitizer: $FUZZ_SANITIZER)"
started=$SECONDS
"${FUZZ[@]}" build -s "$FUZZ_SANITIZER" --target-dir "$FUZZ_TARGET_DIR" >"$OUT/build.log" 2>&1 || {
    tail -n 30 "$OUT/build.log" >&2
    say "build failed (log: $OUT/build.log)"
    exit 1
}
build_secs=$((SECONDS - started))

{
    echo "# Fuzz run $STAMP"
    echo
    echo "$(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//');" \
        "$("${FUZZ[@]}" --version), $(rustc +nightly --version); sanitizer $FUZZ_SANITIZER;" \
        "build ${build_secs} s; ${FUZZ_SECONDS} s per target."
    echo
    echo "| target | executions | exec/s | crashes | corpus |"
    echo "|---|---:|---:|---:|---:|"
} >"$OUT/report.md"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "$WORK_CORPUS/$target"
    say "$target: ${FUZZ_SECONDS} s"
    rc=0
    "${FUZZ[@]}" run -s "$FUZZ_SANITIZER" --target-dir "$FUZZ_TARGET_DIR" "$target" "$WORK_CORPUS/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
        >"$OUT/$target.log" 2>&1 || rc=$?
    runs="$(awk '/^stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$OUT/$target.log")"
    speed="$(awk '/^stat::average_exec_per_sec:/ { n = $2 } END { print n + 0 }' "$OUT/$target.log")"
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        failed+=("$target")
        grep -m1 -A3 -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer' "$OUT/$target.log" >&2 || tail -n 20 "$OUT/$target.log" >&2
    fi
    corpus="$(find "$WORK_CORPUS/$target" -type f | wc -l)"
    echo "| $target | $runs | $speed | $crashes | $corpus |" >>"$OUT/report.md"
done

cat "$OUT/report.md"
if [ "${#failed[@]}" -gt 0 ]; then
    say "crashed: ${failed[*]} (inputs in fuzz/artifacts/, logs in $OUT/)"
    exit 1
fi
