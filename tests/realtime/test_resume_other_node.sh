#!/usr/bin/env bash
# Resume keys are self-contained and signed: a connection dropped on one node resumes on another
# (two processes: a storage node and a gateway-only node sharing <data>/resume.secret).
. "$(dirname "$0")/lib.sh"
spool_start_pair
spool_node resume_other_node.js
spool_stop_pair
