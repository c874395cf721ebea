#!/usr/bin/env bash
# Install what `make test` and `make fuzz` need beyond the stable Rust toolchain, each only
# when missing: a nightly toolchain (rustup; cargo-fuzz needs it), cargo-fuzz (crates.io,
# pinned) and schemathesis (PyPI, pinned, in a venv under .cache/).
#
# Usage: scripts/install-test-tools.sh
#
# Idempotent and quick when everything is there. The first run builds cargo-fuzz (about a
# minute on 2 cores) and fills the venv.
#
# Environment:
#   CARGO_FUZZ_VERSION         cargo-fuzz version (default below); a change reinstalls
#   SCHEMATHESIS_VERSION       schemathesis version (default below); a change reinstalls
#   CHAT_ANALYTICS_CACHE_DIR   cache directory (default: <repo>/.cache)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CHAT_ANALYTICS_CACHE_DIR:-$ROOT/.cache}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
VENV="$CACHE_DIR/schemathesis"

say() { printf 'install-test-tools: %s\n' "$*" >&2; }

if rustup toolchain list | grep -q '^nightly'; then
    say "nightly toolchain present"
else
    say "installing the nightly toolchain (minimal profile)"
    rustup toolchain install nightly --profile minimal
fi

if [[ "$(cargo fuzz --version 2>/dev/null)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    say "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" == *"version $SCHEMATHESIS_VERSION" ]]; then
    say "schemathesis $SCHEMATHESIS_VERSION present"
else
    say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
