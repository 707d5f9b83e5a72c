/*
 * REST API plumbing (see gateway/http_api_int.h for how the files divide the work): the JSON
 * answer helpers, authentication from the Authorization header or ?key= / ?token=, admission
 * of /v1 requests (channel name, node, capability), the probes, the route table and setup.
 */
#include "gateway/http_api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/ai_turn.h"
#include "gateway/http_api_int.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"

void spool_http_api_respond_err(struct spool_http_req *req, int code, const char *msg)
{
    int status, http_code;
    spool_json_status_of(code, &status, &http_code);
    spool_http_respond_error(req, status, http_code, "%s", msg);
}

/* ---- auth ---- */

int spool_http_api_authorize(const struct spool_http_api *api, struct spool_http_req *req,
                             const char *channel, unsigned caps, struct spool_principal *out)
{
    struct spool_err err;
    int64_t now = spool_auth_now_ms();
    const char *header = spool_http_req_header(req, "Authorization");
    int code;
    if (header != NULL && header[0] != '\0') {
        code = spool_auth_header(api->keyring, header, now, out, &err);
    } else { /* a decoded query value is never longer than the query */
        size_t size = strlen(req->query) + 1;
        char *cred = malloc(size);
        long n = cred == NULL ? -2 : spool_http_query_get(req->query, "key", cred, size);
        if (n == -1) n = spool_http_query_get(req->query, "token", cred, size);
        if (n == -2) code = cred == NULL ? SPOOL_AUTH_INTERNAL : SPOOL_AUTH_MALFORMED;
        else code = spool_auth_credential(api->keyring, n >= 0 ? cred : NULL, now, out, &err);
        free(cred);
    }
    if (code == SPOOL_AUTH_OK && channel != NULL)
        code = spool_principal_check(out, channel, caps, &err);
    if (code == SPOOL_AUTH_OK) return 0;
    spool_http_api_count_auth_failure(api, code);
    spool_http_respond_error(req, spool_auth_status(code), code, "%s", spool_auth_message(code));
    return -1;
}

/* The {channel} parameter, validated; NULL after answering 400. */
static const char *channel_of(const struct spool_http_api *api, struct spool_http_req *req)
{
    const char *why = NULL;
    const char *name = req->n_params > 0 ? req->params[0] : "";
    if (spool_channel_name_valid(name, strlen(name), api->opts->max_channel_name_bytes, &why))
        return name;
    spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_CHANNEL, "%s", why);
    return NULL;
}

/* Validates the channel, the node's presence and the caller's capability; false after answering. */
bool spool_http_api_admit(const struct spool_http_api *api, struct spool_http_req *req, unsigned caps,
                  const char **channel, struct spool_principal *p)
{
    if ((*channel = channel_of(api, req)) == NULL) return false;
    if (api->node == NULL) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "no node");
        return false;
    }
    return spool_http_api_authorize(api, req, *channel, caps, p) == 0;
}

/* ---- probes ---- */

static void handle_healthz(void *arg, struct spool_http_req *req)
{
    spool_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (api->node != NULL && spool_node_ready(api->node) && !spool_http_req_closing(req))
        spool_http_respond_json(req, 200, json_pack("{s:b}", "ready", 1));
    else
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "not ready");
}

/* ---- setup ---- */

int spool_http_api_init(struct spool_http_api *api, const struct spool_options *opts,
                        struct spool_node *node, const struct spool_keyring *keyring,
                        struct spool_metrics *metrics, struct spool_err *err)
{
    memset(api, 0, sizeof *api);
    api->opts = opts;
    api->node = node;
    api->keyring = keyring;
    api->metrics = metrics;
    return metrics != NULL ? spool_http_api_metrics_init(api, err) : 0;
}

void spool_http_api_close(struct spool_http_api *api) { (void)api; }

int spool_http_api_routes(struct spool_http_api *api, struct spool_http_router *r, struct spool_err *err)
{
    int rv;
    if ((rv = spool_http_router_add(r, "POST", "/v1/channels/{channel}/messages", spool_http_api_publish, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/channels/{channel}/messages", spool_http_api_history, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/channels/{channel}", spool_http_api_channel, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/channels/{channel}/presence", spool_http_api_presence, api, err)) ||
        (rv = spool_http_router_add(r, "POST", "/v1/channels/{channel}/turn", spool_ai_turn_handle, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/healthz", handle_healthz, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/readyz", handle_readyz, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/metrics", spool_http_api_metrics, api, err)) ||
        (rv = spool_http_admin_routes(api, r, err)))
        return rv;
    return 0;
}

