# shellcheck shell=bash
# Shared pieces of the benchmark scripts (bench/cluster.sh, bench/fanout.sh,
# bench/durable_streams.sh): temporary directory, process clean-up on exit, spoold start-up and
# readiness, CPU accounting. Sourced (not run) after `cd` to the repository root, with ROOT set;
# globals: BENCH_DIR, PIDS, SPOOL_PIDS, SPOOLD, SPOOL_HTTP, SPOOL_CLUSTER, CLK_TCK.

# Fail unless $1 is an executable built by the release build.
bench_need_built() {
  [ -x "$1" ] || { echo "no $1: scripts/build.sh release" >&2; exit 1; }
}

# BENCH_DIR: the caller's, or a fresh /tmp/PREFIX.XXXXXX; removed by bench_cleanup.
bench_dir() { # prefix
  BENCH_DIR=${BENCH_DIR:-$(mktemp -d "/tmp/$1.XXXXXX")}
  mkdir -p "$BENCH_DIR"
}

# SIGTERM the given processes, give each up to 5 s, then SIGKILL and reap it.
bench_stop_pids() {
  local p
  for p in "$@"; do kill "$p" 2> /dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
  done
}

# Every process started in the background is appended to PIDS; all stopped at exit.
PIDS=()
SPOOL_PIDS=()
bench_cleanup() {
  bench_stop_pids "${PIDS[@]}"
  wait 2> /dev/null || true
  rm -rf "$BENCH_DIR"
}
bench_traps() { # [exit handler, default bench_cleanup]
  # shellcheck disable=SC2064 # the handler's name, expanded now on purpose
  trap "${1:-bench_cleanup}" EXIT
  trap 'exit 130' INT TERM
}

# Wait for http://127.0.0.1:PORT/readyz; past DEADLINE (in $SECONDS) print MESSAGE and the
# log's last 20 lines, and exit 1.
bench_wait_ready() { # port deadline interval log message
  until curl -fsS -m 2 "http://127.0.0.1:$1/readyz" > /dev/null 2>&1; do
    if [ $SECONDS -ge "$2" ]; then
      echo "$5" >&2
      tail -20 "$4" >&2; exit 1
    fi
    sleep "$3"
  done
}

# Wait for a TCP listener on 127.0.0.1:PORT; past DEADLINE print MESSAGE (and the log's last 20
# lines if LOG is given), and exit 1.
bench_wait_tcp() { # port deadline interval message [log]
  until (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; do
    if [ $SECONDS -ge "$2" ]; then
      echo "$4" >&2
      [ -z "${5:-}" ] || tail -20 "$5" >&2
      exit 1
    fi
    sleep "$3"
  done
}

# Start a 3-node spoold cluster (3 shards x 3 replicas) on SPOOL_HTTP[0..2] / SPOOL_CLUSTER[0..2],
# data and logs in $BENCH_DIR/spoolN, extra spoold options as arguments; wait (60 s) until every
# node answers /readyz.
bench_start_spool3() { # [extra spoold options]
  local peers="" i
  for i in 0 1 2; do peers+="$((i + 1))@127.0.0.1:${SPOOL_CLUSTER[$i]},"; done
  peers=${peers%,}
  for i in 0 1 2; do
    local d=$BENCH_DIR/spool$((i + 1))
    mkdir -p "$d/data"
    "$SPOOLD" --id $((i + 1)) --listen "127.0.0.1:${SPOOL_HTTP[$i]}" \
      --cluster-listen "127.0.0.1:${SPOOL_CLUSTER[$i]}" --peers "$peers" --data "$d/data" \
      --shards 3 --replicas 3 --anonymous "$@" --log-level warn \
      --rate-per-connection 100000000 > "$d/log" 2>&1 &
    PIDS+=($!)
    SPOOL_PIDS+=($!)
  done
  local deadline=$((SECONDS + 60))
  for i in 0 1 2; do
    bench_wait_ready "${SPOOL_HTTP[$i]}" "$deadline" 0.5 "$BENCH_DIR/spool$((i + 1))/log" \
      "spoold node $((i + 1)) not ready after 60 s; last log lines:"
  done
}
spool_urls() { echo "127.0.0.1:${SPOOL_HTTP[0]},127.0.0.1:${SPOOL_HTTP[1]},127.0.0.1:${SPOOL_HTTP[2]}"; }

# CPU time (clock ticks, user + system, all threads) used so far by the given processes
# (0 for one that is gone).
cpu_ticks() {
  local p t=0 f
  for p in "$@"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2> /dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo $t
}
CLK_TCK=$(getconf CLK_TCK)
# Average cores used between two cpu_ticks / `date +%s%N` samples, as "%.2f".
srv_cores() { # c0 c1 w0 w1
  awk -v c=$(($2 - $1)) -v t="$CLK_TCK" -v w=$(($4 - $3)) 'BEGIN { printf "%.2f", (c / t) / (w / 1e9) }'
}

# First header line: date and commit.
bench_date_line() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')"
}

# --repeats is 1..20 in every script.
bench_check_repeats() { # repeats
  [ "$1" -ge 1 ] && [ "$1" -le 20 ] || { echo "--repeats must be 1..20" >&2; exit 2; }
}

# After the last run: keep the RESULT lines if --raw asked for them, then print the run's header
# and the load average at the end, before each script's summary table.
bench_report_head() { # results raw
  [ -n "$2" ] && cp "$1" "$2"
  echo >&2
  cat "$BENCH_DIR/header"
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
}
