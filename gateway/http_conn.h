/*
 * Internals of the HTTP/1.1 server (public contract: gateway/http_server.h), shared by its files:
 *   http_server.c    the server: listen, accept, graceful close
 *   http_conn.c      a connection's life: reading, timers, request turnover, closing, freeing
 *   http_request.c   parsing a request (http-parser callbacks), limits, refusals, dispatch
 *   http_response.c  writing: responses, streams, upgrade hand-over, request accessors
 *
 * Structure
 * ---------
 * The server owns a listener, a drain timer and a list of connections. A connection owns a
 * malloc'd uv_tcp_t (malloc'd so an upgrade can hand it over), one timer (whichever timeout
 * applies to its phase), an http_parser, the request being assembled and
 * the bytes received but not yet parsed.
 *
 * Phases of a connection:
 *
 *   IDLE       waiting for the first byte of the next request      timer: idle_timeout_ms
 *   RECEIVING  parsing head and body                               timer: request_timeout_ms
 *   HANDLING   the handler owns `req` (plain, streaming or upgrade) timer: off
 *   FLUSHING   completion call made, waiting for writes to finish  timer: request_timeout_ms
 *   DONE       no more requests: lingering after a refusal (FIN sent, input discarded until
 *              the peer closes or LINGER_MS pass), or waiting for handles to close
 *
 * The timer is lazy: a phase change only records the new deadline (loop ms) when the armed
 * timer fires no later than it; the timer then re-arms itself for what is left. A request on a
 * busy keep-alive connection moves through four phases without touching the loop's timer heap
 * (stopping and starting it was 2% of a node's CPU under HTTP publish load); a deadline earlier
 * than the armed one re-arms at once, so every timeout still fires on time.
 *
 * Writing a complete response first tries uv_try_write: on a socket with room (the usual case)
 * the whole response leaves inside the completion call, with no write request, no write callback
 * and no epoll_ctl to drop POLLOUT afterwards (libuv's drain re-registers the socket after every
 * uv_write: a syscall per response). FLUSHING then ends in the server's idle handle on the next
 * loop turn (finish queue), as it would have in the write callback. What does not fit goes
 * through uv_write as before.
 *
 * A connection over max_connections is accepted but not counted; each request on it gets 503
 * and it closes (bounded by the request timeout like any other).
 *
 * FLUSHING -> IDLE when the response is written and the connection is kept; any pipelined bytes
 * are parsed then. Parsing pauses the parser in on_message_complete, so http_parser_execute
 * returns right after each request and the rest stays in `pending` until the next IDLE.
 *
 * Reading
 * -------
 * All connections read into one server-owned buffer (libuv calls alloc then read back to back on
 * the loop thread, and read_cb consumes the bytes before returning): parsed bytes are copied
 * into the request (head arena, body buffer); only unparsed bytes are kept per connection, in
 * `pending`, bounded by max_header_bytes + PENDING_MIN; beyond that reading stops until the
 * request completes. Reading otherwise continues while a request is handled, so the peer closing is noticed (and
 * reported to the handler through its close callback) even during long-polls and streams.
 *
 * Freeing
 * -------
 * A connection is freed when its handles are closed, no handler owns its request and no write is
 * in flight. That is checked only from close callbacks and completion calls, never while a
 * parser or handler call is on the stack for that connection (handles close asynchronously).
 * The server is freed after close() once its listener, drain timer and every connection are gone.
 */
#ifndef SPOOL_GATEWAY_HTTP_CONN_H
#define SPOOL_GATEWAY_HTTP_CONN_H

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/http_server.h"

#define READ_BUF_BYTES 65536
#define PENDING_MIN 65536 /* pipelined bytes buffered per connection beyond max_header_bytes */
#define WRITE_BUFS 4
#define WRITE_INLINE_HEAD 320 /* a response head this long travels inside its write request */
#define LINGER_MS 2000 /* lingering close after a refused request */

enum phase { PHASE_IDLE, PHASE_RECEIVING, PHASE_HANDLING, PHASE_FLUSHING, PHASE_DONE };
enum piece { PIECE_NONE, PIECE_URL, PIECE_FIELD, PIECE_VALUE };

struct header_offsets {
    size_t name, value;
};

struct spool_http_conn {
    struct spool_http_server *server;
    struct spool_http_conn *prev, *next;
    uint64_t id;
    uv_tcp_t *tcp; /* NULL once handed over by an upgrade */
    uv_timer_t timer;
    struct spool_http_conn *finish_next; /* in the server's finish queue */
    bool finish_queued; /* a response written at once waits there for its turnover */
    uint64_t deadline; /* loop ms the phase's timeout is due; 0 = none */
    uint64_t armed;    /* loop ms the timer is armed for; 0 = not armed */
    int open_handles;
    bool closing;    /* uv_close() called (or the socket handed over) */
    bool counted;    /* counts towards server->n_conns */
    bool rejected;   /* over max_connections: every request gets 503 */
    bool reading;
    bool peer_eof;   /* the peer half-closed: answer the request in flight, then close */
    bool peer_gone;  /* writes are dropped */
    enum phase phase;
    http_parser parser;
    char remote[64];
    uint64_t seq;

    /* unparsed input */
    char *pending;
    size_t pending_len, pending_cap;

    /* the request being assembled: NUL-separated pieces in `head` */
    char *head;
    size_t head_len, head_cap;
    enum piece piece;
    struct header_offsets *hdr_offs;
    size_t n_hdrs, hdrs_cap;
    struct spool_http_header *headers; /* kept across requests, headers_cap entries */
    size_t headers_cap;
    char *body;
    size_t body_len, body_cap;
    char *params_arena; /* decoded path params, NUL-separated; kept across requests */
    size_t params_len, params_cap;
    char *decoded_path; /* raw path NUL decoded path NUL; kept across requests */
    size_t decoded_cap;
    bool message_complete;
    int error_status, error_code; /* set by a parser callback that refused the request */
    const char *error_msg;
    struct spool_http_req req;

    /* the response */
    int status;
    bool close_after;
    bool chunked;
    bool streaming;
    bool close_notified;
    size_t queued;
    int writes_pending;
    spool_http_close_cb close_cb;
    void *close_arg;
    spool_http_drain_cb drain_cb;
    void *drain_arg;
};

struct spool_http_server {
    uv_loop_t *loop;
    struct spool_http_config cfg;
    uv_tcp_t listener;
    uv_timer_t drain_timer;
    uv_idle_t finish_idle; /* runs the finish queue */
    struct spool_http_conn *finish_head, *finish_tail;
    bool listener_closed, drain_timer_closed, drain_timer_closing, finish_idle_closed;
    bool closing, finished;
    struct spool_http_conn *conns;
    uint64_t n_conns;
    uint64_t next_conn_id;
    int port;
    void (*close_cb)(void *arg);
    void *close_arg;
    http_parser_settings settings;
    char read_buf[READ_BUF_BYTES];
};

struct write_req {
    uv_write_t w;
    struct spool_http_conn *conn;
    size_t bytes;
    unsigned n_bufs;
    uv_buf_t bufs[WRITE_BUFS];
    char *owned[WRITE_BUFS];
    char inline_head[WRITE_INLINE_HEAD]; /* a copy of bufs[0] (chunk or response head) */
};


static inline int buf_reserve(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *q = realloc(*p, n);
    if (q == NULL) return -1;
    *p = q, *cap = n;
    return 0;
}

static inline int buf_append(char **p, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (buf_reserve(p, cap, *len + n + 1) != 0) return -1;
    memcpy(*p + *len, data, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

/* http_conn.c */
void spool_http_conn_timer_set(struct spool_http_conn *c, uint64_t ms);
void spool_http_conn_notify_close(struct spool_http_conn *c, int reason);
void spool_http_conn_on_handle_close(uv_handle_t *h);
void spool_http_conn_uncount(struct spool_http_conn *c);
void spool_http_conn_close(struct spool_http_conn *c);
void spool_http_request_reset(struct spool_http_conn *c);
void spool_http_conn_maybe_free(struct spool_http_conn *c);
void spool_http_conn_maybe_finish(struct spool_http_conn *c);
void spool_http_conn_read_start(struct spool_http_conn *c);

/* A response went to the kernel in full inside the completion call: the connection turns over
 * (conn_finish_request) from the server's idle handle in the next loop turn, never inside the
 * handler's call. */
void spool_http_conn_finish_later(struct spool_http_conn *c);
void spool_http_server_on_finish_idle(uv_idle_t *h);

/* http_request.c */
void spool_http_parser_settings(http_parser_settings *s);
void spool_http_conn_parse(struct spool_http_conn *c, const char *data, size_t len);
void spool_http_conn_parse_pending(struct spool_http_conn *c);
/* Answers the request being received with an error, then closes (lingering). */
void spool_http_conn_refuse(struct spool_http_conn *c, int status, int code, const char *msg);

/* http_response.c */
/* Writes `n` buffers in one uv_write; owned[i] (may be NULL) is freed once written. With
 * `inline_head`, bufs[0] (at most WRITE_INLINE_HEAD bytes, e.g. on the caller's stack) is copied
 * into the write request. Returns 0 or SPOOL_ECLOSED (the owned buffers are then freed). */
int spool_http_conn_write(struct spool_http_conn *c, const uv_buf_t *bufs, char **owned, unsigned n,
                          bool inline_head);

/* http_server.c */
void spool_http_server_maybe_finish(struct spool_http_server *s);

#endif
