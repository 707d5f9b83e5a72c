/*
 * REST endpoints (see gateway/http_api.h and docs/http-api.md).
 *
 * Each /v1 handler runs the same steps: take the channel from the path and validate it
 * (gateway/channel_name.h), authenticate and check the capability, parse and check the input
 * against the configured limits, then ask the node. Requests that wait for the node carry a
 * heap context (struct op) holding the request; the node's callback is the one completion path:
 * it answers the request and frees the context.
 *
 * Message data round-trips exactly: a JSON string is stored as its UTF-8 bytes with content type
 * text/plain and comes back as the same string; any other JSON value is stored as its compact
 * serialisation with application/json and comes back as the same value; no data is stored with
 * no content type and comes back as null. Items are encoded by spool_rt_record_json, so history
 * and live messages look the same; data that is neither JSON nor text (published as binary over
 * another protocol) comes back base64-encoded with "encoding".
 *
 * History pages: forwards reads records with serial in [from, until], backwards in [from, until]
 * from the top down; `start`/`end` filter by timestamp within what is read. A page that may be
 * followed by more records carries a `next` URL with the same parameters moved past the page.
 */
#include "gateway/http_api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/realtime.h"

static const struct spool_http_header json_headers[] = {{"Content-Type", "application/json"}};

static void respond_json(struct spool_http_req *req, int status, json_t *v)
{
    size_t len = 0;
    char *body = v != NULL ? spool_json_dump(v, &len) : NULL;
    json_decref(v);
    if (body == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    spool_http_respond_owned(req, status, json_headers, 1, body, len);
}

static void respond_spool_err(struct spool_http_req *req, int code, const char *msg)
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
static bool admit(const struct spool_http_api *api, struct spool_http_req *req, unsigned caps,
                  const char **channel, struct spool_principal *p)
{
    if ((*channel = channel_of(api, req)) == NULL) return false;
    if (api->node == NULL) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "no node");
        return false;
    }
    return spool_http_api_authorize(api, req, *channel, caps, p) == 0;
}

/* ---- publish ---- */

struct op {
    struct spool_http_api *api;
    struct spool_http_req *req;
    const char *channel; /* req->params[0], valid until the request is answered */
    /* history */
    struct spool_read_req read;
    uint64_t from, until, start, end;
    size_t limit;
    bool backward, has_start, has_end;
};

static void on_published(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                         const bool *duplicate, size_t n)
{
    struct op *op = arg;
    if (status != 0) {
        respond_spool_err(op->req, status, err != NULL ? err->msg : "publish failed");
        free(op);
        return;
    }
    json_t *serials = json_array(), *dups = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
        if (duplicate[i]) json_array_append_new(dups, json_integer((json_int_t)seqs[i]));
    }
    respond_json(op->req, 201, json_pack("{s:s,s:o,s:o}", "channel", op->channel, "serials", serials,
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
    struct op *op = calloc(1, sizeof *op);
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
    }
    op->api = api, op->req = req, op->channel = channel;
    int rv = spool_node_publish(api->node, channel, ptrs, n, on_published, op);
    if (rv != 0) {
        respond_spool_err(req, rv, "publish refused");
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

static void handle_publish(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    if (!admit(api, req, SPOOL_CAP_PUBLISH, &channel, &p)) goto out;
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

/* ---- history ---- */

/* A history item: the same record encoding as the realtime protocol (one encoder for every
 * protocol, gateway/realtime.h) without its "type", and with "version" always present. */
static json_t *record_json(const Spool__Record *r)
{
    json_t *item = spool_rt_record_json(r);
    if (item == NULL) return NULL;
    json_object_del(item, "type");
    if (json_object_get(item, "version") == NULL)
        json_object_set_new(item, "version", json_integer((json_int_t)r->version));
    return item;
}

/* The URL of the page after this one, or NULL when there is none. */
static json_t *next_url(const struct op *op, uint64_t from, uint64_t until)
{
    char enc[3 * 1024 + 1];
    size_t o = 0;
    for (const char *c = op->channel; *c != '\0' && o + 4 < sizeof enc; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-_.~", ch) != NULL)
            enc[o++] = (char)ch;
        else o += (size_t)snprintf(enc + o, sizeof enc - o, "%%%02X", ch);
    }
    enc[o] = '\0';
    char url[4096];
    int n = snprintf(url, sizeof url, "/v1/channels/%s/messages?direction=%s&limit=%zu&from=%" PRIu64,
                     enc, op->backward ? "backwards" : "forwards", op->limit, from);
    if (until != UINT64_MAX) n += snprintf(url + n, sizeof url - (size_t)n, "&until=%" PRIu64, until);
    if (op->has_start) n += snprintf(url + n, sizeof url - (size_t)n, "&start=%" PRIu64, op->start);
    if (op->has_end) snprintf(url + n, sizeof url - (size_t)n, "&end=%" PRIu64, op->end);
    return json_string(url);
}

static void on_history(void *arg, int status, const struct spool_err *err,
                       const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                       uint64_t last_seq)
{
    struct op *op = arg;
    if (status != 0) {
        respond_spool_err(op->req, status, err != NULL ? err->msg : "read failed");
        free(op);
        return;
    }
    json_t *items = json_array();
    bool stop = false; /* the timestamp or serial window ended inside this page */
    uint64_t last_read = 0;
    for (size_t i = 0; i < n && !stop; i++) {
        const Spool__Record *r = recs[i];
        last_read = r->seq;
        if (!op->backward && (r->seq > op->until || (op->has_end && (uint64_t)r->timestamp_ms > op->end))) {
            stop = true;
            break;
        }
        if (op->backward && (r->seq < op->from || (op->has_start && (uint64_t)r->timestamp_ms < op->start))) {
            stop = true;
            break;
        }
        if (op->has_start && (uint64_t)r->timestamp_ms < op->start) continue;
        if (op->has_end && (uint64_t)r->timestamp_ms > op->end) continue;
        json_t *item = record_json(r);
        if (item == NULL) {
            json_decref(items);
            spool_http_respond_error(op->req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
            free(op);
            return;
        }
        json_array_append_new(items, item);
    }
    json_t *next = json_null();
    if (!stop && n == op->limit && n > 0) {
        uint64_t until = op->until;
        if (!op->backward && last_read < last_seq && last_read < until) {
            json_decref(next);
            next = next_url(op, last_read + 1, until);
        } else if (op->backward && last_read > first_seq && last_read > op->from) {
            json_decref(next);
            next = next_url(op, op->from, last_read - 1);
        }
    }
    respond_json(op->req, 200, json_pack("{s:o,s:o}", "items", items, "next", next));
    free(op);
}

/* Parses an optional unsigned query parameter; false after answering 400. */
static bool query_uint(struct spool_http_req *req, const char *name, uint64_t *out, bool *present)
{
    char buf[32];
    long n = spool_http_query_get(req->query, name, buf, sizeof buf);
    if (present != NULL) *present = n >= 0;
    if (n == -1) return true;
    uint64_t v = 0;
    bool ok = n > 0;
    for (long i = 0; ok && i < n; i++) {
        if (buf[i] < '0' || buf[i] > '9' || v > (UINT64_MAX - 9) / 10) ok = false;
        else v = v * 10 + (uint64_t)(buf[i] - '0');
    }
    if (!ok) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "query parameter '%s' must be a non-negative integer", name);
        return false;
    }
    *out = v;
    return true;
}

static void handle_history(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    struct op *op = NULL;
    if (!admit(api, req, SPOOL_CAP_HISTORY, &channel, &p)) goto out;
    op = calloc(1, sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->api = api, op->req = req, op->channel = channel;
    op->from = 1, op->until = UINT64_MAX;
    uint64_t limit = api->opts->history_page_default;
    if (limit > api->opts->history_page_max) limit = api->opts->history_page_max;
    bool has_limit;
    if (!query_uint(req, "from", &op->from, NULL) || !query_uint(req, "until", &op->until, NULL) ||
        !query_uint(req, "start", &op->start, &op->has_start) ||
        !query_uint(req, "end", &op->end, &op->has_end) || !query_uint(req, "limit", &limit, &has_limit))
        goto out;
    if (limit == 0 || limit > api->opts->history_page_max) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "limit must be between 1 and %" PRIu64, api->opts->history_page_max);
        goto out;
    }
    char dir[16];
    long dn = spool_http_query_get(req->query, "direction", dir, sizeof dir);
    if (dn >= 0 && strcmp(dir, "forwards") != 0 && strcmp(dir, "backwards") != 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "direction must be forwards or backwards");
        goto out;
    }
    if (dn == -2) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM, "bad direction");
        goto out;
    }
    op->backward = dn >= 0 && strcmp(dir, "backwards") == 0;
    op->limit = (size_t)limit;
    if (op->from == 0) op->from = 1;
    if (op->from > op->until) { /* an empty window */
        respond_json(req, 200, json_pack("{s:[],s:n}", "items", "next"));
        goto out;
    }
    op->read.channel = channel;
    op->read.backward = op->backward;
    op->read.limit = op->limit;
    if (op->backward) op->read.before_seq = op->until == UINT64_MAX ? 0 : op->until + 1;
    else op->read.after_seq = op->from - 1;
    int rv = spool_node_read(api->node, &op->read, on_history, op);
    if (rv != 0) {
        respond_spool_err(req, rv, "read refused");
        goto out;
    }
    op = NULL;
out:
    free(op);
    spool_principal_close(&p);
}

/* ---- channel status ---- */

static void on_status_read(void *arg, int status, const struct spool_err *err,
                           const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                           uint64_t last_seq)
{
    struct op *op = arg;
    if (status != 0) {
        respond_spool_err(op->req, status, err != NULL ? err->msg : "read failed");
        free(op);
        return;
    }
    struct spool_node *node = op->api->node;
    uint32_t shard = spool_node_shard_of(node, op->channel);
    struct spool_shard_status st;
    spool_node_shard_status(node, shard, &st);
    json_t *v = json_pack("{s:s,s:I,s:I,s:I,s:I}", "channel", op->channel, "firstSerial",
                          (json_int_t)(last_seq == 0 ? 0 : first_seq), "lastSerial",
                          (json_int_t)last_seq, "shard", (json_int_t)shard, "leader",
                          (json_int_t)st.leader_id);
    if (n > 0 && v != NULL)
        json_object_set_new(v, "lastTimestamp", json_integer((json_int_t)recs[0]->timestamp_ms));
    respond_json(op->req, 200, v);
    free(op);
}

static void handle_channel(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    if (!admit(api, req, SPOOL_CAP_HISTORY, &channel, &p)) goto out;
    struct op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->api = api, op->req = req, op->channel = channel;
    op->read.channel = channel;
    op->read.backward = true;
    op->read.limit = 1;
    int rv = spool_node_read(api->node, &op->read, on_status_read, op);
    if (rv != 0) {
        free(op);
        respond_spool_err(req, rv, "read refused");
    }
out:
    spool_principal_close(&p);
}

/* ---- probes and metrics ---- */

static void handle_healthz(void *arg, struct spool_http_req *req)
{
    respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (api->node != NULL && spool_node_ready(api->node) && !spool_http_req_closing(req))
        respond_json(req, 200, json_pack("{s:b}", "ready", 1));
    else
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "not ready");
}

static void handle_metrics(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    char *text = NULL;
    size_t len = 0;
    struct spool_err err;
    if (api->metrics == NULL) {
        spool_http_respond_error(req, 404, SPOOL_HTTP_ENOT_FOUND, "metrics are off");
        return;
    }
    if (spool_metrics_render(api->metrics, &text, &len, &err) != 0) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "%s", err.msg);
        return;
    }
    static const struct spool_http_header h[] = {{"Content-Type", SPOOL_METRICS_CONTENT_TYPE}};
    spool_http_respond_owned(req, 200, h, 1, text, len);
}

static void collect_connections(struct spool_metric_writer *w, void *arg)
{
    struct spool_http_api *api = arg;
    spool_metric_write(w, NULL, api->server != NULL ? (double)spool_http_server_connections(api->server) : 0);
}

enum shard_figure { FIG_TERM, FIG_COMMIT, FIG_APPLIED, FIG_LEADER, FIG_STATE, FIG_BYTES, FIG_FSYNCS,
                    FIG_FSYNC_SECONDS, FIG_RECORDS, FIG_COUNT };

_Static_assert(FIG_COUNT == SPOOL_HTTP_API_FIGS, "one collector per shard figure");

static void collect_shard(struct spool_metric_writer *w, void *arg)
{
    struct spool_http_api_fig *sc = arg;
    struct spool_node *node = sc->api->node;
    if (node == NULL) return;
    uint32_t n = spool_node_shard_count(node);
    for (uint32_t i = 0; i < n; i++) {
        struct spool_shard_status st;
        spool_node_shard_status(node, i, &st);
        if (!st.local_replica && sc->fig != FIG_LEADER) continue;
        char shard[16];
        snprintf(shard, sizeof shard, "%" PRIu32, i);
        const char *labels[] = {shard};
        double v = 0;
        switch (sc->fig) {
        case FIG_TERM: v = (double)st.term; break;
        case FIG_COMMIT: v = (double)st.commit_index; break;
        case FIG_APPLIED: v = (double)st.applied_index; break;
        case FIG_LEADER: v = (double)st.leader_id; break;
        case FIG_STATE: v = (double)st.raft_state; break;
        case FIG_BYTES: v = (double)st.store.bytes_on_disk; break;
        case FIG_FSYNCS: v = (double)st.store.fsyncs; break;
        case FIG_FSYNC_SECONDS: v = (double)st.store.fsync_ns_total / 1e9; break;
        case FIG_RECORDS: v = (double)st.store.records; break;
        default: break;
        }
        spool_metric_write(w, labels, v);
    }
}

static int register_metrics(struct spool_http_api *api, struct spool_err *err)
{
    struct spool_metrics *m = api->metrics;
    static const char *req_labels[] = {"method", "status"};
    api->requests = spool_metrics_counter(m, "spool_http_requests_total",
                                          "HTTP requests answered, by method and status",
                                          req_labels, 2, err);
    if (api->requests == NULL) return err->code;
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    struct spool_metric_family *d = spool_metrics_histogram(
        m, "spool_http_request_duration_seconds", "HTTP request time from first byte to response written",
        NULL, 0, bounds, sizeof bounds / sizeof bounds[0], err);
    if (d == NULL || (api->duration = spool_histogram_of(d, NULL)) == NULL)
        return d == NULL ? err->code : spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    if (spool_metrics_collector(m, "spool_http_connections", "open HTTP connections (not upgraded)",
                                SPOOL_METRIC_GAUGE, NULL, 0, collect_connections, api, err) == NULL)
        return err->code;
    static const struct {
        const char *name, *help;
        enum spool_metric_type type;
    } figs[FIG_COUNT] = {
        [FIG_TERM] = {"spool_shard_raft_term", "current Raft term of the local replica", SPOOL_METRIC_GAUGE},
        [FIG_COMMIT] = {"spool_shard_raft_commit_index", "Raft commit index of the local replica", SPOOL_METRIC_GAUGE},
        [FIG_APPLIED] = {"spool_shard_raft_applied_index", "last Raft index applied by the local replica", SPOOL_METRIC_GAUGE},
        [FIG_LEADER] = {"spool_shard_leader_id", "node id of the shard's leader as this node knows it (0 = unknown)", SPOOL_METRIC_GAUGE},
        [FIG_STATE] = {"spool_shard_raft_state", "Raft state of the local replica (libraft RAFT_FOLLOWER/CANDIDATE/LEADER)", SPOOL_METRIC_GAUGE},
        [FIG_BYTES] = {"spool_shard_store_bytes", "bytes of segment files in the shard's store", SPOOL_METRIC_GAUGE},
        [FIG_FSYNCS] = {"spool_shard_store_fsyncs_total", "fsyncs done by the shard's store", SPOOL_METRIC_COUNTER},
        [FIG_FSYNC_SECONDS] = {"spool_shard_store_fsync_seconds_total", "time spent in the shard's store fsyncs", SPOOL_METRIC_COUNTER},
        [FIG_RECORDS] = {"spool_shard_store_records", "records retained in the shard's store", SPOOL_METRIC_GAUGE},
    };
    static const char *shard_label[] = {"shard"};
    for (int i = 0; i < FIG_COUNT; i++) {
        api->figs[i] = (struct spool_http_api_fig){api, i};
        if (spool_metrics_collector(m, figs[i].name, figs[i].help, figs[i].type, shard_label, 1,
                                    collect_shard, &api->figs[i], err) == NULL)
            return err->code;
    }
    return 0;
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
    return metrics != NULL ? register_metrics(api, err) : 0;
}

void spool_http_api_close(struct spool_http_api *api) { (void)api; }

int spool_http_api_routes(struct spool_http_api *api, struct spool_http_router *r, struct spool_err *err)
{
    int rv;
    if ((rv = spool_http_router_add(r, "POST", "/v1/channels/{channel}/messages", handle_publish, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/channels/{channel}/messages", handle_history, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/channels/{channel}", handle_channel, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/healthz", handle_healthz, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/readyz", handle_readyz, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/metrics", handle_metrics, api, err)))
        return rv;
    return 0;
}

void spool_http_api_on_done(void *arg, const struct spool_http_req *req, int status,
                            uint64_t duration_us)
{
    struct spool_http_api *api = arg;
    char path[256];
    SPOOL_DEBUG("http.request", "conn=%llu seq=%llu remote=%s method=%s path=%s status=%d us=%llu",
                (unsigned long long)req->conn_id, (unsigned long long)req->seq, req->remote,
                req->method, spool_log_quote(path, sizeof path, req->decoded_path), status,
                (unsigned long long)duration_us);
    if (api->requests == NULL) return;
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *labels[] = {req->method, code};
    struct spool_counter *c = spool_counter_of(api->requests, labels);
    if (c != NULL) spool_counter_inc(c);
    spool_histogram_observe(api->duration, (double)duration_us / 1e6);
}
