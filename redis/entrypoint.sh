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
  password=$(cat "$REDIS_PASSWORD_FILE")
  # Quotes, backslashes or spaces would be re-read by Redis's config parser, so that its
  # password and the one clients send would differ: refuse them outright.
  case "$password" in
    "" | *[!A-Za-z0-9._~+/=-]*)
      echo "redis-entrypoint: the password in REDIS_PASSWORD_FILE must be non-empty and use only A-Z a-z 0-9 . _ ~ + / = -" >&2
      exit 1 ;;
  esac
  umask 077
  auth_conf=$(mktemp /tmp/redis-auth.XXXXXX)
  {
    echo "include /etc/redis/redis.conf"
    printf 'requirepass "%s"\n' "$password"
  } >"$auth_conf"
  conf=$auth_conf
fi
exec redis-server "$conf" "$@"
