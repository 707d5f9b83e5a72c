/*
 * Durable Streams writes: PUT (create, idempotent re-create, fork), POST (append, close,
 * idempotent producers, Stream-Seq) and DELETE.
 *
 * The gateway only does the checks that need no state (header syntax, JSON parsing and
 * flattening, empty bodies); every check against the stream's state happens in the shard state
 * machine when the command applies (cluster/streams.h), atomically with the data. A fork is
 * orchestrated here because source and fork are different channels (usually different shards):
 * FORK_ACQUIRE on the source (existence, type, offset range, reference), the sub-offset prefix
 * read from the source, then CREATE on the fork (released again if that fails).
 */
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "gateway/durable_streams_int.h"
#include "gateway/http_path.h"

#define MAX_SAFE_INT 9007199254740991ULL

/* --- small parsers ------------------------------------------------------------------------ */

static bool parse_decimal(const char *s, bool no_leading_zero, uint64_t max, uint64_t *out)
{
    if (s == NULL || s[0] == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return false;
    if (no_leading_zero && s[0] == '0' && s[1] != '\0')
        return false;
    uint64_t v = strtoull(s, NULL, 10);
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* RFC 3339 timestamp -> ms since the epoch. */
static bool parse_rfc3339(const char *s, int64_t *ms)
{
    if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) ||
        s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
        return false;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return false;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0, scale = 100;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                frac += (*p - '0') * scale;
            scale /= 10;
            p++;
            n++;
        }
        if (n == 0)
            return false;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2)) {
        off = (atoi(p + 1) * 60 + atoi(p + 4)) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    *ms = ((int64_t)timegm(&tm) - off) * 1000 + frac;
    return true;
}

static bool closed_header(struct spool_http_req *req)
{
    const char *v = spool_http_req_header(req, "Stream-Closed");
    return v != NULL && strcasecmp(v, "true") == 0;
}

/* The request's media type, or NULL when missing or not type/subtype. */
static const char *content_type(struct spool_http_req *req)
{
    const char *ct = spool_http_req_header(req, "Content-Type");
    if (ct == NULL)
        return NULL;
    size_t i = 0;
    while (isalnum((unsigned char)ct[i]) || ct[i] == '_' || ct[i] == '-' || ct[i] == '.' ||
           ct[i] == '+')
        i++;
    if (i == 0 || ct[i] != '/')
        return NULL;
    return ct;
}

/* --- data records ------------------------------------------------------------------------- */

struct records {
    Spool__Record **v;
    size_t n;
};

static void records_free(struct records *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i]->data.data);
        free(r->v[i]->extras.data);
        free(r->v[i]);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static int records_add(struct records *r, const char *ct, const void *data, size_t len)
{
    Spool__Record **v = realloc(r->v, (r->n + 1) * sizeof *v);
    if (v == NULL)
        return -1;
    r->v = v;
    Spool__Record *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -1;
    spool__record__init(m);
    m->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    m->content_type = (char *)ct;
    m->data.data = malloc(len ? len : 1);
    if (m->data.data == NULL) {
        free(m);
        return -1;
    }
    if (len)
        memcpy(m->data.data, data, len);
    m->data.len = len;
    r->v[r->n++] = m;
    return 0;
}

/* Body -> records: one per flattened JSON value (JSON streams), else the body as one record.
 * Returns 0, or 400 for invalid JSON / an empty array (when !allow_empty). */
static int body_records(const char *body, size_t len, const char *ct, bool json, bool allow_empty,
                        struct records *out)
{
    if (len == 0)
        return 0;
    if (!json)
        return records_add(out, ct, body, len) == 0 ? 0 : 503;
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (v == NULL)
        return 400;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (n == 0) {
        json_decref(v);
        return allow_empty ? 0 : 400;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *el = json_is_array(v) ? json_array_get(v, i) : v;
        char *s = json_dumps(el, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        if (s == NULL || records_add(out, ct, s, strlen(s)) != 0) {
            rc = 503;
        } else if (n > 1) {
            char ex[64];
            int l = snprintf(ex, sizeof ex, "{\"ds_batch\":[%zu,%zu]}", i, n);
            Spool__Record *m = out->v[out->n - 1];
            m->extras.data = malloc((size_t)l);
            if (m->extras.data != NULL) {
                memcpy(m->extras.data, ex, (size_t)l);
                m->extras.len = (size_t)l;
            }
        }
        free(s);
    }
    json_decref(v);
    return rc;
}

/* --- PUT ---------------------------------------------------------------------------------- */

struct put {
    struct spool_ds *ds;
    struct spool_http_req *req;
    char *name, *source;
    char *ct;          /* requested type (NULL = default / inherit) */
    bool has_ttl;
    uint64_t ttl_s;
    int64_t expires_ms;
    const char *expires_raw;
    bool closed;
    bool has_fork_offset;
    uint64_t fork_offset;
    uint64_t sub_offset;
    uint64_t fork_l;   /* resolved by FORK_ACQUIRE */
    Spool__StreamState *src; /* the source's state (forks) */
    struct records recs;
    bool acquired;
};

static void put_free(struct put *p)
{
    if (p->src)
        spool__stream_state__free_unpacked(p->src, NULL);
    records_free(&p->recs);
    free(p->name);
    free(p->source);
    free(p->ct);
    free(p);
}

static void put_release(struct put *p)
{
    if (p->acquired)
        ds_release(p->ds, p->source, p->name);
    p->acquired = false;
}

static void put_fail(struct put *p, int status, const char *msg)
{
    put_release(p);
    ds_fail(p->req, status, msg);
    put_free(p);
}

static void put_created_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct put *p = arg;
    if (status != 0 || (res->status != 201 && res->status != 200)) {
        put_fail(p, status != 0 ? 503 : res->status,
                 res->status == 409 ? "stream exists with a different configuration"
                                    : "create failed");
        return;
    }
    if (res->status == 200) /* raced with an identical create: not our reference */
        put_release(p);
    if (res->status == 201 && p->recs.n > 0)
        ds_subs_on_append(p->ds, p->name, res->tail);
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    ds_hdr(&h, "Content-Type", p->ct ? p->ct : "application/octet-stream");
    ds_hdr_offset(&h, "Stream-Next-Offset", res->tail);
    if (res->closed)
        ds_hdr(&h, "Stream-Closed", "true");
    if (res->status == 201) {
        char loc[DS_NAME_MAX * 3 + 300];
        const char *host = spool_http_req_header(p->req, "Host");
        snprintf(loc, sizeof loc, "http://%s%s", host ? host : "localhost", p->req->path);
        ds_hdr(&h, "Location", loc);
        Spool__StreamState st;
        spool__stream_state__init(&st);
        st.base_seq = res->extra;
        st.has_ttl = p->has_ttl;
        st.ttl_s = p->ttl_s;
        st.expires_at_ms = p->expires_ms;
        st.fork_source = p->source;
        ds_entry_track(p->ds, p->name, &st, true);
    }
    spool_http_respond(p->req, res->status, h.h, h.n, NULL, 0);
    put_free(p);
}

static void put_create(struct put *p, bool fork_offset_given)
{
    Spool__StreamState cfg;
    spool__stream_state__init(&cfg);
    cfg.content_type = p->ct ? p->ct : "application/octet-stream";
    cfg.has_ttl = p->has_ttl;
    cfg.ttl_s = p->ttl_s;
    cfg.expires_at_ms = p->expires_ms;
    cfg.expires_at = (char *)(p->expires_raw ? p->expires_raw : "");
    cfg.closed = p->closed;
    if (p->source != NULL) {
        cfg.fork_source = p->source;
        cfg.origin = p->fork_l;
        cfg.fork_sub_offset = p->sub_offset;
    }
    Spool__StreamCommand cmd;
    spool__stream_command__init(&cmd);
    cmd.op = SPOOL__STREAM_OP__STREAM_OP_CREATE;
    cmd.create = &cfg;
    cmd.fork_offset_given = fork_offset_given;
    cmd.incarnation = ds_entry_ttl_expired(p->ds, p->name);
    cmd.ttl_expired = cmd.incarnation != 0;
    if (ds_command(p->ds, p->name, &cmd, p->recs.v, p->recs.n, put_created_cb, p) != 0)
        put_fail(p, 503, "cannot propose");
}

/* Sub-offset prefix: the first append of the source after the fork point. */
static void put_prefix_cb(void *arg, int status, struct ds_page *pg)
{
    struct put *p = arg;
    if (status != 200) {
        put_fail(p, status == 404 ? 404 : 400, "cannot read the fork source");
        return;
    }
    if (pg->n == 0) {
        put_fail(p, 400, "no append after the fork offset");
        return;
    }
    bool json = ds_is_json(p->ct);
    struct records pre = {0};
    int rc = 0;
    if (!json) {
        const Spool__Record *r = pg->recs[0];
        if (p->sub_offset > r->data.len) {
            put_fail(p, 400, "sub-offset beyond the append");
            return;
        }
        rc = records_add(&pre, p->ct, r->data.data, (size_t)p->sub_offset);
    } else {
        size_t count = 1;
        const Spool__Record *r = pg->recs[0];
        if (r->extras.len > 0) {
            size_t i = 0, n = 0;
            char ex[64];
            size_t l = r->extras.len < sizeof ex - 1 ? r->extras.len : sizeof ex - 1;
            memcpy(ex, r->extras.data, l);
            ex[l] = '\0';
            if (sscanf(ex, "{\"ds_batch\":[%zu,%zu]}", &i, &n) == 2 && i == 0 && n > 1)
                count = n;
        }
        if (count > pg->n)
            count = pg->n;
        if (p->sub_offset > count) {
            put_fail(p, 400, "sub-offset beyond the append");
            return;
        }
        for (size_t i = 0; i < p->sub_offset && rc == 0; i++)
            rc = records_add(&pre, p->ct, pg->recs[i]->data.data, pg->recs[i]->data.len);
    }
    if (rc != 0) {
        records_free(&pre);
        put_fail(p, 503, "out of memory");
        return;
    }
    /* prefix first, then the PUT body */
    Spool__Record **v = realloc(pre.v, (pre.n + p->recs.n + 1) * sizeof *v);
    if (v == NULL) {
        records_free(&pre);
        put_fail(p, 503, "out of memory");
        return;
    }
    if (p->recs.n * sizeof *v > 0)
        memcpy(v + pre.n, p->recs.v, p->recs.n * sizeof *v);
    free(p->recs.v);
    p->recs.v = v;
    p->recs.n += pre.n;
    put_create(p, p->has_fork_offset);
}

static void put_acquired_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct put *p = arg;
    if (status != 0 || res->status != 200) {
        put_fail(p, status != 0 ? 503 : res->status, "cannot fork the source");
        return;
    }
    p->acquired = true;
    p->fork_l = res->tail;
    if (p->sub_offset > 0) {
        if (ds_read(p->ds, p->source, p->fork_l, put_prefix_cb, p) != 0)
            put_fail(p, 503, "cannot read the fork source");
        return;
    }
    put_create(p, p->has_fork_offset);
}

static void put_source_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct put *p = arg;
    p->src = st;
    if (status != 200) {
        put_fail(p, 503, "cannot load the fork source");
        return;
    }
    if (!ds_state_live(st)) {
        put_fail(p, 404, "fork source not found");
        return;
    }
    if (st->soft_deleted) {
        put_fail(p, 409, "fork source is deleted");
        return;
    }
    if (ds_expired(p->ds, p->source, st)) {
        put_fail(p, st->n_fork_refs ? 409 : 404, "fork source expired");
        return;
    }
    if (p->ct == NULL && (p->ct = strdup(st->content_type)) == NULL) {
        put_fail(p, 503, "out of memory");
        return;
    }
    if (!p->has_ttl && p->expires_ms == 0) { /* inherit the source's lifetime */
        p->has_ttl = st->has_ttl;
        p->ttl_s = st->ttl_s;
        p->expires_ms = st->expires_at_ms;
    }
    bool json = ds_is_json(p->ct);
    int rc = body_records(p->req->body, p->req->body_len, p->ct, json, true, &p->recs);
    if (rc != 0) {
        put_fail(p, rc, "invalid JSON body");
        return;
    }
    Spool__StreamCommand cmd;
    spool__stream_command__init(&cmd);
    cmd.op = SPOOL__STREAM_OP__STREAM_OP_FORK_ACQUIRE;
    cmd.fork_name = p->name;
    cmd.content_type = p->ct;
    cmd.has_fork_offset = p->has_fork_offset;
    cmd.fork_offset = p->fork_offset;
    if (ds_command(p->ds, p->source, &cmd, NULL, 0, put_acquired_cb, p) != 0)
        put_fail(p, 503, "cannot propose");
}

/* Fork target: an existing stream at the path answers the idempotency comparison. */
static void put_target_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct put *p = arg;
    if (status != 200) {
        put_fail(p, 503, "cannot load the stream");
        if (st)
            spool__stream_state__free_unpacked(st, NULL);
        return;
    }
    bool exists = ds_state_live(st) && (st->soft_deleted || !ds_expired(p->ds, p->name, st));
    if (exists) {
        if (p->ct == NULL)
            p->ct = strdup(st->content_type);
        if (!p->has_ttl && p->expires_ms == 0) {
            p->has_ttl = st->has_ttl;
            p->ttl_s = st->ttl_s;
            p->expires_ms = st->expires_at_ms;
        }
        p->fork_l = p->has_fork_offset ? p->fork_offset : st->origin;
        spool__stream_state__free_unpacked(st, NULL);
        put_create(p, p->has_fork_offset);
        return;
    }
    if (st)
        spool__stream_state__free_unpacked(st, NULL);
    if (ds_state_load(p->ds, p->source, put_source_cb, p) != 0)
        put_fail(p, 503, "cannot load the fork source");
}

void ds_handle_put(struct spool_ds *ds, struct spool_http_req *req, const char *name)
{
    const char *ttl = spool_http_req_header(req, "Stream-TTL");
    const char *exp = spool_http_req_header(req, "Stream-Expires-At");
    const char *from = spool_http_req_header(req, "Stream-Forked-From");
    const char *fo = spool_http_req_header(req, "Stream-Fork-Offset");
    const char *fso = spool_http_req_header(req, "Stream-Fork-Sub-Offset");
    struct put *p = calloc(1, sizeof *p);
    if (p == NULL || (p->name = strdup(name)) == NULL) {
        free(p);
        ds_fail(req, 503, "out of memory");
        return;
    }
    p->ds = ds;
    p->req = req;
    p->closed = closed_header(req);
    if (ttl != NULL && exp != NULL)
        return put_fail(p, 400, "Stream-TTL and Stream-Expires-At are exclusive");
    if (ttl != NULL && !parse_decimal(ttl, true, UINT32_MAX, &p->ttl_s))
        return put_fail(p, 400, "bad Stream-TTL");
    p->has_ttl = ttl != NULL;
    if (exp != NULL && !parse_rfc3339(exp, &p->expires_ms))
        return put_fail(p, 400, "bad Stream-Expires-At");
    p->expires_raw = exp;
    uint64_t l;
    if (fo != NULL && (ds_parse_offset(fo, &l) != 0 || l >= DS_OFFSET_NOW))
        return put_fail(p, 400, "bad Stream-Fork-Offset");
    if (fso != NULL && from == NULL)
        return put_fail(p, 400, "Stream-Fork-Sub-Offset needs Stream-Forked-From");
    if (fso != NULL && !parse_decimal(fso, true, MAX_SAFE_INT, &p->sub_offset))
        return put_fail(p, 400, "bad Stream-Fork-Sub-Offset");
    const char *ct = content_type(req);
    if (ct != NULL && (p->ct = strdup(ct)) == NULL)
        return put_fail(p, 503, "out of memory");
    if (from != NULL) {
        const char *s = strncmp(from, DS_PREFIX, strlen(DS_PREFIX)) == 0 ? from + strlen(DS_PREFIX)
                                                                         : from;
        char src[DS_NAME_MAX + 1];
        long n = spool_http_pct_decode(s, strlen(s), false, src, sizeof src);
        if (n <= 0)
            return put_fail(p, 400, "bad Stream-Forked-From");
        if ((p->source = strdup(src)) == NULL)
            return put_fail(p, 503, "out of memory");
        p->has_fork_offset = fo != NULL;
        p->fork_offset = fo != NULL ? l : 0;
        if (ds_state_load(ds, name, put_target_cb, p) != 0)
            put_fail(p, 503, "cannot load the stream");
        return;
    }
    int rc = body_records(req->body, req->body_len, p->ct, ds_is_json(p->ct), true, &p->recs);
    if (rc != 0)
        return put_fail(p, rc, "invalid JSON body");
    put_create(p, false);
}

/* --- POST --------------------------------------------------------------------------------- */

struct post {
    struct spool_ds *ds;
    struct spool_http_req *req;
    char *name;
    bool has_producer;
    uint64_t epoch, seq;
    struct records recs;
};

static void post_free(struct post *p)
{
    records_free(&p->recs);
    free(p->name);
    free(p);
}

static void post_done_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct post *p = arg;
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    int code = status != 0 ? 503 : res->status;
    if (code != 404 && code != 503) {
        struct ds_entry *e = ds_entry_get(p->ds, p->name, false);
        if (e != NULL && !e->swept)
            e->last_access_ms = ds_now_ms();
    }
    if ((code == 200 || (code == 204 && !(p->has_producer && res->extra != p->seq))) &&
        p->recs.n > 0)
        ds_subs_on_append(p->ds, p->name, res->tail);
    if (code == 200 || code == 204 || code == 409) {
        ds_hdr_offset(&h, "Stream-Next-Offset", res->tail);
        if (res->closed)
            ds_hdr(&h, "Stream-Closed", "true");
    }
    if (p->has_producer) {
        if (code == 200 || code == 204) {
            ds_hdr_u64(&h, "Producer-Epoch", p->epoch);
            ds_hdr_u64(&h, "Producer-Seq", res->extra);
        } else if (code == 403) {
            ds_hdr_u64(&h, "Producer-Epoch", res->extra);
        } else if (code == 409 && !res->closed) {
            ds_hdr_u64(&h, "Producer-Expected-Seq", res->extra);
            ds_hdr_u64(&h, "Producer-Received-Seq", p->seq);
        }
    }
    if (code >= 400) {
        ds_hdr(&h, "Content-Type", "text/plain; charset=utf-8");
        const char *msg = code == 404   ? "stream not found"
                          : code == 410 ? "stream deleted"
                          : code == 403 ? "stale producer epoch"
                          : code == 409 ? (res->closed ? "stream closed" : "conflict")
                                        : "append refused";
        spool_http_respond(p->req, code, h.h, h.n, msg, strlen(msg));
    } else {
        spool_http_respond(p->req, code, h.h, h.n, NULL, 0);
    }
    post_free(p);
}

void ds_handle_post(struct spool_ds *ds, struct spool_http_req *req, const char *name)
{
    const char *pid = spool_http_req_header(req, "Producer-Id");
    const char *pep = spool_http_req_header(req, "Producer-Epoch");
    const char *pseq = spool_http_req_header(req, "Producer-Seq");
    int present = (pid != NULL) + (pep != NULL) + (pseq != NULL);
    struct post *p = calloc(1, sizeof *p);
    if (p == NULL || (p->name = strdup(name)) == NULL) {
        free(p);
        ds_fail(req, 503, "out of memory");
        return;
    }
    p->ds = ds;
    p->req = req;
    const char *bad = NULL;
    bool close = closed_header(req);
    const char *ct = spool_http_req_header(req, "Content-Type");
    if (present != 0 && present != 3)
        bad = "Producer-Id, Producer-Epoch and Producer-Seq go together";
    else if (present == 3 && (pid[0] == '\0' || !parse_decimal(pep, false, MAX_SAFE_INT, &p->epoch) ||
                              !parse_decimal(pseq, false, MAX_SAFE_INT, &p->seq)))
        bad = "bad producer headers";
    else if (req->body_len == 0 && !close)
        bad = "empty body";
    else if (req->body_len > 0 && (ct == NULL || ct[0] == '\0'))
        bad = "Content-Type required";
    int rc = 0;
    if (bad == NULL && req->body_len > 0)
        rc = body_records(req->body, req->body_len, ct, ds_is_json(ct), false, &p->recs);
    if (bad != NULL || rc != 0) {
        ds_fail(req, rc ? rc : 400, bad ? bad : "invalid JSON body");
        post_free(p);
        return;
    }
    p->has_producer = present == 3;
    Spool__StreamCommand cmd;
    Spool__StreamProducer prod;
    spool__stream_command__init(&cmd);
    spool__stream_producer__init(&prod);
    cmd.op = SPOOL__STREAM_OP__STREAM_OP_APPEND;
    cmd.content_type = (char *)(req->body_len > 0 ? ct : "");
    cmd.close = close;
    if (p->has_producer) {
        prod.id = (char *)pid;
        prod.epoch = p->epoch;
        prod.seq = p->seq;
        cmd.has_producer = true;
        cmd.producer = &prod;
    }
    const char *sseq = spool_http_req_header(req, "Stream-Seq");
    if (sseq != NULL) {
        cmd.has_stream_seq = true;
        cmd.stream_seq.data = (uint8_t *)sseq;
        cmd.stream_seq.len = strlen(sseq);
    }
    cmd.incarnation = ds_entry_ttl_expired(ds, name);
    cmd.ttl_expired = cmd.incarnation != 0;
    if (ds_command(ds, name, &cmd, p->recs.v, p->recs.n, post_done_cb, p) != 0) {
        ds_fail(req, 503, "cannot propose");
        post_free(p);
    }
}

/* --- DELETE ------------------------------------------------------------------------------- */

struct del {
    struct spool_ds *ds;
    struct spool_http_req *req;
    char *name, *source;
    uint64_t base_seq; /* the incarnation the state load found (base_seq + 1) */
};

static void del_free(struct del *d)
{
    free(d->name);
    free(d->source);
    free(d);
}

static void del_done_cb(void *arg, int status, const struct spool_stream_result *res)
{
    struct del *d = arg;
    int code = status != 0 ? 503 : res->status;
    if (code == 204 && res->extra == 1 && d->source != NULL)
        ds_release(d->ds, d->source, d->name);
    if (code == 204) {
        struct ds_hdrs h;
        ds_hdrs_init(&h);
        spool_http_respond(d->req, 204, h.h, h.n, NULL, 0);
    } else {
        ds_fail(d->req, code, code == 404 ? "stream not found" : code == 410 ? "stream deleted"
                                                                             : "delete failed");
    }
    del_free(d);
}

static void del_state_cb(void *arg, int status, Spool__StreamState *st, uint64_t seq)
{
    struct del *d = arg;
    if (st != NULL && st->fork_source != NULL && st->fork_source[0] != '\0')
        d->source = strdup(st->fork_source);
    bool gone = status == 200 && (!ds_state_live(st) ||
                                  (!st->soft_deleted && ds_expired(d->ds, d->name, st)));
    d->base_seq = st ? st->base_seq + 1 : 0;
    if (st)
        spool__stream_state__free_unpacked(st, NULL);
    if (status != 200) {
        ds_fail(d->req, 503, "cannot load the stream");
        del_free(d);
        return;
    }
    Spool__StreamCommand cmd;
    spool__stream_command__init(&cmd);
    cmd.op = SPOOL__STREAM_OP__STREAM_OP_DELETE;
    cmd.incarnation = ds_entry_ttl_expired(d->ds, d->name);
    cmd.ttl_expired = gone || cmd.incarnation != 0;
    if (gone)
        cmd.incarnation = d->base_seq;
    if (ds_command(d->ds, d->name, &cmd, NULL, 0, del_done_cb, d) != 0) {
        ds_fail(d->req, 503, "cannot propose");
        del_free(d);
    }
}

void ds_handle_delete(struct spool_ds *ds, struct spool_http_req *req, const char *name)
{
    struct del *d = calloc(1, sizeof *d);
    if (d == NULL || (d->name = strdup(name)) == NULL) {
        free(d);
        ds_fail(req, 503, "out of memory");
        return;
    }
    d->ds = ds;
    d->req = req;
    if (ds_state_load(ds, name, del_state_cb, d) != 0) {
        ds_fail(req, 503, "cannot load the stream");
        del_free(d);
    }
}
