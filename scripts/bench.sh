#!/usr/bin/env bash
# The benchmark of docs/BENCHMARKS.md: a fresh nats-server (temporary store) and a fresh
# PostgreSQL database, semsd (release build, role all) on a free loopback port, then
# sems-loadgen. Everything runs on this machine, on loopback, and stops by itself.
# Extra arguments go to sems-loadgen (e.g. --alerts 200000 --rebuild-events 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

sems_ensure_nats_server
sems_ensure_postgres "${SEMS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
admin="$SEMS_PG_URL"
cargo build --release -p semsd -p sems-loadgen

work="$(mktemp -d)"
db="sems_bench_$$"
nats_port=$(( 20000 + RANDOM % 20000 ))
grpc_port=$(( 40000 + RANDOM % 20000 ))
cleanup() {
    kill "${semsd_pid:-}" "${nats_pid:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/js" -l "$work/nats.log" &
nats_pid=$!
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
db_url="${admin%/*}/$db"

export SEMS_NATS_URL="nats://127.0.0.1:$nats_port" SEMS_DATABASE_URL="$db_url"
SEMS_LISTEN="127.0.0.1:$grpc_port" SEMS_HTTP_LISTEN=off SEMS_LOG=warn "${CARGO_TARGET_DIR:-target}/release/semsd" &
semsd_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$grpc_port) 2>/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), nats-server $("$nats_bin" --version | awk '{print $2}'), $(psql "$admin" -qAtc 'show server_version')"
"${CARGO_TARGET_DIR:-target}/release/sems-loadgen" --server "http://127.0.0.1:$grpc_port" "$@"
