# Shared by tests/durable/test_conformance_*.sh: start spoold node(s) on free loopback ports with
# a short long-poll timeout, run the pinned conformance suite (run.sh) against one of them, and
# judge the count against tests/durable/floor.txt. Usage: see the test scripts.
#
# The judge: a run passes when every test passes (338), or, while Spool is not there yet, when
# the pass count is not below the committed floor for that run ("single N" / "cluster N" in
# floor.txt). The count is always printed. Raise the floor when a change passes more tests.
set -euo pipefail
: "${SPOOLD:?path of the spoold binary}" "${SPOOL_SOURCE:?}"
DS_DIR="$SPOOL_SOURCE/tests/durable"
WORK=$(mktemp -d /tmp/spool-ds-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_ready() { # wait_ready PORT PID LOG: up to 30 s for /readyz
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/readyz" || true)" = 200 ] && return 0
    kill -0 "$2" 2>/dev/null || { tail -40 "$3"; echo "FAIL: spoold exited during startup"; exit 1; }
    sleep 0.1
  done
  tail -40 "$3"; echo "FAIL: spoold not ready within 30 s"; exit 1
}

# ds_start_nodes COUNT [flags...]: a cluster of COUNT storage nodes (a single node when 1); client
# ports in PORT_1..PORT_COUNT, logs in $WORK/nodeI.log.
ds_start_nodes() {
  local count=$1; shift
  local peers="" i
  for i in $(seq 1 "$count"); do
    eval "CPORT_$i=$(free_port)"
    eval "PORT_$i=$(free_port)"
    local cp; eval "cp=\$CPORT_$i"
    [ "$count" -gt 1 ] && peers="$peers${peers:+,}$i@127.0.0.1:$cp"
    mkdir -p "$WORK/data$i"
  done
  for i in $(seq 1 "$count"); do
    local cp hp; eval "cp=\$CPORT_$i; hp=\$PORT_$i"
    "$SPOOLD" --anonymous --id "$i" --data "$WORK/data$i" --listen "127.0.0.1:$hp" \
      --cluster-listen "127.0.0.1:$cp" --peers "$peers" --long-poll-timeout 500 "$@" \
      >"$WORK/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in $(seq 1 "$count"); do
    local hp; eval "hp=\$PORT_$i"
    wait_ready "$hp" "${PIDS[$((i - 1))]}" "$WORK/node$i.log"
  done
}

# ds_judge KIND URL: runs the suite, prints the count, fails below the floor.
ds_judge() {
  local kind=$1 url=$2 out passed floor
  out=$(DS_RUN_TIMEOUT=${DS_RUN_TIMEOUT:-600} "$DS_DIR/run.sh" "$url" 2>&1 || true)
  echo "$out" | sed -n '/failed tests/,$p'
  passed=$(echo "$out" | grep -o 'durable-streams: [0-9]* passed' | grep -o '[0-9]*' || echo 0)
  floor=$(awk -v k="$kind" '$1 == k { print $2 }' "$DS_DIR/floor.txt")
  echo "durable-streams $kind: $passed of 338 passed (floor ${floor:-338})"
  [ "$passed" -ge "${floor:-338}" ] || { echo "FAIL: regression below the floor"; exit 1; }
}

# ds_stop: SIGTERM every node; each must exit 0 without a sanitizer report.
ds_stop() {
  local i=0 p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    i=$((i + 1))
    local rc=0
    wait "$p" || rc=$?
    if [ "$rc" != 0 ] || grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/node$i.log"; then
      grep -E -A20 'Sanitizer|runtime error' "$WORK/node$i.log" | head -40
      echo "FAIL: node $i exited with $rc or a sanitizer report"
      exit 1
    fi
  done
  PIDS=()
}
