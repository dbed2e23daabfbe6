#!/usr/bin/env bash
# Real-client tests for Berth: push and pull with skopeo, buildah and the ORAS Python SDK
# against a `berth serve` started here on a free loopback port, and check what a user would
# check (digests equal, files byte-identical, listings holding exactly what was pushed).
#
# Two servers: the first runs with `--auth-mode open` (every client feature, no credentials);
# the second, on another loopback port, in the default token mode with BERTH_ADMIN_PASSWORD
# set. On the second, `berth admin` (the CLI) makes a private project, a developer and a guest
# user and two project robots (pull+push, pull only); then skopeo (--creds, login/logout with
# an authfile), buildah (login/logout) and the ORAS SDK (login) push and pull as those
# accounts, and every refusal (guest push, pull-only robot push, anonymous pull, wrong
# password) is checked to be a refusal.
#
# Usage: scripts/test-clients.sh            (run as root on Debian 12; installs what it needs)
# Environment:
#   BERTH_BIN=path       use this binary instead of building with `cargo build -p berth`
#   BERTH_SERVE_ARGS="…" extra `berth serve` flags, split on spaces (scripts/test.sh passes
#                        --metadata-url and --s3-* to run every check on PostgreSQL + S3)
#   BERTH_TOKEN_SERVE_ARGS="…"  the same for the token-mode server (its own database and
#                        prefix: it must not share the open-mode server's); default: none
#   BIG_LAYER_MIB=512    size of the large-layer round trip, in MiB
#   KEEP_WORK=1          keep the temporary directory (path printed at the end)
#
# Prints `ok NAME` or `FAIL NAME: reason` per check and ends with `N passed, M failed`;
# exits 1 if any check failed.

set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
APT_PACKAGES=(skopeo buildah umoci jq curl)
ORAS_SPEC="oras>=0.2.43,<0.3" # the series scripts/clients/oras_artifacts.py is written against
# What oras_artifacts.py uses of the SDK.
ORAS_PROBE='import inspect, oras.client, oras.oci
p = inspect.signature(oras.client.OrasClient.push).parameters
assert "subject" in p and "do_chunked" in p and oras.oci.Subject
assert oras.client.OrasClient._do_paginated_request'
BIG_LAYER_MIB=${BIG_LAYER_MIB:-512}
START_TIME=$SECONDS

PASSED=0
FAILED=0
WORK=""
SERVER_PID=""
REGISTRY="" # 127.0.0.1:PORT
BIN=""

# The token-mode server and the accounts the checks make on it with `berth admin`. Passwords
# are made fresh per run; robot secrets are known only once created, so they live in files
# ($TW/ROBOT.secret): checks run in subshells.
TOKEN_PID=""
TREG=""   # 127.0.0.1:PORT of the token-mode server
TW=""     # $WORK/token
PROJECT=team-a
ADMIN_PASS=""
DEV_USER=dev-alice
DEV_PASS=""
GUEST_USER=guest-bob
GUEST_PASS=""
PUSH_ROBOT="robot\$$PROJECT+ci-push" # robot$team-a+ci-push
PULL_ROBOT="robot\$$PROJECT+ci-pull"
TREPO_SKOPEO=$PROJECT/skopeo/app
TREPO_BUILDAH=$PROJECT/buildah/hello
TREPO_ROBOT=$PROJECT/buildah/robot
TREPO_ORAS=$PROJECT/oras/artifact

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_INDEX=application/vnd.oci.image.index.v1+json
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
ACCEPT_ALL="$OCI_MANIFEST, $OCI_INDEX, $DOCKER_MANIFEST, $DOCKER_LIST"

# Repositories this script pushes to; the catalog check expects exactly these.
REPO_SKOPEO=clients/skopeo/app
REPO_MULTI=clients/skopeo/multi
REPO_COPY=clients/copy/target
REPO_BUILDAH=clients/buildah/hello
REPO_LIST=clients/buildah/list
REPO_ORAS=clients/oras/artifact
REPO_BIG=clients/big/layer

note() { echo "# $*"; }

# ---------------------------------------------------------------------------------------------
# Setup: tools, binary, server, cleanup
# ---------------------------------------------------------------------------------------------

# stop_server PID: SIGTERM, then SIGKILL after 5 s.
stop_server() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    stop_server "$SERVER_PID"
    stop_server "$TOKEN_PID"
    if [[ -n "$WORK" && -d "$WORK" && "${KEEP_WORK:-}" != 1 ]]; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}

# A setup step failed: report it as a failed check and stop.
setup_failed() {
    echo "FAIL $1: $2"
    FAILED=$((FAILED + 1))
    echo "$PASSED passed, $FAILED failed"
    exit 1
}

install_tools() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
            missing+=("$p")
        fi
    done
    # pip for the oras SDK (usually there already).
    if ! python3 -c "$ORAS_PROBE" 2>/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
        missing+=(python3-pip)
    fi
    if ((${#missing[@]})); then
        note "installing ${missing[*]}"
        if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } >"$WORK/apt.log" 2>&1; then
            tail -20 "$WORK/apt.log" >&2
            setup_failed install "apt-get install ${missing[*]} failed"
        fi
    fi
    if ! python3 -c "$ORAS_PROBE" 2>/dev/null; then
        note "installing the oras Python SDK ($ORAS_SPEC)"
        # Debian's own python3 refuses plain pip installs (PEP 668); allow it there.
        if ! python3 -m pip install -q --disable-pip-version-check "$ORAS_SPEC" >"$WORK/pip.log" 2>&1 &&
            ! python3 -m pip install -q --disable-pip-version-check --break-system-packages "$ORAS_SPEC" \
                >>"$WORK/pip.log" 2>&1; then
            tail -20 "$WORK/pip.log" >&2
            setup_failed install "pip install $ORAS_SPEC failed"
        fi
        python3 -c "$ORAS_PROBE" || setup_failed install "the installed oras SDK lacks what the test uses"
    fi
}

# Sets BIN: $BERTH_BIN, or the debug binary built here.
find_binary() {
    if [[ -n "${BERTH_BIN:-}" ]]; then
        [[ -x "$BERTH_BIN" ]] || setup_failed build "BERTH_BIN=$BERTH_BIN is not executable"
        BIN=$BERTH_BIN
        return
    fi
    note "building berth (cargo build -p berth)"
    (cd "$REPO_ROOT" && cargo build -q -p berth) >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log"
        setup_failed build "cargo build -p berth failed"
    }
    local target
    target=$(cd "$REPO_ROOT" && cargo metadata -q --format-version 1 --no-deps | jq -r .target_directory) ||
        setup_failed build "cargo metadata failed"
    BIN=$target/debug/berth
    [[ -x "$BIN" ]] || setup_failed build "no binary at $BIN after the build"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
    local bin=$1 port
    port=$(free_port)
    REGISTRY="127.0.0.1:$port"
    mkdir -p "$WORK/data"
    # Only flags: a BERTH_CONFIG in the caller's environment must not change the test server.
    local extra=()
    read -r -a extra <<<"${BERTH_SERVE_ARGS:-}"
    env -u BERTH_CONFIG "$bin" serve --listen "$REGISTRY" --data-dir "$WORK/data" --log-format json \
        --auth-mode open "${extra[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for_server "$SERVER_PID" "$REGISTRY" "$WORK/server.log" server
    note "berth $("$bin" --version 2>/dev/null | awk '{print $2}') listening on $REGISTRY" \
        "(setup took $((SECONDS - START_TIME))s)"
}

# wait_for_server PID HOST:PORT LOG NAME: until /healthz answers 200 (10 s at most).
wait_for_server() {
    local pid=$1 addr=$2 log=$3 name=$4
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "http://$addr/healthz" 2>/dev/null; then
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log" >&2
            setup_failed "$name" "berth serve exited before answering /healthz"
        fi
        sleep 0.1
    done
    setup_failed "$name" "no answer from http://$addr/healthz within 10s"
}

# The second server: the default auth mode (token; nothing on the command line or in the
# environment says otherwise), the administrator's password from BERTH_ADMIN_PASSWORD.
start_token_server() {
    local bin=$1 port
    port=$(free_port)
    TREG="127.0.0.1:$port"
    mkdir -p "$WORK/data-token"
    local extra=()
    read -r -a extra <<<"${BERTH_TOKEN_SERVE_ARGS:-}"
    env -u BERTH_CONFIG -u BERTH_AUTH_MODE BERTH_ADMIN_PASSWORD="$ADMIN_PASS" \
        "$bin" serve --listen "$TREG" --data-dir "$WORK/data-token" --log-format json \
        "${extra[@]}" >"$WORK/server-token.log" 2>&1 &
    TOKEN_PID=$!
    wait_for_server "$TOKEN_PID" "$TREG" "$WORK/server-token.log" token-server
    note "token-mode berth listening on $TREG"
}

# Keep the clients off the machine's own configuration and global image store.
isolate_clients() {
    mkdir -p "$WORK/tmp" "$WORK/buildah/root" "$WORK/buildah/runroot" "$WORK/logs"
    export TMPDIR="$WORK/tmp"
    printf 'unqualified-search-registries = []\n' >"$WORK/registries.conf"
    export CONTAINERS_REGISTRIES_CONF="$WORK/registries.conf"
    printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' >"$WORK/policy.json"
    # No credentials of the machine's own (podman/skopeo/buildah login) reach the clients;
    # the token-mode checks give every client an authfile of its own.
    printf '{"auths": {}}\n' >"$WORK/auth.json"
    export REGISTRY_AUTH_FILE="$WORK/auth.json"
    mkdir -p "$WORK/home"
}

# ---------------------------------------------------------------------------------------------
# Check runner and helpers
# ---------------------------------------------------------------------------------------------

# run_check NAME FUNCTION [ARGS...]: run the function in a subshell with errexit; a failing
# command or a `die` fails the check. Prints `ok NAME` or `FAIL NAME: reason`.
run_check() {
    local name=$1
    shift
    local log="$WORK/logs/$name.log" rc reason
    set +e
    (
        set -eE -o pipefail
        trap 'echo "REASON: command failed with status $?: ${BASH_COMMAND:0:200}" >&2' ERR
        "$@"
    ) >"$log" 2>&1
    rc=$?
    set -e
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        echo "ok $name"
    else
        FAILED=$((FAILED + 1))
        # The first reason is the cause; later ones come from the callers it failed.
        reason=$(grep '^REASON: ' "$log" | head -1 | cut -c9-)
        [[ -n "$reason" ]] || reason="exited $rc"
        echo "FAIL $name: $reason"
        { grep -v -e '^REASON: ' -e '^\s*$' "$log" || true; } | tail -8 | sed 's/^/    | /'
    fi
}

# run_reporting NAME COMMAND...: a command that prints its own `ok`/`FAIL` lines; count them.
run_reporting() {
    local name=$1
    shift
    local log="$WORK/logs/$name.log" rc line oks=0 fails=0
    set +e
    "$@" >"$log" 2>"$log.err"
    rc=$?
    set -e
    while IFS= read -r line; do
        case "$line" in
        "ok "*) oks=$((oks + 1)) && echo "$line" ;;
        "FAIL "*) fails=$((fails + 1)) && echo "$line" ;;
        "# "*) echo "$line" ;;
        esac
    done <"$log"
    PASSED=$((PASSED + oks))
    FAILED=$((FAILED + fails))
    if ((rc != 0 && fails == 0)) || ((oks + fails == 0)); then
        FAILED=$((FAILED + 1))
        echo "FAIL $name: exited $rc without reporting a failed check"
        tail -8 "$log.err" | sed 's/^/    | /' || true
    fi
}

die() {
    echo "REASON: $*" >&2
    exit 1
}

# expect_eq GOT WANT WHAT
expect_eq() {
    [[ "$1" == "$2" ]] || die "$3: got '$1', want '$2'"
}

sha256_of() {
    local h
    h=$(sha256sum "$1" | cut -d' ' -f1)
    echo "sha256:$h"
}

sko() {
    skopeo --policy "$WORK/policy.json" "$@" || die "skopeo $* exited $?"
}

bah() {
    buildah --storage-driver vfs --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" "$@" ||
        die "buildah $* exited $?"
}

# http_manifest REPO REF OUTPREFIX: GET a manifest accepting every known type; writes
# OUTPREFIX.body and OUTPREFIX.headers; fails unless HTTP 200.
http_manifest() {
    local code
    code=$(curl -sS -H "Accept: $ACCEPT_ALL" -D "$3.headers" -o "$3.body" -w '%{http_code}' \
        "http://$REGISTRY/v2/$1/manifests/$2")
    [[ "$code" == 200 ]] || die "GET /v2/$1/manifests/$2 answered $code: $(head -c 300 "$3.body")"
}

# header FILE NAME: the value of a response header (case-insensitive), CR stripped; empty
# when the response has no such header.
header() {
    { grep -i "^$2:" "$1" || true; } | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

# blob_present REPO DIGEST SIZE: HEAD answers 200 with the size, GET returns bytes hashing to
# the digest.
blob_present() {
    local code len got
    code=$(curl -sS -I -o "$WORK/tmp/head" -w '%{http_code}' "http://$REGISTRY/v2/$1/blobs/$2")
    [[ "$code" == 200 ]] || die "HEAD /v2/$1/blobs/$2 answered $code"
    len=$(header "$WORK/tmp/head" content-length)
    expect_eq "$len" "$3" "HEAD $1 blob $2 Content-Length"
    got=$(curl -fsSL "http://$REGISTRY/v2/$1/blobs/$2" | sha256sum | cut -d' ' -f1)
    expect_eq "sha256:$got" "$2" "GET $1 blob content digest"
}

# layout_put_blob LAYOUT FILE: move FILE into the layout's blobs; prints "DIGEST SIZE".
layout_put_blob() {
    local d s
    d=$(sha256_of "$2")
    s=$(stat -c %s "$2")
    mkdir -p "$1/blobs/sha256"
    mv "$2" "$1/blobs/sha256/${d#sha256:}"
    echo "$d $s"
}

# layout_ref LAYOUT NAME: the digest of the manifest tagged NAME in an OCI layout.
layout_ref() {
    jq -er --arg n "$2" \
        '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $n)][0].digest' \
        "$1/index.json"
}

# layout_blob LAYOUT DIGEST: path of a blob in an OCI layout.
layout_blob() {
    echo "$1/blobs/sha256/${2#sha256:}"
}

# random_dir DIR NAME KIB: a directory with one file of random content and a small text file.
random_dir() {
    mkdir -p "$1"
    head -c "$(($3 * 1024))" /dev/urandom >"$1/$2.bin"
    echo "berth $2 $RANDOM$RANDOM" >"$1/$2.txt"
}

# make_image LAYOUT TAG ARCH DIR...: an image made with umoci, one tar layer per DIR.
make_image() {
    local layout=$1 tag=$2 arch=$3 dir
    shift 3
    [[ -d "$layout" ]] || umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci config --image "$layout:$tag" --architecture "$arch" --os linux \
        --config.label "org.example.berth-test=$tag" --config.cmd /bin/true
    for dir in "$@"; do
        tar -C "$dir" -cf "$WORK/tmp/layer.tar" .
        umoci raw add-layer --image "$layout:$tag" "$WORK/tmp/layer.tar"
        rm -f "$WORK/tmp/layer.tar"
    done
    umoci gc --layout "$layout"
}

# layers_of MANIFEST_FILE: the layer digests, one per line; fails if there are none.
layers_of() {
    jq -e -r '.layers[].digest' "$1"
}

# ---------------------------------------------------------------------------------------------
# 1. skopeo: OCI layout -> registry -> OCI layout and dir:
# ---------------------------------------------------------------------------------------------

S1="" # set in main: $WORK/s1

check_skopeo_push() {
    random_dir "$S1/src1" one 300
    random_dir "$S1/src2" two 500
    make_image "$S1/layout" v1 amd64 "$S1/src1" "$S1/src2"
    local want got
    want=$(layout_ref "$S1/layout" v1)
    sko copy -q --dest-tls-verify=false "oci:$S1/layout:v1" "docker://$REGISTRY/$REPO_SKOPEO:v1"
    sko copy -q --dest-tls-verify=false "oci:$S1/layout:v1" "docker://$REGISTRY/$REPO_SKOPEO:v2"
    http_manifest "$REPO_SKOPEO" v1 "$S1/m"
    expect_eq "$(header "$S1/m.headers" docker-content-digest)" "$want" "registry digest of tag v1"
    got=$(sha256_of "$S1/m.body")
    expect_eq "$got" "$want" "digest of the manifest bytes served for v1"
    cmp -s "$S1/m.body" "$(layout_blob "$S1/layout" "$want")" || die "served manifest differs from the pushed one"
    expect_eq "$(header "$S1/m.headers" content-type)" "$OCI_MANIFEST" "Content-Type of v1"
    local n
    n=$(jq '.layers | length' "$S1/m.body")
    expect_eq "$n" 2 "layer count"
}

check_skopeo_inspect() {
    sko inspect --tls-verify=false "docker://$REGISTRY/$REPO_SKOPEO:v1" >"$S1/inspect.json"
    local want
    want=$(layout_ref "$S1/layout" v1)
    expect_eq "$(jq -r .Digest "$S1/inspect.json")" "$want" "skopeo inspect Digest"
    expect_eq "$(jq -c '.RepoTags | sort' "$S1/inspect.json")" '["v1","v2"]' "skopeo inspect RepoTags"
    expect_eq "$(jq -r '.Labels["org.example.berth-test"]' "$S1/inspect.json")" v1 "label"
    expect_eq "$(jq -c .Layers "$S1/inspect.json")" \
        "$(jq -c '[.layers[].digest]' "$(layout_blob "$S1/layout" "$want")")" "skopeo inspect Layers"
}

check_skopeo_list_tags() {
    local tags
    tags=$(sko list-tags --tls-verify=false "docker://$REGISTRY/$REPO_SKOPEO" | jq -c '.Tags | sort')
    expect_eq "$tags" '["v1","v2"]' "skopeo list-tags"
    tags=$(curl -fsS "http://$REGISTRY/v2/$REPO_SKOPEO/tags/list" | jq -c .)
    expect_eq "$tags" "{\"name\":\"$REPO_SKOPEO\",\"tags\":[\"v1\",\"v2\"]}" "GET tags/list"
}

check_skopeo_pull_oci() {
    sko copy -q --src-tls-verify=false "docker://$REGISTRY/$REPO_SKOPEO:v1" "oci:$S1/out:v1"
    local want got m
    want=$(layout_ref "$S1/layout" v1)
    got=$(layout_ref "$S1/out" v1)
    expect_eq "$got" "$want" "manifest digest after the round trip"
    m=$(layout_blob "$S1/out" "$got")
    expect_eq "$(layers_of "$m" | paste -sd,)" \
        "$(layers_of "$(layout_blob "$S1/layout" "$want")" | paste -sd,)" "layer digests"
    local d layers
    layers=$(layers_of "$m")
    for d in $layers; do
        expect_eq "$(sha256_of "$(layout_blob "$S1/out" "$d")")" "$d" "content of pulled layer"
    done
    umoci unpack --image "$S1/out:v1" "$S1/bundle" >/dev/null
    local f
    for f in one.bin one.txt two.bin two.txt; do
        local src=$S1/src1
        [[ $f == two.* ]] && src=$S1/src2
        cmp "$src/$f" "$S1/bundle/rootfs/$f" || die "unpacked $f differs from the original"
    done
    expect_eq "$(cd "$S1/bundle/rootfs" && find . -type f | sort | paste -sd,)" \
        "./one.bin,./one.txt,./two.bin,./two.txt" "files in the unpacked image"
}

check_skopeo_pull_dir() {
    sko copy -q --src-tls-verify=false "docker://$REGISTRY/$REPO_SKOPEO:v1" "dir:$S1/dir"
    local want d blobs
    want=$(layout_ref "$S1/layout" v1)
    expect_eq "$(sha256_of "$S1/dir/manifest.json")" "$want" "digest of dir:manifest.json"
    blobs=$(jq -e -r '(.layers[], .config).digest' "$S1/dir/manifest.json")
    expect_eq "$(wc -l <<<"$blobs")" 3 "blobs in dir:manifest.json (2 layers and a config)"
    for d in $blobs; do
        [[ -f "$S1/dir/${d#sha256:}" ]] || die "dir: lacks blob $d"
        expect_eq "$(sha256_of "$S1/dir/${d#sha256:}")" "$d" "dir: blob content"
        cmp -s "$S1/dir/${d#sha256:}" "$(layout_blob "$S1/layout" "$d")" || die "blob $d differs from the pushed one"
    done
}

# ---------------------------------------------------------------------------------------------
# 2. skopeo multi-arch: an OCI index with linux/amd64 and linux/arm64
# ---------------------------------------------------------------------------------------------

S2=""

check_multiarch_push() {
    random_dir "$S2/amd64" amd64 200
    random_dir "$S2/arm64" arm64 200
    make_image "$S2/layout" amd64 amd64 "$S2/amd64"
    make_image "$S2/layout" arm64 arm64 "$S2/arm64"
    local da db sa sb
    da=$(layout_ref "$S2/layout" amd64)
    db=$(layout_ref "$S2/layout" arm64)
    sa=$(stat -c %s "$(layout_blob "$S2/layout" "$da")")
    sb=$(stat -c %s "$(layout_blob "$S2/layout" "$db")")
    jq -cn --arg mt "$OCI_MANIFEST" --arg it "$OCI_INDEX" \
        --arg da "$da" --argjson sa "$sa" --arg db "$db" --argjson sb "$sb" '{
            schemaVersion: 2, mediaType: $it,
            manifests: [
                {mediaType: $mt, digest: $da, size: $sa, platform: {architecture: "amd64", os: "linux"}},
                {mediaType: $mt, digest: $db, size: $sb, platform: {architecture: "arm64", os: "linux", variant: "v8"}}
            ],
            annotations: {"org.example.berth-test": "multi"}
        }' | tr -d '\n' >"$S2/index.json"
    local desc di si
    desc=$(layout_put_blob "$S2/layout" "$S2/index.json")
    read -r di si <<<"$desc"
    echo "$di" >"$S2/index.digest"
    jq --arg it "$OCI_INDEX" --arg d "$di" --argjson s "$si" \
        '.manifests += [{mediaType: $it, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
        "$S2/layout/index.json" >"$S2/layout-index.json"
    mv "$S2/layout-index.json" "$S2/layout/index.json"

    sko copy -q --all --preserve-digests --dest-tls-verify=false \
        "oci:$S2/layout:multi" "docker://$REGISTRY/$REPO_MULTI:v1"
    http_manifest "$REPO_MULTI" v1 "$S2/m"
    expect_eq "$(header "$S2/m.headers" content-type)" "$OCI_INDEX" "Content-Type of the index tag"
    expect_eq "$(header "$S2/m.headers" docker-content-digest)" "$di" "registry digest of the index"
    cmp -s "$S2/m.body" "$(layout_blob "$S2/layout" "$di")" || die "served index differs from the pushed one"
    local d
    for d in "$da" "$db"; do
        http_manifest "$REPO_MULTI" "$d" "$S2/child"
        expect_eq "$(header "$S2/child.headers" content-type)" "$OCI_MANIFEST" "Content-Type of $d"
        cmp -s "$S2/child.body" "$(layout_blob "$S2/layout" "$d")" || die "served manifest $d differs"
    done
}

check_multiarch_pull() {
    sko copy -q --all --preserve-digests --src-tls-verify=false \
        "docker://$REGISTRY/$REPO_MULTI:v1" "oci:$S2/out:multi"
    local di got d l children layers
    di=$(cat "$S2/index.digest")
    got=$(layout_ref "$S2/out" multi)
    expect_eq "$got" "$di" "index digest after the round trip"
    cmp -s "$(layout_blob "$S2/out" "$got")" "$(layout_blob "$S2/layout" "$di")" || die "index bytes differ"
    children=$(jq -e -r '.manifests[].digest' "$(layout_blob "$S2/out" "$di")")
    expect_eq "$children" "$(printf '%s\n%s' "$(layout_ref "$S2/layout" amd64)" "$(layout_ref "$S2/layout" arm64)")" \
        "platform manifests in the pulled index"
    for d in $children; do
        [[ -f "$(layout_blob "$S2/out" "$d")" ]] || die "pulled layout lacks platform manifest $d"
        cmp -s "$(layout_blob "$S2/out" "$d")" "$(layout_blob "$S2/layout" "$d")" || die "manifest $d differs"
        layers=$(layers_of "$(layout_blob "$S2/out" "$d")")
        for l in $layers; do
            expect_eq "$(sha256_of "$(layout_blob "$S2/out" "$l")")" "$l" "layer of $d"
        done
    done
    expect_eq "$(jq -r '[.manifests[].platform.architecture] | join(",")' "$(layout_blob "$S2/out" "$di")")" \
        "amd64,arm64" "platforms in the pulled index"
}

check_multiarch_platform() {
    local arch want
    for arch in amd64 arm64; do
        want=$(layout_ref "$S2/layout" "$arch")
        sko inspect --tls-verify=false --override-os linux --override-arch "$arch" \
            "docker://$REGISTRY/$REPO_MULTI:v1" >"$S2/inspect-$arch.json"
        # skopeo reports the index's digest and the chosen image's config and layers.
        expect_eq "$(jq -r .Digest "$S2/inspect-$arch.json")" "$(cat "$S2/index.digest")" "Digest for linux/$arch"
        expect_eq "$(jq -r .Architecture "$S2/inspect-$arch.json")" "$arch" "config architecture for $arch"
        expect_eq "$(jq -c .Layers "$S2/inspect-$arch.json")" \
            "$(jq -c '[.layers[].digest]' "$(layout_blob "$S2/layout" "$want")")" "layers chosen for linux/$arch"
    done
}

# ---------------------------------------------------------------------------------------------
# 3. skopeo cross-repository copy
# ---------------------------------------------------------------------------------------------

check_cross_repo_copy() {
    skopeo --policy "$WORK/policy.json" --debug copy --src-tls-verify=false --dest-tls-verify=false \
        "docker://$REGISTRY/$REPO_SKOPEO:v1" "docker://$REGISTRY/$REPO_COPY:copied" >"$S1/cross.log" 2>&1 ||
        { tail -5 "$S1/cross.log"; die "skopeo copy docker:// -> docker:// failed"; }
    local src dst
    src=$(sko inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/$REPO_SKOPEO:v1")
    dst=$(sko inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/$REPO_COPY:copied")
    expect_eq "$dst" "$src" "target manifest digest"
    http_manifest "$REPO_COPY" copied "$S1/copied"
    cmp -s "$S1/copied.body" "$(layout_blob "$S1/layout" "$src")" || die "copied manifest bytes differ"
}

check_cross_repo_blobs() {
    http_manifest "$REPO_COPY" copied "$S1/copied"
    local d s descs n=0
    descs=$(jq -e -r '(.layers[], .config) | "\(.digest) \(.size)"' "$S1/copied.body")
    while read -r d s; do
        blob_present "$REPO_COPY" "$d" "$s"
        n=$((n + 1))
    done <<<"$descs"
    expect_eq "$n" 3 "blobs checked in $REPO_COPY (2 layers and a config)"
}

check_cross_repo_mount() {
    # skopeo mounts layers it knows to be in another repository of the same registry
    # (POST ...?mount=&from=); each must answer 201 so no layer is uploaded again.
    local layers mounts uploads
    layers=$(jq '.layers | length' "$S1/copied.body")
    mounts=$(grep -c 'mount OK' "$S1/cross.log" || true)
    uploads=$(grep -c "PATCH http://$REGISTRY/v2/$REPO_COPY/blobs/uploads/" "$S1/cross.log" || true)
    expect_eq "$mounts" "$layers" "layers mounted from $REPO_SKOPEO"
    # The config blob is uploaded (skopeo does not mount configs); layers must not be.
    [[ "$uploads" -le 1 ]] || die "$uploads blob uploads for $layers mounted layers"
}

# ---------------------------------------------------------------------------------------------
# 4. buildah: FROM scratch, push OCI and Docker schema2, pull back
# ---------------------------------------------------------------------------------------------

S4=""

check_buildah_push() {
    mkdir -p "$S4"
    echo "hello from berth $RANDOM$RANDOM" >"$S4/hello.txt"
    head -c 65536 /dev/urandom >"$S4/noise.bin"
    local c
    c=$(bah from --name berth-build scratch)
    bah copy "$c" "$S4/hello.txt" /hello.txt
    bah copy "$c" "$S4/noise.bin" /data/noise.bin
    bah config --label org.example.berth-test=buildah --cmd /hello "$c"
    bah commit -q "$c" localhost/berth-hello:latest >/dev/null
    bah rm "$c" >/dev/null
    bah push -q --retry 0 --tls-verify=false --digestfile "$S4/digest" \
        localhost/berth-hello:latest "docker://$REGISTRY/$REPO_BUILDAH:v1"
    http_manifest "$REPO_BUILDAH" v1 "$S4/m"
    expect_eq "$(header "$S4/m.headers" content-type)" "$OCI_MANIFEST" "Content-Type of the buildah push"
    expect_eq "$(jq -r .mediaType "$S4/m.body")" "$OCI_MANIFEST" "manifest mediaType"
    expect_eq "$(header "$S4/m.headers" docker-content-digest)" "$(cat "$S4/digest")" \
        "registry digest vs buildah --digestfile"
    expect_eq "$(sha256_of "$S4/m.body")" "$(cat "$S4/digest")" "digest of the served bytes"
}

check_buildah_pull() {
    bah rmi -a -f >/dev/null
    [[ -z "$(bah images -q)" ]] || die "local images remain after rmi"
    bah pull -q --retry 0 --tls-verify=false "docker://$REGISTRY/$REPO_BUILDAH:v1" >/dev/null
    local c mnt label
    c=$(bah from --pull=never --name berth-pulled "$REGISTRY/$REPO_BUILDAH:v1")
    mnt=$(bah mount "$c")
    cmp "$S4/hello.txt" "$mnt/hello.txt" || die "hello.txt differs in the pulled image"
    cmp "$S4/noise.bin" "$mnt/data/noise.bin" || die "noise.bin differs in the pulled image"
    bah umount "$c" >/dev/null
    bah rm "$c" >/dev/null
    label=$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.example.berth-test"}}' \
        "$REGISTRY/$REPO_BUILDAH:v1")
    expect_eq "$label" buildah "label of the pulled image"
}

check_buildah_docker_format() {
    bah push -q --retry 0 --tls-verify=false --format docker --digestfile "$S4/digest-docker" \
        "$REGISTRY/$REPO_BUILDAH:v1" "docker://$REGISTRY/$REPO_BUILDAH:docker"
    http_manifest "$REPO_BUILDAH" docker "$S4/d"
    expect_eq "$(jq -r .mediaType "$S4/d.body")" "$DOCKER_MANIFEST" "manifest mediaType"
    expect_eq "$(header "$S4/d.headers" content-type)" "$DOCKER_MANIFEST" "Content-Type"
    expect_eq "$(jq -r .config.mediaType "$S4/d.body")" application/vnd.docker.container.image.v1+json \
        "config mediaType"
    expect_eq "$(header "$S4/d.headers" docker-content-digest)" "$(cat "$S4/digest-docker")" \
        "registry digest vs buildah --digestfile"
    # Both tags are listed, and the Docker one pulls and holds the same file.
    expect_eq "$(curl -fsS "http://$REGISTRY/v2/$REPO_BUILDAH/tags/list" | jq -c '.tags | sort')" \
        '["docker","v1"]' "tags of $REPO_BUILDAH"
    bah rmi -a -f >/dev/null
    local c mnt
    c=$(bah from -q --retry 0 --tls-verify=false --name berth-docker "docker://$REGISTRY/$REPO_BUILDAH:docker")
    mnt=$(bah mount "$c")
    cmp "$S4/hello.txt" "$mnt/hello.txt" || die "hello.txt differs in the Docker-format image"
    bah umount "$c" >/dev/null
    bah rm "$c" >/dev/null
}

# A Docker manifest list made by buildah (two platform images), pushed with --all; the arm64
# image pulled back by platform holds its own file.
check_buildah_manifest_list() {
    local arch c
    for arch in amd64 arm64; do
        echo "$arch $RANDOM$RANDOM" >"$S4/$arch.txt"
        c=$(bah from --arch "$arch" --name "berth-$arch" scratch)
        bah copy "$c" "$S4/$arch.txt" /arch.txt
        bah config --arch "$arch" --os linux "$c"
        bah commit -q "$c" "localhost/berth-$arch:latest" >/dev/null
        bah rm "$c" >/dev/null
    done
    bah manifest create localhost/berth-list >/dev/null
    bah manifest add localhost/berth-list localhost/berth-amd64:latest >/dev/null
    bah manifest add --arch arm64 localhost/berth-list localhost/berth-arm64:latest >/dev/null
    bah manifest push -q --all --format v2s2 --tls-verify=false --digestfile "$S4/list-digest" \
        localhost/berth-list "docker://$REGISTRY/$REPO_LIST:v1"
    http_manifest "$REPO_LIST" v1 "$S4/list"
    expect_eq "$(header "$S4/list.headers" content-type)" "$DOCKER_LIST" "Content-Type of the list"
    expect_eq "$(jq -r .mediaType "$S4/list.body")" "$DOCKER_LIST" "list mediaType"
    expect_eq "$(header "$S4/list.headers" docker-content-digest)" "$(cat "$S4/list-digest")" \
        "registry digest vs buildah --digestfile"
    expect_eq "$(jq -r '[.manifests[] | "\(.platform.os)/\(.platform.architecture)"] | join(",")' "$S4/list.body")" \
        "linux/amd64,linux/arm64" "platforms in the list"
    bah rmi -a -f >/dev/null
    bah pull -q --retry 0 --tls-verify=false --arch arm64 "docker://$REGISTRY/$REPO_LIST:v1" >/dev/null
    c=$(bah from --pull=never --name berth-list-arm64 "$REGISTRY/$REPO_LIST:v1")
    local mnt
    mnt=$(bah mount "$c")
    cmp "$S4/arm64.txt" "$mnt/arch.txt" || die "the arm64 image pulled from the list has the wrong file"
    bah umount "$c" >/dev/null
    bah rm "$c" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# 6. A large layer, uncompressed so its digest is of the exact bytes
# ---------------------------------------------------------------------------------------------

S6=""

check_big_push() {
    mkdir -p "$S6/src" "$S6/layout/blobs/sha256"
    head -c "$((BIG_LAYER_MIB * 1024 * 1024))" /dev/urandom >"$S6/src/big.bin"
    sha256_of "$S6/src/big.bin" >"$S6/file.digest"
    tar -C "$S6/src" -cf "$S6/layer.tar" big.bin
    rm -f "$S6/src/big.bin"
    local desc dl sl
    desc=$(layout_put_blob "$S6/layout" "$S6/layer.tar")
    read -r dl sl <<<"$desc"
    echo "$dl $sl" >"$S6/layer.desc"
    jq -cn --arg d "$dl" '{architecture: "amd64", os: "linux", config: {},
        rootfs: {type: "layers", diff_ids: [$d]}}' | tr -d '\n' >"$S6/config.json"
    local dc sc
    desc=$(layout_put_blob "$S6/layout" "$S6/config.json")
    read -r dc sc <<<"$desc"
    jq -cn --arg mt "$OCI_MANIFEST" --arg dl "$dl" --argjson sl "$sl" --arg dc "$dc" --argjson sc "$sc" '{
        schemaVersion: 2, mediaType: $mt,
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $dc, size: $sc},
        layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $dl, size: $sl}]
    }' | tr -d '\n' >"$S6/manifest.json"
    local dm sm
    desc=$(layout_put_blob "$S6/layout" "$S6/manifest.json")
    read -r dm sm <<<"$desc"
    echo '{"imageLayoutVersion": "1.0.0"}' >"$S6/layout/oci-layout"
    jq -cn --arg mt "$OCI_MANIFEST" --arg d "$dm" --argjson s "$sm" '{schemaVersion: 2,
        manifests: [{mediaType: $mt, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "big"}}]}' \
        >"$S6/layout/index.json"

    # --preserve-digests: skopeo would otherwise gzip the layer on the way to a registry.
    sko copy -q --preserve-digests --dest-tls-verify=false "oci:$S6/layout:big" "docker://$REGISTRY/$REPO_BIG:v1"
    rm -rf "$S6/layout"
    http_manifest "$REPO_BIG" v1 "$S6/m"
    expect_eq "$(header "$S6/m.headers" docker-content-digest)" "$dm" "registry digest of the manifest"
    expect_eq "$(jq -r '.layers[0].digest' "$S6/m.body")" "$dl" "layer digest in the registry's manifest"
    local code len
    code=$(curl -sS -I -o "$S6/head" -w '%{http_code}' "http://$REGISTRY/v2/$REPO_BIG/blobs/$dl")
    expect_eq "$code" 200 "HEAD of the layer blob"
    len=$(header "$S6/head" content-length)
    expect_eq "$len" "$sl" "Content-Length of the layer blob"
}

check_big_pull() {
    local dl sl
    read -r dl sl <"$S6/layer.desc"
    sko copy -q --preserve-digests --src-tls-verify=false "docker://$REGISTRY/$REPO_BIG:v1" "dir:$S6/out"
    local blob="$S6/out/${dl#sha256:}"
    [[ -f "$blob" ]] || die "dir: has no blob named for the layer digest $dl"
    expect_eq "$(stat -c %s "$blob")" "$sl" "size of the pulled layer"
    expect_eq "$(sha256_of "$blob")" "$dl" "sha256 of the pulled layer blob"
    local inner
    inner=$(tar -xOf "$blob" big.bin | sha256sum | cut -d' ' -f1)
    expect_eq "sha256:$inner" "$(cat "$S6/file.digest")" "sha256 of the file inside the pulled layer"
    rm -rf "$S6/out"
}

# ---------------------------------------------------------------------------------------------
# Listings over everything pushed
# ---------------------------------------------------------------------------------------------

# skopeo delete of the Docker-format tag: gone, while the other tag of the repository stays.
check_skopeo_delete() {
    sko delete --tls-verify=false "docker://$REGISTRY/$REPO_BUILDAH:docker"
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT_ALL" \
        "http://$REGISTRY/v2/$REPO_BUILDAH/manifests/docker")
    expect_eq "$code" 404 "GET of the deleted tag"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT_ALL" \
        "http://$REGISTRY/v2/$REPO_BUILDAH/manifests/$(cat "$S4/digest-docker")")
    expect_eq "$code" 404 "GET of the deleted manifest by digest"
    expect_eq "$(sko list-tags --tls-verify=false "docker://$REGISTRY/$REPO_BUILDAH" | jq -c .Tags)" \
        '["v1"]' "tags left after the delete"
    sko inspect --tls-verify=false "docker://$REGISTRY/$REPO_BUILDAH:v1" >/dev/null
}

check_catalog() {
    local want got url page pages=0
    want=$(printf '%s\n' "$REPO_SKOPEO" "$REPO_MULTI" "$REPO_COPY" "$REPO_BUILDAH" "$REPO_LIST" \
        "$REPO_ORAS" "$REPO_BIG" | LC_ALL=C sort | jq -Rsc 'split("\n") | map(select(. != ""))')
    got=$(curl -fsS "http://$REGISTRY/v2/_catalog" | jq -c '.repositories')
    expect_eq "$got" "$want" "GET /v2/_catalog"
    # Page through it three at a time, following the Link header.
    url="/v2/_catalog?n=3"
    got="[]"
    while [[ -n "$url" ]]; do
        curl -fsS -D "$WORK/tmp/cat.headers" -o "$WORK/tmp/cat.body" "http://$REGISTRY$url"
        page=$(jq -c '.repositories' "$WORK/tmp/cat.body")
        [[ $(jq length <<<"$page") -le 3 ]] || die "catalog page larger than n=3: $page"
        got=$(jq -c --argjson p "$page" '. + $p' <<<"$got")
        url=$(header "$WORK/tmp/cat.headers" link | sed -n 's/^<\([^>]*\)>.*rel="next".*/\1/p')
        pages=$((pages + 1))
        ((pages <= 10)) || die "catalog pagination does not end"
    done
    expect_eq "$got" "$want" "catalog paged with n=3"
    ((pages >= 3)) || die "only $pages catalog pages for 7 repositories at n=3"
}

# The server is still up and logged no error or warning (a 5xx a client retried past, a blob
# missing from storage, a panic) during the whole run.
check_server_healthy() {
    kill -0 "$SERVER_PID" 2>/dev/null || die "berth serve is no longer running"
    curl -fsS -o /dev/null "http://$REGISTRY/v2/" || die "GET /v2/ failed at the end of the run"
    # The one warning expected: this server runs with access control off (--auth-mode open),
    # which berth announces at startup.
    log_clean "$WORK/server.log" "auth.mode = open"
}

# log_clean LOG [EXPECTED_PREFIX]: no ERROR or WARN record (but one whose message starts with
# EXPECTED_PREFIX), no line that is not a JSON log record (a panic message, say).
log_clean() {
    local bad
    bad=$(jq -R -c --arg ok "${2:-}" '(fromjson? // {level: "NOT-JSON", line: .})
        | select(.level == "ERROR" or .level == "WARN" or .level == "NOT-JSON")
        | select($ok == "" or ((.message // "") | startswith($ok) | not))' "$1" | head -5)
    if grep -q 'panicked' "$1"; then
        bad+=$'\n'$(grep -m3 'panicked' "$1")
    fi
    [[ -z "$bad" ]] || {
        echo "$bad"
        die "the server log has errors or warnings: $(head -1 <<<"$bad" | cut -c1-300)"
    }
}

# ---------------------------------------------------------------------------------------------
# 7. Token mode (access control on): a second server, accounts made with `berth admin`
# ---------------------------------------------------------------------------------------------

# badm ARGS...: the management CLI as the administrator (credentials from the environment,
# as the README shows); fails the check if it exits non-zero.
badm() {
    env -u BERTH_CONFIG -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
        BERTH_URL="http://$TREG" BERTH_USERNAME=admin BERTH_PASSWORD="$ADMIN_PASS" \
        "$BIN" admin "$@" || die "berth admin $* exited $?"
}

# secret ROBOT_SHORT_NAME: the secret `berth admin robots create` printed for it.
secret() {
    [[ -s "$TW/$1.secret" ]] || die "no secret recorded for robot $1 (did token-admin-cli fail?)"
    cat "$TW/$1.secret"
}

# t_code CREDS METHOD PATH: the HTTP status of a request to the token-mode server with basic
# credentials (CREDS empty: none).
t_code() {
    local auth=()
    [[ -z "$1" ]] || auth=(-u "$1")
    curl -sS "${auth[@]}" -o /dev/null -w '%{http_code}' -X "$2" -H "Accept: $ACCEPT_ALL" "http://$TREG$3"
}

# t_manifest CREDS REPO REF OUTPREFIX: http_manifest against the token-mode server, with basic
# credentials.
t_manifest() {
    local code
    code=$(curl -sS -u "$1" -H "Accept: $ACCEPT_ALL" -D "$4.headers" -o "$4.body" -w '%{http_code}' \
        "http://$TREG/v2/$2/manifests/$3")
    [[ "$code" == 200 ]] || die "GET /v2/$2/manifests/$3 as ${1%%:*} answered $code: $(head -c 300 "$4.body")"
}

# must_fail WHAT PATTERN COMMAND...: the command must exit non-zero, and what it printed must
# match PATTERN (grep -E, case-insensitive): refused, and refused for the reason expected, not
# for a typo or a network error.
must_fail() {
    local what=$1 pattern=$2 out rc=0
    shift 2
    out=$(mktemp "$TW/refused.XXXXXX")
    "$@" >"$out" 2>&1 || rc=$?
    if ((rc == 0)); then
        tail -5 "$out"
        die "$what: succeeded, want a refusal"
    fi
    grep -Eqi -- "$pattern" "$out" || {
        tail -5 "$out"
        die "$what: exited $rc, but not with /$pattern/: $(tail -1 "$out" | cut -c1-300)"
    }
    echo "refused as expected: $what (exit $rc): $(grep -Ei -m1 -- "$pattern" "$out" | cut -c1-300)"
}

# Refusals of an identity that is known but lacks the permission, and of no or bad identity.
DENIED='denied|not granted|unauthorized|authentication required'
BAD_LOGIN='invalid username/password|invalid user name or password|unauthorized'

# authfile_user FILE: the user name stored for the token-mode server in an auth file ("" if
# none).
authfile_user() {
    [[ -f "$1" ]] || return 0
    jq -r --arg h "$TREG" '.auths[$h].auth // empty' "$1" | base64 -d | cut -d: -f1
}

# skopeo and buildah without the `die` of sko and bah, for commands that must fail.
skopeo_raw() { skopeo --policy "$WORK/policy.json" "$@"; }
buildah_raw() { buildah --storage-driver vfs --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" "$@"; }

check_token_challenge() {
    local code www
    code=$(curl -sS -o "$TW/v2.body" -D "$TW/v2.headers" -w '%{http_code}' "http://$TREG/v2/")
    expect_eq "$code" 401 "anonymous GET /v2/ (the server must be in token mode)"
    www=$(header "$TW/v2.headers" www-authenticate)
    [[ "$www" == "Bearer realm=\"http://$TREG/service/token\",service=\"berth\""* ]] ||
        die "WWW-Authenticate of /v2/: '$www'"
    code=$(curl -sS -o /dev/null -D "$TW/tags.headers" -w '%{http_code}' "http://$TREG/v2/$TREPO_SKOPEO/tags/list")
    expect_eq "$code" 401 "anonymous GET tags/list"
    www=$(header "$TW/tags.headers" www-authenticate)
    [[ "$www" == *"scope=\"repository:$TREPO_SKOPEO:pull\""* ]] || die "WWW-Authenticate of tags/list: '$www'"
    # The administrator has the password given in BERTH_ADMIN_PASSWORD, and no other.
    expect_eq "$(t_code "admin:$ADMIN_PASS" GET /v2/)" 200 "GET /v2/ as admin"
    expect_eq "$(t_code "admin:$ADMIN_PASS-not" GET /v2/)" 401 "GET /v2/ as admin with a wrong password"
    must_fail "berth admin with a wrong password" "401|invalid user name or password" \
        env -u BERTH_CONFIG -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$BIN" admin --url "http://$TREG" \
        --username admin --password "$ADMIN_PASS-not" projects list
}

check_token_admin_cli() {
    badm projects create "$PROJECT" >/dev/null
    badm projects show "$PROJECT" --output json >"$TW/project.json"
    expect_eq "$(jq -r .name "$TW/project.json")" "$PROJECT" "project name"
    expect_eq "$(jq -r .metadata.public "$TW/project.json")" false "a new project is private"
    badm users create "$DEV_USER" --new-password "$DEV_PASS" --email "$DEV_USER@example.com" >/dev/null
    badm users create "$GUEST_USER" --new-password "$GUEST_PASS" >/dev/null
    badm members add "$PROJECT" --user "$DEV_USER" --role developer >/dev/null
    badm members add "$PROJECT" --user "$GUEST_USER" --role guest >/dev/null
    expect_eq "$(badm members list "$PROJECT" --output json |
        jq -c '[.[] | "\(.entity_name)=\(.role_name)"] | sort')" \
        "[\"admin=projectAdmin\",\"$DEV_USER=developer\",\"$GUEST_USER=guest\"]" "members of $PROJECT"
    local short full access
    for short in ci-push ci-pull; do
        full="robot\$$PROJECT+$short"
        access=repository:pull
        [[ $short == ci-push ]] && access=repository:pull,repository:push
        badm robots create "$short" --project "$PROJECT" --access "$access" --output json >"$TW/$short.json"
        expect_eq "$(jq -r .name "$TW/$short.json")" "$full" "name of the new robot"
        jq -er '.secret | select(length >= 16)' "$TW/$short.json" >"$TW/$short.secret" ||
            die "no secret in $(jq -c 'del(.secret)' "$TW/$short.json")"
    done
    expect_eq "$PUSH_ROBOT $PULL_ROBOT" "robot\$$PROJECT+ci-push robot\$$PROJECT+ci-pull" "robot names used below"
    expect_eq "$(badm robots list --project "$PROJECT" --output json | jq -c '[.[].name] | sort')" \
        "[\"$PULL_ROBOT\",\"$PUSH_ROBOT\"]" "robots of $PROJECT"
    # The new accounts can sign in to the token service (GET with basic credentials).
    local who
    for who in "$DEV_USER:$DEV_PASS" "$GUEST_USER:$GUEST_PASS" "$PUSH_ROBOT:$(secret ci-push)"; do
        curl -fsS -u "$who" "http://$TREG/service/token?service=berth&scope=repository:$TREPO_SKOPEO:pull" |
            jq -e '.token | split(".") | length == 3' >/dev/null || die "no token for ${who%%:*}"
    done
}

check_token_skopeo_push_developer() {
    random_dir "$TW/src" tok 300
    make_image "$TW/layout" v1 amd64 "$TW/src"
    local want
    want=$(layout_ref "$TW/layout" v1)
    echo "$want" >"$TW/app.digest"
    sko copy -q --dest-tls-verify=false --dest-creds "$DEV_USER:$DEV_PASS" \
        "oci:$TW/layout:v1" "docker://$TREG/$TREPO_SKOPEO:v1"
    t_manifest "$DEV_USER:$DEV_PASS" "$TREPO_SKOPEO" v1 "$TW/m"
    expect_eq "$(header "$TW/m.headers" docker-content-digest)" "$want" "registry digest of the developer's push"
    cmp -s "$TW/m.body" "$(layout_blob "$TW/layout" "$want")" || die "served manifest differs from the pushed one"
}

# Quotas and tag immutability as real clients meet them: skopeo's push past the project's
# storage quota (set with `berth admin quota`) is refused naming the quota, and goes through
# once the limit is lifted; a push that would move an immutable tag is refused.
check_token_quota_and_immutability() {
    local used
    badm quota show "$PROJECT" --output json >"$TW/quota.json"
    used=$(jq -er '.used.storage' "$TW/quota.json")
    ((used > 0)) || die "usage of $PROJECT after the developer's push: $used"
    badm quota set "$PROJECT" --storage "$used" >/dev/null
    expect_eq "$(badm quota show "$PROJECT" --output json | jq -r .hard.storage)" "$used" "storage limit set"
    random_dir "$TW/qsrc" quota 200
    make_image "$TW/qlayout" v1 amd64 "$TW/qsrc"
    must_fail "push past the storage quota" "quota" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-creds "$DEV_USER:$DEV_PASS" "oci:$TW/qlayout:v1" "docker://$TREG/$PROJECT/quota:v1"
    expect_eq "$(t_code "$DEV_USER:$DEV_PASS" GET "/v2/$PROJECT/quota/manifests/v1")" 404 \
        "the manifest refused for the quota"
    badm quota set "$PROJECT" --storage unlimited >/dev/null
    sko copy -q --dest-tls-verify=false --dest-creds "$DEV_USER:$DEV_PASS" \
        "oci:$TW/qlayout:v1" "docker://$TREG/$PROJECT/quota:v1"
    curl -fsS -u "admin:$ADMIN_PASS" -H 'content-type: application/json' \
        -d '{"tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"v*"}],
             "scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"quota"}]}}' \
        "http://$TREG/api/v2.0/projects/$PROJECT/immutabletagrules" >/dev/null
    must_fail "push moving an immutable tag" "immutable" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-creds "$DEV_USER:$DEV_PASS" "oci:$TW/layout:v1" "docker://$TREG/$PROJECT/quota:v1"
    expect_eq "$(t_code "$DEV_USER:$DEV_PASS" GET "/v2/$PROJECT/quota/manifests/v1")" 200 \
        "the immutable tag after the refused push"
}

check_token_skopeo_pull_guest() {
    local want d
    want=$(cat "$TW/app.digest")
    sko copy -q --src-tls-verify=false --src-creds "$GUEST_USER:$GUEST_PASS" \
        "docker://$TREG/$TREPO_SKOPEO:v1" "oci:$TW/guest-out:v1"
    expect_eq "$(layout_ref "$TW/guest-out" v1)" "$want" "digest of the manifest the guest pulled"
    for d in $(jq -e -r '(.layers[], .config).digest' "$(layout_blob "$TW/guest-out" "$want")"); do
        cmp -s "$(layout_blob "$TW/guest-out" "$d")" "$(layout_blob "$TW/layout" "$d")" ||
            die "blob $d the guest pulled differs from the pushed one"
    done
    umoci unpack --image "$TW/guest-out:v1" "$TW/guest-bundle" >/dev/null
    cmp "$TW/src/tok.bin" "$TW/guest-bundle/rootfs/tok.bin" || die "tok.bin differs in the guest's pull"
    cmp "$TW/src/tok.txt" "$TW/guest-bundle/rootfs/tok.txt" || die "tok.txt differs in the guest's pull"
}

check_token_skopeo_guest_push_refused() {
    must_fail "guest push to an existing repository" "$DENIED" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-creds "$GUEST_USER:$GUEST_PASS" "oci:$TW/layout:v1" "docker://$TREG/$TREPO_SKOPEO:guest"
    must_fail "guest push to a new repository" "$DENIED" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-creds "$GUEST_USER:$GUEST_PASS" "oci:$TW/layout:v1" "docker://$TREG/$PROJECT/guest/new:v1"
    expect_eq "$(t_code "$DEV_USER:$DEV_PASS" GET "/v2/$TREPO_SKOPEO/manifests/guest")" 404 \
        "the tag the guest tried to push"
    expect_eq "$(sko list-tags --tls-verify=false --creds "$GUEST_USER:$GUEST_PASS" \
        "docker://$TREG/$TREPO_SKOPEO" | jq -c .Tags)" '["v1"]' "tags after the guest's refused push"
}

check_token_skopeo_anonymous_refused() {
    must_fail "anonymous inspect of a private image" "$DENIED" skopeo_raw inspect --tls-verify=false --no-creds \
        "docker://$TREG/$TREPO_SKOPEO:v1"
    must_fail "anonymous pull of a private image" "$DENIED" skopeo_raw copy -q --src-tls-verify=false \
        --src-no-creds "docker://$TREG/$TREPO_SKOPEO:v1" "oci:$TW/anon-out:v1"
    [[ ! -e "$TW/anon-out/index.json" ]] || ! jq -e '.manifests | length > 0' "$TW/anon-out/index.json" >/dev/null ||
        die "the refused anonymous pull left an image in the layout"
    # The token service gives an anonymous caller a token, but it grants nothing here.
    local tok code
    tok=$(curl -fsS "http://$TREG/service/token?service=berth&scope=repository:$TREPO_SKOPEO:pull" | jq -er .token)
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" -H "Accept: $ACCEPT_ALL" \
        "http://$TREG/v2/$TREPO_SKOPEO/manifests/v1")
    expect_eq "$code" 401 "GET of the private manifest with an anonymous token"
    expect_eq "$(t_code "" GET "/v2/$TREPO_SKOPEO/manifests/v1")" 401 "GET of the private manifest without credentials"
}

check_token_skopeo_wrong_password() {
    must_fail "inspect with a wrong password" "$BAD_LOGIN" skopeo_raw inspect --tls-verify=false \
        --creds "$DEV_USER:$DEV_PASS-wrong" "docker://$TREG/$TREPO_SKOPEO:v1"
    must_fail "push with a wrong password" "$BAD_LOGIN" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-creds "$DEV_USER:$DEV_PASS-wrong" "oci:$TW/layout:v1" "docker://$TREG/$TREPO_SKOPEO:wrong"
    must_fail "inspect with a wrong robot secret" "$BAD_LOGIN" skopeo_raw inspect --tls-verify=false \
        --creds "$PULL_ROBOT:$(secret ci-pull)x" "docker://$TREG/$TREPO_SKOPEO:v1"
    must_fail "skopeo login with a wrong password" "$BAD_LOGIN" skopeo_raw login --authfile "$TW/wrong-auth.json" \
        --tls-verify=false -u "$DEV_USER" --password-stdin "$TREG" <<<"$DEV_PASS-wrong"
    expect_eq "$(authfile_user "$TW/wrong-auth.json")" "" "user stored by the refused login"
    expect_eq "$(t_code "$DEV_USER:$DEV_PASS" GET "/v2/$TREPO_SKOPEO/manifests/wrong")" 404 \
        "the tag pushed with a wrong password"
}

check_token_skopeo_login_authfile() {
    local a=$TW/skopeo-auth.json want
    want=$(cat "$TW/app.digest")
    sko login --authfile "$a" --tls-verify=false -u "$GUEST_USER" --password-stdin "$TREG" <<<"$GUEST_PASS"
    expect_eq "$(authfile_user "$a")" "$GUEST_USER" "user in the authfile after skopeo login"
    expect_eq "$(sko inspect --authfile "$a" --tls-verify=false --format '{{.Digest}}' \
        "docker://$TREG/$TREPO_SKOPEO:v1")" "$want" "digest seen through the authfile login"
    expect_eq "$(sko list-tags --authfile "$a" --tls-verify=false "docker://$TREG/$TREPO_SKOPEO" | jq -c .Tags)" \
        '["v1"]' "tags seen through the authfile login"
    must_fail "guest push through the authfile login" "$DENIED" skopeo_raw copy -q --dest-tls-verify=false \
        --dest-authfile "$a" "oci:$TW/layout:v1" "docker://$TREG/$TREPO_SKOPEO:guest2"
    sko logout --authfile "$a" "$TREG"
    expect_eq "$(authfile_user "$a")" "" "user in the authfile after skopeo logout"
    must_fail "inspect after skopeo logout" "$DENIED" skopeo_raw inspect --authfile "$a" --tls-verify=false \
        "docker://$TREG/$TREPO_SKOPEO:v1"
}

# buildah login/logout with an authfile of its own; push and pull as the developer.
check_token_buildah_login_wrong() {
    must_fail "buildah login with a wrong password" "$BAD_LOGIN" buildah_raw login --authfile "$TW/bah-dev.json" \
        --tls-verify=false -u "$DEV_USER" --password-stdin "$TREG" <<<"$DEV_PASS-wrong"
    expect_eq "$(authfile_user "$TW/bah-dev.json")" "" "user stored by the refused buildah login"
}

check_token_buildah_push_developer() {
    local a=$TW/bah-dev.json c
    bah login --authfile "$a" --tls-verify=false -u "$DEV_USER" --password-stdin "$TREG" <<<"$DEV_PASS"
    expect_eq "$(bah login --authfile "$a" --get-login "$TREG")" "$DEV_USER" "buildah login --get-login"
    echo "token-mode hello $RANDOM$RANDOM" >"$TW/hello.txt"
    head -c 65536 /dev/urandom >"$TW/noise.bin"
    c=$(bah from --name berth-token scratch)
    bah copy "$c" "$TW/hello.txt" /hello.txt
    bah copy "$c" "$TW/noise.bin" /noise.bin
    bah commit -q "$c" localhost/berth-token:latest >/dev/null
    bah rm "$c" >/dev/null
    bah push -q --retry 0 --authfile "$a" --tls-verify=false --digestfile "$TW/bah.digest" \
        localhost/berth-token:latest "docker://$TREG/$TREPO_BUILDAH:v1"
    t_manifest "$DEV_USER:$DEV_PASS" "$TREPO_BUILDAH" v1 "$TW/bm"
    expect_eq "$(header "$TW/bm.headers" docker-content-digest)" "$(cat "$TW/bah.digest")" \
        "registry digest vs buildah --digestfile"
    expect_eq "$(sha256_of "$TW/bm.body")" "$(cat "$TW/bah.digest")" "digest of the served bytes"
}

# pull_and_compare AUTHFILE REF NAME FILE...: rmi everything, pull REF with the authfile, and
# compare each FILE with /basename(FILE) in the pulled image.
pull_and_compare() {
    local a=$1 ref=$2 name=$3 f c mnt
    shift 3
    bah rmi -a -f >/dev/null
    [[ -z "$(bah images -q)" ]] || die "local images remain after rmi"
    bah pull -q --retry 0 --authfile "$a" --tls-verify=false "docker://$ref" >/dev/null
    c=$(bah from --pull=never --name "$name" "$ref")
    mnt=$(bah mount "$c")
    for f in "$@"; do
        cmp "$f" "$mnt/$(basename "$f")" || die "$(basename "$f") differs in the image pulled from $ref"
    done
    bah umount "$c" >/dev/null
    bah rm "$c" >/dev/null
}

check_token_buildah_pull_developer() {
    pull_and_compare "$TW/bah-dev.json" "$TREG/$TREPO_BUILDAH:v1" berth-token-pulled "$TW/hello.txt" "$TW/noise.bin"
}

check_token_buildah_logout() {
    local a=$TW/bah-dev.json
    bah logout --authfile "$a" "$TREG" >/dev/null
    expect_eq "$(authfile_user "$a")" "" "user in the authfile after buildah logout"
    must_fail "buildah login --get-login after logout" "not logged in" \
        buildah_raw login --authfile "$a" --get-login "$TREG"
    bah rmi -a -f >/dev/null
    must_fail "buildah pull after logout" "$DENIED" buildah_raw pull -q --retry 0 --authfile "$a" --tls-verify=false \
        "docker://$TREG/$TREPO_BUILDAH:v1"
}

check_token_buildah_push_robot() {
    local a=$TW/bah-robot.json c
    bah login --authfile "$a" --tls-verify=false -u "$PUSH_ROBOT" --password-stdin "$TREG" <<<"$(secret ci-push)"
    expect_eq "$(bah login --authfile "$a" --get-login "$TREG")" "$PUSH_ROBOT" "buildah login --get-login"
    echo "built for the push robot $RANDOM$RANDOM" >"$TW/robot.txt"
    c=$(bah from --name berth-robot scratch)
    bah copy "$c" "$TW/robot.txt" /robot.txt
    bah commit -q "$c" localhost/berth-robot:latest >/dev/null
    bah rm "$c" >/dev/null
    bah push -q --retry 0 --authfile "$a" --tls-verify=false --digestfile "$TW/robot.digest" \
        localhost/berth-robot:latest "docker://$TREG/$TREPO_ROBOT:v1"
    t_manifest "$PUSH_ROBOT:$(secret ci-push)" "$TREPO_ROBOT" v1 "$TW/rm"
    expect_eq "$(header "$TW/rm.headers" docker-content-digest)" "$(cat "$TW/robot.digest")" \
        "registry digest vs buildah --digestfile"
    pull_and_compare "$a" "$TREG/$TREPO_ROBOT:v1" berth-robot-pulled "$TW/robot.txt"
    bah logout --authfile "$a" "$TREG" >/dev/null
    expect_eq "$(authfile_user "$a")" "" "robot in the authfile after buildah logout"
}

check_token_buildah_pull_robot() {
    local a=$TW/bah-puller.json
    bah login --authfile "$a" --tls-verify=false -u "$PULL_ROBOT" --password-stdin "$TREG" <<<"$(secret ci-pull)"
    pull_and_compare "$a" "$TREG/$TREPO_ROBOT:v1" berth-puller-pulled "$TW/robot.txt"
    must_fail "pull-only robot push with buildah" "$DENIED" buildah_raw push -q --retry 0 --authfile "$a" \
        --tls-verify=false "$TREG/$TREPO_ROBOT:v1" "docker://$TREG/$TREPO_ROBOT:puller"
    expect_eq "$(t_code "$PUSH_ROBOT:$(secret ci-push)" GET "/v2/$TREPO_ROBOT/manifests/puller")" 404 \
        "the tag the pull-only robot tried to push"
    bah logout --authfile "$a" "$TREG" >/dev/null
}

# The oras checks print their own lines; the robots' secrets go in the environment.
run_token_oras() {
    ORAS_PUSH_SECRET=$(cat "$TW/ci-push.secret") ORAS_PULL_SECRET=$(cat "$TW/ci-pull.secret") \
        HOME="$WORK/home" python3 "$SCRIPT_DIR/clients/oras_token.py" --registry "$TREG" \
        --workdir "$TW/oras" --repo "$TREPO_ORAS" --push-robot "$PUSH_ROBOT" --pull-robot "$PULL_ROBOT"
}

check_token_catalog() {
    local want got
    want=$(printf '%s\n' "$TREPO_SKOPEO" "$TREPO_BUILDAH" "$TREPO_ROBOT" "$TREPO_ORAS" "$PROJECT/quota" |
        LC_ALL=C sort |
        jq -Rsc 'split("\n") | map(select(. != ""))')
    got=$(curl -fsS -u "admin:$ADMIN_PASS" "http://$TREG/v2/_catalog" | jq -c '.repositories')
    expect_eq "$got" "$want" "catalog: what was pushed, nothing the refused pushes would have made"
    got=$(badm projects show "$PROJECT" --output json | jq -r .repo_count)
    expect_eq "$got" 5 "repo_count of $PROJECT"
}

# The audit log, read with the CLI: who pushed what, and the refused logins.
check_token_audit() {
    local who ref
    for who in "$DEV_USER $TREPO_SKOPEO:v1" "$DEV_USER $TREPO_BUILDAH:v1" "$PUSH_ROBOT $TREPO_ROBOT:v1" \
        "$PUSH_ROBOT $TREPO_ORAS:v1"; do
        read -r who ref <<<"$who"
        badm logs list --user "$who" --operation push --page-size 100 --output json >"$TW/audit.json"
        jq -e --arg u "$who" --arg r "$ref" 'any(.[]; .username == $u and .resource == $r and .success)' \
            "$TW/audit.json" >/dev/null ||
            die "no audit record of $who pushing $ref: $(jq -c '[.[] | {username, operation, resource}]' "$TW/audit.json" | cut -c1-400)"
    done
    # Unfiltered, the administrator sees everyone's events (BERTH_USERNAME, who signs in, is no
    # filter).
    badm logs list --page-size 100 --output json >"$TW/audit-all.json"
    for who in admin "$DEV_USER" "$GUEST_USER" "$PUSH_ROBOT" "$PULL_ROBOT"; do
        jq -e --arg u "$who" 'any(.[]; .username == $u)' "$TW/audit-all.json" >/dev/null ||
            die "no event of $who in the unfiltered audit log: $(jq -c '[.[].username] | unique' "$TW/audit-all.json")"
    done
    badm logs list --operation login --page-size 100 --output json >"$TW/audit-login.json"
    jq -e --arg u "$DEV_USER" 'any(.[]; .resource == $u and (.success | not))' "$TW/audit-login.json" >/dev/null ||
        die "no failed login of $DEV_USER in the audit log"
}

# The token-mode server is still up and logged no error or warning: refused logins and pushes
# are answers, not faults.
check_token_server_healthy() {
    kill -0 "$TOKEN_PID" 2>/dev/null || die "the token-mode berth serve is no longer running"
    expect_eq "$(t_code "admin:$ADMIN_PASS" GET /v2/)" 200 "GET /v2/ as admin at the end of the run"
    log_clean "$WORK/server-token.log"
}

# ---------------------------------------------------------------------------------------------

main() {
    [[ $EUID -eq 0 ]] || {
        echo "run as root (apt-get, buildah with vfs storage)" >&2
        exit 2
    }
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-clients.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    install_tools
    find_binary
    isolate_clients
    start_server "$BIN"
    S1=$WORK/s1 S2=$WORK/s2 S4=$WORK/s4 S6=$WORK/s6

    run_check skopeo-push-oci-layout check_skopeo_push
    run_check skopeo-inspect-tag check_skopeo_inspect
    run_check skopeo-list-tags check_skopeo_list_tags
    run_check skopeo-pull-oci-layout check_skopeo_pull_oci
    run_check skopeo-pull-dir check_skopeo_pull_dir

    run_check skopeo-multiarch-push-all check_multiarch_push
    run_check skopeo-multiarch-pull-all check_multiarch_pull
    run_check skopeo-multiarch-platform-select check_multiarch_platform

    run_check skopeo-cross-repo-copy check_cross_repo_copy
    run_check skopeo-cross-repo-blobs check_cross_repo_blobs
    run_check skopeo-cross-repo-mount check_cross_repo_mount

    run_check buildah-push-oci check_buildah_push
    run_check buildah-pull-verify check_buildah_pull
    run_check buildah-push-docker-format check_buildah_docker_format
    run_check buildah-manifest-list-docker check_buildah_manifest_list

    mkdir -p "$WORK/oras"
    run_reporting oras python3 "$SCRIPT_DIR/clients/oras_artifacts.py" \
        --registry "$REGISTRY" --workdir "$WORK/oras" --repo "$REPO_ORAS"

    run_check big-layer-push check_big_push
    run_check big-layer-pull-identical check_big_pull

    run_check skopeo-delete-tag check_skopeo_delete
    run_check catalog-exact check_catalog
    run_check server-healthy check_server_healthy

    # Token mode: a second server with access control on (the default).
    ADMIN_PASS="Admin-$RANDOM$RANDOM-Pw1"
    DEV_PASS="Dev-$RANDOM$RANDOM-Pw1"
    GUEST_PASS="Guest-$RANDOM$RANDOM-Pw1"
    TW=$WORK/token
    mkdir -p "$TW/oras"
    start_token_server "$BIN"
    run_check token-challenge check_token_challenge
    run_check token-admin-cli check_token_admin_cli
    run_check token-skopeo-push-developer check_token_skopeo_push_developer
    run_check token-skopeo-pull-guest check_token_skopeo_pull_guest
    run_check token-quota-and-immutability check_token_quota_and_immutability
    run_check token-skopeo-guest-push-refused check_token_skopeo_guest_push_refused
    run_check token-skopeo-anonymous-refused check_token_skopeo_anonymous_refused
    run_check token-skopeo-wrong-password-refused check_token_skopeo_wrong_password
    run_check token-skopeo-login-logout check_token_skopeo_login_authfile
    run_check token-buildah-login-wrong-password check_token_buildah_login_wrong
    run_check token-buildah-login-push-developer check_token_buildah_push_developer
    run_check token-buildah-pull-developer check_token_buildah_pull_developer
    run_check token-buildah-logout check_token_buildah_logout
    run_check token-buildah-push-robot check_token_buildah_push_robot
    run_check token-buildah-pull-only-robot check_token_buildah_pull_robot
    run_reporting token-oras run_token_oras
    run_check token-catalog-exact check_token_catalog
    run_check token-audit-log check_token_audit
    run_check token-server-healthy check_token_server_healthy

    [[ "${KEEP_WORK:-}" != 1 ]] || note "kept $WORK"
    note "took $((SECONDS - START_TIME))s"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
