/*
 * spool_run: one spoold process, from parsed options to exit code.
 *
 * Loop 0 (the main thread) holds:
 *
 *   keyring (--api-keys, --api-keys-file, --anonymous)     refuses to start without keys unless
 *                                                          --anonymous
 *   metrics registry (the root; worker loops register in views of it)
 *   node (cluster/node.h): Raft shards + stores + the cluster port; a single node when --peers
 *                          is empty
 *   frontend (gateway/frontend.h): REST API, realtime WebSocket/SSE, Durable Streams, CORS and
 *                          the HTTP server on --listen
 *   SIGTERM / SIGINT watchers
 *
 * and with --workers N > 1, loops 1..N-1 on their own threads (gateway/workers.h), each a
 * gateway-only node and a frontend on the same client port, started once loop 0 listens.
 *
 * Shutdown is one chain, started by the first SIGTERM/SIGINT (or by a failure after the node
 * started): every loop's frontend drains at once (stops accepting, finishes in-flight requests
 * and ends SSE streams, bounded by --drain-timeout; Durable Streams stops; WebSockets close with
 * 1001) and each worker then closes its node and ends its thread -> once loop 0's frontend has
 * drained and every worker has ended, the node closes (hands off leaderships, stops Raft, syncs
 * stores) -> the signal watchers close -> uv_run returns -> the worker threads are joined,
 * everything else is released and the loop closed. Each step starts in the completion callback
 * of the previous one(s).
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
#include "gateway/frontend.h"
#include "gateway/metrics.h"
#include "gateway/options.h"
#include "gateway/workers.h"

struct spool_daemon {
    const struct spool_options *opts;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    struct spool_keyring keyring;
    struct spool_metrics metrics;
    struct spool_node *node;
    struct spool_frontend fe;       /* loop 0's */
    struct spool_loop_set *set;     /* with --workers > 1 */
    struct spool_workers *workers;
    unsigned pending;               /* loop 0's drain and the workers still to finish */
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

/* Loop 0's frontend has drained, or every worker has ended: the node closes after both. */
static void on_loops_done(void *arg)
{
    struct spool_daemon *d = arg;
    if (--d->pending > 0) return;
    if (d->node != NULL) spool_node_close(d->node, on_node_closed, d);
    else on_node_closed(d);
}

static void daemon_stop(struct spool_daemon *d, int exit_code)
{
    if (d->stopping) return;
    d->stopping = true;
    d->exit_code = exit_code;
    d->pending = d->workers != NULL ? 2 : 1;
    if (d->workers != NULL) spool_workers_stop(d->workers, on_loops_done, d);
    spool_frontend_drain(&d->fe, on_loops_done, d);
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
    if (spool_workers_count(o) > 1 && o->id >= (1ULL << 50))
        return spool_err_set(err, SPOOL_EINVAL, "--workers above 1 needs an --id below 2^50 "
                             "(worker loops' node ids are derived from it)");
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
    if (strcmp(o->role, "node") != 0 && strcmp(o->role, "gateway") != 0)
        return spool_err_set(err, SPOOL_EINVAL, "--role must be node or gateway, not '%s'", o->role);
    if (o->shards == 0 || o->shards > UINT32_MAX || o->replicas == 0 || o->replicas > UINT32_MAX)
        return spool_err_set(err, SPOOL_EINVAL, "--shards and --replicas must be >= 1");
    struct spool_node_config cfg;
    spool_options_node_config(o, &cfg);
    return spool_node_init(&d->node, &d->loop, &cfg, err);
}

/* "host:port" of `address` with another port (the host as given, "" and brackets included). */
static void with_port(char *out, size_t size, const char *address, int port)
{
    const char *colon = strrchr(address, ':');
    int host_len = colon != NULL ? (int)(colon - address) : (int)strlen(address);
    snprintf(out, size, "%.*s:%d", host_len, address, port);
}

/* Loop 0's node as the workers dial it: its bound cluster address, on loopback when it listens
 * on every address. */
static void home_address(const struct spool_daemon *d, char *out, size_t size)
{
    const char *address = spool_node_cluster_address(d->node);
    const char *colon = strrchr(address, ':');
    int port = colon != NULL ? atoi(colon + 1) : 0;
    int host_len = colon != NULL ? (int)(colon - address) : 0;
    const char *host = address;
    if ((host_len == 7 && strncmp(address, "0.0.0.0", 7) == 0) || host_len == 0) host = "127.0.0.1", host_len = 9;
    else if (host_len == 4 && strncmp(address, "[::]", 4) == 0) host = "[::1]", host_len = 5;
    else if (host_len == 2 && strncmp(address, "::", 2) == 0) host = "[::1]", host_len = 5;
    snprintf(out, size, "%.*s:%d", host_len, host, port);
}

/* The workers' storage peers: the configured ones, or in single-node mode loop 0's node. */
static void storage_peers(const struct spool_daemon *d, const char *home, char *out, size_t size)
{
    const struct spool_options *o = d->opts;
    if (o->peers[0] != '\0') snprintf(out, size, "%s", o->peers);
    else snprintf(out, size, "%llu@%s", (unsigned long long)o->id, home);
}

static int loops_start(struct spool_daemon *d, struct spool_err *err)
{
    const struct spool_options *o = d->opts;
    unsigned n = spool_workers_count(o);
    if (n > 1) {
        if ((d->set = malloc(sizeof *d->set)) == NULL) return spool_err_set(err, SPOOL_ENOMEM, "loops");
        spool_loop_set_init(d->set, n);
    }
    int rv = spool_frontend_start(&d->fe, &d->loop, o, 0, d->node, &d->keyring, &d->metrics, d->set,
                                  o->listen, false, err);
    if (rv != 0) return rv;
    int port = spool_frontend_port(&d->fe);
    if (o->anonymous)
        SPOOL_WARN("auth.anonymous",
                   "port=%d msg=\"ANONYMOUS ACCESS IS ON: any client that can reach %s (port %d) may "
                   "publish, read and subscribe on every channel. For development only; never in "
                   "production.\"",
                   port, o->listen, port);
    if (n <= 1) return 0;
    char listen[320], peers[4096], home[256];
    with_port(listen, sizeof listen, o->listen, port);
    home_address(d, home, sizeof home);
    storage_peers(d, home, peers, sizeof peers);
    if ((rv = spool_workers_start(&d->workers, &d->loop, o, listen, peers, home, &d->metrics, d->set,
                                  err)) != 0)
        return rv;
    SPOOL_INFO("spoold.loops", "workers=%u port=%d", n, port);
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
    SPOOL_INFO("spoold.start", "version=%s id=%llu role=%s data=%s listen=%s cluster_listen=%s peers=%s shards=%llu workers=%u",
               SPOOL_VERSION, (unsigned long long)o->id, o->role, o->data, o->listen,
               o->cluster_listen, o->peers[0] ? o->peers : "(single-node)",
               (unsigned long long)o->shards, spool_workers_count(o));
    if (node_start(d, &err) != 0 || loops_start(d, &err) != 0) {
        SPOOL_ERROR("spoold.start_failed", "err=%s msg=\"%s\"", spool_err_name(err.code), err.msg);
        fprintf(stderr, "spoold: %s\n", err.msg);
        daemon_stop(d, 1);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    code = d->exit_code;
    spool_workers_free(d->workers);
    spool_frontend_free(&d->fe);
    if (d->set != NULL) spool_loop_set_close(d->set);
    free(d->set);
    if (uv_loop_close(&d->loop) != 0) {
        SPOOL_ERROR("spoold.loop_busy", "msg=\"handles still open at exit\"");
        code = code ? code : 1;
    }
    spool_metrics_close(&d->metrics);
    spool_keyring_close(&d->keyring);
    free(d);
    return code;
}
