#!/usr/bin/env bash
# Benchmark Berth against CNCF Distribution 2.8 (Debian's docker-registry) on this machine.
#
#   scripts/bench.sh            # 3 rounds (A B, B A, A B), about 8 minutes on 2 cores + build
#   scripts/bench.sh --quick    # 1 round, 5 s wrk runs, about 2 minutes
#   scripts/bench.sh --rounds 5 --skip-build --out bench-results
#
# Measures the machine's own limits first (SHA-256 on one core, 1 GiB sequential write with
# fdatasync, loopback TCP, the CPU a durable push costs with no HTTP; in every round, a pull
# served by a bare sendfile loop), then runs every registry on a fresh data directory under /tmp for
# each round, alternating the order. Servers listen on 127.0.0.1 only. Results: a table on
# stdout, raw JSON lines and a summary under bench-results/.
set -euo pipefail

ROUNDS=3
WRK_SECONDS=10
QUICK=0
BUILD=1
OUT_DIR=bench-results
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1; WRK_SECONDS=5 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --wrk-seconds) WRK_SECONDS="$2"; shift ;;
        --skip-build) BUILD=0 ;;
        --out) OUT_DIR="$2"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------
missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
DIST_BIN=$(command -v docker-registry)

if [ "$BUILD" -eq 1 ]; then
    log "building release binaries"
    cargo build --release -p berth -p berth-bench
fi
BERTH_BIN="$ROOT/target/release/berth"
BENCH="$ROOT/target/release/berth-bench"
# Idle RSS depends on how much of crates/berth/startup.order this binary matched at link time.
"$ROOT/scripts/startup-order.sh" --check || true

# --- scratch space and cleanup -----------------------------------------------------------
TMP=$(mktemp -d /tmp/berth-bench.XXXXXX)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR/tmp"
RESULTS="$OUT_DIR/tmp/run-$STAMP.jsonl"
: >"$RESULTS"

# --- machine -----------------------------------------------------------------------------
cpu_busy() { # percent of all CPU time not idle over the next 3 seconds (other work on the box)
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
    sleep 3
    b=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[1] - x[1]; i = y[2] - x[2]; printf "%.1f", (t > 0 ? 100 * (t - i) / t : 0) }'
}
BUSY=$(cpu_busy)
for _ in $(seq 20); do # wait up to a minute for other work (e.g. the build) to settle
    awk -v b="$BUSY" 'BEGIN { exit !(b > 10) }' || break
    log "machine is ${BUSY}% busy with other work; waiting"
    BUSY=$(cpu_busy)
done
read -r LOAD1 _ </proc/loadavg
log "machine: $(nproc) cores, ${BUSY}% busy before the run, load average $LOAD1, $(uname -r)"
if awk -v b="$BUSY" 'BEGIN { exit !(b > 10) }'; then
    log "WARNING: other work is using the CPU: numbers will be low and noisy"
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- crates 2>/dev/null || COMMIT="$COMMIT+dirty"
printf '{"registry":"machine","bench":"env","metrics":{},"detail":{"commit":"%s","cpu_busy_pct_start":%s,"load1_start":%s,"cores":%s,"kernel":"%s","cpu":"%s","distribution":"%s","wrk":"%s","rounds":%s,"wrk_seconds":%s}}\n' \
    "$COMMIT" "$BUSY" "$LOAD1" "$(nproc)" "$(uname -r)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//;s/"//g')" \
    "$("$DIST_BIN" --version 2>&1 | head -1 | sed 's/"//g')" \
    "$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo unknown)" \
    "$ROUNDS" "$WRK_SECONDS" >>"$RESULTS"

REPEAT=3; [ "$QUICK" -eq 1 ] && REPEAT=1
log "machine: sha256 on one core"
"$BENCH" --meta registry=machine machine sha256 --bytes 1GiB --repeat "$REPEAT" | tee -a "$RESULTS"
log "machine: loopback TCP"
"$BENCH" --meta registry=machine machine loopback --bytes 4GiB --repeat "$REPEAT" | tee -a "$RESULTS"
log "machine: push reference (receive, SHA-256 and O_DIRECT write on one thread, no HTTP)"
"$BENCH" --meta registry=machine machine receive --bytes 1GiB --repeat "$REPEAT" --dir "$TMP" | tee -a "$RESULTS"
sync
log "machine: 1 GiB sequential write with fdatasync"
for _ in $(seq "$REPEAT"); do
    secs=$(dd if=/dev/zero of="$TMP/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 \
        | awk '/copied/ { print $(NF-3) }')
    rm -f "$TMP/dd.bin"
    mbs=$(awk -v s="$secs" 'BEGIN { printf "%.3f", 1073741824 / s / 1e6 }')
    printf '{"registry":"machine","bench":"machine-disk","metrics":{"disk_write_mb_s":%s},"detail":{"bytes":1073741824,"seconds":%s,"tool":"dd bs=1M conv=fdatasync"}}\n' \
        "$mbs" "$secs" | tee -a "$RESULTS"
done
sync

# --- servers -----------------------------------------------------------------------------
wait_ready() { # url pid
    for _ in $(seq 200); do
        if curl -fsS -o /dev/null "$1/v2/" 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "server exited during startup" >&2; return 1; }
        sleep 0.05
    done
    echo "server at $1 not ready after 10 s" >&2
    return 1
}

start_server() { # kind dir port
    local kind=$1 dir=$2 port=$3
    mkdir -p "$dir"
    case "$kind" in
        berth|berth-nofsync)
            local fsync=true; [ "$kind" = berth-nofsync ] && fsync=false
            "$BERTH_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
                --fsync "$fsync" --log-level warn --auth-mode open >"$dir/server.log" 2>&1 &
            ;;
        distribution)
            # Debian's packaged defaults (in-memory blob descriptor cache), access log off so
            # neither server logs per request.
            cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
            "$DIST_BIN" serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    wait_ready "http://127.0.0.1:$port" "$SERVER_PID"
}

stop_server() { # dir
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    rm -rf "$1"
    sync # no dirty pages of this run left to slow the next one
}

run_suite() { # kind round
    local kind=$1 round=$2
    local port dir url
    port=$("$BENCH" free-port)
    dir="$TMP/$kind-$round"
    url="http://127.0.0.1:$port"
    log "round $round: $kind on $url"
    start_server "$kind" "$dir" "$port"
    local b=("$BENCH" --meta "registry=$kind" --meta "round=$round")
    sleep 1
    "${b[@]}" idle --pid "$SERVER_PID" | tee -a "$RESULTS"
    "${b[@]}" push-blob --url "$url" --repo bench/big --size 1GiB --seed 11 --pid "$SERVER_PID" | tee -a "$RESULTS"
    "${b[@]}" push-blob --url "$url" --repo bench/big --size 1GiB --seed 12 --chunk 64MiB --pid "$SERVER_PID" | tee -a "$RESULTS"
    if [ "$kind" != berth-nofsync ]; then
        "${b[@]}" pull-blob --url "$url" --repo bench/big --size 1GiB --seed 11 --repeat 3 --range 1MiB | tee -a "$RESULTS"
        "${b[@]}" manifest --url "$url" --repo bench/app --tag latest --connections 64 --threads 2 \
            --seconds "$WRK_SECONDS" | tee -a "$RESULTS"
        "${b[@]}" small-blobs --url "$url" --repo bench/small --count 2000 --size 32KiB --concurrency 32 | tee -a "$RESULTS"
        if [ "$kind" = berth ]; then
            "${b[@]}" tags --url "$url" --repo bench/tags-batch --count 10000 --batch 100 --concurrency 16 | tee -a "$RESULTS"
        fi
        "${b[@]}" tags --url "$url" --repo bench/tags-single --count 10000 --batch 0 --concurrency 16 | tee -a "$RESULTS"
    fi
    stop_server "$dir"
}

for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
        order=(berth berth-nofsync distribution)
    else
        order=(distribution berth-nofsync berth)
    fi
    # The pull reference moves between runs as much as the pulls do, so it is taken in every
    # round, next to them.
    log "round $round: pull reference (a cached file by a bare sendfile loop to the pull reader)"
    "$BENCH" --meta registry=machine --meta "round=$round" machine sendfile --bytes 1GiB \
        --repeat 3 --dir "$TMP" | tee -a "$RESULTS"
    for kind in "${order[@]}"; do
        run_suite "$kind" "$round"
    done
done

read -r LOAD1 _ </proc/loadavg
BUSY=$(cpu_busy)
printf '{"registry":"machine","bench":"env-end","metrics":{},"detail":{"cpu_busy_pct_end":%s,"load1_end":%s}}\n' \
    "$BUSY" "$LOAD1" >>"$RESULTS"

log "results ($RESULTS)"
"$BENCH" report "$RESULTS" --out "$OUT_DIR/latest.json" | tee "$OUT_DIR/latest.md"
cp "$RESULTS" "$OUT_DIR/latest.jsonl"
