#!/usr/bin/env bash
# Run every test Berth has: unit and integration tests (cargo), then the real-client tests
# (skopeo, buildah, umoci, oras). Installs what it needs on a Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --workspace --all-targets
cargo test --workspace
BERTH_BIN="$PWD/target/debug/berth" bash scripts/test-clients.sh
