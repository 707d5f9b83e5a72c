/*
 * Internals shared by the REST API's files (public interface: gateway/http_api.h):
 *   http_api.c          helpers, authentication/admission, probes, routes, setup
 *   http_publish.c      POST /v1/channels/{channel}/messages
 *   http_history.c      GET  /v1/channels/{channel}/messages and GET /v1/channels/{channel}
 *   http_presence.c     GET  /v1/channels/{channel}/presence
 *   http_api_metrics.c  GET /metrics, request metrics and the per-shard collectors
 *   http_admin.c        /v1/admin/... (docs/admin.md)
 *
 * Each /v1 handler runs the same steps: take the channel from the path and validate it
 * (gateway/channel_name.h), authenticate and check the capability (spool_http_api_admit), parse
 * and check the input against the configured limits, then ask the node. Requests that wait for
 * the node carry a heap `struct spool_api_op` holding the request; the node's callback is the one
 * completion path: it answers the request and frees the context.
 */
#ifndef SPOOL_GATEWAY_HTTP_API_INT_H
#define SPOOL_GATEWAY_HTTP_API_INT_H

#include <jansson.h>

#include "gateway/http_api.h"

struct spool_api_op {
    struct spool_http_api *api;
    struct spool_http_req *req;
    const char *channel; /* req->params[0], valid until the request is answered */
    /* publish */
    uint64_t start_ns;
    size_t bytes;
    /* history */
    struct spool_read_req read;
    uint64_t from, until, start, end;
    size_t limit;
    bool backward, has_start, has_end;
    bool rollup; /* history: roll token streams up (gateway/ai_rollup.h) */
};

/* Answers a SPOOL_E* failure with its mapped status and code. */
void spool_http_api_respond_err(struct spool_http_req *req, int code, const char *msg);
/* Validates the {channel} parameter, the node's presence and the caller's capability `caps`;
 * false after answering (the caller must not touch `req`). `p` must be initialised. */
bool spool_http_api_admit(const struct spool_http_api *api, struct spool_http_req *req, unsigned caps,
                          const char **channel, struct spool_principal *p);

/* Route handlers (arg = the API). */
void spool_http_api_publish(void *arg, struct spool_http_req *req);
void spool_http_api_history(void *arg, struct spool_http_req *req);
void spool_http_api_channel(void *arg, struct spool_http_req *req);
void spool_http_api_presence(void *arg, struct spool_http_req *req);
void spool_http_api_metrics(void *arg, struct spool_http_req *req);
/* Registers the /v1/admin routes (http_admin.c). */
int spool_http_admin_routes(struct spool_http_api *api, struct spool_http_router *r,
                            struct spool_err *err);

/* Registers the HTTP and per-shard metric families in api->metrics. */
int spool_http_api_metrics_init(struct spool_http_api *api, struct spool_err *err);
/* A REST publish of `messages` carrying `bytes` of data was acknowledged. */
void spool_http_api_count_published(const struct spool_http_api *api, size_t messages, size_t bytes,
                                    uint64_t start_ns);
/* A request was refused with auth code `code`. */
void spool_http_api_count_auth_failure(const struct spool_http_api *api, int code);

#endif
