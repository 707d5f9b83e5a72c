#!/usr/bin/env bash
# Resume after cutting the TCP connection at random points while messages flow: every message
# once, in order; then an expired key and a forged key are refused with their error codes; then
# a slow consumer is closed with 1008 and its resume catches up through paced history pages.
. "$(dirname "$0")/lib.sh"
spool_start --resume-window 1500ms
spool_node resume_cut.js
expect_metric "$PORT" 'spool_resumes_total{result="resumed"}' '>' 0
expect_metric "$PORT" 'spool_resumes_total{result="expired"}' == 0
spool_node resume_expired.js
expect_metric "$PORT" 'spool_resumes_total{result="expired"}' == 1
expect_metric "$PORT" 'spool_resumes_total{result="refused"}' '>=' 1
expect_metric "$PORT" 'spool_messages_in_total{transport="ws"}' '>' 0
expect_metric "$PORT" 'spool_messages_out_total{transport="ws"}' '>' 0
expect_metric "$PORT" 'spool_bytes_out_total{transport="ws"}' '>' 0
expect_metric "$PORT" 'spool_publish_deliver_seconds_count' '>' 0
spool_stop
# A consumer that stops reading is closed with 1008 at --send-buffer-bytes and resumes exactly.
# (Long heartbeats, so the non-reading client is not dropped as a dead peer first.)
spool_start --send-buffer-bytes 262144 --rate-per-connection 0 --heartbeat-interval 10m
spool_node slow_consumer.js
spool_stop
grep -q 'event=ws.send_buffer_full' "$WORK/spoold.log" || { echo "FAIL: no send buffer verdict"; exit 1; }
