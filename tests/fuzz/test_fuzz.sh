#!/usr/bin/env bash
# Builds the clang/libFuzzer flavour (build-fuzz/) and runs every fuzz target over its seed
# corpus for a bounded time each (SPOOL_FUZZ_SECONDS, default 10). A crash, leak or sanitizer
# report fails the test and leaves the reproducer in build-fuzz/fuzz/crash-*.
set -euo pipefail
src=${SPOOL_SOURCE:?}
out="$src/build-fuzz"
seconds=${SPOOL_FUZZ_SECONDS:-10}
if [ ! -f "$out/Makefile" ]; then
  CC=clang cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Debug -DSPOOL_FUZZ=ON \
    -DCMAKE_PREFIX_PATH="${SPOOL_DEPS:-/opt/spool-deps}/raft-0.22.1" >/dev/null
fi
cmake --build "$out" -j"$(nproc)" --target fuzz_all 2>&1 | grep -E 'error|warning: ' || true
test "${PIPESTATUS[0]}" = 0
shopt -s nullglob
targets=("$out"/fuzz/fuzz_*)
if [ ${#targets[@]} -eq 0 ]; then echo "no fuzz targets built"; exit 1; fi
failed=0
for t in "${targets[@]}"; do
  name=$(basename "$t"); name=${name#fuzz_}
  corpus="$src/tests/fuzz/corpus/$name"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  if (cd "$out/fuzz" && ASAN_OPTIONS=detect_leaks=1 "$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 "$work" >"$out/fuzz/$name.log" 2>&1); then
    runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$out/fuzz/$name.log" | grep -oE '[0-9]+$' || echo '?')
    echo "fuzz $name: ok, $runs inputs in ${seconds}s"
  else
    echo "fuzz $name: FAILED"; tail -40 "$out/fuzz/$name.log"; failed=1
  fi
  rm -rf "$work"; trap - EXIT
done
exit $failed
