/*
 * The applied store: open/close, batch appends, reads, sync and stats. The other parts of the
 * engine live beside it (list in storage/store_int.h); this file keeps the hot paths.
 *
 * Append path. append_batch validates the whole batch first (every seq must continue its
 * channel, counting earlier records of the same batch), so a rejected batch writes nothing.
 * It then encodes every record straight into one reused buffer as RECORD frames, adds the
 * COMMIT frame carrying the Raft index and the record count, and hands the buffer to a single
 * pwrite at the end of the active segment. Only then does memory change: index entries, tail
 * cache, applied index. A batch never spans segments: when it does not fit, a new segment is
 * started first (the full one is sealed a slice per append, storage/seal.c), so "a COMMIT frame
 * closes the records just before it" holds within one file. Nothing is fsynced here;
 * spool_store_sync() does that.
 *
 * Read path. A channel's index maps seq -> (segment, raw offset, length, timestamp), so a read
 * goes straight to the record: the tail cache if the seq is recent, else one pread of the frame
 * (active segment) or one block decompression (sealed segment; the last few decompressed blocks
 * are kept, so a scan through a block decompresses it once). Every frame is checksummed before
 * it is decoded. Decoding allocates from a reused arena, not malloc.
 */
#include "storage/store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/format.h"

#define MAX_BATCH_BYTES (1ull << 30)
#define BIG_BUFFER (8u << 20) /* scratch buffers above this are given back after use */

void spool_store_config_defaults(struct spool_store_config *cfg)
{
    if (cfg->segment_bytes == 0) cfg->segment_bytes = 64ull << 20;
    if (cfg->block_bytes == 0) cfg->block_bytes = 64u << 10;
    if (cfg->tail_cache_bytes == 0) cfg->tail_cache_bytes = 64ull << 20;
    if (cfg->tail_cache_entries == 0) cfg->tail_cache_entries = 1024;
}

int spool_store_init_mem(struct spool_store *s, const struct spool_store_config *cfg,
                         struct spool_err *err)
{
    *s = (struct spool_store){0};
    s->cfg = *cfg;
    spool_store_config_defaults(&s->cfg);
    /* Raw offsets are 32-bit: keep segments well below 4 GiB even with one huge batch. */
    if (s->cfg.segment_bytes < 1024) s->cfg.segment_bytes = 1024;
    if (s->cfg.segment_bytes > (1ull << 30)) s->cfg.segment_bytes = 1ull << 30;
    if (s->cfg.block_bytes < 256) s->cfg.block_bytes = 256;
    if (s->cfg.block_bytes > (16u << 20)) s->cfg.block_bytes = 16u << 20;
    s->cfg.dir = NULL;
    s->lock_fd = -1;
    spool_chanmap_init(&s->chans);
    spool_tailcache_init(&s->tail, s->cfg.tail_cache_bytes, s->cfg.tail_cache_entries);
    spool_arena_init(&s->arena);
    (void)err;
    return 0;
}

void spool_store_free_mem(struct spool_store *s)
{
    spool_store_seal_abort(s); /* the .log stays; the next open seals it */
    spool_tailcache_close(&s->tail);
    spool_chanmap_close(&s->chans);
    for (size_t i = 0; i < s->nsegs; i++) spool_seg_close(&s->segs[i]);
    free(s->segs);
    for (int i = 0; i < SPOOL_BLOCK_CACHE; i++) free(s->blocks[i].buf);
    spool_arena_close(&s->arena);
    free(s->wbuf);
    free(s->rbuf);
    free(s->batch_chans);
    free(s->state);
    free(s->root);
    free(s->dir);
    if (s->lock_fd >= 0) close(s->lock_fd);
    *s = (struct spool_store){.lock_fd = -1};
}

int spool_store_open(struct spool_store **out, const struct spool_store_config *cfg,
                     struct spool_err *err)
{
    *out = NULL;
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == '\0')
        return spool_err_set(err, SPOOL_EINVAL, "store: no directory");
    struct spool_store *s = malloc(sizeof *s);
    if (s == NULL) return spool_err_set(err, SPOOL_ENOMEM, "store");
    int rv = spool_store_init_mem(s, cfg, err);
    if (rv == 0 && (s->root = strdup(cfg->dir)) == NULL) rv = spool_err_set(err, SPOOL_ENOMEM, "store");
    if (rv == 0) rv = spool_gen_lock(s->root, &s->lock_fd, err);
    if (rv == 0) rv = spool_gen_open(s->root, &s->gen, &s->dir, err);
    if (rv == 0) rv = spool_store_recover(s, err);
    if (rv != 0) {
        spool_store_free_mem(s);
        free(s);
        return rv;
    }
    *out = s;
    return 0;
}

void spool_store_close(struct spool_store *s)
{
    if (s == NULL) return;
    spool_store_free_mem(s);
    free(s);
}

/* ---- segments ---- */

struct spool_segment *spool_store_seg(struct spool_store *s, uint32_t id)
{
    size_t lo = 0, hi = s->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->segs[mid].id == id) return &s->segs[mid];
        if (s->segs[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int spool_store_add_seg(struct spool_store *s, const struct spool_segment *seg, struct spool_err *err)
{
    if (s->nsegs == s->capsegs) {
        size_t n = s->capsegs ? s->capsegs * 2 : 16;
        struct spool_segment *a = realloc(s->segs, n * sizeof *a);
        if (a == NULL) return spool_err_set(err, SPOOL_ENOMEM, "segment table");
        s->segs = a;
        s->capsegs = n;
    }
    size_t i = s->nsegs;
    while (i > 0 && s->segs[i - 1].id > seg->id) i--;
    memmove(&s->segs[i + 1], &s->segs[i], (s->nsegs - i) * sizeof *s->segs);
    s->segs[i] = *seg;
    s->nsegs++;
    return 0;
}

void spool_store_forget_blocks(struct spool_store *s, uint32_t seg)
{
    for (int i = 0; i < SPOOL_BLOCK_CACHE; i++)
        if (s->blocks[i].seg == seg) s->blocks[i].seg = 0;
}

void spool_store_remove_seg(struct spool_store *s, uint32_t id)
{
    struct spool_segment *seg = spool_store_seg(s, id);
    if (seg == NULL) return;
    spool_store_forget_blocks(s, id);
    spool_seg_close(seg);
    size_t i = (size_t)(seg - s->segs);
    memmove(&s->segs[i], &s->segs[i + 1], (s->nsegs - i - 1) * sizeof *s->segs);
    s->nsegs--;
}

int spool_store_ensure_room(struct spool_store *s, size_t len, struct spool_err *err)
{
    struct spool_segment *act = spool_store_active(s);
    if (act != NULL && act->size > SPOOL_SEG_HDR && act->size + len > s->cfg.segment_bytes) {
        /* The full segment keeps serving reads as a .log while it is sealed bit by bit. */
        struct spool_err serr = {0};
        if (spool_store_seal_begin(s, act, &serr) != 0)
            SPOOL_WARN("store.seal_failed", "segment=%u msg=\"%s\"", act->id, serr.msg);
        act = NULL;
    }
    if (act != NULL) return 0;
    uint32_t id = s->nsegs > 0 ? s->segs[s->nsegs - 1].id + 1 : 1;
    uint64_t prev = s->nsegs > 0 ? s->segs[s->nsegs - 1].size : 0;
    struct spool_segment seg;
    int rv = spool_seg_create(&seg, s->dir, id, err);
    if (rv != 0) return rv;
    rv = spool_store_add_seg(s, &seg, err);
    if (rv != 0) {
        spool_seg_close(&seg);
        return rv;
    }
    s->dir_dirty = true;
    if (id == 1) return 0;
    uint8_t f[SPOOL_FRAME_HDR + SPOOL_START_LEN];
    spool_put_u64(f + SPOOL_FRAME_HDR, prev);
    spool_put_u64(f + SPOOL_FRAME_HDR + 8, s->applied_index);
    spool_frame_finish(f, SPOOL_FRAME_START, SPOOL_START_LEN);
    rv = spool_seg_append(spool_store_active(s), f, sizeof f, err);
    if (rv != 0) { /* a segment without its START would be distrusted: never keep one */
        char path[4096];
        spool_seg_path(path, sizeof path, s->dir, id, ".log");
        spool_store_remove_seg(s, id);
        unlink(path);
    }
    return rv;
}

/* Sealing work owed for `len` bytes just appended: enough that a segment is sealed well before
 * the next one fills. */
static void seal_pace(struct spool_store *s, size_t len)
{
    if (s->sealing.on) spool_store_seal_step(s, 4 * (uint64_t)len + (64u << 10));
}

int spool_store_write(struct spool_store *s, const uint8_t *buf, size_t len, struct spool_err *err)
{
    int rv = spool_store_ensure_room(s, len, err);
    if (rv == 0) rv = spool_seg_append(spool_store_active(s), buf, len, err);
    if (rv == 0) seal_pace(s, len);
    return rv;
}

int spool_store_grow_wbuf(struct spool_store *s, size_t need, struct spool_err *err)
{
    if (s->wcap >= need) return 0;
    size_t n = s->wcap ? s->wcap : 4096;
    while (n < need) n *= 2;
    uint8_t *b = realloc(s->wbuf, n);
    if (b == NULL) return spool_err_set(err, SPOOL_ENOMEM, "write buffer of %zu bytes", n);
    s->wbuf = b;
    s->wcap = n;
    return 0;
}

/* ---- index bookkeeping ---- */

/* spool_store_index with the entry's segment already at hand (NULL: none). */
static int index_in(struct spool_chan *c, uint64_t seq, const struct spool_entry *e,
                    struct spool_segment *seg)
{
    if (spool_chan_push(c, seq, e) != 0) return -1;
    uint64_t fb = SPOOL_FRAME_HDR + (uint64_t)e->len;
    c->bytes += fb;
    if (seg != NULL) {
        seg->live_records++;
        seg->live_bytes += fb;
        seg->record_bytes += fb;
    }
    return 0;
}

int spool_store_index(struct spool_store *s, struct spool_chan *c, uint64_t seq,
                      const struct spool_entry *e)
{
    return index_in(c, seq, e, spool_store_seg(s, e->seg));
}

/* A stored record stops being live: its frame bytes leave the channel's count and its segment's
 * live counts (which decide when the segment is reclaimed). */
static void entry_dead(struct spool_store *s, struct spool_chan *c, const struct spool_entry *e)
{
    uint64_t fb = SPOOL_FRAME_HDR + (uint64_t)e->len;
    c->bytes -= fb;
    struct spool_segment *seg = spool_store_seg(s, e->seg);
    if (seg != NULL) {
        seg->live_records--;
        seg->live_bytes -= fb;
    }
}

void spool_store_trim(struct spool_store *s, struct spool_chan *c, uint64_t first)
{
    size_t n = 0;
    for (uint64_t seq = c->base; n < c->count && seq < first; seq++, n++) {
        const struct spool_entry *e = &c->ent[c->head + n];
        if (e->seg != 0) entry_dead(s, c, e);
    }
    spool_chan_drop_front(c, n);
    spool_tail_trim(&s->tail, c, first);
}

void spool_store_mark_hole(struct spool_store *s, struct spool_chan *c, uint64_t seq)
{
    struct spool_entry *e = spool_chan_at(c, seq);
    if (e == NULL || e->seg == 0) return;
    entry_dead(s, c, e);
    e->seg = 0;
}

/* ---- appends ---- */

static int encode_commit(struct spool_store *s, size_t pos, uint64_t raft_index, uint32_t count)
{
    uint8_t *f = s->wbuf + pos;
    spool_put_u64(f + SPOOL_FRAME_HDR, raft_index);
    spool_put_u32(f + SPOOL_FRAME_HDR + 8, count);
    spool_frame_finish(f, SPOOL_FRAME_COMMIT, SPOOL_COMMIT_LEN);
    return (int)(SPOOL_FRAME_HDR + SPOOL_COMMIT_LEN);
}

int spool_store_mark_applied(struct spool_store *s, uint64_t raft_index, struct spool_err *err)
{
    if (raft_index < s->applied_index)
        return spool_err_set(err, SPOOL_EINVAL, "raft index %" PRIu64 " is below applied index %" PRIu64,
                             raft_index, s->applied_index);
    int rv = spool_store_grow_wbuf(s, SPOOL_FRAME_HDR + SPOOL_COMMIT_LEN, err);
    if (rv != 0) return rv;
    int len = encode_commit(s, 0, raft_index, 0);
    rv = spool_store_write(s, s->wbuf, (size_t)len, err);
    if (rv != 0) return rv;
    s->applied_index = raft_index;
    return 0;
}

/* Checks the whole batch before anything is written; fills s->batch_chans. */
static int validate_batch(struct spool_store *s, const Spool__Record *const *recs, size_t n,
                          size_t *total, struct spool_err *err)
{
    if (s->batch_cap < n) {
        struct spool_chan **a = realloc(s->batch_chans, n * sizeof *a);
        if (a == NULL) return spool_err_set(err, SPOOL_ENOMEM, "batch of %zu records", n);
        s->batch_chans = a;
        s->batch_cap = n;
    }
    uint64_t gen = ++s->batch_gen;
    uint64_t bytes = SPOOL_FRAME_HDR + SPOOL_COMMIT_LEN;
    for (size_t i = 0; i < n; i++) {
        const Spool__Record *r = recs[i];
        if (r == NULL || r->channel == NULL || r->channel[0] == '\0')
            return spool_err_set(err, SPOOL_EINVAL, "record %zu of the batch has no channel", i);
        struct spool_chan *c = spool_chanmap_put(&s->chans, r->channel);
        if (c == NULL) return spool_err_set(err, SPOOL_ENOMEM, "channel table");
        if (c->batch_gen != gen) {
            c->batch_gen = gen;
            c->batch_seq = c->last_seq;
        }
        if (r->seq != c->batch_seq + 1)
            return spool_err_set(err, SPOOL_ECONFLICT, "channel %s: seq %" PRIu64 ", expected %" PRIu64,
                                 r->channel, r->seq, c->batch_seq + 1);
        c->batch_seq++;
        size_t sz = spool__record__get_packed_size(r);
        if (sz > SPOOL_RECORD_MAX)
            return spool_err_set(err, SPOOL_EINVAL, "record of %zu bytes is over the %u limit", sz,
                                 SPOOL_RECORD_MAX);
        bytes += SPOOL_FRAME_HDR + sz;
        if (bytes > MAX_BATCH_BYTES) return spool_err_set(err, SPOOL_EINVAL, "batch over 1 GiB");
        s->batch_chans[i] = c;
    }
    *total = (size_t)bytes;
    return 0;
}

/* Writes the batch whose channels validate_batch (or the loader) put in s->batch_chans. */
static int write_batch(struct spool_store *s, uint64_t raft_index, const Spool__Record *const *recs,
                       size_t n, size_t total, struct spool_err *err)
{
    int rv = spool_store_grow_wbuf(s, total, err);
    if (rv == 0) rv = spool_store_ensure_room(s, total, err); /* may roll: before taking offsets */
    if (rv != 0) return rv;
    /* The index and tail-cache lines each record will write are cold (a batch usually spans
     * many channels): start loading them now, so the loads overlap the encoding and the
     * write instead of stalling the bookkeeping loop below one record at a time. */
    for (size_t i = 0; i < n; i++) {
        const struct spool_chan *c = s->batch_chans[i];
        const struct spool_tail *t = &c->tail;
        if (c->head + c->count < c->cap) __builtin_prefetch(&c->ent[c->head + c->count], 1);
        if (t->cap > 0) __builtin_prefetch(&t->slots[(t->head + t->count) % t->cap], 1);
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t sz = spool__record__pack(recs[i], s->wbuf + pos + SPOOL_FRAME_HDR);
        spool_frame_finish(s->wbuf + pos, SPOOL_FRAME_RECORD, (uint32_t)sz);
        pos += SPOOL_FRAME_HDR + sz;
    }
    pos += (size_t)encode_commit(s, pos, raft_index, (uint32_t)n);
    for (size_t i = 0; i < n; i++) { /* the slot buffers the tail cache will copy into */
        const struct spool_tail *t = &s->batch_chans[i]->tail;
        if (t->cap > 0 && t->count > 0) {
            const struct spool_tail_slot *sl = &t->slots[(t->head + t->count) % t->cap];
            if (sl->buf != NULL) __builtin_prefetch(sl->buf, 1);
        }
    }
    struct spool_segment *act = spool_store_active(s);
    uint64_t base = act->size;
    rv = spool_seg_append(act, s->wbuf, pos, err);
    if (rv != 0) return rv;
    pos = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = spool_get_u32(s->wbuf + pos) & SPOOL_FRAME_MAX;
        struct spool_entry e = {.seg = act->id, .off = (uint32_t)(base + pos), .len = len,
                                .ts = recs[i]->timestamp_ms};
        struct spool_chan *c = s->batch_chans[i];
        if (index_in(c, recs[i]->seq, &e, act) != 0)
            return spool_err_set(err, SPOOL_ENOMEM, "index of channel %s", c->name);
        spool_tail_put(&s->tail, c, recs[i]->seq, s->wbuf + pos + SPOOL_FRAME_HDR, len);
        pos += SPOOL_FRAME_HDR + len;
    }
    s->applied_index = raft_index;
    seal_pace(s, total);
    if (s->wcap > BIG_BUFFER) { /* one huge batch must not pin its buffer forever */
        free(s->wbuf);
        s->wbuf = NULL;
        s->wcap = 0;
    }
    return 0;
}

int spool_store_append_batch(struct spool_store *s, uint64_t raft_index, const Spool__Record *const *recs,
                             size_t n, struct spool_err *err)
{
    if (raft_index <= s->applied_index)
        return spool_err_set(err, SPOOL_EINVAL, "raft index %" PRIu64 " already applied (applied %" PRIu64 ")",
                             raft_index, s->applied_index);
    if (n == 0) return spool_store_mark_applied(s, raft_index, err);
    if (n > UINT32_MAX) return spool_err_set(err, SPOOL_EINVAL, "batch too large");
    size_t total = 0;
    int rv = validate_batch(s, recs, n, &total, err);
    if (rv != 0) return rv;
    return write_batch(s, raft_index, recs, n, total, err);
}

int spool_store_load_batch(struct spool_store *s, uint64_t raft_index, const Spool__Record *const *recs,
                           size_t n, struct spool_err *err)
{
    if (s->batch_cap < n) {
        struct spool_chan **a = realloc(s->batch_chans, n * sizeof *a);
        if (a == NULL) return spool_err_set(err, SPOOL_ENOMEM, "batch of %zu records", n);
        s->batch_chans = a;
        s->batch_cap = n;
    }
    size_t total = SPOOL_FRAME_HDR + SPOOL_COMMIT_LEN;
    for (size_t i = 0; i < n; i++) {
        struct spool_chan *c = spool_chanmap_put(&s->chans, recs[i]->channel);
        if (c == NULL) return spool_err_set(err, SPOOL_ENOMEM, "channel table");
        if (c->count > 0 && recs[i]->seq < c->base + c->count)
            return spool_err_set(err, SPOOL_ECORRUPT, "channel %s: seq %" PRIu64 " out of order",
                                 c->name, recs[i]->seq);
        s->batch_chans[i] = c;
        total += SPOOL_FRAME_HDR + spool__record__get_packed_size(recs[i]);
    }
    return write_batch(s, raft_index, recs, n, total, err);
}

int spool_store_payload(struct spool_store *s, struct spool_chan *c, uint64_t seq, const uint8_t **p,
                        uint32_t *len, struct spool_err *err)
{
    if (spool_tail_get(c, seq, p, len)) {
        s->tail_hits++;
        return 0;
    }
    const struct spool_entry *e = spool_chan_at(c, seq);
    if (e == NULL) return spool_err_set(err, SPOOL_ENOENT, "channel %s has no seq %" PRIu64, c->name, seq);
    int rv = spool_store_fetch(s, e, p, err);
    if (rv != 0) return spool_err_wrap(err, "channel %s seq %" PRIu64, c->name, seq);
    *len = e->len;
    return 0;
}

int spool_store_sync(struct spool_store *s, struct spool_err *err)
{
    /* The active segment and any full one whose seal is not finished, if written since their
     * last sync (sealed files were fsynced when written). */
    for (size_t i = 0; i < s->nsegs; i++) {
        struct spool_segment *seg = &s->segs[i];
        if (seg->sealed || seg->synced) continue;
        if (spool_fsync_fd(seg->fd, &s->io) != 0)
            return spool_err_set(err, SPOOL_EIO, "fdatasync segment %u: %s", seg->id, strerror(errno));
        seg->synced = true;
    }
    if (s->dir_dirty) {
        int rv = spool_fsync_dir(s->dir, &s->io, err);
        if (rv != 0) return rv;
        s->dir_dirty = false;
    }
    return 0;
}

/* ---- reads ---- */

uint64_t spool_store_applied_index(const struct spool_store *s) { return s->applied_index; }

uint64_t spool_store_last_seq(const struct spool_store *s, const char *channel)
{
    const struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    return c != NULL ? c->last_seq : 0;
}

int64_t spool_store_newest_ts(const struct spool_store *s, const char *channel, uint64_t *last_seq)
{
    const struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (last_seq != NULL) *last_seq = c != NULL ? c->last_seq : 0;
    if (c == NULL || c->count == 0) return INT64_MIN;
    return c->ent[c->head + c->count - 1].ts;
}

void spool_store_newest_ts_many(const struct spool_store *s, const char *const *channels, size_t n,
                                int64_t *ts, uint64_t *last_seq)
{
    enum { CHUNK = 32 };
    uint64_t h[CHUNK];
    const struct spool_chan *c[CHUNK];
    for (size_t at = 0; at < n; at += CHUNK) {
        size_t k = n - at < CHUNK ? n - at : CHUNK;
        /* Each stage only starts loads the next one uses, so a chunk's misses overlap. */
        for (size_t i = 0; i < k; i++) {
            h[i] = spool_chanmap_hash(channels[at + i]);
            const void *slot = spool_chanmap_slot(&s->chans, h[i]);
            if (slot != NULL) __builtin_prefetch(slot);
        }
        for (size_t i = 0; i < k; i++) {
            const void *slot = spool_chanmap_slot(&s->chans, h[i]);
            if (slot != NULL && *(struct spool_chan *const *)slot != NULL)
                __builtin_prefetch(*(struct spool_chan *const *)slot);
        }
        for (size_t i = 0; i < k; i++) {
            c[i] = spool_chanmap_get_hashed(&s->chans, channels[at + i], h[i]);
            if (c[i] != NULL && c[i]->count > 0)
                __builtin_prefetch(&c[i]->ent[c[i]->head + c[i]->count - 1]);
        }
        for (size_t i = 0; i < k; i++) {
            last_seq[at + i] = c[i] != NULL ? c[i]->last_seq : 0;
            ts[at + i] = c[i] == NULL || c[i]->count == 0 ? INT64_MIN
                                                          : c[i]->ent[c[i]->head + c[i]->count - 1].ts;
        }
    }
}

uint64_t spool_store_first_seq(const struct spool_store *s, const char *channel)
{
    const struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    return c != NULL ? spool_chan_first(c) : 1;
}

static struct spool_block_cache *block_get(struct spool_store *s, struct spool_segment *seg,
                                           uint32_t bi, struct spool_err *err, int *rv)
{
    struct spool_block_cache *victim = &s->blocks[0];
    for (int i = 0; i < SPOOL_BLOCK_CACHE; i++) {
        struct spool_block_cache *b = &s->blocks[i];
        if (b->seg == seg->id && b->block == bi) {
            b->used = ++s->block_tick;
            return b;
        }
        if (b->used < victim->used) victim = b;
    }
    victim->seg = 0;
    *rv = spool_seg_read_block(seg, bi, &victim->buf, &victim->cap, &s->io, err);
    if (*rv != 0) return NULL;
    victim->seg = seg->id;
    victim->block = bi;
    victim->len = seg->blocks[bi].raw_len;
    victim->used = ++s->block_tick;
    return victim;
}

int spool_store_fetch(struct spool_store *s, const struct spool_entry *e, const uint8_t **payload,
                      struct spool_err *err)
{
    struct spool_segment *seg = e->seg != 0 ? spool_store_seg(s, e->seg) : NULL;
    if (seg == NULL) return spool_err_set(err, SPOOL_ECORRUPT, "record lost to corruption");
    const uint8_t *buf;
    size_t avail;
    if (!seg->sealed) {
        size_t need = SPOOL_FRAME_HDR + (size_t)e->len;
        if (s->rcap < need || (s->rcap > BIG_BUFFER && need <= BIG_BUFFER)) {
            uint8_t *b = realloc(s->rbuf, need);
            if (b == NULL) return spool_err_set(err, SPOOL_ENOMEM, "read buffer");
            s->rbuf = b;
            s->rcap = need;
        }
        int rv = spool_seg_pread(seg, e->off, s->rbuf, need, &s->io, err);
        if (rv != 0) return rv;
        buf = s->rbuf;
        avail = need;
    } else {
        uint32_t bi = spool_seg_find_block(seg, e->off);
        if (bi >= seg->nblocks)
            return spool_err_set(err, SPOOL_ECORRUPT, "segment %u has no block at %u", seg->id, e->off);
        int rv = 0;
        struct spool_block_cache *b = block_get(s, seg, bi, err, &rv);
        if (b == NULL) return rv;
        size_t at = e->off - seg->blocks[bi].raw_off;
        buf = b->buf + at;
        avail = b->len - at;
    }
    struct spool_frame f;
    if (spool_frame_parse(buf, avail, &f) != SPOOL_FRAME_OK || f.type != SPOOL_FRAME_RECORD ||
        f.len != e->len)
        return spool_err_set(err, SPOOL_ECORRUPT, "segment %u offset %u: bad record frame", seg->id,
                             e->off);
    *payload = f.payload;
    return 0;
}

/* Decodes record `seq` of `c` and hands it to the visitor: 0 go on, 1 stop, else an error. */
static int visit(struct spool_store *s, struct spool_chan *c, uint64_t seq, spool_store_visit_cb cb,
                 void *arg, struct spool_err *err)
{
    const uint8_t *p;
    uint32_t len;
    int rv = spool_store_payload(s, c, seq, &p, &len, err);
    if (rv != 0) return rv;
    struct spool_arena_mark m = spool_arena_mark(&s->arena);
    Spool__Record *r = spool__record__unpack(&s->arena.pb, len, p);
    if (r == NULL || r->seq != seq || strcmp(r->channel, c->name) != 0)
        rv = spool_err_set(err, SPOOL_ECORRUPT, "channel %s seq %" PRIu64 ": record does not decode",
                           c->name, seq);
    else if (cb(arg, r) != 0)
        rv = 1;
    spool_arena_release(&s->arena, m);
    return rv;
}

int spool_store_read(struct spool_store *s, const char *channel, uint64_t after_seq, size_t limit,
                     spool_store_visit_cb cb, void *arg, struct spool_err *err)
{
    struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (c == NULL || c->count == 0) return 0;
    uint64_t seq = after_seq + 1 > c->base ? after_seq + 1 : c->base;
    size_t n = 0;
    for (; seq < c->base + c->count && (limit == 0 || n < limit); seq++, n++) {
        int rv = visit(s, c, seq, cb, arg, err);
        if (rv != 0) return rv == 1 ? 0 : rv;
    }
    return 0;
}

int spool_store_read_backward(struct spool_store *s, const char *channel, uint64_t before_seq,
                              size_t limit, spool_store_visit_cb cb, void *arg,
                              struct spool_err *err)
{
    struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (c == NULL || c->count == 0) return 0;
    uint64_t end = c->base + c->count; /* one past the newest */
    if (before_seq != 0 && before_seq < end) end = before_seq;
    size_t n = 0;
    for (uint64_t seq = end; seq > c->base && (limit == 0 || n < limit); seq--, n++) {
        int rv = visit(s, c, seq - 1, cb, arg, err);
        if (rv != 0) return rv == 1 ? 0 : rv;
    }
    return 0;
}

uint64_t spool_store_seq_at_time(struct spool_store *s, const char *channel, int64_t ts_ms)
{
    const struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (c == NULL) return 1;
    size_t lo = 0, hi = c->count; /* timestamps are non-decreasing per channel */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ent[c->head + mid].ts < ts_ms) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->count ? c->base + lo : c->last_seq + 1;
}

int spool_store_channels(const struct spool_store *s, int (*cb)(void *arg, const char *channel),
                         void *arg)
{
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (!spool_chan_listed(c)) continue;
        if (cb(arg, c->name) != 0) return 0;
    }
    return 0;
}

void spool_store_stats(const struct spool_store *s, struct spool_store_stats *out)
{
    *out = (struct spool_store_stats){0};
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (!spool_chan_listed(c)) continue;
        out->channels++;
        out->records += c->count;
    }
    for (size_t i = 0; i < s->nsegs; i++) {
        const struct spool_segment *seg = &s->segs[i];
        out->segments++;
        out->bytes_on_disk += seg->file_bytes;
        if (seg->sealed) {
            out->sealed_segments++;
            out->raw_bytes_sealed += seg->size;
        }
    }
    out->tail_cache_bytes = s->tail.bytes;
    out->tail_cache_hits = s->tail_hits;
    out->disk_reads = s->io.disk_reads;
    out->fsyncs = s->io.fsyncs;
    out->fsync_ns_total = s->io.fsync_ns;
}
