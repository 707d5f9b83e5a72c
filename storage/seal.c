/*
 * Rewriting segments: sealing a full active segment into lz4 blocks, and compacting a sealed
 * segment whose records are mostly dead (trimmed by retention or deleted).
 *
 * Both stream the frames into a spool_sealer (storage/segment.h), which writes <id>.lz4.tmp,
 * fsyncs it and renames it into place, so the old file is valid until the new one is complete.
 *
 * Sealing is incremental: when the active segment is full, a new one takes the appends and the
 * full one (still a readable .log) is copied into blocks a slice at a time, after each append,
 * a few times faster than appends arrive, so no single append pays for compressing a whole
 * segment. A seal that has not finished when the next roll comes is completed then. The sealer
 * starts writeback of each block as it goes, so the final fsync has little left to do.
 *
 * Sealing copies every frame unchanged; raw offsets do not move, so the index stays as is.
 * Compaction drops dead RECORD frames and keeps COMMIT and META frames, so replaying the file
 * still yields the same applied index and channel state in the same order. A COMMIT's count is
 * rewritten to the number of its records that survived. Surviving records get new raw offsets,
 * written into their index entries only once the new file is in place.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/format.h"
#include "storage/store_int.h"

/* Puts the sealed `fresh` in place of `seg` (same id). */
static void replace(struct spool_store *s, struct spool_segment *seg, struct spool_segment *fresh)
{
    fresh->live_records = seg->live_records;
    fresh->live_bytes = seg->live_bytes;
    fresh->record_bytes = seg->record_bytes;
    spool_store_forget_blocks(s, seg->id);
    spool_seg_close(seg);
    *seg = *fresh;
}

void spool_store_seal_abort(struct spool_store *s)
{
    struct spool_sealing *z = &s->sealing;
    if (!z->on) return;
    spool_sealer_abort(&z->w);
    if (z->map != NULL) munmap((void *)z->map, z->maplen);
    *z = (struct spool_sealing){0};
}

int spool_store_seal_begin(struct spool_store *s, struct spool_segment *seg, struct spool_err *err)
{
    struct spool_sealing *z = &s->sealing;
    if (z->on) { /* the previous one has not kept pace: finish it now */
        spool_store_seal_step(s, UINT64_MAX);
        if (z->on) spool_store_seal_abort(s);
    }
    if (seg->sealed) return 0;
    void *map = mmap(NULL, seg->size, PROT_READ, MAP_PRIVATE, seg->fd, 0);
    if (map == MAP_FAILED)
        return spool_err_set(err, SPOOL_EIO, "mmap segment %u: %s", seg->id, strerror(errno));
    int rv = spool_sealer_init(&z->w, s->dir, seg->id, s->cfg.block_bytes, err);
    if (rv != 0) {
        munmap(map, seg->size);
        return rv;
    }
    z->on = true;
    z->seg = seg->id;
    z->map = map;
    z->maplen = seg->size;
    z->pos = SPOOL_SEG_HDR;
    return 0;
}

/* Copies frames up to `budget` bytes; 1 when the whole segment is in, 0 if not yet, else an
 * error code (negated). */
static int seal_copy(struct spool_store *s, uint64_t budget, struct spool_err *err)
{
    struct spool_sealing *z = &s->sealing;
    uint64_t done = 0;
    while (z->pos < z->maplen && done < budget) {
        struct spool_frame f;
        if (spool_frame_parse(z->map + z->pos, z->maplen - z->pos, &f) != SPOOL_FRAME_OK)
            return -spool_err_set(err, SPOOL_ECORRUPT, "segment %u: bad frame at %" PRIu64 " while sealing",
                                  z->seg, z->pos);
        size_t flen = SPOOL_FRAME_HDR + f.len;
        int rv = spool_sealer_add(&z->w, z->map + z->pos, flen, NULL, err);
        if (rv != 0) return -rv;
        z->pos += flen;
        done += flen;
    }
    return z->pos >= z->maplen;
}

static int seal_finish(struct spool_store *s, struct spool_err *err)
{
    struct spool_sealing *z = &s->sealing;
    struct spool_segment fresh;
    int rv = spool_sealer_finish(&z->w, s->dir, &fresh, &s->io, err);
    munmap((void *)z->map, z->maplen);
    uint32_t id = z->seg;
    *z = (struct spool_sealing){0}; /* the sealer is finished or aborted either way */
    if (rv != 0) return rv;
    struct spool_segment *seg = spool_store_seg(s, id);
    char log[4096];
    spool_seg_path(log, sizeof log, s->dir, id, ".log");
    uint64_t raw = seg->size;
    replace(s, seg, &fresh);
    unlink(log); /* if this is lost in a crash, recovery removes the .log next to the .lz4 */
    SPOOL_INFO("store.sealed", "segment=%u raw_bytes=%" PRIu64 " file_bytes=%" PRIu64 " blocks=%u", id, raw,
               seg->file_bytes, seg->nblocks);
    return 0;
}

void spool_store_seal_step(struct spool_store *s, uint64_t budget)
{
    struct spool_sealing *z = &s->sealing;
    if (!z->on) return;
    struct spool_err err = {0};
    uint32_t id = z->seg;
    int r = seal_copy(s, budget, &err);
    if (r == 1) r = -seal_finish(s, &err);
    if (r < 0) {
        SPOOL_WARN("store.seal_failed", "segment=%u code=%s msg=\"%s\"", id, spool_err_name(-r), err.msg);
        spool_store_seal_abort(s);
    }
}

int spool_store_seal(struct spool_store *s, struct spool_segment *seg, struct spool_err *err)
{
    uint32_t id = seg->id;
    int rv = spool_store_seal_begin(s, seg, err);
    if (rv != 0) return rv;
    int r = seal_copy(s, UINT64_MAX, err);
    if (r < 0) {
        spool_store_seal_abort(s);
        return -r;
    }
    rv = seal_finish(s, err);
    (void)id;
    return rv;
}

struct moved {
    struct spool_entry *e;
    uint32_t off;
};

int spool_store_compact(struct spool_store *s, struct spool_segment *seg, struct spool_err *err)
{
    if (!seg->sealed) return 0;
    struct spool_sealer w;
    int rv = spool_sealer_init(&w, s->dir, seg->id, s->cfg.block_bytes, err);
    if (rv != 0) return rv;
    uint8_t *buf = NULL, commit[SPOOL_FRAME_HDR + SPOOL_COMMIT_LEN];
    size_t cap = 0, nmoved = 0, capmoved = 0;
    struct moved *moved = NULL;
    uint32_t kept = 0; /* records kept since the last COMMIT */
    for (uint32_t bi = 0; rv == 0 && bi < seg->nblocks; bi++) {
        rv = spool_seg_read_block(seg, bi, &buf, &cap, &s->io, err);
        const struct spool_block *blk = &seg->blocks[bi];
        for (size_t pos = 0; rv == 0 && pos < blk->raw_len;) {
            struct spool_frame f;
            if (spool_frame_parse(buf + pos, blk->raw_len - pos, &f) != SPOOL_FRAME_OK) {
                rv = spool_err_set(err, SPOOL_ECORRUPT, "segment %u block %u: bad frame", seg->id, bi);
                break;
            }
            const uint8_t *frame = buf + pos;
            size_t flen = SPOOL_FRAME_HDR + f.len;
            uint64_t off = blk->raw_off + pos;
            pos += flen;
            if (f.type == SPOOL_FRAME_COMMIT) {
                memcpy(commit, frame, sizeof commit);
                spool_put_u32(commit + SPOOL_FRAME_HDR + 8, kept);
                spool_frame_finish(commit, SPOOL_FRAME_COMMIT, SPOOL_COMMIT_LEN);
                rv = spool_sealer_add(&w, commit, sizeof commit, NULL, err);
                kept = 0;
                continue;
            }
            if (f.type == SPOOL_FRAME_META || f.type == SPOOL_FRAME_START || f.type == SPOOL_FRAME_STATE) {
                rv = spool_sealer_add(&w, frame, flen, NULL, err);
                continue;
            }
            Spool__Record *r = spool__record__unpack(&s->arena.pb, f.len, f.payload);
            struct spool_chan *c = r != NULL ? spool_chanmap_get(&s->chans, r->channel) : NULL;
            struct spool_entry *e = c != NULL ? spool_chan_at(c, r->seq) : NULL;
            spool_arena_reset(&s->arena);
            if (e == NULL || e->seg != seg->id || e->off != off) continue; /* dead */
            if (nmoved == capmoved) {
                capmoved = capmoved ? capmoved * 2 : 1024;
                struct moved *m = realloc(moved, capmoved * sizeof *m);
                if (m == NULL) {
                    rv = spool_err_set(err, SPOOL_ENOMEM, "compaction");
                    break;
                }
                moved = m;
            }
            uint64_t noff;
            rv = spool_sealer_add(&w, frame, flen, &noff, err);
            moved[nmoved++] = (struct moved){.e = e, .off = (uint32_t)noff};
            kept++;
        }
    }
    free(buf);
    struct spool_segment fresh;
    if (rv == 0) {
        rv = spool_sealer_finish(&w, s->dir, &fresh, &s->io, err);
    } else {
        spool_sealer_abort(&w);
    }
    if (rv == 0) {
        for (size_t i = 0; i < nmoved; i++) moved[i].e->off = moved[i].off;
        uint64_t before = seg->file_bytes;
        replace(s, seg, &fresh);
        seg->record_bytes = seg->live_bytes;
        SPOOL_INFO("store.compacted", "segment=%u records=%zu bytes_before=%" PRIu64 " bytes_after=%" PRIu64,
                   seg->id, nmoved, before, seg->file_bytes);
    }
    free(moved);
    return rv;
}
