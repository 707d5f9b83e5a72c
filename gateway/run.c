/*
 * spool_run: one spoold process, from parsed options to exit code.
 *
 * Everything runs on one libuv loop:
 *
 *   keyring (--api-keys, --api-keys-file, --anonymous)     refuses to start without keys unless
 *                                                          --anonymous
 *   metrics registry
 *   node (cluster/node.h): Raft shards + stores + the cluster port; a single node when --peers
 *                          is empty
 *   router + REST API (gateway/http_api.h) + realtime WebSocket/SSE (gateway/realtime.h)
 *   + Durable Streams (gateway/durable_streams.h, in front of the router for /v1/stream/...)
 *   + the HTTP server on --listen
 *   SIGTERM / SIGINT watchers
 *
 * Shutdown is one chain, started by the first SIGTERM/SIGINT (or by a failure after the node
 * started): the HTTP server drains (stops accepting, finishes in-flight requests and ends SSE
 * streams, bounded by --drain-timeout) -> Durable Streams stops its sweeper and the realtime
 * WebSocket connections close (1001) -> the node closes (hands off leaderships, stops Raft,
 * syncs stores) -> the signal watchers close -> uv_run returns -> everything else is released
 * and the loop closed. Each step starts in the completion callback of the previous one.
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cluster/node.h"
#include "common/log.h"
#include "gateway/auth.h"
#include "gateway/durable_streams.h"
#include "gateway/cors.h"
#include "gateway/http_api.h"
#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "gateway/metrics.h"
#include "gateway/options.h"
#include "gateway/realtime.h"

struct spool_daemon {
    const struct spool_options *opts;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    struct spool_keyring keyring;
    struct spool_metrics metrics;
    struct spool_node *node;
    struct spool_http_router router;
    struct spool_http_api api;
    struct spool_realtime_mount realtime; /* /v1/realtime (WebSocket) and SSE */
    struct spool_ds *ds;                  /* Durable Streams at /v1/stream/, in front of router */
    struct spool_cors cors;               /* --cors-origins, in front of ds for /v1/channels */
    struct spool_http_server *http;
    bool stopping;
    int exit_code;
};

static void on_signal_closed(uv_handle_t *h) { (void)h; }

static void on_node_closed(void *arg)
{
    struct spool_daemon *d = arg;
    d->node = NULL;
    SPOOL_INFO("spoold.stopped", "exit=%d", d->exit_code);
    uv_close((uv_handle_t *)&d->sigterm, on_signal_closed);
    uv_close((uv_handle_t *)&d->sigint, on_signal_closed);
}

static void on_realtime_closed(void *arg)
{
    struct spool_daemon *d = arg;
    if (d->node != NULL) spool_node_close(d->node, on_node_closed, d);
    else on_node_closed(d);
}

static void on_http_closed(void *arg)
{
    struct spool_daemon *d = arg;
    d->http = NULL;
    d->api.server = NULL;
    d->api.realtime = NULL;
    spool_ds_stop(d->ds);
    SPOOL_INFO("http.closed", "connections=0");
    /* upgraded WebSocket connections are not the HTTP server's: close them before the node */
    spool_realtime_unmount(&d->realtime, on_realtime_closed, d);
}

static void daemon_stop(struct spool_daemon *d, int exit_code)
{
    if (d->stopping) return;
    d->stopping = true;
    d->exit_code = exit_code;
    if (d->http != NULL) spool_http_server_close(d->http, on_http_closed, d);
    else on_http_closed(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct spool_daemon *d = s->data;
    if (d->stopping) {
        SPOOL_WARN("spoold.signal", "signal=%s note=\"shutdown already in progress\"", strsignal(signum));
        return;
    }
    SPOOL_INFO("spoold.signal", "signal=%s action=drain", strsignal(signum));
    daemon_stop(d, 0);
}

/* Limits that would make every request fail are configuration mistakes: refuse to start. */
static int options_check(const struct spool_options *o, struct spool_err *err)
{
    static const struct {
        const char *flag;
        size_t offset;
        uint64_t min;
    } mins[] = {
        {"--max-header-bytes", offsetof(struct spool_options, max_header_bytes), 256},
        {"--max-request-bytes", offsetof(struct spool_options, max_request_bytes), 1},
        {"--max-message-bytes", offsetof(struct spool_options, max_message_bytes), 1},
        {"--max-channel-name-bytes", offsetof(struct spool_options, max_channel_name_bytes), 1},
        {"--max-publish-batch", offsetof(struct spool_options, max_publish_batch), 1},
        {"--max-field-bytes", offsetof(struct spool_options, max_field_bytes), 1},
        {"--history-page-default", offsetof(struct spool_options, history_page_default), 1},
        {"--history-page-max", offsetof(struct spool_options, history_page_max), 1},
        {"--history-page-bytes", offsetof(struct spool_options, history_page_bytes), 1},
    };
    for (size_t i = 0; i < sizeof mins / sizeof mins[0]; i++) {
        uint64_t v = *(const uint64_t *)((const char *)o + mins[i].offset);
        if (v < mins[i].min)
            return spool_err_set(err, SPOOL_EINVAL, "%s must be at least %llu", mins[i].flag,
                                 (unsigned long long)mins[i].min);
    }
    return 0;
}

static int node_start(struct spool_daemon *d, struct spool_err *err)
{
    const struct spool_options *o = d->opts;
    struct spool_node_config cfg;
    spool_node_config_defaults(&cfg);
    if (strcmp(o->role, "node") != 0 && strcmp(o->role, "gateway") != 0)
        return spool_err_set(err, SPOOL_EINVAL, "--role must be node or gateway, not '%s'", o->role);
    if (o->shards == 0 || o->shards > UINT32_MAX || o->replicas == 0 || o->replicas > UINT32_MAX)
        return spool_err_set(err, SPOOL_EINVAL, "--shards and --replicas must be >= 1");
    cfg.id = o->id;
    cfg.data_dir = o->data;
    cfg.cluster_listen = o->cluster_listen;
    cfg.peers = o->peers;
    cfg.shards = (uint32_t)o->shards;
    cfg.replicas = (uint32_t)o->replicas;
    cfg.gateway_only = strcmp(o->role, "gateway") == 0;
    cfg.snapshot_threshold = o->snapshot_threshold;
    cfg.snapshot_trailing = o->snapshot_trailing;
    cfg.election_timeout_ms = o->election_timeout_ms;
    cfg.heartbeat_ms = o->heartbeat_ms;
    cfg.forward_timeout_ms = o->forward_timeout_ms;
    cfg.rebalance_interval_ms = o->rebalance_interval_ms;
    cfg.presence_node_timeout_ms = o->presence_node_timeout_ms;
    cfg.dedup_window_ms = o->dedup_window_ms;
    cfg.conv_max_entries = o->ai_state_entries;
    cfg.conv_scan_max = o->ai_state_scan;
    cfg.store.segment_bytes = o->segment_bytes;
    cfg.store.tail_cache_bytes = o->tail_cache_bytes;
    cfg.store.retention.max_age_ms = o->retention_max_age_ms;
    cfg.store.retention.max_count = o->retention_max_count;
    cfg.store.retention.max_bytes = o->retention_max_bytes;
    return spool_node_init(&d->node, &d->loop, &cfg, err);
}

static int http_start(struct spool_daemon *d, struct spool_err *err)
{
    const struct spool_options *o = d->opts;
    int rv;
    spool_http_router_init(&d->router);
    if ((rv = spool_http_api_init(&d->api, o, d->node, &d->keyring, &d->metrics, err)) != 0 ||
        (rv = spool_http_api_routes(&d->api, &d->router, err)) != 0 ||
        (rv = spool_realtime_mount(&d->realtime, &d->loop, o, d->node, &d->keyring, &d->router, err)) != 0 ||
        (rv = spool_ds_init(&d->ds, &d->loop, o, d->node, &d->api, &d->router, err)) != 0)
        return rv;
    d->api.realtime = d->realtime.rt;
    spool_realtime_set_counters(&d->realtime, spool_http_api_realtime_counters(&d->api));
    struct spool_http_config cfg;
    spool_http_config_defaults(&cfg);
    cfg.max_connections = o->max_connections;
    cfg.max_header_bytes = o->max_header_bytes;
    cfg.max_body_bytes = o->max_request_bytes;
    cfg.request_timeout_ms = o->request_timeout_ms;
    cfg.idle_timeout_ms = o->idle_timeout_ms;
    cfg.drain_timeout_ms = o->drain_timeout_ms;
    cfg.handler = spool_ds_dispatch; /* /v1/stream/... itself, the rest to the router */
    cfg.handler_arg = d->ds;
    if ((rv = spool_cors_init(&d->cors, o->cors_origins, cfg.handler, cfg.handler_arg, err)) != 0)
        return rv;
    if (spool_cors_enabled(&d->cors)) {
        cfg.handler = spool_cors_handle;
        cfg.handler_arg = &d->cors;
    }
    cfg.on_done = spool_http_api_on_done;
    cfg.on_done_arg = &d->api;
    if ((rv = spool_http_server_init(&d->http, &d->loop, &cfg, err)) != 0) return rv;
    d->api.server = d->http;
    if ((rv = spool_http_server_listen(d->http, o->listen, err)) != 0) return rv;
    SPOOL_INFO("http.listening", "address=%s port=%d", o->listen, spool_http_server_port(d->http));
    if (o->anonymous)
        SPOOL_WARN("auth.anonymous",
                   "port=%d msg=\"ANONYMOUS ACCESS IS ON: any client that can reach %s (port %d) may "
                   "publish, read and subscribe on every channel. For development only; never in "
                   "production.\"",
                   spool_http_server_port(d->http), o->listen, spool_http_server_port(d->http));
    return 0;
}

static int keyring_load(struct spool_daemon *d, struct spool_err *err)
{
    const struct spool_options *o = d->opts;
    int rv = spool_keyring_configure(&d->keyring, o->api_keys, o->api_keys_file, o->anonymous, err);
    if (rv != 0) return rv;
    if (!o->anonymous && d->keyring.n == 0) {
        return spool_err_set(err, SPOOL_EINVAL,
                             "no API keys configured: pass --api-keys or --api-keys-file "
                             "(or --anonymous for local development)");
    }
    return 0;
}

int spool_run(const struct spool_options *o)
{
    struct spool_daemon *d = calloc(1, sizeof *d);
    if (d == NULL) return 1;
    d->opts = o;
    signal(SIGPIPE, SIG_IGN);
    if (o->peers[0] != '\0') spool_log_set_node(o->id);
    struct spool_err err;
    spool_err_clear(&err);
    spool_keyring_init(&d->keyring);
    int code = 0;
    if (options_check(o, &err) != 0 || keyring_load(d, &err) != 0) {
        fprintf(stderr, "spoold: %s\n", err.msg);
        spool_keyring_close(&d->keyring);
        free(d);
        return 2;
    }
    if (uv_loop_init(&d->loop) != 0 || spool_metrics_init(&d->metrics) != 0) {
        fprintf(stderr, "spoold: cannot initialise the event loop\n");
        spool_keyring_close(&d->keyring);
        free(d);
        return 1;
    }
    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    SPOOL_INFO("spoold.start", "version=%s id=%llu role=%s data=%s listen=%s cluster_listen=%s peers=%s shards=%llu",
               SPOOL_VERSION, (unsigned long long)o->id, o->role, o->data, o->listen,
               o->cluster_listen, o->peers[0] ? o->peers : "(single-node)",
               (unsigned long long)o->shards);
    if (node_start(d, &err) != 0 || http_start(d, &err) != 0) {
        SPOOL_ERROR("spoold.start_failed", "err=%s msg=\"%s\"", spool_err_name(err.code), err.msg);
        fprintf(stderr, "spoold: %s\n", err.msg);
        daemon_stop(d, 1);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    code = d->exit_code;
    spool_http_api_close(&d->api);
    spool_http_router_close(&d->router);
    spool_cors_close(&d->cors);
    spool_ds_free(d->ds);
    if (uv_loop_close(&d->loop) != 0) {
        SPOOL_ERROR("spoold.loop_busy", "msg=\"handles still open at exit\"");
        code = code ? code : 1;
    }
    spool_metrics_close(&d->metrics);
    spool_keyring_close(&d->keyring);
    free(d);
    return code;
}
