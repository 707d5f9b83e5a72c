/*
 * Server-Sent Events: GET /v1/channels/{channel}/events streams one channel as text/event-stream.
 *
 *   retry: <ms>                      reconnect hint, once at the start
 *   : attached <serial>              the channel's last serial when the stream attached
 *   id: <serial>                     one event per record; `data` is the same JSON object the
 *   event: message                   realtime protocol sends (type "message"; presence records
 *   data: {"type":"message",...}     are "event: presence" with type "presence")
 *
 *   : hb                             a comment every heartbeat_ms keeps proxies from timing out
 *
 * Where the stream starts: the Last-Event-ID header (what EventSource sends when it reconnects)
 * resumes exactly after that serial and wins over the query; otherwise ?from=start (whole
 * history), ?from=<serial> (after it), ?from=live (default) or ?last=N (the last N records, then
 * live). The join itself is gateway/attach.h, so reconnecting with Last-Event-ID yields every
 * record once, in order.
 *
 * Ephemeral messages and interrupts (gateway/ai_ephemeral.h, docs/ai-semantics.md) are never
 * stored, so they come without an id: line (the browser's Last-Event-ID stays the last stored
 * serial and a reconnect resumes exactly; they are not replayed):
 *
 *   event: ephemeral                 every ephemeral message on the channel
 *   data: {"type":"ephemeral","channel":..,"name":"typing","data":..,"clientId":..,"timestamp":..}
 *
 *   event: interrupt                 only when the stream's client id is the turn holder's
 *   data: {"type":"interrupt","to":"turn","holder":..,"epoch":..,"data":..,...}
 *
 * The stream's client id is its credentials' one (JWT), else ?clientId= (as on /v1/realtime).
 * They are best effort: a stream whose queue is over send_buffer_bytes skips them.
 *
 * Backpressure: history pages are read only while the response's queued bytes are at most half
 * of send_buffer_bytes; if live traffic pushes the queue past send_buffer_bytes the stream ends
 * (the client reconnects with Last-Event-ID and loses nothing). A failed attachment sends
 * "event: error" with {"code","message"} and ends the stream. Auth is the realtime one
 * (?key=, ?token=, Authorization) plus the subscribe capability on the channel.
 *
 * Each stream has one owner (struct sse_stream) and one completion path (sse_finish): the
 * attachment and the heartbeat timer are closed, then spool_http_stream_end() completes the
 * request once the timer handle is closed.
 */
#ifndef SPOOL_GATEWAY_SSE_H
#define SPOOL_GATEWAY_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/node.h"
#include "gateway/auth.h"
#include "gateway/http_server.h"

struct spool_sse_config {
    uint64_t heartbeat_ms;      /* comment cadence; 0 = none */
    uint64_t retry_ms;          /* the retry: hint */
    uint64_t send_buffer_bytes; /* per stream */
};

struct spool_counter;
struct spool_realtime;
struct sse_stream;

struct spool_sse {
    uv_loop_t *loop;
    struct spool_node *node;
    const struct spool_keyring *keys;
    struct spool_sse_config cfg;
    struct spool_counter *messages_out; /* optional (gateway/metrics.h) */
    struct spool_counter *bytes_out;    /* optional: their data bytes */
    struct spool_realtime *rt;          /* optional: its encode-once cache (else per stream) */
    struct sse_stream *streams;         /* open streams, doubly linked (for ephemerals) */
};

void spool_sse_init(struct spool_sse *s, uv_loop_t *loop, struct spool_node *node,
                    const struct spool_keyring *keys, const struct spool_sse_config *cfg);
/* spool_http_handler for GET /v1/channels/{channel}/events; `arg` is the struct spool_sse and
 * req->params[0] the channel. Streams end on their own when the server drains. */
void spool_sse_handle(void *arg, struct spool_http_req *req);
/* Whether a stream of `s` follows `channel` (so the caller can skip encoding). */
bool spool_sse_has_streams(const struct spool_sse *s, const char *channel);
/* Writes `event: <type>` / `data: <json>` (no id:) to every stream following `channel`; when `to`
 * is not NULL, only to streams whose client id is `to` (never when it is ""). Streams whose queue
 * is over send_buffer_bytes skip it. Returns how many streams it was written to. */
size_t spool_sse_ephemeral(struct spool_sse *s, const char *channel, const char *type,
                           const char *to, const char *json, size_t len);

#endif
