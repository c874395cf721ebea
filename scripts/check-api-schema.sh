#!/usr/bin/env bash
# The API against its contract: starts `chat-analytics ingest` on free loopback ports with a
# fresh topic on the real Kafka, and lets schemathesis generate requests from
# docs/openapi.yaml (valid and invalid ones, EXAMPLES per operation). Fails on any 5xx, on
# any status, header, content type or body the document does not describe, and on a valid
# request refused or an invalid one accepted. /metrics lives on the admin listener and is
# checked there.
#
# Usage: scripts/check-api-schema.sh     (after a release build; `make test` runs it)
#
# Environment: EXAMPLES (500), SEED (fixed, so `make test` is reproducible; pass another to
# explore further),
# SCHEMATHESIS (default: the venv that scripts/install-test-tools.sh makes in .cache/),
# BIN (./target/release/chat-analytics). Reports (JUnit, and the failing cases as a
# pytest file) go to bench/results/api-schema-<UTC time>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

EXAMPLES="${EXAMPLES:-500}"
SEED="${SEED:-20261130}"
SCHEMATHESIS="${SCHEMATHESIS:-.cache/schemathesis/bin/schemathesis}"
BIN="${BIN:-./target/release/chat-analytics}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/api-schema-$STAMP"
TOPIC="test.api-schema.$STAMP.$$"

say() { printf 'api-schema: %s\n' "$*" >&2; }

[ -x "$SCHEMATHESIS" ] || { say "$SCHEMATHESIS not found (run scripts/install-test-tools.sh)"; exit 1; }
[ -x "$BIN" ] || { say "$BIN not found (run make build)"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

service=""
topic_created=false
cleanup() {
    if [ -n "$service" ]; then
        kill -TERM "$service" 2>/dev/null || true
        wait "$service" 2>/dev/null || true
    fi
    if $topic_created; then
        timeout 60 scripts/infra.sh kafka-topic-delete "$TOPIC" >/dev/null 2>&1 \
            || say "could not delete topic $TOPIC"
    fi
}
trap cleanup EXIT

mkdir -p "$OUT"
scripts/infra.sh kafka-topic "$TOPIC" 1 >&2
topic_created=true

API="127.0.0.1:$(free_port)"
ADMIN="127.0.0.1:$(free_port)"
CHAT_ANALYTICS__API__LISTEN="$API" CHAT_ANALYTICS__ADMIN__LISTEN="$ADMIN" \
    CHAT_ANALYTICS__KAFKA__TOPIC="$TOPIC" RUST_LOG=warn \
    "$BIN" ingest >"$OUT/service.log" 2>&1 &
service=$!
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://$API/livez" 2>/dev/null; do
    kill -0 "$service" 2>/dev/null || { cat "$OUT/service.log" >&2; say "the service exited"; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { say "the service did not answer within 30 s"; exit 1; }
    sleep 0.2
done

# run NAME URL FILTER...: one schemathesis run against one listener.
run() {
    local name="$1" url="$2"
    shift 2
    say "$name: $EXAMPLES examples per operation against $url (seed $SEED)"
    # No NUL in generated strings: the service refuses NUL anywhere in metadata, which the
    # document can only say in words (unit tests and the fuzz targets cover it).
    "$SCHEMATHESIS" run docs/openapi.yaml --url "$url" "$@" \
        --checks all --max-examples "$EXAMPLES" --seed "$SEED" --generation-allow-x00 false \
        --phases examples,coverage,fuzzing --workers 2 --no-color --warnings off \
        --generation-database none --report junit,pytest,ndjson --report-dir "$OUT/$name"
}

status=0
run api "http://$API" --exclude-path /metrics || status=1
run admin "http://$ADMIN" --include-path /metrics --include-path /health \
    --include-path /livez || status=1
if [ "$status" -ne 0 ]; then
    say "FAILED (reports in $OUT; replay with SEED=$SEED)"
    exit 1
fi
say "ok"
