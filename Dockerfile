# chat-analytics container image: one binary, the role chosen by the command
# (`serve`, `ingest`, `worker`, `migrate`, `nlp-sim`, ...).
#
#   docker build -t chat-analytics .
#   docker compose up            # the whole stack, see docker-compose.yml
#
# The image itself binds only the admin listener (health + metrics) to all interfaces.
# The public API stays on loopback until the deployment says otherwise, because a
# non-loopback API with no API keys is refused at start-up unless
# CHAT_ANALYTICS__AUTH__ALLOW_ANONYMOUS=true is set on purpose (see docker-compose.yml).

# ---------------------------------------------------------------------------------------
# Builder: compiles the release binary. librdkafka is built from the vendored sources by
# rdkafka-sys (./configure + make, with a python3 helper script); zlib comes from the system.
FROM rust:1-bookworm AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config zlib1g-dev python3 perl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependency layer: build every dependency against placeholder sources, so that editing
# src/ or crates/ reuses this layer and only the workspace's own crates are recompiled.
COPY Cargo.toml Cargo.lock ./
COPY crates/service/Cargo.toml crates/service/
COPY crates/loadgen/Cargo.toml crates/loadgen/
COPY crates/nlp-sim/Cargo.toml crates/nlp-sim/
# (Cargo.toml names a bench target, so its file must exist for the manifest to load; the
# placeholder stays, since the release build never compiles benches.)
RUN mkdir -p src benches crates/service/src crates/loadgen/src crates/nlp-sim/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch crates/service/src/lib.rs crates/loadgen/src/lib.rs crates/nlp-sim/src/lib.rs \
    && echo 'fn main() {}' > benches/hot_paths.rs \
    && cargo build --release --locked \
    && rm -rf src crates/service/src crates/loadgen/src crates/nlp-sim/src

# The real sources: the binary (src/) and the crates it links (crates/).
# config/default.toml and sql/*.sql are compiled in (include_str!).
COPY src ./src
COPY crates ./crates
COPY config ./config
COPY sql ./sql
# Cargo decides what to rebuild by mtime: make sure the placeholder build is stale. The
# binary keeps its line tables (profile.release) so panic backtraces name source lines.
RUN touch src/main.rs crates/service/src/lib.rs crates/loadgen/src/lib.rs crates/nlp-sim/src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/chat-analytics --version

# ---------------------------------------------------------------------------------------
# Runtime: a slim Debian with the binary, run as an unprivileged user.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /app --shell /usr/sbin/nologin chat

WORKDIR /app

COPY --from=builder /build/target/release/chat-analytics /usr/local/bin/chat-analytics
# Read at run time relative to the working directory: config/default.toml (the --config
# default) and the moderation word lists (worker.moderation_dir = config/moderation).
# sql/ is shipped for reference; the migrations themselves are compiled in.
COPY config/ ./config/
COPY sql/ ./sql/

# Dead letters (var/dlq) and partition archives (var/archive) are written here: mount a
# volume on /app/var to keep them across container restarts. `--version` fails the build
# if a shared library the binary links (libc, libgcc_s, libz) is missing from this base.
RUN mkdir -p var/dlq var/archive \
    && chown -R chat:chat var \
    && chat-analytics --version

ENV CHAT_ANALYTICS__ADMIN__LISTEN=0.0.0.0:8081

USER 10001:10001

# 8080: ingestion API (POST /v1/messages). 8081: admin (/livez, /health, /metrics).
EXPOSE 8080 8081

# No HEALTHCHECK here: the same image also runs one-shot `migrate` and `nlp-sim` (another
# port), so each orchestrator declares its own check (docker-compose.yml, deploy/k8s/).
ENTRYPOINT ["chat-analytics"]
CMD ["serve"]
