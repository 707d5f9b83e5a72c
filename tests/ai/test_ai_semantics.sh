#!/usr/bin/env bash
# AI semantics over one spoold (tests/ai/ai_semantics.js): token streams rolled up for readers
# that catch up (WebSocket, SSE, history), exact re-attach, refusals, turn fencing, group
# commit; ephemeral messages and interrupts (tests/ai/ai_ephemeral.js), also on SSE streams
# (tests/ai/ai_ephemeral_sse.js).
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
# One event loop: the ephemeral ack's `delivered` counts the receivers on the loop that took the
# message, and these scripts assert exact counts (every loop's delivery: ai/test_ai_gateway).
spool_start --workers 1
spool_node "$SPOOL_SOURCE/tests/ai/ai_semantics.js"
spool_node "$SPOOL_SOURCE/tests/ai/ai_ephemeral.js"
spool_node "$SPOOL_SOURCE/tests/ai/ai_ephemeral_sse.js"
spool_stop
