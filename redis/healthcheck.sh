#!/bin/sh
# Healthy means Redis answers PONG. `redis-cli ping` exits 0 even on an auth error, so the
# reply itself is checked; the password reaches redis-cli through REDISCLI_AUTH, not argv.
set -eu
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDISCLI_AUTH=$(cat "$REDIS_PASSWORD_FILE")
  export REDISCLI_AUTH
fi
reply=$(redis-cli -h 127.0.0.1 -p 6379 ping 2>&1) || true
[ "$reply" = "PONG" ] || { echo "redis-healthcheck: $reply" >&2; exit 1; }
