#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for Berth's tests, and say how to reach it.
#
#   eval "$(scripts/pg-start.sh)"   # sets BERTH_TEST_DATABASE_URL, BERTH_PG_DIR, BERTH_PG_PIDFILE
#   cargo test -p berth-meta
#   scripts/pg-stop.sh
#
# - Installs Debian's `postgresql` package with apt-get if no server binaries are found (root
#   only; otherwise install it yourself or point BERTH_PG_BIN at a directory holding initdb).
# - The cluster lives in BERTH_PG_DIR (default: $TMPDIR/berth-pg), listens on 127.0.0.1 only, on
#   a random free port; its unix socket stays in that directory. Durability is off (fsync,
#   synchronous_commit, full_page_writes): the data is disposable and tests run faster.
# - PostgreSQL will not run as root: under root the server runs as the `postgres` user that the
#   Debian package creates; otherwise as the calling user.
# - Role `berth` (password `berth`, CREATEDB: each test makes its own database; member of
#   pg_signal_backend, so that a forced DROP DATABASE may end an autovacuum worker) owns database
#   `berth`.
# - Idempotent: if the cluster is already up it only prints the variables again; a dead or half
#   made state directory is stopped, removed and made again.
#
# Only `export ...` lines go to stdout, so that `eval` works; progress goes to stderr.
set -euo pipefail

dir="${BERTH_PG_DIR:-${TMPDIR:-/tmp}/berth-pg}"
data="$dir/data"
env_file="$dir/env"
role=berth
password=berth
database=berth

say() { printf 'pg-start: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The newest installed server version, or BERTH_PG_BIN.
pg_bin() {
  if [ -n "${BERTH_PG_BIN:-}" ]; then
    [ -x "$BERTH_PG_BIN/initdb" ] && { echo "$BERTH_PG_BIN"; return 0; }
    return 1
  fi
  local best="" v
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] || continue
    v="${d#/usr/lib/postgresql/}"; v="${v%/bin}"
    if [ -z "$best" ] || [ "$v" -gt "${best#*:}" ] 2>/dev/null; then best="$d:$v"; fi
  done
  [ -n "$best" ] && { echo "${best%:*}"; return 0; }
  return 1
}

bin="$(pg_bin || true)"
if [ -z "$bin" ]; then
  [ -z "${BERTH_PG_BIN:-}" ] || die "no initdb in BERTH_PG_BIN=$BERTH_PG_BIN"
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL server binaries not found: apt-get install postgresql (as root), or set BERTH_PG_BIN"
  say "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends postgresql >&2
  bin="$(pg_bin)" || die "postgresql installed but no initdb found under /usr/lib/postgresql"
fi

if [ "$(id -u)" -eq 0 ]; then
  owner=postgres
  id "$owner" >/dev/null 2>&1 || die "user '$owner' is missing (the postgresql package creates it)"
  # The server's user may not be able to read the caller's working directory.
  as_owner() { (cd / && runuser -u "$owner" -- "$@"); }
else
  owner="$(id -un)"
  as_owner() { "$@"; }
fi

# A pid counts as alive unless it is gone or a zombie (where nothing reaps orphans, a stopped
# postmaster can linger as a zombie that `kill -0` still finds).
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
postmaster_pid() { [ -f "$data/postmaster.pid" ] && head -n 1 "$data/postmaster.pid"; }
port_of_env() { sed -n 's/^export BERTH_PG_PORT=//p' "$env_file"; }

# Only the user who made the directory (or root) may reuse or remove it: to anyone else its
# files are unreadable, which would look like a dead server.
if [ -e "$dir" ] && [ "$(id -u)" -ne 0 ] && [ ! -O "$dir" ]; then
  say "$dir belongs to another user; set BERTH_PG_DIR to a directory of your own"
  exit 1
fi

# Already running: print the same variables again.
if [ -f "$env_file" ] && pid="$(postmaster_pid)" && alive "$pid" \
  && "$bin/pg_isready" -q -h 127.0.0.1 -p "$(port_of_env)"; then
  say "already running in $dir (pid $pid)"
  cat "$env_file"
  exit 0
fi

# Leftovers of an earlier run: stop what may still run, then start afresh.
if [ -e "$dir" ]; then
  if pid="$(postmaster_pid)" && alive "$pid"; then
    say "stopping a stale server (pid $pid)"
    as_owner "$bin/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 \
      || kill -QUIT "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
fi
mkdir -p "$dir"
chmod 0755 "$dir"
[ "$owner" = "$(id -un)" ] || chown "$owner" "$dir"

say "initdb with $bin as $owner in $data"
if ! as_owner "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
  --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  die "initdb failed"
fi

as_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF

# Berth test server: disposable data, so speed before durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
log_min_messages = warning
EOF

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 40000))
  fi
}

port=""
for attempt in 1 2 3 4 5; do
  candidate="$(free_port)"
  if as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -o "-p $candidate" -w -t 60 start \
    >/dev/null 2>&1; then
    port="$candidate"
    break
  fi
  say "could not start on port $candidate (attempt $attempt)"
  tail -n 5 "$dir/server.log" >&2 2>/dev/null || true
done
[ -n "$port" ] || die "PostgreSQL did not start; see $dir/server.log"

psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres)
"${psql[@]}" -c "CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password'" >&2
# Tests drop their databases WITH (FORCE), which must terminate whatever is connected, and an
# autovacuum worker that happens to be in the database counts as another role's process.
"${psql[@]}" -c "GRANT pg_signal_backend TO $role" >&2
"${psql[@]}" -c "CREATE DATABASE $database OWNER $role" >&2

cat >"$env_file" <<EOF
export BERTH_TEST_DATABASE_URL=postgres://$role:$password@127.0.0.1:$port/$database
export BERTH_PG_DIR=$dir
export BERTH_PG_PORT=$port
export BERTH_PG_PIDFILE=$data/postmaster.pid
EOF
say "PostgreSQL $("$bin/postgres" -V | awk '{print $3}') listening on 127.0.0.1:$port (pid $(postmaster_pid))"
cat "$env_file"
