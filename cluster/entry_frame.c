/* Raft payload framing (see entry_frame.h). */
#include "cluster/entry_frame.h"

#include <raft.h>
#include <string.h>

#include "common/err.h"

uint8_t *spool_entry_frame_alloc(size_t payload, void **buf, size_t *len)
{
    size_t total = (8 + payload + 7) & ~(size_t)7;
    uint8_t *p = raft_malloc(total);
    if (p == NULL)
        return NULL;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)payload >> (8 * i));
    memset(p + 8 + payload, 0, total - 8 - payload);
    *buf = p;
    *len = total;
    return p + 8;
}

int spool_entry_frame(const ProtobufCMessage *m, void **buf, size_t *len)
{
    uint8_t *w = spool_entry_frame_alloc(protobuf_c_message_get_packed_size(m), buf, len);
    if (w == NULL)
        return SPOOL_ENOMEM;
    protobuf_c_message_pack(m, w);
    return 0;
}

int spool_entry_unframe(const void *buf, size_t len, const uint8_t **payload, size_t *payload_len)
{
    const uint8_t *p = buf;
    if (len < 8)
        return -1;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)p[i] << (8 * i);
    if (n > len - 8)
        return -1;
    *payload = p + 8;
    *payload_len = (size_t)n;
    return 0;
}
