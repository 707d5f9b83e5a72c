/*
 * One event loop's client-facing stack (interface and design in frontend.h).
 *
 * Request path: HTTP server -> on_request (counts the connection on its first request; with
 * several loops answers /readyz 503 while any loop's node cannot route) -> CORS (when
 * --cors-origins) -> Durable Streams dispatch (/v1/stream/...) -> router (REST, realtime, SSE,
 * probes, metrics, admin).
 *
 * The tick (several loops only) is unreferenced, so it never keeps a loop alive; it is closed at
 * the start of the drain. Drain completion is one chain of callbacks, each step starting in the
 * completion of the previous one, ending in the caller's cb.
 */
#include "gateway/frontend.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/json_body.h"

#define TICK_MS 250

static bool all_ready(const struct spool_loop_set *set)
{
    for (unsigned i = 0; i < set->n; i++)
        if (!atomic_load_explicit(&set->ready[i], memory_order_relaxed)) return false;
    return true;
}

/* ---- connections handed over to loop 0 ---- */

struct spool_handoff {
    struct spool_handoff *next;
    uv_os_sock_t fd;
    size_t len;
    char data[]; /* the request as received (rebuilt) and whatever followed it */
};

void spool_loop_set_init(struct spool_loop_set *set, unsigned n)
{
    memset(set, 0, sizeof *set);
    set->n = n;
    pthread_mutex_init(&set->lock, NULL);
}

static void handoffs_drop(struct spool_handoff *h)
{
    while (h != NULL) {
        struct spool_handoff *next = h->next;
        close(h->fd);
        free(h);
        h = next;
    }
}

void spool_loop_set_close(struct spool_loop_set *set)
{
    handoffs_drop(set->handoffs);
    set->handoffs = NULL;
    pthread_mutex_destroy(&set->lock);
}

static bool for_loop0(const struct spool_frontend *fe, const char *path)
{
    return fe->set != NULL && fe->index > 0 &&
           (strncmp(path, "/v1/stream", 10) == 0 || strncmp(path, "/v1/admin/", 10) == 0);
}

static bool append(char **p, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1) c *= 2;
        char *q = realloc(*p, c);
        if (q == NULL) return false;
        *p = q, *cap = c;
    }
    memcpy(*p + *len, s, n);
    *len += n;
    return true;
}

/* The request's bytes again: request line, headers (framing ones replaced by a Content-Length;
 * Expect dropped, it has been answered), body. */
static char *rebuild(const struct spool_http_req *req, size_t *out_len)
{
    char *p = NULL, line[64];
    size_t len = 0, cap = 0;
    bool ok = append(&p, &len, &cap, req->method, strlen(req->method)) && append(&p, &len, &cap, " ", 1) &&
              append(&p, &len, &cap, req->target, strlen(req->target));
    int n = snprintf(line, sizeof line, " HTTP/%u.%u\r\n", req->http_major, req->http_minor);
    ok = ok && append(&p, &len, &cap, line, (size_t)n);
    for (size_t i = 0; ok && i < req->header_count; i++) {
        const struct spool_http_header *h = &req->headers[i];
        if (strcasecmp(h->name, "content-length") == 0 || strcasecmp(h->name, "transfer-encoding") == 0 ||
            strcasecmp(h->name, "expect") == 0)
            continue;
        ok = append(&p, &len, &cap, h->name, strlen(h->name)) && append(&p, &len, &cap, ": ", 2) &&
             append(&p, &len, &cap, h->value, strlen(h->value)) && append(&p, &len, &cap, "\r\n", 2);
    }
    n = snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", req->body_len);
    ok = ok && append(&p, &len, &cap, line, (size_t)n) && append(&p, &len, &cap, req->body, req->body_len);
    if (!ok) {
        free(p);
        return NULL;
    }
    *out_len = len;
    return p;
}

static void on_handed_closed(uv_handle_t *h) { free(h); }

/* On a worker: sends the connection (with `req`) to loop 0. */
static void hand_over(struct spool_frontend *fe, struct spool_http_req *req)
{
    size_t len = 0;
    char *bytes = rebuild(req, &len);
    if (bytes == NULL) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "out of memory");
        return;
    }
    uv_tcp_t *tcp;
    char *leftover;
    size_t leftover_len;
    struct spool_err err;
    if (spool_http_upgrade(req, &tcp, &leftover, &leftover_len, &err) != 0) { /* client gone */
        free(bytes);
        return;
    }
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)tcp, &fd);
    int dup_fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    uv_close((uv_handle_t *)tcp, on_handed_closed);
    struct spool_handoff *h = dup_fd >= 0 ? malloc(sizeof *h + len + leftover_len) : NULL;
    if (h != NULL) {
        h->fd = dup_fd;
        h->len = len + leftover_len;
        memcpy(h->data, bytes, len);
        if (leftover_len > 0) memcpy(h->data + len, leftover, leftover_len);
    } else if (dup_fd >= 0) {
        close(dup_fd);
    }
    free(bytes);
    free(leftover);
    if (h == NULL) return; /* the client sees the connection close and retries */
    pthread_mutex_lock(&fe->set->lock);
    if (fe->set->to_loop0 != NULL) {
        h->next = fe->set->handoffs;
        fe->set->handoffs = h;
        uv_async_send(fe->set->to_loop0);
        h = NULL;
    }
    pthread_mutex_unlock(&fe->set->lock);
    handoffs_drop(h); /* loop 0 is draining */
}

/* On loop 0: adopts what the workers handed over, in the order they did. */
static void on_handoff(uv_async_t *a)
{
    struct spool_frontend *fe = a->data;
    pthread_mutex_lock(&fe->set->lock);
    struct spool_handoff *h = fe->set->handoffs, *rev = NULL;
    fe->set->handoffs = NULL;
    pthread_mutex_unlock(&fe->set->lock);
    while (h != NULL) {
        struct spool_handoff *next = h->next;
        h->next = rev, rev = h, h = next;
    }
    while (rev != NULL) {
        struct spool_handoff *next = rev->next;
        struct spool_err err;
        if (fe->http == NULL || fe->draining) close(rev->fd);
        else if (spool_http_server_adopt_bytes(fe->http, rev->fd, rev->data, rev->len, &err) != 0)
            SPOOL_WARN("worker.handoff_failed", "msg=\"%s\"", err.msg);
        free(rev);
        rev = next;
    }
}

static void on_request(void *arg, struct spool_http_req *req)
{
    struct spool_frontend *fe = arg;
    if (req->seq == 1 && fe->served != NULL) spool_counter_inc(fe->served);
    if (for_loop0(fe, req->path)) {
        hand_over(fe, req);
        return;
    }
    if (fe->set != NULL && strcmp(req->path, "/readyz") == 0 &&
        (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) && !all_ready(fe->set)) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "not ready (a worker loop cannot route yet)");
        return;
    }
    fe->next(fe->next_arg, req);
}

static void on_tick(uv_timer_t *t)
{
    struct spool_frontend *fe = t->data;
    bool ready = fe->node != NULL && !fe->draining && spool_node_ready(fe->node);
    atomic_store_explicit(&fe->set->ready[fe->index], ready, memory_order_relaxed);
    spool_metrics_refresh(fe->metrics);
}

static void on_fresh(uv_async_t *a)
{
    struct spool_frontend *fe = a->data;
    spool_metrics_refresh(fe->metrics);
}

static void wake_fresh(void *arg) { uv_async_send(arg); }

int spool_frontend_start(struct spool_frontend *fe, uv_loop_t *loop, const struct spool_options *o,
                         unsigned index, struct spool_node *node, const struct spool_keyring *keys,
                         struct spool_metrics *metrics, struct spool_loop_set *set,
                         const char *listen, bool join, struct spool_err *err)
{
    memset(fe, 0, sizeof *fe);
    fe->loop = loop;
    fe->opts = o;
    fe->index = index;
    fe->node = node;
    fe->metrics = metrics;
    fe->set = set != NULL && set->n > 1 ? set : NULL;
    int rv;
    spool_http_router_init(&fe->router);
    if ((rv = spool_http_api_init(&fe->api, o, node, keys, metrics, err)) != 0 ||
        (rv = spool_http_api_routes(&fe->api, &fe->router, err)) != 0 ||
        (rv = spool_realtime_mount(&fe->realtime, loop, o, node, keys, &fe->router, err)) != 0 ||
        (rv = spool_ds_init(&fe->ds, loop, o, node, &fe->api, &fe->router, err)) != 0)
        return rv;
    fe->api.realtime = fe->realtime.rt;
    spool_realtime_set_counters(&fe->realtime, spool_http_api_realtime_counters(&fe->api));
    static const char *loop_label[] = {"loop"};
    struct spool_metric_family *served = spool_metrics_counter(
        metrics, "spool_loop_connections_total",
        "client connections served, by event loop (--workers; a connection counts at its first request)",
        loop_label, 1, err);
    char name[16];
    snprintf(name, sizeof name, "%u", index);
    if (served == NULL) return err->code;
    if ((fe->served = spool_counter_of(served, (const char *[]){name})) == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "out of memory");

    struct spool_http_config cfg;
    spool_http_config_defaults(&cfg);
    cfg.max_connections = o->max_connections;
    cfg.max_header_bytes = o->max_header_bytes;
    cfg.max_body_bytes = o->max_request_bytes;
    cfg.request_timeout_ms = o->request_timeout_ms;
    cfg.idle_timeout_ms = o->idle_timeout_ms;
    cfg.drain_timeout_ms = o->drain_timeout_ms;
    fe->next = spool_ds_dispatch; /* /v1/stream/... itself, the rest to the router */
    fe->next_arg = fe->ds;
    if ((rv = spool_cors_init(&fe->cors, o->cors_origins, fe->next, fe->next_arg, err)) != 0) return rv;
    if (spool_cors_enabled(&fe->cors)) {
        fe->next = spool_cors_handle;
        fe->next_arg = &fe->cors;
    }
    cfg.handler = on_request;
    cfg.handler_arg = fe;
    cfg.on_done = spool_http_api_on_done;
    cfg.on_done_arg = &fe->api;
    if (fe->set != NULL) {
        cfg.reuse_port = join ? SPOOL_HTTP_REUSEPORT_JOIN : SPOOL_HTTP_REUSEPORT_FIRST;
        cfg.shared_connections = &fe->set->connections;
    }
    if ((rv = spool_http_server_init(&fe->http, loop, &cfg, err)) != 0) return rv;
    fe->api.server = fe->http;
    if ((rv = spool_http_server_listen(fe->http, listen, err)) != 0) return rv;
    if (fe->set != NULL) {
        uv_timer_init(loop, &fe->tick);
        fe->tick.data = fe;
        fe->ticking = true;
        uv_timer_start(&fe->tick, on_tick, 0, TICK_MS);
        uv_unref((uv_handle_t *)&fe->tick);
        uv_async_init(loop, &fe->fresh, on_fresh);
        fe->fresh.data = fe;
        uv_unref((uv_handle_t *)&fe->fresh);
        spool_metrics_set_waker(metrics, wake_fresh, &fe->fresh);
        if (index == 0) {
            uv_async_init(loop, &fe->handoff, on_handoff);
            fe->handoff.data = fe;
            uv_unref((uv_handle_t *)&fe->handoff);
            pthread_mutex_lock(&fe->set->lock);
            fe->set->to_loop0 = &fe->handoff;
            pthread_mutex_unlock(&fe->set->lock);
        }
    }
    /* Test harnesses and scripts read the port from loop 0's line: one http.listening per process. */
    if (index == 0) SPOOL_INFO("http.listening", "address=%s port=%d", listen, spool_http_server_port(fe->http));
    else SPOOL_INFO("worker.listening", "worker=%u address=%s port=%d", index, listen, spool_http_server_port(fe->http));
    return 0;
}

int spool_frontend_port(const struct spool_frontend *fe)
{
    return fe->http != NULL ? spool_http_server_port(fe->http) : 0;
}

static void on_realtime_closed(void *arg)
{
    struct spool_frontend *fe = arg;
    if (fe->drained_cb != NULL) fe->drained_cb(fe->drained_arg);
}

static void on_http_closed(void *arg)
{
    struct spool_frontend *fe = arg;
    fe->http = NULL;
    fe->api.server = NULL;
    fe->api.realtime = NULL;
    spool_ds_stop(fe->ds);
    SPOOL_INFO("http.closed", "connections=0 worker=%u", fe->index);
    /* upgraded WebSocket connections are not the HTTP server's: close them before the node */
    spool_realtime_unmount(&fe->realtime, on_realtime_closed, fe);
}

static void on_tick_closed(uv_handle_t *h) { (void)h; }

void spool_frontend_drain(struct spool_frontend *fe, void (*cb)(void *arg), void *arg)
{
    fe->draining = true;
    fe->drained_cb = cb;
    fe->drained_arg = arg;
    if (fe->ticking) {
        atomic_store_explicit(&fe->set->ready[fe->index], false, memory_order_relaxed);
        fe->ticking = false;
        uv_close((uv_handle_t *)&fe->tick, on_tick_closed);
        spool_metrics_set_waker(fe->metrics, NULL, NULL); /* no more sends to fresh */
        uv_close((uv_handle_t *)&fe->fresh, on_tick_closed);
        if (fe->index == 0) { /* no more handoffs; those queued are closed (loop 0 is draining) */
            pthread_mutex_lock(&fe->set->lock);
            struct spool_handoff *h = fe->set->handoffs;
            fe->set->handoffs = NULL;
            fe->set->to_loop0 = NULL;
            pthread_mutex_unlock(&fe->set->lock);
            handoffs_drop(h);
            uv_close((uv_handle_t *)&fe->handoff, on_tick_closed);
        }
    }
    if (fe->http != NULL) spool_http_server_close(fe->http, on_http_closed, fe);
    else on_http_closed(fe);
}

void spool_frontend_free(struct spool_frontend *fe)
{
    spool_http_api_close(&fe->api);
    spool_http_router_close(&fe->router);
    spool_cors_close(&fe->cors);
    spool_ds_free(fe->ds);
    fe->ds = NULL;
}
