#!/usr/bin/env bash
# Adding shards (2 -> 4) to a running 3-node cluster plus a gateway node, under publish load and
# live SSE streams, with spoolctl; then the same with the metadata leader killed mid-move
# (tests/cluster/reshard.py has the steps and checks; docs/resharding.md).
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_BUILD:?}" "${SPOOL_SOURCE:?}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
exec timeout 170 python3 "$SPOOL_SOURCE/tests/cluster/reshard.py"
