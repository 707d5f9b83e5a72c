/*
 * POST /v1/channels/{channel}/messages: one message object or an array of them, published as
 * one atomic entry (docs/http-api.md).
 *
 * Message data round-trips exactly: a JSON string is stored as its UTF-8 bytes with content type
 * text/plain and comes back as the same string; any other JSON value is stored as its compact
 * serialisation with application/json and comes back as the same value; no data is stored with
 * no content type and comes back as null. A JWT's client id is the publisher's clientId and may
 * not be overridden.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/http_api_int.h"
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

/* One message object into `rec`; `owned` collects buffers to free after the publish call.
 * Returns NULL or a message for a 400 (with *status set). */
static const char *message_from_json(const struct spool_http_api *api, json_t *m,
                                     const struct spool_principal *p, Spool__Record *rec,
                                     char **owned_data, char **owned_extras, int *status, int *code)
{
    *status = 400, *code = SPOOL_HTTP_EBAD_JSON;
    if (!json_is_object(m)) return "each message must be a JSON object";
    spool__record__init(rec);
    rec->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    rec->version = 1;
    json_t *v;
    if ((v = json_object_get(m, "id")) != NULL) {
        if (!json_is_string(v)) return "id must be a string";
        if (json_string_length(v) > api->opts->max_field_bytes) return "id is longer than --max-field-bytes";
        rec->id = (char *)json_string_value(v);
    }
    if ((v = json_object_get(m, "name")) != NULL) {
        if (!json_is_string(v)) return "name must be a string";
        if (json_string_length(v) > api->opts->max_field_bytes) return "name is longer than --max-field-bytes";
        rec->name = (char *)json_string_value(v);
    }
    if ((v = json_object_get(m, "clientId")) != NULL) {
        if (!json_is_string(v)) return "clientId must be a string";
        if (json_string_length(v) > SPOOL_CLIENT_ID_MAX) return "clientId is too long";
        if (p->client_id[0] != '\0' && strcmp(p->client_id, json_string_value(v)) != 0) {
            *status = 403, *code = SPOOL_AUTH_FORBIDDEN;
            return "clientId does not match the credentials' client id";
        }
        rec->client_id = (char *)json_string_value(v);
    } else if (p->client_id[0] != '\0') {
        rec->client_id = (char *)p->client_id;
    }
    if ((v = json_object_get(m, "data")) != NULL) {
        if (json_is_string(v)) {
            rec->data.data = (uint8_t *)json_string_value(v);
            rec->data.len = json_string_length(v);
            rec->content_type = "text/plain";
        } else {
            size_t len = 0;
            if ((*owned_data = spool_json_dump(v, &len)) == NULL) return "out of memory";
            rec->data.data = (uint8_t *)*owned_data;
            rec->data.len = len;
            rec->content_type = "application/json";
        }
    }
    if ((v = json_object_get(m, "extras")) != NULL) {
        if (!json_is_object(v)) return "extras must be a JSON object";
        size_t len = 0;
        if ((*owned_extras = spool_json_dump(v, &len)) == NULL) return "out of memory";
        rec->extras.data = (uint8_t *)*owned_extras;
        rec->extras.len = len;
    }
    if (rec->data.len + rec->extras.len > api->opts->max_message_bytes) {
        *status = 413, *code = SPOOL_HTTP_ETOO_LARGE + 1;
        return "message data and extras exceed --max-message-bytes";
    }
    return NULL;
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
        const char *bad = message_from_json(api, m, p, &recs[i], &owned[2 * i], &owned[2 * i + 1],
                                            &status, &code);
        if (bad != NULL) {
            if (n > 1) spool_http_respond_error(req, status, code, "message %zu: %s", i, bad);
            else spool_http_respond_error(req, status, code, "%s", bad);
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

