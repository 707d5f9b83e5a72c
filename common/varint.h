/*
 * Protocol Buffers base-128 varints, for the few places that write protobuf wire bytes by hand
 * (a Raft entry built by concatenating packed requests, snapshot frames streamed without
 * building the whole message): the byte count and the writer, identical to protobuf-c's.
 */
#ifndef SPOOL_COMMON_VARINT_H
#define SPOOL_COMMON_VARINT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes spool_varint_put writes for v (1..10). */
static inline size_t spool_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v at out (room for spool_varint_size(v) bytes); returns the bytes written. */
static inline size_t spool_varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

#endif
