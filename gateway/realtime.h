/*
 * The realtime protocol: JSON messages over a WebSocket at GET /v1/realtime (docs/protocol.md
 * is the client-facing description; this is the server side).
 *
 * One struct spool_realtime per gateway holds every realtime connection of the node. A
 * connection is: a struct spool_ws (framing, limits, heartbeats), the authenticated principal,
 * its attachments (gateway/attach.h, one per channel), a publish rate bucket and the publishes
 * still waiting for the node. It lives until the WebSocket reports on_close AND every publish
 * it started has completed (a reference count), so no node callback ever sees freed memory.
 *
 * Encode once. A record delivered to many connections is encoded into one shared WebSocket
 * frame (struct spool_wsframe): the realtime object remembers the frames of the most recently
 * encoded records (channel + serial), and every attachment delivering the same record sends
 * that frame. The node delivers one record to all local subscribers back to back, so a small
 * cache hits for all but the first.
 *
 * Resume (gateway/resume.h). On "connected", after every attach/detach, and every
 * min(heartbeat, resume window / 4) the server sends {"type":"resumeKey"} with a fresh key
 * listing the attachments and their last written serials. A client reconnects with
 * ?resume=<key> (and optionally &serials=<JSON object channel -> last serial processed>) or
 * sends {"type":"resume","resumeKey":...,"serials":{...}} as its first message; the
 * attachments are re-created from those serials via the same join as any attach, so the
 * messages missed arrive in order with no gap and no duplicate.
 *
 * Errors are {"type":"error","error":{"code","message"}} and never close the connection unless
 * the WebSocket layer itself must (limits: 1009, bad UTF-8: 1007, send buffer: 1008).
 */
#ifndef SPOOL_GATEWAY_REALTIME_H
#define SPOOL_GATEWAY_REALTIME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/node.h"
#include "common/err.h"
#include "gateway/attach.h"
#include "gateway/auth.h"
#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "gateway/options.h"
#include "gateway/resume.h"
#include "gateway/sse.h"

/* Error codes of the realtime protocol (HTTP-like: status * 100 + detail). */
enum spool_rt_error {
    SPOOL_RT_EBAD_JSON = 40001,       /* not JSON, or not an object */
    SPOOL_RT_EBAD_CHANNEL = 40002,    /* missing or invalid channel name */
    SPOOL_RT_EBAD_MESSAGE = 40010,    /* unknown type, or a field missing / of the wrong type */
    SPOOL_RT_ENOT_ATTACHED = 40011,   /* detach of a channel that is not attached */
    SPOOL_RT_EBAD_RESUME = 40012,     /* resume key does not verify, or resume not allowed now */
    SPOOL_RT_EFORBIDDEN = 40301,      /* capability missing (same code as auth) */
    SPOOL_RT_ERESUME_IDENTITY = 40302, /* resume key belongs to another key / client id */
    SPOOL_RT_EAUTH_IDENTITY = 40303,   /* an "auth" token names another key / client id */
    SPOOL_RT_ERESUME_EXPIRED = 41001, /* resume window passed: re-attach from your serials */
    SPOOL_RT_ETOO_LARGE = 41300,      /* message data + extras over max_message_bytes */
                                      /* 41302: more messages than max_batch in one publish */
    SPOOL_RT_ERATE = 42900,           /* over rate_per_connection publishes per second */
    SPOOL_RT_ETOO_MANY_CHANNELS = 42901, /* over max_channels_per_connection */
    SPOOL_RT_EINTERNAL = 50000,
    SPOOL_RT_EUNAVAILABLE = 50300,    /* the cluster could not serve the request */
    SPOOL_RT_ETIMEOUT = 50400,
};

struct spool_realtime_config {
    uint64_t max_message_bytes;   /* largest message data (JSON-encoded) in a publish */
    uint64_t max_frame_bytes;     /* largest WebSocket frame and message */
    uint64_t max_channels;        /* attachments per connection */
    uint64_t send_buffer_bytes;   /* per connection */
    uint64_t heartbeat_ms;        /* WebSocket pings and dead-peer detection */
    uint64_t resume_window_ms;
    uint64_t rate_per_second;     /* published messages per connection per second; 0 = off */
    uint64_t max_connections;     /* realtime connections on this node; 0 = unlimited */
    uint64_t max_batch;           /* messages in one publish */
    uint64_t max_field_bytes;     /* longest message id or name */
    uint64_t presence_timeout_ms; /* a dropped connection's members leave after; 0 = at once */
};

struct spool_realtime;

int spool_realtime_init(struct spool_realtime **out, uv_loop_t *loop, struct spool_node *node,
                        const struct spool_keyring *keys, const struct spool_realtime_config *cfg,
                        const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], struct spool_err *err);
/* spool_http_handler for GET /v1/realtime; `arg` is the struct spool_realtime. */
void spool_realtime_handle(void *arg, struct spool_http_req *req);
size_t spool_realtime_connections(const struct spool_realtime *rt);
/* Closes every connection with 1001 (going away) and calls cb once they are all gone; the
 * object is freed after cb. */
void spool_realtime_close(struct spool_realtime *rt, void (*cb)(void *arg), void *arg);

/* ---- wiring into spoold (gateway/run.c) ----
 *
 * One call after the node is up and before the HTTP server listens:
 *     spool_realtime_mount(&d->realtime, &d->loop, o, d->node, &d->keyring, &d->router, &err);
 * adds GET /v1/realtime (WebSocket) and GET /v1/channels/{channel}/events (SSE) to the router,
 * with every limit taken from the options. On shutdown, before the node closes (upgraded
 * WebSocket connections are no longer the HTTP server's), call
 *     spool_realtime_unmount(&d->realtime, cb, arg);
 * which closes every realtime connection (1001) and calls cb once they are gone. SSE streams
 * end with the HTTP server's drain. The resume secret is --resume-secret when set, else the
 * node's own o->data/resume.secret (see gateway/resume.h). */
struct spool_realtime_mount {
    struct spool_realtime *rt;
    struct spool_sse sse;
};
int spool_realtime_mount(struct spool_realtime_mount *m, uv_loop_t *loop,
                         const struct spool_options *o, struct spool_node *node,
                         const struct spool_keyring *keys, struct spool_http_router *router,
                         struct spool_err *err);
/* Optional metrics (gateway/metrics.h children; any may be NULL): the metrics owner registers
 * the families, e.g. spool_messages_in_total{transport="ws"}, and hands the children here.
 * `deliver` is observed once per record the node fans out (now - record timestamp), through
 * spool_node_set_fanout_observer, so it must live as long as the node. */
struct spool_counter;
struct spool_histogram;
struct spool_realtime_counters {
    struct spool_counter *messages_in;  /* messages published over WebSocket (acked) */
    struct spool_counter *bytes_in;     /* their data bytes */
    struct spool_counter *ws_out;       /* messages delivered to WebSocket connections */
    struct spool_counter *ws_bytes_out; /* their data bytes */
    struct spool_counter *sse_out;      /* messages delivered to SSE streams */
    struct spool_counter *sse_bytes_out; /* their data bytes */
    struct spool_counter *resumed;      /* resume keys: connections resumed */
    struct spool_counter *resume_expired; /* key verified but past the resume window */
    struct spool_counter *resume_refused; /* key did not verify or belongs to another identity */
    struct spool_histogram *deliver;    /* seconds from record timestamp to local fan-out */
};
void spool_realtime_set_counters(struct spool_realtime_mount *m,
                                 const struct spool_realtime_counters *c);
/* Safe when mount failed or never ran (cb is then called at once). */
void spool_realtime_unmount(struct spool_realtime_mount *m, void (*cb)(void *arg), void *arg);

/* ---- pieces shared with SSE and tests ---- */

/* The record as a shared text frame holding its JSON object (payload at bytes + header),
 * encoded once for every connection and stream that delivers it; a borrowed reference, valid
 * until the next call (take a reference to keep it). NULL when out of memory. */
struct spool_wsframe *spool_realtime_frame(struct spool_realtime *rt, const Spool__Record *rec);

/* The JSON object for a record as clients see it (type "message"); new reference or NULL. */
json_t *spool_rt_record_json(const Spool__Record *rec);
/* Authenticates a request from ?key= / ?token= or the Authorization header into `p`
 * (initialised). Returns an auth code (SPOOL_AUTH_OK...). */
int spool_rt_authenticate(const struct spool_keyring *keys, struct spool_http_req *req,
                          struct spool_principal *p, struct spool_err *err);
/* Parses "live" | "start" | <serial> | {"last": N} (NULL = live). Returns 0 or -1. */
int spool_rt_parse_from(const json_t *v, struct spool_from *out);

#endif
