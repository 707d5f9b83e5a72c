/*
 * Fuzzes the RPC frame parser (cluster/rpc_frame.h) the way a connection drives it: frames are
 * parsed one after another from the input until one is incomplete or invalid. The first byte
 * picks a mode: odd = before parsing, patch each frame header's checksum to match its payload
 * (when the declared length fits), so the fuzzer reaches the protobuf decoder and the kind
 * check instead of stopping at the checksum; even = the bytes as they are. The second byte
 * sets the frame size limit (x 16 bytes).
 *
 * Every complete frame must re-encode and parse back to the same fields; "need more" must ask
 * for more than is there; a frame over the limit must be refused from its header alone.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/rpc_frame.h"
#include "storage/crc32c.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void same_fields(const Spool__RpcFrame *a, const Spool__RpcFrame *b)
{
    if (a->id != b->id || a->kind != b->kind || a->method != b->method || a->status != b->status)
        abort();
    if (strcmp(a->error, b->error) != 0) abort();
    if (a->body.len != b->body.len) abort();
    if (a->body.len && memcmp(a->body.data, b->body.data, a->body.len) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int fix_crc = data[0] & 1;
    size_t max = (size_t)data[1] * 16;
    size -= 2;
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL) abort();
    memcpy(buf, data + 2, size);
    if (fix_crc) {
        size_t off = 0;
        while (size - off >= SPOOL_RPC_FRAME_HEADER) {
            uint32_t plen = get32(buf + off);
            if (plen > size - off - SPOOL_RPC_FRAME_HEADER) break;
            uint32_t crc = spool_crc32c(0, buf + off + SPOOL_RPC_FRAME_HEADER, plen);
            buf[off + 4] = (uint8_t)(crc >> 24);
            buf[off + 5] = (uint8_t)(crc >> 16);
            buf[off + 6] = (uint8_t)(crc >> 8);
            buf[off + 7] = (uint8_t)crc;
            off += SPOOL_RPC_FRAME_HEADER + plen;
        }
    }
    size_t off = 0;
    for (;;) {
        Spool__RpcFrame *f = NULL;
        struct spool_err err;
        size_t n = 0;
        int rv = spool_rpc_frame_parse(buf + off, size - off, max, &f, &n, &err);
        if (rv == SPOOL_RPC_FRAME_MORE) {
            if (n <= size - off) abort();
            break;
        }
        if (rv == SPOOL_RPC_FRAME_BAD) {
            if (size - off >= 4 && get32(buf + off) > max && err.code != SPOOL_ELIMIT) abort();
            break;
        }
        if (rv != SPOOL_RPC_FRAME_OK || n > size - off || n < SPOOL_RPC_FRAME_HEADER) abort();
        /* The limit held, and the frame survives a round trip. */
        if (n - SPOOL_RPC_FRAME_HEADER > max) abort();
        uint8_t *enc;
        size_t elen;
        if (spool_rpc_frame_encode(f, (size_t)1 << 30, &enc, &elen) != 0) abort();
        Spool__RpcFrame *g = NULL;
        size_t gn = 0;
        if (spool_rpc_frame_parse(enc, elen, (size_t)1 << 30, &g, &gn, &err) != SPOOL_RPC_FRAME_OK ||
            gn != elen)
            abort();
        same_fields(f, g);
        spool__rpc_frame__free_unpacked(g, NULL);
        spool__rpc_frame__free_unpacked(f, NULL);
        free(enc);
        off += n;
    }
    free(buf);
    return 0;
}
