#!/usr/bin/env bash
# Durable Streams benchmark: a 3-node Spool cluster (3 shards x 3 replicas, fsync per commit)
# against the reference server @durable-streams/server 0.3.7 (ONE Node process, in-memory store,
# started by tests/durable/reference-server.mjs), same machine, same run, same C client,
# alternating runs:
#   (1) round trip: a reader long-polls a stream while a writer appends 100 B messages one at a
#       time; latency = POST start -> the reader has the message; p50/p99 over --count messages;
#   (2) throughput: --conns concurrent writers (one connection each, one request at a time)
#       appending 100 B to --streams streams for --duration seconds; msgs/s.
#
#   bench/durable_streams.sh [--repeats N] [--count N] [--follower-count N] [--conns N]
#                            [--streams N] [--duration S] [--warmup S] [--size B] [--raw FILE]
#
# The Spool round trip runs twice: writer and reader both on the node leading the stream's shard,
# and writer and reader on the two other nodes (one each: forwarded append, read on a follower);
# the latter with --follower-count messages (100), as each takes about two Raft heartbeats.
# Environment: SPOOLD (build/spoold), DSBENCH (build/bench/durable_streams), BENCH_DIR (a fresh
# temporary directory, removed at exit).
# Everything listens on 127.0.0.1 below 32768 and is stopped on exit. See bench/DURABLE_STREAMS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"

REPEATS=3
COUNT=2000
FOLLOWER_COUNT=100
CONNS=64
STREAMS=8
DURATION=5
WARMUP=1
SIZE=100
RAW=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --follower-count) FOLLOWER_COUNT=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bench_check_repeats "$REPEATS"

SPOOLD=${SPOOLD:-$ROOT/build/spoold}
DSBENCH=${DSBENCH:-$ROOT/build/bench/durable_streams}
bench_need_built "$SPOOLD"
bench_need_built "$DSBENCH"
command -v node > /dev/null || { echo "no node" >&2; exit 1; }
if [ ! -d "$ROOT/tests/durable/node_modules/@durable-streams/server" ]; then
  (cd "$ROOT/tests/durable" && npm ci --no-audit --no-fund) >&2
fi

# Ports (below the ephemeral range 32768-60999), apart from bench/cluster.sh's.
SPOOL_HTTP=(18191 18192 18193)
SPOOL_CLUSTER=(17191 17192 17193)
REF_PORT=18190

bench_dir spool-dsbench
REF_PID=""
bench_traps

# ---------------------------------------------------------------- reference server, 1 process
start_ref() {
  (cd "$ROOT/tests/durable" && exec node reference-server.mjs "$REF_PORT" 500) > "$BENCH_DIR/ref.log" 2>&1 &
  REF_PID=$!
  PIDS+=("$REF_PID")
  local deadline=$((SECONDS + 30))
  until grep -q '^listening' "$BENCH_DIR/ref.log" 2> /dev/null; do
    kill -0 "$REF_PID" 2> /dev/null || { echo "reference server exited:" >&2; cat "$BENCH_DIR/ref.log" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "reference server not listening after 30 s" >&2; exit 1; }
    sleep 0.2
  done
  echo "reference: $(cat "$BENCH_DIR/ref.log") (pid $REF_PID, one Node process, in-memory store)" >&2
}

# ---------------------------------------------------------------- Spool, 3 nodes
start_spool() {
  bench_start_spool3 --long-poll-timeout 500ms
  echo "spool: 3 nodes ready (3 shards x 3 replicas, fsync per commit)" >&2
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
{
  bench_date_line
  echo "spoold: $SPOOLD: $("$SPOOLD" --version 2>&1 | tr '\n' ' ')"
  echo "reference: @durable-streams/server $(node -p "require('$ROOT/tests/durable/node_modules/@durable-streams/server/package.json').version"), node $(node --version)"
  echo "runs: $REPEATS repeats; rtt $COUNT msgs of $SIZE B ($FOLLOWER_COUNT with the Spool reader on a follower);" \
       "tput $CONNS writers x $STREAMS streams, ${DURATION}s (+${WARMUP}s warm-up); load average at start: $LOAD0"
} | tee "$BENCH_DIR/header" >&2

start_ref
start_spool

RESULTS=$BENCH_DIR/results
: > "$RESULTS"
leader_of() { # channel -> node id (1..3) of its shard's leader, as node 1 knows it
  curl -fsS -m 2 "http://127.0.0.1:${SPOOL_HTTP[0]}/v1/channels/$1" | sed -n 's/.*"leader":\([0-9]*\).*/\1/p'
}
run_one() { # system(spool-leader|spool-follower|spool|ref) mode repeat
  local sys=$1 mode=$2 rep=$3 out args pids c0 w0 c1 w1 extra=""
  if [ "$sys" != ref ]; then
    pids=("${SPOOL_PIDS[@]}")
    if [ "$mode" = rtt ]; then
      # The stream's name decides its shard; its leader is known before it exists.
      local name="ds-rtt-$sys-$rep-$RANDOM$RANDOM" l w r
      l=$(leader_of "$name")
      [[ "$l" =~ ^[123]$ ]] || { echo "  $sys rtt: no leader for $name" >&2; return; }
      if [ "$sys" = spool-leader ]; then w=$l; r=$l; else w=$((l % 3 + 1)); r=$(((l + 1) % 3 + 1)); fi
      args=(--stream "$name" --write-url "127.0.0.1:${SPOOL_HTTP[$((w - 1))]}" --read-url "127.0.0.1:${SPOOL_HTTP[$((r - 1))]}")
      extra=" leader=$l writer=$w reader=$r"
    else
      args=(--urls "$(spool_urls)")
    fi
    args+=(--base /v1/stream)
  else
    pids=("$REF_PID")
    args=(--urls "127.0.0.1:$REF_PORT" --base "")
  fi
  if [ "$mode" = rtt ]; then
    local n=$COUNT
    [ "$sys" = spool-follower ] && n=$FOLLOWER_COUNT
    args+=(--mode rtt --count "$n" --warmup-count $((n < 100 ? n / 10 : 100)))
  else
    args+=(--mode tput --conns "$CONNS" --streams "$STREAMS" --duration "$DURATION" --warmup "$WARMUP")
  fi
  c0=$(cpu_ticks "${pids[@]}"); w0=$(date +%s%N)
  out=$("$DSBENCH" "${args[@]}" --size "$SIZE" --prefix "ds-$mode-$rep" 2> "$BENCH_DIR/err" | grep '^RESULT' || true)
  c1=$(cpu_ticks "${pids[@]}"); w1=$(date +%s%N)
  if [ -z "$out" ]; then
    echo "  $sys $mode: no result: $(head -3 "$BENCH_DIR/err")" >&2
    return
  fi
  out+="$extra target=$sys srv_cores=$(srv_cores "$c0" "$c1" "$w0" "$w1")"
  head -2 "$BENCH_DIR/err" | sed 's/^/    /' >&2
  echo "$out" | tee -a "$RESULTS" | sed 's/^RESULT /  /' >&2
}

for rep in $(seq 1 "$REPEATS"); do
  # Alternating, so that the shared machine's noise lands on both alike.
  run_one spool-leader rtt "$rep"
  run_one ref rtt "$rep"
  run_one spool-follower rtt "$rep"
  run_one spool tput "$rep"
  run_one ref tput "$rep"
done
bench_report_head "$RESULTS" "$RAW"
python3 - "$RESULTS" <<'EOF'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    kv = dict(f.split('=', 1) for f in line.split()[1:])
    rows.setdefault((kv['mode'], kv['target']), []).append(kv)
def med(rs, k): return st.median(float(r[k]) for r in rs) if rs else None
def fmt(v, d=0): return '-' if v is None else f'{v:,.{d}f}'
def ratio(x, y): return fmt(x / y, 2) + 'x' if x and y else '-'
def cpu_us(rs):
    v = [float(r['srv_cores']) * 1e6 / float(r['msgs_per_s']) for r in rs if float(r.get('msgs_per_s', 0)) > 0]
    return st.median(v) if v else None
a, c, b = rows.get(('rtt', 'spool-leader'), []), rows.get(('rtt', 'spool-follower'), []), rows.get(('rtt', 'ref'), [])
print()
print('Round trip, append -> long-poll reader has it (ms; medians over the runs of each run\'s percentile)')
print()
print('| | Spool, writer+reader on the stream\'s leader node | Spool, writer and reader on the two other nodes | reference (1 process, in memory) | Spool/reference (leader, others) |')
print('|---|---|---|---|---|')
for k, name in (('p50_ms', 'p50'), ('p99_ms', 'p99'), ('max_ms', 'max'), ('ack_p50_ms', 'append ack p50'), ('ack_p99_ms', 'append ack p99')):
    x, z, y = med(a, k), med(c, k), med(b, k)
    print(f'| {name} | {fmt(x, 2)} | {fmt(z, 2)} | {fmt(y, 2)} | **{ratio(x, y)}**, **{ratio(z, y)}** |')
def nf(rs): return sum(int(r.get('not_found_after_create', 0)) for r in rs)
print(f'| runs, errors | {len(a)}, {sum(int(r["errors"]) for r in a)} | {len(c)}, {sum(int(r["errors"]) for r in c)} | {len(b)}, {sum(int(r["errors"]) for r in b)} | |')
print(f'| 404s right after create (1 ms apart, all runs) | {nf(a)} | {nf(c)} | {nf(b)} | |')
a, b = rows.get(('tput', 'spool'), []), rows.get(('tput', 'ref'), [])
print()
print('Throughput, concurrent writers appending (msg/s acknowledged; medians over the runs)')
print()
print('| | Spool (3 nodes, R3, fsync) | reference (1 process, in memory) | Spool/reference |')
print('|---|---|---|---|')
for k, name, d in (('msgs_per_s', 'msg/s', 0), ('p50_ms', 'append p50 ms', 2), ('p99_ms', 'append p99 ms', 2)):
    x, y = med(a, k), med(b, k)
    print(f'| {name} | {fmt(x, d)} | {fmt(y, d)} | {"**" + ratio(x, y) + "**" if k == "msgs_per_s" else ratio(x, y)} |')
print(f'| runs (msg/s each) | {", ".join(fmt(float(r["msgs_per_s"])) for r in a)} | {", ".join(fmt(float(r["msgs_per_s"])) for r in b)} | |')
print(f'| server CPU us/msg | {fmt(cpu_us(a), 1)} | {fmt(cpu_us(b), 1)} | {ratio(cpu_us(a), cpu_us(b))} |')
print(f'| errors | {sum(int(r["errors"]) for r in a)} | {sum(int(r["errors"]) for r in b)} | |')
print()
print('Spool: 3 spoold processes, every append committed on a quorum of 3 replicas and fsynced before')
print('its 204. Reference: @durable-streams/server is a SINGLE Node process with an in-memory store')
print('(no replication, no disk). Same machine, same C client, runs alternate.')
EOF
