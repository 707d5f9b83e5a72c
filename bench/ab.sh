#!/bin/bash
# A/B publish benchmark of two spoold binaries on a 3-node cluster (3 shards, 3 replicas, fsync).
# usage: ab.sh BASEPORT SPOOLD_A SPOOLD_B [rounds=3] [inflights="64 256"] [size=100] [target=spool-ws]
# Alternates A and B each round; prints per run msg/s, p50, p99 and server CPU us/msg, then the
# medians per build and depth and the ratios B/A.
# Uses client ports BASE+1..3 and cluster ports BASE+11..13 on 127.0.0.1; data under
# $BENCH_DIR/spool-ab-BASE (default /tmp), removed at the end. Needs build/bench/publish (PUBLISH).
BASE=$1; A=$2; B=$3; ROUNDS=${4:-3}; INFS=${5:-"64 256"}; SIZE=${6:-100}; TARGET=${7:-spool-ws}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUBLISH=${PUBLISH:-$ROOT/build/bench/publish}
D=${BENCH_DIR:-/tmp}/spool-ab-$BASE
peers="1@127.0.0.1:$((BASE+11)),2@127.0.0.1:$((BASE+12)),3@127.0.0.1:$((BASE+13))"
U="127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2)),127.0.0.1:$((BASE+3))"
TCK=$(getconf CLK_TCK)
ticks() { local t=0 p f; for p in "$@"; do f=$(cut -d')' -f2 /proc/$p/stat 2>/dev/null) || continue; set -- $f; t=$((t + ${12} + ${13})); done; echo $t; }
run_one() { # label binary
  local label=$1 bin=$2 pids=() i
  rm -rf $D; mkdir -p $D
  for i in 1 2 3; do
    mkdir -p $D/n$i
    $bin --id $i --listen 127.0.0.1:$((BASE+i)) --cluster-listen 127.0.0.1:$((BASE+10+i)) --peers $peers \
      --data $D/n$i --shards 3 --replicas 3 --anonymous --log-level warn --rate-per-connection 100000000 \
      > $D/n$i.log 2>&1 &
    pids+=($!); echo $! >> $D.pids
  done
  for i in 1 2 3; do for t in $(seq 200); do curl -sf 127.0.0.1:$((BASE+i))/readyz >/dev/null && break; sleep 0.2; done; done
  for inf in $INFS; do
    local c0=$(ticks ${pids[@]}) out
    out=$($PUBLISH --target $TARGET --urls $U --size $SIZE --inflight $inf --duration 4 --warmup 1 2>&1 | grep RESULT)
    local c1=$(ticks ${pids[@]})
    local acked=$(echo "$out" | grep -o 'acked=[0-9]*' | cut -d= -f2)
    local us=$(awk -v c=$((c1-c0)) -v t=$TCK -v a=${acked:-0} 'BEGIN{ if (a>0) printf "%.1f", c/t*1e6/a; else print "nan" }')
    echo "$label inflight=$inf $(echo "$out" | grep -o 'msgs_per_s=[0-9]*\|p50_ms=[0-9.]*\|p99_ms=[0-9.]*\|errors=[0-9]*' | tr '\n' ' ') server_us_per_msg=$us"
  done
  kill ${pids[@]} 2>/dev/null; for p in ${pids[@]}; do while kill -0 $p 2>/dev/null; do sleep 0.1; done; done
  : > $D.pids
}
trap '[ -f $D.pids ] && kill $(cat $D.pids) 2>/dev/null; rm -rf $D $D.pids' EXIT
rm -f $D.pids
for r in $(seq $ROUNDS); do run_one A $A; run_one B $B; done | tee $D.out
# Medians per build and depth, and B against A.
awk '
  { split($2, f, "="); inf = f[2]
    for (i = 3; i <= NF; i++) { split($i, kv, "="); v[$1, inf, kv[1], ++n[$1, inf, kv[1]]] = kv[2] }
    seen[inf] = 1 }
  function med(b, inf, k,   m, i, j, t, a) {
    m = n[b, inf, k]; for (i = 1; i <= m; i++) a[i] = v[b, inf, k, i] + 0
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
  END { for (inf in seen) {
    ma = med("A", inf, "msgs_per_s"); mb = med("B", inf, "msgs_per_s")
    printf "median inflight=%s: A %.0f msg/s p99 %.2f ms %.1f us/msg | B %.0f msg/s p99 %.2f ms %.1f us/msg | msg/s B/A %.2fx, us/msg B/A %.2fx\n", inf,
      ma, med("A", inf, "p99_ms"), med("A", inf, "server_us_per_msg"),
      mb, med("B", inf, "p99_ms"), med("B", inf, "server_us_per_msg"),
      (ma > 0 ? mb / ma : 0), (med("A", inf, "server_us_per_msg") > 0 ? med("B", inf, "server_us_per_msg") / med("A", inf, "server_us_per_msg") : 0) } }' $D.out
rm -f $D.out
