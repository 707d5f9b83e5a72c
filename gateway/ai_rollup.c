/*
 * The rollup filter (see ai_rollup.h). The pending run keeps an owned copy of its first record
 * (unpacked from its packed bytes) and grows its own data; extras are merged as JSON objects
 * (later keys win). Emitting builds a shallow record over those buffers.
 */
#include "gateway/ai_rollup.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "gateway/json_body.h"

#define ROLLUP_DEFAULT_BYTES (1u << 20)

/* The address marks rolled records (unknown_fields stays empty: n_unknown_fields is 0). */
static ProtobufCMessageUnknownField rolled_marker;

struct spool_ai_rollup {
    uint64_t max_bytes;
    Spool__Record *first; /* NULL: nothing pending */
    Spool__Action kind;
    uint64_t msg;      /* the message the run is about */
    uint64_t last_seq; /* the last record covered */
    size_t count;
    uint32_t version;
    char *content_type;
    uint8_t *data;
    size_t len, cap;
    json_t *extras; /* merged; NULL = none */
};

struct spool_ai_rollup *spool_ai_rollup_new(uint64_t max_bytes)
{
    struct spool_ai_rollup *r = calloc(1, sizeof *r);
    if (r != NULL)
        r->max_bytes = max_bytes ? max_bytes : ROLLUP_DEFAULT_BYTES;
    return r;
}

static void run_clear(struct spool_ai_rollup *r)
{
    if (r->first != NULL)
        spool__record__free_unpacked(r->first, NULL);
    r->first = NULL;
    free(r->content_type);
    r->content_type = NULL;
    json_decref(r->extras);
    r->extras = NULL;
    r->len = 0;
    r->count = 0;
}

void spool_ai_rollup_free(struct spool_ai_rollup *r)
{
    if (r == NULL)
        return;
    run_clear(r);
    free(r->data);
    free(r);
}

bool spool_ai_rollup_is_rolled(const Spool__Record *rec)
{
    return rec->base.unknown_fields == &rolled_marker;
}

uint64_t spool_ai_attach_start(const Spool__Record *tail, uint64_t start)
{
    bool streaming = tail->action == SPOOL__ACTION__ACTION_MESSAGE_APPEND ||
                     tail->action == SPOOL__ACTION__ACTION_MESSAGE_UPDATE;
    if (!streaming || tail->ref_seq == 0 || tail->ref_seq > start || tail->seq < start)
        return start;
    const char *x = (const char *)tail->extras.data;
    for (size_t i = 0; x != NULL && i + 7 <= tail->extras.len; i++) /* "final": true ends it */
        if (memcmp(x + i, "\"final\"", 7) == 0) {
            json_t *o = json_loadb(x, tail->extras.len, 0, NULL);
            bool final = json_is_true(json_object_get(o, "final"));
            json_decref(o);
            if (final)
                return start;
            break;
        }
    return tail->ref_seq - 1;
}

uint64_t spool_ai_rollup_pending_from(const struct spool_ai_rollup *r)
{
    return r->first != NULL ? r->first->seq : 0;
}

static bool joins(const struct spool_ai_rollup *r, const Spool__Record *rec)
{
    if (r->first == NULL || rec->ref_seq != r->msg || r->kind == SPOOL__ACTION__ACTION_MESSAGE_DELETE)
        return false;
    return rec->action == SPOOL__ACTION__ACTION_MESSAGE_APPEND ||
           rec->action == SPOOL__ACTION__ACTION_MESSAGE_UPDATE ||
           rec->action == SPOOL__ACTION__ACTION_MESSAGE_DELETE;
}

static bool starts(const Spool__Record *rec)
{
    return rec->action == SPOOL__ACTION__ACTION_MESSAGE_CREATE ||
           (rec->action == SPOOL__ACTION__ACTION_MESSAGE_APPEND && rec->ref_seq != 0);
}

static int set_data(struct spool_ai_rollup *r, const uint8_t *p, size_t n, bool append)
{
    size_t need = (append ? r->len : 0) + n;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < need)
            cap *= 2;
        uint8_t *d = realloc(r->data, cap);
        if (d == NULL)
            return SPOOL_ENOMEM;
        r->data = d;
        r->cap = cap;
    }
    if (!append)
        r->len = 0;
    if (n > 0)
        memcpy(r->data + r->len, p, n);
    r->len += n;
    return 0;
}

static void merge_extras(struct spool_ai_rollup *r, const Spool__Record *rec, bool replace)
{
    if (replace) {
        json_decref(r->extras);
        r->extras = NULL;
    }
    if (rec->extras.len == 0)
        return;
    json_t *x = json_loadb((const char *)rec->extras.data, rec->extras.len, 0, NULL);
    if (!json_is_object(x)) {
        json_decref(x);
        return;
    }
    if (r->extras == NULL)
        r->extras = x;
    else {
        json_object_update(r->extras, x);
        json_decref(x);
    }
}

static int set_ct(struct spool_ai_rollup *r, const char *ct)
{
    free(r->content_type);
    r->content_type = strdup(ct != NULL ? ct : "");
    return r->content_type == NULL ? SPOOL_ENOMEM : 0;
}

static int run_start(struct spool_ai_rollup *r, const Spool__Record *rec)
{
    size_t n = spool__record__get_packed_size(rec);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return SPOOL_ENOMEM;
    spool__record__pack(rec, buf);
    r->first = spool__record__unpack(NULL, n, buf);
    free(buf);
    if (r->first == NULL)
        return SPOOL_ENOMEM;
    r->kind = rec->action;
    r->msg = rec->action == SPOOL__ACTION__ACTION_MESSAGE_CREATE ? rec->seq : rec->ref_seq;
    r->last_seq = rec->seq;
    r->count = 1;
    r->version = rec->version;
    merge_extras(r, rec, true);
    if (set_ct(r, rec->content_type) != 0)
        return SPOOL_ENOMEM;
    return set_data(r, rec->data.data, rec->data.len, false);
}

static int run_add(struct spool_ai_rollup *r, const Spool__Record *rec)
{
    int rc = 0;
    switch (rec->action) {
    case SPOOL__ACTION__ACTION_MESSAGE_APPEND:
        rc = set_data(r, rec->data.data, rec->data.len, true);
        merge_extras(r, rec, false);
        break;
    case SPOOL__ACTION__ACTION_MESSAGE_UPDATE:
        rc = set_data(r, rec->data.data, rec->data.len, false);
        if (rc == 0)
            rc = set_ct(r, rec->content_type);
        merge_extras(r, rec, true);
        if (r->kind != SPOOL__ACTION__ACTION_MESSAGE_CREATE)
            r->kind = SPOOL__ACTION__ACTION_MESSAGE_UPDATE;
        break;
    default: /* delete */
        r->len = 0;
        merge_extras(r, rec, true);
        r->kind = SPOOL__ACTION__ACTION_MESSAGE_DELETE;
        break;
    }
    r->version = rec->version ? rec->version : r->version;
    r->last_seq = rec->seq;
    r->count++;
    return rc;
}

void spool_ai_rollup_flush(struct spool_ai_rollup *r, spool_ai_emit_cb emit, void *arg)
{
    if (r->first == NULL)
        return;
    if (r->count == 1) {
        Spool__Record *one = r->first;
        r->first = NULL;
        run_clear(r);
        emit(arg, one);
        spool__record__free_unpacked(one, NULL);
        return;
    }
    Spool__Record out = *r->first;
    out.base.unknown_fields = &rolled_marker;
    out.base.n_unknown_fields = 0;
    out.action = r->kind;
    out.seq = r->last_seq;
    out.ref_seq = r->msg;
    out.version = r->version;
    out.content_type = r->content_type;
    out.data.data = r->data;
    out.data.len = r->len;
    size_t xlen = 0;
    char *x = r->extras != NULL ? spool_json_dump(r->extras, &xlen) : NULL;
    out.extras.data = (uint8_t *)x;
    out.extras.len = x != NULL ? xlen : 0;
    /* The run is cleared before emitting: the callback may push again. */
    Spool__Record *first = r->first;
    char *ct = r->content_type;
    uint8_t *data = r->data;
    r->first = NULL;
    r->content_type = NULL;
    r->data = NULL;
    r->cap = 0;
    run_clear(r);
    emit(arg, &out);
    free(x);
    free(data);
    free(ct);
    spool__record__free_unpacked(first, NULL);
}

int spool_ai_rollup_push(struct spool_ai_rollup *r, const Spool__Record *rec, spool_ai_emit_cb emit,
                         void *arg)
{
    if (joins(r, rec) && r->len + rec->data.len <= r->max_bytes)
        return run_add(r, rec);
    spool_ai_rollup_flush(r, emit, arg);
    if (!starts(rec)) {
        emit(arg, rec);
        return 0;
    }
    int rc = run_start(r, rec);
    if (rc != 0)
        run_clear(r);
    return rc;
}

/* A history page groups by message, not only by contiguous run: every record about message M
 * on the page (its create, appends, updates, delete) folds into ONE item at M's first record's
 * place, carrying the serial of the last record folded, so a page shows each message's latest
 * state once. Other records stay as they are. */
struct page_item {
    struct spool_ai_rollup *run; /* a message's records, or NULL: `rec` as is */
    const Spool__Record *rec;
};

static bool about_message(const Spool__Record *r)
{
    return r->action == SPOOL__ACTION__ACTION_MESSAGE_CREATE ||
           (r->ref_seq != 0 && (r->action == SPOOL__ACTION__ACTION_MESSAGE_APPEND ||
                                r->action == SPOOL__ACTION__ACTION_MESSAGE_UPDATE ||
                                r->action == SPOOL__ACTION__ACTION_MESSAGE_DELETE));
}

int spool_ai_rollup_page(const Spool__Record *const *recs, size_t n, bool descending,
                         uint64_t max_bytes, spool_ai_emit_cb emit, void *arg)
{
    struct page_item *items = calloc(n ? n : 1, sizeof *items);
    if (items == NULL)
        return SPOOL_ENOMEM;
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const Spool__Record *rec = recs[descending ? n - 1 - i : i];
        if (!about_message(rec)) {
            items[k++].rec = rec;
            continue;
        }
        uint64_t msg = rec->action == SPOOL__ACTION__ACTION_MESSAGE_CREATE ? rec->seq : rec->ref_seq;
        struct page_item *it = NULL;
        for (size_t j = k; j > 0 && it == NULL; j--) /* the newest item about msg that can take it */
            if (items[j - 1].run != NULL && items[j - 1].run->msg == msg)
                it = &items[j - 1];
        if (it != NULL && rec->action != SPOOL__ACTION__ACTION_MESSAGE_CREATE &&
            it->run->kind != SPOOL__ACTION__ACTION_MESSAGE_DELETE &&
            it->run->len + rec->data.len <= it->run->max_bytes) {
            rc = run_add(it->run, rec);
            continue;
        }
        it = &items[k++];
        if ((it->run = spool_ai_rollup_new(max_bytes)) == NULL || run_start(it->run, rec) != 0)
            rc = SPOOL_ENOMEM;
    }
    for (size_t i = 0; i < k; i++) {
        if (rc == 0 && items[i].run != NULL)
            spool_ai_rollup_flush(items[i].run, emit, arg);
        else if (rc == 0)
            emit(arg, items[i].rec);
        spool_ai_rollup_free(items[i].run);
    }
    free(items);
    return rc;
}
