/*
 * WebSocket connections: see websocket.h for the design. This file has four parts: the UTF-8
 * validator, the handshake key, shared frames, and the connection (wslay for reading and
 * control frames, direct vectored uv_write for data frames, a timer for heartbeats and the close
 * timeout).
 */
#include "gateway/websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "common/log.h"

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

bool spool_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            uint64_t w;
            if (n - i >= 8 && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ULL) == 0)) {
                i += 8; /* eight ASCII bytes at once: most text is */
                continue;
            }
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates U+D800..DFFF */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return false; /* continuation byte, C0/C1 (overlong) or F5..FF */
        }
        if (n - i <= need)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- handshake ------------------------------------------------------------------------------ */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int spool_ws_accept_key(const char *key, size_t len, char out[SPOOL_WS_ACCEPT_LEN + 1])
{
    /* A valid key is base64 of 16 bytes: 22 characters then "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return SPOOL_EINVAL;
    for (size_t i = 0; i < 22; i++)
        if (!(key[i] >= 'A' && key[i] <= 'Z') && !(key[i] >= 'a' && key[i] <= 'z') &&
            !(key[i] >= '0' && key[i] <= '9') && key[i] != '+' && key[i] != '/')
            return SPOOL_EINVAL;
    uint8_t raw[18];
    if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
        return SPOOL_EINVAL;
    char buf[24 + sizeof ws_guid];
    memcpy(buf, key, 24);
    memcpy(buf + 24, ws_guid, sizeof ws_guid - 1);
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)buf, 24 + sizeof ws_guid - 1, digest);
    int n = EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    if (n != SPOOL_WS_ACCEPT_LEN)
        return SPOOL_EINVAL;
    out[n] = '\0';
    return 0;
}

int spool_ws_handshake_response(const char *key, size_t len, char *buf, size_t size)
{
    char accept[SPOOL_WS_ACCEPT_LEN + 1];
    if (spool_ws_accept_key(key, len, accept) != 0)
        return -1;
    int n = snprintf(buf, size,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* ---- shared frames -------------------------------------------------------------------------- */

size_t spool_ws_frame_header(uint8_t opcode, uint64_t len, uint8_t out[10])
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

struct spool_wsframe *spool_wsframe_new(uint8_t opcode, const void *payload, size_t len)
{
    uint8_t hdr[10];
    size_t h = spool_ws_frame_header(opcode, len, hdr);
    struct spool_wsframe *f = malloc(sizeof *f + h + len);
    if (f == NULL)
        return NULL;
    f->refs = 1;
    f->len = h + len;
    f->header = h;
    memcpy(f->bytes, hdr, h);
    if (len > 0)
        memcpy(f->bytes + h, payload, len);
    return f;
}

void spool_wsframe_ref(struct spool_wsframe *f)
{
    f->refs++;
}

void spool_wsframe_unref(struct spool_wsframe *f)
{
    if (f != NULL && --f->refs == 0)
        free(f);
}

/* ---- connection ----------------------------------------------------------------------------- */

/* A piece of queued output: a shared frame (referenced) or an owned copy (control frames from
 * wslay, text messages sent with spool_ws_send_text). */
struct ws_piece {
    struct spool_wsframe *frame;
    uint8_t *own;
    size_t len;
    size_t cap; /* of own: small messages queued in one loop iteration share one buffer */
};

#define WS_OWN_MIN 512 /* an owned piece's smallest buffer (about ten acks) */

#define WS_MAX_PIECES 256 /* per uv_write (well under IOV_MAX) */

/* One uv_write of up to WS_MAX_PIECES pieces, released when it completes. */
struct ws_write {
    uv_write_t req;
    struct spool_ws *ws;
    size_t len;
    size_t n;
    struct ws_piece pieces[];
};

static void piece_release(struct ws_piece *p)
{
    spool_wsframe_unref(p->frame);
    free(p->own);
}

static void ws_finish(struct spool_ws *ws);

static void on_handle_closed(uv_handle_t *h)
{
    struct spool_ws *ws = h->data;
    if (--ws->pending_closes > 0)
        return;
    /* Freed only now: ws_finish may run inside a wslay callback. */
    wslay_event_context_free(ws->wslay);
    ws->wslay = NULL;
    ws->ev->on_close(ws, ws->code);
}

/* Closes the handles once; on_close follows when they are closed. Output still queued (not yet
 * handed to uv_write) is dropped here; writes in flight complete with UV_ECANCELED. */
static void ws_finish(struct spool_ws *ws)
{
    if (ws->dead)
        return;
    ws->dead = true;
    ws->closing = true;
    if (ws->code == 0)
        ws->code = WSLAY_CODE_ABNORMAL_CLOSURE;
    struct ws_piece *pending = ws->pending;
    for (size_t i = 0; i < ws->n_pending; i++) {
        ws->buffered -= pending[i].len;
        piece_release(&pending[i]);
    }
    free(ws->pending);
    ws->pending = NULL;
    ws->n_pending = ws->cap_pending = 0;
    ws->pending_closes = 3;
    uv_read_stop(ws->stream);
    uv_close((uv_handle_t *)ws->stream, on_handle_closed);
    uv_close((uv_handle_t *)&ws->timer, on_handle_closed);
    uv_close((uv_handle_t *)&ws->flush, on_handle_closed);
    ws->in_len = 0;
}

/* Done once our close frame is written and no more input is expected (the peer's close frame
 * arrived, or we failed the connection and stopped reading). */
static void ws_check_done(struct spool_ws *ws)
{
    if (!ws->dead && ws->buffered == 0 && wslay_event_get_close_sent(ws->wslay) &&
        !wslay_event_get_read_enabled(ws->wslay))
        ws_finish(ws);
}

static void on_write_done(uv_write_t *req, int status)
{
    struct ws_write *w = (struct ws_write *)req;
    struct spool_ws *ws = w->ws;
    ws->buffered -= w->len;
    for (size_t i = 0; i < w->n; i++)
        piece_release(&w->pieces[i]);
    free(w);
    if (ws->dead)
        return;
    if (status != 0) {
        ws_finish(ws);
        return;
    }
    ws_check_done(ws);
    if (ws->dead)
        return;
    if (ws->want_drain && ws->buffered <= ws->cfg.send_buffer_bytes / 2) {
        ws->want_drain = false;
        if (ws->ev->on_drain != NULL)
            ws->ev->on_drain(ws);
    }
}

/* Hands everything queued to libuv: one vectored uv_write per WS_MAX_PIECES pieces. */
static void ws_flush(struct spool_ws *ws)
{
    uv_idle_stop(&ws->flush);
    struct ws_piece *pending = ws->pending;
    size_t done = 0;
    while (done < ws->n_pending && !ws->dead) {
        size_t k = ws->n_pending - done < WS_MAX_PIECES ? ws->n_pending - done : WS_MAX_PIECES;
        struct ws_write *w = malloc(sizeof *w + k * sizeof w->pieces[0]);
        if (w == NULL)
            break; /* left queued; ws_finish releases them */
        uv_buf_t bufs[WS_MAX_PIECES];
        w->ws = ws;
        w->n = k;
        w->len = 0;
        for (size_t i = 0; i < k; i++) {
            struct ws_piece *p = &pending[done + i];
            w->pieces[i] = *p;
            w->len += p->len;
            const uint8_t *bytes = p->frame != NULL ? p->frame->bytes : p->own;
            bufs[i] = uv_buf_init((char *)bytes, (unsigned)p->len);
        }
        done += k;
        if (uv_write(&w->req, ws->stream, bufs, (unsigned)k, on_write_done) != 0) {
            ws->buffered -= w->len;
            for (size_t i = 0; i < k; i++)
                piece_release(&w->pieces[i]);
            free(w);
            ws_finish(ws);
        }
    }
    if (ws->dead)
        return;
    memmove(pending, pending + done, (ws->n_pending - done) * sizeof *pending);
    ws->n_pending -= done;
    if (ws->n_pending > 0)
        ws_finish(ws); /* out of memory */
}

static void on_flush(uv_idle_t *c)
{
    ws_flush(c->data);
}

/* Queues a shared frame, or a copy of hdr + data; written with everything else queued in this
 * loop iteration. */
static int ws_write(struct spool_ws *ws, struct spool_wsframe *frame, const uint8_t *hdr,
                    size_t hlen, const void *data, size_t len)
{
    struct ws_piece *last = ws->n_pending > 0 ? &((struct ws_piece *)ws->pending)[ws->n_pending - 1]
                                              : NULL;
    if (frame == NULL && last != NULL && last->own != NULL && last->cap - last->len >= hlen + len) {
        /* Appended to the owned piece queued before it: one buffer, one iovec, no malloc. */
        memcpy(last->own + last->len, hdr, hlen);
        if (len > 0)
            memcpy(last->own + last->len + hlen, data, len);
        last->len += hlen + len;
        ws->buffered += hlen + len;
        return 0;
    }
    if (ws->n_pending == ws->cap_pending) {
        size_t cap = ws->cap_pending ? 2 * ws->cap_pending : 16;
        struct ws_piece *p = realloc(ws->pending, cap * sizeof *p);
        if (p == NULL)
            return SPOOL_ENOMEM;
        ws->pending = p;
        ws->cap_pending = cap;
    }
    struct ws_piece piece = {NULL, NULL, 0, 0};
    if (frame != NULL) {
        spool_wsframe_ref(frame);
        piece.frame = frame;
        piece.len = frame->len;
    } else {
        piece.cap = hlen + len < WS_OWN_MIN ? WS_OWN_MIN : hlen + len;
        piece.own = malloc(piece.cap);
        if (piece.own == NULL)
            return SPOOL_ENOMEM;
        memcpy(piece.own, hdr, hlen);
        if (len > 0)
            memcpy(piece.own + hlen, data, len);
        piece.len = hlen + len;
    }
    ((struct ws_piece *)ws->pending)[ws->n_pending++] = piece;
    ws->buffered += piece.len;
    if (ws->n_pending == 1)
        uv_idle_start(&ws->flush, on_flush);
    return 0;
}

/* wslay: the peer's bytes come from the chunk uv_read gave us. */
static ssize_t wslay_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                             void *user)
{
    struct spool_ws *ws = user;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

/* wslay: control frames (and nothing else) leave through here, always taken whole. */
static ssize_t wslay_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                             int flags, void *user)
{
    struct spool_ws *ws = user;
    if (ws->dead || ws_write(ws, NULL, data, len, NULL, 0) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void ws_fail(struct spool_ws *ws, uint16_t code, const char *reason)
{
    if (ws->code == 0)
        ws->code = code;
    wslay_event_queue_close(ws->wslay, code, (const uint8_t *)reason,
                            reason != NULL ? strlen(reason) : 0);
    wslay_event_shutdown_read(ws->wslay);
}

static void wslay_frame_start_cb(wslay_event_context_ptr ctx,
                                 const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct spool_ws *ws = user;
    if (arg->payload_length > ws->cfg.max_frame_bytes) {
        SPOOL_INFO("ws.frame_too_big", "bytes=%llu max=%llu",
                   (unsigned long long)arg->payload_length,
                   (unsigned long long)ws->cfg.max_frame_bytes);
        ws_fail(ws, WSLAY_CODE_MESSAGE_TOO_BIG, "frame too big");
        /* Nothing more of this connection's input is parsed. */
        ws->in_len = 0;
    }
}

static void wslay_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                         void *user)
{
    struct spool_ws *ws = user;
    ws->heard = true;
    if (ws->dead)
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (!spool_utf8_valid(arg->msg, arg->msg_length)) {
            ws_fail(ws, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8");
            ws->in_len = 0;
            return;
        }
        /* fall through */
    case WSLAY_BINARY_FRAME:
        if (!ws->closing && wslay_event_get_read_enabled(ctx))
            ws->ev->on_message(ws, arg->opcode, arg->msg, arg->msg_length);
        return;
    case WSLAY_CONNECTION_CLOSE:
        /* wslay has queued the echo; the reason (after the 2-byte code) must be UTF-8. */
        if (!ws->closing)
            ws->peer_closed = true;
        if (ws->code == 0)
            ws->code = arg->status_code != 0 ? arg->status_code : WSLAY_CODE_NO_STATUS_RCVD;
        ws->closing = true;
        if (arg->msg_length > 2 && !spool_utf8_valid(arg->msg + 2, arg->msg_length - 2))
            ws->code = WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA;
        return;
    default:
        return; /* ping (answered by wslay), pong */
    }
}

static const struct wslay_event_callbacks wslay_callbacks = {
    .recv_callback = wslay_recv_cb,
    .send_callback = wslay_send_cb,
    .on_frame_recv_start_callback = wslay_frame_start_cb,
    .on_msg_recv_callback = wslay_msg_cb,
};

static void ws_arm_close_timer(struct spool_ws *ws);

/* After wslay consumed input or queued frames: flush its frames and see whether we are done. */
static void ws_pump(struct spool_ws *ws)
{
    if (ws->dead || ws->in_recv)
        return;
    if (wslay_event_want_write(ws->wslay) && wslay_event_send(ws->wslay) != 0) {
        ws_finish(ws);
        return;
    }
    if (wslay_event_get_close_sent(ws->wslay)) {
        ws->closing = true;
        if (ws->code == 0) /* a close wslay queued itself (protocol error, message too big) */
            ws->code = wslay_event_get_status_code_sent(ws->wslay);
        ws_arm_close_timer(ws);
        ws_check_done(ws);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static _Thread_local char slab[64 * 1024]; /* consumed synchronously by on_read; one per loop thread (--workers) */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof slab);
}

/* Follows the frame headers in bytes handed to wslay, so we know when it is between messages. */
static void rd_track(struct spool_ws *ws, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (ws->rd.left > 0) {
            size_t k = n < ws->rd.left ? n : (size_t)ws->rd.left;
            p += k;
            n -= k;
            ws->rd.left -= k;
            continue;
        }
        ws->rd.hdr[ws->rd.hdr_len++] = *p++;
        n--;
        if (ws->rd.hdr_len < 2)
            continue;
        const uint8_t *h = ws->rd.hdr;
        uint8_t len7 = h[1] & 0x7F;
        size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        if (ws->rd.hdr_len < 2 + ext + ((h[1] & 0x80) ? 4 : 0))
            continue;
        uint64_t plen = len7;
        if (ext > 0) {
            plen = 0;
            for (size_t i = 0; i < ext; i++)
                plen = (plen << 8) | h[2 + i];
        }
        if ((h[0] & 0x0F) < 8) /* a data frame; control frames may come inside a message */
            ws->rd.frag = (h[0] & 0x80) == 0;
        ws->rd.left = plen;
        ws->rd.hdr_len = 0;
    }
}

/* Complete single-frame messages wslay would deliver unchanged, delivered without it (see
 * websocket.h "Reading"); returns the bytes consumed, stopping at the first frame that is not
 * one or when the connection stops reading. */
static size_t ws_read_direct(struct spool_ws *ws, const uint8_t *data, size_t len)
{
    static _Thread_local uint8_t plain[64 * 1024]; /* one per loop thread, like the read slab */
    size_t off = 0;
    if (ws->cfg.wslay_only || ws->rd.hdr_len != 0 || ws->rd.left != 0 || ws->rd.frag)
        return 0;
    while (len - off >= 6 && !ws->dead && !ws->closing &&
           wslay_event_get_read_enabled(ws->wslay)) {
        const uint8_t *h = data + off;
        uint8_t op = h[0];
        if ((op != 0x81 && op != 0x82) || (h[1] & 0x80) == 0)
            break; /* fragment, RSV bit, control frame, unmasked */
        uint64_t plen = h[1] & 0x7F;
        size_t hl = 2;
        if (plen == 127)
            break;
        if (plen == 126) {
            plen = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
            if (plen < 126)
                break; /* not the minimal length: wslay's verdict */
        }
        if (plen == 0 || plen >= sizeof plain || plen >= ws->cfg.max_frame_bytes ||
            plen >= ws->cfg.max_message_bytes || len - off < hl + 4 + plen)
            break;
        const uint8_t *mask = h + hl, *src = h + hl + 4;
        uint64_t m8;
        for (int k = 0; k < 8; k++)
            ((uint8_t *)&m8)[k] = mask[k & 3];
        size_t i = 0;
        for (; i + 8 <= plen; i += 8) { /* eight bytes at a time: the mask repeats every four */
            uint64_t w;
            memcpy(&w, src + i, 8);
            w ^= m8;
            memcpy(plain + i, &w, 8);
        }
        for (; i < plen; i++)
            plain[i] = src[i] ^ mask[i & 3];
        if (op == 0x81 && !spool_utf8_valid(plain, (size_t)plen))
            break; /* wslay's path fails it with 1007 */
        off += hl + 4 + (size_t)plen;
        ws->in_recv = true; /* owner calls from on_message only queue; we flush in ws_pump */
        ws->ev->on_message(ws, op & 0x0F, plain, (size_t)plen);
        ws->in_recv = false;
    }
    return off;
}

void spool_ws_feed(struct spool_ws *ws, const uint8_t *data, size_t len)
{
    if (ws->dead)
        return;
    ws->heard = true;
    size_t direct = ws_read_direct(ws, data, len);
    data += direct;
    len -= direct;
    ws->in = data;
    ws->in_len = len;
    int rv = 0;
    if (len > 0 && !ws->dead && wslay_event_get_read_enabled(ws->wslay)) {
        rd_track(ws, data, len);
        ws->in_recv = true; /* owner calls from on_message only queue; we flush below */
        rv = wslay_event_recv(ws->wslay);
        ws->in_recv = false;
    }
    ws->in_len = 0;
    if (rv != 0)
        ws_finish(ws);
    else
        ws_pump(ws);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct spool_ws *ws = s->data;
    if (ws->dead)
        return;
    if (nread < 0) {
        ws_finish(ws); /* EOF or error: code stays as received, else 1006 */
        return;
    }
    if (nread > 0)
        spool_ws_feed(ws, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_close_timeout(uv_timer_t *t)
{
    ws_finish(t->data);
}

static void ws_arm_close_timer(struct spool_ws *ws)
{
    if (uv_is_active((uv_handle_t *)&ws->timer) && uv_timer_get_repeat(&ws->timer) == 0)
        return; /* already counting down the close */
    uint64_t ms = ws->cfg.close_timeout_ms != 0 ? ws->cfg.close_timeout_ms : 5000;
    uv_timer_start(&ws->timer, on_close_timeout, ms, 0);
}

static void on_heartbeat(uv_timer_t *t)
{
    struct spool_ws *ws = t->data;
    if (ws->closing)
        return;
    if (!ws->heard) {
        SPOOL_INFO("ws.dead_peer", "heartbeat_ms=%llu", (unsigned long long)ws->cfg.heartbeat_ms);
        ws_finish(ws);
        return;
    }
    ws->heard = false;
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"", 0};
    if (wslay_event_queue_msg(ws->wslay, &ping) == 0)
        ws_pump(ws);
}

int spool_ws_start(struct spool_ws *ws, uv_stream_t *stream, const uint8_t *head, size_t head_len,
                   const struct spool_ws_config *cfg, const struct spool_ws_events *ev,
                   struct spool_err *err)
{
    void *data = ws->data;
    memset(ws, 0, sizeof *ws);
    ws->data = data;
    ws->stream = stream;
    ws->cfg = *cfg;
    ws->ev = ev;
    ws->heard = true;
    wslay_event_context_ptr ctx;
    if (wslay_event_context_server_init(&ctx, &wslay_callbacks, ws) != 0)
        return spool_err_set(err, SPOOL_ENOMEM, "websocket: out of memory");
    wslay_event_config_set_max_recv_msg_length(ctx, cfg->max_message_bytes);
    ws->wslay = ctx;
    uv_timer_init(stream->loop, &ws->timer);
    ws->timer.data = ws;
    uv_idle_init(stream->loop, &ws->flush);
    ws->flush.data = ws;
    stream->data = ws;
    int rv = uv_read_start(stream, on_alloc, on_read);
    if (rv != 0) {
        wslay_event_context_free(ctx);
        ws->wslay = NULL;
        /* Neither handle was started: closing them needs no callback into the owner. */
        uv_close((uv_handle_t *)&ws->timer, NULL);
        uv_close((uv_handle_t *)&ws->flush, NULL);
        return spool_err_set(err, SPOOL_EIO, "websocket: read start: %s", uv_strerror(rv));
    }
    if (cfg->heartbeat_ms > 0)
        uv_timer_start(&ws->timer, on_heartbeat, cfg->heartbeat_ms, cfg->heartbeat_ms);
    if (head_len > 0)
        spool_ws_feed(ws, head, head_len);
    return 0;
}

static int ws_check_send(struct spool_ws *ws, size_t len)
{
    if (ws->closing || ws->dead)
        return SPOOL_ECLOSED;
    if (ws->buffered + len > ws->cfg.send_buffer_bytes) {
        SPOOL_INFO("ws.send_buffer_full", "buffered=%llu max=%llu",
                   (unsigned long long)ws->buffered, (unsigned long long)ws->cfg.send_buffer_bytes);
        spool_ws_close(ws, WSLAY_CODE_POLICY_VIOLATION, "send buffer full");
        return SPOOL_ELIMIT;
    }
    if (ws->buffered + len > ws->cfg.send_buffer_bytes / 2)
        ws->want_drain = true;
    return 0;
}

int spool_ws_send_text(struct spool_ws *ws, const char *s, size_t len)
{
    uint8_t hdr[10];
    size_t h = spool_ws_frame_header(WSLAY_TEXT_FRAME, len, hdr);
    int rv = ws_check_send(ws, h + len);
    if (rv != 0)
        return rv;
    rv = ws_write(ws, NULL, hdr, h, s, len);
    if (rv != 0)
        ws_finish(ws);
    return rv;
}

int spool_ws_send_frame(struct spool_ws *ws, struct spool_wsframe *f)
{
    int rv = ws_check_send(ws, f->len);
    if (rv != 0)
        return rv;
    rv = ws_write(ws, f, NULL, 0, NULL, 0);
    if (rv != 0)
        ws_finish(ws);
    return rv;
}

uint64_t spool_ws_buffered(const struct spool_ws *ws)
{
    return ws->buffered;
}

bool spool_ws_peer_closed(const struct spool_ws *ws)
{
    return ws->peer_closed;
}

bool spool_ws_is_closing(const struct spool_ws *ws)
{
    return ws->closing || ws->dead;
}

void spool_ws_close(struct spool_ws *ws, uint16_t code, const char *reason)
{
    if (ws->dead || ws->closing)
        return;
    ws->closing = true;
    if (ws->code == 0)
        ws->code = code;
    /* Stop reading now when failing the connection; a normal close waits for the peer's. */
    if (code != WSLAY_CODE_NORMAL_CLOSURE && code != WSLAY_CODE_GOING_AWAY)
        wslay_event_shutdown_read(ws->wslay);
    wslay_event_queue_close(ws->wslay, code, (const uint8_t *)reason,
                            reason != NULL ? strlen(reason) : 0);
    ws_pump(ws);
}

void spool_ws_abort(struct spool_ws *ws)
{
    ws_finish(ws);
}
