#!/bin/sh
# pg_isready over TCP, the way the app connects; it needs no password.
exec pg_isready -q -h 127.0.0.1 -p 5432 -U "${POSTGRES_USER:-app}" -d "${POSTGRES_DB:-app}"
