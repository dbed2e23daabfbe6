#!/usr/bin/env bash
# A sustained load through Berth: many clients push small images through one instance and
# pull through another, then every image is verified through every instance. Fails on any
# request error or any image that does not verify (berth-bench load).
#
#   scripts/load.sh                      # fleet: two instances over PostgreSQL + S3, 200 clients, 60 s
#   scripts/load.sh --embedded           # one instance on SQLite + filesystem
#   scripts/load.sh --release --out f    # release binaries; JSON line appended to f
#   scripts/load.sh --clients 50 --seconds 10 --skip-build
#
# Fleet mode reuses a PostgreSQL / S3 server named by BERTH_TEST_DATABASE_URL /
# BERTH_TEST_S3_ENDPOINT (as scripts/test.sh sets them), else starts them with
# scripts/pg-start.sh and scripts/s3-start.sh and stops them afterwards. Each run gets its own
# database and key prefix. Servers listen on 127.0.0.1 only.
set -euo pipefail

MODE=fleet
CLIENTS=200
SECONDS_=60
PROFILE=debug
BUILD=1
OUT=""
INSTANCES=2
while [ $# -gt 0 ]; do
  case "$1" in
    --embedded) MODE=embedded; INSTANCES=1 ;;
    --fleet) MODE=fleet ;;
    --instances) INSTANCES="$2"; shift ;;
    --clients) CLIENTS="$2"; shift ;;
    --seconds) SECONDS_="$2"; shift ;;
    --release) PROFILE=release ;;
    --skip-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$MODE" = fleet ] || [ "$INSTANCES" -eq 1 ] || { echo "--embedded runs one instance" >&2; exit 2; }

cd "$(dirname "$0")/.."
say() { printf 'load: %s\n' "$*" >&2; }

if [ "$BUILD" -eq 1 ]; then
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" -p berth -p berth-bench
fi
BERTH="$PWD/target/$PROFILE/berth"
BENCH="$PWD/target/$PROFILE/berth-bench"

TMP=$(mktemp -d /tmp/berth-load.XXXXXX)
PIDS=()
STARTED_PG=0
STARTED_S3=0
DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$DB" ]; then
    psql "$BERTH_TEST_DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  fi
  [ "$STARTED_S3" -eq 0 ] || bash scripts/s3-stop.sh || true
  [ "$STARTED_PG" -eq 0 ] || bash scripts/pg-stop.sh || true
  rm -rf "$TMP"
}
trap cleanup EXIT

args=()
if [ "$MODE" = fleet ]; then
  if [ -z "${BERTH_TEST_DATABASE_URL:-}" ]; then
    eval "$(bash scripts/pg-start.sh)"; STARTED_PG=1
  fi
  if [ -z "${BERTH_TEST_S3_ENDPOINT:-}" ]; then
    eval "$(bash scripts/s3-start.sh)"; STARTED_S3=1
  fi
  DB="berth_load_$$"
  psql "$BERTH_TEST_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
  args=(--metadata-url "${BERTH_TEST_DATABASE_URL%/*}/$DB"
        --s3-endpoint "$BERTH_TEST_S3_ENDPOINT" --s3-bucket "$BERTH_TEST_S3_BUCKET"
        --s3-prefix "load$$/")
fi

urls=()
for i in $(seq 1 "$INSTANCES"); do
  port=$("$BENCH" free-port)
  BERTH_LOG_LEVEL=warn "$BERTH" serve --listen "127.0.0.1:$port" --data-dir "$TMP/data$i" \
    --auth-mode open "${args[@]}" >"$TMP/berth$i.log" 2>&1 &
  PIDS+=($!)
  urls+=(--url "http://127.0.0.1:$port")
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break
    sleep 0.05
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" || { cat "$TMP/berth$i.log" >&2; exit 1; }
done

say "$MODE: $INSTANCES instance(s), $CLIENTS clients, ${SECONDS_}s ($PROFILE build)"
status=0
line=$("$BENCH" --meta "backend=$MODE" --meta "profile=$PROFILE" load "${urls[@]}" \
  --clients "$CLIENTS" --seconds "$SECONDS_") || status=$?
echo "$line"
[ -z "$OUT" ] || echo "$line" >>"$OUT"
if [ "$status" -ne 0 ]; then
  for i in $(seq 1 "$INSTANCES"); do tail -n 20 "$TMP/berth$i.log" >&2; done
fi
exit "$status"
