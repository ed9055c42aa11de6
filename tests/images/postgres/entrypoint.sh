#!/bin/bash
# First start: initdb + user + database from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB,
# like the official image. Every start: exec the server so it is PID 1 and receives the
# signals of `docker stop` / `docker kill` directly.
set -Eeuo pipefail

log() { printf 'postgres-entrypoint: %s\n' "$*" >&2; }

# Anything else (`docker run IMAGE bash`, `psql ...`) runs as given.
if [ "${1:-}" != "postgres" ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # A fresh named volume or bind mount may arrive owned by root.
    mkdir -p "$PGDATA" /run/postgresql
    chown postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        log "POSTGRES_PASSWORD must be set to initialise an empty data directory"
        exit 1
    fi
    log "initialising $PGDATA for user '$POSTGRES_USER' and database '$POSTGRES_DB'"
    # The password goes through a pipe, never argv, so `ps` cannot show it.
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    # Local socket trust keeps `docker exec ... pg_dump -U user` working without a password,
    # as with the official image; every network client must authenticate.
    cat >"$PGDATA/pg_hba.conf" <<'HBA'
local all all                trust
host  all all 0.0.0.0/0      scram-sha-256
host  all all ::/0           scram-sha-256
HBA
    cat >>"$PGDATA/postgresql.conf" <<'CONF'
listen_addresses = '*'
password_encryption = 'scram-sha-256'
CONF
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != "postgres" ]; then
        # psql variables quote the identifiers, so any database or user name is safe.
        psql -v ON_ERROR_STOP=1 -q --username="$POSTGRES_USER" --dbname=postgres \
            -v db="$POSTGRES_DB" -v owner="$POSTGRES_USER" <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
SQL
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "initialisation complete"
else
    log "using the existing data directory $PGDATA"
fi

exec "$@"
