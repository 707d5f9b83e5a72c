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
# Env: DS_SUBSCRIPTIONS=0 skips the 6 "Reserved subscription APIs" tests (on by default: the
# suite has 338 tests only with them; with runConformanceTests({ baseUrl }) alone they are
# skipped), DS_LONG_POLL_TIMEOUT_MS - the suite's per-test budget hint for long-poll tests
# (default 20000; the budget is this + 1 s), DS_REPORT - where to keep vitest's JSON report,
# DS_REFERENCE_LONG_POLL_MS - the reference server's long-poll timeout (default 500).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
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

report="${DS_REPORT:-$(mktemp --suffix=.json)}"
start=$(date +%s.%N)
set +e
DS_BASE_URL="$base" npx --no-install vitest run --config vitest.config.mjs \
  --reporter=default --reporter=json --outputFile.json="$report" "$@"
rc=$?
set -e
end=$(date +%s.%N)

node - "$report" "$start" "$end" "$rc" <<'JS'
const fs = require("fs")
const [report, start, end, rc] = process.argv.slice(2)
let r
try { r = JSON.parse(fs.readFileSync(report, "utf8")) } catch (e) {
  console.log(`durable-streams: no report (vitest exit ${rc})`)
  console.log("0 passed, 1 failed")
  process.exit(1)
}
const failed = []
for (const f of r.testResults || [])
  for (const a of f.assertionResults || [])
    if (a.status === "failed") failed.push(a.fullName || a.title)
const secs = (Number(end) - Number(start)).toFixed(1)
if (failed.length) {
  console.log(`failed tests (${failed.length}):`)
  for (const n of failed) console.log(`  - ${n}`)
}
const skipped = r.numPendingTests + (r.numTodoTests || 0)
console.log(`durable-streams: ${r.numTotalTests} tests in ${secs} s`)
console.log(`durable-streams: ${r.numPassedTests} passed, ${r.numFailedTests} failed` +
  (skipped ? `, ${skipped} skipped` : ""))
process.exit(r.numFailedTests === 0 && r.numPassedTests > 0 && r.success !== false ? 0 : 1)
JS
