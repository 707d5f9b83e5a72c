#!/usr/bin/env bash
# Slow consumer (tests/ai/slow_appends.js): appends coalesced for a WebSocket client that stops
# reading, bounded by --send-buffer-bytes; no close, exact text.
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
spool_start --send-buffer-bytes 1048576 --rate-per-connection 0 --heartbeat-interval 10m
spool_node "$SPOOL_SOURCE/tests/ai/slow_appends.js"
spool_stop
