#!/usr/bin/env bash
# Durable Streams conformance against a 3-node cluster (2 shards, 3 replicas each), through a node
# that leads none of the shards: every command is forwarded to another node's leader, reads are
# served by the chosen node's follower replicas once they have applied what the client was
# acknowledged (read-your-writes), live reads follow its local replicas. With 2 shards and 3
# nodes at least one node leads nothing; the script picks it from the nodes' spool_raft_leader_id
# gauges once every shard has a leader, and prints the leaders again after the run (an election
# during the run would move a leadership; the run still goes through forwarding). Fails below
# the "cluster" floor of floor.txt. About 40-80 s.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ds_start_nodes 3 --shards 2 --replicas 3

leaders() { # leader id of each shard as node 1 sees it, space-separated (0 = unknown)
  curl -s --max-time 2 "http://127.0.0.1:$PORT_1/metrics" |
    awk '/^spool_raft_leader_id\{/ { print $2 }' | tr '\n' ' '
}
chosen=""
for _ in $(seq 1 100); do
  l=$(leaders)
  if [ -n "$l" ] && ! echo " $l" | grep -q ' 0 '; then
    for i in 1 2 3; do
      echo " $l" | grep -q " $i " || { chosen=$i; break; }
    done
    [ -n "$chosen" ] && break
  fi
  sleep 0.1
done
[ -n "$chosen" ] || { echo "FAIL: no node without a leadership (leaders: $(leaders))"; exit 1; }
eval "port=\$PORT_$chosen"
echo "shard leaders: $(leaders)-> suite against node $chosen (port $port)"
ds_judge cluster "http://127.0.0.1:$port"
echo "shard leaders after the run: $(leaders)"
ds_stop
