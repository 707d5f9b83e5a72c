/*
 * Routes requests to handlers by method and path pattern.
 *
 * A pattern is an absolute path whose segments are literals or "{name}" captures matching exactly
 * one segment, e.g. "/v1/channels/{channel}/messages". Captured segments are percent-decoded
 * (strictly, see gateway/http_path.h) and appended to req->params in order. Matching is on the
 * raw path split at '/', so an encoded slash stays inside its segment. Routes are tried in the
 * order they were added; the first whose pattern and method match wins. A GET route also serves
 * HEAD when no route for the path names HEAD itself. When some pattern matches but no route has the method, the answer is 405 with an Allow
 * header; when nothing matches, 404; a capture that does not decode, 400. All as JSON errors.
 *
 * The router is the server's handler: pass spool_http_router_dispatch and the router as
 * cfg.handler / cfg.handler_arg. Every part of the gateway (REST API, WebSocket, SSE) adds its
 * routes at startup; patterns and methods are not copied and must outlive the router.
 */
#ifndef SPOOL_GATEWAY_HTTP_ROUTER_H
#define SPOOL_GATEWAY_HTTP_ROUTER_H

#include <stddef.h>

#include "common/err.h"
#include "gateway/http_server.h"

#define SPOOL_HTTP_MAX_ROUTES 64
#define SPOOL_HTTP_MAX_SEGMENTS 16

struct spool_http_route {
    const char *method; /* "GET", "POST", ...; NULL = any method */
    const char *pattern;
    spool_http_handler handler;
    void *arg;
};

struct spool_http_router {
    struct spool_http_route routes[SPOOL_HTTP_MAX_ROUTES];
    size_t n;
};

void spool_http_router_init(struct spool_http_router *r);
void spool_http_router_close(struct spool_http_router *r);
/* Returns 0, SPOOL_ELIMIT when the table is full, SPOOL_EINVAL for a bad pattern. */
int spool_http_router_add(struct spool_http_router *r, const char *method, const char *pattern,
                          spool_http_handler handler, void *arg, struct spool_err *err);
/* A spool_http_handler: `arg` is the router. */
void spool_http_router_dispatch(void *arg, struct spool_http_req *req);

#endif
