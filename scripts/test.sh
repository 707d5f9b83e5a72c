#!/usr/bin/env bash
# One command for every test: install what is missing (Debian packages, pinned npm packages),
# build with AddressSanitizer + UBSan, and run the whole suite through ctest. Exits non-zero on
# any failure; the output ends with ctest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
SPOOL_SETUP_TEST=1 scripts/setup.sh
scripts/build.sh asan
# Every tests/<area>/ and examples/<name>/ package-lock.json pins that folder's npm packages;
# install each exactly (npm ci), skipping folders whose node_modules already match the lock file.
for lock in tests/*/package-lock.json examples/*/package-lock.json; do
  [ -f "$lock" ] || continue
  dir=$(dirname "$lock")
  if ! (cd "$dir" && [ -d node_modules ] && cmp -s package-lock.json node_modules/.package-lock.json.spool 2>/dev/null); then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && cp package-lock.json node_modules/.package-lock.json.spool)
  fi
done
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd build-asan
ctest --output-on-failure --timeout 600 -j2 "$@"
