#!/usr/bin/env bash
# Runs the pinned Durable Streams conformance suite (@durable-streams/server-conformance-tests
# 0.3.6, 338 tests) against a server and prints the counts.
#
#   tests/durable/run.sh http://127.0.0.1:8080          # a running server (origin, no path)
#   tests/durable/run.sh --reference                    # start the npm reference server, run, stop
#   tests/durable/run.sh URL -t "Idempotent Producer"   # extra args go to vitest (filter by name)
#
# Installs the pinned packages with `npm ci` when node_modules is missing or stale.
# The output ends with "durable-streams: N passed, N failed" (and skipped, when any); the exit
# status is 0 only when every test that ran passed and at least one ran.
# Env: DS_SUBSCRIPTIONS=0   skip the 6 "Reserved subscription APIs" tests (on by default: the
#                           suite has 338 tests only with them)
#      DS_RUN_TIMEOUT=S     stop a hanging run after S seconds (default 1500); unfinished
#                           tests count as failed
#      DS_LONG_POLL_TIMEOUT_MS  the suite's budget hint for long-poll tests (default 20000;
#                           each such test may take this + 1 s)
#      DS_REPORT=FILE       keep the per-test results ("state<TAB>name" lines)
#      DS_REFERENCE_LONG_POLL_MS  long-poll timeout of the reference server (default 500)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

if ! { [ -d node_modules ] && npm ls --depth=0 >/dev/null 2>&1; }; then
  npm ci --no-audit --no-fund >/dev/null
fi

ref_pid=""
cleanup() {
  if [ -n "$ref_pid" ]; then kill "$ref_pid" 2>/dev/null || true; wait "$ref_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

base="$1"; shift
if [ "$base" = "--reference" ]; then
  port="${DS_REFERENCE_PORT:-$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')}"
  log="$(mktemp)"
  DS_REFERENCE_WEBHOOKS=1 node reference-server.mjs "$port" "${DS_REFERENCE_LONG_POLL_MS:-500}" >"$log" 2>&1 &
  ref_pid=$!
  for _ in $(seq 100); do grep -q '^listening' "$log" && break; sleep 0.1; done
  grep -q '^listening' "$log" || { cat "$log" >&2; echo "reference server did not start" >&2; exit 1; }
  base="http://127.0.0.1:$port"
  echo "reference server (@durable-streams/server) at $base"
fi
base="${base%/}"

# Fail fast when nothing answers at the base URL (the suite would otherwise spend many minutes
# on connection errors and client retries).
if ! node -e '
  fetch(process.argv[1] + "/v1/stream/", { signal: AbortSignal.timeout(5000) })
    .then(() => process.exit(0), (e) => { console.error(String(e.cause || e)); process.exit(1) })
' "$base"; then
  echo "durable-streams: no HTTP server answers at $base"
  echo "durable-streams: 0 passed, ${DS_EXPECTED_TESTS:-338} failed"
  exit 1
fi

report="${DS_REPORT:-$(mktemp)}"
: >"$report"
start=$(date +%s.%N)
set +e
DS_BASE_URL="$base" DS_REPORT="$report" timeout -k 10 "${DS_RUN_TIMEOUT:-1500}" \
  npx --no-install vitest run --config vitest.config.mjs "$@"
rc=$?
set -e
end=$(date +%s.%N)

node - "$report" "$start" "$end" "$rc" "${DS_EXPECTED_TESTS:-338}" "${DS_RUN_TIMEOUT:-1500}" <<'JS'
const fs = require("fs")
const [report, start, end, rc, expected, limit] = process.argv.slice(2)
const counts = { passed: 0, failed: 0, skipped: 0 }
const failed = []
for (const line of fs.readFileSync(report, "utf8").split("\n")) {
  if (!line) continue
  const [state, name] = line.split("\t")
  if (state in counts) counts[state]++
  if (state === "failed") failed.push(name)
}
const secs = (Number(end) - Number(start)).toFixed(1)
if (failed.length) {
  console.log(`failed tests (${failed.length}):`)
  for (const n of failed) console.log(`  - ${n}`)
}
const seen = counts.passed + counts.failed + counts.skipped
let unfinished = 0
if (rc === "124" || rc === "137") {
  unfinished = Math.max(0, Number(expected) - seen)
  console.log(`durable-streams: stopped after ${limit} s (DS_RUN_TIMEOUT); ${unfinished} tests did not finish and count as failed`)
} else if (seen === 0) {
  console.log(`durable-streams: vitest reported no test (exit ${rc})`)
  unfinished = Number(expected)
}
console.log(`durable-streams: ${seen} tests in ${secs} s`)
const nfailed = counts.failed + unfinished
console.log(`durable-streams: ${counts.passed} passed, ${nfailed} failed` +
  (counts.skipped ? `, ${counts.skipped} skipped` : ""))
process.exit(nfailed === 0 && counts.passed > 0 && rc === "0" ? 0 : 1)
JS
