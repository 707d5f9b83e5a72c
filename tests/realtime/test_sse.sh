#!/usr/bin/env bash
# SSE with the eventsource client: reconnect with Last-Event-ID continues exactly; last=N,
# retry hint, heartbeat comments, bad parameters.
. "$(dirname "$0")/lib.sh"
spool_start --heartbeat-interval 300ms
spool_node sse_resume.js
expect_metric "$PORT" 'spool_messages_out_total{transport="sse"}' '>' 0
expect_metric "$PORT" 'spool_bytes_out_total{transport="sse"}' '>' 0
spool_stop
