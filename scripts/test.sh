#!/usr/bin/env bash
# One command for every test: install what is missing (Debian packages, pinned npm packages),
# build with AddressSanitizer + UBSan, and run the whole suite through ctest. Exits non-zero on
# any failure; the output ends with ctest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
SPOOL_SETUP_TEST=1 scripts/setup.sh
scripts/build.sh asan
if [ -f tests/node/package-lock.json ]; then
  (cd tests/node && { [ -d node_modules ] && npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund >/dev/null; })
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd build-asan
ctest --output-on-failure --timeout 600 -j2 "$@"
