/* CORS filter for /v1/channels; see cors.h. */
#include "gateway/cors.h"

#include <stdlib.h>
#include <string.h>

#define CORS_PREFIX "/v1/channels"
#define CORS_MAX_AGE "600"

int spool_cors_init(struct spool_cors *c, const char *origins, spool_http_handler next,
                    void *next_arg, struct spool_err *err)
{
    memset(c, 0, sizeof *c);
    c->next = next;
    c->next_arg = next_arg;
    if (origins == NULL || origins[0] == '\0')
        return 0;
    if ((c->list = strdup(origins)) == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "cors origins");
    size_t items = 1;
    for (const char *p = origins; *p; p++)
        items += *p == ',';
    if ((c->origins = calloc(items, sizeof *c->origins)) == NULL) {
        spool_cors_close(c);
        return spool_err_set(err, SPOOL_ENOMEM, "cors origins");
    }
    char *save = NULL;
    size_t seen = 0;
    for (char *it = c->list, *tok; seen < items; it = NULL, seen++) {
        tok = strtok_r(it, ",", &save);
        if (tok == NULL)
            break;
        while (*tok == ' ') tok++;
        size_t len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ') tok[--len] = '\0';
        if (len == 0)
            continue;
        if (strcmp(tok, "*") == 0) c->any = true;
        else c->origins[c->n++] = tok;
    }
    if (!c->any && c->n == 0) {
        spool_cors_close(c);
        return spool_err_set(err, SPOOL_EINVAL, "--cors-origins \"%s\" lists no origin", origins);
    }
    return 0;
}

void spool_cors_close(struct spool_cors *c)
{
    free(c->origins);
    free(c->list);
    c->origins = NULL;
    c->list = NULL;
    c->n = 0;
    c->any = false;
}

bool spool_cors_enabled(const struct spool_cors *c)
{
    return c->any || c->n > 0;
}

static bool path_covered(const char *path)
{
    size_t n = strlen(CORS_PREFIX);
    return strncmp(path, CORS_PREFIX, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool origin_allowed(const struct spool_cors *c, const char *origin)
{
    if (c->any)
        return true;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->origins[i], origin) == 0)
            return true;
    return false;
}

void spool_cors_handle(void *arg, struct spool_http_req *req)
{
    struct spool_cors *c = arg;
    const char *origin = spool_http_req_header(req, "Origin");
    if (origin == NULL || !path_covered(req->path) || !origin_allowed(c, origin)) {
        c->next(c->next_arg, req);
        return;
    }
    spool_http_req_add_response_header(req, "Access-Control-Allow-Origin", origin);
    spool_http_req_add_response_header(req, "Vary", "Origin");
    if (strcmp(req->method, "OPTIONS") == 0 &&
        spool_http_req_header(req, "Access-Control-Request-Method") != NULL) {
        static const struct spool_http_header h[] = {
            {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
            {"Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID"},
            {"Access-Control-Max-Age", CORS_MAX_AGE},
        };
        spool_http_respond(req, 204, h, sizeof h / sizeof h[0], NULL, 0);
        return;
    }
    c->next(c->next_arg, req);
}
