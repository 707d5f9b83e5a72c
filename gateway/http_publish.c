/*
 * POST /v1/channels/{channel}/messages: one message object or an array of them, published as
 * one atomic entry (docs/http-api.md). Each message becomes a record by the rules in
 * gateway/message_json.h (shared with the realtime protocol): data round-trips exactly, and a
 * JWT's client id is the publisher's clientId and may not be overridden. No data comes back as
 * null.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ai_message.h"
#include "gateway/http_api_int.h"
#include "gateway/json_body.h"
#include "gateway/message_json.h"

static void on_published(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                         const bool *duplicate, size_t n)
{
    struct spool_api_op *op = arg;
    if (status != 0) {
        spool_http_api_respond_err(op->req, status, err != NULL ? err->msg : "publish failed");
        free(op);
        return;
    }
    json_t *serials = json_array(), *dups = json_array();
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
        if (duplicate[i]) json_array_append_new(dups, json_integer((json_int_t)seqs[i]));
        else fresh++;
    }
    spool_http_api_count_published(op->api, fresh, op->bytes, op->start_ns);
    spool_http_respond_json(op->req, 201, json_pack("{s:s,s:o,s:o}", "channel", op->channel, "serials", serials,
                                         "duplicates", dups));
    free(op);
}

/* One message object into `rec` (gateway/message_json.h); `owned` gets the buffers to free after
 * the publish call. Returns NULL or a message for the error answer (with *status and *code). */
static const char *message_from_json(const struct spool_http_api *api, json_t *m,
                                     const struct spool_principal *p, Spool__Record *rec,
                                     char *owned[2], int *status, int *code)
{
    const struct spool_message_limits lim = {api->opts->max_field_bytes, api->opts->max_message_bytes};
    const char *why = NULL;
    switch (spool_message_from_json(m, p->client_id, &lim, rec, owned, &why)) {
    case SPOOL_MESSAGE_OK: return NULL;
    case SPOOL_MESSAGE_FORBIDDEN: *status = 403, *code = SPOOL_AUTH_FORBIDDEN; break;
    case SPOOL_MESSAGE_TOO_LARGE: *status = 413, *code = SPOOL_HTTP_ETOO_LARGE + 1; break;
    case SPOOL_MESSAGE_NOMEM: *status = 500, *code = SPOOL_HTTP_EINTERNAL; break;
    default: *status = 400, *code = SPOOL_HTTP_EBAD_JSON; break;
    }
    return why;
}

static void publish_parsed(struct spool_http_api *api, struct spool_http_req *req,
                           const char *channel, json_t *body, const struct spool_principal *p)
{
    size_t n = json_is_array(body) ? json_array_size(body) : 1;
    if (n == 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "no messages to publish");
        return;
    }
    if (n > api->opts->max_publish_batch) {
        spool_http_respond_error(req, 413, SPOOL_HTTP_ETOO_LARGE + 2,
                                 "%zu messages exceed --max-publish-batch (%" PRIu64 ")", n,
                                 api->opts->max_publish_batch);
        return;
    }
    Spool__Record *recs = calloc(n, sizeof *recs);
    const Spool__Record **ptrs = calloc(n, sizeof *ptrs);
    char **owned = calloc(2 * n, sizeof *owned);
    struct spool_api_op *op = calloc(1, sizeof *op);
    if (recs == NULL || ptrs == NULL || owned == NULL || op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_is_array(body) ? json_array_get(body, i) : body;
        int status, code;
        const char *bad = message_from_json(api, m, p, &recs[i], &owned[2 * i], &status, &code);
        if (bad != NULL) {
            if (n > 1) spool_http_respond_error(req, status, code, "message %zu: %s", i, bad);
            else spool_http_respond_error(req, status, code, "%s", bad);
            goto out;
        }
        if (bad == NULL && (bad = spool_ai_message_fields(m, &recs[i], p, channel)) != NULL) {
            if (n > 1) spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "message %zu: %s", i, bad);
            else spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "%s", bad);
            goto out;
        }
        ptrs[i] = &recs[i];
        op->bytes += recs[i].data.len;
    }
    op->api = api, op->req = req, op->channel = channel;
    op->start_ns = uv_hrtime();
    int rv = spool_node_publish(api->node, channel, ptrs, n, on_published, op);
    if (rv != 0) {
        spool_http_api_respond_err(req, rv, "publish refused");
        goto out;
    }
    op = NULL; /* on_published owns it now */
out:
    free(op);
    for (size_t i = 0; owned != NULL && i < 2 * n; i++) free(owned[i]);
    free(owned);
    free(ptrs);
    free(recs);
}

void spool_http_api_publish(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    if (!spool_http_api_admit(api, req, SPOOL_CAP_PUBLISH, &channel, &p)) goto out;
    const char *ct = spool_http_req_header(req, "Content-Type");
    if (ct != NULL && strncasecmp(ct, "application/json", 16) != 0) {
        spool_http_respond_error(req, 415, SPOOL_HTTP_EUNSUPPORTED,
                                 "Content-Type must be application/json");
        goto out;
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "body is not valid JSON: %s",
                                 jerr.text);
        goto out;
    }
    publish_parsed(api, req, channel, body, &p);
    json_decref(body);
out:
    spool_principal_close(&p);
}

