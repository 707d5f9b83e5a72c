/*
 * The shard state machine (see fsm.h for the contract).
 *
 * apply() is the only writer of a shard's store. It is deterministic: its output depends only on
 * the store's content, the dedup table (itself a function of the store's content and the applied
 * entries) and the entry, never on the local clock or on which node runs it.
 *
 * Seq assignment inside one entry: requests of the same channel follow each other, so a small
 * per-entry table (channel -> next seq, timestamp) sits in front of the store, filled for all
 * the entry's channels by one batched lookup before the requests are applied.
 *
 * Resharding (fsm.h): fence and drop marks are two slot bitmaps kept in the store's shard state
 * (version byte, fenced bitmap, dropped bitmap), written by the entry that changes them and
 * reloaded after open and restore; a publish pays the slot hash only while some slot is fenced.
 *
 * Cost: this runs on every replica for every message, so the per-message work allocates
 * nothing (the entry and its scratch live in an arena; the dedup table has no per-id malloc)
 * and the cache misses of an entry (channel index, dedup slots) are started up front, together,
 * rather than one message at a time.
 */
#include "cluster/fsm.h"

#include <stdlib.h>
#include <string.h>

#include "cluster/entry_frame.h"
#include "cluster/placement.h"
#include "cluster/streams.h"
#include "common/log.h"

#define DEDUP_MAX_ENTRIES 65536

/* A result is one allocation: the struct, its publishes, then every publish's seqs and
 * duplicate flags (result_alloc). */
void spool_fsm_result_free(struct spool_fsm_result *r) { free(r); }

/* --- dedup rebuild ------------------------------------------------------------------------ */

struct seen {
    char *channel;
    char *id;
    uint64_t seq;
    int64_t ts;
};

struct rebuild {
    struct spool_fsm *f;
    int64_t newest;
    struct seen *v;
    size_t n, cap;
    const char *channel;
    size_t visited;
    int rc;
};

static int tail_visit_cb(void *arg, const Spool__Record *rec)
{
    struct rebuild *b = arg;
    if (++b->visited > DEDUP_MAX_ENTRIES ||
        b->newest - rec->timestamp_ms > (int64_t)b->f->dedup.window_ms)
        return 1;
    if (rec->id == NULL || rec->id[0] == '\0')
        return 0;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct seen *v = realloc(b->v, cap * sizeof *v);
        if (v == NULL) {
            b->rc = SPOOL_ENOMEM;
            return 1;
        }
        b->v = v;
        b->cap = cap;
    }
    struct seen *s = &b->v[b->n];
    s->channel = strdup(b->channel);
    s->id = strdup(rec->id);
    s->seq = rec->seq;
    s->ts = rec->timestamp_ms;
    if (s->channel == NULL || s->id == NULL) {
        free(s->channel);
        free(s->id);
        b->rc = SPOOL_ENOMEM;
        return 1;
    }
    b->n++;
    return 0;
}

static int newest_channel_cb(void *arg, const char *channel)
{
    struct rebuild *b = arg;
    int64_t ts = spool_store_newest_ts(b->f->store, channel, NULL);
    if (ts > b->newest)
        b->newest = ts;
    return 0;
}

static int tail_channel_cb(void *arg, const char *channel)
{
    struct rebuild *b = arg;
    struct spool_err err;
    b->channel = channel;
    b->visited = 0;
    int rc = spool_store_read_backward(b->f->store, channel, 0, 0, tail_visit_cb, b, &err);
    if (rc != 0)
        SPOOL_WARN("fsm.dedup_rebuild_read", "code=%s msg=\"%s\"", spool_err_name(rc), err.msg);
    return b->rc != 0;
}

static int seen_cmp(const void *a, const void *b)
{
    const struct seen *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/* Refills the dedup table with the ids stored within the window of the newest record. */
static int dedup_rebuild(struct spool_fsm *f, struct spool_err *err)
{
    struct rebuild b = {.f = f, .newest = INT64_MIN};
    spool_dedup_reset(&f->dedup);
    spool_store_channels(f->store, newest_channel_cb, &b);
    if (b.newest != INT64_MIN)
        spool_store_channels(f->store, tail_channel_cb, &b);
    if (b.rc == 0 && b.n > 0) {
        qsort(b.v, b.n, sizeof *b.v, seen_cmp);
        for (size_t i = 0; i < b.n && b.rc == 0; i++)
            b.rc = spool_dedup_insert(&f->dedup, b.v[i].channel, b.v[i].id, b.v[i].seq, b.v[i].ts);
    }
    for (size_t i = 0; i < b.n; i++) {
        free(b.v[i].channel);
        free(b.v[i].id);
    }
    free(b.v);
    if (b.rc != 0)
        return spool_err_set(err, b.rc, "rebuilding the dedup table: out of memory");
    return 0;
}

/* --- resharding marks ---------------------------------------------------------------------- */

static void *scratch(struct spool_fsm *f, size_t n, size_t size);
static struct spool_fsm_result *result_alloc(uint64_t index, const Spool__Entry *e, size_t total);

#define MARKS_VERSION 1
#define MARKS_LEN (1 + 2 * SPOOL_SLOT_BITMAP_BYTES)

/* The marks from the store's shard state (after open and after a snapshot restore). */
static void marks_load(struct spool_fsm *f)
{
    size_t len;
    const uint8_t *p = spool_store_shard_state(f->store, &len);
    memset(f->fenced, 0, sizeof f->fenced);
    memset(f->dropped, 0, sizeof f->dropped);
    if (len == MARKS_LEN && p[0] == MARKS_VERSION) {
        memcpy(f->fenced, p + 1, SPOOL_SLOT_BITMAP_BYTES);
        memcpy(f->dropped, p + 1 + SPOOL_SLOT_BITMAP_BYTES, SPOOL_SLOT_BITMAP_BYTES);
    } else if (len != 0) {
        SPOOL_ERROR("fsm.shard_state_unknown", "len=%zu version=%u", len, p[0]);
    }
    f->n_fenced = spool_slot_count(f->fenced);
}

static int marks_save(struct spool_fsm *f, struct spool_err *err)
{
    uint8_t buf[MARKS_LEN];
    buf[0] = MARKS_VERSION;
    memcpy(buf + 1, f->fenced, SPOOL_SLOT_BITMAP_BYTES);
    memcpy(buf + 1 + SPOOL_SLOT_BITMAP_BYTES, f->dropped, SPOOL_SLOT_BITMAP_BYTES);
    f->n_fenced = spool_slot_count(f->fenced);
    return spool_store_set_shard_state(f->store, buf, sizeof buf, err);
}

bool spool_fsm_slot_fenced(const struct spool_fsm *f, uint32_t slot)
{
    return spool_slot_bit(f->fenced, slot);
}

bool spool_fsm_slot_dropped(const struct spool_fsm *f, uint32_t slot)
{
    return spool_slot_bit(f->dropped, slot);
}

bool spool_fsm_channel_fenced(const struct spool_fsm *f, const char *channel)
{
    return f->n_fenced > 0 && spool_slot_bit(f->fenced, spool_slot_of(channel, strlen(channel)));
}

bool spool_fsm_channel_dropped(const struct spool_fsm *f, const char *channel)
{
    return f->n_fenced > 0 && spool_slot_bit(f->dropped, spool_slot_of(channel, strlen(channel)));
}

struct drop_list {
    struct spool_store *store;
    const uint8_t *slots;
    char **v;
    size_t n, cap;
    int rc;
};

static int drop_list_cb(void *arg, const char *channel)
{
    struct drop_list *d = arg;
    if (!spool_slot_bit(d->slots, spool_slot_of(channel, strlen(channel))) ||
        spool_store_first_seq(d->store, channel) > spool_store_last_seq(d->store, channel))
        return 0; /* another slot, or nothing retained */
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        char **v = realloc(d->v, cap * sizeof *v);
        if (v == NULL) {
            d->rc = SPOOL_ENOMEM;
            return 1;
        }
        d->v = v;
        d->cap = cap;
    }
    if ((d->v[d->n] = strdup(channel)) == NULL) {
        d->rc = SPOOL_ENOMEM;
        return 1;
    }
    d->n++;
    return 0;
}

/* Deletes every channel of `slots` (listed first: the channels() callback must not write). */
static int drop_slots(struct spool_fsm *f, const uint8_t *slots, struct spool_err *err)
{
    struct drop_list d = {.store = f->store, .slots = slots};
    spool_store_channels(f->store, drop_list_cb, &d);
    int rc = d.rc != 0 ? spool_err_set(err, d.rc, "dropping slots: out of memory") : 0;
    for (size_t i = 0; i < d.n && rc == 0; i++)
        rc = spool_store_delete_channel(f->store, d.v[i], err);
    if (rc == 0)
        SPOOL_INFO("fsm.slots_dropped", "slots=%u channels=%zu", spool_slot_count(slots), d.n);
    for (size_t i = 0; i < d.n; i++)
        free(d.v[i]);
    free(d.v);
    if (rc == 0)
        rc = spool_pindex_rebuild(f->presence, f->store, 0, err);
    spool_conv_reset(f->conv);
    return rc;
}

/* Applies Entry.slot_fence (marks written to the store's shard state, channels dropped). */
static int apply_fence(struct spool_fsm *f, uint64_t index, const Spool__SlotFence *sf,
                       struct spool_err *err)
{
    if (sf->slots.len != SPOOL_SLOT_BITMAP_BYTES) {
        /* Every replica sees the same bytes, so every replica ignores it the same way. */
        SPOOL_ERROR("fsm.bad_slot_fence", "index=%llu bytes=%zu", (unsigned long long)index,
                    sf->slots.len);
        return 0;
    }
    const uint8_t *bm = sf->slots.data;
    for (size_t i = 0; i < SPOOL_SLOT_BITMAP_BYTES; i++) {
        if (sf->fenced) {
            f->fenced[i] |= bm[i];
            if (sf->drop)
                f->dropped[i] |= bm[i];
        } else {
            f->fenced[i] &= (uint8_t)~bm[i];
            f->dropped[i] &= (uint8_t)~bm[i];
        }
    }
    int rc = marks_save(f, err);
    if (rc == 0 && sf->fenced && sf->drop)
        rc = drop_slots(f, bm, err);
    SPOOL_INFO("fsm.slot_fence", "index=%llu slots=%u fenced=%d drop=%d fenced_total=%u",
               (unsigned long long)index, spool_slot_count(bm), sf->fenced, sf->drop, f->n_fenced);
    return rc;
}

/* Applies Entry.imports as one store batch at `index`, then the derived state. */
static int apply_imports(struct spool_fsm *f, uint64_t index, const Spool__Entry *e,
                         size_t *n_stored, struct spool_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < e->n_imports; i++)
        total += e->imports[i]->n_records;
    struct spool_store_import *imp = scratch(f, e->n_imports, sizeof *imp);
    const Spool__Record **stored = scratch(f, total, sizeof *stored);
    if (imp == NULL || stored == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "applying entry %llu: out of memory",
                             (unsigned long long)index);
    for (size_t i = 0; i < e->n_imports; i++) {
        const Spool__ChannelImport *ci = e->imports[i];
        const Spool__ChannelState *st = ci->channel;
        const Spool__Retention *ret = st != NULL ? st->retention : NULL;
        imp[i] = (struct spool_store_import){
            .channel = st != NULL ? st->name : NULL, /* none: skipped (logged) by the store */
            .last_seq = st != NULL ? st->last_seq : 0,
            .recs = (const Spool__Record *const *)ci->records,
            .n = ci->n_records,
            .has_retention = ret != NULL};
        if (ret != NULL)
            imp[i].retention = (struct spool_retention){
                .max_age_ms = ret->max_age_ms, .max_count = ret->max_count, .max_bytes = ret->max_bytes};
    }
    size_t k = 0;
    int rc = spool_store_import(f->store, index, imp, e->n_imports, stored, &k, err);
    if (rc != 0)
        return rc;
    /* Only ids a later publish could still collide with (its timestamp is at least this entry's)
     * take room in the table. */
    int64_t oldest = e->timestamp_ms - (int64_t)f->dedup.window_ms;
    for (size_t i = 0; i < k; i++) {
        const Spool__Record *rec = stored[i];
        if (rec->id != NULL && rec->id[0] != '\0' && rec->timestamp_ms >= oldest &&
            spool_dedup_insert(&f->dedup, rec->channel, rec->id, rec->seq, rec->timestamp_ms) != 0)
            return spool_err_set(err, SPOOL_ENOMEM, "dedup insert: out of memory");
        if (spool_pindex_apply(f->presence, rec->channel, rec) != 0)
            SPOOL_WARN("fsm.presence_index", "index=%llu err=nomem", (unsigned long long)index);
    }
    spool_conv_reset(f->conv); /* its cached states may predate what arrived */
    *n_stored = k;
    return 0;
}

/* An entry carrying slot_fence and/or imports (fsm.h): nothing else of it applies. */
static int apply_control(struct spool_fsm *f, uint64_t index, const Spool__Entry *e,
                         struct spool_fsm_result **result, struct spool_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < e->n_publishes; i++)
        total += e->publishes[i]->n_messages;
    struct spool_fsm_result *r = result_alloc(index, e, total);
    if (r == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "applying entry %llu: out of memory",
                             (unsigned long long)index);
    for (size_t i = 0; i < e->n_publishes; i++) {
        r->publishes[i].status = SPOOL_EINVAL;
        snprintf(r->publishes[i].reason, sizeof r->publishes[i].reason,
                 "a resharding entry carries no publishes");
    }
    int rc = e->slot_fence != NULL ? apply_fence(f, index, e->slot_fence, err) : 0;
    size_t stored = 0;
    if (rc == 0 && e->n_imports > 0)
        rc = apply_imports(f, index, e, &stored, err);
    else if (rc == 0)
        rc = spool_store_mark_applied(f->store, index, err);
    if (rc != 0) {
        spool_fsm_result_free(r);
        return rc;
    }
    if (e->n_imports > 0)
        SPOOL_DEBUG("fsm.imported", "index=%llu imports=%zu records=%zu", (unsigned long long)index,
                    e->n_imports, stored);
    if (f->take_result == NULL)
        *result = r;
    else if (!f->take_result(f->take_arg, index, r))
        spool_fsm_result_free(r);
    return 0;
}

/* --- apply -------------------------------------------------------------------------------- */

/* Zeroed scratch for one apply, from the FSM's arena (forgotten at the next apply). */
static void *scratch(struct spool_fsm *f, size_t n, size_t size)
{
    size_t bytes = (n ? n : 1) * size;
    void *p = f->arena.pb.alloc(&f->arena, bytes);
    if (p != NULL)
        memset(p, 0, bytes);
    return p;
}

struct next_seq {
    const char *channel;
    uint64_t hash;
    uint64_t next;
    int64_t ts; /* the timestamp this entry's records of the channel get */
};

/* The entry's channel -> row table: rows in first-use order, found through an open-addressing
 * index (power of two, at least twice the publishes, so at most half full) instead of a scan
 * of every earlier row (an entry can carry hundreds of channels). */
struct next_seqs {
    struct next_seq *rows;
    uint32_t *slots; /* row + 1, 0 = empty */
    size_t n, mask;
};

static uint64_t channel_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

/* The channel's row of this entry's table (added, without its seq and timestamp, on first
 * use; fill_rows completes the new rows). */
static struct next_seq *row_of(struct next_seqs *t, const char *channel)
{
    uint64_t h = channel_hash(channel);
    size_t i = h & t->mask;
    for (; t->slots[i] != 0; i = (i + 1) & t->mask) {
        struct next_seq *row = &t->rows[t->slots[i] - 1];
        if (row->hash == h && strcmp(row->channel, channel) == 0)
            return row;
    }
    struct next_seq *row = &t->rows[t->n++];
    t->slots[i] = (uint32_t)t->n;
    row->channel = channel;
    row->hash = h;
    return row;
}

/* Every row's next seq, and a timestamp that never goes below the channel's newest retained
 * record (a new leader's clock may be behind the old one's; readers binary-search timestamps),
 * from the store's channel index: one batched lookup for the whole entry, no read. The store
 * does not change until the entry's records are appended, and its content is the same on every
 * replica, so the rows are too. */
static int fill_rows(struct spool_fsm *f, struct next_seqs *t, int64_t entry_ts)
{
    const char **names = scratch(f, t->n, sizeof *names);
    int64_t *ts = scratch(f, t->n, sizeof *ts);
    uint64_t *last = scratch(f, t->n, sizeof *last);
    if (names == NULL || ts == NULL || last == NULL)
        return SPOOL_ENOMEM;
    for (size_t i = 0; i < t->n; i++)
        names[i] = t->rows[i].channel;
    spool_store_newest_ts_many(f->store, names, t->n, ts, last);
    for (size_t i = 0; i < t->n; i++) {
        t->rows[i].next = last[i] + 1;
        t->rows[i].ts = ts[i] > entry_ts ? ts[i] : entry_ts;
    }
    return 0;
}

/* One block: [result][publishes x n][seqs x total][duplicate x total]. The struct sizes are
 * multiples of 8, so the seqs are aligned. Not calloc'd: every field but the 200-byte reasons
 * is set here (a reason only needs its first byte cleared), which matters because followers
 * build and drop a result for every entry. */
static struct spool_fsm_result *result_alloc(uint64_t index, const Spool__Entry *e, size_t total)
{
    size_t n = e->n_publishes;
    size_t size = sizeof(struct spool_fsm_result) + n * sizeof(struct spool_fsm_publish_result) +
                  total * (sizeof(uint64_t) + sizeof(bool));
    struct spool_fsm_result *r = malloc(size);
    if (r == NULL)
        return NULL;
    r->index = index;
    r->proposal = e->proposal;
    r->n = n;
    r->publishes = (struct spool_fsm_publish_result *)(r + 1);
    uint64_t *seqs = (uint64_t *)(r->publishes + n);
    bool *dup = (bool *)(seqs + total);
    memset(seqs, 0, total * (sizeof *seqs + sizeof *dup));
    for (size_t i = 0; i < n; i++) {
        size_t m = e->publishes[i]->n_messages;
        struct spool_fsm_publish_result *p = &r->publishes[i];
        p->status = 0;
        p->reason[0] = '\0';
        p->n = m;
        p->seqs = seqs;
        p->duplicate = dup;
        seqs += m;
        dup += m;
    }
    return r;
}

int spool_fsm_encode_entry(const Spool__Entry *e, void **buf, size_t *len)
{
    return spool_entry_frame(&e->base, buf, len);
}

/* Decoded into the FSM's arena: an entry's many small objects (requests, records, strings)
 * cost no malloc/free each; nothing of it outlives the apply. */
static Spool__Entry *decode_entry(struct spool_fsm *f, const void *buf, size_t len)
{
    const uint8_t *payload;
    size_t n;
    if (spool_entry_unframe(buf, len, &payload, &n) != 0)
        return NULL;
    return spool__entry__unpack(&f->arena.pb, n, payload);
}

static bool conv_wanted(const Spool__PublishRequest *p)
{
    for (size_t j = 0; j < p->n_messages; j++)
        if (spool_conv_applies(p->messages[j]))
            return true;
    return false;
}

int spool_fsm_apply_entry(struct spool_fsm *f, uint64_t index, const void *buf, size_t len,
                          struct spool_fsm_result **result, struct spool_err *err)
{
    *result = NULL;
    if (index <= spool_store_applied_index(f->store))
        return 0;
    spool_arena_reset(&f->arena); /* the previous apply's entry and scratch */
    Spool__Entry *e = decode_entry(f, buf, len);
    if (e == NULL) {
        /* Every replica sees the same bytes, so every replica skips it the same way. */
        SPOOL_ERROR("fsm.bad_entry", "index=%llu len=%zu", (unsigned long long)index, len);
        return spool_store_mark_applied(f->store, index, err);
    }
    if (e->slot_fence != NULL || e->n_imports > 0)
        return apply_control(f, index, e, result, err);
    int rc = SPOOL_ENOMEM;
    bool *gone = NULL; /* per publish: conditional presence leaves superseded in the store */
    size_t total = 0;
    for (size_t i = 0; i < e->n_publishes; i++)
        total += e->publishes[i]->n_messages;
    struct spool_fsm_result *r = result_alloc(index, e, total);
    Spool__Record *recs = scratch(f, total, sizeof *recs);
    const Spool__Record **ptrs = scratch(f, total, sizeof *ptrs);
    struct next_seqs seqs = {.rows = scratch(f, e->n_publishes, sizeof *seqs.rows)};
    for (seqs.mask = 1; seqs.mask < 2 * e->n_publishes; seqs.mask *= 2)
        ;
    seqs.slots = scratch(f, seqs.mask, sizeof *seqs.slots);
    seqs.mask--;
    struct spool_dedup_key *keys = scratch(f, total, sizeof *keys); /* .id NULL: no id */
    struct next_seq **row_at = scratch(f, e->n_publishes, sizeof *row_at); /* per publish */
    struct spool_streams_tx *ds = NULL; /* Durable Streams overlay, made on first use */
    if (r == NULL || recs == NULL || ptrs == NULL || seqs.rows == NULL || seqs.slots == NULL ||
        keys == NULL || row_at == NULL) {
        spool_err_set(err, rc, "applying entry %llu: out of memory", (unsigned long long)index);
        goto out;
    }
    /* Up front, for the whole entry: every channel's row (one batched store lookup), every id
     * hashed and its dedup slot prefetched, so the cache misses of the entry overlap instead of
     * stalling one message at a time. Message g of the entry is keys[g], as its seq is
     * r->publishes[0].seqs[g]. */
    for (size_t i = 0, g = 0; i < e->n_publishes; i++) {
        const Spool__PublishRequest *p = e->publishes[i];
        bool named = p->channel != NULL && p->channel[0] != '\0';
        if (named)
            row_at[i] = row_of(&seqs, p->channel);
        for (size_t j = 0; j < p->n_messages; j++, g++)
            if (named && spool_dedup_key_init(&keys[g], p->channel, p->messages[j]->id))
                spool_dedup_prefetch(&f->dedup, &keys[g]);
    }
    if (fill_rows(f, &seqs, e->timestamp_ms) != 0) {
        spool_err_set(err, rc, "applying entry %llu: out of memory", (unsigned long long)index);
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < e->n_publishes; i++) {
        const Spool__PublishRequest *p = e->publishes[i];
        if (p->channel == NULL || p->channel[0] == '\0') {
            r->publishes[i].status = SPOOL_EINVAL;
            continue;
        }
        if (f->n_fenced > 0 &&
            spool_slot_bit(f->fenced, spool_slot_of(p->channel, strlen(p->channel)))) {
            r->publishes[i].status = SPOOL_EMOVED; /* the router sends it where the slot went */
            snprintf(r->publishes[i].reason, sizeof r->publishes[i].reason,
                     "channel's slot is moving to another shard");
            continue;
        }
        struct next_seq *row = row_at[i];
        if (spool_streams_is_command(p)) { /* Durable Streams: checked and applied there */
            if (ds == NULL && (ds = spool_streams_tx_new(f->store)) == NULL) {
                spool_err_set(err, rc, "applying entry %llu: out of memory", (unsigned long long)index);
                goto out;
            }
            rc = spool_streams_apply(ds, p, &row->next, row->ts, r->publishes[i].seqs, recs, ptrs,
                                     &n, err);
            if (rc != 0)
                goto out; /* I/O or memory: the entry fails as a whole, like a store error */
            rc = SPOOL_ENOMEM;
            continue;
        }
        if (conv_wanted(p)) { /* appends, edits, turns: checked as a whole, or refused */
            bool *dup = r->publishes[i].duplicate;
            for (size_t j = 0; j < p->n_messages; j++) {
                uint64_t seq;
                dup[j] = spool_dedup_find(&f->dedup, p->channel, p->messages[j]->id, row->ts, &seq);
            }
            int crc = spool_conv_check(f->conv, p->channel, (const Spool__Record *const *)p->messages,
                                       dup, p->n_messages, row->ts, r->publishes[i].reason);
            memset(dup, 0, p->n_messages * sizeof *dup);
            if (crc == SPOOL_ENOMEM) {
                spool_err_set(err, crc, "applying entry %llu: out of memory", (unsigned long long)index);
                goto out;
            }
            if (crc != 0) {
                r->publishes[i].status = crc;
                continue;
            }
        }
        free(gone);
        gone = NULL;
        if (spool_presence_has_conditional_leave(p->messages, p->n_messages)) {
            if ((gone = calloc(p->n_messages, sizeof *gone)) == NULL) {
                spool_err_set(err, rc, "applying entry %llu: out of memory", (unsigned long long)index);
                goto out;
            }
            spool_presence_leaves_in_store(f->store, p->channel, p->messages, p->n_messages, gone);
        }
        for (size_t j = 0; j < p->n_messages; j++) {
            const Spool__Record *m = p->messages[j];
            uint64_t seq;
            const struct spool_dedup_key *key = &keys[(r->publishes[i].seqs - r->publishes[0].seqs) + j];
            bool has_id = key->id != NULL;
            if (has_id && spool_dedup_find_key(&f->dedup, key, row->ts, &seq)) {
                r->publishes[i].seqs[j] = seq;
                r->publishes[i].duplicate[j] = true;
                continue;
            }
            if (gone != NULL && (gone[j] || spool_presence_leave_in_entry(p->channel, m, recs, n))) {
                r->publishes[i].seqs[j] = m->ref_seq; /* a conditional leave that lost: kept out */
                r->publishes[i].duplicate[j] = true;
                continue;
            }
            seq = row->next++;
            recs[n] = *m;
            recs[n].channel = p->channel;
            recs[n].seq = seq;
            recs[n].timestamp_ms = row->ts;
            ptrs[n] = &recs[n];
            if (spool_conv_stored(f->conv, &recs[n]) != 0) {
                spool_err_set(err, rc, "conversation state: out of memory");
                goto out;
            }
            n++;
            r->publishes[i].seqs[j] = seq;
            if (has_id && spool_dedup_insert_key(&f->dedup, key, seq, row->ts) != 0) {
                spool_err_set(err, rc, "dedup insert: out of memory");
                goto out;
            }
        }
    }
    /* Retention before the entry is recorded as applied: after a crash between the two, replay
     * applies the entry again, retention included (it is idempotent for a given now_ms); the
     * other order would let replay skip the entry and its retention. The entry's own records
     * are therefore trimmed by the next tick. */
    rc = e->retention != NULL ? spool_store_enforce_retention(f->store, e->retention->now_ms, err) : 0;
    if (rc == 0 && n > 0)
        rc = spool_store_append_batch(f->store, index, (const Spool__Record *const *)ptrs, n, err);
    else if (rc == 0)
        rc = spool_store_mark_applied(f->store, index, err);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < n; i++) /* advice for the leader's reaper: a failure is logged */
        if (spool_pindex_apply(f->presence, ptrs[i]->channel, ptrs[i]) != 0)
            SPOOL_WARN("fsm.presence_index", "index=%llu err=nomem", (unsigned long long)index);
    if (n > 0 && f->on_records != NULL)
        f->on_records(f->cb_arg, (const Spool__Record *const *)ptrs, n);
    if (f->take_result == NULL) {
        *result = r;
        r = NULL;
    } else if (f->take_result(f->take_arg, index, r)) {
        r = NULL;
    }
out:
    if (rc != 0)
        spool_conv_reset(f->conv); /* it may have seen records the store did not take */
    spool_conv_entry_done(f->conv);
    free(gone);
    spool_fsm_result_free(r);
    spool_streams_tx_free(ds);
    spool__entry__free_unpacked(e, &f->arena.pb); /* a no-op on the arena; kept for clarity */
    return rc;
}

/* --- raft_fsm ----------------------------------------------------------------------------- */

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct spool_fsm *f = rf->data;
    struct spool_err err;
    struct spool_fsm_result *r;
    uint64_t index =
        (f->raft ? raft_last_applied(f->raft) : spool_store_applied_index(f->store)) + 1;
    int rc = spool_fsm_apply_entry(f, index, buf->base, buf->len, &r, &err);
    if (rc != 0) {
        SPOOL_ERROR("fsm.apply_failed", "index=%llu code=%s msg=\"%s\"", (unsigned long long)index,
                    spool_err_name(rc), err.msg);
        return rc == SPOOL_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    *result = r;
    return 0;
}

struct snap_buf {
    uint8_t *base;
    size_t len, cap;
};

static int snapshot_write_cb(void *arg, const void *buf, size_t len)
{
    struct snap_buf *s = arg;
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + len)
            cap *= 2;
        uint8_t *p = raft_realloc(s->base, cap);
        if (p == NULL)
            return 1;
        s->base = p;
        s->cap = cap;
    }
    memcpy(s->base + s->len, buf, len);
    s->len += len;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct spool_fsm *f = rf->data;
    struct spool_err err;
    struct snap_buf s = {0};
    int rc = spool_store_sync(f->store, &err);
    if (rc == 0)
        rc = spool_store_snapshot(f->store, snapshot_write_cb, &s, &err);
    if (rc == 0 && (*bufs = raft_malloc(sizeof **bufs)) == NULL)
        rc = spool_err_set(&err, SPOOL_ENOMEM, "snapshot buffer");
    if (rc != 0) {
        SPOOL_ERROR("fsm.snapshot_failed", "code=%s msg=\"%s\"", spool_err_name(rc), err.msg);
        raft_free(s.base);
        return rc == SPOOL_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    (*bufs)[0].base = s.base;
    (*bufs)[0].len = s.len;
    *n_bufs = 1;
    SPOOL_INFO("fsm.snapshot", "applied=%llu bytes=%zu",
               (unsigned long long)spool_store_applied_index(f->store), s.len);
    return 0;
}

static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct spool_fsm *f = rf->data;
    struct spool_err err;
    spool_err_clear(&err);
    uint64_t index = spool_store_snapshot_applied_index(buf->base, buf->len, &err);
    if (err.code != 0) {
        SPOOL_ERROR("fsm.restore_bad", "msg=\"%s\"", err.msg);
        return RAFT_CORRUPT;
    }
    uint64_t applied = spool_store_applied_index(f->store);
    if (index > applied) {
        int rc = spool_store_restore(f->store, buf->base, buf->len, &err);
        if (rc == 0)
            rc = dedup_rebuild(f, &err);
        if (rc == 0)
            rc = spool_pindex_rebuild(f->presence, f->store, 0, &err);
        spool_conv_reset(f->conv);
        marks_load(f); /* the snapshot's fence marks (or none) */
        if (rc != 0) {
            SPOOL_ERROR("fsm.restore_failed", "code=%s msg=\"%s\"", spool_err_name(rc), err.msg);
            return rc == SPOOL_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
        }
        SPOOL_INFO("fsm.restored", "from=%llu to=%llu", (unsigned long long)applied,
                   (unsigned long long)index);
        if (f->on_restored != NULL)
            f->on_restored(f->cb_arg);
    }
    raft_free(buf->base);
    return 0;
}

int spool_fsm_init(struct spool_fsm *f, struct spool_store *store, uint64_t dedup_window_ms,
                   struct spool_err *err)
{
    memset(f, 0, sizeof *f);
    f->store = store;
    spool_arena_init(&f->arena);
    spool_dedup_init(&f->dedup, dedup_window_ms, DEDUP_MAX_ENTRIES);
    f->raft_fsm.version = 3;
    f->raft_fsm.data = f;
    f->raft_fsm.apply = fsm_apply;
    f->raft_fsm.snapshot = fsm_snapshot;
    f->raft_fsm.restore = fsm_restore;
    f->raft_fsm.snapshot_finalize = NULL; /* libraft frees the snapshot buffers */
    f->raft_fsm.snapshot_async = NULL;
    if ((f->conv = spool_conv_new(store, NULL)) == NULL ||
        (f->presence = spool_pindex_new()) == NULL) {
        spool_dedup_close(&f->dedup);
        spool_conv_free(f->conv);
        f->conv = NULL;
        return spool_err_set(err, SPOOL_ENOMEM, "conversation state: out of memory");
    }
    marks_load(f);
    int rc = dedup_rebuild(f, err);
    if (rc == 0)
        rc = spool_pindex_rebuild(f->presence, store, 0, err);
    if (rc != 0) {
        spool_dedup_close(&f->dedup);
        spool_conv_free(f->conv);
        f->conv = NULL;
        spool_pindex_free(f->presence);
        f->presence = NULL;
    }
    return rc;
}

int spool_fsm_set_conv_limits(struct spool_fsm *f, const struct spool_conv_config *cfg,
                              struct spool_err *err)
{
    struct spool_conv *c = spool_conv_new(f->store, cfg);
    if (c == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "conversation state: out of memory");
    spool_conv_free(f->conv);
    f->conv = c;
    return 0;
}

void spool_fsm_close(struct spool_fsm *f)
{
    spool_arena_close(&f->arena);
    spool_dedup_close(&f->dedup);
    spool_conv_free(f->conv);
    f->conv = NULL;
    spool_pindex_free(f->presence);
    f->presence = NULL;
}
