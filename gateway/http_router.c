/*
 * Method + path-pattern routing (see gateway/http_router.h). Patterns are checked when added;
 * matching splits the request's raw path once and compares segment by segment, so a request
 * costs O(routes x segments) comparisons with no allocation except the captured parameters.
 */
#include "gateway/http_router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http_path.h"
#include "gateway/json_body.h"

void spool_http_router_init(struct spool_http_router *r) { memset(r, 0, sizeof *r); }
void spool_http_router_close(struct spool_http_router *r) { r->n = 0; }

static bool segment_is_capture(struct spool_slice seg)
{
    return seg.len >= 2 && seg.p[0] == '{' && seg.p[seg.len - 1] == '}';
}

int spool_http_router_add(struct spool_http_router *r, const char *method, const char *pattern,
                          spool_http_handler handler, void *arg, struct spool_err *err)
{
    struct spool_slice segs[SPOOL_HTTP_MAX_SEGMENTS];
    long n = spool_http_path_split(pattern, strlen(pattern), segs, SPOOL_HTTP_MAX_SEGMENTS);
    if (n < 0 || handler == NULL) return spool_err_set(err, SPOOL_EINVAL, "bad route '%s'", pattern);
    size_t captures = 0;
    for (long i = 0; i < n; i++) captures += segment_is_capture(segs[i]);
    if (captures > SPOOL_HTTP_MAX_PARAMS)
        return spool_err_set(err, SPOOL_EINVAL, "route '%s': more than %d captures", pattern,
                             SPOOL_HTTP_MAX_PARAMS);
    if (r->n == SPOOL_HTTP_MAX_ROUTES)
        return spool_err_set(err, SPOOL_ELIMIT, "route table full adding '%s'", pattern);
    r->routes[r->n++] = (struct spool_http_route){method, pattern, handler, arg};
    return 0;
}

/* True when the raw request segments fit the pattern's. */
static bool pattern_matches(const char *pattern, const struct spool_slice *segs, long n)
{
    struct spool_slice ps[SPOOL_HTTP_MAX_SEGMENTS];
    long pn = spool_http_path_split(pattern, strlen(pattern), ps, SPOOL_HTTP_MAX_SEGMENTS);
    if (pn != n) return false;
    for (long i = 0; i < n; i++) {
        if (segment_is_capture(ps[i])) {
            if (segs[i].len == 0) return false;
            continue;
        }
        if (ps[i].len != segs[i].len || memcmp(ps[i].p, segs[i].p, segs[i].len) != 0) return false;
    }
    return true;
}

/* Captures the "{...}" segments into req->params; returns false when one does not decode. */
static bool capture_params(struct spool_http_req *req, const char *pattern,
                           const struct spool_slice *segs, long n)
{
    struct spool_slice ps[SPOOL_HTTP_MAX_SEGMENTS];
    spool_http_path_split(pattern, strlen(pattern), ps, SPOOL_HTTP_MAX_SEGMENTS);
    for (long i = 0; i < n; i++) {
        if (!segment_is_capture(ps[i])) continue;
        char *buf = malloc(segs[i].len + 1); /* decoding never grows */
        long len = buf != NULL ? spool_http_pct_decode(segs[i].p, segs[i].len, false, buf, segs[i].len + 1) : -1;
        bool ok = len >= 0 && spool_http_req_add_param(req, buf, (size_t)len) == 0;
        free(buf);
        if (!ok) return false;
    }
    return true;
}

/* The route for the request: the first whose pattern and method match, a GET route serving HEAD
 * only when no route names HEAD itself. NULL when none; `allow` then lists the methods the path
 * has (empty when the path matches no pattern). */
static const struct spool_http_route *route_find(const struct spool_http_router *r, const char *method,
                                                 const struct spool_slice *segs, long n, char *allow,
                                                 size_t size)
{
    const struct spool_http_route *get_route = NULL;
    size_t len = 0;
    allow[0] = '\0';
    for (size_t i = 0; n >= 0 && i < r->n; i++) {
        const struct spool_http_route *rt = &r->routes[i];
        if (!pattern_matches(rt->pattern, segs, n)) continue;
        if (rt->method == NULL || strcmp(rt->method, method) == 0) return rt;
        if (get_route == NULL && strcmp(rt->method, "GET") == 0) get_route = rt;
        bool listed = false; /* a comma-separated list of whole names */
        for (const char *p = allow; !listed && (p = strstr(p, rt->method)) != NULL; p++)
            listed = (p == allow || p[-1] == ' ') && (p[strlen(rt->method)] == ',' || p[strlen(rt->method)] == '\0');
        if (!listed && len + strlen(rt->method) + 3 < size)
            len += (size_t)snprintf(allow + len, size - len, "%s%s", len ? ", " : "", rt->method);
    }
    return strcmp(method, "HEAD") == 0 ? get_route : NULL;
}

void spool_http_router_dispatch(void *arg, struct spool_http_req *req)
{
    struct spool_http_router *r = arg;
    struct spool_slice segs[SPOOL_HTTP_MAX_SEGMENTS];
    long n = spool_http_path_split(req->path, strlen(req->path), segs, SPOOL_HTTP_MAX_SEGMENTS);
    char allow[128];
    const struct spool_http_route *rt = route_find(r, req->method, segs, n, allow, sizeof allow);
    if (rt != NULL) {
        if (!capture_params(req, rt->pattern, segs, n)) {
            spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PATH,
                                     "path segment is not validly percent-encoded");
            return;
        }
        rt->handler(rt->arg, req);
        return;
    }
    if (allow[0] != '\0') {
        size_t len = 0;
        char msg[160];
        snprintf(msg, sizeof msg, "method %s not allowed here", req->method);
        char *body = spool_json_error(405, SPOOL_HTTP_EMETHOD, msg, &len);
        struct spool_http_header h[] = {{"Content-Type", "application/json"}, {"Allow", allow}};
        spool_http_respond_owned(req, 405, h, 2, body, body != NULL ? len : 0);
        return;
    }
    spool_http_respond_error(req, 404, SPOOL_HTTP_ENOT_FOUND, "no route for %s %s", req->method,
                             req->decoded_path);
}
