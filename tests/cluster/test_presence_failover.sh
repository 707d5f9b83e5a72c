#!/usr/bin/env bash
# Presence survives a node's death (cluster/presence_reaper.h): 3 storage nodes + 1 gateway-only
# node on 127.0.0.1; members enter through the gateway-only node, through the storage node that
# leads the channel's shard (and, for a second channel, a follower), and through a surviving node;
# the gateway-only node paused (SIGSTOP) for less than the node timeout keeps its members; then
# the gateway-only node and that storage node are killed with SIGKILL. A client attached on a
# surviving node must receive exactly one leave per dead member within the node timeout + a few
# seconds (so must an SSE stream), presence.get must show exactly the survivors, history must
# hold no second leave; then
# the killed storage node restarts on its data, a client enters through it, it is killed and
# restarted at once (within the timeout): the earlier incarnation's member leaves without waiting.
# Driver: test_presence_failover.js (the `ws` package pinned in tests/node).
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_SOURCE:?}"
NODE_DIR="$SPOOL_SOURCE/tests/node"
if [ ! -d "$NODE_DIR/node_modules/ws" ]; then
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund >/dev/null)
fi
WORK=$(mktemp -d /tmp/spool-presfo-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

NODE_TIMEOUT_MS=3000
PORT=(); CPORT=()
for i in 1 2 3 4; do PORT[i]=$(free_port); CPORT[i]=$(free_port); done
PEERS="1@127.0.0.1:${CPORT[1]},2@127.0.0.1:${CPORT[2]},3@127.0.0.1:${CPORT[3]}"

start_node() { # start_node ID [extra flags]: appends to $WORK/nID.log, sets PIDS[ID]
  local i=$1; shift
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --id "$i" --data "$WORK/d$i" \
    --listen "127.0.0.1:${PORT[i]}" --cluster-listen "127.0.0.1:${CPORT[i]}" --peers "$PEERS" \
    --shards 4 --replicas 3 --election-timeout 1000 --rebalance-interval 1s \
    --presence-timeout 30s --presence-node-timeout "${NODE_TIMEOUT_MS}ms" \
    --resume-secret presence-failover "$@" >>"$WORK/n$i.log" 2>&1 &
  PIDS[i]=$!
}

wait_ready() { # wait_ready ID: up to 30 s for /readyz
  local i=$1
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:${PORT[i]}/readyz" || true)" = 200 ] && return 0
    kill -0 "${PIDS[i]}" 2>/dev/null || { tail -40 "$WORK/n$i.log"; echo "FAIL: node $i exited"; exit 1; }
    sleep 0.1
  done
  tail -40 "$WORK/n$i.log"; echo "FAIL: node $i not ready"; exit 1
}

stop_node() { # SIGTERM, require exit 0 and no sanitizer report
  local i=$1 rc=0
  kill -TERM "${PIDS[i]}"
  wait "${PIDS[i]}" || rc=$?
  PIDS[i]=
  if [ "$rc" != 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/n$i.log"; then
    echo "FAIL: node $i exit=$rc"; tail -60 "$WORK/n$i.log"; exit 1
  fi
}

for i in 1 2 3; do start_node "$i"; done
start_node 4 --role gateway
for i in 1 2 3 4; do wait_ready "$i"; done

# The driver kills and restarts nodes through this FIFO-less protocol: it prints
# "KILL <id>" / "RESTART <id>" lines on fd 3 and waits for "done" on its stdin.
mkfifo "$WORK/to_driver" "$WORK/from_driver"
(cd "$NODE_DIR" && PORTS="${PORT[1]},${PORT[2]},${PORT[3]},${PORT[4]}" NODE_TIMEOUT_MS=$NODE_TIMEOUT_MS \
   timeout 150 node "$SPOOL_SOURCE/tests/cluster/test_presence_failover.js" \
   <"$WORK/to_driver" 3>"$WORK/from_driver") &
DRIVER=$!
exec 4>"$WORK/to_driver" 5<"$WORK/from_driver"
while read -r cmd id <&5; do
  case "$cmd" in
    KILL) kill -KILL "${PIDS[id]}"; wait "${PIDS[id]}" 2>/dev/null || true; PIDS[id]=
          echo "node $id killed" ;;
    RESTART) start_node "$id"; wait_ready "$id"; echo "node $id restarted" ;;
    STOP) kill -STOP "${PIDS[id]}" ;;
    CONT) kill -CONT "${PIDS[id]}" ;;
    *) echo "FAIL: driver said '$cmd'"; exit 1 ;;
  esac
  echo done >&4
done
exec 4>&- 5<&-
rc=0
wait "$DRIVER" || rc=$?
if [ "$rc" != 0 ]; then
  for i in 1 2 3 4; do echo "--- n$i.log (tail) ---"; tail -30 "$WORK/n$i.log"; done
  echo "FAIL: driver exit $rc"; exit 1
fi
grep -h 'event=presence.reap' "$WORK"/n*.log | head -20 || true
for i in 3 2 1; do [ -n "${PIDS[i]:-}" ] && stop_node "$i"; done
echo "1 passed, 0 failed"
