/*
 * Channel state changes other than appends: retention overrides, trimming by age / count /
 * bytes, deleting a channel, and reclaiming the space trimmed records held.
 *
 * Each change is written as a META frame carrying the channel's whole state (first_seq,
 * last_seq, retention override), in log order with the batches, so recovery replays it at the
 * right point and a crash loses a change and the batches after it together. first_seq only
 * rises when replayed, so replaying an older META before a newer one is harmless.
 *
 * Reclaiming space: a sealed segment whose records are all dead is deleted; one whose live
 * bytes fell under half of what it holds is compacted (storage/seal.c). Deleting a segment
 * also deletes the META and COMMIT frames inside it, so first a checkpoint is written to the
 * active segment (a COMMIT of the applied index with no records and a META for every channel)
 * and synced, with a STATE frame for the owner's shard state: after that no deleted frame
 * carries information the log does not repeat later.
 *
 * enforce_retention runs with a timestamp from the Raft entry that asked for it, so every
 * replica trims the same records.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "proto/snapshot.pb-c.h"
#include "storage/format.h"
#include "storage/store_int.h"

int spool_store_put_state(struct spool_store *s, const Spool__ChannelState *st,
                          struct spool_chan **out, struct spool_err *err)
{
    struct spool_chan *c = spool_chanmap_put(&s->chans, st->name);
    if (c == NULL) return spool_err_set(err, SPOOL_ENOMEM, "channel table");
    if (st->reset) { /* an import restarted the channel here (storage/import.c) */
        if (c->count > 0) spool_store_trim(s, c, c->base + c->count);
        c->last_seq = st->last_seq;
        c->base = st->last_seq + 1;
    } else {
        if (st->last_seq > c->last_seq) c->last_seq = st->last_seq;
        if (st->first_seq > spool_chan_first(c)) spool_store_trim(s, c, st->first_seq);
    }
    c->has_retention = st->retention != NULL;
    if (st->retention != NULL)
        c->retention = (struct spool_retention){.max_age_ms = st->retention->max_age_ms,
                                                .max_count = st->retention->max_count,
                                                .max_bytes = st->retention->max_bytes};
    if (out != NULL) *out = c;
    return 0;
}

void spool_chan_state(const struct spool_chan *c, Spool__ChannelState *st, Spool__Retention *ret)
{
    spool__channel_state__init(st);
    spool__retention__init(ret);
    st->name = c->name;
    st->first_seq = spool_chan_first(c);
    st->last_seq = c->last_seq;
    if (c->has_retention) {
        ret->max_age_ms = c->retention.max_age_ms;
        ret->max_count = c->retention.max_count;
        ret->max_bytes = c->retention.max_bytes;
        st->retention = ret;
    }
}

int spool_store_apply_meta(struct spool_store *s, const uint8_t *payload, uint32_t len,
                           struct spool_err *err)
{
    Spool__ChannelState *st = spool__channel_state__unpack(&s->arena.pb, len, payload);
    int rv;
    if (st == NULL || st->name == NULL || st->name[0] == '\0' || st->first_seq > st->last_seq + 1)
        rv = spool_err_set(err, SPOOL_ECORRUPT, "bad channel state");
    else
        rv = spool_store_put_state(s, st, NULL, err);
    spool_arena_reset(&s->arena);
    return rv;
}

int spool_store_write_meta(struct spool_store *s, struct spool_chan *c, struct spool_err *err)
{
    return spool_store_write_meta_reset(s, c, false, err);
}

int spool_store_write_meta_reset(struct spool_store *s, struct spool_chan *c, bool reset,
                                 struct spool_err *err)
{
    Spool__ChannelState st;
    Spool__Retention ret;
    spool_chan_state(c, &st, &ret);
    st.reset = reset;
    size_t len = spool__channel_state__get_packed_size(&st);
    int rv = spool_store_grow_wbuf(s, SPOOL_FRAME_HDR + len, err);
    if (rv != 0) return rv;
    spool__channel_state__pack(&st, s->wbuf + SPOOL_FRAME_HDR);
    spool_frame_finish(s->wbuf, SPOOL_FRAME_META, (uint32_t)len);
    return spool_store_write(s, s->wbuf, SPOOL_FRAME_HDR + len, err);
}

int spool_store_set_retention(struct spool_store *s, const char *channel,
                              const struct spool_retention *r, struct spool_err *err)
{
    if (channel == NULL || channel[0] == '\0') return spool_err_set(err, SPOOL_EINVAL, "no channel");
    struct spool_chan *c = spool_chanmap_put(&s->chans, channel);
    if (c == NULL) return spool_err_set(err, SPOOL_ENOMEM, "channel table");
    c->has_retention = r != NULL;
    if (r != NULL) c->retention = *r;
    return spool_store_write_meta(s, c, err);
}

int spool_store_delete_channel(struct spool_store *s, const char *channel, struct spool_err *err)
{
    struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (c == NULL || c->count == 0) return 0; /* nothing retained: nothing to say */
    spool_store_trim(s, c, c->last_seq + 1);
    return spool_store_write_meta(s, c, err);
}

/* The first seq `c` keeps under `r` as of now_ms. */
static uint64_t retained_from(const struct spool_chan *c, const struct spool_retention *r, int64_t now_ms)
{
    uint64_t first = c->base, end = c->base + c->count;
    if (r->max_count != 0 && c->count > r->max_count) first = end - r->max_count;
    if (r->max_age_ms != 0 && (uint64_t)now_ms > r->max_age_ms) {
        int64_t cutoff = now_ms - (int64_t)r->max_age_ms;
        while (first < end && spool_chan_at(c, first)->ts < cutoff) first++;
    }
    if (r->max_bytes != 0) {
        uint64_t bytes = c->bytes;
        for (uint64_t q = c->base; q < first; q++) {
            const struct spool_entry *e = spool_chan_at(c, q);
            if (e->seg != 0) bytes -= SPOOL_FRAME_HDR + (uint64_t)e->len;
        }
        for (; first < end && bytes > r->max_bytes; first++) {
            const struct spool_entry *e = spool_chan_at(c, first);
            if (e->seg != 0) bytes -= SPOOL_FRAME_HDR + (uint64_t)e->len;
        }
    }
    return first;
}

/* Makes the log self-sufficient without any sealed segment's META/COMMIT frames. */
static int checkpoint(struct spool_store *s, struct spool_err *err)
{
    int rv = spool_store_mark_applied(s, s->applied_index, err);
    if (rv == 0) rv = spool_store_write_shard_state(s, err);
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (rv != 0) break;
        if (spool_chan_listed(c)) rv = spool_store_write_meta(s, c, err);
    }
    if (rv == 0) rv = spool_store_sync(s, err);
    return rv;
}

int spool_store_enforce_retention(struct spool_store *s, int64_t now_ms, struct spool_err *err)
{
    int rv = 0;
    uint64_t trimmed = 0;
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (c->count == 0) continue;
        const struct spool_retention *r = c->has_retention ? &c->retention : &s->cfg.retention;
        uint64_t first = retained_from(c, r, now_ms);
        if (first == c->base) continue;
        trimmed += first - c->base;
        spool_store_trim(s, c, first);
        if ((rv = spool_store_write_meta(s, c, err)) != 0) return rv;
    }
    /* Candidates are chosen before the checkpoint: a segment the checkpoint itself fills and
     * seals holds no records either, but it is the checkpoint. */
    uint32_t *dead = NULL;
    size_t ndead = 0;
    for (size_t i = 0; i < s->nsegs; i++) {
        if (!s->segs[i].sealed || s->segs[i].live_records > 0) continue;
        uint32_t *d = realloc(dead, (ndead + 1) * sizeof *d);
        if (d == NULL) {
            free(dead);
            return spool_err_set(err, SPOOL_ENOMEM, "segment list");
        }
        dead = d;
        dead[ndead++] = s->segs[i].id;
    }
    if (ndead > 0 && (rv = checkpoint(s, err)) != 0) {
        free(dead);
        return rv;
    }
    uint64_t freed = 0;
    for (size_t i = 0; i < ndead; i++) {
        struct spool_segment *seg = spool_store_seg(s, dead[i]);
        char path[4096];
        spool_seg_path(path, sizeof path, s->dir, seg->id, ".lz4");
        freed += seg->file_bytes;
        unlink(path);
        spool_store_remove_seg(s, seg->id);
    }
    free(dead);
    if (ndead > 0 && (rv = spool_fsync_dir(s->dir, &s->io, err)) != 0) return rv;
    /* Compaction only reclaims space: a failure (a damaged block, a full disk) is logged and the
     * old file stays, rather than failing the Raft entry that asked for retention. */
    for (size_t i = 0; i < s->nsegs; i++) {
        struct spool_segment *seg = &s->segs[i];
        struct spool_err cerr = {0};
        if (seg->sealed && seg->live_bytes * 2 < seg->record_bytes && spool_store_compact(s, seg, &cerr) != 0)
            SPOOL_WARN("store.compact_failed", "segment=%u code=%s msg=\"%s\"", seg->id,
                       spool_err_name(cerr.code), cerr.msg);
    }
    if (trimmed > 0 || ndead > 0)
        SPOOL_INFO("store.retention", "trimmed_records=%" PRIu64 " segments_deleted=%zu bytes_freed=%" PRIu64,
                   trimmed, ndead, freed);
    return 0;
}
