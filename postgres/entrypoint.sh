#!/bin/sh
# First start on an empty data volume: initialise the cluster. Every start: make sure the
# application database exists, owned by a dedicated NON-superuser role whose password is
# the one in POSTGRES_PASSWORD_FILE (so a rotated password file takes effect on restart).
# Existing data is never touched.
#
# The superuser "postgres" has no password and may log in only over the local socket as
# the postgres OS user (peer); over TCP only the application role is accepted (scram),
# from POSTGRES_ALLOWED_CIDR when set (the deployment sets its private network's subnet).
# POSTGRES_MAX_CONNECTIONS (default 100, PostgreSQL's own) sizes the server for the app's
# pools: the deployment sets it from stack_common_postgres_max_connections.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
db=${POSTGRES_DB:-app}
user=${POSTGRES_USER:-app}
socket_dir=/tmp
max_connections=${POSTGRES_MAX_CONNECTIONS:-100}

die() { echo "postgres-entrypoint: $*" >&2; exit 1; }

case "$db$user" in
  *[!A-Za-z0-9_]*) die "POSTGRES_DB and POSTGRES_USER may hold only letters, digits and _" ;;
esac
[ "$user" != postgres ] || die "POSTGRES_USER must not be the superuser 'postgres'"
case "$max_connections" in
  '' | *[!0-9]*) die "POSTGRES_MAX_CONNECTIONS must be a whole number, got '$max_connections'" ;;
esac
[ -n "${POSTGRES_PASSWORD_FILE:-}" ] || die "POSTGRES_PASSWORD_FILE is required"
[ -r "$POSTGRES_PASSWORD_FILE" ] || die "POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE is not readable"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initialising a new cluster in $PGDATA" >&2
  initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --data-checksums -D "$PGDATA" >/dev/null
fi
cat >"$PGDATA/pg_hba.conf" <<HBA
# Written by the image's entrypoint at every start.
# TYPE  DATABASE  USER      ADDRESS  METHOD
local   all       postgres           peer
host    $db       $user     ${POSTGRES_ALLOWED_CIDR:-all}  scram-sha-256
HBA

# Socket only while the role is put in order: no client can connect in between.
pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$socket_dir" start >/dev/null
# psql reads the password from the file itself (backquoted \set): never in argv or env.
psql -v ON_ERROR_STOP=1 -h "$socket_dir" -U postgres -d postgres -q \
  -v app_user="$user" -v app_db="$db" -v password_file="$POSTGRES_PASSWORD_FILE" <<'SQL'
\set app_password `cat :'password_file'`
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'app_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \gexec
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
SQL
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$socket_dir" \
  -c password_encryption=scram-sha-256 -c jit=off -c max_connections="$max_connections" "$@"
