/*
 * Snapshot streams (proto/snapshot.proto): the store's whole content as one self-checking
 * byte stream, for Raft snapshots and new replicas.
 *
 *   "SPSN" | u32 version | frame* ; frame = u32 length | u32 crc32c(payload) | payload
 *
 * payload is a SnapshotFrame: first the header (applied index, channel and record counts, the
 * owner's shard state when there is one), then per channel its ChannelState followed by its records in ascending seq, then `end`.
 * Writing copies each record's stored protobuf bytes into the frame as field 3 (the encoding
 * of an embedded message is its bytes behind a tag and a length), so nothing is decoded and
 * re-encoded on the way out. Records lost to corruption (index holes) are left out with an
 * error line. Records that fail their checksum while being read fail the snapshot (the header
 * already counted them) and become holes, so the next attempt succeeds without them.
 *
 * Restore first walks the whole stream checking it (checksums, order, counts, end frame), then
 * walks it again loading it into a fresh generation directory (storage/gen.c) through the
 * normal write path, syncs it, and switches CURRENT to it. Only then is the in-memory state
 * swapped and the old generation removed; any failure before the switch leaves the store as it
 * was.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/varint.h"
#include "proto/snapshot.pb-c.h"
#include "storage/crc32c.h"
#include "storage/format.h"
#include "storage/store_int.h"

#define SNAP_MAGIC "SPSN"
#define SNAP_VERSION 1u
#define OUT_BUF (64u << 10)
#define LOAD_BATCH 256

/* ---- writing ---- */

struct out {
    spool_store_write_cb write;
    void *arg;
    uint8_t *buf;
    size_t len;
    int failed;
};

static int out_flush(struct out *o)
{
    if (o->len > 0 && !o->failed && o->write(o->arg, o->buf, o->len) != 0) o->failed = 1;
    o->len = 0;
    return o->failed;
}

static int out_put(struct out *o, const void *p, size_t n)
{
    if (n == 0) return 0;
    if (o->len + n > OUT_BUF && out_flush(o) != 0) return -1;
    if (n > OUT_BUF) {
        if (o->write(o->arg, p, n) != 0) o->failed = 1;
        return o->failed ? -1 : 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* Emits one frame whose payload is `pre` (a prefix) followed by `body`. */
static int out_frame(struct out *o, const uint8_t *pre, size_t npre, const uint8_t *body, size_t nbody)
{
    uint8_t hdr[8];
    spool_put_u32(hdr, (uint32_t)(npre + nbody));
    spool_put_u32(hdr + 4, spool_crc32c(spool_crc32c(0, pre, npre), body, nbody));
    if (out_put(o, hdr, 8) != 0 || out_put(o, pre, npre) != 0) return -1;
    return out_put(o, body, nbody);
}

static int out_msg(struct out *o, const Spool__SnapshotFrame *f)
{
    size_t n = spool__snapshot_frame__get_packed_size(f);
    uint8_t small[512];
    uint8_t *p = n <= sizeof small ? small : malloc(n);
    if (p == NULL) return -1;
    spool__snapshot_frame__pack(f, p);
    int rv = out_frame(o, NULL, 0, p, n);
    if (p != small) free(p);
    return rv;
}

int spool_store_snapshot(struct spool_store *s, spool_store_write_cb write, void *arg,
                         struct spool_err *err)
{
    struct out o = {.write = write, .arg = arg, .buf = malloc(OUT_BUF)};
    if (o.buf == NULL) return spool_err_set(err, SPOOL_ENOMEM, "snapshot buffer");
    Spool__SnapshotHeader hdr = SPOOL__SNAPSHOT_HEADER__INIT;
    hdr.applied_index = s->applied_index;
    hdr.shard_state.data = s->state;
    hdr.shard_state.len = s->state_len;
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (!spool_chan_listed(c)) continue;
        hdr.channel_count++;
        for (size_t i = 0; i < c->count; i++) hdr.record_count += c->ent[c->head + i].seg != 0;
    }
    uint8_t magic[8];
    memcpy(magic, SNAP_MAGIC, 4);
    spool_put_u32(magic + 4, SNAP_VERSION);
    Spool__SnapshotFrame f = SPOOL__SNAPSHOT_FRAME__INIT;
    f.header = &hdr;
    int rv = 0;
    bool damaged = false;
    if (out_put(&o, magic, sizeof magic) != 0 || out_msg(&o, &f) != 0) goto aborted;
    SPOOL_CHANMAP_FOREACH(&s->chans, c)
    {
        if (!spool_chan_listed(c)) continue;
        Spool__ChannelState st;
        Spool__Retention ret;
        spool_chan_state(c, &st, &ret);
        f = (Spool__SnapshotFrame)SPOOL__SNAPSHOT_FRAME__INIT;
        f.channel = &st;
        if (!damaged && out_msg(&o, &f) != 0) goto aborted;
        for (uint64_t seq = c->base; seq < c->base + c->count; seq++) {
            if (spool_chan_at(c, seq)->seg == 0) {
                SPOOL_ERROR("store.snapshot_hole", "channel=%s seq=%" PRIu64, c->name, seq);
                continue;
            }
            const uint8_t *p;
            uint32_t len;
            struct spool_err e2 = {0};
            int r2 = spool_store_payload(s, c, seq, &p, &len, damaged ? &e2 : err);
            if (r2 == SPOOL_ECORRUPT) {
                /* The header already counted it: this snapshot fails, but the damage is
                 * remembered (holes) so the next attempt leaves those records out. The rest is
                 * still checked, so one retry is enough. */
                SPOOL_ERROR("store.snapshot_corrupt", "channel=%s seq=%" PRIu64, c->name, seq);
                spool_store_mark_hole(s, c, seq);
                if (!damaged) rv = r2;
                damaged = true;
                continue;
            }
            if (r2 != 0) {
                if (!damaged) rv = r2;
                goto done;
            }
            if (damaged) continue;
            uint8_t pre[11];
            pre[0] = (3 << 3) | 2; /* SnapshotFrame.record, length-delimited */
            size_t npre = 1 + spool_varint_put(pre + 1, len);
            if (out_frame(&o, pre, npre, p, len) != 0) goto aborted;
        }
    }
    if (damaged) goto done;
    f = (Spool__SnapshotFrame)SPOOL__SNAPSHOT_FRAME__INIT;
    f.end = true;
    if (out_msg(&o, &f) != 0 || out_flush(&o) != 0) goto aborted;
    goto done;
aborted:
    rv = spool_err_set(err, SPOOL_EIO, "snapshot writer aborted");
done:
    free(o.buf);
    return rv;
}

/* ---- reading ---- */

/* Receives what a walk finds; any non-zero return stops it with that code. */
struct walker {
    int (*channel)(struct walker *w, const Spool__ChannelState *st, struct spool_err *err);
    int (*record)(struct walker *w, Spool__Record *r, struct spool_err *err);
};

/* Checks the whole stream, calling `w` (if any) for each channel and record in order. Fills
 * *applied with the header's applied index and, if `state` is not NULL, *state (malloc'd, NULL
 * when empty) / *state_len with its shard state. Record objects passed to w->record are
 * malloc'd: the callee owns them. */
static int walk(const uint8_t *buf, size_t len, struct walker *w, uint64_t *applied,
                uint8_t **state, size_t *state_len, struct spool_err *err)
{
    if (len < 8 || memcmp(buf, SNAP_MAGIC, 4) != 0)
        return spool_err_set(err, SPOOL_ECORRUPT, "snapshot: bad magic");
    if (spool_get_u32(buf + 4) != SNAP_VERSION)
        return spool_err_set(err, SPOOL_ECORRUPT, "snapshot: unknown version %u", spool_get_u32(buf + 4));
    size_t pos = 8;
    uint64_t nframes = 0, channels = 0, records = 0, want_channels = 0, want_records = 0;
    uint64_t prev_seq = 0, first = 0, last = 0;
    char *cur = NULL;
    bool ended = false;
    int rv = 0;
    while (rv == 0 && pos < len) {
        if (ended) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: data after the end frame");
            break;
        }
        if (len - pos < 8) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: truncated frame header");
            break;
        }
        uint32_t flen = spool_get_u32(buf + pos);
        const uint8_t *p = buf + pos + 8;
        if (flen > len - pos - 8 || spool_crc32c(0, p, flen) != spool_get_u32(buf + pos + 4)) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: frame %" PRIu64 " truncated or bad checksum", nframes);
            break;
        }
        pos += 8 + (size_t)flen;
        Spool__SnapshotFrame *f = spool__snapshot_frame__unpack(NULL, flen, p);
        if (f == NULL) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: frame %" PRIu64 " does not decode", nframes);
            break;
        }
        int kinds = (f->header != NULL) + (f->channel != NULL) + (f->record != NULL) + (f->end ? 1 : 0);
        if (kinds != 1 || (nframes == 0) != (f->header != NULL)) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: frame %" PRIu64 " out of place", nframes);
        } else if (f->header != NULL) {
            *applied = f->header->applied_index;
            want_channels = f->header->channel_count;
            want_records = f->header->record_count;
            size_t sl = f->header->shard_state.len;
            if (state != NULL && sl > 0) {
                if ((*state = malloc(sl)) == NULL) rv = spool_err_set(err, SPOOL_ENOMEM, "snapshot");
                else memcpy(*state, f->header->shard_state.data, sl);
                *state_len = *state != NULL ? sl : 0;
            }
        } else if (f->channel != NULL) {
            const Spool__ChannelState *st = f->channel;
            if (st->name == NULL || st->name[0] == '\0' || st->first_seq == 0 || st->first_seq > st->last_seq + 1) {
                rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: bad channel state");
            } else {
                free(cur);
                cur = strdup(st->name);
                first = st->first_seq;
                last = st->last_seq;
                prev_seq = 0;
                channels++;
                if (cur == NULL) rv = spool_err_set(err, SPOOL_ENOMEM, "snapshot");
                else if (w != NULL) rv = w->channel(w, st, err);
            }
        } else if (f->record != NULL) {
            Spool__Record *r = f->record;
            if (cur == NULL || r->channel == NULL || strcmp(r->channel, cur) != 0 || r->seq <= prev_seq ||
                r->seq < first || r->seq > last) {
                rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: record %" PRIu64 " out of place", records);
            } else {
                prev_seq = r->seq;
                records++;
                if (w != NULL) {
                    f->record = NULL; /* handed over */
                    rv = w->record(w, r, err);
                }
            }
        } else {
            ended = true;
        }
        spool__snapshot_frame__free_unpacked(f, NULL);
        nframes++;
    }
    free(cur);
    if (rv == 0 && !ended) rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: no end frame");
    if (rv == 0 && (channels != want_channels || records != want_records))
        rv = spool_err_set(err, SPOOL_ECORRUPT, "snapshot: header says %" PRIu64 " channels / %" PRIu64
                           " records, stream has %" PRIu64 " / %" PRIu64,
                           want_channels, want_records, channels, records);
    return rv;
}

uint64_t spool_store_snapshot_applied_index(const void *buf, size_t len, struct spool_err *err)
{
    uint64_t applied = 0;
    if (walk(buf, len, NULL, &applied, NULL, NULL, err) != 0) return 0;
    return applied;
}

/* Loads a validated stream into a fresh store `n`: per channel its records (batched), then a
 * META frame with its state, the order recovery replays. */
struct loader {
    struct walker w;
    struct spool_store *n;
    uint64_t applied;
    Spool__Record *batch[LOAD_BATCH];
    size_t nbatch;
    Spool__ChannelState *state; /* of the channel being loaded */
};

static int flush_batch(struct loader *l, struct spool_err *err)
{
    int rv = l->nbatch > 0 ? spool_store_load_batch(l->n, l->applied, (const Spool__Record *const *)l->batch,
                                                    l->nbatch, err)
                           : 0;
    for (size_t i = 0; i < l->nbatch; i++) spool__record__free_unpacked(l->batch[i], NULL);
    l->nbatch = 0;
    return rv;
}

/* Records of the current channel are all in: write its state. */
static int finish_channel(struct loader *l, struct spool_err *err)
{
    int rv = flush_batch(l, err);
    Spool__ChannelState *st = l->state;
    l->state = NULL;
    if (rv != 0 || st == NULL) goto out;
    struct spool_chan *c;
    rv = spool_store_put_state(l->n, st, &c, err);
    if (rv == 0) rv = spool_store_write_meta(l->n, c, err);
out:
    if (st != NULL) spool__channel_state__free_unpacked(st, NULL);
    return rv;
}

static int load_channel(struct walker *w, const Spool__ChannelState *st, struct spool_err *err)
{
    struct loader *l = (struct loader *)w;
    int rv = finish_channel(l, err);
    if (rv != 0) return rv;
    if (spool_chanmap_get(&l->n->chans, st->name) != NULL)
        return spool_err_set(err, SPOOL_ECORRUPT, "snapshot: channel %s twice", st->name);
    /* Keep a copy: the frame it came from is freed after this call. */
    size_t n = spool__channel_state__get_packed_size(st);
    uint8_t *tmp = malloc(n ? n : 1);
    if (tmp == NULL) return spool_err_set(err, SPOOL_ENOMEM, "snapshot");
    spool__channel_state__pack(st, tmp);
    l->state = spool__channel_state__unpack(NULL, n, tmp);
    free(tmp);
    if (l->state == NULL) return spool_err_set(err, SPOOL_ENOMEM, "snapshot");
    return 0;
}

static int load_record(struct walker *w, Spool__Record *r, struct spool_err *err)
{
    struct loader *l = (struct loader *)w;
    l->batch[l->nbatch++] = r;
    return l->nbatch == LOAD_BATCH ? flush_batch(l, err) : 0;
}

int spool_store_restore(struct spool_store *s, const void *buf, size_t len, struct spool_err *err)
{
    uint64_t applied = 0;
    uint8_t *state = NULL;
    size_t state_len = 0;
    int rv = walk(buf, len, NULL, &applied, &state, &state_len, err);
    if (rv != 0) {
        free(state);
        return rv;
    }
    struct spool_store *n = malloc(sizeof *n);
    if (n == NULL) {
        free(state);
        return spool_err_set(err, SPOOL_ENOMEM, "restore");
    }
    spool_store_init_mem(n, &s->cfg, err);
    n->gen = s->gen + 1;
    n->root = strdup(s->root);
    if (n->root == NULL) rv = spool_err_set(err, SPOOL_ENOMEM, "restore");
    if (rv == 0) rv = spool_gen_prepare(s->root, n->gen, &n->dir, err);
    struct loader l = {.w = {load_channel, load_record}, .n = n, .applied = applied};
    if (rv == 0) rv = walk(buf, len, &l.w, &applied, NULL, NULL, err);
    if (rv == 0) rv = finish_channel(&l, err);
    if (rv == 0 && state_len > 0) {
        rv = spool_store_put_shard_state(n, state, state_len, err);
        if (rv == 0) rv = spool_store_write_shard_state(n, err);
    }
    free(state);
    for (size_t i = 0; i < l.nbatch; i++) spool__record__free_unpacked(l.batch[i], NULL);
    if (l.state != NULL) spool__channel_state__free_unpacked(l.state, NULL);
    if (rv == 0) rv = spool_store_mark_applied(n, applied, err);
    if (rv == 0) rv = spool_store_sync(n, err);
    if (rv == 0) rv = spool_gen_switch(s->root, n->gen, &n->io, err);
    if (rv != 0) {
        if (n->dir != NULL) spool_gen_remove(n->dir);
        spool_store_free_mem(n);
        free(n);
        return rv;
    }
    /* Switched: the new generation is the store now. */
    struct spool_store old = *s;
    *s = *n;
    s->arena.pb.allocator_data = &s->arena;
    old.arena.pb.allocator_data = &old.arena;
    s->io.fsyncs += old.io.fsyncs;
    s->io.fsync_ns += old.io.fsync_ns;
    s->io.disk_reads += old.io.disk_reads;
    s->tail_hits += old.tail_hits;
    s->lock_fd = old.lock_fd; /* the lock is the root's, not the generation's */
    old.lock_fd = -1;
    free(n);
    char *old_dir = old.dir;
    old.dir = NULL;
    spool_store_free_mem(&old);
    spool_gen_remove(old_dir);
    free(old_dir);
    SPOOL_INFO("store.restored", "dir=%s applied_index=%" PRIu64 " channels=%zu", s->dir, s->applied_index,
               s->chans.count);
    return 0;
}
