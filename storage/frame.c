/*
 * Frame encoding and checking (layout in storage/format.h). Every reader of segment bytes goes
 * through spool_frame_parse, so "is this frame intact" is decided in exactly one place.
 */
#include "storage/format.h"

#include "storage/crc32c.h"

static uint32_t frame_crc(const uint8_t *word, const uint8_t *payload, uint32_t len)
{
    return spool_crc32c(spool_crc32c(0, word, 4), payload, len);
}

void spool_frame_finish(uint8_t *frame, unsigned type, uint32_t len)
{
    spool_put_u32(frame, len | (uint32_t)type << 28);
    spool_put_u32(frame + 4, frame_crc(frame, frame + SPOOL_FRAME_HDR, len));
}

enum spool_frame_status spool_frame_parse(const uint8_t *buf, size_t avail, struct spool_frame *f)
{
    if (avail < SPOOL_FRAME_HDR) return SPOOL_FRAME_TORN;
    uint32_t word = spool_get_u32(buf);
    uint32_t len = word & SPOOL_FRAME_MAX;
    unsigned type = word >> 28;
    if (type < SPOOL_FRAME_RECORD || type > SPOOL_FRAME_STATE) return SPOOL_FRAME_BAD;
    if (type == SPOOL_FRAME_COMMIT && len != SPOOL_COMMIT_LEN) return SPOOL_FRAME_BAD;
    if (type == SPOOL_FRAME_START && len != SPOOL_START_LEN) return SPOOL_FRAME_BAD;
    if (avail - SPOOL_FRAME_HDR < len) return SPOOL_FRAME_TORN;
    if (frame_crc(buf, buf + SPOOL_FRAME_HDR, len) != spool_get_u32(buf + 4)) return SPOOL_FRAME_BAD;
    f->type = type;
    f->payload = buf + SPOOL_FRAME_HDR;
    f->len = len;
    return SPOOL_FRAME_OK;
}

void spool_seg_header(uint8_t *hdr, const char *magic, uint32_t id)
{
    memcpy(hdr, magic, 4);
    spool_put_u32(hdr + 4, SPOOL_FORMAT_VERSION);
    spool_put_u32(hdr + 8, id);
    spool_put_u32(hdr + 12, spool_crc32c(0, hdr, 12));
}

int spool_seg_header_check(const uint8_t *hdr, const char *magic, uint32_t id)
{
    if (memcmp(hdr, magic, 4) != 0 || spool_crc32c(0, hdr, 12) != spool_get_u32(hdr + 12) ||
        spool_get_u32(hdr + 8) != id)
        return SPOOL_HDR_DAMAGED;
    if (spool_get_u32(hdr + 4) != SPOOL_FORMAT_VERSION) return SPOOL_HDR_VERSION;
    return SPOOL_HDR_OK;
}
