/*
 * RPC frame encoding and the allocation-bounded parser; format in cluster/rpc_frame.h.
 */
#include "cluster/rpc_frame.h"

#include <stdlib.h>

#include "storage/crc32c.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int spool_rpc_frame_parse(const void *buf, size_t len, size_t max_payload,
                          Spool__RpcFrame **frame, size_t *size, struct spool_err *err)
{
    const uint8_t *p = buf;
    if (len < SPOOL_RPC_FRAME_HEADER) {
        *size = SPOOL_RPC_FRAME_HEADER;
        return SPOOL_RPC_FRAME_MORE;
    }
    uint32_t plen = get32(p);
    if (plen > max_payload) {
        spool_err_set(err, SPOOL_ELIMIT, "rpc frame of %u bytes over the %zu limit", plen,
                      max_payload);
        return SPOOL_RPC_FRAME_BAD;
    }
    size_t total = SPOOL_RPC_FRAME_HEADER + (size_t)plen;
    if (len < total) {
        *size = total;
        return SPOOL_RPC_FRAME_MORE;
    }
    uint32_t crc = spool_crc32c(0, p + SPOOL_RPC_FRAME_HEADER, plen);
    if (crc != get32(p + 4)) {
        spool_err_set(err, SPOOL_ECORRUPT, "rpc frame checksum 0x%08x, expected 0x%08x", crc,
                      get32(p + 4));
        return SPOOL_RPC_FRAME_BAD;
    }
    Spool__RpcFrame *f = spool__rpc_frame__unpack(NULL, plen, p + SPOOL_RPC_FRAME_HEADER);
    if (f == NULL) {
        spool_err_set(err, SPOOL_ECORRUPT, "rpc frame does not decode");
        return SPOOL_RPC_FRAME_BAD;
    }
    /* protobuf-c keeps fields it does not know, even field number 0, which the encoding
     * forbids and which does not survive re-encoding: such a frame is corrupt, not a frame from
     * a newer version (whose unknown fields, numbered > 0, are tolerated). */
    for (size_t i = 0; i < f->base.n_unknown_fields; i++) {
        if (f->base.unknown_fields[i].tag == 0) {
            spool_err_set(err, SPOOL_ECORRUPT, "rpc frame has a field numbered 0");
            spool__rpc_frame__free_unpacked(f, NULL);
            return SPOOL_RPC_FRAME_BAD;
        }
    }
    if (f->kind != SPOOL__RPC_KIND__RPC_KIND_REQUEST &&
        f->kind != SPOOL__RPC_KIND__RPC_KIND_RESPONSE &&
        f->kind != SPOOL__RPC_KIND__RPC_KIND_MESSAGE) {
        spool_err_set(err, SPOOL_ECORRUPT, "rpc frame of unknown kind %d", (int)f->kind);
        spool__rpc_frame__free_unpacked(f, NULL);
        return SPOOL_RPC_FRAME_BAD;
    }
    *frame = f;
    *size = total;
    return SPOOL_RPC_FRAME_OK;
}

int spool_rpc_frame_encode(const Spool__RpcFrame *f, size_t max_payload, uint8_t **out,
                           size_t *len)
{
    size_t plen = spool__rpc_frame__get_packed_size(f);
    if (plen > max_payload || plen > UINT32_MAX) return SPOOL_ELIMIT;
    uint8_t *b = malloc(SPOOL_RPC_FRAME_HEADER + plen);
    if (b == NULL) return SPOOL_ENOMEM;
    spool__rpc_frame__pack(f, b + SPOOL_RPC_FRAME_HEADER);
    put32(b, (uint32_t)plen);
    put32(b + 4, spool_crc32c(0, b + SPOOL_RPC_FRAME_HEADER, plen));
    *out = b;
    *len = SPOOL_RPC_FRAME_HEADER + plen;
    return 0;
}
