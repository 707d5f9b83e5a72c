#!/usr/bin/env bash
# Three spoold processes on 127.0.0.1 under publish load: kill -9 a leader, SIGSTOP a leader,
# restart a node; after each, every acknowledged message is on every replica exactly once, in the
# same order. See faults.py for what is checked.
set -euo pipefail
exec python3 "$(dirname "$0")/faults.py"
