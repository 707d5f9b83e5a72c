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
SPOOL_PID2=
cleanup() {
  for p in $SPOOL_PID $SPOOL_PID2; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
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
  require_realtime "$PORT"
}

# Fails with a clear message when this spoold does not serve the realtime endpoints.
require_realtime() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/v1/realtime" || true)
  if [ "$code" = 404 ]; then
    echo "FAIL: GET /v1/realtime is not routed in this spoold: gateway/run.c must call"
    echo "      spool_realtime_mount() (see gateway/realtime.h)"
    exit 1
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_ready() { # wait_ready PORT PID LOG: up to 30 s for /readyz
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/readyz" || true)" = 200 ] && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "spoold exited"; exit 1; }
    sleep 0.1
  done
  cat "$3"; echo "spoold not ready"; exit 1
}

# Two processes sharing one resume secret file (PORT, PORT2); with --shards 1 --replicas 1 the
# one shard lives on one of them and the other reaches it over the cluster port.
spool_start_pair() {
  local c1 c2; c1=$(free_port); c2=$(free_port); PORT=$(free_port); PORT2=$(free_port)
  local peers="1@127.0.0.1:$c1,2@127.0.0.1:$c2"
  mkdir -p "$WORK/data1" "$WORK/data2"
  head -c 32 /dev/urandom >"$WORK/data1/resume.secret"
  cp "$WORK/data1/resume.secret" "$WORK/data2/resume.secret"
  : >"$WORK/spoold.log"; : >"$WORK/spoold2.log"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --id 1 --data "$WORK/data1" \
    --listen "127.0.0.1:$PORT" --cluster-listen "127.0.0.1:$c1" --peers "$peers" --shards 1 \
    --replicas 1 "$@" >"$WORK/spoold.log" 2>&1 &
  SPOOL_PID=$!
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --id 2 \
    --data "$WORK/data2" --listen "127.0.0.1:$PORT2" --cluster-listen "127.0.0.1:$c2" \
    --peers "$peers" --shards 1 --replicas 1 "$@" >"$WORK/spoold2.log" 2>&1 &
  SPOOL_PID2=$!
  wait_ready "$PORT" "$SPOOL_PID" "$WORK/spoold.log"
  wait_ready "$PORT2" "$SPOOL_PID2" "$WORK/spoold2.log"
  export PORT PORT2
  require_realtime "$PORT"
}

spool_stop_pair() {
  local pid1=$SPOOL_PID
  SPOOL_PID=$SPOOL_PID2 spool_stop_one "$WORK/spoold2.log"
  SPOOL_PID2=
  SPOOL_PID=$pid1 spool_stop_one "$WORK/spoold.log"
  SPOOL_PID=
}

spool_node() {
  if ! (cd "$NODE_DIR" && timeout 120 node "$@"); then
    echo "--- spoold log (tail) ---"; tail -40 "$WORK/spoold.log"
    [ -s "$WORK/spoold2.log" ] && { echo "--- spoold 2 log (tail) ---"; tail -40 "$WORK/spoold2.log"; }
    exit 1
  fi
}

spool_stop_one() { # SIGTERM $SPOOL_PID, require exit 0 and a clean log ($1)
  kill -TERM "$SPOOL_PID"
  local rc=0
  wait "$SPOOL_PID" || rc=$?
  if [ "$rc" != 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1"; then
    echo "spoold exit=$rc"; tail -60 "$1"; exit 1
  fi
}

spool_stop() {
  spool_stop_one "$WORK/spoold.log"
  SPOOL_PID=
}
