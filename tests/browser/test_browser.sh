#!/usr/bin/env bash
# A real browser: Debian's chromium, driven by playwright-core, follows a channel with its own
# WebSocket (Spool protocol, resume key) and EventSource (Last-Event-ID) while messages 1..N are
# published; the page's connections are cut mid-stream (server side, then an offline outage) and
# both streams must continue exactly: serials 1..N in order, no gap, no duplicate. spoold must
# exit 0 on SIGTERM with no sanitizer report. See driver.js.
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_SOURCE:?}"
DIR="$SPOOL_SOURCE/tests/browser"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "FAIL: $CHROMIUM not found: Debian's chromium package is needed (apt-get install chromium)"
  exit 1
fi
if [ ! -d "$DIR/node_modules/playwright-core" ]; then
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
WORK=$(mktemp -d /tmp/spool-browser-XXXXXX)
cleanup() {
  local f p
  for f in spoold.pid chromium.pid; do
    [ -f "$WORK/$f" ] || continue
    p=$(cat "$WORK/$f")
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$DIR"
SPOOL_WORK="$WORK" CHROMIUM="$CHROMIUM" timeout 120 node driver.js
