/*
 * Durable Streams: routing, common headers, state loads, commands and TTL tracking.
 *
 * Every request under /v1/stream/ lands in spool_ds_dispatch (in front of the router, because
 * stream names contain '/'). The name is the rest of the path, percent-decoded, and is the
 * channel name. Every response carries the CORS and browser-security headers (ds_hdrs_init).
 *
 * State: the authority is the channel's newest "ds.state" record, written by the shard state
 * machine (cluster/streams.h). This node keeps, per stream it served (struct ds_entry): the
 * highest state seq it was acknowledged (reads wait for at least that: read-your-writes through
 * any replica), and the sliding-TTL clock (last access by GET/POST; HEAD does not count). The
 * sweeper expires TTL / Expires-At streams this node knows about, so forks release their source
 * references even when nobody reads them. A restarted node starts every TTL clock afresh (never
 * early expiry; at worst one extra TTL).
 */
#include "gateway/durable_streams_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"

#define SWEEP_MS 200
#define ENTRY_IDLE_MS 300000 /* forget a stream this node has not served for 5 minutes */
#define CURSOR_EPOCH_MS 1728432000000LL /* 2024-10-09T00:00:00Z */
#define CURSOR_INTERVAL_MS 20000

/* --- headers ------------------------------------------------------------------------------ */

void ds_hdrs_init(struct ds_hdrs *h)
{
    h->n = 0;
    h->used = 0;
    ds_hdr(h, "Access-Control-Allow-Origin", "*");
    ds_hdr(h, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, HEAD, OPTIONS");
    ds_hdr(h, "Access-Control-Allow-Headers",
           "Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, "
           "Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq, Stream-Forked-From, "
           "Stream-Fork-Offset, Stream-Fork-Sub-Offset");
    ds_hdr(h, "Access-Control-Expose-Headers",
           "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, "
           "Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, "
           "Producer-Received-Seq, ETag, Content-Type, Content-Encoding, Vary, Location");
    ds_hdr(h, "X-Content-Type-Options", "nosniff");
    ds_hdr(h, "Cross-Origin-Resource-Policy", "cross-origin");
}

void ds_hdr(struct ds_hdrs *h, const char *name, const char *value)
{
    size_t len = strlen(value) + 1;
    if (h->n == sizeof h->h / sizeof h->h[0])
        return;
    const char *v = value;
    if (value < h->store || value >= h->store + sizeof h->store) {
        if (h->used + len > sizeof h->store)
            return;
        memcpy(h->store + h->used, value, len);
        v = h->store + h->used;
        h->used += len;
    }
    h->h[h->n].name = name;
    h->h[h->n].value = v;
    h->n++;
}

void ds_format_offset(char out[DS_OFFSET_LEN], uint64_t l)
{
    char b[48];
    snprintf(b, sizeof b, "%016" PRIu64 "_%016" PRIu64, (uint64_t)(l % 10000000000000000ULL),
             (uint64_t)0);
    memcpy(out, b, DS_OFFSET_LEN - 1);
    out[DS_OFFSET_LEN - 1] = '\0';
}

void ds_hdr_offset(struct ds_hdrs *h, const char *name, uint64_t l)
{
    char o[DS_OFFSET_LEN];
    ds_format_offset(o, l);
    ds_hdr(h, name, o);
}

void ds_hdr_u64(struct ds_hdrs *h, const char *name, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    ds_hdr(h, name, b);
}

void ds_fail(struct spool_http_req *req, int status, const char *msg)
{
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    ds_hdr(&h, "Content-Type", "text/plain; charset=utf-8");
    ds_hdr(&h, "Cache-Control", "no-store");
    spool_http_respond(req, status, h.h, h.n, msg, strlen(msg));
}

int ds_parse_offset(const char *s, uint64_t *l)
{
    if (s == NULL || strcmp(s, "-1") == 0) {
        *l = DS_OFFSET_START;
        return 0;
    }
    if (strcmp(s, "now") == 0) {
        *l = DS_OFFSET_NOW;
        return 0;
    }
    if (strlen(s) != 33 || s[16] != '_')
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 33; i++) {
        if (i == 16)
            continue;
        if (!isdigit((unsigned char)s[i]))
            return -1;
        if (i < 16)
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *l = v;
    return 0;
}

int64_t ds_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *ds_cursor(char out[24], const char *client)
{
    uint64_t cur = (uint64_t)((ds_now_ms() - CURSOR_EPOCH_MS) / CURSOR_INTERVAL_MS);
    if (client != NULL && client[0] != '\0' && strspn(client, "0123456789") == strlen(client) &&
        strlen(client) < 19) {
        uint64_t c = strtoull(client, NULL, 10);
        if (c >= cur) {
            uint64_t jitter_s = 1 + (uint64_t)(rand() % 3600);
            uint64_t step = (jitter_s + 19) / 20;
            cur = c + (step ? step : 1);
        }
    }
    snprintf(out, 24, "%" PRIu64, cur);
    return out;
}

static bool media_is(const char *ct, const char *prefix, bool whole)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen(prefix);
    if (strncasecmp(ct, prefix, n) != 0)
        return false;
    return !whole || ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

bool ds_is_json(const char *ct) { return media_is(ct, "application/json", true); }

bool ds_is_text(const char *ct) { return ds_is_json(ct) || media_is(ct, "text/", false); }

/* --- per-stream memory -------------------------------------------------------------------- */

static size_t bucket_of(const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % DS_BUCKETS);
}

struct ds_entry *ds_entry_get(struct spool_ds *ds, const char *name, bool create)
{
    size_t b = bucket_of(name);
    for (struct ds_entry *e = ds->buckets[b]; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0) {
            e->touched_ms = ds_now_ms();
            return e;
        }
    if (!create)
        return NULL;
    struct ds_entry *e = calloc(1, sizeof *e);
    if (e == NULL || (e->name = strdup(name)) == NULL) {
        free(e);
        return NULL;
    }
    e->touched_ms = ds_now_ms();
    e->next = ds->buckets[b];
    ds->buckets[b] = e;
    return e;
}

void ds_entry_seen(struct spool_ds *ds, const char *name, uint64_t seq)
{
    struct ds_entry *e = ds_entry_get(ds, name, true);
    if (e != NULL && seq > e->min_seq)
        e->min_seq = seq;
}

void ds_entry_track(struct spool_ds *ds, const char *name, const Spool__StreamState *st, bool renew)
{
    if (st == NULL || (!st->has_ttl && st->expires_at_ms == 0 &&
                       (st->fork_source == NULL || st->fork_source[0] == '\0')))
        return;
    struct ds_entry *e = ds_entry_get(ds, name, true);
    if (e == NULL)
        return;
    int64_t now = ds_now_ms();
    if (e->base_seq != st->base_seq || e->last_access_ms == 0) {
        e->base_seq = st->base_seq;
        e->last_access_ms = now;
        e->swept = false;
        free(e->fork_source);
        e->fork_source = st->fork_source && st->fork_source[0] ? strdup(st->fork_source) : NULL;
    }
    e->ttl_s = st->has_ttl ? st->ttl_s : 0;
    e->expires_at_ms = st->expires_at_ms;
    if (renew && !(st->deleted || st->soft_deleted))
        e->last_access_ms = now;
}

static bool entry_expired(const struct ds_entry *e, int64_t now)
{
    if (e->expires_at_ms != 0 && now >= e->expires_at_ms)
        return true;
    return e->ttl_s != 0 && now - e->last_access_ms >= (int64_t)e->ttl_s * 1000;
}

bool ds_expired(struct spool_ds *ds, const char *name, const Spool__StreamState *st)
{
    int64_t now = ds_now_ms();
    if (st->expires_at_ms != 0 && now >= st->expires_at_ms)
        return true;
    if (!st->has_ttl)
        return false;
    struct ds_entry *e = ds_entry_get(ds, name, false);
    return e != NULL && e->base_seq == st->base_seq && e->last_access_ms != 0 &&
           entry_expired(e, now);
}

uint64_t ds_entry_ttl_expired(struct spool_ds *ds, const char *name)
{
    struct ds_entry *e = ds_entry_get(ds, name, false);
    bool gone = e != NULL && e->last_access_ms != 0 && e->ttl_s != 0 && entry_expired(e, ds_now_ms());
    return gone ? e->base_seq + 1 : 0;
}

/* --- state loads -------------------------------------------------------------------------- */

struct load {
    struct spool_ds *ds;
    char *channel;
    ds_state_cb cb;
    void *arg;
    uint64_t min_seq;
    uint64_t newest_data; /* newest non-META record newer than the state (native publish) */
    int rounds;
    bool leader; /* reading at the shard leader (after the local replica knew no state) */
};

#define LOAD_PAGE 64
#define LOAD_MAX_ROUNDS 64

static void load_read_cb(void *arg, int status, const struct spool_err *err,
                         const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                         uint64_t last_seq)
{
    struct load *l = arg;
    if (status != 0) {
        SPOOL_WARN("ds.state_load", "channel=%s code=%s", l->channel, spool_err_name(status));
        l->cb(l->arg, 503, NULL, 0);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!spool_streams_is_state(recs[i])) {
            if (l->newest_data == 0 && recs[i]->action != SPOOL__ACTION__ACTION_CHANNEL_META)
                l->newest_data = recs[i]->seq;
            continue;
        }
        Spool__StreamState *st =
            spool__stream_state__unpack(NULL, recs[i]->data.len, recs[i]->data.data);
        spool_streams_native_tail(st, l->newest_data);
        if (st != NULL && recs[i]->seq > 0)
            ds_entry_seen(l->ds, l->channel, recs[i]->seq);
        l->cb(l->arg, st ? 200 : 500, st, recs[i]->seq);
        goto done;
    }
    if (n == LOAD_PAGE && ++l->rounds < LOAD_MAX_ROUNDS && recs[n - 1]->seq > 1) {
        struct spool_read_req rr = {.channel = l->channel, .backward = true,
                                    .before_seq = recs[n - 1]->seq, .limit = LOAD_PAGE,
                                    .min_seq = l->min_seq, .leader = l->leader};
        if (spool_node_read(l->ds->node, &rr, load_read_cb, l) == 0)
            return;
    }
    /* No state here. A replica may not have applied a create that another node acknowledged
     * a moment ago (read-your-writes across nodes): only the shard's leader can say "none". */
    if (!l->leader) {
        l->leader = true;
        l->rounds = 0;
        l->newest_data = 0;
        struct spool_read_req rr = {.channel = l->channel, .backward = true, .limit = LOAD_PAGE,
                                    .leader = true};
        if (spool_node_read(l->ds->node, &rr, load_read_cb, l) == 0)
            return;
    }
    l->cb(l->arg, 200, NULL, 0);
done:
    free(l->channel);
    free(l);
}

int ds_state_load(struct spool_ds *ds, const char *channel, ds_state_cb cb, void *arg)
{
    struct load *l = calloc(1, sizeof *l);
    if (l == NULL || (l->channel = strdup(channel)) == NULL) {
        free(l);
        return SPOOL_ENOMEM;
    }
    l->ds = ds;
    l->cb = cb;
    l->arg = arg;
    struct ds_entry *e = ds_entry_get(ds, channel, false);
    l->min_seq = e ? e->min_seq : 0;
    struct spool_read_req rr = {.channel = channel, .backward = true, .limit = LOAD_PAGE,
                                .min_seq = l->min_seq};
    int rc = spool_node_read(ds->node, &rr, load_read_cb, l);
    if (rc != 0) {
        free(l->channel);
        free(l);
    }
    return rc;
}

bool ds_state_live(const Spool__StreamState *st) { return st != NULL && !st->deleted; }

/* --- commands ----------------------------------------------------------------------------- */

struct cmd_op {
    struct spool_ds *ds;
    char *channel;
    ds_cmd_cb cb;
    void *arg;
};

static void cmd_publish_cb(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                           const bool *duplicate, size_t n)
{
    struct cmd_op *c = arg;
    struct spool_stream_result res;
    memset(&res, 0, sizeof res);
    if (status == 0) {
        spool_streams_result(seqs, n, &res);
        if (res.seq != 0)
            ds_entry_seen(c->ds, c->channel, res.seq);
    } else {
        SPOOL_WARN("ds.command", "channel=%s code=%s msg=\"%s\"", c->channel,
                   spool_err_name(status), err ? err->msg : "");
        res.status = 503;
    }
    if (c->cb != NULL)
        c->cb(c->arg, status, &res);
    free(c->channel);
    free(c);
}

int ds_command(struct spool_ds *ds, const char *channel, const Spool__StreamCommand *cmd,
               Spool__Record *const *data, size_t n, ds_cmd_cb cb, void *arg)
{
    size_t len = spool__stream_command__get_packed_size(cmd);
    uint8_t *buf = malloc(len ? len : 1);
    const Spool__Record **msgs = calloc(n + SPOOL_STREAMS_SLOTS, sizeof *msgs);
    struct cmd_op *c = calloc(1, sizeof *c);
    int rc = SPOOL_ENOMEM;
    if (buf == NULL || msgs == NULL || c == NULL || (c->channel = strdup(channel)) == NULL)
        goto fail;
    spool__stream_command__pack(cmd, buf);
    Spool__Record head, pad;
    spool__record__init(&head);
    head.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    head.name = SPOOL_STREAMS_CMD;
    head.data.data = buf;
    head.data.len = len;
    spool__record__init(&pad);
    pad.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    pad.name = SPOOL_STREAMS_PAD;
    msgs[0] = &head;
    for (size_t i = 1; i < SPOOL_STREAMS_SLOTS; i++)
        msgs[i] = &pad;
    for (size_t i = 0; i < n; i++)
        msgs[SPOOL_STREAMS_SLOTS + i] = data[i];
    c->ds = ds;
    c->cb = cb;
    c->arg = arg;
    rc = spool_node_publish(ds->node, channel, msgs, n + SPOOL_STREAMS_SLOTS, cmd_publish_cb, c);
    if (rc == 0) {
        free(buf);
        free(msgs);
        return 0;
    }
fail:
    if (c)
        free(c->channel);
    free(c);
    free(buf);
    free(msgs);
    return rc;
}

/* --- fork reference release (cascade) ----------------------------------------------------- */

struct release {
    struct spool_ds *ds;
    char *source, *fork;
    int depth;
};

static void release_step(struct release *r);

static void release_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct release *r = arg;
    char *next = st && st->fork_source && st->fork_source[0] ? strdup(st->fork_source) : NULL;
    if (st)
        spool__stream_state__free_unpacked(st, NULL);
    if (next == NULL || ++r->depth > DS_MAX_FORK_DEPTH) {
        free(next);
        free(r->source);
        free(r->fork);
        free(r);
        return;
    }
    free(r->fork);
    r->fork = r->source;
    r->source = next;
    release_step(r);
}

static void release_cmd_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct release *r = arg;
    /* extra = 1: the source was soft-deleted and is gone now, and it is a fork itself */
    if (status == 0 && res->extra == 1 &&
        ds_state_load(r->ds, r->source, release_state_cb, r) == 0)
        return;
    free(r->source);
    free(r->fork);
    free(r);
}

static void release_step(struct release *r)
{
    Spool__StreamCommand cmd;
    spool__stream_command__init(&cmd);
    cmd.op = SPOOL__STREAM_OP__STREAM_OP_FORK_RELEASE;
    cmd.fork_name = r->fork;
    if (ds_command(r->ds, r->source, &cmd, NULL, 0, release_cmd_cb, r) != 0) {
        free(r->source);
        free(r->fork);
        free(r);
    }
}

void ds_release(struct spool_ds *ds, const char *source, const char *fork)
{
    struct release *r = calloc(1, sizeof *r);
    if (r == NULL || (r->source = strdup(source)) == NULL || (r->fork = strdup(fork)) == NULL) {
        if (r)
            free(r->source);
        free(r);
        return;
    }
    r->ds = ds;
    release_step(r);
}

/* --- expiry sweeper ----------------------------------------------------------------------- */

struct expire {
    struct spool_ds *ds;
    char *name, *source;
};

static void expire_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct expire *x = arg;
    /* 404: gone for good (it was no source of live forks): give back its own reference */
    if (status == 0 && res->status == 404 && x->source != NULL)
        ds_release(x->ds, x->source, x->name);
    free(x->name);
    free(x->source);
    free(x);
}

static void sweep_cb(uv_timer_t *t)
{
    struct spool_ds *ds = t->data;
    int64_t now = ds_now_ms();
    for (size_t b = 0; b < DS_BUCKETS; b++)
        for (struct ds_entry **pe = &ds->buckets[b], *e; (e = *pe) != NULL;) {
            bool watched = !e->swept && (e->ttl_s != 0 || e->expires_at_ms != 0);
            if (!watched && now - e->touched_ms > ENTRY_IDLE_MS) {
                *pe = e->next;
                free(e->name);
                free(e->fork_source);
                free(e);
                continue;
            }
            pe = &e->next;
            if (e->swept || e->last_access_ms == 0 || !entry_expired(e, now))
                continue;
            e->swept = true;
            struct expire *x = calloc(1, sizeof *x);
            if (x == NULL || (x->name = strdup(e->name)) == NULL) {
                free(x);
                continue;
            }
            x->ds = ds;
            x->source = e->fork_source ? strdup(e->fork_source) : NULL;
            Spool__StreamCommand cmd;
            spool__stream_command__init(&cmd);
            cmd.op = SPOOL__STREAM_OP__STREAM_OP_DELETE;
            cmd.expire_only = true;
            cmd.ttl_expired = e->ttl_s != 0;
            cmd.incarnation = e->base_seq + 1; /* never a newer incarnation at the same path */
            if (ds_command(ds, e->name, &cmd, NULL, 0, expire_cb, x) != 0) {
                free(x->name);
                free(x->source);
                free(x);
            }
        }
}

/* --- live registrations ------------------------------------------------------------------- */

void ds_live_add(struct spool_ds *ds, struct ds_live *l)
{
    l->prev = NULL;
    l->next = ds->lives;
    if (ds->lives)
        ds->lives->prev = l;
    ds->lives = l;
}

void ds_live_del(struct spool_ds *ds, struct ds_live *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else if (ds->lives == l)
        ds->lives = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* --- dispatch ----------------------------------------------------------------------------- */

static int query_params(const char *query, char **offset, char **live, char **cursor)
{
    size_t pos = 0, qlen = strlen(query);
    struct spool_slice k, v;
    int n_offset = 0;
    while (spool_http_query_next(query, qlen, &pos, &k, &v)) {
        char key[32];
        if (spool_http_pct_decode(k.p, k.len, true, key, sizeof key) < 0)
            continue; /* unknown (or too long to be known) */
        char **dst = strcmp(key, "offset") == 0 ? offset
                     : strcmp(key, "live") == 0 ? live
                     : strcmp(key, "cursor") == 0 ? cursor : NULL;
        if (dst == NULL)
            continue;
        if (dst == offset && ++n_offset > 1)
            return -1;
        free(*dst);
        *dst = malloc(v.len + 1);
        if (*dst == NULL || spool_http_pct_decode(v.p, v.len, true, *dst, v.len + 1) < 0)
            return -1;
    }
    if (*offset != NULL && (*offset)[0] == '\0')
        return -1;
    return 0;
}

static void handle_options(struct spool_http_req *req)
{
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    ds_hdr(&h, "Access-Control-Max-Age", "86400");
    spool_http_respond(req, 204, h.h, h.n, NULL, 0);
}

static void handle_get(struct spool_ds *ds, struct spool_http_req *req, const char *name, bool head)
{
    char *offset = NULL, *live = NULL, *cursor = NULL;
    if (query_params(req->query, &offset, &live, &cursor) != 0) {
        ds_fail(req, 400, "bad query parameters");
        goto out;
    }
    if (head || live == NULL) {
        ds_handle_get(ds, req, name, head);
        goto out;
    }
    uint64_t from;
    if (offset == NULL || ds_parse_offset(offset, &from) != 0) {
        ds_fail(req, 400, offset == NULL ? "live reads need an offset" : "malformed offset");
        goto out;
    }
    if (strcmp(live, "long-poll") == 0)
        ds_handle_longpoll(ds, req, name, from, cursor);
    else if (strcmp(live, "sse") == 0)
        ds_handle_sse(ds, req, name, from, cursor);
    else
        ds_fail(req, 400, "live must be long-poll or sse");
out:
    free(offset);
    free(live);
    free(cursor);
}

void spool_ds_dispatch(void *arg, struct spool_http_req *req)
{
    struct spool_ds *ds = arg;
    size_t plen = strlen(DS_PREFIX);
    if (strncmp(req->path, DS_PREFIX, plen) != 0 && strcmp(req->path, "/v1/stream") != 0) {
        spool_http_router_dispatch(ds->router, req);
        return;
    }
    if (strcmp(req->method, "OPTIONS") == 0) {
        handle_options(req);
        return;
    }
    const char *raw = req->path + (strlen(req->path) >= plen ? plen : strlen(req->path));
    char name[DS_NAME_MAX + 1];
    long len = spool_http_pct_decode(raw, strlen(raw), false, name, sizeof name);
    const char *why = NULL;
    if (len <= 0 || !spool_channel_name_valid(name, (size_t)len, DS_NAME_MAX, &why)) {
        ds_fail(req, len == 0 ? 404 : 400, why ? why : "bad stream name");
        return;
    }
    bool reserved = strcmp(name, "__ds") == 0 || strncmp(name, "__ds/", 5) == 0;
    if (ds->node == NULL) {
        ds_fail(req, 503, "no node");
        return;
    }
    bool write = strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0;
    if (reserved && ds_subs_is_token_route(name)) {
        ds_subs_handle(ds, req, name);
        return;
    }
    struct spool_principal who;
    spool_principal_init(&who);
    if (spool_http_api_authorize(ds->api, req, reserved ? "__ds" : name,
                                 write ? SPOOL_CAP_PUBLISH : SPOOL_CAP_HISTORY, &who) != 0) {
        spool_principal_close(&who);
        return;
    }
    spool_principal_close(&who);
    if (reserved)
        ds_subs_handle(ds, req, name);
    else if (strcmp(req->method, "PUT") == 0)
        ds_handle_put(ds, req, name);
    else if (strcmp(req->method, "POST") == 0)
        ds_handle_post(ds, req, name);
    else if (strcmp(req->method, "DELETE") == 0)
        ds_handle_delete(ds, req, name);
    else if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
        handle_get(ds, req, name, strcmp(req->method, "HEAD") == 0);
    else
        ds_fail(req, 405, "method not allowed");
}

/* --- life cycle --------------------------------------------------------------------------- */

int spool_ds_init(struct spool_ds **out, uv_loop_t *loop, const struct spool_options *opts,
                  struct spool_node *node, struct spool_http_api *api,
                  struct spool_http_router *router, struct spool_err *err)
{
    struct spool_ds *ds = calloc(1, sizeof *ds);
    if (ds == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "durable streams: out of memory");
    ds->loop = loop;
    ds->opts = opts;
    ds->node = node;
    ds->api = api;
    ds->router = router;
    if (ds_subs_init(ds) != 0) {
        free(ds);
        return spool_err_set(err, SPOOL_ENOMEM, "durable streams: cannot make signing keys");
    }
    uv_timer_init(loop, &ds->sweep);
    ds->sweep.data = ds;
    uv_timer_start(&ds->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    *out = ds;
    return 0;
}

void spool_ds_stop(struct spool_ds *ds)
{
    if (ds == NULL || ds->stopped)
        return;
    ds->stopped = true;
    while (ds->lives != NULL) {
        struct ds_live *l = ds->lives;
        ds_live_del(ds, l);
        l->stop(l);
    }
    ds_subs_stop(ds);
    uv_close((uv_handle_t *)&ds->sweep, NULL);
}

void spool_ds_free(struct spool_ds *ds)
{
    if (ds == NULL)
        return;
    ds_subs_free(ds);
    for (size_t b = 0; b < DS_BUCKETS; b++)
        while (ds->buckets[b] != NULL) {
            struct ds_entry *e = ds->buckets[b];
            ds->buckets[b] = e->next;
            free(e->name);
            free(e->fork_source);
            free(e);
        }
    free(ds);
}
