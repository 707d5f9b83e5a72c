/*
 * Durable Streams (docs/durable-streams.md) at /v1/stream/{name...} on the client port.
 *
 * spool_ds_dispatch() sits in front of the router: requests under /v1/stream go to the Durable
 * Streams handlers (any method, names with '/'), everything else to the router. The handlers
 * are split by job: durable_streams.c (routing, headers, state loads, commands, TTL tracking),
 * durable_streams_write.c (PUT, POST, DELETE, forks), durable_streams_read.c (GET, HEAD,
 * long-poll, the reader across fork chains), durable_streams_sse.c (live=sse).
 */
#ifndef SPOOL_GATEWAY_DURABLE_STREAMS_H
#define SPOOL_GATEWAY_DURABLE_STREAMS_H

#include <uv.h>

#include "cluster/node.h"
#include "common/err.h"
#include "gateway/auth.h"
#include "gateway/http_api.h"
#include "gateway/http_router.h"
#include "gateway/options.h"

struct spool_ds;

int spool_ds_init(struct spool_ds **out, uv_loop_t *loop, const struct spool_options *opts,
                  struct spool_node *node, struct spool_http_api *api,
                  struct spool_http_router *router, struct spool_err *err);
/* A spool_http_handler (arg = the struct spool_ds). */
void spool_ds_dispatch(void *arg, struct spool_http_req *req);
/* Stops the expiry sweeper (its timer closes on the loop); call once the HTTP server drained. */
void spool_ds_stop(struct spool_ds *ds);
/* Frees everything; after the loop stopped. */
void spool_ds_free(struct spool_ds *ds);

#endif
