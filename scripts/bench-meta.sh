#!/usr/bin/env bash
# Metadata at scale: one project holding 100,000 artifacts; how long listing a page of its
# artifacts, deleting a tag, deleting an artifact and a retention dry run over all of them
# take through the management API, on SQLite (the embedded default) and on PostgreSQL; then
# how long the real retention run takes (it deletes all but 10 artifacts).
#
#   scripts/bench-meta.sh                        # 100,000 artifacts, both backends
#   scripts/bench-meta.sh --artifacts 10000 --backends sqlite
#   scripts/bench-meta.sh --skip-build --no-retention-run --out bench-results
#
# berth-bench writes the artifacts through Berth's metadata layer (each with its own config,
# two layers shared by all, and a tag), then a release `berth serve` in token mode answers
# 200 first-page listings, 200 listings of pages anywhere in the repository, 200 tag deletes
# and 200 artifact deletes, one at a time, over a signed-in session; then a retention policy
# keeping the 10 most recently pushed artifacts is dry-run 3 times and run once for real.
# PostgreSQL is started on loopback by scripts/pg-start.sh (installed if missing). Results:
# JSON lines and a table on stdout, and the JSON under --out.
set -euo pipefail

ARTIFACTS=100000
BACKENDS="sqlite postgres"
BUILD=1
OUT_DIR=bench-results
RETENTION_RUN=--retention-run
while [ $# -gt 0 ]; do
    case "$1" in
        --artifacts) ARTIFACTS="$2"; shift ;;
        --backends) BACKENDS="$2"; shift ;;
        --skip-build) BUILD=0 ;;
        --no-retention-run) RETENTION_RUN="" ;;
        --out) OUT_DIR="$2"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

if [ "$BUILD" -eq 1 ]; then
    log "building release binaries"
    cargo build --release -p berth -p berth-bench
fi
BERTH_BIN="$ROOT/target/release/berth"
BENCH="$ROOT/target/release/berth-bench"

TMP=$(mktemp -d /tmp/berth-bench-meta.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/meta-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
PASSWORD="Bench-Admin-$$"

for backend in $BACKENDS; do
    serve_args=(--data-dir "$TMP/$backend")
    fill_args=(--data-dir "$TMP/$backend")
    if [ "$backend" = postgres ]; then
        # A database of its own on the loopback server the tests use.
        eval "$(bash scripts/pg-start.sh)"
        db="berth_bench_meta_$$"
        url="${BERTH_TEST_DATABASE_URL%/*}/$db"
        psql "$BERTH_TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
        serve_args+=(--metadata-url "$url")
        fill_args=(--metadata-url "$url")
    fi
    log "$backend: filling $ARTIFACTS artifacts"
    "$BENCH" --meta "backend=$backend" meta-fill "${fill_args[@]}" --artifacts "$ARTIFACTS" |
        tee -a "$RESULTS"
    PORT=$("$BENCH" free-port)
    BERTH_ADMIN_PASSWORD="$PASSWORD" "$BERTH_BIN" serve --listen "127.0.0.1:$PORT" \
        "${serve_args[@]}" --auth-mode token --log-level warn >"$TMP/berth-$backend.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
        sleep 0.1
    done
    log "$backend: listing, tag and artifact deletes, retention"
    BERTH_BENCH_PASSWORD="$PASSWORD" "$BENCH" --meta "backend=$backend" meta-run \
        --url "http://127.0.0.1:$PORT" --artifacts "$ARTIFACTS" $RETENTION_RUN | tee -a "$RESULTS"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    if [ "$backend" = postgres ]; then
        psql "$BERTH_TEST_DATABASE_URL" -qc "DROP DATABASE $db" >/dev/null
    fi
done

python3 - "$RESULTS" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| project | fill | list page 1 p50 / p99 | any page p50 / p99 | tag delete p50 / p99 | artifact delete p50 / p99 | retention dry run p50 / max | retention run |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for run in (l for l in lines if l["bench"] == "meta-run"):
    b = run["backend"]
    fill = next(l for l in lines if l["bench"] == "meta-fill" and l["backend"] == b)
    d = run["detail"]
    f = lambda k: f"{d[k]['p50_ms']} / {d[k]['p99_ms']} ms"
    dry = d["retention_dry_run"]
    real = d["retention_run"]
    real = f"{real['deleted']:,} deleted in {real['seconds']} s" if real else "-"
    print(f"| {b} ({d['artifacts']:,}) | {fill['metrics']['fill_s']} s | {f('list_first_page')} | {f('list_any_page')} | {f('tag_delete')} | {f('artifact_delete')} | {dry['p50_s']} / {dry['max_s']} s | {real} |")
PY
log "results: $RESULTS"
