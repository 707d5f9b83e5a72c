/*
 * Writing: every write is one vectored uv_write whose buffers the write request owns until its
 * callback; the completion calls (respond, stream end, upgrade) move the connection to its next
 * phase; plus the request accessors handlers use while they own a request.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "gateway/http_conn.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"

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
        spool_http_conn_close(c);
    }
    if (c->queued == 0 && c->phase == PHASE_HANDLING && c->drain_cb != NULL && !c->peer_gone)
        c->drain_cb(c->drain_arg, &c->req);
    spool_http_conn_maybe_finish(c);
    spool_http_conn_maybe_free(c);
}

/* Writes `n` buffers in one uv_write (see http_conn.h). */
int spool_http_conn_write(struct spool_http_conn *c, const uv_buf_t *bufs, char **owned, unsigned n,
                          bool inline_head)
{
    struct write_req *wr = NULL;
    if (c->peer_gone || c->closing || c->tcp == NULL || (wr = malloc(sizeof *wr)) == NULL) {
        for (unsigned i = 0; i < n; i++) free(owned[i]);
        if (wr == NULL && !c->peer_gone && !c->closing) { /* out of memory: give up on the peer */
            c->peer_gone = true;
            spool_http_conn_close(c);
        }
        return SPOOL_ECLOSED;
    }
    wr->conn = c;
    wr->n_bufs = n;
    wr->bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        wr->bufs[i] = bufs[i];
        wr->owned[i] = owned[i];
        wr->bytes += bufs[i].len;
    }
    if (inline_head) { /* bufs[0] points at the caller's (stack) bytes: keep our copy */
        memcpy(wr->inline_head, bufs[0].base, bufs[0].len);
        wr->bufs[0].base = wr->inline_head;
    }
    int rv = uv_write(&wr->w, (uv_stream_t *)c->tcp, wr->bufs, n, on_write);
    if (rv != 0) {
        for (unsigned i = 0; i < n; i++) free(owned[i]);
        free(wr);
        c->peer_gone = true;
        spool_http_conn_close(c);
        return SPOOL_ECLOSED;
    }
    c->queued += wr->bytes;
    c->writes_pending++;
    return 0;
}

/* ---- responses ---- */

static const char *status_text(int status)
{
    const char *t = http_status_str((enum http_status)status);
    return t != NULL && strcmp(t, "<unknown>") != 0 ? t : "Unknown";
}

/* Appends n bytes to the head being built in *out (the caller's `stack` buffer until it is full,
 * then the heap). */
struct head_buf {
    char *p;
    size_t len, cap;
    char *stack;
};

static int head_put(struct head_buf *h, const char *s, size_t n)
{
    if (h->len + n + 1 > h->cap) {
        size_t cap = h->cap * 2;
        while (cap < h->len + n + 1) cap *= 2;
        char *q = h->p == h->stack ? malloc(cap) : realloc(h->p, cap);
        if (q == NULL) return -1;
        if (h->p == h->stack) memcpy(q, h->stack, h->len);
        h->p = q, h->cap = cap;
    }
    memcpy(h->p + h->len, s, n);
    h->len += n;
    return 0;
}

/* The status line and headers (+ framing header) into `stack` (WRITE_INLINE_HEAD bytes) when
 * they fit, else a malloc'd buffer; NULL when out of memory. */
static char *format_head(struct spool_http_conn *c, int status, const struct spool_http_header *hh,
                         size_t nh, const char *framing, char *stack, size_t *len)
{
    struct head_buf h = {stack, 0, WRITE_INLINE_HEAD, stack};
    char line[32] = "HTTP/1.1 000 ";
    int k = 13;
    if (status >= 100 && status <= 999) {
        line[9] = (char)('0' + status / 100), line[10] = (char)('0' + status / 10 % 10);
        line[11] = (char)('0' + status % 10);
    } else {
        k = snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
    }
    const char *text = status_text(status);
    if (head_put(&h, line, (size_t)k) != 0 || head_put(&h, text, strlen(text)) != 0 ||
        head_put(&h, "\r\nServer: spool\r\n", 17) != 0)
        goto oom;
    size_t n = nh + c->req.n_extra_headers;
    for (size_t i = 0; i < n; i++) {
        const struct spool_http_header *hd = i < nh ? &hh[i] : &c->req.extra_headers[i - nh];
        size_t start = h.len;
        if (head_put(&h, hd->name, strlen(hd->name)) != 0 || head_put(&h, ": ", 2) != 0 ||
            head_put(&h, hd->value, strlen(hd->value)) != 0)
            goto oom;
        for (size_t j = start; j < h.len; j++) /* no header injection through a value */
            if (h.p[j] == '\r' || h.p[j] == '\n') h.p[j] = ' ';
        if (head_put(&h, "\r\n", 2) != 0) goto oom;
    }
    if (head_put(&h, framing, strlen(framing)) != 0) goto oom;
    const char *conn_hdr = c->close_after ? "Connection: close\r\n\r\n"
                           : (c->req.http_minor == 0 && c->req.http_major == 1)
                               ? "Connection: keep-alive\r\n\r\n"
                               : "\r\n";
    if (head_put(&h, conn_hdr, strlen(conn_hdr)) != 0) goto oom;
    *len = h.len;
    return h.p;
oom:
    if (h.p != stack) free(h.p);
    return NULL;
}

/* "Content-Length: N\r\n" into out (at least 48 bytes). */
static void content_length(char *out, size_t len)
{
    char digits[24];
    size_t k = 0;
    do {
        digits[k++] = (char)('0' + len % 10);
        len /= 10;
    } while (len != 0);
    memcpy(out, "Content-Length: ", 16);
    char *w = out + 16;
    while (k > 0) *w++ = digits[--k];
    memcpy(w, "\r\n", 3);
}

static void decide_close(struct spool_http_conn *c)
{
    if (!c->req.keep_alive || c->req.upgrade || c->peer_eof || c->server->closing || c->rejected ||
        c->error_status != 0)
        c->close_after = true;
}

/* A complete response: head (on the caller's stack when `inline_head`, else malloc'd) and body
 * (malloc'd or NULL), both owned from here. As much as the socket takes now goes with
 * uv_try_write; the rest, if any, through spool_http_conn_write (see http_conn.h). */
static void write_response(struct spool_http_conn *c, char *head, size_t head_len, bool inline_head,
                           char *body, size_t len)
{
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)head_len), uv_buf_init(body, (unsigned)len)};
    unsigned nb = len > 0 ? 2 : 1;
    int n = UV_EAGAIN;
    if (!c->peer_gone && !c->closing && c->tcp != NULL && c->writes_pending == 0)
        n = uv_try_write((uv_stream_t *)c->tcp, bufs, nb);
    if (n == (int)(head_len + len)) { /* all of it: turn over in the next loop turn */
        if (!inline_head) free(head);
        free(body);
        spool_http_conn_finish_later(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) { /* the peer is gone */
        if (!inline_head) free(head);
        free(body);
        if (!c->closing) {
            SPOOL_DEBUG("http.write_failed", "conn=%llu err=%s", (unsigned long long)c->id, uv_err_name(n));
            c->peer_gone = true;
            spool_http_conn_close(c);
        }
        return;
    }
    if (done >= head_len) { /* the head went: the rest of the body */
        if (!inline_head) free(head);
        uv_buf_t b = uv_buf_init(body + (done - head_len), (unsigned)(len - (done - head_len)));
        spool_http_conn_write(c, &b, &body, 1, false);
        return;
    }
    bufs[0] = uv_buf_init(head + done, (unsigned)(head_len - done));
    char *owned[2] = {inline_head ? NULL : head, body};
    spool_http_conn_write(c, bufs, owned, nb, inline_head);
}

void spool_http_respond_owned(struct spool_http_req *req, int status,
                              const struct spool_http_header *headers, size_t n_headers, char *body,
                              size_t len)
{
    struct spool_http_conn *c = req->conn;
    c->status = status;
    decide_close(c);
    /* 1xx, 204 and 304 answers have no body and no Content-Length (RFC 9110) */
    bool bodiless = status < 200 || status == 204 || status == 304;
    char framing[48] = "";
    if (bodiless) len = 0;
    else content_length(framing, len);
    size_t head_len = 0;
    char stack[WRITE_INLINE_HEAD];
    char *head = format_head(c, status, headers, n_headers, framing, stack, &head_len);
    if (head == NULL) {
        free(body);
        c->peer_gone = true;
        spool_http_conn_close(c);
    } else {
        if (req->method_id == HTTP_HEAD || len == 0) {
            free(body);
            body = NULL, len = 0;
        }
        write_response(c, head, head_len, head == stack, body, len);
    }
    c->phase = PHASE_FLUSHING;
    if (c->writes_pending > 0) spool_http_conn_timer_set(c, c->server->cfg.request_timeout_ms);
    spool_http_conn_maybe_finish(c);
    spool_http_conn_maybe_free(c);
}

void spool_http_respond(struct spool_http_req *req, int status, const struct spool_http_header *headers,
                        size_t n_headers, const void *body, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL) len = 0;
    else if (len > 0) memcpy(copy, body, len);
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
    char stack[WRITE_INLINE_HEAD];
    char *head = format_head(c, status, headers, n_headers,
                             c->chunked ? "Transfer-Encoding: chunked\r\n" : "", stack, &len);
    if (head == NULL) {
        c->peer_gone = true;
        spool_http_conn_close(c);
        return SPOOL_ECLOSED;
    }
    uv_buf_t b = uv_buf_init(head, (unsigned)len);
    char *owned = head != stack ? head : NULL;
    return spool_http_conn_write(c, &b, &owned, 1, head == stack);
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
        if (bufs[i].len > 0) memcpy(data + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    if (!c->chunked) {
        uv_buf_t b = uv_buf_init(data, (unsigned)total);
        return spool_http_conn_write(c, &b, &data, 1, false);
    }
    char chunk_head[24];
    int k = snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", total);
    uv_buf_t v[3] = {uv_buf_init(chunk_head, (unsigned)k), uv_buf_init(data, (unsigned)total),
                     uv_buf_init("\r\n", 2)};
    char *owned[3] = {NULL, data, NULL};
    return spool_http_conn_write(c, v, owned, 3, true);
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
        spool_http_conn_write(c, &b, &owned, 1, false);
    }
    c->phase = PHASE_FLUSHING;
    if (c->writes_pending > 0) spool_http_conn_timer_set(c, c->server->cfg.request_timeout_ms);
    spool_http_conn_maybe_finish(c);
    spool_http_conn_maybe_free(c);
}

int spool_http_upgrade(struct spool_http_req *req, uv_tcp_t **tcp, char **leftover,
                       size_t *leftover_len, struct spool_err *err)
{
    struct spool_http_conn *c = req->conn;
    *tcp = NULL, *leftover = NULL, *leftover_len = 0;
    if (c->peer_gone || c->closing || c->peer_eof || c->writes_pending > 0) {
        c->close_after = true;
        c->phase = PHASE_FLUSHING;
        spool_http_conn_maybe_finish(c);
        spool_http_conn_maybe_free(c);
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
    spool_http_request_reset(c);
    c->phase = PHASE_DONE;
    c->closing = c->peer_gone = true;
    spool_http_conn_uncount(c);
    c->open_handles--; /* the socket is no longer ours */
    uv_close((uv_handle_t *)&c->timer, spool_http_conn_on_handle_close);
    return 0;
}

/* ---- request accessors ---- */

const char *spool_http_req_header(const struct spool_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

int spool_http_req_add_response_header(struct spool_http_req *req, const char *name,
                                       const char *value)
{
    if (req->n_extra_headers >= SPOOL_HTTP_MAX_EXTRA_HEADERS) return SPOOL_ELIMIT;
    req->extra_headers[req->n_extra_headers++] = (struct spool_http_header){name, value};
    return 0;
}

int spool_http_req_add_param(struct spool_http_req *req, const char *value, size_t len)
{
    struct spool_http_conn *c = req->conn;
    if (req->n_params >= SPOOL_HTTP_MAX_PARAMS) return SPOOL_ELIMIT;
    /* One arena, kept across requests; pointers are rebuilt because realloc may move it. */
    if (buf_reserve(&c->params_arena, &c->params_cap, c->params_len + len + 1) != 0)
        return SPOOL_ENOMEM;
    char *arena = c->params_arena;
    memcpy(arena + c->params_len, value, len);
    arena[c->params_len + len] = '\0';
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

