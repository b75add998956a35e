#!/usr/bin/env bash
# Make sure Redis and PostgreSQL+TimescaleDB answer at REDIS_URL / DATABASE_URL.
#   scripts/services.sh [start]   reuse what answers; otherwise start local servers on loopback
#   scripts/services.sh stop      stop the local servers this script started
# Local servers keep their data under $LIQ_STATE_DIR (default /var/lib/liquidation-aggregator);
# the Debian 13 root for TimescaleDB on Debian 12 is built once under $LIQ_CACHE_DIR. A second
# run finds everything in place and returns in about a second. The URLs are printed and written
# to var/services.env for `make run` / `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
DATABASE_URL=${DATABASE_URL:-postgresql://liq@127.0.0.1:5432/liq}
STATE=${LIQ_STATE_DIR:-/var/lib/liquidation-aggregator}
CACHE=${LIQ_CACHE_DIR:-/var/cache/liquidation-aggregator}
PG_MAJOR=17
say() { echo "services: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- parse the URLs (host, port, user, database) -----------------------------------------
url_part() { # url_part URL field -> host|port|user|db
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); f = sys.argv[2]
print({"host": u.hostname or "", "port": u.port or "", "user": u.username or "",
       "db": u.path.lstrip("/").split("/")[0]}[f])
PY
}
is_loopback() { case "$1" in 127.*|localhost|::1) return 0;; *) return 1;; esac; }

R_HOST=$(url_part "$REDIS_URL" host); R_PORT=$(url_part "$REDIS_URL" port); R_PORT=${R_PORT:-6379}
P_HOST=$(url_part "$DATABASE_URL" host); P_PORT=$(url_part "$DATABASE_URL" port); P_PORT=${P_PORT:-5432}
P_USER=$(url_part "$DATABASE_URL" user); P_USER=${P_USER:-liq}
P_DB=$(url_part "$DATABASE_URL" db); P_DB=${P_DB:-liq}

# --- where PostgreSQL with TimescaleDB comes from -------------------------------------------
ROOT=""            # a Debian 13 root to chroot into (Debian 12 hosts), or "" for the host itself
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
if [ ! -x "$PG_BIN/postgres" ] || ! ls /usr/share/postgresql/$PG_MAJOR/extension/timescaledb.control >/dev/null 2>&1; then
  ROOT=$CACHE/trixie-root
fi
PGDATA_IN=/var/lib/liquidation-aggregator/pg$PG_MAJOR   # path as PostgreSQL sees it
PGDATA_HOST=${ROOT}${PGDATA_IN}
[ -z "$ROOT" ] && PGDATA_IN=$STATE/pg$PG_MAJOR && PGDATA_HOST=$PGDATA_IN

in_pg() { # run a PostgreSQL binary as the postgres user, inside the root when there is one
  if [ -n "$ROOT" ]; then
    chroot --userspec="$PG_UID:$PG_GID" "$ROOT" env HOME=/tmp LC_ALL=C.UTF-8 "$@"
  else
    setpriv --reuid="$PG_UID" --regid="$PG_GID" --clear-groups env HOME=/tmp LC_ALL=C.UTF-8 "$@"
  fi
}
psql_super() { in_pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$P_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

build_root() {
  [ -x "$ROOT$PG_BIN/postgres" ] && [ -f "$ROOT/usr/share/postgresql/$PG_MAJOR/extension/timescaledb.control" ] && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/install-system-packages.sh"
  say "building a Debian 13 root with postgresql-$PG_MAJOR-timescaledb in $ROOT (once, about a minute)"
  mkdir -p "$CACHE"
  rm -rf "$ROOT.tmp"
  debootstrap --variant=minbase --include=postgresql-$PG_MAJOR-timescaledb trixie "$ROOT.tmp" \
    >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed, see $CACHE/debootstrap.log"
  rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"
}

pg_answers() { # 0 when something accepts connections on the port
  if [ -n "$ROOT" ] && [ ! -x "$ROOT$PG_BIN/pg_isready" ]; then
    (exec 3<>"/dev/tcp/127.0.0.1/$P_PORT") 2>/dev/null; return $?
  fi
  in_pg "$PG_BIN/pg_isready" -q -h "${P_HOST}" -p "$P_PORT" >/dev/null 2>&1
}

start_postgres() {
  if [ -n "$ROOT" ]; then build_root; else
    [ -x "$PG_BIN/postgres" ] || die "PostgreSQL $PG_MAJOR is missing: run scripts/install-system-packages.sh"
  fi
  PG_UID=$( (grep '^postgres:' "${ROOT}/etc/passwd" || true) | cut -d: -f3)
  PG_GID=$( (grep '^postgres:' "${ROOT}/etc/passwd" || true) | cut -d: -f4)
  [ -n "$PG_UID" ] || die "no postgres user in ${ROOT:-the host}/etc/passwd"
  if pg_answers; then return 0; fi
  if [ ! -s "$PGDATA_HOST/PG_VERSION" ]; then
    say "initialising a PostgreSQL $PG_MAJOR cluster in $PGDATA_HOST"
    rm -rf "$PGDATA_HOST"; mkdir -p "$PGDATA_HOST"; chown "$PG_UID:$PG_GID" "$PGDATA_HOST"; chmod 700 "$PGDATA_HOST"
    in_pg "$PG_BIN/initdb" -D "$PGDATA_IN" -U postgres -E UTF8 --locale=C.UTF-8 --auth=trust >/dev/null
    cat >>"$PGDATA_HOST/postgresql.conf" <<CONF
# liquidation-aggregator: local development and test server
listen_addresses = '127.0.0.1'
port = $P_PORT
unix_socket_directories = '/tmp'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 300
shared_buffers = 512MB
dynamic_shared_memory_type = mmap
max_locks_per_transaction = 256
max_wal_size = 4GB
maintenance_work_mem = 256MB
log_min_messages = warning
CONF
  fi
  say "starting PostgreSQL $PG_MAJOR + TimescaleDB on 127.0.0.1:$P_PORT${ROOT:+ (chroot $ROOT)}"
  in_pg "$PG_BIN/pg_ctl" -D "$PGDATA_IN" -l "$PGDATA_IN/server.log" -w -t 60 start >/dev/null \
    || die "PostgreSQL did not start, see $PGDATA_HOST/server.log"
}

ensure_pg_role_db() {
  psql_super -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$P_USER'" | grep -q 1 \
    || psql_super -c "CREATE ROLE \"$P_USER\" LOGIN SUPERUSER"
  psql_super -tAc "SELECT 1 FROM pg_database WHERE datname = '$P_DB'" | grep -q 1 \
    || psql_super -c "CREATE DATABASE \"$P_DB\" OWNER \"$P_USER\""
  # The cluster is the project's own: no role gets into the maintenance databases by default, so
  # liq_reader reaches only the databases whose migration granted it CONNECT (db/migrations/0010).
  psql_super -c "REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC"
}

start_redis() {
  if redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then return 0; fi
  is_loopback "$R_HOST" || die "Redis does not answer at $REDIS_URL (not a loopback address, so not starting one)"
  command -v redis-server >/dev/null || die "redis-server is missing: run scripts/install-system-packages.sh"
  mkdir -p "$STATE/redis"
  say "starting Redis on 127.0.0.1:$R_PORT"
  redis-server --bind 127.0.0.1 --port "$R_PORT" --daemonize yes --dir "$STATE/redis" \
    --pidfile "$STATE/redis/redis-$R_PORT.pid" --logfile "$STATE/redis/redis-$R_PORT.log" \
    --save "" --appendonly no --protected-mode yes >/dev/null
  for _ in $(seq 50); do
    redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  die "Redis did not start, see $STATE/redis/redis-$R_PORT.log"
}

stop_all() {
  [ -f "$STATE/redis/redis-$R_PORT.pid" ] && redis-cli -h 127.0.0.1 -p "$R_PORT" shutdown nosave 2>/dev/null || true
  if [ -s "$PGDATA_HOST/postmaster.pid" ]; then
    PG_UID=$(grep '^postgres:' "${ROOT}/etc/passwd" | cut -d: -f3)
    PG_GID=$(grep '^postgres:' "${ROOT}/etc/passwd" | cut -d: -f4)
    in_pg "$PG_BIN/pg_ctl" -D "$PGDATA_IN" -m fast -w stop >/dev/null || true
  fi
  say "stopped"
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  start) ;;
  *) die "usage: $0 [start|stop]" ;;
esac

start_redis
if is_loopback "$P_HOST"; then
  start_postgres
  ensure_pg_role_db
else
  say "using the PostgreSQL server at $P_HOST:$P_PORT as given (not managed here)"
fi

mkdir -p var
cat >var/services.env <<ENV
# Written by scripts/services.sh
REDIS_URL=$REDIS_URL
DATABASE_URL=$DATABASE_URL
ENV
echo "REDIS_URL=$REDIS_URL"
echo "DATABASE_URL=$DATABASE_URL"
