#!/usr/bin/env bash
# Ephemeral messages, interrupts and turn expiry across storage and gateway-only nodes
# (tests/ai/ai_gateway.js): three storage nodes holding one shard with three replicas, and two
# `--role gateway` nodes that hold nothing and follow channels with long polls (the second runs
# two event loops, --workers 2: each loop is a gateway-only node of its own). The same on SSE
# streams: tests/ai/ai_gateway_sse.js.
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
spool_start_nodes 3 --replicas 3
GW_PORTS=""
GW_PIDS=()
gw_cleanup() { # the gateway-only nodes too (lib.sh's cleanup knows only the storage nodes)
  local p
  for p in "${GW_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  cleanup
}
trap gw_cleanup EXIT
PEERS=$(grep -o 'peers=[^ ]*' "$WORK/spoold1.log" | head -1 | cut -d= -f2)
[ -n "$PEERS" ] || { echo "FAIL: no peers= in node 1's start line"; exit 1; }
for g in 1 2; do
  port=$(free_port)
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --role gateway --id $((10 + g)) \
    --data "$WORK/gw$g" --listen "127.0.0.1:$port" --cluster-listen "127.0.0.1:$(free_port)" \
    --peers "$PEERS" --shards 1 --replicas 3 --workers "$g" >"$WORK/spoold-gw$g.log" 2>&1 &
  GW_PIDS[g]=$!
  wait_ready "$port" "${GW_PIDS[g]}" "$WORK/spoold-gw$g.log"
  GW_PORTS="$GW_PORTS${GW_PORTS:+,}$port"
done
export GW_PORTS
PIDS=$(printf '%s,' "${NODE_PID[@]:1}"); export PIDS=${PIDS%,}
spool_node "$SPOOL_SOURCE/tests/ai/ai_gateway_sse.js" # SSE streams; before ai_gateway.js kills a node
spool_node "$SPOOL_SOURCE/tests/ai/ai_gateway.js"
for g in 2 1; do SPOOL_PID=${GW_PIDS[g]} spool_stop_one "$WORK/spoold-gw$g.log"; done
# The script kills the leader of the shard (the expiry must come from the next one): stop the rest.
for i in 3 2 1; do
  if kill -0 "${NODE_PID[i]}" 2>/dev/null; then SPOOL_PID=${NODE_PID[i]} spool_stop_one "$WORK/spoold$i.log"; fi
done
