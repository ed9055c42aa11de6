#!/bin/sh
# redis-cli takes the password from REDISCLI_AUTH, never from argv (visible to `ps`).
# It exits 0 even on an error reply such as NOAUTH, hence the PONG check.
if [ -n "${REDIS_PASSWORD:-}" ]; then
    REDISCLI_AUTH="$REDIS_PASSWORD"
    export REDISCLI_AUTH
fi
[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
