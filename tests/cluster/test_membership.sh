#!/usr/bin/env bash
# Adding a node to a running 3-node cluster and removing one, under publish load, with spoolctl
# (tests/cluster/membership.py has the steps and checks).
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_BUILD:?}" "${SPOOL_SOURCE:?}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
exec timeout 170 python3 "$SPOOL_SOURCE/tests/cluster/membership.py"
