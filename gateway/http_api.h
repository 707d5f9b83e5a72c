/*
 * The REST API: publish, history and channel status over JSON, health and readiness probes,
 * and the Prometheus scrape endpoint. The wire format is documented in docs/http-api.md.
 *
 *   POST /v1/channels/{channel}/messages   publish one message or an array (capability publish)
 *   GET  /v1/channels/{channel}/messages   history, paginated with a `next` URL (history)
 *   GET  /v1/channels/{channel}            first/last serial, shard, leader (history)
 *   GET  /v1/channels/{channel}/presence   presence members at a serial (subscribe)
 *   GET  /healthz                          200 while the process runs
 *   GET  /readyz                           200 once the node can route every channel, else 503
 *   GET  /metrics                          Prometheus text
 *
 * Every /v1 request is authenticated (gateway/auth.h) from its Authorization header, or else a
 * `key=` / `token=` query parameter; with --anonymous a request without credentials is allowed.
 *
 * Each request handler owns its request until it answers (gateway/http_server.h): publish and
 * reads keep a small context across the node's callback, which always fires exactly once.
 * Answers are JSON; errors use the common body of gateway/json_body.h.
 *
 * The API also observes every HTTP request (spool_http_api_on_done, plugged into the server's
 * on_done) and registers the HTTP layer's metrics, listed in gateway/http_api_metrics.c.
 */
#ifndef SPOOL_GATEWAY_HTTP_API_H
#define SPOOL_GATEWAY_HTTP_API_H

#include <stdint.h>

#include "cluster/node.h"
#include "common/err.h"
#include "gateway/auth.h"
#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "gateway/metrics.h"
#include "gateway/options.h"
#include "gateway/realtime.h"

struct spool_realtime;

#define SPOOL_HTTP_API_FIGS 12

struct spool_http_api_fig { /* one per-shard collector's argument */
    struct spool_http_api *api;
    int fig;
};

struct spool_http_api {
    const struct spool_options *opts;
    struct spool_node *node;              /* may be NULL in tests: /v1 answers 503 */
    const struct spool_keyring *keyring;
    struct spool_metrics *metrics;        /* may be NULL: no metrics */
    struct spool_http_server *server;     /* for the connection gauge; set before scrapes */
    struct spool_metric_family *requests; /* spool_http_requests_total{method,status} */
    struct spool_histogram *duration;
    struct spool_counter *messages_in, *bytes_in; /* {transport="http"} */
    struct spool_histogram *publish_ack;
    struct spool_metric_family *auth_failures;    /* {reason} */
    const struct spool_realtime *realtime;        /* for spool_connections{transport="ws"}; may be NULL */
    struct spool_realtime_counters rt_counters;   /* registered here, handed to the realtime mount */
    struct spool_http_api_fig figs[SPOOL_HTTP_API_FIGS];
    struct spool_http_api_fig disk[2];
};

/* Registers the metric families (when `metrics` is not NULL). Everything passed must outlive
 * the API. */
int spool_http_api_init(struct spool_http_api *api, const struct spool_options *opts,
                        struct spool_node *node, const struct spool_keyring *keyring,
                        struct spool_metrics *metrics, struct spool_err *err);
void spool_http_api_close(struct spool_http_api *api);
/* Adds the routes listed above. */
int spool_http_api_routes(struct spool_http_api *api, struct spool_http_router *router,
                          struct spool_err *err);
/* The realtime metric children registered by spool_http_api_init (all NULL without metrics), for
 * spool_realtime_set_counters. */
const struct spool_realtime_counters *spool_http_api_realtime_counters(const struct spool_http_api *api);
/* A spool_http_done_cb (arg = the API): access log and request metrics. */
void spool_http_api_on_done(void *arg, const struct spool_http_req *req, int status,
                            uint64_t duration_us);

/* Authenticates `req` and checks `caps` on `channel` (NULL: authentication only). On success
 * returns 0 with *out filled (spool_principal_init'ed by the caller; close it after). On failure
 * it has already answered the request with 401/403 and the auth code, and returns -1: the caller
 * must not touch `req` again. Shared with the other HTTP entry points (SSE). */
int spool_http_api_authorize(const struct spool_http_api *api, struct spool_http_req *req,
                             const char *channel, unsigned caps, struct spool_principal *out);

#endif
