#!/usr/bin/env bash
# AI semantics on a 3-node cluster, one shard with 3 replicas (tests/ai/ai_cluster.js).
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
spool_start_nodes 3 --replicas 3
spool_node "$SPOOL_SOURCE/tests/ai/ai_cluster.js"
spool_stop_nodes
