#!/usr/bin/env bash
# Stop the PostgreSQL server that scripts/pg-start.sh started, and delete its directory.
#
#   scripts/pg-stop.sh       # uses BERTH_PG_DIR / BERTH_PG_PIDFILE if set, else the defaults
#
# The server is found by the pid file it recorded (postmaster.pid). Asks pg_ctl for a fast
# shutdown first; if the postmaster is still there after that, signals that pid (and only it).
# Idempotent: with nothing to stop it says so and succeeds. BERTH_PG_KEEP=1 keeps the directory
# (its logs) after stopping.
set -euo pipefail

dir="${BERTH_PG_DIR:-${TMPDIR:-/tmp}/berth-pg}"
data="$dir/data"
pidfile="${BERTH_PG_PIDFILE:-$data/postmaster.pid}"

say() { printf 'pg-stop: %s\n' "$*" >&2; }

if [ ! -e "$dir" ]; then
  say "nothing to stop ($dir does not exist)"
  exit 0
fi

# Only the user who made the directory (or root) may reuse or remove it: to anyone else its
# files are unreadable, which would look like a dead server.
if [ -e "$dir" ] && [ "$(id -u)" -ne 0 ] && [ ! -O "$dir" ]; then
  say "$dir belongs to another user; set BERTH_PG_DIR to a directory of your own"
  exit 1
fi

alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
wait_gone() {
  for _ in $(seq 1 100); do
    alive "$1" || return 0
    sleep 0.1
  done
  return 1
}

pg_ctl=""
for d in ${BERTH_PG_BIN:-} /usr/lib/postgresql/*/bin; do
  [ -x "$d/pg_ctl" ] && { pg_ctl="$d/pg_ctl"; break; }
done

if [ -f "$pidfile" ]; then
  pid="$(head -n 1 "$pidfile")"
  if [ -n "$pid" ] && alive "$pid"; then
    if [ -n "$pg_ctl" ] && [ -d "$data" ]; then
      if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "$(stat -c %U "$data")" -- "$pg_ctl" -D "$data" -m fast -w -t 30 stop) >&2 || true
      else
        "$pg_ctl" -D "$data" -m fast -w -t 30 stop >&2 || true
      fi
    fi
    if ! wait_gone "$pid"; then
      say "postmaster $pid is still running; sending SIGQUIT"
      kill -QUIT "$pid" 2>/dev/null || true
      wait_gone "$pid" || { say "postmaster $pid did not stop"; exit 1; }
    fi
  else
    say "postmaster ${pid:-?} is not running"
  fi
else
  say "no pid file at $pidfile"
fi

if [ "${BERTH_PG_KEEP:-0}" = 1 ]; then
  say "stopped; kept $dir"
else
  rm -rf "$dir"
  say "stopped; removed $dir"
fi
