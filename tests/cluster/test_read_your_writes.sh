#!/usr/bin/env bash
# Read-your-writes through any node for REST history and status (see read_your_writes.py).
set -euo pipefail
exec python3 "$(dirname "$0")/read_your_writes.py"
