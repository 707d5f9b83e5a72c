# spoolctl against a 3-node cluster: status lists every shard with a leader, rebalance evens the
# leaders out after a node rejoined, channel inspection shows a published message, a wrong key
# or a key without `admin` fails with exit 1 and the auth message; node add/remove refuse a
# member, an unknown node, a dead address and a bad body (the changes themselves:
# tests/cluster/test_membership.sh); malformed commands exit 2. Automatic spreading is off here
# (--rebalance-interval 0).
source "$(dirname "$0")/lib.sh"
for i in 1 2 3; do start_node "$i" --rebalance-interval 0; done
for i in 1 2 3; do wait_ready "$i"; done
export SPOOL_SERVER="127.0.0.1:$PORT_1" SPOOL_KEY=root:s3cret

out=$("$SPOOLCTL" status) || fail "status exited $?"
echo "$out"
[ "$(echo "$out" | awk '$1 ~ /^[0-5]$/ && $2 ~ /^[1-3]$/' | wc -l)" = 6 ] ||
  fail "status does not show a leader for every one of the 6 shards"

skew --rebalance-interval 0
out=$("$SPOOLCTL" rebalance) || fail "rebalance exited $?"
echo "$out"
wait_leads 1 "2 2 2" 20
wait_leads 3 "2 2 2" 20
"$SPOOLCTL" --server "127.0.0.1:$PORT_3" nodes

code=$(curl -s -o /dev/null -w '%{http_code}' -u root:s3cret -H 'content-type: application/json' \
  -d '{"id":"m1","name":"greeting","data":"hello-admin"}' "http://127.0.0.1:$PORT_2/v1/channels/chat%2F1/messages")
[ "$code" = 201 ] || [ "$code" = 200 ] || fail "publish answered $code"
# node 1 may answer from its follower replica, which applies the entry a moment later
for _ in $(seq 1 50); do
  out=$("$SPOOLCTL" channel chat/1) || fail "channel exited $?"
  echo "$out" | grep -q 'hello-admin' && break
  sleep 0.1
done
echo "$out"
echo "$out" | grep -q 'hello-admin' || fail "channel inspection does not show the message"
echo "$out" | grep -q '^serials  1\.\.1 (1 records)' || fail "channel inspection: wrong serials"

rc=0; err=$("$SPOOLCTL" --key root:wrong status 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'invalid secret' || fail "bad key: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" --key pub:p rebalance 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'capability missing' || fail "no admin: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" node add 2>&1) || rc=$?
[ "$rc" = 2 ] || fail "node add without ID@HOST:PORT: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" node add 3@127.0.0.1:1 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'already a member' || fail "node add of a member: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" node remove 9 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'no such storage node' || fail "node remove 9: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" --timeout 5 node add 7@127.0.0.1:1 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'does not answer' || fail "node add of a dead address: exit $rc, '$err'"
rc=0; err=$("$SPOOLCTL" --timeout 5 node add "7@127.0.0.1:$CPORT_3" 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'not waiting to join' || fail "node add of a member's address: exit $rc, '$err'"
# A joining node shaped differently (--shards 5, the cluster has 6) is refused before anything moves.
J_CPORT=$(free_port); J_PORT=$(free_port)
"$SPOOLD" --api-keys "$KEYS" --id 9 --join --data "$WORK/data9" --listen "127.0.0.1:$J_PORT" \
  --cluster-listen "127.0.0.1:$J_CPORT" --peers "$PEERS" --shards 5 --replicas 3 >>"$WORK/node9.log" 2>&1 &
PID[9]=$!
for _ in $(seq 1 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$J_PORT/healthz" && break; sleep 0.1; done
rc=0; err=$("$SPOOLCTL" --timeout 5 node add "9@127.0.0.1:$J_CPORT" 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$err" | grep -q 'shards' || fail "node add of a 5-shard node: exit $rc, '$err'"
stop_node 9
code=$(curl -s -o /dev/null -w '%{http_code}' -u root:s3cret -XPOST -d '{"id":"x"}' "http://127.0.0.1:$PORT_1/v1/admin/nodes")
[ "$code" = 400 ] || fail "POST /v1/admin/nodes with a bad body answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -u pub:p -XDELETE "http://127.0.0.1:$PORT_1/v1/admin/nodes/2")
[ "$code" = 403 ] || fail "DELETE /v1/admin/nodes/2 without admin answered $code"
rc=0; "$SPOOLCTL" frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "usage error: exit $rc"
rc=0; err=$(curl -s -u root:s3cret "http://127.0.0.1:$PORT_1/v1/admin/channels/chat-1?latest=x") || true
echo "$err" | grep -q '"code": *40003' || fail "bad ?latest: $err"

for i in 1 2 3; do stop_node "$i"; done
echo "PASS"
