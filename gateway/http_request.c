/*
 * Parsing requests with http-parser: the callbacks assemble the head (URL and headers as
 * NUL-separated pieces in one arena, limited by max_header_bytes) and the body (limited by
 * max_body_bytes, checked up front from Content-Length and again as chunks arrive), answer
 * Expect: 100-continue, and pause the parser at the end of each message so one request is
 * handled at a time. Refusals (400/408/413/431) are answered here; complete requests are built
 * into struct spool_http_req and dispatched to the handler.
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
    spool_http_conn_timer_set(c, c->server->cfg.request_timeout_ms);
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
        spool_http_conn_write(c, &b, &owned, 1, false);
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
    if (c->n_hdrs > c->headers_cap) {
        size_t cap = c->n_hdrs < 16 ? 16 : c->n_hdrs;
        struct spool_http_header *h = realloc(c->headers, cap * sizeof *h);
        if (h == NULL) return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        c->headers = h, c->headers_cap = cap;
    }
    if (c->n_hdrs > 0) {
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
    if (buf_reserve(&c->decoded_path, &c->decoded_cap, tlen + 2 + plen + 1) != 0)
        return refuse(c, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
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
    spool_http_conn_timer_set(c, 0);
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

void spool_http_conn_refuse(struct spool_http_conn *c, int status, int code, const char *msg)
{
    refuse(c, status, code, msg);
    conn_refuse(c);
}

static void conn_dispatch(struct spool_http_conn *c)
{

    spool_http_conn_timer_set(c, 0);
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
void spool_http_conn_parse(struct spool_http_conn *c, const char *data, size_t len)
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
            spool_http_conn_close(c);
            return;
        }
        memcpy(c->pending, data + n, rest);
        c->pending_len = rest;
    }
    if (c->message_complete) conn_dispatch(c);
}

void spool_http_conn_parse_pending(struct spool_http_conn *c)
{
    if (c->pending_len > 0 && c->phase == PHASE_IDLE) spool_http_conn_parse(c, c->pending, c->pending_len);
}


void spool_http_parser_settings(http_parser_settings *s)
{
    http_parser_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}
