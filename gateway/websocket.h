/*
 * WebSocket (RFC 6455) server connections on libuv, framed by wslay.
 *
 * The HTTP server parses the upgrade request and hands over the stream (plus any bytes it read
 * past the request head); spool_ws_handshake_response() builds the 101 reply, and a struct
 * spool_ws then owns the stream until its on_close event.
 *
 * Reading. Bytes from uv_read go through wslay's event API (wslay_event_recv), which reassembles
 * fragmented messages, answers pings, validates close codes and echoes close frames. On top of it
 * this file enforces what wslay does not:
 *   - a frame whose declared payload exceeds max_frame_bytes is refused as soon as its header is
 *     seen (close 1009), before its payload is buffered; a reassembled message larger than
 *     max_message_bytes also closes with 1009 (wslay's own limit);
 *   - text messages and close reasons must be valid UTF-8 (close 1007), checked by
 *     spool_utf8_valid(), a hand-written validator that rejects overlong forms, surrogates and
 *     code points above U+10FFFF (fuzzed in tests/fuzz/fuzz_utf8.c).
 * The common case skips wslay: while wslay is between messages (this file follows the frame
 * boundaries of every byte it hands to wslay), complete, unfragmented, masked text or binary
 * frames with a minimal length, no RSV bit, a non-empty payload under both limits (and valid
 * UTF-8 for text) are unmasked into a per-thread buffer and delivered directly: wslay would copy
 * each one three times and malloc twice. Anything else, and everything after it in that read, goes
 * to wslay, whose behaviour stays the reference (tests/gateway/test_ws_fastread.c feeds the same
 * byte streams, cut at every point, with and without the direct path and compares).
 *
 * Writing. Server frames are never masked, so a data frame is the same bytes for every peer. A
 * struct spool_wsframe is one encoded frame (header + payload) with a reference count: a record
 * delivered to a thousand subscribers is encoded once and each connection's write points at
 * the same bytes, holding a reference until its write completes. Control frames (pong, ping,
 * close) are produced by wslay; its send callback always takes the whole frame at once (copied),
 * so wslay never holds a partial frame. Everything a connection sends goes into one queue, in
 * order; a uv_idle handle flushes the queue at the start of the next loop iteration as ONE
 * vectored uv_write (one writev for a burst of messages instead of one syscall each). Idle, not
 * check: acks are often made inside libraft's own check/prepare callbacks, and a check handle
 * started then would wait for the next iteration behind a blocking poll (up to a Raft tick);
 * an active idle handle keeps the poll from blocking (cluster/rpc.c does the same).
 *
 * Backpressure. Bytes handed to uv_write and not yet completed are counted; a send that would
 * push that count above send_buffer_bytes is refused with SPOOL_ELIMIT and the connection is
 * closed with 1008 ("send buffer full"), since a peer that cannot keep up would otherwise make
 * the server buffer without bound. The realtime protocol makes that recoverable: the client
 * resumes and gets the rest from history. Callers that produce a lot (history pages) look at
 * spool_ws_buffered() and wait for on_drain before producing more.
 *
 * Heartbeats and dead peers. Every heartbeat_ms the connection sends a ping unless the previous
 * heartbeat saw nothing at all from the peer, in which case the peer is declared dead and the
 * connection is closed without a handshake (the reported code is 1006).
 *
 * Closing. spool_ws_close() queues a close frame and stops accepting sends; the TCP connection
 * is closed once the peer answers, or after close_timeout_ms. Whatever the path (handshake,
 * protocol error, limit, dead peer, read error), on_close fires exactly once, after the stream
 * handle is closed, with the close code that ended the connection; the owner may free the struct
 * from on_close.
 */
#ifndef SPOOL_GATEWAY_WEBSOCKET_H
#define SPOOL_GATEWAY_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

/* ---- pieces usable on their own ---- */

/* True when s[0..n) is well-formed UTF-8 (RFC 3629). */
bool spool_utf8_valid(const uint8_t *s, size_t n);

#define SPOOL_WS_ACCEPT_LEN 28
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)). `key` must be the
 * base64 of 16 bytes (24 characters); returns 0, or SPOOL_EINVAL for any other key. `out` gets a
 * NUL-terminated string. */
int spool_ws_accept_key(const char *key, size_t len, char out[SPOOL_WS_ACCEPT_LEN + 1]);
/* The complete "HTTP/1.1 101 Switching Protocols" response for `key` into buf (NUL-terminated);
 * returns its length, or -1 when the key is invalid or buf too small. */
int spool_ws_handshake_response(const char *key, size_t len, char *buf, size_t size);

/* One encoded, unmasked server data frame, shared by reference count. */
struct spool_wsframe {
    unsigned refs;
    size_t len;       /* header + payload */
    size_t header;    /* header bytes: payload starts at bytes + header */
    uint8_t bytes[];
};
/* A text (opcode 1) or binary (opcode 2) frame holding a copy of payload; refs = 1. NULL on OOM. */
struct spool_wsframe *spool_wsframe_new(uint8_t opcode, const void *payload, size_t len);
void spool_wsframe_ref(struct spool_wsframe *f);
void spool_wsframe_unref(struct spool_wsframe *f);
/* Header for an unmasked final frame of `len` payload bytes into out[10]; returns its size. */
size_t spool_ws_frame_header(uint8_t opcode, uint64_t len, uint8_t out[10]);

/* ---- a connection ---- */

struct spool_ws;

struct spool_ws_config {
    uint64_t max_frame_bytes;   /* largest frame payload accepted */
    uint64_t max_message_bytes; /* largest reassembled message accepted */
    uint64_t send_buffer_bytes; /* bytes in flight to the peer before sends are refused */
    uint64_t heartbeat_ms;      /* ping cadence and dead-peer detection; 0 = off */
    uint64_t close_timeout_ms;  /* wait for the peer's close frame; 0 = 5000 */
    bool wslay_only;            /* every frame through wslay (tests: the direct path's reference) */
};

struct spool_ws_events {
    /* A complete message: opcode 1 (text, already UTF-8 checked) or 2 (binary). */
    void (*on_message)(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len);
    /* The bytes in flight fell to at most half of send_buffer_bytes (optional). */
    void (*on_drain)(struct spool_ws *ws);
    /* Exactly once, after the handle is closed. `code` is the close code sent or received
     * (1006 when the connection ended without a close handshake). */
    void (*on_close)(struct spool_ws *ws, uint16_t code);
};

struct spool_ws {
    void *data; /* for the owner */
    /* private */
    uv_stream_t *stream;
    void *wslay; /* wslay_event_context_ptr */
    struct spool_ws_config cfg;
    const struct spool_ws_events *ev;
    uv_timer_t timer; /* heartbeat, then the close timeout */
    uv_idle_t flush; /* next loop turn: write what was queued, vectored (an idle handle, so
                      * the loop does not block in poll with writes queued) */
    void *pending;    /* struct ws_piece[]: output queued in this iteration */
    size_t n_pending, cap_pending;
    const uint8_t *in;
    size_t in_len;
    struct {                /* where wslay is in the peer's frames (only wslay-read bytes count) */
        uint8_t hdr[14];    /* a frame header being read */
        uint8_t hdr_len;
        bool frag;          /* inside a fragmented message */
        uint64_t left;      /* payload bytes of the current frame still to come */
    } rd;
    uint64_t buffered;
    bool want_drain;
    bool heard; /* any bytes from the peer since the last heartbeat */
    bool closing;
    bool dead;
    bool in_recv;
    bool peer_closed;
    uint16_t code;
    unsigned pending_closes; /* handles still closing */
};

/* Takes over `stream` (its data pointer is overwritten; reading is (re)started) after the 101
 * response was written or queued on it. `head`/`head_len` are bytes already read past the
 * request. Returns 0, or an error after which the caller still owns the stream. */
int spool_ws_start(struct spool_ws *ws, uv_stream_t *stream, const uint8_t *head, size_t head_len,
                   const struct spool_ws_config *cfg, const struct spool_ws_events *ev,
                   struct spool_err *err);
/* Parses bytes that were read elsewhere, e.g. those the HTTP server read past the upgrade
 * request, when the owner wants to send something first (instead of passing them as `head`). */
void spool_ws_feed(struct spool_ws *ws, const uint8_t *data, size_t len);
/* Send a text message (copied). SPOOL_ECLOSED once closing, SPOOL_ELIMIT when over the send
 * buffer (the connection is then being closed with 1008). */
int spool_ws_send_text(struct spool_ws *ws, const char *s, size_t len);
/* Send a shared frame; takes its own reference. Same results as spool_ws_send_text. */
int spool_ws_send_frame(struct spool_ws *ws, struct spool_wsframe *f);
/* Bytes handed to the kernel-facing write queue and not yet written. */
uint64_t spool_ws_buffered(const struct spool_ws *ws);
bool spool_ws_is_closing(const struct spool_ws *ws);
/* True when the peer started the close handshake (it said goodbye, whatever the code). */
bool spool_ws_peer_closed(const struct spool_ws *ws);
/* Starts the close handshake with `code` and a short UTF-8 reason (may be NULL). */
void spool_ws_close(struct spool_ws *ws, uint16_t code, const char *reason);
/* Drops the connection now without a handshake (on_close reports 1006). */
void spool_ws_abort(struct spool_ws *ws);

#endif
