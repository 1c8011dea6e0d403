#!/usr/bin/env bash
# Shared by scripts/test.sh and scripts/run.sh: makes sure nats-server and PostgreSQL are
# installed (with apt-get, when running as root) and that PostgreSQL is running and reachable.
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
    if psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
        SEMS_PG_URL="$url"; return 0
    fi
    # A fresh Debian cluster refuses password-less TCP logins: give the postgres role a
    # password (local test machines only) and use it.
    sems_log "PostgreSQL refuses $url; setting a password for the postgres role"
    sems_as_root runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
    url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    psql "$url" -qAtc 'select 1' >/dev/null
    SEMS_PG_URL="$url"
}
