#!/usr/bin/env bash
# Publish benchmark: 3-node Spool (3 shards x 3 replicas, fsync per commit) against a 3-node NATS
# JetStream cluster with one R3 file-storage stream, same load, same run, interleaved repeats.
#
#   bench/cluster.sh [--repeats N] [--duration S] [--sizes "100 1024"] [--inflights "1 64 256"]
#                    [--targets "spool spool-ws nats"] [--only TARGET] [--raw FILE]
#
# Targets: spool = HTTP POST, one request per connection, connections round-robin over the nodes;
# spool-ws = the realtime WebSocket protocol, one connection per node, publish frames acked by
# msgSerial, many in flight per connection (the way NATS async publishes); nats = JetStream.
#
# Environment: SPOOLD (build/spoold), PUBLISH (build/bench/publish), BENCH_DIR (a fresh temporary
# directory, removed at exit), NATS_MSG_ID=1 to send a Nats-Msg-Id with each JetStream publish,
# NATS_STREAMS=K to spread the load over K R3 streams (K Raft groups, like Spool's shards),
# SPOOL_PIPELINE=P to pipeline P requests per HTTP connection (default 1: in flight = connections).
# Everything listens on 127.0.0.1 below 32768 and is stopped on exit. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"

REPEATS=3
DURATION=5
WARMUP=1
SIZES="100 1024"
INFLIGHTS="1 64 256"
TARGETS="spool spool-ws nats"
RAW=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --inflights) INFLIGHTS=$2; shift 2 ;;
    --only|--targets) TARGETS=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bench_check_repeats "$REPEATS"

SPOOLD=${SPOOLD:-$ROOT/build/spoold}
PUBLISH=${PUBLISH:-$ROOT/build/bench/publish}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || true)}
NATS_MSG_ID=${NATS_MSG_ID:-0}
NATS_STREAMS=${NATS_STREAMS:-1}
SPOOL_PIPELINE=${SPOOL_PIPELINE:-1}

# Ports (below the ephemeral range 32768-60999).
SPOOL_HTTP=(18081 18082 18083)
SPOOL_CLUSTER=(17081 17082 17083)
NATS_CLIENT=(14221 14222 14223)
NATS_ROUTE=(16221 16222 16223)

want() { # system: spool (either Spool target) or nats
  local t
  for t in $TARGETS; do
    case "$t" in "$1" | "$1"-*) return 0 ;; esac
  done
  return 1
}

bench_need_built "$PUBLISH"
if want spool; then bench_need_built "$SPOOLD"; fi
if want nats; then [ -n "$NATS_SERVER" ] || { echo "no nats-server: apt-get install nats-server" >&2; exit 1; }; fi

bench_dir spool-bench
NATS_PIDS=()
bench_traps

# ---------------------------------------------------------------- NATS JetStream, 3 nodes
start_nats() {
  local routes="" i
  for i in 0 1 2; do routes+="nats-route://127.0.0.1:${NATS_ROUTE[$i]}, "; done
  for i in 0 1 2; do
    local d=$BENCH_DIR/nats$((i + 1))
    mkdir -p "$d/js"
    cat > "$d/nats.conf" <<EOF
server_name: n$((i + 1))
host: 127.0.0.1
port: ${NATS_CLIENT[$i]}
jetstream {
  store_dir: "$d/js"
  max_mem: 1G
  max_file: 20G
}
cluster {
  name: bench
  host: 127.0.0.1
  port: ${NATS_ROUTE[$i]}
  routes: [ ${routes%, } ]
}
EOF
    "$NATS_SERVER" -c "$d/nats.conf" > "$d/log" 2>&1 &
    PIDS+=($!)
    NATS_PIDS+=($!)
  done
  local deadline=$((SECONDS + 30))
  for i in 0 1 2; do
    bench_wait_tcp "${NATS_CLIENT[$i]}" "$deadline" 0.2 "nats-server $((i + 1)) not listening"
  done
  # The stream is (re)created by the first publish run; it retries until JetStream has a
  # meta leader (bounded at 30 s inside publish).
  local urls
  urls=$(nats_urls)
  "$PUBLISH" --target nats --urls "$urls" --create-stream --streams "$NATS_STREAMS" --duration 0.5 --warmup 0 --inflight 1 \
    --size 100 > "$BENCH_DIR/nats-setup.out" 2>&1 || {
    echo "NATS stream setup failed:" >&2; cat "$BENCH_DIR/nats-setup.out" >&2
    tail -n 5 "$BENCH_DIR"/nats*/log >&2; exit 1; }
  echo "nats: 3 nodes up, $NATS_STREAMS stream(s) BENCH (R3, file storage) created" >&2
}
nats_urls() { echo "nats://127.0.0.1:${NATS_CLIENT[0]},nats://127.0.0.1:${NATS_CLIENT[1]},nats://127.0.0.1:${NATS_CLIENT[2]}"; }

# ---------------------------------------------------------------- Spool, 3 nodes
start_spool() {
  bench_start_spool3
  echo "spool: 3 nodes ready (3 shards x 3 replicas)" >&2
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
{
  bench_date_line
  want spool && echo "spoold: $SPOOLD: $("$SPOOLD" --version 2>&1 | tr '\n' ' ')"
  want nats && echo "nats-server: $("$NATS_SERVER" --version 2>&1)"
  echo "runs: $REPEATS x ${DURATION}s (+${WARMUP}s warm-up) per scenario; load average at start: $LOAD0"
} | tee "$BENCH_DIR/header" >&2

want nats && start_nats
want spool && start_spool

RESULTS=$BENCH_DIR/results
: > "$RESULTS"
run_one() { # system size inflight repeat
  local sys=$1 size=$2 inf=$3 rep=$4 out
  local common=(--size "$size" --inflight "$inf" --duration "$DURATION" --warmup "$WARMUP")
  local pids c0 w0 c1 w1
  if [ "$sys" = nats ]; then pids=("${NATS_PIDS[@]}"); else pids=("${SPOOL_PIDS[@]}"); fi
  c0=$(cpu_ticks "${pids[@]}"); w0=$(date +%s%N)
  if [ "$sys" = spool ]; then
    out=$("$PUBLISH" --target spool --urls "$(spool_urls)" --pipeline "$SPOOL_PIPELINE" \
      --prefix "b$size-$inf-$rep" "${common[@]}" 2> "$BENCH_DIR/err" | grep '^RESULT' || true)
  elif [ "$sys" = spool-ws ]; then
    out=$("$PUBLISH" --target spool-ws --urls "$(spool_urls)" \
      --prefix "w$size-$inf-$rep" "${common[@]}" 2> "$BENCH_DIR/err" | grep '^RESULT' || true)
  else
    local extra=()
    [ "$NATS_MSG_ID" = 1 ] && extra=(--msg-id)
    out=$("$PUBLISH" --target nats --urls "$(nats_urls)" --prefix bench --streams "$NATS_STREAMS" "${extra[@]}" "${common[@]}" \
      2> "$BENCH_DIR/err" | grep '^RESULT' || true)
  fi
  c1=$(cpu_ticks "${pids[@]}"); w1=$(date +%s%N)
  # Server CPU over the whole run (warm-up, window, drain), in cores.
  [ -n "$out" ] && out+=" srv_cores=$(srv_cores "$c0" "$c1" "$w0" "$w1")"
  if [ -z "$out" ]; then
    echo "  $sys size=$size inflight=$inf: no result: $(head -3 "$BENCH_DIR/err")" >&2
    return
  fi
  head -2 "$BENCH_DIR/err" | sed 's/^/    /' >&2
  echo "$out" | tee -a "$RESULTS" | sed 's/^RESULT /  /' >&2
}

for size in $SIZES; do
  for inf in $INFLIGHTS; do
    for rep in $(seq 1 "$REPEATS"); do
      # Interleaved so that the shared machine's noise lands on every system alike.
      for t in $TARGETS; do run_one "$t" "$size" "$inf" "$rep"; done
    done
  done
done
bench_report_head "$RESULTS" "$RAW"
python3 - "$RESULTS" <<'EOF'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    kv = dict(f.split('=', 1) for f in line.split()[1:])
    rows.setdefault((int(kv['size']), int(kv['inflight']), kv['target']), []).append(kv)
def med(rs, k): return st.median(float(r[k]) for r in rs) if rs else None
def cpu_us(rs):  # server CPU per acknowledged message, from the run's average cores
    v = [float(r['srv_cores']) * 1e6 / float(r['msgs_per_s']) for r in rs
         if 'srv_cores' in r and float(r['msgs_per_s']) > 0]
    return st.median(v) if v else None
def fmt(v, d=0): return '-' if v is None else f'{v:,.{d}f}'
def ratio(x, y): return fmt(x / y, 2) + 'x' if x and y else '-'
keys = sorted({(s, i) for s, i, _ in rows})
modes = [t for t in ('spool', 'spool-ws') if any(k[2] == t for k in rows)] or ['-']
label = {'spool': 'HTTP', 'spool-ws': 'WebSocket', '-': '-'}
print()
print('| size | in flight | spool via | spool msg/s | p50 ms | p99 ms | nats msg/s | p50 ms | p99 ms '
      '| msg/s spool/nats | p99 spool/nats | server CPU us/msg spool, nats | runs | errors |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
for s, i in keys:
    b = rows.get((s, i, 'nats'), [])
    for m in modes:
        a = rows.get((s, i, m), [])
        ta, tb = med(a, 'msgs_per_s'), med(b, 'msgs_per_s')
        pa, pb = med(a, 'p99_ms'), med(b, 'p99_ms')
        ea = sum(int(r['errors']) for r in a); eb = sum(int(r['errors']) for r in b)
        print(f'| {s} B | {i} | {label[m]} | {fmt(ta)} | {fmt(med(a, "p50_ms"), 2)} | {fmt(pa, 2)} | {fmt(tb)} | '
              f'{fmt(med(b, "p50_ms"), 2)} | {fmt(pb, 2)} | **{ratio(ta, tb)}** | {ratio(pa, pb)} | '
              f'{fmt(cpu_us(a), 1)}, {fmt(cpu_us(b), 1)} | {len(a)}/{len(b)} | {ea}/{eb} |')
print()
# Per-run throughput ratios (run k of a Spool mode against run k of NATS, which ran right after it).
for s, i in keys:
    b = rows.get((s, i, 'nats'), [])
    for m in modes:
        a = rows.get((s, i, m), [])
        rs = [float(x['msgs_per_s']) / float(y['msgs_per_s']) for x, y in zip(a, b) if float(y['msgs_per_s']) > 0]
        if rs:
            print(f'per-run ratio {s} B, {i} in flight, {label[m]}: {min(rs):.2f}-{max(rs):.2f}')
print('Medians over the runs (spool and nats runs alternate). Spool: every commit is fsynced on a quorum')
print('before the 201. NATS JetStream 2.9: acknowledged once a quorum holds the message, BEFORE fsync')
print('(it flushes periodically; 2.9 has no per-message sync setting).')
EOF
