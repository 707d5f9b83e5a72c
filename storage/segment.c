/* Segment files, active and sealed; layout and rationale in storage/segment.h. */
#include "storage/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/crc32c.h"
#include "storage/format.h"

void spool_seg_path(char *buf, size_t size, const char *dir, uint32_t id, const char *suffix)
{
    snprintf(buf, size, "%s/%016x%s", dir, id, suffix);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int spool_fsync_fd(int fd, struct spool_iostats *io)
{
    uint64_t t = now_ns();
    int rv = fdatasync(fd);
    io->fsyncs++;
    io->fsync_ns += now_ns() - t;
    return rv;
}

int spool_fsync_dir(const char *dir, struct spool_iostats *io, struct spool_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return spool_err_set(err, SPOOL_EIO, "open %s: %s", dir, strerror(errno));
    uint64_t t = now_ns();
    int rv = fsync(fd);
    io->fsyncs++;
    io->fsync_ns += now_ns() - t;
    close(fd);
    if (rv != 0) return spool_err_set(err, SPOOL_EIO, "fsync %s: %s", dir, strerror(errno));
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) {
            errno = 0; /* short file */
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int spool_seg_create(struct spool_segment *seg, const char *dir, uint32_t id, struct spool_err *err)
{
    char path[4096];
    spool_seg_path(path, sizeof path, dir, id, ".log");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return spool_err_set(err, SPOOL_EIO, "create %s: %s", path, strerror(errno));
    uint8_t hdr[SPOOL_SEG_HDR];
    spool_seg_header(hdr, SPOOL_SEG_MAGIC, id);
    if (pwrite_all(fd, hdr, sizeof hdr, 0) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return spool_err_set(err, SPOOL_EIO, "write %s: %s", path, strerror(e));
    }
    *seg = (struct spool_segment){.id = id, .fd = fd, .size = SPOOL_SEG_HDR, .file_bytes = SPOOL_SEG_HDR};
    return 0;
}

int spool_seg_open_log(struct spool_segment *seg, const char *dir, uint32_t id, uint64_t *file_size,
                       struct spool_err *err)
{
    char path[4096];
    spool_seg_path(path, sizeof path, dir, id, ".log");
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return spool_err_set(err, SPOOL_EIO, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return spool_err_set(err, SPOOL_EIO, "stat %s: %s", path, strerror(e));
    }
    *seg = (struct spool_segment){.id = id, .fd = fd, .size = (uint64_t)st.st_size,
                                  .file_bytes = (uint64_t)st.st_size};
    *file_size = (uint64_t)st.st_size;
    return 0;
}

int spool_seg_open_sealed(struct spool_segment *seg, const char *dir, uint32_t id,
                          struct spool_err *err)
{
    char path[4096];
    spool_seg_path(path, sizeof path, dir, id, ".lz4");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return spool_err_set(err, SPOOL_EIO, "open %s: %s", path, strerror(errno));
    struct stat st;
    uint8_t hdr[SPOOL_SEG_HDR], foot[SPOOL_SEALED_FOOTER];
    uint8_t *idx = NULL;
    struct spool_block *blocks = NULL;
    int rv;
    if (fstat(fd, &st) != 0) {
        rv = spool_err_set(err, SPOOL_EIO, "stat %s: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    if (fsize < SPOOL_SEG_HDR + SPOOL_SEALED_FOOTER || pread_all(fd, hdr, sizeof hdr, 0) != 0 ||
        pread_all(fd, foot, sizeof foot, fsize - SPOOL_SEALED_FOOTER) != 0) {
        rv = spool_err_set(err, SPOOL_ECORRUPT, "%s: too short", path);
        goto fail;
    }
    uint64_t index_off = spool_get_u64(foot);
    uint32_t n = spool_get_u32(foot + 8);
    if (spool_seg_header_check(hdr, SPOOL_SEALED_MAGIC, id) == SPOOL_HDR_VERSION) {
        rv = spool_err_set(err, SPOOL_EINVAL, "%s: format version %u, this build reads %u", path,
                           spool_get_u32(hdr + 4), SPOOL_FORMAT_VERSION);
        goto fail;
    }
    if (spool_seg_header_check(hdr, SPOOL_SEALED_MAGIC, id) != 0 ||
        memcmp(foot + 20, SPOOL_SEALED_MAGIC, 4) != 0 ||
        spool_crc32c(0, foot, 16) != spool_get_u32(foot + 16) || index_off < SPOOL_SEG_HDR ||
        index_off + (uint64_t)n * SPOOL_BLOCK_ENTRY + SPOOL_SEALED_FOOTER != fsize) {
        rv = spool_err_set(err, SPOOL_ECORRUPT, "%s: bad header or footer", path);
        goto fail;
    }
    size_t ilen = (size_t)n * SPOOL_BLOCK_ENTRY;
    idx = malloc(ilen ? ilen : 1);
    blocks = calloc(n ? n : 1, sizeof *blocks);
    if (idx == NULL || blocks == NULL) {
        rv = spool_err_set(err, SPOOL_ENOMEM, "block index of %s", path);
        goto fail;
    }
    if (pread_all(fd, idx, ilen, index_off) != 0 ||
        spool_crc32c(0, idx, ilen) != spool_get_u32(foot + 12)) {
        rv = spool_err_set(err, SPOOL_ECORRUPT, "%s: bad block index", path);
        goto fail;
    }
    uint64_t raw = SPOOL_SEG_HDR;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = idx + (size_t)i * SPOOL_BLOCK_ENTRY;
        struct spool_block *b = &blocks[i];
        b->file_off = spool_get_u64(e);
        b->comp_len = spool_get_u32(e + 8);
        b->raw_off = spool_get_u32(e + 12);
        b->raw_len = spool_get_u32(e + 16);
        b->crc = spool_get_u32(e + 20);
        /* Blocks tile the raw stream and the file; anything else is a damaged index. */
        if (b->raw_off != raw || b->file_off < SPOOL_SEG_HDR ||
            b->file_off + b->comp_len > index_off || b->raw_len == 0 ||
            b->raw_len > (uint32_t)LZ4_MAX_INPUT_SIZE) {
            rv = spool_err_set(err, SPOOL_ECORRUPT, "%s: bad block %u", path, i);
            goto fail;
        }
        raw += b->raw_len;
    }
    free(idx);
    *seg = (struct spool_segment){.id = id, .fd = fd, .sealed = true, .size = raw,
                                  .file_bytes = fsize, .blocks = blocks, .nblocks = n};
    return 0;
fail:
    free(idx);
    free(blocks);
    close(fd);
    return rv;
}

void spool_seg_close(struct spool_segment *seg)
{
    if (seg->fd >= 0) close(seg->fd);
    free(seg->blocks);
    seg->fd = -1;
    seg->blocks = NULL;
    seg->nblocks = 0;
}

int spool_seg_append(struct spool_segment *seg, const void *buf, size_t len, struct spool_err *err)
{
    if (pwrite_all(seg->fd, buf, len, seg->size) != 0) {
        int e = errno;
        /* Never leave half a batch for later appends to follow. */
        if (ftruncate(seg->fd, (off_t)seg->size) != 0) { /* recovery will cut it instead */
        }
        return spool_err_set(err, SPOOL_EIO, "write segment %u: %s", seg->id, strerror(e));
    }
    seg->size += len;
    seg->file_bytes = seg->size;
    seg->synced = false;
    return 0;
}

int spool_seg_truncate(struct spool_segment *seg, uint64_t size, struct spool_err *err)
{
    if (ftruncate(seg->fd, (off_t)size) != 0)
        return spool_err_set(err, SPOOL_EIO, "truncate segment %u: %s", seg->id, strerror(errno));
    seg->size = seg->file_bytes = size;
    seg->synced = false;
    return 0;
}

int spool_seg_pread(struct spool_segment *seg, uint64_t off, void *buf, size_t len,
                    struct spool_iostats *io, struct spool_err *err)
{
    io->disk_reads++;
    if (off + len > seg->size || pread_all(seg->fd, buf, len, off) != 0)
        return spool_err_set(err, SPOOL_EIO, "read segment %u at %llu: %s", seg->id,
                             (unsigned long long)off, errno ? strerror(errno) : "short");
    return 0;
}

uint32_t spool_seg_find_block(const struct spool_segment *seg, uint64_t off)
{
    uint32_t lo = 0, hi = seg->nblocks;
    while (lo < hi) { /* first block starting after off */
        uint32_t mid = lo + (hi - lo) / 2;
        if (seg->blocks[mid].raw_off <= off) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return seg->nblocks;
    const struct spool_block *b = &seg->blocks[lo - 1];
    return off < (uint64_t)b->raw_off + b->raw_len ? lo - 1 : seg->nblocks;
}

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (*cap >= need) return 0;
    uint8_t *b = realloc(*buf, need);
    if (b == NULL) return -1;
    *buf = b;
    *cap = need;
    return 0;
}

int spool_seg_read_block(struct spool_segment *seg, uint32_t bi, uint8_t **buf, size_t *cap,
                         struct spool_iostats *io, struct spool_err *err)
{
    const struct spool_block *b = &seg->blocks[bi];
    uint8_t *comp = malloc(b->comp_len ? b->comp_len : 1);
    if (comp == NULL || reserve(buf, cap, b->raw_len) != 0) {
        free(comp);
        return spool_err_set(err, SPOOL_ENOMEM, "block buffer");
    }
    io->disk_reads++;
    int rv = 0;
    if (pread_all(seg->fd, comp, b->comp_len, b->file_off) != 0) {
        rv = spool_err_set(err, SPOOL_EIO, "read segment %u block %u: %s", seg->id, bi,
                           errno ? strerror(errno) : "short");
    } else if (spool_crc32c(0, comp, b->comp_len) != b->crc ||
               LZ4_decompress_safe((const char *)comp, (char *)*buf, (int)b->comp_len,
                                   (int)b->raw_len) != (int)b->raw_len) {
        rv = spool_err_set(err, SPOOL_ECORRUPT, "segment %u block %u: checksum or lz4 mismatch",
                           seg->id, bi);
    }
    free(comp);
    return rv;
}

int spool_sealer_init(struct spool_sealer *w, const char *dir, uint32_t id, uint32_t block_bytes,
                      struct spool_err *err)
{
    *w = (struct spool_sealer){.fd = -1, .id = id, .block_bytes = block_bytes,
                               .next_raw = SPOOL_SEG_HDR, .file_off = SPOOL_SEG_HDR};
    spool_seg_path(w->tmp, sizeof w->tmp, dir, id, ".lz4.tmp");
    spool_seg_path(w->path, sizeof w->path, dir, id, ".lz4");
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) return spool_err_set(err, SPOOL_EIO, "create %s: %s", w->tmp, strerror(errno));
    uint8_t hdr[SPOOL_SEG_HDR];
    spool_seg_header(hdr, SPOOL_SEALED_MAGIC, id);
    if (pwrite_all(w->fd, hdr, sizeof hdr, 0) != 0) {
        int e = errno;
        spool_sealer_abort(w);
        return spool_err_set(err, SPOOL_EIO, "write %s: %s", w->tmp, strerror(e));
    }
    return 0;
}

/* Compresses and writes the pending raw block. */
static int flush_block(struct spool_sealer *w, struct spool_err *err)
{
    if (w->rawlen == 0) return 0;
    if (w->nblocks == w->capblocks) {
        uint32_t n = w->capblocks ? w->capblocks * 2 : 64;
        struct spool_block *b = realloc(w->blocks, n * sizeof *b);
        if (b == NULL) return spool_err_set(err, SPOOL_ENOMEM, "block index");
        w->blocks = b;
        w->capblocks = n;
    }
    size_t bound = (size_t)LZ4_compressBound((int)w->rawlen);
    if (reserve(&w->comp, &w->compcap, bound) != 0) return spool_err_set(err, SPOOL_ENOMEM, "lz4 buffer");
    int clen = LZ4_compress_default((const char *)w->raw, (char *)w->comp, (int)w->rawlen, (int)bound);
    if (clen <= 0) return spool_err_set(err, SPOOL_EIO, "lz4 compression failed");
    if (pwrite_all(w->fd, w->comp, (size_t)clen, w->file_off) != 0)
        return spool_err_set(err, SPOOL_EIO, "write %s: %s", w->tmp, strerror(errno));
    w->blocks[w->nblocks++] = (struct spool_block){
        .file_off = w->file_off,
        .comp_len = (uint32_t)clen,
        .raw_off = (uint32_t)(w->next_raw - w->rawlen),
        .raw_len = (uint32_t)w->rawlen,
        .crc = spool_crc32c(0, w->comp, (size_t)clen),
    };
    /* Start writeback now so the fsync at the end of sealing has little left to wait for. */
    (void)sync_file_range(w->fd, (off64_t)w->file_off, clen, SYNC_FILE_RANGE_WRITE);
    w->file_off += (uint64_t)clen;
    w->rawlen = 0;
    return 0;
}

int spool_sealer_add(struct spool_sealer *w, const uint8_t *frame, size_t len, uint64_t *raw_off,
                     struct spool_err *err)
{
    if (w->rawlen > 0 && w->rawlen + len > w->block_bytes) {
        int rv = flush_block(w, err);
        if (rv != 0) return rv;
    }
    if (reserve(&w->raw, &w->rawcap, w->rawlen + len) != 0)
        return spool_err_set(err, SPOOL_ENOMEM, "block buffer");
    memcpy(w->raw + w->rawlen, frame, len);
    w->rawlen += len;
    if (raw_off != NULL) *raw_off = w->next_raw;
    w->next_raw += len;
    return 0;
}

int spool_sealer_finish(struct spool_sealer *w, const char *dir, struct spool_segment *out,
                        struct spool_iostats *io, struct spool_err *err)
{
    int rv = flush_block(w, err);
    if (rv != 0) goto fail;
    size_t ilen = (size_t)w->nblocks * SPOOL_BLOCK_ENTRY;
    uint8_t *idx = malloc(ilen + SPOOL_SEALED_FOOTER);
    if (idx == NULL) {
        rv = spool_err_set(err, SPOOL_ENOMEM, "block index");
        goto fail;
    }
    for (uint32_t i = 0; i < w->nblocks; i++) {
        uint8_t *e = idx + (size_t)i * SPOOL_BLOCK_ENTRY;
        const struct spool_block *b = &w->blocks[i];
        spool_put_u64(e, b->file_off);
        spool_put_u32(e + 8, b->comp_len);
        spool_put_u32(e + 12, b->raw_off);
        spool_put_u32(e + 16, b->raw_len);
        spool_put_u32(e + 20, b->crc);
    }
    uint8_t *foot = idx + ilen;
    spool_put_u64(foot, w->file_off);
    spool_put_u32(foot + 8, w->nblocks);
    spool_put_u32(foot + 12, spool_crc32c(0, idx, ilen));
    spool_put_u32(foot + 16, spool_crc32c(0, foot, 16));
    memcpy(foot + 20, SPOOL_SEALED_MAGIC, 4);
    int wr = pwrite_all(w->fd, idx, ilen + SPOOL_SEALED_FOOTER, w->file_off);
    free(idx);
    if (wr != 0 || spool_fsync_fd(w->fd, io) != 0) {
        rv = spool_err_set(err, SPOOL_EIO, "write %s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    if (rename(w->tmp, w->path) != 0) {
        rv = spool_err_set(err, SPOOL_EIO, "rename %s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    rv = spool_fsync_dir(dir, io, err);
    close(w->fd);
    w->fd = -1;
    free(w->raw);
    free(w->comp);
    w->raw = w->comp = NULL;
    if (rv != 0) {
        free(w->blocks);
        return rv;
    }
    *out = (struct spool_segment){.id = w->id, .sealed = true, .size = w->next_raw,
                                  .file_bytes = w->file_off + ilen + SPOOL_SEALED_FOOTER,
                                  .blocks = w->blocks, .nblocks = w->nblocks};
    w->blocks = NULL;
    out->fd = open(w->path, O_RDONLY | O_CLOEXEC);
    if (out->fd < 0) {
        free(out->blocks);
        out->blocks = NULL;
        return spool_err_set(err, SPOOL_EIO, "open %s: %s", w->path, strerror(errno));
    }
    return 0;
fail:
    spool_sealer_abort(w);
    return rv;
}

void spool_sealer_abort(struct spool_sealer *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    w->fd = -1;
    free(w->raw);
    free(w->comp);
    free(w->blocks);
    w->raw = w->comp = NULL;
    w->blocks = NULL;
}
