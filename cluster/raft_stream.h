/*
 * Accepted cluster-port streams, and a read buffer in front of libraft's receiver.
 *
 * libraft's receiver (uv_recv.c) reads each Raft message in three exact-size reads: the 16-byte
 * preamble, then the header, then the payload, each into a buffer it allocates for just that
 * part; libuv then tries once more and gets EAGAIN. So every AppendEntries costs four read(2)
 * calls and every AppendEntries result three, which under load was most of a node's read
 * syscalls (~10k of 12k per 2 s on one node at 64 publishes in flight).
 *
 * spool_raft_stream_buffer() sits between libuv and libraft on an accepted Raft stream: once
 * libraft has started reading, it re-starts the read with its own callbacks. Each read then asks
 * the kernel for up to SPOOL_RAFT_STREAM_BUF bytes at once and hands them to libraft's callbacks
 * piece by piece, exactly as libuv would have (libraft's alloc callback names the next buffer,
 * the bytes are copied in, its read callback consumes them), until the chunk is used up. So
 * what libraft sees is the same byte stream in the same order; only the syscalls change (one
 * read per wake-up instead of three or four per message). libraft handles each message
 * synchronously inside its read callback, so nothing is held back between wake-ups.
 *
 * When libraft asks for SPOOL_RAFT_STREAM_BUF bytes or more at once (a large payload, e.g. a
 * snapshot chunk) the read goes straight into its buffer: no copy, as before.
 *
 * If libraft stops reading or closes the stream while a chunk is being handed over (it aborts a
 * connection on a bad message, and raft_close inside a callback closes every stream at once),
 * the rest of the chunk is dropped with the stream.
 *
 * Memory: the buffer lives inline in `struct spool_raft_stream`, whose first member is the
 * uv_tcp_t, so whoever raft_free()s the handle after closing it (libraft, rpc.c, the mux)
 * releases the buffer too; nothing else is allocated or needs closing.
 */
#ifndef SPOOL_CLUSTER_RAFT_STREAM_H
#define SPOOL_CLUSTER_RAFT_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#define SPOOL_RAFT_STREAM_BUF 16384

struct spool_raft_stream {
    uv_tcp_t tcp; /* first: a (uv_tcp_t *) to this struct is the struct */
    uv_alloc_cb raft_alloc;
    uv_read_cb raft_read;
    uv_buf_t want;   /* libraft's current buffer (from raft_alloc) */
    bool direct;     /* the current read goes straight into `want` */
    uint64_t reads;  /* kernel reads that returned bytes (for tests and debugging) */
    char buf[SPOOL_RAFT_STREAM_BUF];
};

/* Allocates (raft_malloc) a stream for an accepted connection; NULL when out of memory. */
struct spool_raft_stream *spool_raft_stream_new(void);

/* Puts the buffer in front of the reader libraft started on `s` (call right after handing the
 * stream to libraft's accept callback). Does nothing when the stream is closing or not being
 * read (libraft refused it). */
void spool_raft_stream_buffer(struct spool_raft_stream *s);

#endif
