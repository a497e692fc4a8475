# shellcheck shell=bash
# Shared settings for driftless's local services. Sourced by the other scripts; every service binds
# to 127.0.0.1 only, every install step is idempotent and cached outside the clone.
set -euo pipefail

DRIFTLESS_CACHE=${DRIFTLESS_CACHE:-$HOME/.cache/driftless}
# Postgres runs as the OS user `postgres`, which cannot enter /root: keep its files in /var/tmp.
DRIFTLESS_RUN=${DRIFTLESS_RUN:-/var/tmp/driftless}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-54329}
PG_DIR=$DRIFTLESS_RUN/pg15-$PG_PORT
PG_USER=${PG_USER:-postgres}
KAFKA_PORT=${KAFKA_PORT:-19092}
TANSU_VERSION=0.6.0
TANSU_ROOT=$DRIFTLESS_CACHE/tansu-$TANSU_VERSION
TANSU_BIN=$TANSU_ROOT/bin/tansu
TANSU_DIR=$DRIFTLESS_RUN/tansu-$KAFKA_PORT
PY_VENV=$DRIFTLESS_CACHE/venv

log() { printf '[driftless-scripts] %s\n' "$*" >&2; }

pg_password() { cat "$PG_DIR.password"; }

pg_url() {
  local db=${1:-postgres}
  printf 'postgres://%s:%s@127.0.0.1:%s/%s?sslmode=prefer' "$PG_USER" "$(pg_password)" "$PG_PORT" "$db"
}

# Waits until a TCP port on 127.0.0.1 accepts connections.
wait_port() {
  local port=$1 what=$2 tries=${3:-150}
  for _ in $(seq "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$what did not open 127.0.0.1:$port"; return 1
}
