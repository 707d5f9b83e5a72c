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
NODE_PID=()
NODE_PORT=()
NODES=0
cleanup() {
  for p in $SPOOL_PID "${NODE_PID[@]}"; do
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

# COUNT processes forming one cluster (each with its own resume secret unless the caller passes
# --resume-secret); their client ports are
# exported as PORTS (comma-separated; PORT is the first). Flags after COUNT go to every node,
# after the defaults (--shards 1 --replicas 1: the shard lives on one node, or pass --replicas).
spool_start_nodes() {
  local count=$1; shift
  local peers="" i
  local cports=()
  PORTS=""
  for i in $(seq 1 "$count"); do
    cports[i]=$(free_port)
    NODE_PORT[i]=$(free_port)
    peers="$peers${peers:+,}$i@127.0.0.1:${cports[i]}"
    PORTS="$PORTS${PORTS:+,}${NODE_PORT[i]}"
    mkdir -p "$WORK/data$i"
  done
  for i in $(seq 1 "$count"); do
    : >"$WORK/spoold$i.log"
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$SPOOLD" --anonymous --id "$i" --data "$WORK/data$i" \
      --listen "127.0.0.1:${NODE_PORT[i]}" --cluster-listen "127.0.0.1:${cports[i]}" --peers "$peers" \
      --shards 1 --replicas 1 "$@" >"$WORK/spoold$i.log" 2>&1 &
    NODE_PID[i]=$!
  done
  for i in $(seq 1 "$count"); do wait_ready "${NODE_PORT[i]}" "${NODE_PID[i]}" "$WORK/spoold$i.log"; done
  PORT=${NODE_PORT[1]}
  NODES=$count
  export PORT PORTS
  require_realtime "$PORT"
}

spool_stop_nodes() {
  local i
  for i in $(seq "$NODES" -1 1); do
    SPOOL_PID=${NODE_PID[i]} spool_stop_one "$WORK/spoold$i.log"
    NODE_PID[i]=
  done
  SPOOL_PID=
}

spool_node() {
  if ! (cd "$NODE_DIR" && timeout 120 node "$@"); then
    local log
    for log in "$WORK"/spoold*.log; do
      [ -s "$log" ] && { echo "--- $(basename "$log") (tail) ---"; tail -40 "$log"; }
    done
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

# expect_metric PORT SERIES OP VALUE: one exact series of that node's /metrics (e.g.
# 'spool_resumes_total{result="expired"}') compared with OP (== >= >) against VALUE.
expect_metric() {
  local v
  v=$(curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1 == s {print $2}')
  [ -n "$v" ] || { echo "FAIL: no series $2 on :$1"; exit 1; }
  awk -v v="$v" -v w="$4" -v op="$3" 'BEGIN { exit !((op == "==" && v == w) || (op == ">=" && v >= w) || (op == ">" && v > w)) }' ||
    { echo "FAIL: $2 on :$1 is $v, expected $3 $4"; exit 1; }
}
