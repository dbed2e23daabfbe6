#!/usr/bin/env bash
# Stop the S3 server that scripts/s3-start.sh started, and delete its directory (data included).
#
#   scripts/s3-stop.sh       # uses BERTH_S3_DIR / BERTH_S3_PIDFILE if set, else the defaults
#
# The server is found by the pid file it recorded, and signalled only if that pid still runs
# s3s-fs: SIGTERM, then SIGKILL if it is still there after 5 seconds. Idempotent: with nothing
# to stop it says so and succeeds. BERTH_S3_KEEP=1 keeps the directory (log, objects).
set -euo pipefail

dir="${BERTH_S3_DIR:-${TMPDIR:-/tmp}/berth-s3}"
pidfile="${BERTH_S3_PIDFILE:-$dir/s3s-fs.pid}"

say() { printf 's3-stop: %s\n' "$*" >&2; }

if [ ! -e "$dir" ] && [ ! -f "$pidfile" ]; then
  say "nothing to stop ($dir does not exist)"
  exit 0
fi

ours() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q s3s-fs
}
wait_gone() {
  for _ in $(seq 1 50); do
    ours "$1" || return 0
    sleep 0.1
  done
  return 1
}

if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid"; then
      say "s3s-fs $pid ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" || { say "s3s-fs $pid did not stop"; exit 1; }
    fi
  else
    say "s3s-fs ${pid:-?} is not running"
  fi
else
  say "no pid file at $pidfile"
fi

if [ "${BERTH_S3_KEEP:-0}" = 1 ]; then
  say "stopped; kept $dir"
else
  rm -rf "$dir"
  say "stopped; removed $dir"
fi
