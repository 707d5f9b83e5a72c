#!/usr/bin/env bash
# The attach race on a three-node cluster with three replicas: subscribers on every node (their
# history may come from a local follower replica that lags the live stream) still get every
# message exactly once, in order, while the publisher on node 1 races them.
. "$(dirname "$0")/lib.sh"
spool_start_nodes 3 --replicas 3
spool_node attach_race.js
spool_stop_nodes
