#!/usr/bin/env bash
# spoold --workers 3 (gateway/workers.h): three event loops on one client port. Checks: every loop
# listens and /readyz waits for all of them; test_workers.js (connections spread over loops,
# WebSocket fan-out across loops with exact serials, SSE resume on another loop, /metrics
# counting every loop's connections, presence kept by a resume on another loop, 1001 on
# SIGTERM); --max-connections is one budget for the
# process; a second process cannot share the port; SIGTERM drains every loop and exits 0 with no
# sanitizer or leak report.
. "$SPOOL_SOURCE/tests/realtime/lib.sh"
checks=0
ok() { checks=$((checks + 1)); echo "ok $checks - $*"; }
fail() { echo "FAIL: $*"; tail -40 "$WORK/spoold.log"; exit 1; }

spool_start --workers 3 --max-connections 40 --presence-timeout 2s
for w in 1 2; do
  grep -q "event=worker.listening worker=$w .*port=$PORT\$" "$WORK/spoold.log" || fail "worker $w does not listen on $PORT"
done
[ "$(grep -c 'event=http.listening' "$WORK/spoold.log")" = 1 ] || fail "one http.listening line per process"
wait_ready "$PORT" "$SPOOL_PID" "$WORK/spoold.log"
ok "3 loops listen on port $PORT; /readyz 200"

# A second process on the same port must fail as before, not join the port group.
rc=0
timeout 20 "$SPOOLD" --anonymous --data "$WORK/data2" --listen "127.0.0.1:$PORT" --cluster-listen 127.0.0.1:0 \
  --workers 2 --shards 1 --replicas 1 >"$WORK/second.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q 'listen on 127.0.0.1:'"$PORT"'.*address already in use' "$WORK/second.log" ||
  fail "a second spoold on port $PORT: exit $rc, $(tail -3 "$WORK/second.log")"
ok "a second process on the same port fails with 'address already in use'"

# --max-connections 40 is for the whole process: 40 idle connections (spread over the loops)
# fill it, the 41st is answered 503 whatever loop takes it.
out=$(python3 - "$PORT" <<'EOF'
import socket, sys, time
port = int(sys.argv[1])
held = []
for _ in range(40):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    held.append(s)
for s in held:  # every one answered (so counted) before the next
    assert s.recv(4096).startswith(b"HTTP/1.1 200"), "held connection not answered"
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
a = s.recv(4096).decode(errors="replace")
print("503" if a.startswith("HTTP/1.1 503") and '"code":50300' in a else "got:" + a[:60])
for h in held: h.close()
EOF
)
[ "$out" = 503 ] || fail "--max-connections across loops: $out"
ok "--max-connections is one budget for all loops"
for _ in $(seq 1 50); do  # the 40 closes are seen by their loops
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/healthz)" = 200 ] && break
  sleep 0.1
done

export READY_FILE="$WORK/ready"
(cd "$NODE_DIR" && NODE_PATH="$NODE_DIR/node_modules" SPOOL_SOURCE="$SPOOL_SOURCE" timeout 120 \
  node "$SPOOL_SOURCE/tests/gateway/test_workers.js") >"$WORK/node.out" 2>&1 &
node_pid=$!
for _ in $(seq 1 900); do
  [ -s "$READY_FILE" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$WORK/node.out"; fail "test_workers.js ended early"; }
  sleep 0.1
done
[ -s "$READY_FILE" ] || { cat "$WORK/node.out"; fail "test_workers.js did not finish its checks"; }
ok "fan-out across loops with exact serials, SSE resume on another loop, /metrics counts all loops"

# SIGTERM: every loop drains (WebSockets closed with 1001, checked by the script), exit 0, clean.
spool_stop
rc=0
wait "$node_pid" || rc=$?
cat "$WORK/node.out"
[ "$rc" = 0 ] || fail "test_workers.js: exit $rc"
for w in 1 2; do grep -q "event=worker.stopped worker=$w" "$WORK/spoold.log" || fail "worker $w did not stop"; done
ok "SIGTERM: every loop drained, WebSockets closed with 1001, exit 0, no sanitizer or leak report"
