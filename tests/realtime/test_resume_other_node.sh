#!/usr/bin/env bash
# Resume keys are self-contained and signed: a connection dropped on one node resumes on another
# (two nodes sharing <data>/resume.secret; the channel's shard lives on one of them).
. "$(dirname "$0")/lib.sh"
spool_start_nodes 2
spool_node resume_other_node.js
spool_stop_nodes
