# Shared by tests/admin/test_*.sh: a 3-node cluster (6 shards x 3 replicas) of spoold processes
# on free loopback ports, with API keys "root:s3cret" (everything) and "pub:p" (publish and
# history only), and helpers that read GET /v1/admin/cluster.
set -euo pipefail
: "${SPOOLD:?path of the spoold binary}" "${SPOOL_BUILD:?}" "${SPOOL_SOURCE:?}"
SPOOLCTL="$SPOOL_BUILD/spoolctl"
WORK=$(mktemp -d /tmp/spool-admin-XXXXXX)
declare -A PID
cleanup() {
  for i in "${!PID[@]}"; do
    if kill -0 "${PID[$i]}" 2>/dev/null; then kill -KILL "${PID[$i]}" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
KEYS='root:s3cret;pub:p=*:publish,history'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
fail() { echo "FAIL: $*"; for f in "$WORK"/node*.log; do echo "== $f"; tail -15 "$f"; done; exit 1; }

PEERS=""
for i in 1 2 3; do
  eval "CPORT_$i=$(free_port)"; eval "PORT_$i=$(free_port)"
  eval "PEERS=\"\$PEERS\${PEERS:+,}$i@127.0.0.1:\$CPORT_$i\""
done

wait_ready() { # wait_ready I: up to 30 s for node I's /readyz
  local port; eval "port=\$PORT_$1"
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" || true)" = 200 ] && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || fail "node $1 exited during startup"
    sleep 0.1
  done
  fail "node $1 not ready within 30 s"
}

start_node() { # start_node I [flags...]
  local i=$1 cp hp; shift; eval "cp=\$CPORT_$i; hp=\$PORT_$i"
  mkdir -p "$WORK/data$i"
  "$SPOOLD" --api-keys "$KEYS" --id "$i" --data "$WORK/data$i" --listen "127.0.0.1:$hp" \
    --cluster-listen "127.0.0.1:$cp" --peers "$PEERS" --shards 6 --replicas 3 \
    --election-timeout 500 --heartbeat 50 "$@" >>"$WORK/node$i.log" 2>&1 &
  PID[$i]=$!
}

stop_node() { # stop_node I: SIGTERM; must exit 0 without a sanitizer report
  local rc=0
  kill -TERM "${PID[$1]}"; wait "${PID[$1]}" || rc=$?
  unset "PID[$1]"
  if [ "$rc" != 0 ] || grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/node$1.log"; then
    grep -E -A20 'Sanitizer|runtime error' "$WORK/node$1.log" | head -40
    fail "node $1 exited with $rc or a sanitizer report"
  fi
}

# leads I: "a b c", the shards each node leads as node I sees them ("?" on error)
leads() {
  local port; eval "port=\$PORT_$1"
  curl -s --max-time 3 -u root:s3cret "http://127.0.0.1:$port/v1/admin/cluster" |
    python3 -c 'import json,sys
try: print(" ".join(str(n["leads"]) for n in json.load(sys.stdin)["nodes"]))
except Exception: print("?")'
}

# wait_leads I WANT SECONDS: until node I sees leader counts matching the regex WANT ("2 2 2")
wait_leads() {
  local got=""
  for _ in $(seq 1 $(($3 * 10))); do
    got=$(leads "$1"); [[ "$got" =~ ^$2$ ]] && return 0
    sleep 0.1
  done
  fail "leaders per node: got '$got', want '$2' within $3 s"
}

# skew: restart node 3 so that nodes 1 and 2 lead everything (its graceful stop hands its
# leaderships over; on return it wins no election while the others stay up).
skew() {
  stop_node 3
  wait_leads 1 "(6 0|5 1|4 2|3 3|2 4|1 5|0 6) 0" 20
  start_node 3 "$@"
  wait_ready 3
  echo "leaders after node 3 rejoined: $(leads 1)"
}
