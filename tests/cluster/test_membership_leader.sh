#!/usr/bin/env bash
# Removing a shard's leader while leader spreading runs every 20 ms: the leadership the driver
# hands over is never given back to the leaving node (tests/cluster/membership_leader.py).
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_BUILD:?}" "${SPOOL_SOURCE:?}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
exec timeout 120 python3 "$SPOOL_SOURCE/tests/cluster/membership_leader.py"
