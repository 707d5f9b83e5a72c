/*
 * Recovery: rebuilding the in-memory state (channels, index, applied index) from the segment
 * files at open, and repairing what a crash left behind.
 *
 * Segments are scanned in id order, frame by frame, replaying exactly what the writer did:
 * RECORD frames are held as pending until the COMMIT frame that closes their batch arrives
 * (then they enter the index and the applied index moves), META frames apply channel state.
 *
 * Rules:
 * - An active (.log) segment is cut at the end of its last complete COMMIT or META frame as
 *   soon as anything after that point is torn (the file ends inside a frame), fails its
 *   checksum, or breaks the batch structure. A torn batch therefore vanishes whole; Raft replays
 *   it. Segments after a cut one (a full .log that lost its unsynced tail while the next one's
 *   writes survived) are removed: their batches depend on the lost ones.
 * - A .lz4 next to a .log of the same id means sealing completed (the .lz4 was fsynced and
 *   renamed first): the .log is removed. *.tmp files are unfinished seals: removed.
 * - Sealed segments were fsynced, so damage there is media corruption, not a crash: a block
 *   that fails its checksum is skipped with an error line, the batch it interrupted is accepted
 *   from the next intact frames on, and records lost with it become holes in their channel's
 *   index (reading one is SPOOL_ECORRUPT). A sealed file whose index does not check is set
 *   aside as <id>.lz4.corrupt.
 * - A full .log segment need not be synced when the next segment starts taking appends (it is
 *   sealed incrementally): if a crash loses whole batches at its end, the next segment's START
 *   frame (the size the previous one had) reveals it, and that segment is cut to nothing and
 *   the ones after it removed, as for a cut segment.
 * - A .log segment that is not the newest (a crash before its seal finished) is sealed now.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/format.h"
#include "storage/store_int.h"

struct pending {
    struct spool_chan *c;
    uint64_t seq;
    struct spool_entry e;
};

struct scan {
    struct spool_store *s;
    struct pending *p;
    size_t n, cap;
    bool after_gap; /* a sealed block was lost: the next COMMIT may close a partial batch */
    uint64_t good_end; /* raw offset after the last complete COMMIT/META frame */
    uint64_t prev_size; /* size of the previous segment when it is a .log (0: nothing to check) */
    bool nomem;         /* out of memory: fail the open, never cut a file because of it */
};

static int add_pending(struct scan *sc, uint32_t seg, uint64_t off, const struct spool_frame *f)
{
    struct spool_store *s = sc->s;
    Spool__Record *r = spool__record__unpack(&s->arena.pb, f->len, f->payload);
    int rv = -1;
    if (r != NULL && r->channel != NULL && r->channel[0] != '\0' && r->seq > 0) {
        struct spool_chan *c = spool_chanmap_put(&s->chans, r->channel);
        if (sc->n == sc->cap) {
            size_t ncap = sc->cap ? sc->cap * 2 : 256;
            struct pending *np = realloc(sc->p, ncap * sizeof *np);
            if (np != NULL) {
                sc->p = np;
                sc->cap = ncap;
            }
        }
        if (c != NULL && sc->n < sc->cap) {
            sc->p[sc->n++] = (struct pending){
                .c = c, .seq = r->seq,
                .e = {.seg = seg, .off = (uint32_t)off, .len = f->len, .ts = r->timestamp_ms}};
            rv = 0;
        } else {
            sc->nomem = true;
        }
    }
    spool_arena_reset(&s->arena);
    return rv;
}

static void commit_pending(struct scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        struct pending *p = &sc->p[i];
        if (p->seq < spool_chan_first(p->c) && p->seq <= p->c->last_seq) continue; /* trimmed */
        if (spool_store_index(sc->s, p->c, p->seq, &p->e) != 0)
            SPOOL_ERROR("store.recover_skip", "channel=%s seq=%" PRIu64 " reason=out_of_order",
                        p->c->name, p->seq);
    }
    sc->n = 0;
}

/* Scans the frames in buf (raw offsets from raw_base). Returns SPOOL_FRAME_OK at the end of
 * the buffer, else the status of the offending frame; sc->good_end says where it was safe. */
static enum spool_frame_status scan_frames(struct scan *sc, uint32_t seg, const uint8_t *buf,
                                           size_t len, uint64_t raw_base)
{
    struct spool_store *s = sc->s;
    size_t pos = 0;
    while (pos < len) {
        struct spool_frame f;
        enum spool_frame_status st = spool_frame_parse(buf + pos, len - pos, &f);
        if (st != SPOOL_FRAME_OK) return st;
        uint64_t off = raw_base + pos;
        if (f.type == SPOOL_FRAME_RECORD) {
            if (add_pending(sc, seg, off, &f) != 0) return SPOOL_FRAME_BAD;
        } else if (f.type == SPOOL_FRAME_COMMIT) {
            uint64_t idx = spool_get_u64(f.payload);
            uint32_t count = spool_get_u32(f.payload + 8);
            bool ok = count == sc->n || (sc->after_gap && count > sc->n);
            if (!ok || idx < s->applied_index) return SPOOL_FRAME_BAD;
            commit_pending(sc);
            s->applied_index = idx;
            sc->after_gap = false;
            sc->good_end = off + SPOOL_FRAME_HDR + f.len;
        } else if (f.type == SPOOL_FRAME_START) {
            /* The previous .log must have kept everything it had when this segment began. */
            if (off != SPOOL_SEG_HDR) return SPOOL_FRAME_BAD;
            if (sc->prev_size != 0 && (spool_get_u64(f.payload) != sc->prev_size ||
                                       spool_get_u64(f.payload + 8) != s->applied_index)) {
                SPOOL_ERROR("store.previous_segment_short", "segment=%u expected_prev_size=%" PRIu64
                            " prev_size=%" PRIu64, seg, spool_get_u64(f.payload), sc->prev_size);
                return SPOOL_FRAME_BAD;
            }
            sc->prev_size = 0;
            sc->good_end = off + SPOOL_FRAME_HDR + f.len;
        } else if (f.type == SPOOL_FRAME_STATE) {
            struct spool_err err = {0};
            if (sc->n > 0) return SPOOL_FRAME_BAD;
            if (spool_store_put_shard_state(s, f.payload, f.len, &err) != 0) {
                sc->nomem = true;
                return SPOOL_FRAME_BAD;
            }
            sc->good_end = off + SPOOL_FRAME_HDR + f.len;
        } else {
            struct spool_err err = {0};
            if (sc->n > 0) return SPOOL_FRAME_BAD;
            if (spool_store_apply_meta(s, f.payload, f.len, &err) != 0) {
                sc->nomem = err.code == SPOOL_ENOMEM;
                return SPOOL_FRAME_BAD;
            }
            sc->good_end = off + SPOOL_FRAME_HDR + f.len;
        }
        pos += SPOOL_FRAME_HDR + f.len;
    }
    return SPOOL_FRAME_OK;
}

static void scan_sealed(struct scan *sc, struct spool_segment *seg)
{
    struct spool_store *s = sc->s;
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (uint32_t b = 0; b < seg->nblocks; b++) {
        struct spool_err err = {0};
        if (spool_seg_read_block(seg, b, &buf, &cap, &s->io, &err) == 0 &&
            scan_frames(sc, seg->id, buf, seg->blocks[b].raw_len, seg->blocks[b].raw_off) == SPOOL_FRAME_OK)
            continue;
        SPOOL_ERROR("store.block_lost", "segment=%u block=%u records_dropped=%zu", seg->id, b, sc->n);
        sc->n = 0;
        sc->after_gap = true;
    }
    if (sc->n > 0) {
        SPOOL_ERROR("store.batch_unterminated", "segment=%u records_dropped=%zu", seg->id, sc->n);
        sc->n = 0;
    }
    free(buf);
}

/* Scans an active segment; returns 1 when it had to be cut. */
static int scan_log(struct scan *sc, struct spool_segment *seg, uint64_t fsize, struct spool_err *err)
{
    struct spool_store *s = sc->s;
    void *map = NULL;
    if (fsize > 0) {
        map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, seg->fd, 0);
        if (map == MAP_FAILED)
            return -spool_err_set(err, SPOOL_EIO, "mmap segment %u: %s", seg->id, strerror(errno));
    }
    const uint8_t *b = map;
    sc->good_end = SPOOL_SEG_HDR;
    sc->n = 0;
    enum spool_frame_status st = SPOOL_FRAME_BAD;
    int hdr = fsize >= SPOOL_SEG_HDR ? spool_seg_header_check(b, SPOOL_SEG_MAGIC, seg->id) : SPOOL_HDR_DAMAGED;
    if (hdr == SPOOL_HDR_VERSION) {
        uint32_t v = spool_get_u32(b + 4);
        munmap(map, fsize);
        return -spool_err_set(err, SPOOL_EINVAL, "segment %u: format version %u, this build reads %u", seg->id,
                              v, SPOOL_FORMAT_VERSION);
    }
    bool hdr_ok = hdr == SPOOL_HDR_OK;
    if (hdr_ok) st = scan_frames(sc, seg->id, b + SPOOL_SEG_HDR, fsize - SPOOL_SEG_HDR, SPOOL_SEG_HDR);
    if (st == SPOOL_FRAME_OK && sc->prev_size != 0 && fsize > SPOOL_SEG_HDR) {
        st = SPOOL_FRAME_BAD; /* frames, but not the START this segment must begin with */
        sc->good_end = SPOOL_SEG_HDR;
        sc->n = 0;
    }
    if (map != NULL) munmap(map, fsize);
    if (sc->nomem) return -spool_err_set(err, SPOOL_ENOMEM, "recovering segment %u", seg->id);
    if (st == SPOOL_FRAME_OK && sc->n == 0) return 0;
    SPOOL_WARN("store.segment_cut", "segment=%u at=%" PRIu64 " size=%" PRIu64 " reason=%s dropped_records=%zu",
               seg->id, sc->good_end, fsize,
               !hdr_ok ? "header" : st == SPOOL_FRAME_OK ? "unterminated_batch" : st == SPOOL_FRAME_TORN ? "torn" : "corrupt",
               sc->n);
    sc->n = 0;
    if (!hdr_ok) {
        uint32_t id = seg->id;
        spool_seg_close(seg);
        int rv = spool_seg_create(seg, s->dir, id, err);
        return rv != 0 ? -rv : 1;
    }
    int rv = spool_seg_truncate(seg, sc->good_end, err);
    return rv != 0 ? -rv : 1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int spool_store_recover(struct spool_store *s, struct spool_err *err)
{
    DIR *d = opendir(s->dir);
    if (d == NULL) return spool_err_set(err, SPOOL_EIO, "opendir %s: %s", s->dir, strerror(errno));
    uint32_t *ids = NULL;
    size_t nids = 0, capids = 0;
    struct dirent *de;
    char path[4096];
    int rv = 0;
    while ((de = readdir(d)) != NULL) {
        unsigned id;
        char suffix[16];
        if (sscanf(de->d_name, "%16x%15s", &id, suffix) != 2 || strlen(de->d_name) < 17) continue;
        if (strstr(suffix, ".tmp") != NULL) {
            snprintf(path, sizeof path, "%s/%s", s->dir, de->d_name);
            unlink(path);
            continue;
        }
        if (strcmp(suffix, ".log") != 0 && strcmp(suffix, ".lz4") != 0) continue;
        if (nids == capids) {
            capids = capids ? capids * 2 : 64;
            uint32_t *n = realloc(ids, capids * sizeof *n);
            if (n == NULL) {
                rv = spool_err_set(err, SPOOL_ENOMEM, "segment list");
                break;
            }
            ids = n;
        }
        ids[nids++] = id;
    }
    closedir(d);
    if (rv != 0) {
        free(ids);
        return rv;
    }
    if (nids > 0) qsort(ids, nids, sizeof *ids, cmp_u32);
    struct scan sc = {.s = s};
    bool cut = false;
    for (size_t i = 0; i < nids && rv == 0; i++) {
        uint32_t id = ids[i];
        if (i > 0 && ids[i - 1] == id) continue; /* .log and .lz4 of one id */
        char lz4[4096], log[4096];
        spool_seg_path(lz4, sizeof lz4, s->dir, id, ".lz4");
        spool_seg_path(log, sizeof log, s->dir, id, ".log");
        bool sealed = access(lz4, F_OK) == 0;
        if (cut) { /* everything after a cut segment depends on what was lost */
            SPOOL_WARN("store.segment_dropped", "segment=%u reason=after_cut", id);
            unlink(lz4);
            unlink(log);
            continue;
        }
        struct spool_segment seg;
        if (sealed) {
            sc.prev_size = 0;
            unlink(log);
            struct spool_err e2 = {0};
            int r2 = spool_seg_open_sealed(&seg, s->dir, id, &e2);
            if (r2 == SPOOL_EINVAL) { /* a newer format: refuse rather than set it aside */
                rv = spool_err_set(err, r2, "%s", e2.msg);
                break;
            }
            if (r2 != 0) {
                SPOOL_ERROR("store.segment_corrupt", "segment=%u error=\"%s\"", id, e2.msg);
                char aside[4096];
                spool_seg_path(aside, sizeof aside, s->dir, id, ".lz4.corrupt");
                rename(lz4, aside);
                continue;
            }
            if ((rv = spool_store_add_seg(s, &seg, err)) != 0) {
                spool_seg_close(&seg);
                break;
            }
            scan_sealed(&sc, spool_store_seg(s, id));
            if (sc.nomem) rv = spool_err_set(err, SPOOL_ENOMEM, "recovering segment %u", id);
            continue;
        }
        /* Only a full .log can have lost batches silently (it may not be synced yet); sealed
         * files were fsynced complete. */
        struct spool_segment *before = s->nsegs > 0 ? &s->segs[s->nsegs - 1] : NULL;
        sc.prev_size = before != NULL && !before->sealed && before->id == id - 1 ? before->size : 0;
        uint64_t fsize;
        if ((rv = spool_seg_open_log(&seg, s->dir, id, &fsize, err)) != 0) break;
        if ((rv = spool_store_add_seg(s, &seg, err)) != 0) {
            spool_seg_close(&seg);
            break;
        }
        int r = scan_log(&sc, spool_store_seg(s, id), fsize, err);
        if (r < 0) rv = -r;
        else if (r > 0) cut = true;
    }
    free(ids);
    free(sc.p);
    /* Seal any .log that is not the newest segment (interrupted roll). */
    for (size_t i = 0; rv == 0 && i + 1 < s->nsegs; i++)
        if (!s->segs[i].sealed) rv = spool_store_seal(s, &s->segs[i], err);
    if (rv == 0)
        SPOOL_INFO("store.opened", "dir=%s segments=%zu channels=%zu applied_index=%" PRIu64, s->dir,
                   s->nsegs, s->chans.count, s->applied_index);
    return rv;
}
