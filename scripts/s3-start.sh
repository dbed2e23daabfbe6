#!/usr/bin/env bash
# Start a throwaway S3-compatible server (s3s-fs) for Berth's tests, and say how to reach it.
#
#   eval "$(scripts/s3-start.sh)"   # sets BERTH_TEST_S3_ENDPOINT, BERTH_TEST_S3_BUCKET,
#                                   # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
#                                   # BERTH_S3_DIR, BERTH_S3_PIDFILE
#   cargo test -p berth-store
#   scripts/s3-stop.sh
#
# - s3s-fs is the s3s project's S3 server over a directory: real HTTP, SigV4 (headers and
#   presigned URLs), multipart uploads, ranged GETs, ListObjectsV2, CopyObject, DeleteObjects.
# - The binary: BERTH_S3S_FS_BIN if set, else s3s-fs in $CARGO_HOME/bin or on PATH, else it is
#   built once with `cargo install --locked s3s-fs --version 0.14.1 --features binary` (about
#   5 minutes on 2 cores; 0.14.1 builds with the toolchain this project uses).
# - The server lives in BERTH_S3_DIR (default: $TMPDIR/berth-s3): its data (one directory per
#   bucket; the bucket `berth-test` is made at start), log, pid file and the exports. It listens
#   on 127.0.0.1 only, on a random free port.
# - Idempotent: if the server is already up it only prints the variables again; a dead or half
#   made state directory is stopped, removed and made again.
#
# Only `export ...` lines go to stdout, so that `eval` works; progress goes to stderr.
set -euo pipefail

dir="${BERTH_S3_DIR:-${TMPDIR:-/tmp}/berth-s3}"
env_file="$dir/env"
pidfile="$dir/s3s-fs.pid"
bucket=berth-test
access_key=berth-test-access
secret_key=berth-test-secret-0123456789
region=us-east-1
version=0.14.1

say() { printf 's3-start: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# A pid is alive unless it is gone or a zombie.
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
# A pid from the pid file counts as ours while it is alive and runs s3s-fs: a pid file that
# outlived a reboot must not make us signal some other process. (A child we have just started
# is checked with `alive` only: until it execs, its command line is still the shell's.)
ours() {
  alive "$1" || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q s3s-fs
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_of_env() { sed -n 's/^export BERTH_S3_PORT=//p' "$env_file"; }

# Already running: print the same variables again.
if [ -f "$env_file" ] && [ -f "$pidfile" ] && ours "$(cat "$pidfile")" \
  && port_open "$(port_of_env)"; then
  say "already running in $dir (pid $(cat "$pidfile"))"
  cat "$env_file"
  exit 0
fi

bin="${BERTH_S3S_FS_BIN:-}"
if [ -z "$bin" ]; then
  cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
  if [ -x "$cargo_bin" ]; then
    bin="$cargo_bin"
  elif command -v s3s-fs >/dev/null 2>&1; then
    bin="$(command -v s3s-fs)"
  else
    say "s3s-fs not found: building it once (cargo install s3s-fs $version, ~5 minutes)"
    # --force: cargo's install records may list a binary that has since been deleted.
    cargo install --locked --force s3s-fs --version "$version" --features binary >&2
    bin="$cargo_bin"
  fi
fi
[ -x "$bin" ] || die "no s3s-fs binary at $bin"

# Leftovers of an earlier run: stop what may still run, then start afresh.
if [ -e "$dir" ]; then
  if [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && ours "$pid"; then
    say "stopping a stale server (pid $pid)"
    kill "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
fi
mkdir -p "$dir/data/$bucket"

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
  nohup "$bin" --host 127.0.0.1 --port "$candidate" --access-key "$access_key" \
    --secret-key "$secret_key" "$dir/data" >"$dir/server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  for _ in $(seq 1 200); do
    if port_open "$candidate"; then port="$candidate"; break; fi
    alive "$pid" || break
    sleep 0.05
  done
  [ -n "$port" ] && break
  say "could not start on port $candidate (attempt $attempt)"
  tail -n 5 "$dir/server.log" >&2 2>/dev/null || true
  if alive "$pid"; then kill "$pid" 2>/dev/null || true; fi
done
[ -n "$port" ] || die "s3s-fs did not start; see $dir/server.log"

cat >"$env_file" <<VARS
export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export BERTH_TEST_S3_BUCKET=$bucket
export AWS_ACCESS_KEY_ID=$access_key
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_REGION=$region
export BERTH_S3_DIR=$dir
export BERTH_S3_PORT=$port
export BERTH_S3_PIDFILE=$pidfile
VARS
say "s3s-fs listening on 127.0.0.1:$port (pid $(cat "$pidfile")), bucket $bucket, data in $dir/data"
cat "$env_file"
