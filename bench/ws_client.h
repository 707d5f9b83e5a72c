/*
 * ws_client: the RFC 6455 client framing the WebSocket load generators share (bench/publish.c,
 * bench/fanout.c): writing the header of a masked client frame, and reading the header of a
 * server frame out of an input buffer.
 *
 * Client frames are masked with the key 0 (XOR with zero keeps the payload, and it is still a
 * valid masked frame), so the payload is written as is after the header. Frames are never
 * fragmented on the way out. The reader only decodes the header: what a frame means (ping, close,
 * text, continuation) and whether a masked server frame is an error is the caller's business.
 */
#ifndef SPOOL_BENCH_WS_CLIENT_H
#define SPOOL_BENCH_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest client frame header: 2 + 8 bytes of length + 4 of mask key. */
#define WS_CLIENT_HEAD_MAX 14

/* Write the header of a final, masked client frame of `opcode` with an n-byte payload at out
 * (room for WS_CLIENT_HEAD_MAX bytes); returns its length. The payload goes right after it. */
size_t ws_client_head(uint8_t opcode, size_t n, char *out);

/* One server frame's header. */
struct ws_frame {
    uint8_t op;   /* opcode (low 4 bits of the first byte) */
    bool fin;     /* final fragment */
    bool masked;  /* the mask bit (servers must not set it) */
    size_t head;  /* header bytes, including a mask key when masked */
    uint64_t len; /* payload bytes */
};

/* Read the header of the frame at b[0..n): 0 when b does not hold the whole length field yet,
 * else 1 with *f filled (the payload is complete when n >= f->head + f->len). */
int ws_frame_parse(const char *b, size_t n, struct ws_frame *f);

#endif
