#!/usr/bin/env bash
# Fan-out benchmark: one publisher, 1,000 and 10,000 WebSocket subscribers on one channel of a
# single node, Spool (/v1/realtime) against NATS core (nats-server's WebSocket listener), same run,
# interleaved repeats; plus the server memory per idle attached connection at 10,000 connections.
#
#   bench/fanout.sh [--repeats N] [--duration S] [--warmup S] [--scenarios "SUBS:RATE ..."]
#                   [--idle-subs N] [--raw FILE] [--workers N]
#
# A scenario SUBS:RATE is SUBS subscribers and RATE published msg/s (offered deliveries/s =
# SUBS x RATE); default "1000:100 1000:1000 10000:10 10000:100" (100k and 1M deliveries/s each).
# Each repeat starts both servers fresh, measures idle memory first, then runs every scenario on
# Spool then NATS. --workers is spoold's (event loops serving clients; default 0 = one per CPU, as spoold).
# Environment: SPOOLD (build/spoold), FANOUT (build/bench/fanout), BENCH_DIR.
# Ports 18095/17095 (spoold), 14295/14296 (nats TCP/WebSocket), all 127.0.0.1; stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"

REPEATS=3
DURATION=5
WARMUP=1
SCENARIOS="1000:100 1000:1000 10000:10 10000:100"
IDLE_SUBS=10000
RAW=""
WORKERS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --idle-subs) IDLE_SUBS=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bench_check_repeats "$REPEATS"

SPOOLD=${SPOOLD:-$ROOT/build/spoold}
FANOUT=${FANOUT:-$ROOT/build/bench/fanout}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || true)}
bench_need_built "$SPOOLD"
bench_need_built "$FANOUT"
[ -n "$NATS_SERVER" ] || { echo "no nats-server: apt-get install nats-server" >&2; exit 1; }

SPOOL_HTTP=18095
SPOOL_CLUSTER=17095
NATS_TCP=14295
NATS_WS=14296

# 10,000 subscribers + the servers' own descriptors.
ulimit -n 20000 2> /dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_SUBS + 100)) ] || echo "warning: ulimit -n is $(ulimit -n)" >&2

bench_dir spool-fanout
SPOOL_PID=""
NATS_PID=""
stop_servers() {
  bench_stop_pids $SPOOL_PID $NATS_PID
  SPOOL_PID=""
  NATS_PID=""
}
cleanup() {
  stop_servers
  rm -rf "$BENCH_DIR"
}
bench_traps cleanup

start_servers() { # repeat
  local d=$BENCH_DIR/r$1
  rm -rf "$d"
  mkdir -p "$d/spool" "$d/nats"
  cat > "$d/nats/nats.conf" << EOF
host: 127.0.0.1
port: $NATS_TCP
websocket {
  host: 127.0.0.1
  port: $NATS_WS
  no_tls: true
}
EOF
  "$NATS_SERVER" -c "$d/nats/nats.conf" > "$d/nats/log" 2>&1 &
  NATS_PID=$!
  "$SPOOLD" --listen "127.0.0.1:$SPOOL_HTTP" --cluster-listen "127.0.0.1:$SPOOL_CLUSTER" \
    --data "$d/spool/data" --anonymous --log-level warn --rate-per-connection 100000000 --workers "$WORKERS" \
    > "$d/spool/log" 2>&1 &
  SPOOL_PID=$!
  local deadline=$((SECONDS + 60))
  bench_wait_ready "$SPOOL_HTTP" "$deadline" 0.3 "$d/spool/log" "spoold not ready; log:"
  bench_wait_tcp "$NATS_WS" "$deadline" 0.2 "nats-server not listening; log:" "$d/nats/log"
}

RESULTS=$BENCH_DIR/results
: > "$RESULTS"
run() { # system, then fanout arguments
  local sys=$1 pid args out c0 w0 c1 w1
  shift
  if [ "$sys" = spool ]; then
    pid=$SPOOL_PID; args=(--target spool --port "$SPOOL_HTTP")
  else
    pid=$NATS_PID; args=(--target nats --port "$NATS_WS" --pub-port "$NATS_TCP")
  fi
  c0=$(cpu_ticks "$pid"); w0=$(date +%s%N)
  out=$(timeout 120 "$FANOUT" "${args[@]}" "$@" 2> "$BENCH_DIR/err" | grep '^RESULT' || true)
  c1=$(cpu_ticks "$pid"); w1=$(date +%s%N)
  if [ -z "$out" ]; then
    echo "  $sys $*: no result: $(head -3 "$BENCH_DIR/err")" >&2
    return
  fi
  out+=" srv_cores=$(srv_cores "$c0" "$c1" "$w0" "$w1")"
  head -3 "$BENCH_DIR/err" | grep -v 'subscribers ready' | sed 's/^/    /' >&2 || true
  echo "$out" | tee -a "$RESULTS" | sed 's/^RESULT /  /' >&2
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
{
  bench_date_line
  echo "spoold: $SPOOLD ($("$SPOOLD" --version 2>&1 | head -1)); nats-server: $("$NATS_SERVER" --version 2>&1)"
  echo "runs: $REPEATS x ${DURATION}s (+${WARMUP}s warm-up) per scenario; load average at start: $LOAD0; $(nproc) cores"
} | tee "$BENCH_DIR/header" >&2

for rep in $(seq 1 "$REPEATS"); do
  echo "repeat $rep: fresh servers" >&2
  start_servers "$rep"
  sleep 1
  # Memory per idle connection first, on fresh servers: N attached/subscribed, 3 s settle.
  run spool --subs "$IDLE_SUBS" --idle 3 --rss-pid "$SPOOL_PID" --channel "idle$rep"
  run nats --subs "$IDLE_SUBS" --idle 3 --rss-pid "$NATS_PID" --channel "idle$rep"
  for sc in $SCENARIOS; do
    subs=${sc%%:*}; rate=${sc##*:}
    for sys in spool nats; do
      run "$sys" --subs "$subs" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
        --channel "fan-$subs-$rate-$rep"
    done
  done
  stop_servers
done
bench_report_head "$RESULTS" "$RAW"
python3 - "$RESULTS" << 'EOF'
import sys, statistics as st
runs, idle = {}, {}
for line in open(sys.argv[1]):
    kv = dict(f.split('=', 1) for f in line.split()[1:])
    if kv.get('mode') == 'idle':
        idle.setdefault(kv['target'], []).append(kv)
    elif 'deliveries_per_s' in kv:
        runs.setdefault((int(kv['subs']), int(kv['rate']), kv['target']), []).append(kv)
def med(rs, k): return st.median(float(r[k]) for r in rs) if rs else None
def fmt(v, d=0): return '-' if v is None else f'{v:,.{d}f}'
def ratio(x, y): return fmt(x / y, 2) + 'x' if x and y else '-'
print()
print('| subs | offered deliveries/s | spool deliveries/s | p50 ms | p99 ms | nats deliveries/s | p50 ms | p99 ms '
      '| deliveries/s spool/nats | p50 spool/nats | p99 spool/nats | server cores spool, nats | client cores spool, nats | undelivered 2 s after the end, spool/nats | runs |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
for subs, rate in sorted({(s, r) for s, r, _ in runs}):
    a, b = runs.get((subs, rate, 'spool'), []), runs.get((subs, rate, 'nats'), [])
    da, db = med(a, 'deliveries_per_s'), med(b, 'deliveries_per_s')
    p5a, p5b, p9a, p9b = med(a, 'p50_ms'), med(b, 'p50_ms'), med(a, 'p99_ms'), med(b, 'p99_ms')
    ma = sum(int(r['missing']) + int(r['closed']) for r in a); mb = sum(int(r['missing']) + int(r['closed']) for r in b)
    print(f'| {subs:,} | {subs * rate:,} ({rate:,} msg/s) | {fmt(da)} | {fmt(p5a, 2)} | {fmt(p9a, 2)} | {fmt(db)} | '
          f'{fmt(p5b, 2)} | {fmt(p9b, 2)} | **{ratio(da, db)}** | {ratio(p5a, p5b)} | {ratio(p9a, p9b)} | '
          f'{fmt(med(a, "srv_cores"), 2)}, {fmt(med(b, "srv_cores"), 2)} | '
          f'{fmt(med(a, "client_cpu"), 2)}, {fmt(med(b, "client_cpu"), 2)} | {ma}/{mb} | {len(a)}/{len(b)} |')
print()
if idle:
    print('| memory per idle connection | spool | nats | spool/nats |')
    print('|---|---|---|---|')
    a, b = idle.get('spool', []), idle.get('nats', [])
    ba, bb = med(a, 'bytes_per_conn'), med(b, 'bytes_per_conn')
    subs = a[0]['subs'] if a else (b[0]['subs'] if b else '?')
    print(f'| {int(subs):,} connections, (VmRSS after - before) / N, median of {len(a)}/{len(b)} | '
          f'{fmt(ba / 1024 if ba else None, 1)} KiB | {fmt(bb / 1024 if bb else None, 1)} KiB | {ratio(ba, bb)} |')
    print('  runs (KiB/conn) spool: ' + ', '.join(f'{float(r["bytes_per_conn"])/1024:.1f}' for r in a) +
          '; nats: ' + ', '.join(f'{float(r["bytes_per_conn"])/1024:.1f}' for r in b))
print()
print('Medians over the runs (every repeat on fresh servers; spool and nats alternate). Latency is publish->deliver:')
print('Spool commits (fsync) each message before fanning it out; NATS core keeps nothing. "undelivered" is the')
print('backlog still queued 2 s after the last publish (deliveries, summed over runs; no connection was dropped when')
print('"closed" is 0 in the raw lines), not necessarily a loss.')
EOF
