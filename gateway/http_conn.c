/*
 * One connection's life (see gateway/http_conn.h for the phases): reading into the server's
 * shared buffer and buffering pipelined bytes, the one timer per connection (idle, request,
 * write and linger timeouts by phase), turning over to the next request after a response,
 * lingering close after a refusal, closing, and freeing once nothing refers to it.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "gateway/http_conn.h"

#include <stdatomic.h>
#include "gateway/http_path.h"
#include "gateway/json_body.h"

static void on_timer(uv_timer_t *t);

/* ---- connection life cycle ---- */

/* Lazy (see http_conn.h): the timer is only re-armed for a deadline earlier than the armed one. */
static void timer_arm(struct spool_http_conn *c, uint64_t now, uint64_t at)
{
    uv_timer_start(&c->timer, on_timer, at - now, 0);
    c->armed = at;
}

void spool_http_conn_timer_set(struct spool_http_conn *c, uint64_t ms)
{
    if (c->closing) return;
    if (ms == 0) {
        c->deadline = 0; /* an armed timer fires, finds no deadline and stays off */
        return;
    }
    uint64_t now = uv_now(c->server->loop);
    c->deadline = now + ms;
    if (c->armed == 0 || c->armed > c->deadline) timer_arm(c, now, c->deadline);
}

void spool_http_conn_notify_close(struct spool_http_conn *c, int reason)
{
    if (c->phase != PHASE_HANDLING || c->close_notified || c->close_cb == NULL) return;
    c->close_notified = true;
    c->close_cb(c->close_arg, &c->req, reason);
}

void spool_http_conn_on_handle_close(uv_handle_t *h)
{
    struct spool_http_conn *c = h->data;
    if (h != (uv_handle_t *)&c->timer) free(h);
    c->open_handles--;
    spool_http_conn_maybe_free(c);
}

void spool_http_conn_uncount(struct spool_http_conn *c)
{
    if (c->counted) {
        c->counted = false;
        c->server->n_conns--;
        if (c->server->cfg.shared_connections != NULL)
            atomic_fetch_sub_explicit(c->server->cfg.shared_connections, 1, memory_order_relaxed);
    }
}

void spool_http_conn_close(struct spool_http_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    c->peer_gone = true;
    spool_http_conn_uncount(c);
    uv_close((uv_handle_t *)c->tcp, spool_http_conn_on_handle_close);
    uv_close((uv_handle_t *)&c->timer, spool_http_conn_on_handle_close);
    spool_http_conn_notify_close(c, SPOOL_HTTP_CLOSE_PEER);
    if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING) c->phase = PHASE_DONE;
}

void spool_http_request_reset(struct spool_http_conn *c)
{
    c->head_len = 0;
    c->piece = PIECE_NONE;
    c->n_hdrs = 0;
    c->body_len = 0;
    if (c->body_cap > 65536) { /* do not keep a large body buffer around an idle connection */
        free(c->body);
        c->body = NULL, c->body_cap = 0;
    }
    c->params_len = 0; /* headers, params and decoded path keep their buffers for the next one */
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
    spool_http_request_reset(c);
    free(c->headers);
    free(c->params_arena);
    free(c->decoded_path);
    free(c->head);
    free(c->hdr_offs);
    free(c->body);
    free(c->pending);
    free(c);
    spool_http_server_maybe_finish(s);
}

void spool_http_conn_maybe_free(struct spool_http_conn *c)
{
    if (c->open_handles > 0 || c->writes_pending > 0 || c->finish_queued) return;
    if (c->phase == PHASE_HANDLING || c->phase == PHASE_FLUSHING) return;
    conn_free(c);
}

void spool_http_conn_read_start(struct spool_http_conn *c);

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
        spool_http_conn_close(c);
        return;
    }
    spool_http_conn_timer_set(c, LINGER_MS);
    spool_http_conn_read_start(c);
}

static void conn_finish_request(struct spool_http_conn *c)
{
    struct spool_http_server *s = c->server;
    bool refused = c->error_status != 0 || c->rejected;
    if (s->cfg.on_done != NULL && c->req.method != NULL)
        s->cfg.on_done(s->cfg.on_done_arg, &c->req, c->status,
                       (uv_hrtime() - c->req.start_ns) / 1000);
    spool_http_request_reset(c);
    if (c->close_after || c->closing || c->peer_eof || s->closing || c->rejected) {
        c->phase = PHASE_DONE;
        if (refused && !c->closing && !c->peer_eof && !s->closing) conn_linger(c);
        else spool_http_conn_close(c);
        return;
    }
    c->phase = PHASE_IDLE;
    http_parser_pause(&c->parser, 0);
    spool_http_conn_timer_set(c, s->cfg.idle_timeout_ms);
    spool_http_conn_read_start(c);
    spool_http_conn_parse_pending(c);
}

void spool_http_conn_maybe_finish(struct spool_http_conn *c)
{
    if (c->phase == PHASE_FLUSHING && c->writes_pending == 0 && !c->finish_queued)
        conn_finish_request(c);
}

void spool_http_conn_finish_later(struct spool_http_conn *c)
{
    struct spool_http_server *s = c->server;
    if (c->finish_queued) return;
    c->finish_queued = true;
    c->finish_next = NULL;
    if (s->finish_tail != NULL) s->finish_tail->finish_next = c;
    else s->finish_head = c;
    s->finish_tail = c;
    uv_idle_start(&s->finish_idle, spool_http_server_on_finish_idle);
}

/* The finish queue: connections queued while it runs wait for the next turn. */
void spool_http_server_on_finish_idle(uv_idle_t *h)
{
    struct spool_http_server *s = h->data;
    struct spool_http_conn *c = s->finish_head;
    s->finish_head = s->finish_tail = NULL;
    uv_idle_stop(h);
    while (c != NULL) {
        struct spool_http_conn *next = c->finish_next;
        c->finish_next = NULL;
        c->finish_queued = false;
        spool_http_conn_maybe_finish(c);
        spool_http_conn_maybe_free(c);
        c = next;
    }
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
                spool_http_conn_notify_close(c, SPOOL_HTTP_CLOSE_PEER);
                return;
            }
        }
        spool_http_conn_close(c);
        return;
    }
    if (c->phase == PHASE_DONE) return; /* lingering: discard */
    if (c->phase == PHASE_HANDLING || c->phase == PHASE_FLUSHING || c->pending_len > 0) {
        if (buf_reserve(&c->pending, &c->pending_cap, c->pending_len + (size_t)nread + 1) != 0) {
            spool_http_conn_close(c);
            return;
        }
        memcpy(c->pending + c->pending_len, buf->base, (size_t)nread);
        c->pending_len += (size_t)nread;
        if (c->pending_len >= pending_max(c)) {
            uv_read_stop(stream);
            c->reading = false;
        }
        if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING) spool_http_conn_parse_pending(c);
        return;
    }
    spool_http_conn_parse(c, buf->base, (size_t)nread);
}

void spool_http_conn_read_start(struct spool_http_conn *c)
{
    if (c->reading || c->closing || c->tcp == NULL) return;
    if (uv_read_start((uv_stream_t *)c->tcp, on_alloc, on_read) == 0) c->reading = true;
    else spool_http_conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    struct spool_http_conn *c = t->data;
    uint64_t now = uv_now(c->server->loop);
    c->armed = 0;
    if (c->deadline == 0) return;
    if (now < c->deadline) { /* the deadline moved on since the timer was armed */
        timer_arm(c, now, c->deadline);
        return;
    }
    c->deadline = 0;
    if (c->phase == PHASE_IDLE) {
        SPOOL_DEBUG("http.idle_timeout", "conn=%llu", (unsigned long long)c->id);
        spool_http_conn_close(c);
    } else if (c->phase == PHASE_RECEIVING) {
        spool_http_conn_refuse(c, 408, SPOOL_HTTP_ETIMEOUT, "request not received in time");
    } else if (c->phase == PHASE_FLUSHING) {
        SPOOL_DEBUG("http.write_timeout", "conn=%llu queued=%zu", (unsigned long long)c->id, c->queued);
        spool_http_conn_close(c);
    } else if (c->phase == PHASE_DONE) { /* lingering close: the peer did not close in time */
        spool_http_conn_close(c);
    }
}

