#!/usr/bin/env bash
# Runs MCP clients nobody here wrote against a real gateway: the official conformance suite
# (both protocol eras, with the expected failures listed and explained beside this script) and
# the Python MCP SDK calling tools with the credential in a header.
#
#   tests/mcp-conformance/run.sh            uses the debug build of `portcullis`
#   PORTCULLIS_BIN=path/to/portcullis tests/mcp-conformance/run.sh
#
# Node 22 (the npm package node@22), the suite and the Python SDK are installed, pinned, under
# ~/.cache/portcullis-mcp-tools on first use. Logs stay in a temporary directory on failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}/debug/portcullis}"
tools="${PORTCULLIS_MCP_TOOLS:-$HOME/.cache/portcullis-mcp-tools}"
NODE_VERSION=22.23.3
CONFORMANCE_VERSION=0.2.0-alpha.12
MCP_PY_VERSION=2.3.0

[ -x "$bin" ] || { echo "no portcullis binary at $bin (cargo build first)" >&2; exit 1; }

# Tools, pinned.
installed() { grep -q "\"version\": \"$2\"" "$tools/node_modules/$1/package.json" 2>/dev/null; }
if ! installed node "$NODE_VERSION" || ! installed @modelcontextprotocol/conformance "$CONFORMANCE_VERSION"; then
  echo "installing node@$NODE_VERSION and @modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
  mkdir -p "$tools"
  (cd "$tools" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund --loglevel=error \
      "node@$NODE_VERSION" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >/dev/null)
fi
if ! "$tools/venv/bin/python" -c "import mcp, importlib.metadata as m; assert m.version('mcp') == '$MCP_PY_VERSION'" 2>/dev/null; then
  echo "installing the Python MCP SDK $MCP_PY_VERSION"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q "mcp==$MCP_PY_VERSION"
fi
export PATH="$tools/node_modules/.bin:$PATH"

work="$(mktemp -d)"
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT

# Starts a background command named $1 (in this shell, so that cleanup can stop it: a
# command substitution's subshell would lose its pid).
launch() {
  local name="$1"; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
}

# Waits for the line the command named $1 prints starting with "$1: "; the URL on it.
url_of() {
  local name="$1"
  for _ in $(seq 1 100); do
    local url
    url="$(sed -n "s/^ *$name: \(http[^ ]*\).*/\1/p" "$work/$name.out" | head -1)"
    if [ -n "$url" ]; then echo "$url"; return; fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$work/$name.out" "$work/$name.err" >&2; exit 1
}

launch upstream node "$here/fixture.mjs" upstream
upstream="$(url_of upstream)"
data="$work/data"
sed "s|UPSTREAM|$upstream|" "$here/gateway.yaml" >"$work/gateway.yaml"
"$bin" --data-dir "$data" apply -f "$work/gateway.yaml" >/dev/null
token="$("$bin" --data-dir "$data" credential issue --client conformance-agent --profile conformance-sbx | grep '^pcl_')"
launch gateway "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --quota-listen 127.0.0.1:0
gateway="$(url_of gateway)"
launch proxy node "$here/fixture.mjs" proxy "$gateway" "$token"
proxy="$(url_of proxy)"

failed=0
for era in 2025-11-25 2026-07-28; do
  log="$work/conformance-$era.log"
  if conformance server --url "$proxy/mcp" --requirements "$era" \
      --expected-failures "$here/expected-failures-$era.yml" >"$log" 2>&1; then
    echo "MCP conformance suite $CONFORMANCE_VERSION, protocol $era: as expected (see expected-failures-$era.yml)"
  else
    echo "MCP conformance suite $CONFORMANCE_VERSION, protocol $era: FAILED; its report:"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n '/=== SUMMARY ===/,$p'
    failed=1
  fi
done

if "$tools/venv/bin/python" "$here/python_client.py" "$gateway/mcp" "$token" >"$work/python.log" 2>&1; then
  echo "Python MCP SDK $MCP_PY_VERSION client: $(tail -1 "$work/python.log")"
else
  echo "Python MCP SDK $MCP_PY_VERSION client: FAILED"
  cat "$work/python.log"
  failed=1
fi
exit "$failed"
