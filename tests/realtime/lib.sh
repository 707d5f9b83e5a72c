# Shared by tests/realtime/test_*.sh: start one spoold on free ports (port 0, read back from its
# log), run a node script from tests/node against it, stop it with SIGTERM and require a clean
# exit with no sanitizer report. Usage: spool_start [spoold flags...]; spool_node script.js; spool_stop
set -euo pipefail
: "${SPOOLD:?}" "${SPOOL_SOURCE:?}"
NODE_DIR="$SPOOL_SOURCE/tests/node"
if [ ! -d "$NODE_DIR/node_modules/ws" ] || [ ! -d "$NODE_DIR/node_modules/eventsource" ]; then
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund >/dev/null)
fi
WORK=$(mktemp -d /tmp/spool-rt-XXXXXX)
SPOOL_PID=
cleanup() {
  if [ -n "$SPOOL_PID" ] && kill -0 "$SPOOL_PID" 2>/dev/null; then kill -KILL "$SPOOL_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

spool_start() {
  : >"$WORK/spoold.log"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --data "$WORK/data" \
    --listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --shards 2 --replicas 1 "$@" \
    >"$WORK/spoold.log" 2>&1 &
  SPOOL_PID=$!
  PORT=
  for _ in $(seq 1 300); do   # up to 30 s for the node to elect itself and listen
    PORT=$(grep -o 'event=http.listening .*port=[0-9]*' "$WORK/spoold.log" | grep -o '[0-9]*$' || true)
    [ -n "$PORT" ] && break
    kill -0 "$SPOOL_PID" 2>/dev/null || { cat "$WORK/spoold.log"; echo "spoold exited"; exit 1; }
    sleep 0.1
  done
  [ -n "$PORT" ] || { cat "$WORK/spoold.log"; echo "spoold did not listen"; exit 1; }
  export PORT
}

spool_node() {
  if ! (cd "$NODE_DIR" && timeout 120 node "$@"); then
    echo "--- spoold log (tail) ---"; tail -40 "$WORK/spoold.log"; exit 1
  fi
}

spool_stop() {
  kill -TERM "$SPOOL_PID"
  local rc=0
  wait "$SPOOL_PID" || rc=$?
  SPOOL_PID=
  if [ "$rc" != 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/spoold.log"; then
    echo "spoold exit=$rc"; tail -60 "$WORK/spoold.log"; exit 1
  fi
}
