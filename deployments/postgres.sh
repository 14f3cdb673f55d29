#!/usr/bin/env bash
# A local PostgreSQL for the scale-out set-up (Debian's postgresql), on 127.0.0.1:
#   deployments/postgres.sh start DIR PORT [DB ...]   initdb (once), start, create databases
#   deployments/postgres.sh stop DIR
# DIR's parent folders must be traversable by the server's user.
# Prints the server's base URL (postgresql://postgres@127.0.0.1:PORT). As root the server
# runs as the `postgres` user (PostgreSQL refuses root). Point the stack at it by
# configuration only:
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:PORT/prefect
#   --tracking-uri postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow   (or a Lifecycle Tracking block)
#   --optuna-storage postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna (or LIFECYCLE_OPTUNA_STORAGE)
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$BIN/initdb" ] || { echo "PostgreSQL server binaries not found (Debian: apt-get install -y postgresql)" >&2; exit 1; }

as_owner() {  # run a command as the data directory's owner
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$(printf '%q ' "$@")"; else "$@"; fi
}

case "${1:-}" in
  start)
    dir=$2 port=$3; shift 3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$BIN/initdb" -D "$dir" -A trust -U postgres --no-sync >/dev/null
    fi
    as_owner "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    for db in "$@"; do
      psql -h 127.0.0.1 -p "$port" -U postgres -tAc "select 1 from pg_database where datname='$db'" | grep -q 1 \
        || psql -h 127.0.0.1 -p "$port" -U postgres -qc "create database \"$db\""
    done
    echo "postgresql://postgres@127.0.0.1:$port"
    ;;
  stop)
    dir=$2
    [ -f "$dir/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: $0 start DIR PORT [DB ...] | stop DIR" >&2; exit 2 ;;
esac
