#!/usr/bin/env bash
# Resume after cutting the TCP connection at random points while messages flow: every message
# once, in order; then an expired key and a forged key are refused with their error codes.
. "$(dirname "$0")/lib.sh"
spool_start --resume-window 1500ms
spool_node resume_cut.js
spool_node resume_expired.js
spool_stop
