/*
 * On-disk building blocks shared by every storage file: little-endian integer helpers and the
 * frame, the unit everything in a segment is made of.
 *
 * A frame is an 8-byte header and a payload:
 *
 *   u32 word   low 28 bits: payload length, high 4 bits: frame type
 *   u32 crc    CRC32C over the 4 bytes of `word` followed by the payload
 *
 * Covering the length word by the checksum means a flipped bit in a length is detected as such
 * instead of sending the reader off to parse garbage as a frame. Types:
 *
 *   RECORD  a Spool__Record protobuf (one channel message)
 *   COMMIT  u64 raft_index, u32 record count: closes the batch of `count` RECORD frames written
 *           just before it. Records not followed by their COMMIT are a torn batch.
 *   META    a Spool__ChannelState protobuf: a channel's first_seq/last_seq/retention changed
 *           (trim, delete, override). Never inside a batch.
 *   START   u64 size of the previous segment, u64 applied index: the first frame of every
 *           segment after the first, so recovery can tell that a previous .log segment lost
 *           whole batches at its end (its size falls short), which nothing else would reveal.
 *   STATE   the owner's opaque shard state (spool_store_set_shard_state), replacing the
 *           previous one. Never inside a batch.
 *
 * docs/storage-format.md has the whole layout.
 */
#ifndef SPOOL_STORAGE_FORMAT_H
#define SPOOL_STORAGE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPOOL_FORMAT_VERSION 1u
#define SPOOL_SEG_MAGIC "SPSG"    /* active (raw) segment file */
#define SPOOL_SEALED_MAGIC "SPSZ" /* sealed (lz4 blocks) segment file */
#define SPOOL_SEG_HDR 16u         /* magic, u32 version, u32 segment id, u32 crc32c */
#define SPOOL_FRAME_HDR 8u
#define SPOOL_FRAME_MAX ((1u << 28) - 1u)
#define SPOOL_RECORD_MAX (64u << 20) /* largest record payload accepted */
#define SPOOL_COMMIT_LEN 12u
#define SPOOL_START_LEN 16u

enum spool_frame_type {
    SPOOL_FRAME_RECORD = 1,
    SPOOL_FRAME_COMMIT = 2,
    SPOOL_FRAME_META = 3,
    SPOOL_FRAME_START = 4,
    SPOOL_FRAME_STATE = 5,
};

static inline void spool_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t spool_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void spool_put_u64(uint8_t *p, uint64_t v)
{
    spool_put_u32(p, (uint32_t)v);
    spool_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t spool_get_u64(const uint8_t *p)
{
    return (uint64_t)spool_get_u32(p) | (uint64_t)spool_get_u32(p + 4) << 32;
}

/* Fills the header at `frame` for the `len` payload bytes that follow it. */
void spool_frame_finish(uint8_t *frame, unsigned type, uint32_t len);

enum spool_frame_status {
    SPOOL_FRAME_OK = 0,
    SPOOL_FRAME_TORN = 1, /* the buffer ends inside the frame */
    SPOOL_FRAME_BAD = 2,  /* checksum mismatch or unknown type */
};

struct spool_frame {
    unsigned type;
    const uint8_t *payload;
    uint32_t len;
};

/* Parses the frame at the start of `buf` (`avail` bytes). On SPOOL_FRAME_OK the frame occupies
 * SPOOL_FRAME_HDR + f->len bytes. */
enum spool_frame_status spool_frame_parse(const uint8_t *buf, size_t avail, struct spool_frame *f);

/* The segment file header (16 bytes): magic, u32 version, u32 segment id, u32 crc32c of the
 * first 12 bytes. The checksum tells a damaged header (recovered like a torn file) from an intact
 * one of a format this build does not know (refused: never "repair" a newer store away). */
enum { SPOOL_HDR_OK = 0, SPOOL_HDR_DAMAGED = -1, SPOOL_HDR_VERSION = -2 };
void spool_seg_header(uint8_t *hdr, const char *magic, uint32_t id);
int spool_seg_header_check(const uint8_t *hdr, const char *magic, uint32_t id);

#endif
