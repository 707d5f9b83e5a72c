/*
 * History and channel status (docs/http-api.md).
 *
 * History pages: forwards reads records with serial in [from, until], backwards in [from, until]
 * from the top down; `start`/`end` filter by timestamp within what is read. A page that may be
 * followed by more records carries a `next` URL with the same parameters moved past the page.
 * A page also ends early, with a `next` URL, once its items' data and extras reach
 * --history-page-bytes (at least one item is always returned), so a page of large messages
 * stays bounded in memory.
 * Items are encoded by spool_rt_record_json, so history and live messages look the same; data
 * that is neither JSON nor text (published as binary over another protocol) comes back
 * base64-encoded with "encoding".
 * Token streams and edits are rolled up per page (gateway/ai_rollup.h: the records about one
 * message on the page are one item in its latest state, carrying the serial of the last record it
 * covers) unless ?rollup=false; `next` still follows the raw serials, so paging stays exact.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ai_rollup.h"
#include "gateway/http_api_int.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/realtime.h"

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

struct page_items {
    json_t *items;
    bool failed;
};

static void emit_item(void *arg, const Spool__Record *r)
{
    struct page_items *pi = arg;
    json_t *item = pi->failed ? NULL : record_json(r);
    if (item == NULL) pi->failed = true;
    else json_array_append_new(pi->items, item);
}

/* The URL of the page after this one, or NULL when there is none. */
static json_t *next_url(const struct spool_api_op *op, uint64_t from, uint64_t until)
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
    if (op->has_end) n += snprintf(url + n, sizeof url - (size_t)n, "&end=%" PRIu64, op->end);
    if (!op->rollup) snprintf(url + n, sizeof url - (size_t)n, "&rollup=false");
    return json_string(url);
}

/* The common head of both read callbacks: a failed read is answered (and the op freed) here. */
static bool read_failed(struct spool_api_op *op, int status, const struct spool_err *err)
{
    if (status == 0) return false;
    spool_http_api_respond_err(op->req, status, err != NULL ? err->msg : "read failed");
    free(op);
    return true;
}

/* ?consistency=leader (default) reads at the shard's leader, so a read through any node returns
 * every publish acknowledged before it (read-your-writes); ?consistency=replica reads this node's
 * replica when it has one: cheaper, possibly a heartbeat behind. Returns -1 on a bad value. */
static int read_consistency(const struct spool_http_req *req, struct spool_read_req *read)
{
    char v[16];
    long n = spool_http_query_get(req->query, "consistency", v, sizeof v);
    if (n == -2 || (n >= 0 && strcmp(v, "leader") != 0 && strcmp(v, "replica") != 0))
        return -1;
    read->leader = n < 0 || strcmp(v, "leader") == 0;
    return 0;
}

static void on_history(void *arg, int status, const struct spool_err *err,
                       const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                       uint64_t last_seq)
{
    struct spool_api_op *op = arg;
    if (read_failed(op, status, err)) return;
    json_t *items = json_array();
    bool stop = false;      /* the timestamp or serial window ended inside this page */
    bool truncated = false; /* --history-page-bytes reached: the page ends early */
    uint64_t last_read = 0; /* the last record this page covers (included or filtered out) */
    uint64_t bytes = 0, budget = op->api->opts->history_page_bytes;
    const Spool__Record **incl = calloc(n ? n : 1, sizeof *incl);
    size_t n_incl = 0;
    if (incl == NULL) {
        json_decref(items);
        spool_http_respond_error(op->req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        free(op);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Spool__Record *r = recs[i];
        if (!op->backward && (r->seq > op->until || (op->has_end && (uint64_t)r->timestamp_ms > op->end))) {
            stop = true;
            break;
        }
        if (op->backward && (r->seq < op->from || (op->has_start && (uint64_t)r->timestamp_ms < op->start))) {
            stop = true;
            break;
        }
        uint64_t cost = r->data.len + r->extras.len + 256; /* + the item's other fields, roughly */
        if (n_incl > 0 && bytes + cost > budget) {
            truncated = true;
            break;
        }
        last_read = r->seq;
        if (op->has_start && (uint64_t)r->timestamp_ms < op->start) continue;
        if (op->has_end && (uint64_t)r->timestamp_ms > op->end) continue;
        incl[n_incl++] = r;
        bytes += cost;
    }
    struct page_items pi = {items, false};
    if (op->rollup) {
        if (spool_ai_rollup_page(incl, n_incl, op->backward, op->api->opts->ai_rollup_bytes,
                                 emit_item, &pi) != 0)
            pi.failed = true;
        if (op->backward) { /* rolled ascending, emitted from the oldest: put newest first */
            size_t k = json_array_size(items);
            json_t *rev = json_array();
            for (size_t i = k; rev != NULL && i > 0; i--)
                json_array_append(rev, json_array_get(items, i - 1));
            json_decref(items);
            items = pi.items = rev;
            if (rev == NULL) pi.failed = true;
        }
    } else {
        for (size_t i = 0; i < n_incl; i++) emit_item(&pi, incl[i]);
    }
    free(incl);
    if (pi.failed) {
        json_decref(items);
        spool_http_respond_error(op->req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        free(op);
        return;
    }
    json_t *next = json_null();
    if (!stop && last_read != 0 && (truncated || n == op->limit)) {
        if (!op->backward && last_read < last_seq && last_read < op->until) {
            json_decref(next);
            next = next_url(op, last_read + 1, op->until);
        } else if (op->backward && last_read > first_seq && last_read > op->from) {
            json_decref(next);
            next = next_url(op, op->from, last_read - 1);
        }
    }
    spool_http_respond_json(op->req, 200, json_pack("{s:o,s:o}", "items", items, "next", next));
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

void spool_http_api_history(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    struct spool_api_op *op = NULL;
    if (!spool_http_api_admit(api, req, SPOOL_CAP_HISTORY, &channel, &p)) goto out;
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
    char roll[8];
    long rn = spool_http_query_get(req->query, "rollup", roll, sizeof roll);
    if (rn == -2 || (rn >= 0 && strcmp(roll, "true") != 0 && strcmp(roll, "false") != 0)) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM, "rollup must be true or false");
        goto out;
    }
    op->rollup = rn < 0 || strcmp(roll, "true") == 0;
    op->limit = (size_t)limit;
    if (op->from == 0) op->from = 1;
    if (op->from > op->until) { /* an empty window */
        spool_http_respond_json(req, 200, json_pack("{s:[],s:n}", "items", "next"));
        goto out;
    }
    op->read.channel = channel;
    op->read.backward = op->backward;
    op->read.limit = op->limit;
    if (read_consistency(req, &op->read) != 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "consistency must be leader or replica");
        goto out;
    }
    if (op->backward) op->read.before_seq = op->until == UINT64_MAX ? 0 : op->until + 1;
    else op->read.after_seq = op->from - 1;
    int rv = spool_node_read(api->node, &op->read, on_history, op);
    if (rv != 0) {
        spool_http_api_respond_err(req, rv, "read refused");
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
    struct spool_api_op *op = arg;
    if (read_failed(op, status, err)) return;
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
    spool_http_respond_json(op->req, 200, v);
    free(op);
}

void spool_http_api_channel(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    if (!spool_http_api_admit(api, req, SPOOL_CAP_HISTORY, &channel, &p)) goto out;
    struct spool_api_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->api = api, op->req = req, op->channel = channel;
    op->read.channel = channel;
    op->read.backward = true;
    op->read.limit = 1;
    if (read_consistency(req, &op->read) != 0) {
        free(op);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "consistency must be leader or replica");
        goto out;
    }
    int rv = spool_node_read(api->node, &op->read, on_status_read, op);
    if (rv != 0) {
        free(op);
        spool_http_api_respond_err(req, rv, "read refused");
    }
out:
    spool_principal_close(&p);
}

