/*
 * Control entry bytes and the slot export (see slot_move.h).
 *
 * A part of the export is built directly as protobuf wire bytes: for each ChannelImport, the
 * records are packed one after another (field 3 each) into a scratch buffer while they are read,
 * then the import's small fields and the Entry field-6 header go in front of them. The byte
 * budget is checked before a record is taken, with an upper bound for the headers, so a part
 * never goes over max_bytes unless its only record is bigger on its own.
 */
#include "cluster/slot_move.h"

#include <stdlib.h>
#include <string.h>

#include "common/varint.h"
#include "proto/entry.pb-c.h"

#define TAG_ENTRY_FENCE 0x2a   /* Entry.slot_fence, field 5, length-delimited */
#define TAG_ENTRY_IMPORT 0x32  /* Entry.imports, field 6, length-delimited */
#define TAG_IMP_CHANNEL 0x0a   /* ChannelImport.channel (a ChannelState) */
#define TAG_IMP_RECORD 0x12    /* ChannelImport.records */

int spool_slot_fence_pack(const uint8_t *bitmap, bool fenced, bool drop, uint8_t **out,
                          size_t *len, struct spool_err *err)
{
    Spool__SlotFence f = SPOOL__SLOT_FENCE__INIT;
    f.slots.data = (uint8_t *)bitmap;
    f.slots.len = SPOOL_SLOT_BITMAP_BYTES;
    f.fenced = fenced;
    f.drop = drop;
    size_t n = spool__slot_fence__get_packed_size(&f);
    uint8_t *p = malloc(1 + 10 + n);
    if (p == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "slot fence");
    p[0] = TAG_ENTRY_FENCE;
    size_t h = 1 + spool_varint_put(p + 1, n);
    spool__slot_fence__pack(&f, p + h);
    *out = p;
    *len = h + n;
    return 0;
}

/* --- export ------------------------------------------------------------------------------- */

struct spool_slot_export {
    struct spool_store *store;
    char **names; /* the slot set's channels, sorted */
    size_t n, at; /* at: the channel being exported */
    uint64_t after; /* its records up to here are out (0: none yet) */
    bool begun;     /* `after` is valid for names[at] */
    uint64_t records;
    /* the part being built */
    uint8_t *buf;   /* the output */
    size_t len, cap;
    uint8_t *recs;  /* the current import's packed records */
    size_t rlen, rcap;
};

static int grow(uint8_t **b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*b, n);
    if (p == NULL)
        return -1;
    *b = p;
    *cap = n;
    return 0;
}

struct list {
    const uint8_t *bitmap;
    char **v;
    size_t n, cap;
    int rc;
};

static int list_cb(void *arg, const char *channel)
{
    struct list *l = arg;
    if (!spool_slot_bit(l->bitmap, spool_slot_of(channel, strlen(channel))))
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            l->rc = SPOOL_ENOMEM;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n] = strdup(channel)) == NULL) {
        l->rc = SPOOL_ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int spool_slot_export_new(struct spool_slot_export **out, struct spool_store *store,
                          const uint8_t *bitmap, struct spool_err *err)
{
    *out = NULL;
    struct list l = {.bitmap = bitmap};
    spool_store_channels(store, list_cb, &l);
    struct spool_slot_export *x = calloc(1, sizeof *x);
    if (l.rc != 0 || x == NULL) {
        for (size_t i = 0; i < l.n; i++)
            free(l.v[i]);
        free(l.v);
        free(x);
        return spool_err_set(err, SPOOL_ENOMEM, "slot export: listing channels");
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, name_cmp);
    x->store = store;
    x->names = l.v;
    x->n = l.n;
    *out = x;
    return 0;
}

void spool_slot_export_counts(const struct spool_slot_export *x, size_t *channels,
                              uint64_t *records)
{
    *channels = x->n;
    *records = x->records;
}

void spool_slot_export_free(struct spool_slot_export *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->n; i++)
        free(x->names[i]);
    free(x->names);
    free(x->buf);
    free(x->recs);
    free(x);
}

/* ChannelImport.channel: the channel's state at the source, packed once per import. */
struct import_hdr {
    uint8_t buf[64 + 3 * 11 + 4 * 11];
    uint8_t *state;     /* buf, or malloc'd for a long name */
    size_t state_len;
};

static int hdr_init(struct import_hdr *h, struct spool_store *store, const char *name,
                    uint64_t first, uint64_t last)
{
    Spool__ChannelState st = SPOOL__CHANNEL_STATE__INIT;
    Spool__Retention ret = SPOOL__RETENTION__INIT;
    struct spool_retention r;
    st.name = (char *)name;
    st.first_seq = first;
    st.last_seq = last;
    if (spool_store_retention(store, name, &r)) {
        ret.max_age_ms = r.max_age_ms;
        ret.max_count = r.max_count;
        ret.max_bytes = r.max_bytes;
        st.retention = &ret;
    }
    h->state_len = spool__channel_state__get_packed_size(&st);
    h->state = h->state_len <= sizeof h->buf ? h->buf : malloc(h->state_len);
    if (h->state == NULL)
        return -1;
    spool__channel_state__pack(&st, h->state);
    return 0;
}

static void hdr_close(struct import_hdr *h)
{
    if (h->state != h->buf)
        free(h->state);
}

static size_t hdr_size(const struct import_hdr *h)
{
    return 1 + spool_varint_size(h->state_len) + h->state_len;
}

/* Upper bound of what an import of `h` costs besides its records (Entry header included). */
static size_t overhead(const struct import_hdr *h)
{
    return 1 + 10 + hdr_size(h);
}

/* Appends Entry.imports{h, records = x->recs} to the output. */
static int emit(struct spool_slot_export *x, const struct import_hdr *h)
{
    size_t body = hdr_size(h) + x->rlen;
    if (grow(&x->buf, &x->cap, x->len + 1 + 10 + body) != 0)
        return SPOOL_ENOMEM;
    uint8_t *w = x->buf + x->len;
    *w++ = TAG_ENTRY_IMPORT;
    w += spool_varint_put(w, body);
    *w++ = TAG_IMP_CHANNEL;
    w += spool_varint_put(w, h->state_len);
    memcpy(w, h->state, h->state_len);
    w += h->state_len;
    if (x->rlen > 0)
        memcpy(w, x->recs, x->rlen);
    w += x->rlen;
    x->len = (size_t)(w - x->buf);
    x->rlen = 0;
    return 0;
}

struct take {
    struct spool_slot_export *x;
    size_t budget;  /* bytes the records of this import may take (SIZE_MAX: at least one) */
    bool alone_ok;  /* the first record may exceed the budget (nothing else in the part) */
    size_t taken;
    uint64_t last;  /* seq of the last record taken */
    int rc;
};

static int take_cb(void *arg, const Spool__Record *rec)
{
    struct take *t = arg;
    struct spool_slot_export *x = t->x;
    size_t sz = spool__record__get_packed_size(rec);
    size_t need = 1 + spool_varint_size(sz) + sz;
    if (x->rlen + need > t->budget && !(t->taken == 0 && t->alone_ok))
        return 1;
    if (grow(&x->recs, &x->rcap, x->rlen + need) != 0) {
        t->rc = SPOOL_ENOMEM;
        return 1;
    }
    uint8_t *w = x->recs + x->rlen;
    *w++ = TAG_IMP_RECORD;
    w += spool_varint_put(w, sz);
    spool__record__pack(rec, w);
    x->rlen += need;
    t->taken++;
    t->last = rec->seq;
    return 0;
}

/* Adds what fits of channel names[at] to the part: 0 with *full when the part has no room for
 * (more of) it, else 0 after adding (at moves on when the channel is complete); or an error. */
static int add_channel(struct spool_slot_export *x, size_t max_bytes, bool *full,
                       struct spool_err *err)
{
    const char *name = x->names[x->at];
    uint64_t last = spool_store_last_seq(x->store, name);
    uint64_t first = spool_store_first_seq(x->store, name);
    if (!x->begun) {
        x->after = first - 1;
        x->begun = true;
    }
    struct import_hdr h;
    if (hdr_init(&h, x->store, name, first > x->after + 1 ? first : x->after + 1, last) != 0)
        return spool_err_set(err, SPOOL_ENOMEM, "slot export");
    int rc = 0;
    size_t oh = overhead(&h);
    bool complete = true;
    if (x->len > 0 && x->len + oh > max_bytes) {
        *full = true; /* the next part starts with this channel */
        goto out;
    }
    if (x->after < last) {
        size_t room = max_bytes > x->len + oh ? max_bytes - x->len - oh : 0;
        struct take t = {.x = x, .budget = room, .alone_ok = x->len == 0};
        rc = spool_store_read(x->store, name, x->after, 0, take_cb, &t, err);
        if (t.rc != 0) {
            rc = spool_err_set(err, SPOOL_ENOMEM, "slot export");
            goto out;
        }
        if (rc != 0) {
            spool_err_wrap(err, "slot export of channel %s", name);
            goto out;
        }
        if (t.taken == 0 && x->len > 0) {
            *full = true; /* not even one record fits beside the others */
            goto out;
        }
        /* t.taken == 0 otherwise: nothing readable after `after` (trimmed meanwhile): the
         * import without records tells its last_seq. */
        x->records += t.taken;
        if (t.taken > 0) {
            x->after = t.last;
            complete = t.last >= last;
        }
    }
    if (emit(x, &h) != 0) {
        rc = spool_err_set(err, SPOOL_ENOMEM, "slot export");
        goto out;
    }
    if (complete) {
        x->at++;
        x->begun = false;
    } else {
        *full = true;
    }
out:
    hdr_close(&h);
    return rc;
}

int spool_slot_export_next(struct spool_slot_export *x, size_t max_bytes, uint8_t **out,
                           size_t *len, bool *done, struct spool_err *err)
{
    *out = NULL;
    *len = 0;
    *done = false;
    x->len = 0;
    x->rlen = 0;
    /* Where this part starts: a failed call leaves the export there, so a retry loses nothing. */
    size_t at0 = x->at;
    uint64_t after0 = x->after, records0 = x->records;
    bool begun0 = x->begun;
    int rc = 0;
    bool full = false;
    while (rc == 0 && !full && x->at < x->n)
        rc = add_channel(x, max_bytes, &full, err);
    if (rc == 0 && x->len > 0) {
        uint8_t *p = malloc(x->len);
        if (p == NULL) {
            rc = spool_err_set(err, SPOOL_ENOMEM, "slot export");
        } else {
            memcpy(p, x->buf, x->len);
            *out = p;
            *len = x->len;
        }
    }
    if (rc != 0) {
        x->len = x->rlen = 0;
        x->at = at0;
        x->after = after0;
        x->begun = begun0;
        x->records = records0;
        return rc;
    }
    *done = x->at >= x->n;
    return 0;
}
