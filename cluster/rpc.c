/*
 * Internal RPC over the cluster port; the contract is in cluster/rpc.h, the frame format in
 * cluster/rpc_frame.h.
 *
 * Objects and who owns them:
 *
 * - `struct rpc_peer` (one per known node, from spool_rpc_set_peer) owns this node's outgoing
 *   connection to that node, the pending dial, a timer (dial timeout while dialling, backoff
 *   after a failed dial), the frames queued while no connection is up and the calls whose
 *   request frame is still in that queue. Peers live until the rpc object is freed.
 *
 * - `struct rpc_conn` is one connection, outgoing (peer != NULL) or accepted (peer == NULL),
 *   read by the same frame loop. It owns the calls whose request went out on it (a response
 *   matches by id in `calls`, which is in send order so the head usually matches) and knows
 *   the reply handles of requests that arrived on it, so that closing it can detach them.
 *   Closing a connection fails its calls once (SPOOL_EIO, or SPOOL_ECLOSED when the rpc
 *   object closes) and frees it in the handle's close callback.
 *
 * - `struct rpc_call` completes exactly once through call_complete(), whichever comes first:
 *   the response, its timer, the loss of its connection or dial, or spool_rpc_close. The
 *   struct itself is freed when its timer handle has closed.
 *
 * - `struct spool_rpc_reply` belongs to the request handler until spool_rpc_respond frees it;
 *   if its connection closes first, the handle is detached (conn = NULL) and the answer is
 *   dropped.
 *
 * Writes are coalesced: a frame for a connection (request, response or message) joins the
 *   connection's `outq`, and one uv_idle handle, started by the first queued frame, hands each
 *   connection's queued frames to ONE uv_write (a writev) at the start of the next loop turn. A
 *   loop turn that completes 50 forwarded publishes thus answers them with one syscall, not 50;
 *   frames keep their order per connection. An idle handle, not a prepare or check one: libraft
 *   completes requests (our apply callbacks, hence answers) from its own prepare and check
 *   callbacks, and a handle started from inside its own phase only runs on the next turn; an
 *   active idle handle makes that turn's poll return at once, where a prepare handle let the
 *   loop block until the next timer (seen: acks delayed by up to a heartbeat, ~90 ms).
 *
 * Re-entrancy: user callbacks may call anything, including spool_rpc_close. Lists are drained
 *   by popping their head (never by iterating) and every path re-checks `closing` after a
 *   callback. The rpc object counts everything that can still call back (`pending`: handles
 *   not yet closed, dials in flight) and frees itself when that reaches zero after close; an
 *   idle handle that is only ever closed makes the close callback always asynchronous.
 */
#include "cluster/rpc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/link.h"
#include "cluster/rpc_frame.h"
#include "common/log.h"

#define RPC_BACKOFF_MIN_MS 50
#define RPC_BACKOFF_MAX_MS 2000
#define RPC_DIAL_TIMEOUT_MS 3000
#define RPC_MAX_QUEUED 4096      /* frames waiting for a peer's connection */
#define RPC_READ_CHUNK 65536
#define RPC_MAX_WRITE_QUEUE (64u << 20) /* bytes a peer may leave unread before we refuse */
#define RPC_MAX_WRITE_BUFS 256          /* frames per uv_write */

/* --- objects ------------------------------------------------------------------------------- */

struct spool_rpc {
    uv_loop_t *loop;
    struct spool_mux *mux;
    uint64_t node_id;
    size_t max_frame;
    spool_rpc_request_cb on_request;
    spool_rpc_message_cb on_message;
    void *arg;
    uint64_t next_id;
    struct link peers;
    struct link conns;
    uv_idle_t idle; /* never started; closing it makes the close callback asynchronous */
    uv_idle_t flush; /* writes every connection's queued frames, once per loop turn */
    struct link dirty;  /* struct rpc_conn with queued frames */
    unsigned pending;
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
};

struct rpc_conn;

struct rpc_peer {
    struct spool_rpc *rpc;
    uint64_t id;
    char address[256];
    struct rpc_conn *conn;        /* established outgoing connection */
    struct spool_mux_connect *dial;
    uv_timer_t timer;             /* dial timeout or backoff */
    bool in_backoff;
    uint64_t backoff_ms;
    struct link queue;            /* struct rpc_out waiting for `conn` */
    unsigned queued;
    struct link waiting;          /* struct rpc_call whose request is in `queue` */
    struct link link;
};

struct rpc_conn {
    struct spool_rpc *rpc;
    uv_tcp_t *tcp;
    uint64_t peer_id;
    struct rpc_peer *peer; /* outgoing only */
    uint8_t *rbuf;
    size_t rlen, rcap;
    struct link calls;   /* struct rpc_call sent here, awaiting a response */
    struct link replies; /* struct spool_rpc_reply for requests received here */
    struct link outq;    /* struct rpc_out written at the next flush, in order */
    size_t outq_bytes;
    struct link dirty_link; /* in rpc->dirty while outq is not empty */
    bool dirty;
    bool closing;
    struct link link;
};

struct rpc_out {
    uv_write_t req;
    uv_buf_t buf;
    struct link link; /* in peer->queue or conn->outq while queued */
};

/* One uv_write of several frames; frees them when done. */
struct rpc_wbatch {
    uv_write_t req;
    size_t n;
    struct rpc_out *outs[];
};

struct rpc_call {
    struct spool_rpc *rpc;
    uint64_t id;
    uv_timer_t timer;
    spool_rpc_call_cb cb;
    void *arg;
    struct rpc_out *queued; /* its request, while still in the peer's queue */
    struct rpc_peer *peer;
    struct link link;       /* in peer->waiting or conn->calls */
};

struct spool_rpc_reply {
    struct rpc_conn *conn; /* NULL once the connection closed */
    uint64_t id;
    struct link link;
};

static void rpc_maybe_closed(struct spool_rpc *r);
static void conn_close(struct rpc_conn *c, int status, const char *reason);
static void peer_dial(struct rpc_peer *p);

/* --- calls --------------------------------------------------------------------------------- */

static void out_free(struct rpc_out *o)
{
    free(o->buf.base);
    free(o);
}

static void call_timer_closed_cb(uv_handle_t *handle)
{
    struct rpc_call *call = handle->data;
    struct spool_rpc *r = call->rpc;
    free(call);
    r->pending--;
    rpc_maybe_closed(r);
}

/* The one place a call ends. */
static void call_complete(struct rpc_call *call, int status, const char *msg, const void *body,
                          size_t len)
{
    link_remove(&call->link);
    if (call->queued != NULL) {
        link_remove(&call->queued->link);
        call->peer->queued--;
        out_free(call->queued);
        call->queued = NULL;
    }
    uv_close((uv_handle_t *)&call->timer, call_timer_closed_cb);
    struct spool_err err = {0};
    if (status != 0) spool_err_set(&err, status, "%s", msg != NULL ? msg : spool_err_name(status));
    call->cb(call->arg, status, status != 0 ? &err : NULL, body, len);
}

/* Completes every call of `list` with the same failure. */
static void calls_fail(struct link *list, int status, const char *msg)
{
    struct link local;
    link_move(list, &local);
    while (!link_empty(&local))
        call_complete(LINK_DATA(local.next, struct rpc_call, link), status, msg, NULL, 0);
}

static void call_timeout_cb(uv_timer_t *timer)
{
    struct rpc_call *call = timer->data;
    call_complete(call, SPOOL_ETIMEOUT, "rpc call timed out", NULL, 0);
}

/* --- connections --------------------------------------------------------------------------- */

static void conn_closed_cb(uv_handle_t *handle)
{
    struct rpc_conn *c = handle->data;
    struct spool_rpc *r = c->rpc;
    free(c->rbuf);
    raft_free(c->tcp);
    free(c);
    r->pending--;
    rpc_maybe_closed(r);
}

static void conn_close(struct rpc_conn *c, int status, const char *reason)
{
    if (c->closing) return;
    c->closing = true;
    SPOOL_DEBUG("rpc.conn_closed", "peer=%llu outgoing=%d reason=%s",
                (unsigned long long)c->peer_id, c->peer != NULL, reason);
    link_remove(&c->link);
    if (c->dirty) {
        link_remove(&c->dirty_link);
        c->dirty = false;
    }
    while (!link_empty(&c->outq)) { /* never written */
        struct rpc_out *o = LINK_DATA(c->outq.next, struct rpc_out, link);
        link_remove(&o->link);
        out_free(o);
    }
    c->outq_bytes = 0;
    if (c->peer != NULL && c->peer->conn == c) c->peer->conn = NULL;
    while (!link_empty(&c->replies)) {
        struct spool_rpc_reply *reply = LINK_DATA(c->replies.next, struct spool_rpc_reply, link);
        link_remove(&reply->link);
        reply->conn = NULL;
    }
    uv_close((uv_handle_t *)c->tcp, conn_closed_cb);
    char msg[128];
    snprintf(msg, sizeof msg, "connection to node %llu lost: %s", (unsigned long long)c->peer_id,
             reason);
    calls_fail(&c->calls, status, msg);
}

static void out_written_cb(uv_write_t *req, int status)
{
    struct rpc_out *o = req->data;
    uv_stream_t *stream = req->handle;
    out_free(o);
    if (status != 0 && status != UV_ECANCELED) {
        struct rpc_conn *c = stream->data;
        conn_close(c, SPOOL_EIO, uv_err_name(status));
    }
}

static void wbatch_written_cb(uv_write_t *req, int status)
{
    struct rpc_wbatch *w = req->data;
    uv_stream_t *stream = req->handle;
    for (size_t i = 0; i < w->n; i++)
        out_free(w->outs[i]);
    free(w);
    if (status != 0 && status != UV_ECANCELED) {
        struct rpc_conn *c = stream->data;
        conn_close(c, SPOOL_EIO, uv_err_name(status));
    }
}

/* Hands the connection's queued frames to libuv: one uv_write per RPC_MAX_WRITE_BUFS frames. */
static void conn_flush(struct rpc_conn *c)
{
    while (!link_empty(&c->outq) && !c->closing) {
        struct rpc_out *first = LINK_DATA(c->outq.next, struct rpc_out, link);
        int rv;
        if (c->outq.next->next == &c->outq) { /* one frame: no batch object */
            link_remove(&first->link);
            c->outq_bytes -= first->buf.len;
            first->req.data = first;
            rv = uv_write(&first->req, (uv_stream_t *)c->tcp, &first->buf, 1, out_written_cb);
            if (rv != 0) out_free(first);
        } else {
            struct rpc_wbatch *w =
                malloc(sizeof *w + RPC_MAX_WRITE_BUFS * sizeof w->outs[0]);
            if (w == NULL) {
                conn_close(c, SPOOL_EIO, "out_of_memory");
                return;
            }
            uv_buf_t bufs[RPC_MAX_WRITE_BUFS];
            w->n = 0;
            while (!link_empty(&c->outq) && w->n < RPC_MAX_WRITE_BUFS) {
                struct rpc_out *o = LINK_DATA(c->outq.next, struct rpc_out, link);
                link_remove(&o->link);
                c->outq_bytes -= o->buf.len;
                bufs[w->n] = o->buf;
                w->outs[w->n++] = o;
            }
            w->req.data = w;
            rv = uv_write(&w->req, (uv_stream_t *)c->tcp, bufs, (unsigned)w->n, wbatch_written_cb);
            if (rv != 0) {
                for (size_t i = 0; i < w->n; i++)
                    out_free(w->outs[i]);
                free(w);
            }
        }
        if (rv != 0) {
            conn_close(c, SPOOL_EIO, "write_failed");
            return;
        }
    }
}

static void flush_all(struct spool_rpc *r)
{
    while (!link_empty(&r->dirty)) {
        struct rpc_conn *c = LINK_DATA(r->dirty.next, struct rpc_conn, dirty_link);
        link_remove(&c->dirty_link);
        c->dirty = false;
        conn_flush(c);
    }
}

static void flush_cb(uv_idle_t *idle)
{
    flush_all(idle->data);
    uv_idle_stop(idle);
}

/* Queues `o` (always consumed) for this loop turn's write. UV_ENOBUFS: the peer is not reading
 * what we already sent. */
static int conn_write(struct rpc_conn *c, struct rpc_out *o)
{
    struct spool_rpc *r = c->rpc;
    if (c->closing || r->closing) {
        out_free(o);
        return UV_ECANCELED;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)c->tcp) + c->outq_bytes > RPC_MAX_WRITE_QUEUE) {
        out_free(o);
        return UV_ENOBUFS;
    }
    link_push(&c->outq, &o->link);
    c->outq_bytes += o->buf.len;
    if (!c->dirty) {
        c->dirty = true;
        link_push(&r->dirty, &c->dirty_link);
        uv_idle_start(&r->flush, flush_cb);
    }
    return 0;
}

static struct rpc_out *out_new(const Spool__RpcFrame *f, size_t max, int *rv)
{
    struct rpc_out *o = calloc(1, sizeof *o);
    if (o == NULL) {
        *rv = SPOOL_ENOMEM;
        return NULL;
    }
    uint8_t *b;
    size_t n;
    *rv = spool_rpc_frame_encode(f, max, &b, &n);
    if (*rv != 0) {
        free(o);
        return NULL;
    }
    o->buf = uv_buf_init((char *)b, (unsigned)n);
    link_init(&o->link);
    return o;
}

/* Encodes a frame this node starts: a request with id != 0 (a call), else a one-way message. */
static struct rpc_out *out_outgoing(struct spool_rpc *r, uint64_t id, uint32_t method,
                                   const void *body, size_t len, int *rv)
{
    Spool__RpcFrame f = SPOOL__RPC_FRAME__INIT;
    f.id = id;
    f.kind = id != 0 ? SPOOL__RPC_KIND__RPC_KIND_REQUEST : SPOOL__RPC_KIND__RPC_KIND_MESSAGE;
    f.method = method;
    f.body.data = (uint8_t *)body;
    f.body.len = len;
    return out_new(&f, r->max_frame, rv);
}

static void conn_dispatch(struct rpc_conn *c, const Spool__RpcFrame *f)
{
    struct spool_rpc *r = c->rpc;
    switch (f->kind) {
        case SPOOL__RPC_KIND__RPC_KIND_REQUEST: {
            struct spool_rpc_reply *reply = calloc(1, sizeof *reply);
            if (reply == NULL) {
                conn_close(c, SPOOL_EIO, "out_of_memory");
                return;
            }
            reply->conn = c;
            reply->id = f->id;
            link_push(&c->replies, &reply->link);
            if (r->on_request == NULL) {
                spool_rpc_respond(reply, SPOOL_EINVAL, "no request handler", NULL, 0);
                return;
            }
            r->on_request(r->arg, c->peer_id, f->method, f->body.data, f->body.len, reply);
            return;
        }
        case SPOOL__RPC_KIND__RPC_KIND_MESSAGE:
            if (r->on_message != NULL)
                r->on_message(r->arg, c->peer_id, f->method, f->body.data, f->body.len);
            return;
        case SPOOL__RPC_KIND__RPC_KIND_RESPONSE:
            for (struct link *l = c->calls.next; l != &c->calls; l = l->next) {
                struct rpc_call *call = LINK_DATA(l, struct rpc_call, link);
                if (call->id != f->id) continue;
                int status = f->status;
                if (status == 0)
                    call_complete(call, 0, NULL, f->body.data, f->body.len);
                else
                    call_complete(call, status > 0 ? status : SPOOL_EIO,
                                  f->error != NULL && f->error[0] ? f->error : NULL, NULL, 0);
                return;
            }
            /* A late answer to a call that already timed out. */
            SPOOL_DEBUG("rpc.late_response", "peer=%llu id=%llu", (unsigned long long)c->peer_id,
                        (unsigned long long)f->id);
            return;
        default:
            return; /* the parser refuses other kinds */
    }
}

static void conn_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct rpc_conn *c = handle->data;
    if (c->rcap - c->rlen < RPC_READ_CHUNK) {
        size_t cap = c->rcap * 2 > c->rlen + RPC_READ_CHUNK ? c->rcap * 2 : c->rlen + RPC_READ_CHUNK;
        uint8_t *b = realloc(c->rbuf, cap);
        if (b == NULL) {
            buf->base = NULL;
            buf->len = 0; /* read_cb gets UV_ENOBUFS */
            return;
        }
        c->rbuf = b;
        c->rcap = cap;
    }
    buf->base = (char *)c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct rpc_conn *c = stream->data;
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        conn_close(c, SPOOL_EIO, nread == UV_EOF ? "eof" : uv_err_name((int)nread));
        return;
    }
    c->rlen += (size_t)nread;
    size_t off = 0;
    while (!c->closing) {
        Spool__RpcFrame *f = NULL;
        size_t size = 0;
        struct spool_err err = {0};
        int rv = spool_rpc_frame_parse(c->rbuf + off, c->rlen - off, c->rpc->max_frame, &f, &size,
                                       &err);
        if (rv == SPOOL_RPC_FRAME_MORE) break;
        if (rv == SPOOL_RPC_FRAME_BAD) {
            char q[300];
            SPOOL_WARN("rpc.bad_frame", "peer=%llu error=%s", (unsigned long long)c->peer_id,
                       spool_log_quote(q, sizeof q, err.msg));
            conn_close(c, SPOOL_EIO, "bad_frame");
            return;
        }
        off += size;
        conn_dispatch(c, f);
        spool__rpc_frame__free_unpacked(f, NULL);
    }
    if (c->closing) return;
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rlen == 0 && c->rcap > 4 * RPC_READ_CHUNK) { /* give back a large frame's buffer */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

static struct rpc_conn *conn_new(struct spool_rpc *r, uv_stream_t *stream, uint64_t peer_id,
                                 struct rpc_peer *peer)
{
    struct rpc_conn *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->rpc = r;
    c->tcp = (uv_tcp_t *)stream;
    c->peer_id = peer_id;
    c->peer = peer;
    link_init(&c->calls);
    link_init(&c->replies);
    link_init(&c->outq);
    link_push(&r->conns, &c->link);
    stream->data = c;
    r->pending++;
    if (uv_read_start(stream, conn_alloc_cb, conn_read_cb) != 0) {
        conn_close(c, SPOOL_EIO, "read_start_failed");
        return NULL;
    }
    return c;
}

static void stray_closed_cb(uv_handle_t *handle)
{
    struct spool_rpc *r = handle->data;
    raft_free(handle);
    r->pending--;
    rpc_maybe_closed(r);
}

/* Closes a stream the rpc object does not want (closing, or out of memory). */
static void stray_close(struct spool_rpc *r, uv_stream_t *stream)
{
    stream->data = r;
    r->pending++;
    uv_close((uv_handle_t *)stream, stray_closed_cb);
}

static void accept_cb(void *arg, uint64_t peer_id, const char *peer_address, uv_stream_t *stream)
{
    struct spool_rpc *r = arg;
    if (conn_new(r, stream, peer_id, NULL) == NULL) {
        SPOOL_ERROR("rpc.accept_failed", "peer=%llu", (unsigned long long)peer_id);
        if (stream->data == NULL) stray_close(r, stream); /* else conn_close has it */
    }
}

/* --- peers --------------------------------------------------------------------------------- */

static struct rpc_peer *peer_find(struct spool_rpc *r, uint64_t id)
{
    for (struct link *l = r->peers.next; l != &r->peers; l = l->next) {
        struct rpc_peer *p = LINK_DATA(l, struct rpc_peer, link);
        if (p->id == id) return p;
    }
    return NULL;
}

static void peer_timer_cb(uv_timer_t *timer)
{
    struct rpc_peer *p = timer->data;
    if (p->dial != NULL) { /* dial timeout */
        spool_mux_rpc_connect_cancel(p->dial);
        return;
    }
    p->in_backoff = false;
    if (!link_empty(&p->queue)) peer_dial(p);
}

static void peer_drop_queue(struct rpc_peer *p)
{
    while (!link_empty(&p->queue)) {
        struct rpc_out *o = LINK_DATA(p->queue.next, struct rpc_out, link);
        link_remove(&o->link);
        out_free(o);
    }
    p->queued = 0;
}

static void peer_dial_failed(struct rpc_peer *p, int status)
{
    p->backoff_ms = p->backoff_ms == 0 ? RPC_BACKOFF_MIN_MS : p->backoff_ms * 2;
    if (p->backoff_ms > RPC_BACKOFF_MAX_MS) p->backoff_ms = RPC_BACKOFF_MAX_MS;
    p->in_backoff = true;
    uv_timer_start(&p->timer, peer_timer_cb, p->backoff_ms, 0);
    SPOOL_DEBUG("rpc.dial_failed", "peer=%llu address=%s error=%s backoff_ms=%llu",
                (unsigned long long)p->id, p->address, uv_err_name(status),
                (unsigned long long)p->backoff_ms);
    /* Calls queued so far fail; the ones their callbacks make wait for the next dial. */
    struct link failed;
    link_move(&p->waiting, &failed);
    for (struct link *l = failed.next; l != &failed; l = l->next) {
        struct rpc_call *call = LINK_DATA(l, struct rpc_call, link);
        link_remove(&call->queued->link);
        out_free(call->queued);
        call->queued = NULL;
    }
    peer_drop_queue(p); /* one-way messages */
    char msg[128];
    snprintf(msg, sizeof msg, "node %llu unreachable: %s", (unsigned long long)p->id,
             uv_strerror(status));
    calls_fail(&failed, SPOOL_EIO, msg);
}

static void peer_connected_cb(void *arg, uv_stream_t *stream, int status)
{
    struct rpc_peer *p = arg;
    struct spool_rpc *r = p->rpc;
    p->dial = NULL;
    r->pending--;
    if (r->closing) {
        if (stream != NULL) stray_close(r, stream);
        rpc_maybe_closed(r);
        return;
    }
    uv_timer_stop(&p->timer);
    if (status != 0) {
        peer_dial_failed(p, status);
        return;
    }
    struct rpc_conn *c = conn_new(r, stream, p->id, p);
    if (c == NULL) {
        if (stream->data == NULL) stray_close(r, stream);
        peer_dial_failed(p, UV_ENOMEM);
        return;
    }
    SPOOL_DEBUG("rpc.connected", "peer=%llu address=%s", (unsigned long long)p->id, p->address);
    p->conn = c;
    p->backoff_ms = 0;
    while (!link_empty(&p->waiting)) {
        struct rpc_call *call = LINK_DATA(p->waiting.next, struct rpc_call, link);
        link_remove(&call->link);
        link_push(&c->calls, &call->link);
        call->queued = NULL; /* its frame is written below, in queue order */
    }
    while (!link_empty(&p->queue) && !c->closing) {
        struct rpc_out *o = LINK_DATA(p->queue.next, struct rpc_out, link);
        link_remove(&o->link);
        p->queued--;
        if (conn_write(c, o) != 0) conn_close(c, SPOOL_EIO, "write_failed");
    }
    peer_drop_queue(p); /* only if the connection closed meanwhile */
}

static void peer_dial(struct rpc_peer *p)
{
    struct spool_rpc *r = p->rpc;
    if (p->dial != NULL || p->conn != NULL || p->in_backoff) return;
    int rv = spool_mux_rpc_connect(r->mux, p->address, peer_connected_cb, p, &p->dial);
    if (rv != 0) {
        p->dial = NULL;
        SPOOL_WARN("rpc.dial_failed", "peer=%llu address=%s error=%s", (unsigned long long)p->id,
                   p->address, spool_err_name(rv));
        /* Nothing is in flight: wait for the backoff timer, which dials again. Calls waiting
         * now time out or go with the next dial. */
        p->backoff_ms = p->backoff_ms == 0 ? RPC_BACKOFF_MIN_MS : p->backoff_ms * 2;
        if (p->backoff_ms > RPC_BACKOFF_MAX_MS) p->backoff_ms = RPC_BACKOFF_MAX_MS;
        p->in_backoff = true;
        uv_timer_start(&p->timer, peer_timer_cb, p->backoff_ms, 0);
        return;
    }
    r->pending++;
    uv_timer_start(&p->timer, peer_timer_cb, RPC_DIAL_TIMEOUT_MS, 0);
}

/* Sends `o` to the peer now, or queues it for the connection being dialled. */
static int peer_submit(struct rpc_peer *p, struct rpc_out *o, bool queue_in_backoff)
{
    if (p->conn != NULL) {
        int rv = conn_write(p->conn, o);
        return rv == 0 ? 0 : rv == UV_ENOBUFS ? SPOOL_EBUSY : SPOOL_EIO;
    }
    if (p->in_backoff && !queue_in_backoff) {
        out_free(o);
        return SPOOL_EIO;
    }
    if (p->queued >= RPC_MAX_QUEUED) {
        out_free(o);
        return SPOOL_EBUSY;
    }
    link_push(&p->queue, &o->link);
    p->queued++;
    peer_dial(p);
    return 0;
}

int spool_rpc_set_peer(struct spool_rpc *r, uint64_t id, const char *address)
{
    if (r->closing) return SPOOL_ECLOSED;
    char host[256], port[16];
    if (strlen(address) >= sizeof ((struct rpc_peer *)0)->address ||
        spool_mux_split_address(address, host, sizeof host, port, sizeof port) != 0)
        return SPOOL_EINVAL;
    struct rpc_peer *p = peer_find(r, id);
    if (p != NULL) {
        if (strcmp(p->address, address) == 0) return 0;
        snprintf(p->address, sizeof p->address, "%s", address);
        if (p->conn != NULL) conn_close(p->conn, SPOOL_EIO, "peer_address_changed");
        return 0;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) return SPOOL_ENOMEM;
    p->rpc = r;
    p->id = id;
    snprintf(p->address, sizeof p->address, "%s", address);
    link_init(&p->queue);
    link_init(&p->waiting);
    uv_timer_init(r->loop, &p->timer);
    p->timer.data = p;
    r->pending++;
    link_push(&r->peers, &p->link);
    return 0;
}

/* --- the rpc object ------------------------------------------------------------------------ */

static void rpc_handle_closed_cb(uv_handle_t *handle)
{
    struct spool_rpc *r = handle->data;
    r->pending--;
    rpc_maybe_closed(r);
}

static void peer_timer_closed_cb(uv_handle_t *handle)
{
    struct rpc_peer *p = handle->data;
    struct spool_rpc *r = p->rpc;
    r->pending--;
    rpc_maybe_closed(r);
}

static void rpc_maybe_closed(struct spool_rpc *r)
{
    if (!r->closing || r->pending > 0) return;
    while (!link_empty(&r->peers)) {
        struct rpc_peer *p = LINK_DATA(r->peers.next, struct rpc_peer, link);
        link_remove(&p->link);
        free(p);
    }
    void (*cb)(void *) = r->close_cb;
    void *arg = r->close_arg;
    free(r);
    if (cb != NULL) cb(arg);
}

int spool_rpc_init(struct spool_rpc **out, uv_loop_t *loop, struct spool_mux *mux, uint64_t node_id,
                   size_t max_frame_bytes, spool_rpc_request_cb on_request,
                   spool_rpc_message_cb on_message, void *arg, struct spool_err *err)
{
    if (max_frame_bytes < 64 || max_frame_bytes > UINT32_MAX)
        return spool_err_set(err, SPOOL_EINVAL, "rpc max frame size %zu out of range",
                             max_frame_bytes);
    struct spool_rpc *r = calloc(1, sizeof *r);
    if (r == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    r->loop = loop;
    r->mux = mux;
    r->node_id = node_id;
    r->max_frame = max_frame_bytes;
    r->on_request = on_request;
    r->on_message = on_message;
    r->arg = arg;
    link_init(&r->peers);
    link_init(&r->conns);
    link_init(&r->dirty);
    uv_idle_init(loop, &r->idle);
    r->idle.data = r;
    uv_idle_init(loop, &r->flush);
    r->flush.data = r;
    r->pending = 2;
    spool_mux_set_rpc_accept(mux, accept_cb, r);
    *out = r;
    return 0;
}

void spool_rpc_close(struct spool_rpc *r, void (*cb)(void *arg), void *arg)
{
    if (r->closing) return;
    flush_all(r); /* what this turn produced still goes out (answers to peers, mostly) */
    r->closing = true;
    r->close_cb = cb;
    r->close_arg = arg;
    spool_mux_set_rpc_accept(r->mux, NULL, NULL);
    uv_close((uv_handle_t *)&r->idle, rpc_handle_closed_cb);
    uv_close((uv_handle_t *)&r->flush, rpc_handle_closed_cb);
    for (struct link *l = r->peers.next; l != &r->peers; l = l->next) {
        struct rpc_peer *p = LINK_DATA(l, struct rpc_peer, link);
        if (p->dial != NULL) spool_mux_rpc_connect_cancel(p->dial);
        uv_close((uv_handle_t *)&p->timer, peer_timer_closed_cb);
        calls_fail(&p->waiting, SPOOL_ECLOSED, "rpc closing");
        peer_drop_queue(p);
    }
    while (!link_empty(&r->conns))
        conn_close(LINK_DATA(r->conns.next, struct rpc_conn, link), SPOOL_ECLOSED, "rpc closing");
}

int spool_rpc_call(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len, uint64_t timeout_ms, spool_rpc_call_cb cb, void *arg)
{
    if (r->closing) return SPOOL_ECLOSED;
    struct rpc_peer *p = peer_find(r, node_id);
    if (p == NULL) return SPOOL_ENOENT;
    uint64_t id = ++r->next_id;
    int rv;
    struct rpc_out *o = out_outgoing(r, id, method, body, len, &rv);
    if (o == NULL) return rv;
    struct rpc_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        out_free(o);
        return SPOOL_ENOMEM;
    }
    call->rpc = r;
    call->id = id;
    call->cb = cb;
    call->arg = arg;
    call->peer = p;
    uv_timer_init(r->loop, &call->timer);
    call->timer.data = call;
    r->pending++;
    bool queued = p->conn == NULL;
    rv = peer_submit(p, o, true);
    if (rv != 0) {
        uv_close((uv_handle_t *)&call->timer, call_timer_closed_cb);
        return rv;
    }
    if (queued) {
        call->queued = o;
        link_push(&p->waiting, &call->link);
    } else {
        link_push(&p->conn->calls, &call->link);
    }
    uv_timer_start(&call->timer, call_timeout_cb, timeout_ms, 0);
    return 0;
}

int spool_rpc_send(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len)
{
    if (r->closing) return SPOOL_ECLOSED;
    struct rpc_peer *p = peer_find(r, node_id);
    if (p == NULL) return SPOOL_ENOENT;
    int rv;
    struct rpc_out *o = out_outgoing(r, 0, method, body, len, &rv);
    if (o == NULL) return rv;
    return peer_submit(p, o, false);
}

void spool_rpc_respond(struct spool_rpc_reply *reply, int status, const char *msg,
                       const void *body, size_t len)
{
    struct rpc_conn *c = reply->conn;
    if (c != NULL && !c->closing) {
        link_remove(&reply->link);
        Spool__RpcFrame f = SPOOL__RPC_FRAME__INIT;
        f.id = reply->id;
        f.kind = SPOOL__RPC_KIND__RPC_KIND_RESPONSE;
        f.status = status;
        f.error = (char *)(status != 0 && msg != NULL ? msg : "");
        if (status == 0) {
            f.body.data = (uint8_t *)body;
            f.body.len = len;
        }
        int rv;
        struct rpc_out *o = out_new(&f, c->rpc->max_frame, &rv);
        if (o == NULL && rv == SPOOL_ELIMIT) {
            f.status = SPOOL_ELIMIT;
            f.error = "response over the rpc frame limit";
            f.body.data = NULL;
            f.body.len = 0;
            o = out_new(&f, c->rpc->max_frame, &rv);
        }
        if (o != NULL) rv = conn_write(c, o); /* consumes o */
        if (rv == UV_ENOBUFS || (o == NULL && rv != 0))
            SPOOL_WARN("rpc.response_dropped", "peer=%llu reason=%s",
                       (unsigned long long)c->peer_id,
                       rv == UV_ENOBUFS ? "write_queue_full" : spool_err_name(rv));
        else if (rv != 0)
            conn_close(c, SPOOL_EIO, "write_failed");
    }
    free(reply);
}
