/*
 * Durable Streams live reads: long-poll (live=long-poll) and Server-Sent Events (live=sse).
 *
 * Both join history and live data the way cluster/node.h prescribes: subscribe to the channel
 * first, then read from the offset (ds_read, fork chains included); live records arriving
 * meanwhile are buffered and replayed once the read has caught up, dropping those with a seq
 * the read already covered (seq <= the state record it read up to). Every command stores its
 * data records followed by a "ds.state" record, so a live state record marks the end of one
 * command's data: that is when data is delivered (an append-and-close arrives as data + closed
 * state together, never closed without its data).
 *
 * Long-poll: data after the offset -> 200 at once; at the tail of a closed stream -> 204 with
 * Stream-Closed; else wait up to --long-poll-timeout for the next command's data (200) or close
 * (204), or time out (204). SSE: catch up page by page, each page one data event followed by one
 * control event, then live, a keep-alive control every --long-poll-timeout, a final control with
 * streamClosed when the stream closes, and the response ends after SSE_MAX_MS so intermediaries
 * can collapse reconnections.
 */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/durable_streams_int.h"

#define SSE_MAX_MS 60000

struct live;
static void page_cb(void *arg, int status, struct ds_page *pg);

struct piece {
    uint8_t *data;
    size_t len;
    uint64_t seq;
    bool state; /* a "ds.state" record (buffered before catch-up) */
};

struct live {
    struct ds_live reg;
    struct spool_ds *ds;
    struct spool_http_req *req;
    char *name;
    char *cursor_in;
    bool sse, started, finished, caught_up;
    bool reading;     /* freed once both timers closed and no read is in flight */
    int handles_open; /* timer, flush */
    uv_timer_t flush; /* delivers natively published records (no state record follows them) */
    struct spool_sub *sub;
    uv_timer_t timer;
    Spool__StreamState *st;
    uint64_t seen_seq; /* records up to here are covered */
    uint64_t next;     /* the offset delivered so far */
    struct piece *buf; /* before catch-up: every record; after: data waiting for its state */
    size_t n, cap;
    int64_t started_ms;
};

static void pieces_clear(struct live *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->buf[i].data);
    l->n = 0;
}

static int piece_add(struct live *l, const void *data, size_t len, uint64_t seq, bool state)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct piece *b = realloc(l->buf, cap * sizeof *b);
        if (b == NULL)
            return -1;
        l->buf = b;
        l->cap = cap;
    }
    struct piece *p = &l->buf[l->n];
    p->data = malloc(len ? len : 1);
    if (p->data == NULL)
        return -1;
    if (len)
        memcpy(p->data, data, len);
    p->len = len;
    p->seq = seq;
    p->state = state;
    l->n++;
    return 0;
}

static void live_free(struct live *l)
{
    if (l->handles_open > 0 || l->reading)
        return;
    pieces_clear(l);
    free(l->buf);
    if (l->st)
        spool__stream_state__free_unpacked(l->st, NULL);
    free(l->name);
    free(l->cursor_in);
    free(l);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct live *l = h->data;
    l->handles_open--;
    live_free(l);
}

static int live_read(struct live *l, uint64_t from)
{
    l->reading = true;
    int rc = ds_read(l->ds, l->name, from, page_cb, l);
    if (rc != 0)
        l->reading = false;
    return rc;
}

/* After the completion call: drop the subscription and the timer, free once the timer closed. */
static void live_release(struct live *l)
{
    if (l->sub != NULL) {
        spool_node_unsubscribe(l->sub);
        l->sub = NULL;
    }
    ds_live_del(l->ds, &l->reg);
    uv_timer_stop(&l->timer);
    uv_timer_stop(&l->flush);
    uv_close((uv_handle_t *)&l->timer, timer_closed_cb);
    uv_close((uv_handle_t *)&l->flush, timer_closed_cb);
}

/* --- responses ---------------------------------------------------------------------------- */

static void base_headers(struct live *l, struct ds_hdrs *h)
{
    ds_hdrs_init(h);
    if (l->st != NULL)
        ds_hdr(h, "Content-Type", l->st->content_type);
}

static void lp_respond(struct live *l, int status, const char *body, size_t len, bool closed)
{
    struct ds_hdrs h;
    char cur[24];
    base_headers(l, &h);
    ds_hdr_offset(&h, "Stream-Next-Offset", l->next);
    ds_hdr(&h, "Stream-Up-To-Date", "true");
    ds_hdr(&h, "Stream-Cursor", ds_cursor(cur, l->cursor_in));
    if (closed)
        ds_hdr(&h, "Stream-Closed", "true");
    ds_hdr(&h, "Cache-Control", status == 204 ? "no-store" : "public, max-age=60, stale-while-revalidate=300");
    spool_http_respond(l->req, status, h.h, h.n, body, len);
    l->finished = true;
    live_release(l);
}

static void sse_end(struct live *l)
{
    spool_http_stream_end(l->req);
    l->finished = true;
    live_release(l);
}

struct out {
    char *p;
    size_t len, cap;
    bool oom;
};

static void out_put(struct out *o, const void *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    if (n > 0)
        memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s) { out_put(o, s, strlen(s)); }

/* The pieces' bytes in one malloc'd buffer (one spare byte), *total of them; NULL if out of
 * memory. */
static uint8_t *pieces_join(const struct piece *pcs, size_t n, size_t *total)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += pcs[i].len;
    uint8_t *all = malloc(t + 1);
    if (all == NULL)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (pcs[i].len > 0)
            memcpy(all + w, pcs[i].data, pcs[i].len);
        w += pcs[i].len;
    }
    *total = t;
    return all;
}

/* One data event (when n > 0) and its control event, written at once. */
static int sse_emit(struct live *l, const struct piece *pcs, size_t n, bool up_to_date, bool closed)
{
    struct out o = {0};
    const char *ct = l->st->content_type;
    if (n > 0) {
        out_str(&o, "event: data\n");
        if (ds_is_json(ct)) {
            out_str(&o, "data:[");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    out_str(&o, ",");
                out_put(&o, pcs[i].data, pcs[i].len);
            }
            out_str(&o, "]\n");
        } else if (ds_is_text(ct)) {
            size_t total;
            char *all = (char *)pieces_join(pcs, n, &total);
            if (all == NULL) {
                free(o.p);
                return -1;
            }
            size_t start = 0;
            for (size_t i = 0; i <= total; i++) {
                if (i == total || all[i] == '\r' || all[i] == '\n') {
                    out_str(&o, "data:");
                    out_put(&o, all + start, i - start);
                    out_str(&o, "\n");
                    if (i < total && all[i] == '\r' && i + 1 < total && all[i + 1] == '\n')
                        i++;
                    start = i + 1;
                }
            }
            free(all);
        } else {
            size_t total;
            uint8_t *all = pieces_join(pcs, n, &total);
            char *b64 = all != NULL ? malloc(4 * ((total + 2) / 3) + 1) : NULL;
            if (b64 == NULL) {
                free(all);
                free(o.p);
                return -1;
            }
            int bl = EVP_EncodeBlock((unsigned char *)b64, all, (int)total);
            out_str(&o, "data:");
            out_put(&o, b64, bl > 0 ? (size_t)bl : 0);
            out_str(&o, "\n");
            free(all);
            free(b64);
        }
        out_str(&o, "\n");
    }
    char off[DS_OFFSET_LEN], cur[24], ctl[256];
    ds_format_offset(off, l->next);
    if (closed)
        snprintf(ctl, sizeof ctl,
                 "event: control\ndata:{\"streamNextOffset\":\"%s\",\"upToDate\":true,"
                 "\"streamClosed\":true}\n\n", off);
    else
        snprintf(ctl, sizeof ctl,
                 "event: control\ndata:{\"streamNextOffset\":\"%s\",\"streamCursor\":\"%s\"%s}\n\n",
                 off, ds_cursor(cur, l->cursor_in), up_to_date ? ",\"upToDate\":true" : "");
    out_str(&o, ctl);
    int rc = o.oom ? -1 : spool_http_stream_write(l->req, o.p, o.len);
    free(o.p);
    return rc;
}

/* --- live records ------------------------------------------------------------------------- */

/* Delivers the pending data (if any) of the current state; closed/gone end the response. */
static void deliver(struct live *l, bool closed, bool gone)
{
    const Spool__StreamState *st = l->st;
    size_t n = l->n;
    uv_timer_stop(&l->flush);
    if (n > 0 && !gone)
        l->next = spool_streams_l_of(st, l->buf[n - 1].seq);
    if (!l->sse) {
        if (n > 0 && !gone) {
            size_t total = 2;
            for (size_t i = 0; i < n; i++)
                total += l->buf[i].len + 1;
            char *b = malloc(total);
            if (b == NULL) {
                lp_respond(l, 503, NULL, 0, false);
                return;
            }
            bool json = ds_is_json(st->content_type);
            size_t w = 0;
            if (json)
                b[w++] = '[';
            for (size_t i = 0; i < n; i++) {
                if (json && i)
                    b[w++] = ',';
                if (l->buf[i].len > 0)
                    memcpy(b + w, l->buf[i].data, l->buf[i].len);
                w += l->buf[i].len;
            }
            if (json)
                b[w++] = ']';
            lp_respond(l, 200, b, w, closed);
            free(b);
        } else if (closed || gone) {
            lp_respond(l, 204, NULL, 0, closed && !gone);
        }
        return;
    }
    if (gone) {
        sse_end(l);
        return;
    }
    if (n > 0 || closed) {
        int rc = sse_emit(l, l->buf, n, true, closed);
        pieces_clear(l);
        if (rc != 0 || closed)
            sse_end(l);
    }
}

static void on_state(struct live *l, const uint8_t *data, size_t len, uint64_t seq)
{
    Spool__StreamState *st = spool__stream_state__unpack(NULL, len, data);
    if (st == NULL)
        return;
    bool same = l->st == NULL || st->base_seq == l->st->base_seq;
    if (l->st)
        spool__stream_state__free_unpacked(l->st, NULL);
    l->st = st;
    deliver(l, st->closed, !same || st->deleted || st->soft_deleted);
}

static void flush_cb(uv_timer_t *t)
{
    struct live *l = t->data;
    if (!l->finished && l->st != NULL && l->n > 0)
        deliver(l, false, false);
}

static void on_live(struct live *l, const uint8_t *data, size_t len, uint64_t seq, bool state)
{
    if (l->finished || seq <= l->seen_seq)
        return;
    l->seen_seq = seq;
    if (state) {
        on_state(l, data, len, seq);
        return;
    }
    if (piece_add(l, data, len, seq, false) != 0) {
        if (!l->sse)
            lp_respond(l, 503, NULL, 0, false);
        return;
    }
    /* a Durable Streams command's state record follows its data in the same delivery; a native
     * publish has none: deliver it on the next loop turn */
    uv_timer_start(&l->flush, flush_cb, 0, 0);
}

static void record_cb(void *arg, const Spool__Record *rec)
{
    struct live *l = arg;
    if (l->finished)
        return;
    bool state = spool_streams_is_state(rec);
    if (!state && rec->action == SPOOL__ACTION__ACTION_CHANNEL_META)
        return;
    if (!l->caught_up) {
        piece_add(l, rec->data.data, rec->data.len, rec->seq, state);
        return;
    }
    on_live(l, rec->data.data, rec->data.len, rec->seq, state);
}

/* Caught up at seen_seq: replay what arrived meanwhile. */
static void replay(struct live *l)
{
    struct piece *b = l->buf;
    size_t n = l->n;
    l->buf = NULL;
    l->n = l->cap = 0;
    l->caught_up = true;
    for (size_t i = 0; i < n; i++) {
        if (!l->finished)
            on_live(l, b[i].data, b[i].len, b[i].seq, b[i].state);
        free(b[i].data);
    }
    free(b);
}

static void timer_cb(uv_timer_t *t)
{
    struct live *l = t->data;
    if (l->finished)
        return;
    if (!l->sse) {
        lp_respond(l, 204, NULL, 0, false);
        return;
    }
    if (ds_now_ms() - l->started_ms >= SSE_MAX_MS || sse_emit(l, NULL, 0, true, false) != 0) {
        sse_end(l);
        return;
    }
    ds_entry_track(l->ds, l->name, l->st, true);
}

static void close_cb(void *arg, struct spool_http_req *req, int reason)
{
    struct live *l = arg;
    if (l->finished)
        return;
    if (l->sse && l->started)
        sse_end(l);
    else if (l->sse)
        ds_fail(l->req, 503, "closing"), l->finished = true, live_release(l);
    else
        lp_respond(l, 204, NULL, 0, false);
}

static void stop_cb(struct ds_live *reg)
{
    struct live *l = (struct live *)reg;
    close_cb(l, l->req, SPOOL_HTTP_CLOSE_SHUTDOWN);
}

static void page_cb(void *arg, int status, struct ds_page *pg)
{
    struct live *l = arg;
    l->reading = false;
    if (l->finished) { /* the client went away meanwhile; the completion call was made */
        live_free(l);
        return;
    }
    if (status != 200) {
        if (l->started) {
            sse_end(l);
        } else {
            ds_fail(l->req, status, status == 404 ? "stream not found"
                                    : status == 410 ? "stream deleted" : "read failed");
            l->finished = true;
            live_release(l);
        }
        return;
    }
    ds_entry_track(l->ds, l->name, pg->st, true);
    if (l->st)
        spool__stream_state__free_unpacked(l->st, NULL);
    l->st = pg->st;
    pg->st = NULL; /* ours now */
    l->next = pg->next;
    bool closed = l->st->closed && pg->up_to_date;
    if (!l->sse) {
        if (pg->n > 0) {
            size_t len;
            char *b = ds_page_body(pg, 0, pg->n, ds_is_json(l->st->content_type), &len);
            struct ds_hdrs h;
            char cur[24];
            base_headers(l, &h);
            ds_hdr_offset(&h, "Stream-Next-Offset", l->next);
            if (pg->up_to_date)
                ds_hdr(&h, "Stream-Up-To-Date", "true");
            if (closed)
                ds_hdr(&h, "Stream-Closed", "true");
            ds_hdr(&h, "Stream-Cursor", ds_cursor(cur, l->cursor_in));
            ds_hdr(&h, "Cache-Control", "public, max-age=60, stale-while-revalidate=300");
            if (b == NULL)
                spool_http_respond(l->req, 503, h.h, h.n, NULL, 0);
            else
                spool_http_respond_owned(l->req, 200, h.h, h.n, b, len);
            l->finished = true;
            live_release(l);
            return;
        }
        if (closed) {
            lp_respond(l, 204, NULL, 0, true);
            return;
        }
    } else {
        if (!l->started) {
            struct ds_hdrs h;
            ds_hdrs_init(&h);
            ds_hdr(&h, "Content-Type", "text/event-stream");
            ds_hdr(&h, "Cache-Control", "no-cache");
            if (!ds_is_text(l->st->content_type))
                ds_hdr(&h, "Stream-SSE-Data-Encoding", "base64");
            if (spool_http_stream_start(l->req, 200, h.h, h.n) != 0) {
                sse_end(l);
                return;
            }
            l->started = true;
        }
        struct piece *pcs = pg->n ? calloc(pg->n, sizeof *pcs) : NULL;
        for (size_t i = 0; pcs != NULL && i < pg->n; i++) {
            pcs[i].data = pg->recs[i]->data.data;
            pcs[i].len = pg->recs[i]->data.len;
        }
        int rc = (pg->n > 0 && pcs == NULL) ? -1 : sse_emit(l, pcs, pg->n, pg->up_to_date, closed);
        free(pcs);
        if (rc != 0 || closed) {
            sse_end(l);
            return;
        }
        if (!pg->up_to_date) {
            if (live_read(l, l->next) != 0)
                sse_end(l);
            return;
        }
    }
    l->seen_seq = pg->state_seq;
    uint64_t every = l->ds->opts->long_poll_timeout_ms ? l->ds->opts->long_poll_timeout_ms : 30000;
    uv_timer_start(&l->timer, timer_cb, every, l->sse ? every : 0);
    replay(l);
}

static void live_start(struct spool_ds *ds, struct spool_http_req *req, const char *name,
                       uint64_t from, const char *cursor, bool sse)
{
    struct live *l = calloc(1, sizeof *l);
    if (l == NULL || (l->name = strdup(name)) == NULL ||
        (cursor != NULL && (l->cursor_in = strdup(cursor)) == NULL)) {
        if (l)
            free(l->name);
        free(l);
        ds_fail(req, 503, "out of memory");
        return;
    }
    l->ds = ds;
    l->req = req;
    l->sse = sse;
    l->started_ms = ds_now_ms();
    l->reg.stop = stop_cb;
    uv_timer_init(ds->loop, &l->timer);
    uv_timer_init(ds->loop, &l->flush);
    l->timer.data = l;
    l->flush.data = l;
    l->handles_open = 2;
    ds_live_add(ds, &l->reg);
    spool_http_req_on_close(req, close_cb, l);
    if (spool_node_subscribe(ds->node, name, record_cb, l, &l->sub) != 0 ||
        live_read(l, from) != 0) {
        ds_fail(req, 503, "cannot follow the stream");
        l->finished = true;
        live_release(l);
    }
}

void ds_handle_longpoll(struct spool_ds *ds, struct spool_http_req *req, const char *name,
                        uint64_t from, const char *cursor)
{
    live_start(ds, req, name, from, cursor, false);
}

void ds_handle_sse(struct spool_ds *ds, struct spool_http_req *req, const char *name,
                   uint64_t from, const char *cursor)
{
    live_start(ds, req, name, from, cursor, true);
}
