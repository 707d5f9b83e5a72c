#!/usr/bin/env bash
# The AI chat example end to end in headless Debian chromium (see test_ai_chat.js). Needs
# SPOOLD; chromium from Debian (apt-get install chromium); playwright-core from package-lock.json.
set -euo pipefail
: "${SPOOLD:?}"
DIR=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "FAIL: $CHROMIUM not found: Debian's chromium package is needed (apt-get install chromium)"
  exit 1
fi
if [ ! -d "$DIR/node_modules/playwright-core" ]; then
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
WORK=$(mktemp -d /tmp/spool-ai-chat-XXXXXX)
cleanup() {
  local p
  if [ -f "$WORK/pids" ]; then
    while read -r p; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done <"$WORK/pids"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$DIR"
AI_CHAT_WORK="$WORK" CHROMIUM="$CHROMIUM" timeout 150 node test_ai_chat.js
