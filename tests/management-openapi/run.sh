#!/usr/bin/env bash
# Schemathesis (a property-based API tester nobody here wrote) against the management API's
# served OpenAPI document, on a real node with the demo configuration and the bootstrap admin
# token: no 5xx on any generated request, and every answer matches the document (status,
# content type, headers, body schema).
#
#   tests/management-openapi/run.sh            uses the debug build of `portcullis`
#   PORTCULLIS_BIN=path/to/portcullis tests/management-openapi/run.sh
#
# Schemathesis is installed, pinned, in ~/.cache/portcullis-mcp-tools/st-venv on first use.
set -euo pipefail
bin="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}/debug/portcullis}"
tools="${PORTCULLIS_MCP_TOOLS:-$HOME/.cache/portcullis-mcp-tools}"
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-25}"

[ -x "$bin" ] || { echo "no portcullis binary at $bin (cargo build first)" >&2; exit 1; }
if ! "$tools/st-venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$tools/st-venv"
  "$tools/st-venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

work="$(mktemp -d)"
pid=""
cleanup() {
  status=$?
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT

"$bin" --data-dir "$work/data" serve --demo --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --quota-listen 127.0.0.1:0 >"$work/node.out" 2>"$work/node.err" &
pid=$!
admin=""
for _ in $(seq 1 100); do
  admin="$(sed -n 's/^ *admin: *\(http[^ ]*\).*/\1/p' "$work/node.out" | head -1)"
  token="$(grep -o 'pco_[A-Za-z0-9]*' "$work/node.out" | head -1 || true)"
  [ -n "$admin" ] && [ -n "$token" ] && break
  sleep 0.1
done
[ -n "$admin" ] || { echo "the node did not start:" >&2; cat "$work/node.out" "$work/node.err" >&2; exit 1; }

# Positive-data acceptance is left out: a body's `id` must equal the path's, which a schema
# cannot say, so generated "valid" bodies are rightly refused with 422.
# (From the work directory: schemathesis keeps a cache where it runs.)
cd "$work"
if "$tools/st-venv/bin/schemathesis" run "$admin/api/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed 1 >"$work/schemathesis.log" 2>&1; then
  grep -E "^ *(Tested:|[0-9]+ generated)" "$work/schemathesis.log" | sed 's/^ */schemathesis: /'
else
  echo "schemathesis found problems:"
  sed -n '/FAILURES/,$p' "$work/schemathesis.log"
  exit 1
fi
