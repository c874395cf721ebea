#!/usr/bin/env bash
# Install what `make test` and `make fuzz` need beyond the stable Rust toolchain, each only
# when missing: a nightly toolchain (rustup; cargo-fuzz needs it), cargo-fuzz (cargo
# install, pinned), schemathesis (PyPI, pinned, in a venv under .cache/), and for
# scripts/validate-k8s.sh: kustomize (built from its Go module with `go install`, pinned,
# into .cache/bin/), kubernetes-validate (PyPI, pinned, in a venv under .cache/; it ships
# the Kubernetes JSON schemas) and KEDA's ScaledObject CRD and Kafka scaler source (from
# the pinned KEDA Go module, `go mod download`, copied into .cache/keda/).
#
# Usage: scripts/install-test-tools.sh
#
# Idempotent and quick when everything is there. The first run builds cargo-fuzz (about a
# minute on 2 cores) and kustomize (about a minute), and fills the venvs.
#
# Environment:
#   CARGO_FUZZ_VERSION           cargo-fuzz version (default below); a change reinstalls
#   SCHEMATHESIS_VERSION         schemathesis version (default below); a change reinstalls
#   KUSTOMIZE_VERSION            kustomize version (default below; v5.8.2 is the newest
#                                that builds with Go 1.26); a change rebuilds
#   KUBERNETES_VALIDATE_VERSION  kubernetes-validate version (default below); a change
#                                reinstalls
#   KEDA_VERSION                 KEDA version whose CRD is used (default below); a change
#                                copies the files again
#   GO                           go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   CHAT_ANALYTICS_CACHE_DIR     cache directory (default: <repo>/.cache)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CHAT_ANALYTICS_CACHE_DIR:-$ROOT/.cache}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
VENV="$CACHE_DIR/schemathesis"
K8S_VENV="$CACHE_DIR/kubernetes-validate"
BIN_DIR="$CACHE_DIR/bin"
KEDA_DIR="$CACHE_DIR/keda"

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

# --- scripts/validate-k8s.sh's tools ------------------------------------------------------

go_bin() {
    if [ -n "${GO:-}" ]; then echo "$GO"
    elif command -v go >/dev/null 2>&1; then echo go
    elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
    else say "Go is needed for kustomize and KEDA's CRD: install Go (>= 1.26)"; exit 1
    fi
}

if [[ "$("$BIN_DIR/kustomize" version 2>/dev/null)" == "$KUSTOMIZE_VERSION" ]]; then
    say "kustomize $KUSTOMIZE_VERSION present"
else
    go="$(go_bin)"
    say "building kustomize $KUSTOMIZE_VERSION with $("$go" env GOVERSION) into $BIN_DIR"
    mkdir -p "$BIN_DIR"
    # GOTOOLCHAIN=local: use the Go on this machine, never fetch another toolchain.
    GOBIN="$BIN_DIR" GOTOOLCHAIN=local CGO_ENABLED=0 \
        "$go" install -trimpath "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    [[ "$("$BIN_DIR/kustomize" version)" == "$KUSTOMIZE_VERSION" ]] || {
        say "the kustomize built does not report $KUSTOMIZE_VERSION"; exit 1; }
fi

if [[ "$("$K8S_VENV/bin/kubernetes-validate" --version 2>/dev/null)" == "$KUBERNETES_VALIDATE_VERSION" ]]; then
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION present"
else
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $K8S_VENV"
    python3 -m venv "$K8S_VENV"
    "$K8S_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

if [[ "$(cat "$KEDA_DIR/VERSION" 2>/dev/null)" == "$KEDA_VERSION" ]]; then
    say "KEDA $KEDA_VERSION CRD present"
else
    go="$(go_bin)"
    say "fetching the KEDA $KEDA_VERSION module for its ScaledObject CRD"
    module_dir="$(GOTOOLCHAIN=local GOFLAGS=-mod=mod "$go" mod download -json \
        "github.com/kedacore/keda/v2@$KEDA_VERSION" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    mkdir -p "$KEDA_DIR"
    rm -f "$KEDA_DIR/VERSION"
    cp "$module_dir/config/crd/bases/keda.sh_scaledobjects.yaml" "$KEDA_DIR/"
    cp "$module_dir/pkg/scalers/kafka_scaler.go" "$KEDA_DIR/"
    # The module cache is read-only; the copies need not be.
    chmod u+w "$KEDA_DIR/keda.sh_scaledobjects.yaml" "$KEDA_DIR/kafka_scaler.go"
    echo "$KEDA_VERSION" >"$KEDA_DIR/VERSION"
fi
