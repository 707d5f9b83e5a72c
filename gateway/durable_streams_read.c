/*
 * Durable Streams reads: the reader across fork chains, GET catch-up and HEAD.
 *
 * ds_read() loads the stream's state, resolves the offset (-1 = the start, now = the tail, an
 * offset beyond the tail is a 400), and walks the fork chain: a fork's positions up to its fork
 * offset are its source's (recursively, through soft-deleted sources), so a read from L collects
 * the deepest level first, each level's data records with L in (max(from, origin), hi], up to a
 * page of DS_PAGE_BYTES. META records (state, others) are never data. Source levels are read
 * without renewing their TTL.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/durable_streams_int.h"
#include "gateway/http_path.h"

#define READ_LIMIT 1000

struct level {
    char *channel;
    Spool__StreamState *st;
    uint64_t state_seq;
    uint64_t hi;
};

struct ds_read {
    struct spool_ds *ds;
    ds_read_cb cb;
    void *arg;
    uint64_t from;
    struct level lv[DS_MAX_FORK_DEPTH];
    size_t n_lv;
    size_t cur;
    uint64_t after_seq;
    struct ds_page page;
    size_t cap, bytes;
    bool truncated;
};

static void read_free(struct ds_read *r)
{
    for (size_t i = 0; i < r->n_lv; i++) {
        free(r->lv[i].channel);
        if (r->lv[i].st && i > 0)
            spool__stream_state__free_unpacked(r->lv[i].st, NULL);
    }
    if (r->page.st)
        spool__stream_state__free_unpacked(r->page.st, NULL);
    for (size_t i = 0; i < r->page.n; i++)
        spool__record__free_unpacked(r->page.recs[i], NULL);
    free(r->page.recs);
    free(r->page.ls);
    free(r);
}

static void read_finish(struct ds_read *r, int status)
{
    if (status == 200) {
        const Spool__StreamState *st = r->page.st;
        r->page.up_to_date = !r->truncated;
        r->page.next = r->truncated ? r->page.ls[r->page.n - 1] : st->tail;
        r->page.from = r->from;
    }
    r->cb(r->arg, status, status == 200 ? &r->page : NULL);
    read_free(r);
}

static void read_level(struct ds_read *r);

static uint64_t level_lo(const struct ds_read *r, const struct level *l)
{
    return r->from > l->st->origin ? r->from : l->st->origin;
}

/* The current level is done: move on to level cur - 1 from where its range starts. False when
 * level 0 (the stream itself) was the one done: the read is then finished. */
static bool level_pop(struct ds_read *r)
{
    if (r->cur == 0) {
        read_finish(r, 200);
        return false;
    }
    r->cur--;
    r->after_seq = spool_streams_seq_of(r->lv[r->cur].st, level_lo(r, &r->lv[r->cur]));
    return true;
}

static void level_read_cb(void *arg, int status, const struct spool_err *err,
                          const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                          uint64_t last_seq)
{
    struct ds_read *r = arg;
    if (status != 0) {
        read_finish(r, 503);
        return;
    }
    struct level *l = &r->lv[r->cur];
    bool level_done = n < READ_LIMIT;
    for (size_t i = 0; i < n; i++) {
        const Spool__Record *rec = recs[i];
        r->after_seq = rec->seq;
        uint64_t L = spool_streams_l_of(l->st, rec->seq);
        if (rec->seq <= l->st->base_seq)
            continue;
        if (L > l->hi) {
            level_done = true;
            break;
        }
        if (rec->action == SPOOL__ACTION__ACTION_CHANNEL_META)
            continue;
        if (r->bytes > 0 && r->bytes + rec->data.len > DS_PAGE_BYTES) {
            r->truncated = true;
            read_finish(r, 200);
            return;
        }
        if (r->page.n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 16;
            Spool__Record **v = realloc(r->page.recs, cap * sizeof *v);
            if (v != NULL)
                r->page.recs = v;
            uint64_t *ls = v ? realloc(r->page.ls, cap * sizeof *ls) : NULL;
            if (ls == NULL) {
                read_finish(r, 503);
                return;
            }
            r->page.ls = ls;
            r->cap = cap;
        }
        size_t len = spool__record__get_packed_size(rec);
        uint8_t *buf = malloc(len ? len : 1);
        Spool__Record *copy = NULL;
        if (buf != NULL) {
            spool__record__pack(rec, buf);
            copy = spool__record__unpack(NULL, len, buf);
        }
        free(buf);
        if (copy == NULL) {
            read_finish(r, 503);
            return;
        }
        r->page.recs[r->page.n] = copy;
        r->page.ls[r->page.n] = L;
        r->page.n++;
        r->bytes += rec->data.len;
    }
    if (level_done && !level_pop(r))
        return;
    read_level(r);
}

static void read_level(struct ds_read *r)
{
    struct level *l = &r->lv[r->cur];
    if (level_lo(r, l) >= l->hi) { /* nothing of this level in range */
        if (level_pop(r))
            read_level(r);
        return;
    }
    uint64_t hi_seq = spool_streams_seq_of(l->st, l->hi); /* natively published tail included */
    struct spool_read_req rr = {.channel = l->channel, .after_seq = r->after_seq,
                                .limit = READ_LIMIT,
                                .min_seq = hi_seq > l->state_seq ? hi_seq : l->state_seq};
    if (spool_node_read(r->ds->node, &rr, level_read_cb, r) != 0)
        read_finish(r, 503);
}

static void chain_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq);

/* Adds the source level of the deepest level if the read starts before its origin. */
static void chain_next(struct ds_read *r)
{
    struct level *l = &r->lv[r->n_lv - 1];
    const Spool__StreamState *st = l->st;
    bool fork = st->fork_source != NULL && st->fork_source[0] != '\0';
    if (fork && r->from < st->origin && r->n_lv < DS_MAX_FORK_DEPTH) {
        struct level *s = &r->lv[r->n_lv];
        s->hi = st->origin < l->hi ? st->origin : l->hi;
        s->channel = strdup(st->fork_source);
        s->st = NULL;
        if (s->channel == NULL) {
            read_finish(r, 503);
            return;
        }
        r->n_lv++;
        if (ds_state_load(r->ds, s->channel, chain_state_cb, r) != 0)
            read_finish(r, 503);
        return;
    }
    r->cur = r->n_lv - 1;
    r->after_seq = spool_streams_seq_of(r->lv[r->cur].st, level_lo(r, &r->lv[r->cur]));
    read_level(r);
}

static void chain_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct ds_read *r = arg;
    struct level *l = &r->lv[r->n_lv - 1];
    l->st = st;
    l->state_seq = seq;
    if (status != 200 || st == NULL) {
        read_finish(r, status != 200 ? 503 : 500);
        return;
    }
    chain_next(r);
}

static void top_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct ds_read *r = arg;
    r->page.st = st;
    r->page.state_seq = seq;
    if (status != 200) {
        read_finish(r, 503);
        return;
    }
    if (!ds_state_live(st)) {
        read_finish(r, 404);
        return;
    }
    ds_entry_track(r->ds, r->lv[0].channel, st, false);
    if (st->soft_deleted || ds_expired(r->ds, r->lv[0].channel, st)) {
        read_finish(r, st->soft_deleted || st->n_fork_refs ? 410 : 404);
        return;
    }
    if (r->from == DS_OFFSET_NOW)
        r->from = st->tail;
    else if (r->from == DS_OFFSET_START)
        r->from = 0;
    else if (r->from > st->tail) {
        read_finish(r, 400);
        return;
    }
    r->lv[0].st = st;
    r->lv[0].state_seq = seq;
    r->lv[0].hi = st->tail;
    chain_next(r);
}

int ds_read(struct spool_ds *ds, const char *name, uint64_t from, ds_read_cb cb, void *arg)
{
    struct ds_read *r = calloc(1, sizeof *r);
    if (r == NULL || (r->lv[0].channel = strdup(name)) == NULL) {
        free(r);
        return SPOOL_ENOMEM;
    }
    r->ds = ds;
    r->cb = cb;
    r->arg = arg;
    r->from = from;
    r->n_lv = 1;
    int rc = ds_state_load(ds, name, top_state_cb, r);
    if (rc != 0) {
        free(r->lv[0].channel);
        free(r);
    }
    return rc;
}

char *ds_page_body(const struct ds_page *p, size_t from_i, size_t to_i, bool json, size_t *len)
{
    size_t total = 2;
    for (size_t i = from_i; i < to_i; i++)
        total += p->recs[i]->data.len + 1;
    char *b = malloc(total + 1);
    if (b == NULL)
        return NULL;
    size_t w = 0;
    if (json)
        b[w++] = '[';
    for (size_t i = from_i; i < to_i; i++) {
        if (json && i > from_i)
            b[w++] = ',';
        if (p->recs[i]->data.len > 0)
            memcpy(b + w, p->recs[i]->data.data, p->recs[i]->data.len);
        w += p->recs[i]->data.len;
    }
    if (json)
        b[w++] = ']';
    b[w] = '\0';
    *len = w;
    return b;
}

/* --- GET / HEAD --------------------------------------------------------------------------- */

struct get {
    struct spool_ds *ds;
    struct spool_http_req *req;
    char *name;
    bool now;
};

static void get_free(struct get *g)
{
    free(g->name);
    free(g);
}

static const char *status_msg(int status)
{
    return status == 404 ? "stream not found" : status == 410 ? "stream deleted"
           : status == 400 ? "offset beyond the tail" : "read failed";
}

static void get_read_cb(void *arg, int status, struct ds_page *pg)
{
    struct get *g = arg;
    if (status != 200) {
        ds_fail(g->req, status, status_msg(status));
        get_free(g);
        return;
    }
    const Spool__StreamState *st = pg->st;
    ds_entry_track(g->ds, g->name, st, true);
    bool json = ds_is_json(st->content_type);
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    ds_hdr(&h, "Content-Type", st->content_type);
    ds_hdr_offset(&h, "Stream-Next-Offset", pg->next);
    bool closed = st->closed && pg->up_to_date;
    if (pg->up_to_date)
        ds_hdr(&h, "Stream-Up-To-Date", "true");
    if (closed)
        ds_hdr(&h, "Stream-Closed", "true");
    if (g->now) {
        ds_hdr(&h, "Cache-Control", "no-store");
        spool_http_respond(g->req, 200, h.h, h.n, json ? "[]" : "", json ? 2 : 0);
        get_free(g);
        return;
    }
    char etag[128];
    snprintf(etag, sizeof etag, "\"%" PRIu64 ":%" PRIu64 ":%" PRIu64 "%s\"", st->base_seq,
             pg->from, pg->next, closed ? ":c" : "");
    ds_hdr(&h, "ETag", etag);
    const char *inm = spool_http_req_header(g->req, "If-None-Match");
    if (inm != NULL && strcmp(inm, etag) == 0) {
        spool_http_respond(g->req, 304, h.h, h.n, NULL, 0);
        get_free(g);
        return;
    }
    ds_hdr(&h, "Cache-Control", "public, max-age=60, stale-while-revalidate=300");
    size_t len;
    char *body = ds_page_body(pg, 0, pg->n, json, &len);
    if (body == NULL) {
        ds_fail(g->req, 503, "out of memory");
    } else {
        spool_http_respond_owned(g->req, 200, h.h, h.n, body, len);
    }
    get_free(g);
}

static void head_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct get *g = arg;
    if (status != 200) {
        ds_fail(g->req, 503, "cannot load the stream");
    } else if (!ds_state_live(st)) {
        ds_fail(g->req, 404, "stream not found");
    } else {
        ds_entry_track(g->ds, g->name, st, false);
        if (st->soft_deleted || ds_expired(g->ds, g->name, st)) {
            ds_fail(g->req, st->soft_deleted || st->n_fork_refs ? 410 : 404, "stream not found");
        } else {
            struct ds_hdrs h;
            ds_hdrs_init(&h);
            ds_hdr(&h, "Content-Type", st->content_type);
            ds_hdr_offset(&h, "Stream-Next-Offset", st->tail);
            ds_hdr(&h, "Cache-Control", "no-store");
            if (st->closed)
                ds_hdr(&h, "Stream-Closed", "true");
            if (st->has_ttl)
                ds_hdr_u64(&h, "Stream-TTL", st->ttl_s);
            if (st->expires_at != NULL && st->expires_at[0] != '\0')
                ds_hdr(&h, "Stream-Expires-At", st->expires_at);
            spool_http_respond(g->req, 200, h.h, h.n, NULL, 0);
        }
    }
    if (st)
        spool__stream_state__free_unpacked(st, NULL);
    get_free(g);
}

void ds_handle_get(struct spool_ds *ds, struct spool_http_req *req, const char *name, bool head)
{
    struct get *g = calloc(1, sizeof *g);
    if (g == NULL || (g->name = strdup(name)) == NULL) {
        free(g);
        ds_fail(req, 503, "out of memory");
        return;
    }
    g->ds = ds;
    g->req = req;
    if (head) {
        if (ds_state_load(ds, name, head_state_cb, g) != 0) {
            ds_fail(req, 503, "cannot load the stream");
            get_free(g);
        }
        return;
    }
    char off[64];
    long n = spool_http_query_get(req->query, "offset", off, sizeof off);
    uint64_t from = DS_OFFSET_START;
    if (n == -2 || (n >= 0 && ds_parse_offset(off, &from) != 0)) {
        ds_fail(req, 400, "malformed offset");
        get_free(g);
        return;
    }
    g->now = from == DS_OFFSET_NOW;
    if (ds_read(ds, name, from, get_read_cb, g) != 0) {
        ds_fail(req, 503, "cannot read");
        get_free(g);
    }
}
