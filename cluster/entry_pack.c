/* An Entry from packed publish requests (see entry_pack.h). */
#include "cluster/entry_pack.h"

#include <raft.h>
#include <string.h>

#include "cluster/entry_frame.h"
#include "common/err.h"
#include "common/varint.h"

size_t spool_pb_len_field_size(size_t len)
{
    return 1 + spool_varint_size(len) + len;
}

size_t spool_pb_put_len_header(uint8_t *out, uint8_t tag, size_t len)
{
    out[0] = tag;
    return 1 + spool_varint_put(out + 1, len);
}

/* protobuf int64 is the two's complement as uint64 (10 bytes when negative). */
#define TAG_TIMESTAMP 0x08 /* field 1, varint */
#define TAG_PUBLISH 0x12   /* field 2, length-delimited */
#define TAG_RETENTION 0x1a /* field 3, length-delimited */
#define TAG_NOW 0x08       /* RetentionTick field 1, varint */
#define TAG_PROPOSAL 0x20  /* field 4, varint */

int spool_entry_pack(int64_t timestamp_ms, const struct spool_entry_part *parts, size_t n,
                     bool retention, int64_t retention_now_ms, uint64_t proposal, void **buf,
                     size_t *len)
{
    size_t payload = 0, tick = 0;
    if (timestamp_ms != 0)
        payload += 1 + spool_varint_size((uint64_t)timestamp_ms);
    for (size_t i = 0; i < n; i++)
        payload += spool_pb_len_field_size(parts[i].len);
    if (retention) {
        tick = retention_now_ms != 0 ? 1 + spool_varint_size((uint64_t)retention_now_ms) : 0;
        payload += spool_pb_len_field_size(tick);
    }
    if (proposal != 0)
        payload += 1 + spool_varint_size(proposal);
    uint8_t *w = spool_entry_frame_alloc(payload, buf, len);
    if (w == NULL)
        return SPOOL_ENOMEM;
    if (timestamp_ms != 0) {
        *w++ = TAG_TIMESTAMP;
        w += spool_varint_put(w, (uint64_t)timestamp_ms);
    }
    for (size_t i = 0; i < n; i++) {
        w += spool_pb_put_len_header(w, TAG_PUBLISH, parts[i].len);
        if (parts[i].len > 0)
            memcpy(w, parts[i].buf, parts[i].len);
        w += parts[i].len;
    }
    if (retention) {
        w += spool_pb_put_len_header(w, TAG_RETENTION, tick);
        if (retention_now_ms != 0) {
            *w++ = TAG_NOW;
            w += spool_varint_put(w, (uint64_t)retention_now_ms);
        }
    }
    if (proposal != 0) {
        *w++ = TAG_PROPOSAL;
        w += spool_varint_put(w, proposal);
    }
    return 0;
}

int spool_entry_pack_fields(int64_t timestamp_ms, const uint8_t *fields, size_t fields_len,
                            uint64_t proposal, void **buf, size_t *len)
{
    size_t payload = fields_len;
    if (timestamp_ms != 0)
        payload += 1 + spool_varint_size((uint64_t)timestamp_ms);
    if (proposal != 0)
        payload += 1 + spool_varint_size(proposal);
    uint8_t *w = spool_entry_frame_alloc(payload, buf, len);
    if (w == NULL)
        return SPOOL_ENOMEM;
    if (timestamp_ms != 0) {
        *w++ = TAG_TIMESTAMP;
        w += spool_varint_put(w, (uint64_t)timestamp_ms);
    }
    if (proposal != 0) { /* field 4 before the fields (5, 6): protobuf-c's order */
        *w++ = TAG_PROPOSAL;
        w += spool_varint_put(w, proposal);
    }
    if (fields_len > 0)
        memcpy(w, fields, fields_len);
    w += fields_len;
    return 0;
}
