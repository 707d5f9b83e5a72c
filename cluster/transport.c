/*
 * The cluster port: one listening socket per node, a preamble on every connection, and the
 * libraft transports and RPC connects built on top of it. The contract is in
 * cluster/transport.h; the preamble format and its parser are in cluster/preamble.h.
 *
 * Three kinds of objects live here, each with one owner and one completion path:
 *
 * - `struct mux_incoming`: an accepted connection still reading its preamble. Its alloc
 *   callback hands out exactly the bytes the parser still needs, so libuv never reads a byte
 *   past the preamble. Once parsed, reading stops, the struct is freed and the stream is given
 *   to the Raft group's accept callback or to the RPC accept callback (or closed if nobody
 *   takes it). Until then the mux owns it, and closes it on error, on timeout (a sweep timer
 *   runs while any are pending) or when the mux closes.
 *
 * - `struct spool_mux_connect`: an outgoing connection being set up, for a Raft transport or
 *   for RPC. It walks resolve -> connect (each resolved address in turn) -> write preamble, and
 *   has exactly one libuv operation outstanding at any moment (`state`). Aborting it closes the
 *   TCP handle (which makes the outstanding connect/write complete with UV_ECANCELED) or
 *   cancels the resolve; in every case the single finishing function `connect_finish` runs
 *   once, calls the user's callback once and frees the struct.
 *
 * - `struct mux_transport`: the `impl` of a group's raft_uv_transport. libraft's close must
 *   cancel pending connects (their callbacks get RAFT_CANCELED) and only then report closed;
 *   the close callback is always deferred to the mux's idle handle so it never runs inside
 *   libraft's own close call.
 *
 * Accepted streams are allocated as `struct spool_raft_stream` (cluster/raft_stream.h): once a
 * Raft group's accept callback has started libraft's reader on one, the mux puts a read buffer
 * in front of it, so libraft's exact-size reads (preamble, header, payload) cost one read(2) per
 * wake-up instead of one each.
 *
 * The mux frees itself when, after spool_mux_close, its handles are closed and no incoming
 * connection or connect remains.
 */
#include "cluster/transport.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/link.h"
#include "cluster/preamble.h"
#include "cluster/raft_stream.h"
#include "common/log.h"

/* --- objects ------------------------------------------------------------------------------- */

struct spool_mux {
    uv_loop_t *loop;
    uint64_t node_id;
    char address[SPOOL_PREAMBLE_MAX_ADDRESS + 1];
    uv_tcp_t listener;
    uv_timer_t sweep;   /* closes incoming connections stuck in their preamble */
    uv_idle_t deferred; /* runs transport close callbacks outside libraft's close call */
    int handles_open;   /* of listener, sweep, deferred */
    struct link incoming;
    struct link connects;
    struct link transports;
    struct link closed_transports; /* closed, close cb not yet called */
    spool_mux_rpc_accept_cb rpc_accept;
    void *rpc_accept_arg;
    uint64_t preamble_timeout_ms;
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
};

struct mux_incoming {
    struct spool_mux *mux;
    uv_tcp_t *tcp;
    uint64_t accepted_at;
    size_t have, need;
    uint8_t buf[SPOOL_PREAMBLE_MAX];
    struct link link;
};

struct mux_transport {
    struct spool_mux *mux; /* NULL once the mux closed under it */
    struct raft_uv_transport *rt;
    uint32_t group;
    raft_id id;
    char address[SPOOL_PREAMBLE_MAX_ADDRESS + 1];
    raft_uv_accept_cb accept_cb;
    unsigned connects; /* pending */
    bool closing;
    bool close_scheduled;
    raft_uv_transport_close_cb close_cb;
    struct link link;       /* in mux->transports */
    struct link close_link; /* in mux->closed_transports while its close cb is due */
};

enum connect_state { CONNECT_RESOLVING, CONNECT_CONNECTING, CONNECT_WRITING, CONNECT_CLOSING };

struct spool_mux_connect {
    struct spool_mux *mux;
    struct mux_transport *transport; /* NULL for RPC */
    struct raft_uv_connect *raft_req;
    spool_mux_rpc_connect_cb rpc_cb;
    void *rpc_arg;
    char host[SPOOL_PREAMBLE_MAX_ADDRESS + 1];
    char port[16];
    uint8_t preamble[SPOOL_PREAMBLE_MAX];
    uv_buf_t preamble_buf;
    uv_getaddrinfo_t resolve;
    struct addrinfo *ai, *ai_current;
    uv_tcp_t *tcp;
    uv_connect_t connect;
    uv_write_t write;
    enum connect_state state;
    bool canceled;
    bool next_address; /* the handle is closing to retry with ai_current */
    int status;        /* libuv status reported on failure */
    struct link link;
};

static void mux_maybe_closed(struct spool_mux *m);
static void transport_maybe_closed(struct mux_transport *t);

/* --- addresses ----------------------------------------------------------------------------- */

int spool_mux_split_address(const char *address, char *host, size_t host_size, char *port,
                            size_t port_size)
{
    const char *h = address, *colon;
    size_t hlen;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL || close[1] != ':') return SPOOL_EINVAL;
        h = address + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL) return SPOOL_EINVAL;
        hlen = (size_t)(colon - address);
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (hlen == 0 || hlen >= host_size || plen == 0 || plen >= port_size) return SPOOL_EINVAL;
    for (size_t i = 0; i < plen; i++)
        if (p[i] < '0' || p[i] > '9') return SPOOL_EINVAL;
    if (atol(p) > 65535) return SPOOL_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, p, plen + 1);
    return 0;
}

/* --- incoming connections ------------------------------------------------------------------ */

static void incoming_closed_cb(uv_handle_t *handle)
{
    struct mux_incoming *in = handle->data;
    struct spool_mux *m = in->mux;
    link_remove(&in->link);
    raft_free(in->tcp);
    free(in);
    mux_maybe_closed(m);
}

/* Closes a connection that has not been handed over; it stays listed until closed. */
static void incoming_close(struct mux_incoming *in, const char *reason)
{
    if (uv_is_closing((uv_handle_t *)in->tcp)) return;
    SPOOL_DEBUG("mux.incoming_closed", "reason=%s bytes=%zu", reason, in->have);
    uv_close((uv_handle_t *)in->tcp, incoming_closed_cb);
}

static void stream_closed_free_cb(uv_handle_t *handle) { raft_free(handle); }

static struct mux_transport *mux_find_group(struct spool_mux *m, uint32_t group)
{
    for (struct link *l = m->transports.next; l != &m->transports; l = l->next) {
        struct mux_transport *t = LINK_DATA(l, struct mux_transport, link);
        if (t->group == group) return t;
    }
    return NULL;
}

/* The preamble is complete: hand the stream over, or close it if nobody can take it. */
static void incoming_dispatch(struct mux_incoming *in, const struct spool_preamble *p)
{
    struct spool_mux *m = in->mux;
    uv_tcp_t *tcp = in->tcp;
    char qaddr[SPOOL_PREAMBLE_MAX_ADDRESS + 8];
    uv_read_stop((uv_stream_t *)tcp);
    link_remove(&in->link);
    free(in);
    tcp->data = NULL;

    if (p->kind == SPOOL_PREAMBLE_RAFT) {
        struct mux_transport *t = mux_find_group(m, p->group);
        if (t == NULL || t->accept_cb == NULL || t->closing) {
            SPOOL_DEBUG("mux.rejected", "reason=no_group group=%u from=%llu address=%s",
                        p->group, (unsigned long long)p->id,
                        spool_log_quote(qaddr, sizeof qaddr, p->address));
            uv_close((uv_handle_t *)tcp, stream_closed_free_cb);
        } else {
            t->accept_cb(t->rt, p->id, p->address, (uv_stream_t *)tcp);
            spool_raft_stream_buffer((struct spool_raft_stream *)tcp);
        }
    } else if (m->rpc_accept == NULL) {
        SPOOL_DEBUG("mux.rejected", "reason=no_rpc from=%llu", (unsigned long long)p->id);
        uv_close((uv_handle_t *)tcp, stream_closed_free_cb);
    } else {
        m->rpc_accept(m->rpc_accept_arg, p->id, p->address, (uv_stream_t *)tcp);
    }
    mux_maybe_closed(m);
}

/* Hands libuv room for exactly the bytes the preamble still lacks, never more. */
static void incoming_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct mux_incoming *in = handle->data;
    buf->base = (char *)in->buf + in->have;
    buf->len = in->need - in->have;
}

static void incoming_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct mux_incoming *in = stream->data;
    if (nread == 0) return;
    if (nread < 0) {
        incoming_close(in, nread == UV_EOF ? "eof" : "read_error");
        return;
    }
    in->have += (size_t)nread;
    struct spool_preamble p;
    struct spool_err err;
    size_t size = 0;
    int rv = spool_preamble_parse(in->buf, in->have, &p, &size, &err);
    if (rv == SPOOL_PREAMBLE_BAD) {
        char q[300];
        SPOOL_WARN("mux.bad_preamble", "error=%s", spool_log_quote(q, sizeof q, err.msg));
        uv_read_stop(stream);
        incoming_close(in, "bad_preamble");
        return;
    }
    if (rv == SPOOL_PREAMBLE_MORE) {
        in->need = size; /* > have, <= SPOOL_PREAMBLE_MAX */
        return;
    }
    incoming_dispatch(in, &p);
}

static void sweep_cb(uv_timer_t *timer)
{
    struct spool_mux *m = timer->data;
    uint64_t now = uv_now(m->loop);
    for (struct link *l = m->incoming.next; l != &m->incoming; l = l->next) {
        struct mux_incoming *in = LINK_DATA(l, struct mux_incoming, link);
        if (now - in->accepted_at >= m->preamble_timeout_ms) {
            SPOOL_WARN("mux.preamble_timeout", "bytes=%zu", in->have);
            incoming_close(in, "timeout");
        }
    }
    if (link_empty(&m->incoming)) uv_timer_stop(timer);
}

static void listener_connection_cb(uv_stream_t *server, int status)
{
    struct spool_mux *m = server->data;
    if (status < 0) {
        SPOOL_WARN("mux.accept_failed", "error=%s", uv_strerror(status));
        return;
    }
    struct mux_incoming *in = calloc(1, sizeof *in);
    /* Any accepted stream may turn out to be a Raft one: see cluster/raft_stream.h. */
    struct spool_raft_stream *rs = spool_raft_stream_new();
    uv_tcp_t *tcp = rs != NULL ? &rs->tcp : NULL;
    if (in == NULL || tcp == NULL) {
        free(in);
        raft_free(tcp);
        SPOOL_ERROR("mux.accept_failed", "error=out_of_memory");
        return;
    }
    uv_tcp_init(m->loop, tcp);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0) {
        uv_close((uv_handle_t *)tcp, stream_closed_free_cb);
        free(in);
        return;
    }
    uv_tcp_nodelay(tcp, 1);
    in->mux = m;
    in->tcp = tcp;
    in->accepted_at = uv_now(m->loop);
    in->need = SPOOL_PREAMBLE_FIXED;
    tcp->data = in;
    link_push(&m->incoming, &in->link);
    int rv = uv_read_start((uv_stream_t *)tcp, incoming_alloc_cb, incoming_read_cb);
    if (rv != 0) {
        incoming_close(in, "read_start_failed");
        return;
    }
    if (!uv_is_active((uv_handle_t *)&m->sweep)) {
        uint64_t every = m->preamble_timeout_ms / 2;
        if (every > 1000) every = 1000;
        if (every == 0) every = 1;
        uv_timer_start(&m->sweep, sweep_cb, every, every);
    }
}

/* --- the mux ------------------------------------------------------------------------------- */

static void mux_handle_closed_cb(uv_handle_t *handle)
{
    struct spool_mux *m = handle->data;
    m->handles_open--;
    mux_maybe_closed(m);
}

/* Only used when spool_mux_init fails after the listener handle was initialised. */
static void mux_failed_closed_cb(uv_handle_t *handle) { free(handle->data); }

static void mux_maybe_closed(struct spool_mux *m)
{
    if (!m->closing || m->handles_open > 0 || !link_empty(&m->incoming) ||
        !link_empty(&m->connects))
        return;
    void (*cb)(void *) = m->close_cb;
    void *arg = m->close_arg;
    free(m);
    if (cb != NULL) cb(arg);
}

static void deferred_cb(uv_idle_t *idle)
{
    struct spool_mux *m = idle->data;
    uv_idle_stop(idle);
    while (!link_empty(&m->closed_transports)) {
        struct mux_transport *t =
            LINK_DATA(m->closed_transports.next, struct mux_transport, close_link);
        link_remove(&t->close_link);
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        if (cb != NULL) cb(t->rt);
    }
}

int spool_mux_init(struct spool_mux **out, uv_loop_t *loop, uint64_t node_id, const char *address,
                   struct spool_err *err)
{
    char host[SPOOL_PREAMBLE_MAX_ADDRESS + 1], port[16];
    *out = NULL;
    if (spool_mux_split_address(address, host, sizeof host, port, sizeof port) != 0)
        return spool_err_set(err, SPOOL_EINVAL, "bad cluster address %s (want host:port)",
                             address);
    struct spool_mux *m = calloc(1, sizeof *m);
    if (m == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    m->loop = loop;
    m->node_id = node_id;
    m->preamble_timeout_ms = SPOOL_MUX_PREAMBLE_TIMEOUT_MS;
    link_init(&m->incoming);
    link_init(&m->connects);
    link_init(&m->transports);
    link_init(&m->closed_transports);

    /* Synchronous resolve: this runs once at startup. */
    uv_getaddrinfo_t req;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    int rv = uv_getaddrinfo(loop, &req, NULL, host, port, &hints);
    if (rv != 0) {
        free(m);
        return spool_err_set(err, SPOOL_EINVAL, "resolve %s: %s", address, uv_strerror(rv));
    }
    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    rv = uv_tcp_bind(&m->listener, req.addrinfo->ai_addr, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&m->listener, 128, listener_connection_cb);
    uv_freeaddrinfo(req.addrinfo);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    if (rv == 0) rv = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&sa, &salen);
    if (rv != 0) {
        uv_close((uv_handle_t *)&m->listener, mux_failed_closed_cb);
        return spool_err_set(err, SPOOL_EIO, "listen on %s: %s", address, uv_strerror(rv));
    }
    unsigned bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                    : ((struct sockaddr_in *)&sa)->sin_port);
    int n = strchr(host, ':') != NULL
                ? snprintf(m->address, sizeof m->address, "[%s]:%u", host, bound)
                : snprintf(m->address, sizeof m->address, "%s:%u", host, bound);
    if (n < 0 || (size_t)n >= sizeof m->address) {
        uv_close((uv_handle_t *)&m->listener, mux_failed_closed_cb);
        return spool_err_set(err, SPOOL_EINVAL, "cluster address too long");
    }
    uv_timer_init(loop, &m->sweep);
    m->sweep.data = m;
    uv_idle_init(loop, &m->deferred);
    m->deferred.data = m;
    m->handles_open = 3;
    SPOOL_INFO("mux.listening", "address=%s", m->address);
    *out = m;
    return 0;
}

const char *spool_mux_address(const struct spool_mux *m) { return m->address; }

void spool_mux_set_rpc_accept(struct spool_mux *m, spool_mux_rpc_accept_cb cb, void *arg)
{
    m->rpc_accept = cb;
    m->rpc_accept_arg = arg;
}

void spool_mux_set_preamble_timeout(struct spool_mux *m, uint64_t ms)
{
    m->preamble_timeout_ms = ms;
}

static void connect_abort(struct spool_mux_connect *c);

void spool_mux_close(struct spool_mux *m, void (*cb)(void *arg), void *arg)
{
    m->closing = true;
    m->close_cb = cb;
    m->close_arg = arg;
    m->rpc_accept = NULL;
    uv_close((uv_handle_t *)&m->listener, mux_handle_closed_cb);
    uv_close((uv_handle_t *)&m->sweep, mux_handle_closed_cb);
    uv_close((uv_handle_t *)&m->deferred, mux_handle_closed_cb);
    for (struct link *l = m->incoming.next; l != &m->incoming; l = l->next)
        incoming_close(LINK_DATA(l, struct mux_incoming, link), "mux_closing");
    /* Abort every connect. Normally only RPC ones remain: Raft transports close first. */
    struct link *l = m->connects.next;
    while (l != &m->connects) {
        struct link *next = l->next;
        connect_abort(LINK_DATA(l, struct spool_mux_connect, link));
        l = next;
    }
    /* Transports still registered were not closed first; detach them so they never touch the
     * freed mux (their pending connects were aborted above). */
    while (!link_empty(&m->transports)) {
        struct mux_transport *t = LINK_DATA(m->transports.next, struct mux_transport, link);
        SPOOL_WARN("mux.transport_left_open", "group=%u", t->group);
        link_remove(&t->link);
        if (t->close_scheduled) link_remove(&t->close_link);
        t->mux = NULL;
    }
}

/* --- outgoing connections ------------------------------------------------------------------ */

/* The one place a connect ends: reports to its owner once and frees it. */
static void connect_finish(struct spool_mux_connect *c, int status)
{
    struct spool_mux *m = c->mux;
    struct mux_transport *t = c->transport;
    uv_stream_t *stream = NULL;
    if (status == 0) {
        stream = (uv_stream_t *)c->tcp;
        stream->data = NULL;
    }
    link_remove(&c->link);
    if (c->ai != NULL) uv_freeaddrinfo(c->ai);
    if (t != NULL) {
        struct raft_uv_connect *req = c->raft_req;
        int rs = status == 0 ? 0 : c->canceled ? RAFT_CANCELED : RAFT_NOCONNECTION;
        free(c);
        t->connects--;
        req->cb(req, stream, rs);
        transport_maybe_closed(t);
    } else {
        spool_mux_rpc_connect_cb cb = c->rpc_cb;
        void *arg = c->rpc_arg;
        free(c);
        if (cb != NULL)
            cb(arg, stream, status);
        else if (stream != NULL) /* its transport went away */
            uv_close((uv_handle_t *)stream, stream_closed_free_cb);
    }
    mux_maybe_closed(m);
}

static void connect_start(struct spool_mux_connect *c);

static void connect_closed_cb(uv_handle_t *handle)
{
    struct spool_mux_connect *c = handle->data;
    raft_free(c->tcp);
    c->tcp = NULL;
    if (c->next_address && !c->canceled) {
        c->next_address = false;
        connect_start(c);
        return;
    }
    connect_finish(c, c->canceled ? UV_ECANCELED : c->status);
}

/* Fails the attempt: closes the handle; the close callback finishes (or tries the next
 * address when `next_address` is set). */
static void connect_fail(struct spool_mux_connect *c, int status)
{
    c->status = status;
    c->state = CONNECT_CLOSING;
    uv_close((uv_handle_t *)c->tcp, connect_closed_cb);
}

static void connect_written_cb(uv_write_t *req, int status)
{
    struct spool_mux_connect *c = req->data;
    if (c->state == CONNECT_CLOSING) return; /* aborted: the close callback finishes */
    if (status != 0) {
        connect_fail(c, status);
        return;
    }
    connect_finish(c, 0);
}

static void connect_connected_cb(uv_connect_t *req, int status)
{
    struct spool_mux_connect *c = req->data;
    if (c->state == CONNECT_CLOSING) return;
    if (status != 0) {
        c->ai_current = c->ai_current->ai_next;
        c->next_address = c->ai_current != NULL;
        connect_fail(c, status);
        return;
    }
    uv_tcp_nodelay(c->tcp, 1);
    c->state = CONNECT_WRITING;
    int rv = uv_write(&c->write, (uv_stream_t *)c->tcp, &c->preamble_buf, 1, connect_written_cb);
    if (rv != 0) connect_fail(c, rv);
}

/* Starts a TCP connect to c->ai_current. */
static void connect_start(struct spool_mux_connect *c)
{
    c->tcp = raft_malloc(sizeof *c->tcp);
    if (c->tcp == NULL) {
        connect_finish(c, UV_ENOMEM);
        return;
    }
    uv_tcp_init(c->mux->loop, c->tcp);
    c->tcp->data = c;
    c->state = CONNECT_CONNECTING;
    int rv = uv_tcp_connect(&c->connect, c->tcp, c->ai_current->ai_addr, connect_connected_cb);
    if (rv != 0) {
        c->ai_current = c->ai_current->ai_next;
        c->next_address = c->ai_current != NULL;
        connect_fail(c, rv);
    }
}

static void connect_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct spool_mux_connect *c = req->data;
    c->ai = res;
    if (c->canceled) {
        connect_finish(c, UV_ECANCELED);
        return;
    }
    if (status != 0 || res == NULL) {
        SPOOL_DEBUG("mux.resolve_failed", "host=%s error=%s", c->host,
                    uv_strerror(status ? status : UV_EAI_NONAME));
        connect_finish(c, status ? status : UV_EAI_NONAME);
        return;
    }
    c->ai_current = res;
    connect_start(c);
}

static void connect_abort(struct spool_mux_connect *c)
{
    if (c->canceled) return;
    c->canceled = true;
    switch (c->state) {
        case CONNECT_RESOLVING:
            uv_cancel((uv_req_t *)&c->resolve); /* the resolve callback finishes either way */
            break;
        case CONNECT_CONNECTING:
        case CONNECT_WRITING:
            connect_fail(c, UV_ECANCELED);
            break;
        case CONNECT_CLOSING:
            break;
    }
}

/* Creates a connect and starts resolving; the callback fields are set by the caller. */
static int connect_new(struct spool_mux *m, const char *address, const struct spool_preamble *p,
                       struct spool_mux_connect **out)
{
    struct spool_mux_connect *c = calloc(1, sizeof *c);
    if (c == NULL) return SPOOL_ENOMEM;
    if (spool_mux_split_address(address, c->host, sizeof c->host, c->port, sizeof c->port) != 0) {
        free(c);
        return SPOOL_EINVAL;
    }
    size_t n = spool_preamble_encode(p, c->preamble);
    if (n == 0) {
        free(c);
        return SPOOL_EINVAL;
    }
    c->preamble_buf = uv_buf_init((char *)c->preamble, (unsigned)n);
    c->mux = m;
    c->resolve.data = c;
    c->connect.data = c;
    c->write.data = c;
    c->state = CONNECT_RESOLVING;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rv = uv_getaddrinfo(m->loop, &c->resolve, connect_resolved_cb, c->host, c->port, &hints);
    if (rv != 0) {
        free(c);
        return SPOOL_EIO;
    }
    link_push(&m->connects, &c->link);
    *out = c;
    return 0;
}

int spool_mux_rpc_connect(struct spool_mux *m, const char *address, spool_mux_rpc_connect_cb cb,
                          void *arg, struct spool_mux_connect **handle)
{
    if (m->closing) return SPOOL_ECLOSED;
    struct spool_preamble p = {.kind = SPOOL_PREAMBLE_RPC, .group = 0, .id = m->node_id};
    snprintf(p.address, sizeof p.address, "%s", m->address);
    struct spool_mux_connect *c;
    int rv = connect_new(m, address, &p, &c);
    if (rv != 0) return rv;
    c->rpc_cb = cb;
    c->rpc_arg = arg;
    if (handle != NULL) *handle = c;
    return 0;
}

void spool_mux_rpc_connect_cancel(struct spool_mux_connect *c) { connect_abort(c); }

/* --- the raft_uv_transport of one group ---------------------------------------------------- */

static int transport_init_cb(struct raft_uv_transport *rt, raft_id id, const char *address)
{
    struct mux_transport *t = rt->impl;
    if (strlen(address) > SPOOL_PREAMBLE_MAX_ADDRESS) {
        snprintf(rt->errmsg, sizeof rt->errmsg, "address too long");
        return RAFT_INVALID;
    }
    t->id = id;
    snprintf(t->address, sizeof t->address, "%s", address);
    return 0;
}

static int transport_listen_cb(struct raft_uv_transport *rt, raft_uv_accept_cb cb)
{
    struct mux_transport *t = rt->impl;
    t->accept_cb = cb;
    return 0;
}

static int transport_connect_cb(struct raft_uv_transport *rt, struct raft_uv_connect *req,
                                raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct mux_transport *t = rt->impl;
    if (t->closing || t->mux == NULL || t->mux->closing) {
        snprintf(rt->errmsg, sizeof rt->errmsg, "transport closing");
        return RAFT_CANCELED;
    }
    struct spool_preamble p = {.kind = SPOOL_PREAMBLE_RAFT, .group = t->group, .id = t->id};
    snprintf(p.address, sizeof p.address, "%s", t->address);
    struct spool_mux_connect *c;
    int rv = connect_new(t->mux, address, &p, &c);
    if (rv != 0) {
        snprintf(rt->errmsg, sizeof rt->errmsg, "connect to %llu at %s: %s",
                 (unsigned long long)id, address, spool_err_name(rv));
        return rv == SPOOL_ENOMEM ? RAFT_NOMEM : RAFT_NOCONNECTION;
    }
    req->cb = cb;
    c->transport = t;
    c->raft_req = req;
    t->connects++;
    return 0;
}

static void transport_maybe_closed(struct mux_transport *t)
{
    if (!t->closing || t->connects > 0 || t->close_scheduled || t->mux == NULL) return;
    t->close_scheduled = true;
    link_push(&t->mux->closed_transports, &t->close_link);
    uv_idle_start(&t->mux->deferred, deferred_cb);
}

static void transport_close_cb(struct raft_uv_transport *rt, raft_uv_transport_close_cb cb)
{
    struct mux_transport *t = rt->impl;
    t->closing = true;
    t->accept_cb = NULL;
    t->close_cb = cb;
    if (t->mux != NULL) {
        struct link *l = t->mux->connects.next;
        while (l != &t->mux->connects) {
            struct link *next = l->next;
            struct spool_mux_connect *c = LINK_DATA(l, struct spool_mux_connect, link);
            if (c->transport == t) connect_abort(c);
            l = next;
        }
    }
    transport_maybe_closed(t);
}

int spool_mux_transport_init(struct spool_mux *m, uint32_t group_id, struct raft_uv_transport *rt)
{
    if (m->closing) return SPOOL_ECLOSED;
    if (mux_find_group(m, group_id) != NULL) return SPOOL_EINVAL;
    struct mux_transport *t = calloc(1, sizeof *t);
    if (t == NULL) return SPOOL_ENOMEM;
    t->mux = m;
    t->rt = rt;
    t->group = group_id;
    link_init(&t->close_link);
    link_push(&m->transports, &t->link);
    memset(rt, 0, sizeof *rt);
    rt->version = 1;
    rt->impl = t;
    rt->init = transport_init_cb;
    rt->listen = transport_listen_cb;
    rt->connect = transport_connect_cb;
    rt->close = transport_close_cb;
    return 0;
}

void spool_mux_transport_close(struct raft_uv_transport *rt)
{
    struct mux_transport *t = rt->impl;
    if (t == NULL) return;
    if (t->mux != NULL) {
        link_remove(&t->link);
        if (t->close_scheduled) link_remove(&t->close_link);
        /* Pending connects (only if libraft never closed the transport) are aborted and
         * finish without the transport. */
        for (struct link *l = t->mux->connects.next; l != &t->mux->connects; l = l->next) {
            struct spool_mux_connect *c = LINK_DATA(l, struct spool_mux_connect, link);
            if (c->transport == t) {
                SPOOL_WARN("mux.transport_closed_with_connects", "group=%u", t->group);
                c->transport = NULL;
                c->rpc_cb = NULL;
                connect_abort(c);
            }
        }
    }
    free(t);
    rt->impl = NULL;
}
