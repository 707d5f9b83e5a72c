#!/usr/bin/env bash
# Live delivery on follower replica nodes while the leadership moves (see follower_delivery.py).
set -euo pipefail
exec python3 "$(dirname "$0")/follower_delivery.py"
