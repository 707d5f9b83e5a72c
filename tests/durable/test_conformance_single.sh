#!/usr/bin/env bash
# Durable Streams conformance on one node: start spoold (anonymous, --long-poll-timeout 500,
# 4 shards), run the pinned suite (tests/durable/run.sh, 338 tests with the 6 subscription ones),
# print the pass count, stop spoold cleanly (exit 0, no sanitizer report). Fails below the
# "single" floor of floor.txt (338: every test). About 25-50 s.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ds_start_nodes 1 --shards 4
ds_judge single "http://127.0.0.1:$PORT_1"
ds_stop
