/*
 * Worker loops (interface and design in workers.h).
 *
 * Threads and ownership. Each worker's state (`struct spool_worker`) is touched only by its own
 * thread, except the few fields under `ws->lock`: the start report (reported, start_rc,
 * start_msg), `async_open` (whether loop 0 may still uv_async_send to its stop handle) and
 * `finished`. Loop 0 touches only `struct spool_workers` and those fields. The only handles
 * crossing threads are the two kinds of uv_async_t, each sent to under the lock and only while
 * its owner has not closed it (the owner clears the flag under the lock before uv_close), so a
 * send can never hit a closed handle.
 *
 * A worker's life, on its thread: loop, stop handle, keyring, metrics view, gateway-only node,
 * frontend; report (loop 0 waits for it); run the loop. Its stop path (asked by loop 0, or taken
 * at once after a failed start): frontend drain -> node close -> stop handle closed -> the loop
 * ends -> frontend, keyring, view and loop released -> `finished` set and loop 0 woken.
 * Loop 0 calls the stop callback once every started thread has finished, and joins them in
 * spool_workers_free().
 */
#include "gateway/workers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Collector families each loop reports for itself (summed in a scrape); every other collector
 * is process-wide and reported by loop 0 only. */
static const char *const per_loop_families[] = {"spool_connections"};

#define WORKER_ID_BASE (1ULL << 62)
#define WORKER_ID_MAX_NODE (1ULL << 50)

struct spool_worker {
    struct spool_workers *ws;
    unsigned index;
    pthread_t thread;
    uv_loop_t loop;
    bool loop_ok, view_ok, stopping;
    uv_async_t stop_async;
    struct spool_keyring keyring;
    struct spool_metrics metrics; /* a view of loop 0's registry */
    struct spool_node *node;
    struct spool_frontend fe;
    /* under ws->lock */
    bool reported, async_open, finished;
    int start_rc;
    char start_msg[256];
};

struct spool_workers {
    uv_loop_t *loop;
    const struct spool_options *opts;
    char listen[320];
    char home[256];
    char *peers;
    struct spool_metrics *root;
    struct spool_loop_set *set;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uv_async_t done_async;
    bool done_open; /* under lock */
    unsigned n, launched;
    struct spool_worker *w;
    bool stop_requested, stop_done;
    void (*stopped_cb)(void *arg);
    void *stopped_arg;
};

unsigned spool_workers_count(const struct spool_options *o)
{
    uint64_t n = o->workers != 0 ? o->workers : uv_available_parallelism();
    if (n == 0) n = 1;
    return n > SPOOL_MAX_LOOPS ? SPOOL_MAX_LOOPS : (unsigned)n;
}

void spool_options_node_config(const struct spool_options *o, struct spool_node_config *cfg)
{
    spool_node_config_defaults(cfg);
    cfg->id = o->id;
    cfg->data_dir = o->data;
    cfg->cluster_listen = o->cluster_listen;
    cfg->peers = o->peers;
    cfg->shards = (uint32_t)o->shards;
    cfg->replicas = (uint32_t)o->replicas;
    cfg->gateway_only = strcmp(o->role, "gateway") == 0;
    cfg->join = o->join;
    cfg->snapshot_threshold = o->snapshot_threshold;
    cfg->snapshot_trailing = o->snapshot_trailing;
    cfg->election_timeout_ms = o->election_timeout_ms;
    cfg->heartbeat_ms = o->heartbeat_ms;
    cfg->forward_timeout_ms = o->forward_timeout_ms;
    cfg->rebalance_interval_ms = o->rebalance_interval_ms;
    cfg->presence_node_timeout_ms = o->presence_node_timeout_ms;
    cfg->dedup_window_ms = o->dedup_window_ms;
    cfg->conv_max_entries = o->ai_state_entries;
    cfg->conv_scan_max = o->ai_state_scan;
    cfg->store.segment_bytes = o->segment_bytes;
    cfg->store.tail_cache_bytes = o->tail_cache_bytes;
    cfg->store.retention.max_age_ms = o->retention_max_age_ms;
    cfg->store.retention.max_count = o->retention_max_count;
    cfg->store.retention.max_bytes = o->retention_max_bytes;
}

/* ---- on the worker's thread ---- */

static void on_stop_closed(uv_handle_t *h) { (void)h; }

static void on_worker_node_closed(void *arg)
{
    struct spool_worker *w = arg;
    w->node = NULL;
    pthread_mutex_lock(&w->ws->lock);
    w->async_open = false;
    pthread_mutex_unlock(&w->ws->lock);
    uv_close((uv_handle_t *)&w->stop_async, on_stop_closed);
}

static void on_worker_drained(void *arg)
{
    struct spool_worker *w = arg;
    if (w->node != NULL) spool_node_close(w->node, on_worker_node_closed, w);
    else on_worker_node_closed(w);
}

static void worker_stop(struct spool_worker *w)
{
    if (w->stopping) return;
    w->stopping = true;
    SPOOL_INFO("worker.draining", "worker=%u", w->index);
    spool_frontend_drain(&w->fe, on_worker_drained, w);
}

static void on_stop_async(uv_async_t *a) { worker_stop(a->data); }

static int worker_init(struct spool_worker *w, struct spool_err *err)
{
    struct spool_workers *ws = w->ws;
    const struct spool_options *o = ws->opts;
    int rv;
    spool_keyring_init(&w->keyring);
    if (uv_loop_init(&w->loop) != 0) return spool_err_set(err, SPOOL_ENOMEM, "worker %u: event loop", w->index);
    w->loop_ok = true;
    uv_async_init(&w->loop, &w->stop_async, on_stop_async);
    w->stop_async.data = w;
    pthread_mutex_lock(&ws->lock);
    w->async_open = true;
    pthread_mutex_unlock(&ws->lock);
    if ((rv = spool_keyring_configure(&w->keyring, o->api_keys, o->api_keys_file, o->anonymous, err)) != 0)
        return rv;
    spool_metrics_view_init(&w->metrics, ws->root, per_loop_families,
                            sizeof per_loop_families / sizeof per_loop_families[0]);
    w->view_ok = true;
    struct spool_node_config cfg;
    spool_options_node_config(o, &cfg);
    cfg.id = WORKER_ID_BASE + o->id * 1024 + w->index;
    cfg.gateway_only = true;
    cfg.join = false; /* --join is the storage node's (loop 0's) business */
    cfg.peers = ws->peers;
    cfg.cluster_listen = "127.0.0.1:0"; /* a gateway-only node only dials out */
    cfg.home_id = o->id; /* loop 0's node: at its bound address, not the map's (maybe stale) */
    snprintf(cfg.home_address, sizeof cfg.home_address, "%s", ws->home);
    if ((rv = spool_node_init(&w->node, &w->loop, &cfg, err)) != 0) return rv;
    if ((rv = spool_frontend_start(&w->fe, &w->loop, o, w->index, w->node, &w->keyring, &w->metrics,
                                   ws->set, ws->listen, true, err)) != 0)
        return rv;
    SPOOL_INFO("worker.started", "worker=%u node_id=%llu peers=%s", w->index,
               (unsigned long long)cfg.id, ws->peers);
    return 0;
}

static void *worker_main(void *arg)
{
    struct spool_worker *w = arg;
    struct spool_workers *ws = w->ws;
    struct spool_err err;
    spool_err_clear(&err);
    int rc = worker_init(w, &err);
    pthread_mutex_lock(&ws->lock);
    w->reported = true;
    w->start_rc = rc;
    snprintf(w->start_msg, sizeof w->start_msg, "%s", err.msg);
    pthread_cond_broadcast(&ws->cond);
    pthread_mutex_unlock(&ws->lock);
    if (w->loop_ok) {
        if (rc != 0) worker_stop(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        spool_frontend_free(&w->fe);
        if (w->view_ok) spool_metrics_close(&w->metrics);
        if (uv_loop_close(&w->loop) != 0)
            SPOOL_ERROR("worker.loop_busy", "worker=%u msg=\"handles still open at exit\"", w->index);
        SPOOL_INFO("worker.stopped", "worker=%u", w->index);
    }
    spool_keyring_close(&w->keyring);
    pthread_mutex_lock(&ws->lock);
    w->finished = true;
    if (ws->done_open) uv_async_send(&ws->done_async);
    pthread_mutex_unlock(&ws->lock);
    return NULL;
}

/* ---- on loop 0 ---- */

static void on_done_closed(uv_handle_t *h)
{
    struct spool_workers *ws = h->data;
    if (ws->stopped_cb != NULL) ws->stopped_cb(ws->stopped_arg);
}

static void check_done(struct spool_workers *ws)
{
    if (!ws->stop_requested || ws->stop_done) return;
    bool all = true;
    pthread_mutex_lock(&ws->lock);
    for (unsigned i = 0; i < ws->launched; i++) all = all && ws->w[i].finished;
    if (all) ws->done_open = false;
    pthread_mutex_unlock(&ws->lock);
    if (!all) return;
    ws->stop_done = true;
    uv_close((uv_handle_t *)&ws->done_async, on_done_closed);
}

static void on_done_async(uv_async_t *a) { check_done(a->data); }

int spool_workers_start(struct spool_workers **out, uv_loop_t *loop, const struct spool_options *o,
                        const char *listen, const char *storage_peers, const char *home,
                        struct spool_metrics *root, struct spool_loop_set *set,
                        struct spool_err *err)
{
    *out = NULL;
    if (set->n <= 1) return 0;
    if (o->id >= WORKER_ID_MAX_NODE)
        return spool_err_set(err, SPOOL_EINVAL, "--workers above 1 needs an --id below 2^50");
    struct spool_workers *ws = calloc(1, sizeof *ws);
    if (ws == NULL) return spool_err_set(err, SPOOL_ENOMEM, "workers");
    ws->n = set->n - 1;
    ws->w = calloc(ws->n, sizeof *ws->w);
    ws->peers = strdup(storage_peers);
    if (ws->w == NULL || ws->peers == NULL) {
        free(ws->w), free(ws->peers), free(ws);
        return spool_err_set(err, SPOOL_ENOMEM, "workers");
    }
    ws->loop = loop;
    ws->opts = o;
    snprintf(ws->listen, sizeof ws->listen, "%s", listen);
    snprintf(ws->home, sizeof ws->home, "%s", home);
    ws->root = root;
    ws->set = set;
    pthread_mutex_init(&ws->lock, NULL);
    pthread_cond_init(&ws->cond, NULL);
    uv_async_init(loop, &ws->done_async, on_done_async);
    ws->done_async.data = ws;
    ws->done_open = true;
    *out = ws;
    for (unsigned i = 0; i < ws->n; i++) {
        struct spool_worker *w = &ws->w[i];
        w->ws = ws;
        w->index = i + 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            return spool_err_set(err, SPOOL_ENOMEM, "worker %u: cannot start a thread", w->index);
        ws->launched++;
        pthread_mutex_lock(&ws->lock);
        while (!w->reported) pthread_cond_wait(&ws->cond, &ws->lock);
        int rc = w->start_rc;
        pthread_mutex_unlock(&ws->lock);
        if (rc != 0) return spool_err_set(err, rc, "worker %u: %s", w->index, w->start_msg);
    }
    return 0;
}

void spool_workers_stop(struct spool_workers *ws, void (*cb)(void *arg), void *arg)
{
    if (ws->stop_requested) return;
    ws->stop_requested = true;
    ws->stopped_cb = cb;
    ws->stopped_arg = arg;
    pthread_mutex_lock(&ws->lock);
    for (unsigned i = 0; i < ws->launched; i++)
        if (ws->w[i].async_open) uv_async_send(&ws->w[i].stop_async);
    pthread_mutex_unlock(&ws->lock);
    check_done(ws);
}

void spool_workers_free(struct spool_workers *ws)
{
    if (ws == NULL) return;
    for (unsigned i = 0; i < ws->launched; i++) pthread_join(ws->w[i].thread, NULL);
    pthread_cond_destroy(&ws->cond);
    pthread_mutex_destroy(&ws->lock);
    free(ws->peers);
    free(ws->w);
    free(ws);
}
