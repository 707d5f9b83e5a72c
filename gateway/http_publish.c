/*
 * POST /v1/channels/{channel}/messages: one message object or an array of them, published as
 * one atomic entry (docs/http-api.md). Each message becomes a record by the rules in
 * gateway/message_json.h (shared with the realtime protocol): data round-trips exactly, and a
 * JWT's client id is the publisher's clientId and may not be overridden. No data comes back as
 * null. The body is read, and the 201 answer written, by gateway/http_publish_body.h: the usual
 * body without jansson, the rest with it, the same answers either way.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/http_api_int.h"
#include "gateway/http_publish_body.h"
#include "gateway/json_body.h"

static void on_published(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                         const bool *duplicate, size_t n)
{
    struct spool_api_op *op = arg;
    if (status != 0) {
        spool_http_api_respond_err(op->req, status, err != NULL ? err->msg : "publish failed");
        free(op);
        return;
    }
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++)
        fresh += !duplicate[i];
    spool_http_api_count_published(op->api, fresh, op->bytes, op->start_ns);
    size_t len = 0;
    char *body = spool_publish_answer(op->channel, seqs, duplicate, n, &len);
    if (body != NULL) {
        static const struct spool_http_header h[] = {{"Content-Type", "application/json"}};
        spool_http_respond_owned(op->req, 201, h, 1, body, len);
        free(op);
        return;
    }
    json_t *serials = json_array(), *dups = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
        if (duplicate[i]) json_array_append_new(dups, json_integer((json_int_t)seqs[i]));
    }
    spool_http_respond_json(op->req, 201, json_pack("{s:s,s:o,s:o}", "channel", op->channel, "serials", serials,
                                         "duplicates", dups));
    free(op);
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
    const struct spool_publish_limits lim = {api->opts->max_publish_batch,
                                             api->opts->max_field_bytes,
                                             api->opts->max_message_bytes};
    struct spool_publish_body body;
    if (!spool_publish_body_parse(&body, req->body, req->body_len, &lim, &p, channel, true)) {
        spool_http_respond_error(req, body.status, body.code, "%s", body.message);
        goto close;
    }
    struct spool_api_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto close;
    }
    op->api = api, op->req = req, op->channel = channel, op->bytes = body.bytes;
    op->start_ns = uv_hrtime();
    int rv = spool_node_publish(api->node, channel, body.records, body.n, on_published, op);
    if (rv != 0) { /* on_published owns op only when the publish was accepted */
        spool_http_api_respond_err(req, rv, "publish refused");
        free(op);
    }
close:
    spool_publish_body_close(&body);
out:
    spool_principal_close(&p);
}
