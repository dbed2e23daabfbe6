#!/usr/bin/env bash
# Garbage collection benchmark: Berth's online GC against CNCF Distribution's offline
# `docker-registry garbage-collect`, on the same content, in the same run.
#
#   scripts/bench-gc.sh                     # 10,000 manifests, 100,000 blobs (half garbage)
#   scripts/bench-gc.sh --manifests 1000    # a smaller registry
#   scripts/bench-gc.sh --skip-build --out bench-results
#
# berth-bench writes the registry twice, through Berth's store and metadata layers (SQLite +
# filesystem, the embedded default) and as Distribution's filesystem layout. Berth then runs
# one collection through its API while small images are pushed the whole time (their latency
# is reported, and compared with the same pushes before the run); Distribution collects
# offline. Results: JSON lines and a short table on stdout, and the JSON under --out.
set -euo pipefail

MANIFESTS=10000
PER=10
BUILD=1
OUT_DIR=bench-results
while [ $# -gt 0 ]; do
    case "$1" in
        --manifests) MANIFESTS="$2"; shift ;;
        --blobs-per-manifest) PER="$2"; shift ;;
        --skip-build) BUILD=0 ;;
        --out) OUT_DIR="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

if ! command -v docker-registry >/dev/null || ! command -v curl >/dev/null; then
    log "installing docker-registry curl"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-registry curl >/dev/null
fi
if [ "$BUILD" -eq 1 ]; then
    log "building release binaries"
    cargo build --release -p berth -p berth-bench
fi
BERTH_BIN="$ROOT/target/release/berth"
BENCH="$ROOT/target/release/berth-bench"

TMP=$(mktemp -d /tmp/berth-bench-gc.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gc-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
BLOBS=$((MANIFESTS * PER))

log "filling $MANIFESTS manifests, $BLOBS blobs (Berth and Distribution layouts)"
"$BENCH" --meta registry=both gc-fill --data-dir "$TMP/berth" --dist-root "$TMP/dist" \
    --manifests "$MANIFESTS" --blobs-per-manifest "$PER" | tee -a "$RESULTS"
GARBAGE=$((BLOBS / 2))

# Berth, online: grace 5 s (every filled row is older than that once the server is up), and
# pushes going on throughout.
PORT=$("$BENCH" free-port)
PASSWORD="Bench-Admin-$$"
BERTH_ADMIN_PASSWORD="$PASSWORD" "$BERTH_BIN" serve --listen "127.0.0.1:$PORT" \
    --data-dir "$TMP/berth" --auth-mode token --gc-grace-period 5s --log-level warn \
    >"$TMP/berth.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
done
sleep 6
log "Berth: online GC with pushes going on"
BERTH_BENCH_PASSWORD="$PASSWORD" "$BENCH" --meta registry=berth gc-run \
    --url "http://127.0.0.1:$PORT" --expect-blobs "$GARBAGE" | tee -a "$RESULTS"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# Distribution, offline (it must not serve while it collects).
cat >"$TMP/dist.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $TMP/dist
  delete:
    enabled: true
EOF
count_dist_blobs() { find "$TMP/dist/docker/registry/v2/blobs" -name data | wc -l; }
BEFORE=$(count_dist_blobs)
log "Distribution: docker-registry garbage-collect (offline)"
START=$(date +%s.%N)
docker-registry garbage-collect "$TMP/dist.yml" >"$TMP/dist-gc.log" 2>&1
END=$(date +%s.%N)
AFTER=$(count_dist_blobs)
DIST_S=$(echo "$END - $START" | bc -l)
printf '{"registry":"distribution","bench":"gc-offline","metrics":{"gc_s":%.3f},"detail":{"blobs_before":%d,"blobs_after":%d,"deleted":%d}}\n' \
    "$DIST_S" "$BEFORE" "$AFTER" "$((BEFORE - AFTER))" | tee -a "$RESULTS"

python3 - "$RESULTS" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
fill = next(l for l in lines if l["bench"] == "gc-fill")
berth = next(l for l in lines if l["bench"] == "gc-run")
dist = next(l for l in lines if l["bench"] == "gc-offline")
run = berth["detail"]["run"]
before, during = berth["detail"]["pushes_before"], berth["detail"]["pushes_during"]
print()
print(f"| GC over {fill['detail']['blobs']:,} blobs and {fill['detail']['manifests']:,} manifests | Berth (online) | Distribution 2.8 (offline) |")
print("| --- | ---: | ---: |")
print(f"| Duration | {berth['metrics']['gc_s']:.2f} s | {dist['metrics']['gc_s']:.2f} s |")
print(f"| Blobs deleted | {run['blobs_deleted']:,} | {dist['detail']['deleted']:,} |")
print(f"| Bytes freed | {run['freed_bytes']:,} | — |")
print(f"| Pushes during the run (3 requests each) | {during['count']}, p50 {during['p50_ms']} ms, p99 {during['p99_ms']} ms, max {during['max_ms']} ms | none: offline |")
print(f"| Same pushes before the run | {before['count']}, p50 {before['p50_ms']} ms, p99 {before['p99_ms']} ms | — |")
PY
log "results: $RESULTS"
