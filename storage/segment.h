/*
 * Segment files: the store's log is a sequence of segments with increasing ids, each holding a
 * stream of frames (storage/format.h) that starts at raw offset SPOOL_SEG_HDR.
 *
 * The newest segment is *active*: <id>.log, a 16-byte header then frames appended in place.
 * When it reaches segment_bytes it is *sealed*: rewritten as <id>.lz4, the same frame stream cut
 * into blocks of about block_bytes (always at frame boundaries), each block lz4-compressed and
 * checksummed, followed by a block index and a footer:
 *
 *   header (16) | block 0 | block 1 | ... | index: nblocks x 24 bytes | footer (24)
 *   index entry: u64 file_off, u32 comp_len, u32 raw_off, u32 raw_len, u32 crc32c(compressed)
 *   footer:      u64 index_off, u32 nblocks, u32 crc32c(index), u32 crc32c(first 16 footer
 *                bytes), "SPSZ"
 *
 * Because a frame keeps its raw offset when its segment is sealed, index entries never change
 * at sealing time; reading a sealed record means finding the block whose raw range holds the
 * offset (binary search) and decompressing that one block only. Sealing is atomic: the file is
 * written as <id>.lz4.tmp, fsynced, renamed, the directory fsynced, and only then is the .log
 * removed (recovery prefers a .lz4 over a .log of the same id).
 */
#ifndef SPOOL_STORAGE_SEGMENT_H
#define SPOOL_STORAGE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SPOOL_BLOCK_ENTRY 24u
#define SPOOL_SEALED_FOOTER 24u

struct spool_iostats {
    uint64_t fsyncs;
    uint64_t fsync_ns;
    uint64_t disk_reads;
};

struct spool_block {
    uint64_t file_off;
    uint32_t comp_len, raw_off, raw_len, crc;
};

struct spool_segment {
    uint32_t id;
    int fd;
    bool sealed;
    bool synced;         /* fdatasync'ed since the last append (full .log segments) */
    uint64_t size;       /* end of the raw frame stream */
    uint64_t file_bytes; /* size on disk */
    struct spool_block *blocks;
    uint32_t nblocks;
    uint64_t live_records, live_bytes; /* retained records here and their frame bytes */
    uint64_t record_bytes;             /* frame bytes of every record ever written here */
};

void spool_seg_path(char *buf, size_t size, const char *dir, uint32_t id, const char *suffix);
int spool_fsync_fd(int fd, struct spool_iostats *io);
int spool_fsync_dir(const char *dir, struct spool_iostats *io, struct spool_err *err);

/* Creates an empty active segment (header only). */
int spool_seg_create(struct spool_segment *seg, const char *dir, uint32_t id, struct spool_err *err);
/* Opens an existing active segment; the caller scans and sets seg->size. */
int spool_seg_open_log(struct spool_segment *seg, const char *dir, uint32_t id, uint64_t *file_size,
                       struct spool_err *err);
/* Opens a sealed segment and loads its block index (SPOOL_ECORRUPT if it does not check). */
int spool_seg_open_sealed(struct spool_segment *seg, const char *dir, uint32_t id,
                          struct spool_err *err);
void spool_seg_close(struct spool_segment *seg);

/* Appends `len` bytes at seg->size with one write; on failure the file is cut back. */
int spool_seg_append(struct spool_segment *seg, const void *buf, size_t len, struct spool_err *err);
/* Cuts an active segment to `size` bytes. */
int spool_seg_truncate(struct spool_segment *seg, uint64_t size, struct spool_err *err);
/* Reads raw bytes of an active segment. */
int spool_seg_pread(struct spool_segment *seg, uint64_t off, void *buf, size_t len,
                    struct spool_iostats *io, struct spool_err *err);
/* Index of the block of a sealed segment holding raw offset `off` (nblocks if none). */
uint32_t spool_seg_find_block(const struct spool_segment *seg, uint64_t off);
/* Reads, checks and decompresses block `b` into *buf (grown as needed). */
int spool_seg_read_block(struct spool_segment *seg, uint32_t b, uint8_t **buf, size_t *cap,
                         struct spool_iostats *io, struct spool_err *err);

/* Writes a sealed segment frame by frame. */
struct spool_sealer {
    int fd;
    char tmp[4096];
    char path[4096];
    uint32_t id, block_bytes;
    uint8_t *raw, *comp;
    size_t rawlen, rawcap, compcap;
    struct spool_block *blocks;
    uint32_t nblocks, capblocks;
    uint64_t next_raw, file_off;
};

int spool_sealer_init(struct spool_sealer *w, const char *dir, uint32_t id, uint32_t block_bytes,
                      struct spool_err *err);
/* Adds one whole frame; *raw_off receives its raw offset in the new segment. */
int spool_sealer_add(struct spool_sealer *w, const uint8_t *frame, size_t len, uint64_t *raw_off,
                     struct spool_err *err);
/* Completes the file and puts it in place atomically; fills `out` as an open sealed segment. */
int spool_sealer_finish(struct spool_sealer *w, const char *dir, struct spool_segment *out,
                        struct spool_iostats *io, struct spool_err *err);
void spool_sealer_abort(struct spool_sealer *w);

#endif
