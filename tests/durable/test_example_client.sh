#!/usr/bin/env bash
# Runs examples/durable-streams-client (the official @durable-streams/client, pinned) against a
# fresh single-node spoold: append, read from -1, live tail, resume after a dropped connection,
# close. Installs the example's pinned packages with npm ci when missing. A few seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ex="$SPOOL_SOURCE/examples/durable-streams-client"
if ! { [ -d "$ex/node_modules/@durable-streams/client" ] && (cd "$ex" && npm ls --depth=0 >/dev/null 2>&1); }; then
  (cd "$ex" && npm ci --no-audit --no-fund >/dev/null)
fi
ds_start_nodes 1 --shards 2
SPOOL_URL="http://127.0.0.1:$PORT_1" timeout 60 node "$ex/example.mjs"
ds_stop
