#!/usr/bin/env bash
# CORS on /v1/channels (REST and SSE) with --cors-origins: allowed origins get
# Access-Control-Allow-Origin + Vary: Origin on every answer (errors and SSE streams included),
# preflights get 204 with the methods and headers a browser needs; other origins, other paths and
# a node without the flag get no CORS headers; /v1/stream keeps Durable Streams' own CORS.
. "$(dirname "$0")/lib.sh"
checks=0
ok() { checks=$((checks + 1)); echo "ok $checks - $*"; }
fail() { echo "FAIL: $*"; cat "$WORK/h" 2>/dev/null; tail -20 "$WORK/spoold.log"; exit 1; }
# head METHOD PATH [curl args]: response headers into $WORK/h, status echoed.
head_of() {
  local m=$1 p=$2; shift 2
  curl -sS --max-time 5 -o /dev/null -D "$WORK/h" -w '%{http_code}' -X "$m" "$@" "http://127.0.0.1:$PORT$p" || true
}
has() { grep -qi "^$1: $2"$'\r'"\?$" "$WORK/h"; }
hasnt() { ! grep -qi "^$1:" "$WORK/h"; }
A=https://app.example.com

spool_start
[ "$(head_of GET /v1/channels/c/messages -H "Origin: $A")" = 200 ] && hasnt Access-Control-Allow-Origin ||
  fail "no --cors-origins: no CORS headers"
[ "$(head_of OPTIONS /v1/channels/c/messages -H "Origin: $A" -H 'Access-Control-Request-Method: POST')" != 204 ] ||
  fail "no --cors-origins: no preflight answer"
ok "without --cors-origins nothing changes"
spool_stop

spool_start --cors-origins " $A ,https://other.example"
[ "$(head_of POST /v1/channels/c/messages -H "Origin: $A" -H 'Content-Type: application/json' --data '{"data":"hi"}')" = 201 ] &&
  has Access-Control-Allow-Origin "$A" && has Vary Origin || fail "publish from an allowed origin"
ok "publish: Access-Control-Allow-Origin and Vary: Origin"
[ "$(head_of GET /v1/channels/c/messages -H "Origin: $A")" = 200 ] && has Access-Control-Allow-Origin "$A" ||
  fail "history from an allowed origin"
[ "$(head_of POST /v1/channels/c/messages -H "Origin: $A" -H 'Content-Type: application/json' --data '{')" = 400 ] &&
  has Access-Control-Allow-Origin "$A" || fail "an error answer carries the CORS headers"
ok "history and error answers carry them"
code=$(head_of OPTIONS /v1/channels/c/messages -H "Origin: $A" -H 'Access-Control-Request-Method: POST' \
  -H 'Access-Control-Request-Headers: authorization, content-type')
[ "$code" = 204 ] && has Access-Control-Allow-Origin "$A" && has Access-Control-Allow-Methods 'GET, POST, OPTIONS' &&
  has Access-Control-Allow-Headers 'Authorization, Content-Type, Last-Event-ID' && has Access-Control-Max-Age '[0-9]*' ||
  fail "preflight: got $code"
ok "preflight answered 204 with methods and headers"
# SSE: the stream stays open; curl stops after a second with the head already received.
curl -s --max-time 1 -o /dev/null -D "$WORK/h" -H "Origin: $A" "http://127.0.0.1:$PORT/v1/channels/c/events?from=start" || true
grep -q '^HTTP/1.1 200' "$WORK/h" && has Content-Type text/event-stream && has Access-Control-Allow-Origin "$A" ||
  fail "SSE stream from an allowed origin"
ok "SSE stream carries them"
[ "$(head_of GET /v1/channels/c/messages -H 'Origin: https://evil.example')" = 200 ] && hasnt Access-Control-Allow-Origin ||
  fail "another origin gets no CORS headers"
[ "$(head_of OPTIONS /v1/channels/c/messages -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST')" != 204 ] ||
  fail "another origin's preflight is not approved"
[ "$(head_of GET /healthz -H "Origin: $A")" = 200 ] && hasnt Access-Control-Allow-Origin || fail "paths outside /v1/channels"
ok "other origins and other paths: untouched"
head_of OPTIONS /v1/stream/cors-check -H "Origin: $A" -H 'Access-Control-Request-Method: PUT' >/dev/null
has Access-Control-Allow-Origin '\*' && hasnt Vary || fail "/v1/stream keeps its own CORS"
ok "/v1/stream keeps Durable Streams' CORS"
spool_stop

spool_start --cors-origins '*'
[ "$(head_of GET /v1/channels/c/messages -H 'Origin: http://localhost:5173')" = 200 ] &&
  has Access-Control-Allow-Origin 'http://localhost:5173' || fail "* allows any origin"
ok "* allows any origin (echoed)"
spool_stop
echo "cors: $checks checks passed"
