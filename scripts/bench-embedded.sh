#!/usr/bin/env bash
# The embedded-store benchmark of docs/BENCHMARKS.md: semsd (release build, role all) on the
# embedded SQLite store in a fresh temporary data directory, on free loopback ports, then
# sems-loadgen --store embedded (raw SQLite ceiling, unary and streaming ingest with fsyncs/s,
# read-model lag). Needs nothing but the Rust toolchain; stops by itself.
# Extra arguments go to sems-loadgen (e.g. --alerts 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p semsd -p sems-loadgen

work="$(mktemp -d "${TMPDIR:-/var/tmp}/sems-bench.XXXXXX")"
grpc_port=$(( 40000 + RANDOM % 10000 ))
http_port=$(( 50000 + RANDOM % 10000 ))
cleanup() {
    kill "${semsd_pid:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

env -u SEMS_NATS_URL -u SEMS_DATABASE_URL SEMS_DATA_DIR="$work/sems-data" \
    SEMS_LISTEN="127.0.0.1:$grpc_port" SEMS_HTTP_LISTEN="127.0.0.1:$http_port" SEMS_LOG=warn \
    "${CARGO_TARGET_DIR:-target}/release/semsd" &
semsd_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$grpc_port) 2>/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), data directory on $(df -T "$work" | awk 'NR==2 {print $2}') ($(df -h "$work" | awk 'NR==2 {print $1}'))"
"${CARGO_TARGET_DIR:-target}/release/sems-loadgen" --store embedded --server "http://127.0.0.1:$grpc_port" \
    --data-dir "$work/sems-data" --status-url "http://127.0.0.1:$http_port/status" \
    --phases "${SEMS_BENCH_PHASES:-raw,unary,stream,lag}" "$@"
