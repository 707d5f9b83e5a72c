#!/usr/bin/env bash
# ctest entry for the AI chat example's browser test (examples/ai-chat/test_ai_chat.sh).
set -euo pipefail
: "${SPOOL_SOURCE:?}"
exec bash "$SPOOL_SOURCE/examples/ai-chat/test_ai_chat.sh"
