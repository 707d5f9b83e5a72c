#!/usr/bin/env bash
# Durable Streams read-your-writes across nodes (see read_your_create.py).
set -euo pipefail
exec python3 "$(dirname "$0")/read_your_create.py"
