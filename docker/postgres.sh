#!/bin/sh
# compose.yaml's PostgreSQL (the Dagster instance's storage), from the project's own image: it has
# Debian's postgresql for the stages' test servers, and there is no Docker Hub here for postgres:15.
# The first start makes the cluster in the volume (POSTGRES_USER with POSTGRES_PASSWORD, scram-sha-256,
# and the database POSTGRES_DB); every start then serves it as the postgres user on
# POSTGRES_LISTEN:POSTGRES_PORT. A missing variable stops it, naming the variable.
set -eu
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set DAGSTER_PG_PASSWORD}" "${POSTGRES_DB:?set POSTGRES_DB}"
listen=${POSTGRES_LISTEN:-127.0.0.1}
port=${POSTGRES_PORT:-5432}
data=/var/lib/postgresql/data
for name in "$POSTGRES_USER" "$POSTGRES_DB"; do
  case "$name" in
    ''|[!a-z_]*|*[!a-z0-9_]*) echo "postgres: '$name' is not a plain lower-case name (POSTGRES_USER, POSTGRES_DB)" >&2; exit 2 ;;
  esac
done
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
mkdir -p "$data" /run/postgresql
chown postgres:postgres "$data" /run/postgresql
chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  chown postgres "$pwfile"
  as_postgres "$bin/initdb" -D "$data" -U "$POSTGRES_USER" --pwfile "$pwfile" -E UTF8 \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # Single-user mode: no server listens while the database is made. The name was checked above.
  echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
    | as_postgres "$bin/postgres" --single -D "$data" -j postgres >/dev/null
  echo "postgres: made the cluster in $data (database $POSTGRES_DB)"
fi
exec setpriv --reuid postgres --regid postgres --init-groups \
  "$bin/postgres" -D "$data" -c listen_addresses="$listen" -p "$port" -c unix_socket_directories=/run/postgresql
