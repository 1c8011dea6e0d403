#!/usr/bin/env bash
# Runs semsd on this machine: installs (with apt-get, as root or through sudo) and starts nats-server with
# JetStream (store under ./sems-data/nats) and PostgreSQL when they are missing, then starts
# the server with every role. Extra arguments go to semsd (see `semsd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

command -v cargo >/dev/null || { sems_log "the Rust toolchain (cargo) is required"; exit 1; }
export SEMS_NATS_URL="${SEMS_NATS_URL:-nats://127.0.0.1:4222}"
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    sems_ensure_nats_server
    nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
    mkdir -p sems-data/nats
    sems_log "starting nats-server with JetStream on 127.0.0.1:4222 (store: sems-data/nats)"
    "$nats_bin" -a 127.0.0.1 -p 4222 -js -sd "$PWD/sems-data/nats" -l "$PWD/sems-data/nats-server.log" &
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.2; done
fi
sems_ensure_postgres "${SEMS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export SEMS_DATABASE_URL="$SEMS_PG_URL"

cargo build --release -p semsd
exec "${CARGO_TARGET_DIR:-target}/release/semsd" "$@"
