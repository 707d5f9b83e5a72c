#!/usr/bin/env bash
# GET /v1/channels/{c}/presence on every node kind (tests/node/presence_http.js): a storage node
# and a `--role gateway` node (which holds nothing and reads at the shard leader over RPC), both
# with --workers 2 (each extra loop is a gateway-only node of its own). Members enter over
# WebSocket, the HTTP list matches presence.get, a leave shows; 403/401/400 JSON errors. API keys
# beside --anonymous: a request without credentials may do anything, a key only what it lists.
. "$(dirname "$0")/lib.sh"
KEYS='reader:r3ad=*:history;present:pr3s=*:presence;sub:s3b=*:subscribe'
spool_start_nodes 1 --workers 2 --api-keys "$KEYS"
PEERS=$(grep -o 'peers=[^ ]*' "$WORK/spoold1.log" | head -1 | cut -d= -f2)
[ -n "$PEERS" ] || { echo "FAIL: no peers= in node 1's start line"; exit 1; }
GW_PORT=$(free_port)
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --role gateway --id 11 \
  --data "$WORK/gw" --listen "127.0.0.1:$GW_PORT" --cluster-listen "127.0.0.1:$(free_port)" \
  --peers "$PEERS" --shards 1 --replicas 1 --workers 2 --api-keys "$KEYS" >"$WORK/spoold-gw.log" 2>&1 &
GW_PID=$!
wait_ready "$GW_PORT" "$GW_PID" "$WORK/spoold-gw.log"
PORTS="$PORT,$GW_PORT" spool_node presence_http.js
SPOOL_PID=$GW_PID spool_stop_one "$WORK/spoold-gw.log"
spool_stop_nodes
