#!/usr/bin/env bash
# Durable Streams state survives a restart, through a Raft snapshot: on one spoold with
# --snapshot-threshold 64, make a stream with producer appends, a Stream-Seq and a close, push
# the shard past a snapshot with 100 more appends to another stream, SIGTERM, restart on the same
# data dir, and check the stream reads the same bytes and offset, is still closed, still fences
# (the closing producer tuple is a 204 duplicate, any other append a 409), and Stream-Seq and
# producer state of the busy stream are intact. A few seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; tail -20 "$WORK/node1.log"; exit 1; }
flags=(--shards 1 --snapshot-threshold 64 --snapshot-trailing 16)
ds_start_nodes 1 "${flags[@]}"
base="http://127.0.0.1:$PORT_1/v1/stream"
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
hdr() { # hdr NAME curl-args...: the value of response header NAME
  local n=$1; shift
  curl -s -D - -o /dev/null --max-time 10 "$@" | tr -d '\r' | awk -v n="$(echo "$n" | tr A-Z a-z)" \
    'index(tolower($0), n ": ") == 1 { print substr($0, length(n) + 3) }'
}
P=(-H 'Content-Type: text/plain' -H 'Producer-Id: w')

[ "$(code -X PUT -H 'Content-Type: text/plain' "$base/s")" = 201 ] || fail "create s"
[ "$(code -X POST "${P[@]}" -H 'Producer-Epoch: 0' -H 'Producer-Seq: 0' -d 'ab' "$base/s")" = 200 ] || fail "append 0"
[ "$(code -X POST "${P[@]}" -H 'Producer-Epoch: 0' -H 'Producer-Seq: 1' -H 'Stream-Closed: true' -d 'cd' "$base/s")" = 200 ] || fail "append+close"
tail=$(hdr Stream-Next-Offset -I "$base/s")
[ "$(code -X PUT -H 'Content-Type: text/plain' "$base/busy")" = 201 ] || fail "create busy"
for i in $(seq 0 99); do
  c=$(code -X POST -H 'Content-Type: text/plain' -H 'Producer-Id: b' -H 'Producer-Epoch: 3' \
      -H "Producer-Seq: $i" -H "Stream-Seq: $(printf '%04d' "$i")" -d "x$i" "$base/busy")
  [ "$c" = 200 ] || [ "$c" = 204 ] || fail "busy append $i: $c"
done
grep -q 'event=fsm.snapshot' "$WORK/node1.log" || fail "no snapshot was taken"
echo "ok - state written, snapshot taken"

ds_stop
PIDS=()
"$SPOOLD" --anonymous --id 1 --data "$WORK/data1" --listen "127.0.0.1:$PORT_1" \
  --cluster-listen "127.0.0.1:$CPORT_1" --peers "" --long-poll-timeout 500 "${flags[@]}" \
  >>"$WORK/node1.log" 2>&1 &
PIDS+=($!)
wait_ready "$PORT_1" "${PIDS[0]}" "$WORK/node1.log"

[ "$(curl -s --max-time 10 "$base/s?offset=-1")" = abcd ] || fail "data after restart"
[ "$(hdr Stream-Next-Offset -I "$base/s")" = "$tail" ] || fail "tail after restart"
[ "$(hdr Stream-Closed -I "$base/s")" = true ] || fail "closed after restart"
[ "$(code -X POST "${P[@]}" -H 'Producer-Epoch: 0' -H 'Producer-Seq: 1' -H 'Stream-Closed: true' -d 'zz' "$base/s")" = 204 ] \
  || fail "closing tuple is a duplicate after restart"
[ "$(code -X POST -H 'Content-Type: text/plain' -d 'late' "$base/s")" = 409 ] || fail "closed stream refuses appends"
[ "$(code -X POST -H 'Content-Type: text/plain' -H 'Producer-Id: b' -H 'Producer-Epoch: 2' -H 'Producer-Seq: 0' -d 'z' "$base/busy")" = 403 ] \
  || fail "stale epoch fenced after restart"
[ "$(code -X POST -H 'Content-Type: text/plain' -H 'Producer-Id: b' -H 'Producer-Epoch: 3' -H 'Producer-Seq: 99' -d 'x99' "$base/busy")" = 204 ] \
  || fail "producer duplicate after restart"
[ "$(code -X POST -H 'Content-Type: text/plain' -H 'Stream-Seq: 0050' -d 'old' "$base/busy")" = 409 ] \
  || fail "Stream-Seq order after restart"
[ "$(code -X POST -H 'Content-Type: text/plain' -H 'Producer-Id: b' -H 'Producer-Epoch: 3' -H 'Producer-Seq: 100' -H 'Stream-Seq: 0100' -d 'x100' "$base/busy")" = 200 ] \
  || fail "next producer append after restart"
echo "ok - after restart: same data, tail, closure, fencing, dedup, Stream-Seq"
ds_stop
