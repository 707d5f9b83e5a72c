/*
 * CORS for the REST and SSE endpoints (/v1/channels and everything under it), so browser pages
 * on another origin can use fetch and EventSource. Configured by --cors-origins: a comma list of
 * exact origins ("https://app.example.com") or "*"; empty = no CORS headers at all.
 *
 * The filter sits in front of the rest of the HTTP handling. For a request under /v1/channels
 * whose Origin is allowed:
 *   - every response carries Access-Control-Allow-Origin: <that origin> and Vary: Origin
 *     (the origin is echoed even for "*", so caches key on it and credentials could be allowed);
 *   - a preflight (OPTIONS with Access-Control-Request-Method) is answered here with 204,
 *     Access-Control-Allow-Methods: GET, POST, OPTIONS, Access-Control-Allow-Headers:
 *     Authorization, Content-Type, Last-Event-ID and Access-Control-Max-Age.
 * Anything else (other paths, no or another Origin) passes through untouched; /v1/stream keeps
 * the Durable Streams handler's own CORS.
 */
#ifndef SPOOL_GATEWAY_CORS_H
#define SPOOL_GATEWAY_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "gateway/http_server.h"

struct spool_cors {
    char *list;       /* the parsed copy of --cors-origins (origins point into it) */
    const char **origins;
    size_t n;
    bool any;         /* "*" was listed */
    spool_http_handler next;
    void *next_arg;
};

/* Parses `origins` (may be NULL or ""). Returns 0, SPOOL_EINVAL for an empty item, or ENOMEM. */
int spool_cors_init(struct spool_cors *c, const char *origins, spool_http_handler next,
                    void *next_arg, struct spool_err *err);
void spool_cors_close(struct spool_cors *c);
/* True when some origin is configured (otherwise install `next` directly). */
bool spool_cors_enabled(const struct spool_cors *c);
/* A spool_http_handler: `arg` is the struct spool_cors. */
void spool_cors_handle(void *arg, struct spool_http_req *req);

#endif
