#!/usr/bin/env bash
# Regenerate crates/berth/startup.order: the functions of the berth binary that a fresh
# `berth serve` runs until it has answered its first request and sat idle for a few seconds,
# in open mode and in token mode (the default).
#
#   scripts/startup-order.sh          # build, trace, write crates/berth/startup.order
#   scripts/startup-order.sh --check  # only report how much of the current file still matches
#
# crates/berth/build.rs hands the file to the linker (LLD's --symbol-ordering-file) for
# release builds, which places these functions together at the start of .text. Code keeps
# working whatever the file says; a stale file only lets idle RSS creep back up. Most names
# carry hashes that change with the Rust toolchain and, for some, with edits to their code, so
# rerun this after a toolchain update or large changes to startup (new workers, new
# dependencies) and commit the result; --check says how much still matches.
#
# Traces with valgrind's callgrind (installed with apt if missing): every function that runs
# is recorded, however briefly. The server listens on a free 127.0.0.1 port.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDER=crates/berth/startup.order
CHECK=0
case "${1:-}" in
    "") ;;
    --check) CHECK=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf '[startup-order] %s\n' "$*" >&2; }

target=$(cargo metadata -q --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target/release/berth

if [ "$CHECK" -eq 1 ]; then
    [ -x "$BIN" ] || { log "no release binary at $BIN: cargo build --release -p berth"; exit 1; }
    total=$(grep -c . "$ORDER" || true)
    [ "$total" -gt 0 ] || { log "$ORDER is empty or missing"; exit 1; }
    found=$(nm "$BIN" | awk 'NR == FNR { want[$0] = 1; next } ($3 in want) { print $3 }' "$ORDER" - | sort -u | wc -l)
    log "$found of $total names in $ORDER are functions of $BIN"
    exit 0
fi

missing=()
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || missing+=(valgrind)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "building the release binary"
cargo build --release -p berth

TMP=$(mktemp -d /tmp/berth-startup-order.XXXXXX)
VG_PID=""
cleanup() {
    if [ -n "$VG_PID" ] && kill -0 "$VG_PID" 2>/dev/null; then
        kill -9 "$VG_PID" 2>/dev/null || true
        wait "$VG_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# Trace one start in the given auth mode; the dump lands in $TMP/<mode>/.
trace() {
    local mode=$1 port code
    mkdir -p "$TMP/$mode"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log "tracing berth serve --auth-mode $mode on 127.0.0.1:$port (slow under valgrind)"
    env -u BERTH_CONFIG valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$TMP/$mode/cg.out" \
        "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$TMP/$mode/data" --auth-mode "$mode" \
        --log-level warn >"$TMP/$mode/server.log" 2>&1 &
    VG_PID=$!
    local answered=0
    for _ in $(seq 240); do
        # Any answer will do: in token mode it is 401.
        code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
        if [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]; then
            answered=1
            break
        fi
        kill -0 "$VG_PID" 2>/dev/null || { cat "$TMP/$mode/server.log" >&2; log "the server exited"; exit 1; }
        sleep 0.5
    done
    [ "$answered" -eq 1 ] || { log "the server never answered"; exit 1; }
    # What an idle server does in its first seconds (worker ticks, the first scheduled checks).
    sleep 3
    callgrind_control --dump "$VG_PID" >/dev/null
    sleep 2
    kill -9 "$VG_PID"
    wait "$VG_PID" 2>/dev/null || true
    VG_PID=""
    ls "$TMP/$mode"/cg.out.* >/dev/null 2>&1 || { log "callgrind wrote no dump"; exit 1; }
}
trace open
trace token

# Callgrind names each function and object once per dump ("fn=(id) name", "ob=(id) name"; later
# lines give the id alone) and then lists each function that ran in a block of its own, headed
# by "fn=" under the "ob=" of the object it belongs to. Names may first appear in a callee line
# ("cfn="), whose object line ("cob=") callgrind leaves out for calls through the PLT, so the
# object is taken from the "fn=" blocks only. Keep the functions of our binary, in order of
# first appearance, without callgrind's recursion marks ('2) and unnamed addresses.
#
# Under valgrind, code that picks a CPU-specific variant at run time (SHA-NI, ADX) takes the
# generic one; those few native variants are not in the file.
awk -v bin="$BIN" '
    function id_name(line) {
        name = ""; id = line
        sub(/^[a-z]+=\(/, "", id); sub(/\).*/, "", id)
        if (match(line, /\) /)) name = substr(line, RSTART + 2)
    }
    FNR == 1 { split("", obj); split("", fname); cur = "" }
    /^(ob|cob)=\(/ {
        id_name($0)
        if (name != "") obj[id] = name
        if ($0 ~ /^ob/) cur = obj[id]
        next
    }
    /^(fn|cfn)=\(/ {
        is_fn = ($0 ~ /^fn/)
        id_name($0)
        if (name != "") fname[id] = name
        if (!is_fn || cur != bin) next
        name = fname[id]
        sub(/\047[0-9]+$/, "", name)
        if (name != "" && name !~ /^0x/ && name !~ /^\(/ && !seen[name]++) print name
    }
' "$TMP"/open/cg.out.* "$TMP"/token/cg.out.* >"$TMP/order"
n=$(grep -c . "$TMP/order" || true)
[ "$n" -gt 100 ] || { log "only $n functions traced: something is wrong"; exit 1; }
mv "$TMP/order" "$ORDER"
log "wrote $n functions to $ORDER; rebuild (cargo build --release -p berth) to use it"
