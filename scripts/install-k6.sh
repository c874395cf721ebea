#!/usr/bin/env bash
# Install k6 (the load-testing tool used by loadtest/k6/) at a pinned version, built from
# source with `go install` through the Go module proxy configured for this machine.
#
# Usage: scripts/install-k6.sh            install if missing, then print the binary's path
#        scripts/install-k6.sh --print    only print where k6 is (exit 1 if not installed)
#
# The binary goes to <repo>/.cache/bin/k6 (git-ignored). Idempotent: when `k6 version` of
# that binary already reports the pinned version, nothing is built. The first build
# compiles k6 and its dependencies (a couple of minutes on 2 cores); later runs take
# milliseconds.
#
# Environment:
#   K6_VERSION                 version to install (default below); a change rebuilds
#   CHAT_ANALYTICS_CACHE_DIR   cache directory (default: <repo>/.cache)
#   GO                         go binary (default: `go` on PATH; Go >= 1.24 needed by k6 v1.x)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CHAT_ANALYTICS_CACHE_DIR:-$ROOT/.cache}"
K6_VERSION="${K6_VERSION:-v1.8.1}"
K6_MODULE="go.k6.io/k6"
BIN_DIR="$CACHE_DIR/bin"
K6_BIN="$BIN_DIR/k6"
GO="${GO:-go}"

# Pinned version as printed by `k6 version`: "k6 v1.8.1 (commit/..., go1.26.x, linux/amd64)".
installed_ok() {
  [[ -x "$K6_BIN" ]] || return 1
  local out
  out="$("$K6_BIN" version 2>/dev/null)" || return 1
  [[ "$out" == *"k6 ${K6_VERSION} "* || "$out" == *"k6 ${K6_VERSION}" ]]
}

if [[ "${1:-}" == "--print" ]]; then
  installed_ok || { echo "k6 $K6_VERSION is not installed in $BIN_DIR (run $0)" >&2; exit 1; }
  echo "$K6_BIN"
  exit 0
fi

if installed_ok; then
  echo "k6 $K6_VERSION already installed: $K6_BIN" >&2
  echo "$K6_BIN"
  exit 0
fi

command -v "$GO" >/dev/null 2>&1 || {
  echo "install-k6: '$GO' not found; install Go (>= 1.24) first" >&2
  exit 1
}

mkdir -p "$BIN_DIR"
echo "install-k6: building $K6_MODULE@$K6_VERSION with $("$GO" env GOVERSION) into $BIN_DIR ..." >&2
start=$(date +%s)
# GOTOOLCHAIN=local: use the Go on this machine, never fetch another toolchain.
# CGO_ENABLED=0: a static binary that needs no C toolchain.
GOBIN="$BIN_DIR" GOTOOLCHAIN=local CGO_ENABLED=0 \
  "$GO" install -trimpath "$K6_MODULE@$K6_VERSION"
end=$(date +%s)

if ! installed_ok; then
  echo "install-k6: built $K6_BIN but \`k6 version\` does not report $K6_VERSION:" >&2
  "$K6_BIN" version >&2 || true
  exit 1
fi
echo "install-k6: k6 $K6_VERSION installed in $((end - start)) s: $("$K6_BIN" version)" >&2
echo "$K6_BIN"
