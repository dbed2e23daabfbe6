#!/usr/bin/env bash
# Fuzz the management API from its own OpenAPI document with schemathesis (PyPI): every
# operation the document describes, with generated valid and invalid input, as the system
# administrator and anonymously. Fails on any 5xx answer (check `not_a_server_error`).
#
# Usage: scripts/test-api.sh            (builds the debug binary)
#        BERTH_BIN=path scripts/test-api.sh
# Env: BERTH_API_EXAMPLES (cases per operation, default 25), BERTH_SERVE_ARGS (extra args for
#      `berth serve`, e.g. a PostgreSQL --metadata-url).
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${BERTH_API_EXAMPLES:-25}
work=$(mktemp -d /tmp/berth-api.XXXXXX)
venv=${BERTH_VENV:-/tmp/berth-venv-schemathesis}
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# venv needs ensurepip, which Debian ships in python3-venv.
if ! command -v curl >/dev/null || ! command -v python3 >/dev/null \
  || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl python3 python3-venv >/dev/null
fi
if [ ! -x "$venv/bin/schemathesis" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

if [ -z "${BERTH_BIN:-}" ]; then
  cargo build -q -p berth
  BERTH_BIN=$PWD/target/debug/berth
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
password='Api-Fuzz-Admin-1'
# shellcheck disable=SC2086 # BERTH_SERVE_ARGS is a list of arguments
BERTH_ADMIN_PASSWORD=$password "$BERTH_BIN" serve --listen "127.0.0.1:$port" \
  --data-dir "$work/data" ${BERTH_SERVE_ARGS:-} >"$work/berth.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null

# Something to find: a project with a member, a robot and an image.
api() { curl -fsS -u "admin:$password" -H 'content-type: application/json' "$@"; }
api -X POST "$base/api/v2.0/projects" -d '{"project_name":"fuzz","metadata":{"public":"true"}}'
api -X POST "$base/api/v2.0/users" \
  -d '{"username":"fuzzer","password":"Fuzz-User-Pass-1","email":"fuzzer@example.com","realname":"F"}'
api -X POST "$base/api/v2.0/projects/fuzz/members" -d '{"role_id":2,"member_user":{"username":"fuzzer"}}'
api -X POST "$base/api/v2.0/robots" -o /dev/null -d '{"name":"fuzzbot","level":"project","duration":-1,
  "permissions":[{"kind":"project","namespace":"fuzz","access":[{"resource":"repository","action":"pull"}]}]}'
config='{"architecture":"amd64","os":"linux"}'
cdigest=sha256:$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
curl -fsS -u "admin:$password" -X POST -H 'content-type: application/octet-stream' \
  --data-binary "$config" "$base/v2/fuzz/app/blobs/uploads/?digest=$cdigest"
manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'$cdigest'","size":'${#config}'},"layers":[]}'
curl -fsS -u "admin:$password" -X PUT -H 'content-type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "$manifest" "$base/v2/fuzz/app/manifests/v1"
# A retention policy with a run behind it, so that its runs and tasks have something to show.
fuzz_id=$(api "$base/api/v2.0/projects/fuzz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["project_id"])')
policy=$(api -o /dev/null -D - -X POST "$base/api/v2.0/retentions" -d '{"rules":[{"template":
  "latestPushedK","params":{"latestPushedK":5},"tag_selectors":[{"decoration":"matches",
  "pattern":"**"}]}],"scope":{"level":"project","ref":'"$fuzz_id"'}}' \
  | tr -d '\r' | sed -n 's/^location: //Ip')
api -X POST "$base$policy/executions" -d '{"dry_run":true}'

run() {
  # From the scratch directory: schemathesis keeps state in ./.schemathesis.
  (cd "$work" && "$venv/bin/schemathesis" run "$base/api/v2.0/openapi.json" --url "$base" \
    --checks not_a_server_error --max-examples "$examples" \
    --generation-deterministic --suppress-health-check filter_too_much,too_slow \
    --no-color --warnings off "$@")
}
status=0
echo "test-api: as the administrator" >&2
# A session rather than basic auth: one argon2 check instead of one per request. The
# administrator's own password and role are left alone so that the run keeps its session.
headers=$(curl -fsS -o /dev/null -D - -X POST "$base/c/login" \
  --data-urlencode principal=admin --data-urlencode "password=$password" | tr -d '\r')
cookie=$(sed -n 's/^set-cookie: \([^;]*\).*/\1/Ip' <<<"$headers")
csrf=$(sed -n 's/^x-harbor-csrf-token: //Ip' <<<"$headers")
[ -n "$cookie" ] && [ -n "$csrf" ] || { echo "test-api: no session from /c/login" >&2; exit 1; }
curl -fsS -H "Cookie: $cookie" "$base/api/v2.0/users/current" | grep -q '"username":"admin"' \
  || { echo "test-api: the session does not work" >&2; exit 1; }
run -H "Cookie: $cookie" -H "X-Harbor-CSRF-Token: $csrf" \
  --exclude-path-regex '/users/\{user_id\}/(password|sysadmin)' || status=1
# Still signed in: otherwise the run above may have met nothing but 401s.
curl -fsS -H "Cookie: $cookie" "$base/api/v2.0/users/current" | grep -q '"username":"admin"' \
  || { echo "test-api: the administrator's session ended during the run" >&2; status=1; }
echo "test-api: anonymously" >&2
run || status=1
if grep -q ' ERROR \|"level":"ERROR"\|panicked' "$work/berth.log"; then
  echo "test-api: the server logged errors:" >&2
  grep ' ERROR \|"level":"ERROR"\|panicked' "$work/berth.log" | head -20 >&2
  status=1
fi
exit $status
