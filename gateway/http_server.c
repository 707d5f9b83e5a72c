/*
 * HTTP/1.1 server (see gateway/http_server.h for the contract).
 *
 * Structure
 * ---------
 * The server owns a listener, a drain timer and a list of connections. A connection owns a
 * malloc'd uv_tcp_t (malloc'd so an upgrade can hand it over), one timer (idle or request
 * timeout, whichever applies to its phase), an http_parser, the request being assembled and
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
 * FLUSHING -> IDLE when the response is written and the connection is kept; any pipelined bytes
 * are parsed then. Parsing pauses the parser in on_message_complete, so http_parser_execute
 * returns right after each request and the rest stays in `pending` until the next IDLE.
 *
 * Reading
 * -------
 * All connections read into one server-owned buffer (libuv calls alloc then read back to back on
 * the loop thread, and read_cb consumes the bytes before returning): parsed bytes are copied
 * into the request (head arena, body buffer); only unparsed bytes are kept per connection, in
 * `pending`, bounded by PENDING_MAX — beyond that reading stops until the request completes.
 * Reading otherwise continues while a request is handled, so the peer closing is noticed (and
 * reported to the handler through its close callback) even during long-polls and streams.
 *
 * Freeing
 * -------
 * A connection is freed when its handles are closed, no handler owns its request and no write is
 * in flight. That is checked only from close callbacks and completion calls, never while a
 * parser or handler call is on the stack for that connection (handles close asynchronously).
 * The server is freed after close() once its listener, drain timer and every connection are gone.
 */
#include "gateway/http_server.h"

#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"

#define READ_BUF_BYTES 65536
#define PENDING_MIN 65536 /* pipelined bytes buffered per connection beyond max_header_bytes */
#define WRITE_BUFS 4
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
    struct spool_http_header *headers;
    char *body;
    size_t body_len, body_cap;
    char *params_arena; /* decoded path params, NUL-separated */
    size_t params_len;
    char *decoded_path;
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
    bool listener_closed, drain_timer_closed, drain_timer_closing;
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
    char chunk_head[24];
};

static void conn_close(struct spool_http_conn *c);
static void conn_parse_pending(struct spool_http_conn *c);
static void conn_maybe_finish_request(struct spool_http_conn *c);
static void conn_maybe_free(struct spool_http_conn *c);
static void server_maybe_finish(struct spool_http_server *s);
static void on_timer(uv_timer_t *t);

void spool_http_config_defaults(struct spool_http_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_connections = 100000;
    cfg->max_header_bytes = 16 << 10;
    cfg->max_body_bytes = 8 << 20;
    cfg->request_timeout_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    cfg->drain_timeout_ms = 10000;
}

/* ---- small buffers ---- */

static int buf_reserve(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *q = realloc(*p, n);
    if (q == NULL) return -1;
    *p = q, *cap = n;
    return 0;
}

static int buf_append(char **p, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (buf_reserve(p, cap, *len + n + 1) != 0) return -1;
    memcpy(*p + *len, data, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

/* ---- writing ---- */

static void on_write(uv_write_t *w, int status)
{
    struct write_req *wr = (struct write_req *)w;
    struct spool_http_conn *c = wr->conn;
    c->queued -= wr->bytes;
    c->writes_pending--;
    for (unsigned i = 0; i < wr->n_bufs; i++) free(wr->owned[i]);
    free(wr);
    if (status < 0 && !c->closing) {
        SPOOL_DEBUG("http.write_failed", "conn=%llu err=%s", (unsigned long long)c->id, uv_err_name(status));
        c->peer_gone = true;
        conn_close(c);
    }
    if (c->queued == 0 && c->phase == PHASE_HANDLING && c->drain_cb != NULL && !c->peer_gone)
        c->drain_cb(c->drain_arg, &c->req);
    conn_maybe_finish_request(c);
    conn_maybe_free(c);
}

/* Writes `n` buffers in one uv_write. `owned[i]` (may be NULL) is freed once written. Returns 0,
 * or SPOOL_ECLOSED when the peer is gone (the owned buffers are freed at once). */
static int conn_write(struct spool_http_conn *c, const uv_buf_t *bufs, char **owned, unsigned n,
                      const char *chunk_head)
{
    struct write_req *wr = NULL;
    if (c->peer_gone || c->closing || c->tcp == NULL || (wr = calloc(1, sizeof *wr)) == NULL) {
        for (unsigned i = 0; i < n; i++) free(owned[i]);
        if (wr == NULL && !c->peer_gone && !c->closing) { /* out of memory: give up on the peer */
            c->peer_gone = true;
            conn_close(c);
        }
        return SPOOL_ECLOSED;
    }
    wr->conn = c;
    wr->n_bufs = n;
    for (unsigned i = 0; i < n; i++) {
        wr->bufs[i] = bufs[i];
        wr->owned[i] = owned[i];
        wr->bytes += bufs[i].len;
    }
    if (chunk_head != NULL) { /* bufs[0] points at the caller's chunk header: keep our copy */
        memcpy(wr->chunk_head, chunk_head, bufs[0].len);
        wr->bufs[0].base = wr->chunk_head;
    }
    int rv = uv_write(&wr->w, (uv_stream_t *)c->tcp, wr->bufs, n, on_write);
    if (rv != 0) {
        for (unsigned i = 0; i < n; i++) free(owned[i]);
        free(wr);
        c->peer_gone = true;
        conn_close(c);
        return SPOOL_ECLOSED;
    }
    c->queued += wr->bytes;
    c->writes_pending++;
    return 0;
}

/* ---- connection life cycle ---- */

static void timer_set(struct spool_http_conn *c, uint64_t ms)
{
    if (c->closing) return;
    uv_timer_stop(&c->timer);
    if (ms > 0) uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void conn_notify_close(struct spool_http_conn *c, int reason)
{
    if (c->phase != PHASE_HANDLING || c->close_notified || c->close_cb == NULL) return;
    c->close_notified = true;
    c->close_cb(c->close_arg, &c->req, reason);
}

static void on_conn_handle_close(uv_handle_t *h)
{
    struct spool_http_conn *c = h->data;
    if (h != (uv_handle_t *)&c->timer) free(h);
    c->open_handles--;
    conn_maybe_free(c);
}

static void conn_uncount(struct spool_http_conn *c)
{
    if (c->counted) {
        c->counted = false;
        c->server->n_conns--;
    }
}

static void conn_close(struct spool_http_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    c->peer_gone = true;
    conn_uncount(c);
    uv_close((uv_handle_t *)c->tcp, on_conn_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
    conn_notify_close(c, SPOOL_HTTP_CLOSE_PEER);
    if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING) c->phase = PHASE_DONE;
}

static void request_reset(struct spool_http_conn *c)
{
    c->head_len = 0;
    c->piece = PIECE_NONE;
    c->n_hdrs = 0;
    c->body_len = 0;
    if (c->body_cap > 65536) { /* do not keep a large body buffer around an idle connection */
        free(c->body);
        c->body = NULL, c->body_cap = 0;
    }
    free(c->headers);
    c->headers = NULL;
    free(c->params_arena);
    c->params_arena = NULL;
    c->params_len = 0;
    free(c->decoded_path);
    c->decoded_path = NULL;
    c->message_complete = false;
    c->error_status = 0;
    c->status = 0;
    c->chunked = c->streaming = c->close_notified = false;
    c->close_cb = NULL, c->drain_cb = NULL;
    memset(&c->req, 0, sizeof c->req);
}

static void conn_free(struct spool_http_conn *c)
{
    struct spool_http_server *s = c->server;
    if (c->prev != NULL) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next != NULL) c->next->prev = c->prev;
    request_reset(c);
    free(c->head);
    free(c->hdr_offs);
    free(c->body);
    free(c->pending);
    free(c);
    server_maybe_finish(s);
}

static void conn_maybe_free(struct spool_http_conn *c)
{
    if (c->open_handles > 0 || c->writes_pending > 0) return;
    if (c->phase == PHASE_HANDLING || c->phase == PHASE_FLUSHING) return;
    conn_free(c);
}

static void conn_read_start(struct spool_http_conn *c);

static void on_linger_shutdown(uv_shutdown_t *req, int status)
{
    free(req);
}

/* After refusing a request the peer may still be sending (the rest of a too-large body):
 * closing now would reset the connection and could destroy the error response before the
 * client reads it. So: send FIN, discard input until the peer closes or LINGER_MS pass. */
static void conn_linger(struct spool_http_conn *c)
{
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)c->tcp, on_linger_shutdown) != 0) {
        free(req);
        conn_close(c);
        return;
    }
    timer_set(c, LINGER_MS);
    conn_read_start(c);
}

static void conn_finish_request(struct spool_http_conn *c)
{
    struct spool_http_server *s = c->server;
    bool refused = c->error_status != 0 || c->rejected;
    if (s->cfg.on_done != NULL && c->req.method != NULL)
        s->cfg.on_done(s->cfg.on_done_arg, &c->req, c->status,
                       (uv_hrtime() - c->req.start_ns) / 1000);
    request_reset(c);
    if (c->close_after || c->closing || c->peer_eof || s->closing || c->rejected) {
        c->phase = PHASE_DONE;
        if (refused && !c->closing && !c->peer_eof && !s->closing) conn_linger(c);
        else conn_close(c);
        return;
    }
    c->phase = PHASE_IDLE;
    http_parser_pause(&c->parser, 0);
    timer_set(c, s->cfg.idle_timeout_ms);
    conn_read_start(c);
    conn_parse_pending(c);
}

static void conn_maybe_finish_request(struct spool_http_conn *c)
{
    if (c->phase == PHASE_FLUSHING && c->writes_pending == 0) conn_finish_request(c);
}

/* ---- responses ---- */

static const char *status_text(int status)
{
    const char *t = http_status_str((enum http_status)status);
    return t != NULL && strcmp(t, "<unknown>") != 0 ? t : "Unknown";
}

/* Formats the status line and headers (+ framing header) into a malloc'd buffer. */
static char *format_head(struct spool_http_conn *c, int status, const struct spool_http_header *h,
                         size_t n, const char *framing, size_t *len)
{
    char *out = NULL;
    size_t olen = 0, ocap = 0;
    char line[128];
    int k = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nServer: spool\r\n", status, status_text(status));
    if (buf_append(&out, &olen, &ocap, line, (size_t)k) != 0) goto oom;
    for (size_t i = 0; i < n; i++) {
        size_t start = olen;
        if (buf_append(&out, &olen, &ocap, h[i].name, strlen(h[i].name)) != 0 ||
            buf_append(&out, &olen, &ocap, ": ", 2) != 0 ||
            buf_append(&out, &olen, &ocap, h[i].value, strlen(h[i].value)) != 0)
            goto oom;
        for (size_t j = start; j < olen; j++) /* no header injection through a value */
            if (out[j] == '\r' || out[j] == '\n') out[j] = ' ';
        if (buf_append(&out, &olen, &ocap, "\r\n", 2) != 0) goto oom;
    }
    if (buf_append(&out, &olen, &ocap, framing, strlen(framing)) != 0) goto oom;
    const char *conn_hdr = c->close_after ? "Connection: close\r\n\r\n"
                           : (c->req.http_minor == 0 && c->req.http_major == 1)
                               ? "Connection: keep-alive\r\n\r\n"
                               : "\r\n";
    if (buf_append(&out, &olen, &ocap, conn_hdr, strlen(conn_hdr)) != 0) goto oom;
    *len = olen;
    return out;
oom:
    free(out);
    return NULL;
}

static void decide_close(struct spool_http_conn *c)
{
    if (!c->req.keep_alive || c->req.upgrade || c->peer_eof || c->server->closing || c->rejected ||
        c->error_status != 0)
        c->close_after = true;
}

void spool_http_respond_owned(struct spool_http_req *req, int status,
                              const struct spool_http_header *headers, size_t n_headers, char *body,
                              size_t len)
{
    struct spool_http_conn *c = req->conn;
    c->status = status;
    decide_close(c);
    char framing[48];
    snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", len);
    size_t head_len = 0;
    char *head = format_head(c, status, headers, n_headers, framing, &head_len);
    if (head == NULL) {
        free(body);
        c->peer_gone = true;
        conn_close(c);
    } else {
        bool head_only = req->method_id == HTTP_HEAD || len == 0;
        uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)head_len), uv_buf_init(body, (unsigned)len)};
        char *owned[2] = {head, body};
        if (head_only) free(body);
        conn_write(c, bufs, owned, head_only ? 1 : 2, NULL);
    }
    c->phase = PHASE_FLUSHING;
    if (c->writes_pending > 0) timer_set(c, c->server->cfg.request_timeout_ms);
    conn_maybe_finish_request(c);
    conn_maybe_free(c);
}

void spool_http_respond(struct spool_http_req *req, int status, const struct spool_http_header *headers,
                        size_t n_headers, const void *body, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy != NULL) memcpy(copy, body, len);
    else len = 0;
    spool_http_respond_owned(req, status, headers, n_headers, copy, len);
}

void spool_http_respond_error(struct spool_http_req *req, int status, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = 0;
    char *body = spool_json_error(status, code, msg, &len);
    static const struct spool_http_header h[] = {{"Content-Type", "application/json"}};
    spool_http_respond_owned(req, status, h, 1, body, body != NULL ? len : 0);
}

int spool_http_stream_start(struct spool_http_req *req, int status,
                            const struct spool_http_header *headers, size_t n_headers)
{
    struct spool_http_conn *c = req->conn;
    c->status = status;
    c->streaming = true;
    decide_close(c);
    c->chunked = !(req->http_major == 1 && req->http_minor == 0);
    if (!c->chunked) c->close_after = true;
    size_t len = 0;
    char *head = format_head(c, status, headers, n_headers,
                             c->chunked ? "Transfer-Encoding: chunked\r\n" : "", &len);
    if (head == NULL) {
        c->peer_gone = true;
        conn_close(c);
        return SPOOL_ECLOSED;
    }
    uv_buf_t b = uv_buf_init(head, (unsigned)len);
    return conn_write(c, &b, &head, 1, NULL);
}

int spool_http_stream_writev(struct spool_http_req *req, const uv_buf_t *bufs, size_t n)
{
    struct spool_http_conn *c = req->conn;
    if (c->peer_gone || c->closing) return SPOOL_ECLOSED;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += bufs[i].len;
    if (total == 0) return 0; /* an empty chunk would end the stream */
    char *data = malloc(total);
    if (data == NULL) return SPOOL_ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(data + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    if (!c->chunked) {
        uv_buf_t b = uv_buf_init(data, (unsigned)total);
        return conn_write(c, &b, &data, 1, NULL);
    }
    char chunk_head[24];
    int k = snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", total);
    uv_buf_t v[3] = {uv_buf_init(chunk_head, (unsigned)k), uv_buf_init(data, (unsigned)total),
                     uv_buf_init("\r\n", 2)};
    char *owned[3] = {NULL, data, NULL};
    return conn_write(c, v, owned, 3, chunk_head);
}

int spool_http_stream_write(struct spool_http_req *req, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return spool_http_stream_writev(req, &b, 1);
}

void spool_http_stream_end(struct spool_http_req *req)
{
    struct spool_http_conn *c = req->conn;
    if (c->chunked && !c->peer_gone) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        char *owned = NULL;
        conn_write(c, &b, &owned, 1, NULL);
    }
    c->phase = PHASE_FLUSHING;
    if (c->writes_pending > 0) timer_set(c, c->server->cfg.request_timeout_ms);
    conn_maybe_finish_request(c);
    conn_maybe_free(c);
}

int spool_http_upgrade(struct spool_http_req *req, uv_tcp_t **tcp, char **leftover,
                       size_t *leftover_len, struct spool_err *err)
{
    struct spool_http_conn *c = req->conn;
    *tcp = NULL, *leftover = NULL, *leftover_len = 0;
    if (c->peer_gone || c->closing || c->peer_eof || c->writes_pending > 0) {
        c->close_after = true;
        c->phase = PHASE_FLUSHING;
        conn_maybe_finish_request(c);
        conn_maybe_free(c);
        return spool_err_set(err, SPOOL_ECLOSED, "the connection is gone");
    }
    struct spool_http_server *s = c->server;
    uv_read_stop((uv_stream_t *)c->tcp);
    c->reading = false;
    c->tcp->data = NULL;
    *tcp = c->tcp;
    c->tcp = NULL;
    if (c->pending_len > 0) {
        *leftover = c->pending, *leftover_len = c->pending_len;
        c->pending = NULL, c->pending_len = c->pending_cap = 0;
    }
    c->status = 101;
    if (s->cfg.on_done != NULL)
        s->cfg.on_done(s->cfg.on_done_arg, &c->req, 0, (uv_hrtime() - c->req.start_ns) / 1000);
    request_reset(c);
    c->phase = PHASE_DONE;
    c->closing = c->peer_gone = true;
    conn_uncount(c);
    c->open_handles--; /* the socket is no longer ours */
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
    return 0;
}

/* ---- request accessors ---- */

const char *spool_http_req_header(const struct spool_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

int spool_http_req_add_param(struct spool_http_req *req, const char *value, size_t len)
{
    struct spool_http_conn *c = req->conn;
    if (req->n_params >= SPOOL_HTTP_MAX_PARAMS) return SPOOL_ELIMIT;
    /* One arena; pointers are rebuilt because realloc may move it. */
    char *arena = realloc(c->params_arena, c->params_len + len + 1);
    if (arena == NULL) return SPOOL_ENOMEM;
    memcpy(arena + c->params_len, value, len);
    arena[c->params_len + len] = '\0';
    c->params_arena = arena;
    c->params_len += len + 1;
    req->n_params++;
    size_t off = 0;
    for (size_t i = 0; i < req->n_params; i++) {
        req->params[i] = arena + off;
        off += strlen(arena + off) + 1;
    }
    return 0;
}

void spool_http_req_on_close(struct spool_http_req *req, spool_http_close_cb cb, void *arg)
{
    req->conn->close_cb = cb, req->conn->close_arg = arg;
}

void spool_http_req_on_drain(struct spool_http_req *req, spool_http_drain_cb cb, void *arg)
{
    req->conn->drain_cb = cb, req->conn->drain_arg = arg;
}

size_t spool_http_req_queued(const struct spool_http_req *req) { return req->conn->queued; }

bool spool_http_req_closing(const struct spool_http_req *req)
{
    return req->conn->peer_gone || req->conn->peer_eof || req->conn->server->closing;
}

/* ---- parsing ---- */

static int refuse(struct spool_http_conn *c, int status, int code, const char *msg)
{
    c->error_status = status, c->error_code = code, c->error_msg = msg;
    return -1; /* not 1 or 2: on_headers_complete gives those a meaning (skip body, upgrade) */
}

static int head_add(struct spool_http_conn *c, enum piece piece, const char *at, size_t len)
{
    if (c->piece != piece) {
        if (c->piece != PIECE_NONE && buf_reserve(&c->head, &c->head_cap, c->head_len + 2) != 0)
            return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        if (c->piece != PIECE_NONE) c->head[c->head_len++] = '\0';
        if (piece == PIECE_FIELD) {
            if (c->n_hdrs == c->hdrs_cap) {
                size_t n = c->hdrs_cap ? c->hdrs_cap * 2 : 16;
                struct header_offsets *h = realloc(c->hdr_offs, n * sizeof *h);
                if (h == NULL) return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
                c->hdr_offs = h, c->hdrs_cap = n;
            }
            c->hdr_offs[c->n_hdrs].name = c->head_len;
            c->hdr_offs[c->n_hdrs].value = SIZE_MAX;
            c->n_hdrs++;
        } else if (piece == PIECE_VALUE && c->n_hdrs > 0) {
            c->hdr_offs[c->n_hdrs - 1].value = c->head_len;
        }
        c->piece = piece;
    }
    /* +4 per piece approximates the ": " and CRLF the wire form spends */
    if (c->head_len + len + 4 * c->n_hdrs > c->server->cfg.max_header_bytes)
        return refuse(c, 431, SPOOL_HTTP_EHEADERS, "request head too large");
    if (buf_append(&c->head, &c->head_len, &c->head_cap, at, len) != 0)
        return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct spool_http_conn *c = p->data;
    c->phase = PHASE_RECEIVING;
    c->req.start_ns = uv_hrtime();
    timer_set(c, c->server->cfg.request_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    return head_add(p->data, PIECE_URL, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    return head_add(p->data, PIECE_FIELD, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    return head_add(p->data, PIECE_VALUE, at, len);
}

static const char *head_header(struct spool_http_conn *c, const char *name)
{
    for (size_t i = 0; i < c->n_hdrs; i++)
        if (strcasecmp(c->head + c->hdr_offs[i].name, name) == 0)
            return c->hdr_offs[i].value == SIZE_MAX ? "" : c->head + c->hdr_offs[i].value;
    return NULL;
}

static int on_headers_complete(http_parser *p)
{
    struct spool_http_conn *c = p->data;
    if (c->piece == PIECE_NONE && head_add(c, PIECE_URL, "", 0) != 0) return -1;
    if (buf_reserve(&c->head, &c->head_cap, c->head_len + 2) != 0)
        return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
    c->head[c->head_len++] = '\0';
    c->piece = PIECE_NONE;
    uint64_t max = c->server->cfg.max_body_bytes;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_length && p->content_length > max)
        return refuse(c, 413, SPOOL_HTTP_ETOO_LARGE, "request body too large");
    const char *expect = head_header(c, "Expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 &&
        p->http_minor >= 1 && (p->flags & (F_CHUNKED | F_CONTENTLENGTH)) != 0) {
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
        char *owned = NULL;
        conn_write(c, &b, &owned, 1, NULL);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct spool_http_conn *c = p->data;
    if (c->body_len + len > c->server->cfg.max_body_bytes)
        return refuse(c, 413, SPOOL_HTTP_ETOO_LARGE, "request body too large");
    if (buf_append(&c->body, &c->body_len, &c->body_cap, at, len) != 0)
        return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct spool_http_conn *c = p->data;
    c->message_complete = true;
    http_parser_pause(p, 1);
    return 0;
}

/* Fills req from the assembled pieces. Returns 0, or fills the error fields. */
static int request_build(struct spool_http_conn *c)
{
    struct spool_http_req *r = &c->req;
    struct spool_http_server *s = c->server;
    r->server = s;
    r->conn = c;
    r->conn_id = c->id;
    r->seq = ++c->seq;
    r->method_id = c->parser.method;
    r->method = http_method_str((enum http_method)c->parser.method);
    r->http_major = c->parser.http_major;
    r->http_minor = c->parser.http_minor;
    r->keep_alive = http_should_keep_alive(&c->parser) != 0;
    r->upgrade = c->parser.upgrade != 0;
    r->remote = c->remote;
    r->body = c->body != NULL ? c->body : "";
    r->body_len = c->body_len;
    r->target = c->head != NULL ? c->head : "";
    if (c->n_hdrs > 0) {
        c->headers = calloc(c->n_hdrs, sizeof *c->headers);
        if (c->headers == NULL) return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        for (size_t i = 0; i < c->n_hdrs; i++) {
            c->headers[i].name = c->head + c->hdr_offs[i].name;
            c->headers[i].value = c->hdr_offs[i].value == SIZE_MAX ? "" : c->head + c->hdr_offs[i].value;
        }
    }
    r->headers = c->headers;
    r->header_count = c->n_hdrs;
    /* origin-form only: "/path?query" */
    const char *t = r->target;
    size_t tlen = strlen(t);
    const char *q = memchr(t, '?', tlen);
    size_t plen = q != NULL ? (size_t)(q - t) : tlen;
    c->decoded_path = malloc(tlen + 2 + plen + 1);
    if (c->decoded_path == NULL) return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
    /* layout: raw path NUL decoded path NUL */
    char *raw = c->decoded_path;
    memcpy(raw, t, plen);
    raw[plen] = '\0';
    r->path = raw;
    r->query = q != NULL ? q + 1 : "";
    char *dec = raw + plen + 1;
    if (plen == 0 || t[0] != '/') {
        r->decoded_path = r->path;
        return refuse(c, 400, SPOOL_HTTP_EBAD_REQUEST, "request target must be an absolute path");
    }
    if (spool_http_pct_decode(raw, plen, false, dec, plen + 1) < 0) {
        r->decoded_path = r->path;
        return refuse(c, 400, SPOOL_HTTP_EBAD_PATH, "path is not validly percent-encoded");
    }
    r->decoded_path = dec;
    return 0;
}

/* Answers a request the server itself refuses, then closes. */
static void conn_refuse(struct spool_http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)c->tcp);
        c->reading = false;
    }
    timer_set(c, 0);
    c->close_after = true;
    if (c->req.method == NULL) { /* refused before the request was built */
        c->req.server = c->server, c->req.conn = c, c->req.conn_id = c->id;
        c->req.method = c->head_len > 0 ? http_method_str((enum http_method)c->parser.method) : "-";
        c->req.path = c->req.decoded_path = c->req.target = c->req.query = "";
        c->req.remote = c->remote;
        c->req.http_major = 1, c->req.http_minor = 1;
        if (c->req.start_ns == 0) c->req.start_ns = uv_hrtime();
    }
    c->phase = PHASE_HANDLING;
    SPOOL_DEBUG("http.refused", "conn=%llu status=%d reason=\"%s\"", (unsigned long long)c->id,
                c->error_status, c->error_msg);
    spool_http_respond_error(&c->req, c->error_status, c->error_code, "%s", c->error_msg);
}

static void conn_dispatch(struct spool_http_conn *c)
{

    timer_set(c, 0);
    if (c->error_status != 0 || request_build(c) != 0) {
        conn_refuse(c);
        return;
    }
    c->phase = PHASE_HANDLING;
    if (c->rejected) {
        spool_http_respond_error(&c->req, 503, SPOOL_HTTP_EUNAVAILABLE, "too many connections");
        return;
    }
    if (c->server->closing) {
        spool_http_respond_error(&c->req, 503, SPOOL_HTTP_EUNAVAILABLE, "server is shutting down");
        return;
    }
    c->server->cfg.handler(c->server->cfg.handler_arg, &c->req);
}

/* Parses data[0..len). Unparsed bytes after a complete request end up in `pending` (data may
 * itself be the pending buffer). */
static void conn_parse(struct spool_http_conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &c->server->settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_OK && n == len && !c->message_complete) {
        if (data == c->pending) c->pending_len = 0;
        return;
    }
    if (e != HPE_OK && e != HPE_PAUSED) {
        if (c->error_status == 0) {
            if (e == HPE_HEADER_OVERFLOW) refuse(c, 431, SPOOL_HTTP_EHEADERS, "request head too large");
            else refuse(c, 400, SPOOL_HTTP_EBAD_REQUEST, http_errno_description(e));
        }
        if (data == c->pending) c->pending_len = 0;
        conn_refuse(c);
        return;
    }
    /* a complete request (paused, or an upgrade which stops the parser) */
    size_t rest = len - n;
    if (data == c->pending) {
        memmove(c->pending, c->pending + n, rest);
        c->pending_len = rest;
    } else if (rest > 0) {
        if (buf_reserve(&c->pending, &c->pending_cap, rest + 1) != 0) {
            c->peer_gone = true;
            conn_close(c);
            return;
        }
        memcpy(c->pending, data + n, rest);
        c->pending_len = rest;
    }
    if (c->message_complete) conn_dispatch(c);
}

static void conn_parse_pending(struct spool_http_conn *c)
{
    if (c->pending_len > 0 && c->phase == PHASE_IDLE) conn_parse(c, c->pending, c->pending_len);
}

static size_t pending_max(const struct spool_http_conn *c)
{
    return c->server->cfg.max_header_bytes + PENDING_MIN;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct spool_http_conn *c = h->data;
    buf->base = c->server->read_buf;
    buf->len = sizeof c->server->read_buf;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct spool_http_conn *c = stream->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (c->phase == PHASE_HANDLING || c->phase == PHASE_FLUSHING) {
            uv_read_stop(stream);
            c->reading = false;
            if (nread == UV_EOF) { /* half-close: answer, then close */
                c->peer_eof = true;
                conn_notify_close(c, SPOOL_HTTP_CLOSE_PEER);
                return;
            }
        }
        conn_close(c);
        return;
    }
    if (c->phase == PHASE_DONE) return; /* lingering: discard */
    if (c->phase == PHASE_HANDLING || c->phase == PHASE_FLUSHING || c->pending_len > 0) {
        if (buf_reserve(&c->pending, &c->pending_cap, c->pending_len + (size_t)nread + 1) != 0) {
            conn_close(c);
            return;
        }
        memcpy(c->pending + c->pending_len, buf->base, (size_t)nread);
        c->pending_len += (size_t)nread;
        if (c->pending_len >= pending_max(c)) {
            uv_read_stop(stream);
            c->reading = false;
        }
        if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING) conn_parse_pending(c);
        return;
    }
    conn_parse(c, buf->base, (size_t)nread);
}

static void conn_read_start(struct spool_http_conn *c)
{
    if (c->reading || c->closing || c->tcp == NULL) return;
    if (uv_read_start((uv_stream_t *)c->tcp, on_alloc, on_read) == 0) c->reading = true;
    else conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    struct spool_http_conn *c = t->data;
    if (c->phase == PHASE_IDLE) {
        SPOOL_DEBUG("http.idle_timeout", "conn=%llu", (unsigned long long)c->id);
        conn_close(c);
    } else if (c->phase == PHASE_RECEIVING) {
        refuse(c, 408, SPOOL_HTTP_ETIMEOUT, "request not received in time");
        conn_refuse(c);
    } else if (c->phase == PHASE_FLUSHING) {
        SPOOL_DEBUG("http.write_timeout", "conn=%llu queued=%zu", (unsigned long long)c->id, c->queued);
        conn_close(c);
    } else if (c->phase == PHASE_DONE) { /* lingering close: the peer did not close in time */
        conn_close(c);
    }
}

/* ---- accepting ---- */

static void format_remote(uv_tcp_t *tcp, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    snprintf(out, size, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(out, size, "[%s]:%d", ip, port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(out, size, "%s:%d", ip, port);
    }
}

static void on_rejected_close(uv_handle_t *h) { free(h); }

static void on_connection(uv_stream_t *listener, int status)
{
    struct spool_http_server *s = listener->data;
    if (status < 0 || s->closing) return;
    struct spool_http_conn *c = calloc(1, sizeof *c);
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    if (c == NULL || tcp == NULL || uv_tcp_init(s->loop, tcp) != 0) {
        free(c), free(tcp);
        return;
    }
    tcp->data = c;
    if (uv_accept(listener, (uv_stream_t *)tcp) != 0) {
        free(c);
        tcp->data = NULL;
        uv_close((uv_handle_t *)tcp, on_rejected_close);
        return;
    }
    c->server = s;
    c->tcp = tcp;
    c->id = ++s->next_conn_id;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns != NULL) s->conns->prev = c;
    s->conns = c;
    uv_tcp_nodelay(tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    format_remote(tcp, c->remote, sizeof c->remote);
    if (s->cfg.max_connections > 0 && s->n_conns >= s->cfg.max_connections) {
        c->rejected = true;
        SPOOL_WARN("http.too_many_connections", "remote=%s max=%llu", c->remote,
                   (unsigned long long)s->cfg.max_connections);
    } else {
        c->counted = true;
        s->n_conns++;
    }
    c->phase = PHASE_IDLE;
    /* the first request must arrive within the request timeout, not the idle one */
    timer_set(c, s->cfg.request_timeout_ms ? s->cfg.request_timeout_ms : s->cfg.idle_timeout_ms);
    conn_read_start(c);
}

/* ---- server ---- */

int spool_http_server_init(struct spool_http_server **out, uv_loop_t *loop,
                           const struct spool_http_config *cfg, struct spool_err *err)
{
    if (cfg->handler == NULL) return spool_err_set(err, SPOOL_EINVAL, "http server: no handler");
    struct spool_http_server *s = calloc(1, sizeof *s);
    if (s == NULL) return spool_err_set(err, SPOOL_ENOMEM, "http server: out of memory");
    s->loop = loop;
    s->cfg = *cfg;
    http_parser_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    /* http-parser's own (process-wide) head limit must not be the tighter one */
    if (cfg->max_header_bytes + 1024 > HTTP_MAX_HEADER_SIZE)
        http_parser_set_max_header_size((uint32_t)(cfg->max_header_bytes + 1024));
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s;
    *out = s;
    return 0;
}

static int parse_port(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > 65535) return -1;
    }
    *out = v;
    return 0;
}

int spool_http_server_listen(struct spool_http_server *s, const char *address, struct spool_err *err)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof host)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s' is not host:port", address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h[hl - 1] = '\0', h++;
    if (h[0] == '\0') h = "0.0.0.0"; /* ":8080" */
    else if (strcmp(h, "localhost") == 0) h = "127.0.0.1";
    uint64_t port;
    if (parse_port(colon + 1, &port) != 0)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s': bad port", address);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(h, (int)port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(h, (int)port, (struct sockaddr_in6 *)&ss) != 0)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s': bad host", address);
    int rv = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rv != 0)
        return spool_err_set(err, SPOOL_EIO, "listen on %s: %s", address, uv_strerror(rv));
    int len = sizeof ss;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int spool_http_server_port(const struct spool_http_server *s) { return s->port; }
uint64_t spool_http_server_connections(const struct spool_http_server *s) { return s->n_conns; }
bool spool_http_server_closing(const struct spool_http_server *s) { return s->closing; }

static void on_server_handle_close(uv_handle_t *h)
{
    struct spool_http_server *s = h->data;
    if (h == (uv_handle_t *)&s->listener) s->listener_closed = true;
    else s->drain_timer_closed = true;
    server_maybe_finish(s);
}

static void server_maybe_finish(struct spool_http_server *s)
{
    if (!s->closing || s->conns != NULL || s->finished) return;
    if (!s->drain_timer_closing) {
        s->drain_timer_closing = true;
        uv_close((uv_handle_t *)&s->drain_timer, on_server_handle_close);
    }
    if (!s->listener_closed || !s->drain_timer_closed) return;
    s->finished = true;
    if (s->close_cb != NULL) s->close_cb(s->close_arg);
    free(s);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct spool_http_server *s = t->data;
    SPOOL_WARN("http.drain_timeout", "connections=%llu", (unsigned long long)s->n_conns);
    for (struct spool_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
}

void spool_http_server_close(struct spool_http_server *s, void (*cb)(void *arg), void *arg)
{
    s->closing = true;
    s->close_cb = cb, s->close_arg = arg;
    uv_close((uv_handle_t *)&s->listener, on_server_handle_close);
    /* conn_close() never frees synchronously; a close callback may complete its request, which
     * can free a connection whose handles are already closed: walk with `next` saved. */
    for (struct spool_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING || c->phase == PHASE_DONE) conn_close(c);
        else {
            c->close_after = true;
            conn_notify_close(c, SPOOL_HTTP_CLOSE_SHUTDOWN);
        }
    }
    if (s->conns != NULL && s->cfg.drain_timeout_ms > 0)
        uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg.drain_timeout_ms, 0);
    server_maybe_finish(s);
}
