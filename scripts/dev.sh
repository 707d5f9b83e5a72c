#!/usr/bin/env bash
# One command for a newcomer: install what is missing, build, and start a single-node Spool with
# embedded defaults (data in ./data, clients on 127.0.0.1:8080). Extra arguments go to spoold.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release
exec build/spoold --data ./data --listen 127.0.0.1:8080 --anonymous "$@"
