#!/usr/bin/env bash
# Configures and builds one flavour of Spool: `release` (build/) or `asan` (build-asan/, ASan+UBSan,
# used by the tests). Incremental: a second run with nothing changed does almost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-release}
SPOOL_DEPS=${SPOOL_DEPS:-/opt/spool-deps}
case "$flavour" in
  release) dir=build;      type=RelWithDebInfo; san=OFF ;;
  asan)    dir=build-asan; type=Debug;          san=ON ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
if [ ! -f "$dir/Makefile" ]; then
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DSPOOL_SANITIZE="$san" \
        -DCMAKE_PREFIX_PATH="$SPOOL_DEPS/raft-0.22.1" >/dev/null
fi
cmake --build "$dir" -j"$(nproc)" 2>&1 |
  { grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built|Generating|Running)' || true; }
