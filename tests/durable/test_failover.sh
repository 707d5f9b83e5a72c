#!/usr/bin/env bash
# Idempotent producers across a leader failure: 3 nodes, 1 shard with 3 replicas. A producer
# appends tokens 0..39 (seq = token) through a node that does not lead the shard, retrying each
# append until it gets 200 (stored) or 204 (duplicate: an earlier attempt committed), then sends
# each one again as a client whose response was lost would (must be 204). Right after token 19
# is acknowledged, the shard's leader is killed (SIGKILL), so token 19's resend meets the new
# leader. Fencing and dedup are decided in the state machine at
# apply time, so the stream must hold every token exactly once, in order, a stale epoch must get
# 403 from the new leader, and the next seq must continue. About 20 s.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; for i in 1 2 3; do tail -5 "$WORK/node$i.log"; done; exit 1; }
ds_start_nodes 3 --shards 1 --replicas 3 --election-timeout 1000 --heartbeat 100

leader() { curl -s --max-time 2 "http://127.0.0.1:$PORT_1/v1/channels/x" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])'; }
lead=""
for _ in $(seq 1 100); do lead=$(leader || true); [ -n "$lead" ] && [ "$lead" != 0 ] && break; sleep 0.1; done
[ -n "$lead" ] && [ "$lead" != 0 ] || fail "no leader"
via=$(( lead % 3 + 1 ))
eval "port=\$PORT_$via"
base="http://127.0.0.1:$port/v1/stream/fo/tokens"
echo "leader is node $lead; the producer writes through node $via"

code() { curl -s -o /dev/null -w '%{http_code}' --max-time 15 "$@" || echo 000; }
[ "$(code -X PUT -H 'Content-Type: application/json' "$base")" = 201 ] || fail "create"
append() { # append SEQ [EPOCH]: retries until 200/204 (bounded); prints the final status
  local s=$1 e=${2:-1} c i
  for i in $(seq 1 60); do
    c=$(code -X POST -H 'Content-Type: application/json' -H 'Producer-Id: fo' \
        -H "Producer-Epoch: $e" -H "Producer-Seq: $s" -d "{\"t\":$s}" "$base")
    case "$c" in 200|204|403|409|400) echo "$c"; return 0 ;; esac
    echo "$s $c" >>"$WORK/retries"
    sleep 0.25
  done
  echo "$c"
}
[ "$(append 0 0)" = 200 ] || fail "epoch 0 seq 0"
for s in $(seq 0 39); do
  c=$(append "$s")
  [ "$c" = 200 ] || [ "$c" = 204 ] || fail "token $s: $c"
  if [ "$s" = 19 ]; then
    eval "kill -KILL \${PIDS[$((lead - 1))]}"
    echo "killed the leader (node $lead) after token 19 was acknowledged"
  fi
  # a client whose response was lost sends the same append again: a duplicate, also on the new
  # leader right after the failover
  [ "$(append "$s")" = 204 ] || fail "retry of token $s was not a duplicate"
done
body=$(curl -s --max-time 15 "$base?offset=-1")
want=$(python3 -c 'import json; print(json.dumps([{"t":0}] + [{"t":i} for i in range(40)], separators=(",",":")))')
[ "$body" = "$want" ] || fail "stream content: $body"
echo "ok - 41 values, each once, in order, across the failover ($(wc -l <"$WORK/retries" 2>/dev/null || echo 0) retried attempts)"
[ "$(append 3 0)" = 403 ] || fail "stale epoch not fenced by the new leader"
[ "$(append 40)" = 200 ] || fail "next seq"
[ "$(append 42)" = 409 ] || fail "gap"
echo "ok - fencing, next seq and gap detection on the new leader"
# the killed node is not stopped cleanly; stop the others
kept=()
for i in 1 2 3; do [ "$i" != "$lead" ] && kept+=("${PIDS[$((i - 1))]}"); done
for p in "${kept[@]}"; do kill -TERM "$p"; done
for p in "${kept[@]}"; do wait "$p" || fail "a surviving node exited uncleanly"; done
PIDS=()
