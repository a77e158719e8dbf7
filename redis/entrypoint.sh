#!/bin/sh
# Starts redis-server with the baked config. When REDIS_PASSWORD_FILE names a file, its
# content becomes requirepass through a config file in /tmp (mode 0600), never through the
# command line or the environment, so `docker inspect` and `ps` do not show it.
set -eu
conf=/etc/redis/redis.conf
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
    echo "redis-entrypoint: REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE is not readable" >&2
    exit 1
  fi
  umask 077
  auth_conf=$(mktemp /tmp/redis-auth.XXXXXX)
  {
    echo "include /etc/redis/redis.conf"
    printf 'requirepass "%s"\n' "$(cat "$REDIS_PASSWORD_FILE")"
  } >"$auth_conf"
  conf=$auth_conf
fi
exec redis-server "$conf" "$@"
