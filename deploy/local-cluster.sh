#!/usr/bin/env bash
# The compose topology as plain processes on this machine, for people without containers:
# two limiter nodes on the local Redis, two gateways on a fresh database of the local
# PostgreSQL, and the demo upstream, with the demo configuration.
#
#   deploy/local-cluster.sh            start it; prints the URLs and tokens; Ctrl-C stops it
#   deploy/local-cluster.sh --check    start it, check it works as a cluster, stop it (CI)
#
# Settings (environment):
#   PORTCULLIS_BIN_DIR        where portcullis and portcullis-limiter are
#                             (default: $CARGO_TARGET_DIR/debug, built if missing)
#   CLUSTER_POSTGRES_URL      a database to create the cluster's database from
#                             (default: postgres://postgres@127.0.0.1:5432/postgres)
#   CLUSTER_REDIS_URL         (default: redis://127.0.0.1:6379); keys under a fresh prefix
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
check=0
[ "${1:-}" = "--check" ] && check=1

bins="${PORTCULLIS_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
if [ ! -x "$bins/portcullis" ] || [ ! -x "$bins/portcullis-limiter" ]; then
  echo "building portcullis and portcullis-limiter"
  (cd "$root" && cargo build -q --bins -p portcullis -p portcullis-limiter)
fi
pg_admin="${CLUSTER_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis="${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379}"

work="$(mktemp -d)"
suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
db="portcullis_local_$suffix"
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$redis" --scan --pattern "pclocal-$suffix*" | xargs -r redis-cli -u "$redis" del >/dev/null || true
  fi
  if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -q "$pg_admin" -c "CREATE DATABASE $db" >/dev/null
store="${pg_admin%/*}/$db"

# Starts a background process (stopped on exit) and waits for its line "<prefix>VALUE";
# sets $found to VALUE. (Not in a subshell: the process must stay in $pids.)
start() {
  local name="$1" prefix="$2"; shift 2
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  found=""
  for _ in $(seq 1 200); do
    found="$(sed -n "s|^ *$prefix\([^ ]*\).*|\1|p" "$work/$name.out" | head -1)"
    [ -n "$found" ] && return
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$work/$name.out" "$work/$name.err" >&2; exit 1
}

# Secrets, made here (never committed): the token secret and the limiter's service tokens.
export PORTCULLIS_TOKEN_SECRET="$(od -An -N48 -tx1 /dev/urandom | tr -d ' \n')"
"$bins/portcullis-limiter" token --name gateways --role check --append "$work/limiter-tokens.yaml" >"$work/check.token" 2>/dev/null
"$bins/portcullis-limiter" token --name management --role manage --append "$work/limiter-tokens.yaml" >"$work/manage.token" 2>/dev/null

start demo-upstream "demo upstream: http://" "$bins/portcullis" demo-upstream --listen 127.0.0.1:0
upstream="$found"
limiters=()
for i in 1 2; do
  start "limiter-$i" "listening on " "$bins/portcullis-limiter" serve --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --redis "$redis" --redis-prefix "pclocal-$suffix" \
    --tokens "$work/limiter-tokens.yaml" --seed "$here/config/quota-seed.yaml"
  addr="$found"
  limiters+=("http://$addr")
done

sed "s|http://demo-upstream:8090|http://$upstream|" "$here/config/demo.yaml" >"$work/demo.yaml"
pc() { "$bins/portcullis" --data-dir "$work/cli" --store "$store" "$@"; }
pc apply -f "$work/demo.yaml" >/dev/null
demo_token="$(pc credential issue --client demo-app --profile demo-sandbox | grep '^pcl_')"
admin_token="$(pc operator token --id local-admin --role admin | grep '^pco_')"

gateways=() admins=()
for i in 1 2; do
  start "gateway-$i" "gateway: " "$bins/portcullis" --data-dir "$work/gateway-$i" --store "$store" \
    serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --limiter "$(IFS=,; echo "${limiters[*]}")" --limiter-token-file "$work/check.token" \
    --limiter-manage-token-file "$work/manage.token"
  g="$found"
  a=""
  for _ in $(seq 1 100); do
    a="$(sed -n 's|^ *admin: *\(http[^ ]*\).*|\1|p' "$work/gateway-$i.out" | head -1)"
    [ -n "$a" ] && break
    sleep 0.02
  done
  gateways+=("$g") admins+=("$a")
done

cat <<INFO
Portcullis local cluster (database $db, Redis prefix pclocal-$suffix)
  gateways:  ${gateways[*]}
  admin:     ${admins[*]}
  limiters:  ${limiters[*]}
  upstream:  http://$upstream
  demo token:   $demo_token
  admin token:  $admin_token
Try:
  curl -H 'Authorization: Bearer $demo_token' ${gateways[0]}/demo/hello
  curl -H 'Authorization: Bearer $admin_token' ${admins[1]}/api/v1/collections
INFO

if [ "$check" -eq 0 ]; then
  echo "Ctrl-C stops the cluster and drops its database."
  wait
  exit 0
fi

# --check: the same answers from every gateway, one quota across them, and a revocation
# through one gateway seen by the other within a second.
fail() { echo "local cluster check failed: $*" >&2; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$2"; }
for g in "${gateways[@]}"; do
  [ "$(code "$demo_token" "$g/demo/hello")" = 200 ] || fail "$g/demo/hello"
done
for a in "${admins[@]}"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$a/readyz")" = 200 ] || fail "$a/readyz"
done
usage="$(curl -s -H "Authorization: Bearer $admin_token" \
  "${admins[0]}/api/v1/quota/policies/demo/usage?client=demo-app&profile=demo-sandbox")"
echo "$usage" | grep -q '"limit":"daily","remaining":998' || fail "shared daily quota: $usage"
credential="$(curl -s -H "Authorization: Bearer $admin_token" "${admins[0]}/api/v1/clients/demo-app" \
  | sed -n 's/.*"credentials":\[{[^}]*"id":"\([^"]*\)".*/\1/p')"
[ -n "$credential" ] || fail "no credential id"
start_ms=$(date +%s%3N)
[ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $admin_token" \
  "${admins[0]}/api/v1/clients/demo-app/profiles/demo-sandbox/credentials/$credential")" = 200 ] || fail "revoke"
while [ "$(code "$demo_token" "${gateways[1]}/demo/hello")" != 401 ]; do
  [ $(( $(date +%s%3N) - start_ms )) -lt 1000 ] || fail "the revocation did not reach gateway-2 within 1 s"
  sleep 0.01
done
echo "local cluster check: 2 gateways, 2 limiters; shared quota; revocation on the other gateway after $(( $(date +%s%3N) - start_ms )) ms"
