#!/usr/bin/env bash
# Run every test Berth has: unit and integration tests (cargo) on the embedded default, the
# PostgreSQL and S3 backends' testsuites, then the whole integration suite again over a real
# PostgreSQL and a real S3-compatible server (both started here, on loopback) with the
# multi-instance and fault tests, a 60 s load test through two instances, then the real-client tests
# (skopeo, buildah, umoci, oras; open mode, and token mode with users and robots) and a
# schemathesis run against the management API's OpenAPI document. Installs what it needs
# on a Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc)
command -v curl >/dev/null || need+=(curl)
# The integration tests edit a server's SQLite database directly in one place.
command -v sqlite3 >/dev/null || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL (Debian's package) and s3s-fs (built from crates.io the first time) on loopback.
eval "$(bash scripts/pg-start.sh)"
eval "$(bash scripts/s3-start.sh)"
trap 'bash scripts/s3-stop.sh || true; bash scripts/pg-stop.sh || true' EXIT
# A backend test that finds no server fails instead of skipping.
export BERTH_REQUIRE_BACKENDS=1
# The per-test databases on the cluster now (a reused development cluster may hold some from
# runs before the tests cleaned up after themselves), to check afterwards that none was added.
test_databases() {
  psql "$BERTH_TEST_DATABASE_URL" -X -A -t -c \
    "SELECT datname FROM pg_database WHERE datname ~ '^berth_(it|api|test)_' ORDER BY 1" | LC_ALL=C sort
}
databases_before=$(test_databases)

cargo build --workspace --all-targets
cargo test --workspace
# The whole service-level suite again, every server now on PostgreSQL + S3 (a fresh database
# and key prefix per server), plus the multi-instance tests that only run in this mode.
BERTH_TEST_BACKEND=fleet cargo test -p berth --test it
# The management API's handler tests again on PostgreSQL (a fresh database per test).
BERTH_TEST_BACKEND=fleet cargo test -p berth-server --test it
# Every test drops the databases it made, even when it fails: none may be left behind.
leaked=$(test_databases | LC_ALL=C comm -13 <(printf '%s\n' "$databases_before") -)
if [ -n "$leaked" ]; then
  echo "the tests left databases behind:" $leaked >&2
  exit 1
fi
# 200 clients push and pull small images through two instances over PostgreSQL + S3 for 60 s;
# fails on any error or any image that does not verify afterwards through both instances.
bash scripts/load.sh --fleet --skip-build --clients 200 --seconds 60
# The management API fuzzed from its OpenAPI document (schemathesis): no answer may be a 5xx,
# on SQLite and on PostgreSQL.
BERTH_BIN="$PWD/target/debug/berth" bash scripts/test-api.sh
psql "$BERTH_TEST_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS berth_api" \
  -c "CREATE DATABASE berth_api"
BERTH_SERVE_ARGS="--metadata-url ${BERTH_TEST_DATABASE_URL%/*}/berth_api" \
  BERTH_BIN="$PWD/target/debug/berth" bash scripts/test-api.sh
BERTH_BIN="$PWD/target/debug/berth" bash scripts/test-clients.sh
# The same real-client checks with the servers on PostgreSQL + S3, blob GETs redirected to
# presigned S3 URLs (so the clients follow the redirects); the token-mode server has a
# database and key prefix of its own.
psql "$BERTH_TEST_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS berth_clients" \
  -c "CREATE DATABASE berth_clients" -c "DROP DATABASE IF EXISTS berth_clients_token" \
  -c "CREATE DATABASE berth_clients_token"
BERTH_SERVE_ARGS="--metadata-url ${BERTH_TEST_DATABASE_URL%/*}/berth_clients \
--s3-endpoint $BERTH_TEST_S3_ENDPOINT --s3-bucket $BERTH_TEST_S3_BUCKET --s3-prefix clients$$/ \
--redirect true" \
BERTH_TOKEN_SERVE_ARGS="--metadata-url ${BERTH_TEST_DATABASE_URL%/*}/berth_clients_token \
--s3-endpoint $BERTH_TEST_S3_ENDPOINT --s3-bucket $BERTH_TEST_S3_BUCKET --s3-prefix clients-token$$/ \
--redirect true" \
  BERTH_BIN="$PWD/target/debug/berth" bash scripts/test-clients.sh
