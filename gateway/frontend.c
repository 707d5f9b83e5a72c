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

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "gateway/json_body.h"

#define TICK_MS 250

static bool all_ready(const struct spool_loop_set *set)
{
    for (unsigned i = 0; i < set->n; i++)
        if (!atomic_load_explicit(&set->ready[i], memory_order_relaxed)) return false;
    return true;
}

static void on_request(void *arg, struct spool_http_req *req)
{
    struct spool_frontend *fe = arg;
    if (req->seq == 1 && fe->served != NULL) spool_counter_inc(fe->served);
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
