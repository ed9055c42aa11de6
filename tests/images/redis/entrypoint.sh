#!/bin/bash
# Runs redis-server in the foreground as PID 1 (so `docker stop` makes it save and exit),
# with `requirepass` from REDIS_PASSWORD when set.
set -Eeuo pipefail

if [ "${1:-}" != "redis-server" ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p /data
    chown redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

config="bind 0.0.0.0
port 6379
protected-mode no
daemonize no
dir /data
"
if [ -n "${REDIS_PASSWORD:-}" ]; then
    case "$REDIS_PASSWORD" in
        *$'\n'*) echo "redis-entrypoint: REDIS_PASSWORD must not contain a newline" >&2; exit 1 ;;
    esac
    # Redis config syntax: a double-quoted string with backslash escapes.
    escaped=${REDIS_PASSWORD//\\/\\\\}
    escaped=${escaped//\"/\\\"}
    config+="requirepass \"$escaped\"
"
fi

# `redis-server -` reads the configuration from stdin, which keeps the password out of argv
# (and so out of `ps` and `docker top`). Extra arguments still override it.
shift
exec redis-server - "$@" <<<"$config"
