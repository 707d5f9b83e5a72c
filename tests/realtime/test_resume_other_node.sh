#!/usr/bin/env bash
# Resume keys are self-contained and signed: a connection dropped on one node resumes on another
# when every node is given the same --resume-secret (the channel's shard lives on one of them).
# Without it each node signs with its own <data>/resume.secret and the other node refuses.
. "$(dirname "$0")/lib.sh"
spool_start_nodes 2
spool_node resume_other_node_refused.js
expect_metric "${PORTS#*,}" 'spool_resumes_total{result="refused"}' == 1
expect_metric "$PORT" 'spool_resumes_total{result="resumed"}' == 1
spool_stop_nodes
rm -rf "$WORK"/data*
spool_start_nodes 2 --resume-secret "test-$RANDOM-$RANDOM"
spool_node resume_other_node.js
spool_stop_nodes
