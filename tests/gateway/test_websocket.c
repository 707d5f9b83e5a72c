/*
 * WebSocket unit tests: the handshake accept key (RFC 6455 section 1.3's example), the UTF-8
 * validator, frame headers, and a connection driven over a socketpair: fragmentation, ping/pong,
 * frame and message limits (1009), invalid UTF-8 (1007), dead-peer detection, the send buffer
 * limit (1008) and shared frames. The "client" end is a raw non-blocking fd: the test writes
 * masked frames into it, runs the loop until the connection reports on_close (bounded by a
 * timer), then parses what the server wrote.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "gateway/resume.h"
#include "gateway/websocket.h"

/* ---- pieces --------------------------------------------------------------------------------- */

Test(ws_handshake, rfc6455_example)
{
    char out[SPOOL_WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    cr_assert_eq(spool_ws_accept_key(key, strlen(key), out), 0);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    char resp[256];
    int n = spool_ws_handshake_response(key, strlen(key), resp, sizeof resp);
    cr_assert_gt(n, 0);
    cr_assert(strstr(resp, "HTTP/1.1 101 Switching Protocols\r\n") == resp);
    cr_assert(strstr(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    cr_assert(strcmp(resp + n - 4, "\r\n\r\n") == 0);
}

Test(ws_handshake, rejects_bad_keys)
{
    char out[SPOOL_WS_ACCEPT_LEN + 1];
    const char *bad[] = {"", "short==", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ=x",
                         "dGhlIHNhbXBsZSBub25jZ===", "dGhlIHNhbXBsZSBub2!jZQ==",
                         "dGhlIHNhbXBsZSBub25jZQ==A"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_neq(spool_ws_accept_key(bad[i], strlen(bad[i]), out), 0, "key %s", bad[i]);
    char small[16];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    cr_assert_eq(spool_ws_handshake_response(key, strlen(key), small, sizeof small), -1);
}

#define U8(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

Test(utf8, accepts_well_formed)
{
    cr_assert(spool_utf8_valid(U8("")));
    cr_assert(spool_utf8_valid(U8("plain ascii {\"a\":1}")));
    cr_assert(spool_utf8_valid(U8("\xc2\x80")));             /* U+0080 */
    cr_assert(spool_utf8_valid(U8("\xdf\xbf")));             /* U+07FF */
    cr_assert(spool_utf8_valid(U8("\xe0\xa0\x80")));         /* U+0800 */
    cr_assert(spool_utf8_valid(U8("\xed\x9f\xbf")));         /* U+D7FF */
    cr_assert(spool_utf8_valid(U8("\xee\x80\x80")));         /* U+E000 */
    cr_assert(spool_utf8_valid(U8("\xef\xbf\xbf")));         /* U+FFFF */
    cr_assert(spool_utf8_valid(U8("\xf0\x90\x80\x80")));     /* U+10000 */
    cr_assert(spool_utf8_valid(U8("\xf4\x8f\xbf\xbf")));     /* U+10FFFF */
    cr_assert(spool_utf8_valid(U8("κόσμε \xf0\x9f\x98\x80"))); /* Greek + emoji */
    cr_assert(spool_utf8_valid((const uint8_t *)"a\0b", 3)); /* NUL is a valid code point */
}

Test(utf8, rejects_ill_formed)
{
    cr_assert_not(spool_utf8_valid(U8("\x80")));             /* lone continuation */
    cr_assert_not(spool_utf8_valid(U8("\xbf")));
    cr_assert_not(spool_utf8_valid(U8("\xc0\x80")));         /* overlong NUL */
    cr_assert_not(spool_utf8_valid(U8("\xc1\xbf")));         /* overlong */
    cr_assert_not(spool_utf8_valid(U8("\xe0\x80\x80")));     /* overlong 3-byte */
    cr_assert_not(spool_utf8_valid(U8("\xe0\x9f\xbf")));
    cr_assert_not(spool_utf8_valid(U8("\xf0\x80\x80\x80"))); /* overlong 4-byte */
    cr_assert_not(spool_utf8_valid(U8("\xf0\x8f\xbf\xbf")));
    cr_assert_not(spool_utf8_valid(U8("\xed\xa0\x80")));     /* U+D800 surrogate */
    cr_assert_not(spool_utf8_valid(U8("\xed\xbf\xbf")));     /* U+DFFF surrogate */
    cr_assert_not(spool_utf8_valid(U8("\xf4\x90\x80\x80"))); /* U+110000 */
    cr_assert_not(spool_utf8_valid(U8("\xf5\x80\x80\x80")));
    cr_assert_not(spool_utf8_valid(U8("\xff")));
    cr_assert_not(spool_utf8_valid(U8("\xc2")));             /* truncated */
    cr_assert_not(spool_utf8_valid(U8("\xe2\x82")));
    cr_assert_not(spool_utf8_valid(U8("\xf0\x9f\x98")));
    cr_assert_not(spool_utf8_valid(U8("ok\xc2" "A")));       /* bad continuation */
    cr_assert_not(spool_utf8_valid(U8("\xe2\x28\xa1")));
    cr_assert_not(spool_utf8_valid(U8("\xf0\x9f\x28\x80")));
}

Test(ws_frame, header_sizes)
{
    uint8_t h[10];
    cr_assert_eq(spool_ws_frame_header(1, 0, h), 2);
    cr_assert_eq(h[0], 0x81);
    cr_assert_eq(h[1], 0);
    cr_assert_eq(spool_ws_frame_header(2, 125, h), 2);
    cr_assert_eq(h[0], 0x82);
    cr_assert_eq(h[1], 125);
    cr_assert_eq(spool_ws_frame_header(1, 126, h), 4);
    cr_assert_eq(h[1], 126);
    cr_assert_eq((h[2] << 8) | h[3], 126);
    cr_assert_eq(spool_ws_frame_header(1, 65535, h), 4);
    cr_assert_eq((h[2] << 8) | h[3], 65535);
    cr_assert_eq(spool_ws_frame_header(1, 65536, h), 10);
    cr_assert_eq(h[1], 127);
    cr_assert_eq(h[7], 1);
    cr_assert_eq(h[8], 0);
    cr_assert_eq(h[9], 0);
    struct spool_wsframe *f = spool_wsframe_new(1, "hello", 5);
    cr_assert_not_null(f);
    cr_assert_eq(f->len, 7);
    cr_assert_eq(f->header, 2);
    cr_assert(memcmp(f->bytes, "\x81\x05hello", 7) == 0);
    spool_wsframe_unref(f);
}

/* ---- connections over a socketpair ----------------------------------------------------------- */

struct conn {
    struct spool_ws ws;
    uv_pipe_t pipe;
    int client;          /* raw test end */
    bool closed;
    uint16_t close_code;
    int messages;
    uint8_t opcode;
    char last[1 << 16];
    size_t last_len;
    bool reply;          /* echo every message back with spool_ws_send_text */
};

static void on_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct conn *c = ws->data;
    c->messages++;
    c->opcode = opcode;
    c->last_len = len < sizeof c->last ? len : sizeof c->last;
    memcpy(c->last, data, c->last_len);
    if (c->reply)
        spool_ws_send_text(ws, (const char *)data, len);
}

static void on_close(struct spool_ws *ws, uint16_t code)
{
    struct conn *c = ws->data;
    c->closed = true;
    c->close_code = code;
}

static const struct spool_ws_events events = {on_message, NULL, on_close};

static void conn_open(uv_loop_t *loop, struct conn *c, const struct spool_ws_config *cfg)
{
    memset(c, 0, sizeof *c);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    c->client = sv[1];
    cr_assert_eq(uv_pipe_init(loop, &c->pipe, 0), 0);
    cr_assert_eq(uv_pipe_open(&c->pipe, sv[0]), 0);
    c->ws.data = c;
    struct spool_err err;
    cr_assert_eq(spool_ws_start(&c->ws, (uv_stream_t *)&c->pipe, NULL, 0, cfg, &events, &err), 0);
}

static void on_deadline(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop until every conn is closed, at most `ms`. */
static void run_until_closed(uv_loop_t *loop, struct conn **cs, size_t n, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_deadline, ms, 0);
    for (int i = 0; i < 1000; i++) {
        bool all = true;
        for (size_t k = 0; k < n; k++)
            all = all && cs[k]->closed;
        if (all || !uv_is_active((uv_handle_t *)&t))
            break;
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void client_send(struct conn *c, uint8_t first, const void *payload, size_t len)
{
    uint8_t buf[1 << 17];
    size_t h = 0;
    buf[h++] = first;
    if (len < 126) {
        buf[h++] = (uint8_t)(0x80 | len);
    } else {
        buf[h++] = 0x80 | 126;
        buf[h++] = (uint8_t)(len >> 8);
        buf[h++] = (uint8_t)len;
    }
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(buf + h, mask, 4);
    h += 4;
    cr_assert_leq(h + len, sizeof buf);
    for (size_t i = 0; i < len; i++)
        buf[h + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    cr_assert_eq(write(c->client, buf, h + len), (ssize_t)(h + len));
}

/* A frame header claiming `len` (126..65535) bytes, followed by one payload byte only. */
static void client_send_header(struct conn *c, uint8_t first, uint64_t len)
{
    uint8_t buf[9] = {first, 0x80 | 126, (uint8_t)(len >> 8), (uint8_t)len, 0, 0, 0, 0, 'x'};
    cr_assert_eq(write(c->client, buf, 9), 9);
}

struct frame {
    uint8_t opcode;
    size_t len;
    const uint8_t *payload;
};

/* Reads everything the server wrote and splits it into frames (at most `max`). */
static size_t client_frames(struct conn *c, uint8_t *buf, size_t size, struct frame *out, size_t max)
{
    size_t got = 0;
    for (int i = 0; i < 1000; i++) {
        ssize_t r = read(c->client, buf + got, size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    size_t n = 0, off = 0;
    while (off + 2 <= got && n < max) {
        uint8_t op = buf[off] & 0x0F;
        cr_assert_eq(buf[off + 1] & 0x80, 0, "server frames are not masked");
        uint64_t len = buf[off + 1] & 0x7F;
        size_t h = 2;
        if (len == 126) {
            len = ((uint64_t)buf[off + 2] << 8) | buf[off + 3];
            h = 4;
        } else if (len == 127) {
            len = 0;
            for (int k = 0; k < 8; k++)
                len = (len << 8) | buf[off + 2 + k];
            h = 10;
        }
        cr_assert_leq(off + h + len, got, "truncated frame");
        out[n++] = (struct frame){op, (size_t)len, buf + off + h};
        off += h + (size_t)len;
    }
    return n;
}

static uint16_t close_code_of(const struct frame *f)
{
    cr_assert_eq(f->opcode, 0x8);
    cr_assert_geq(f->len, 2);
    return (uint16_t)((f->payload[0] << 8) | f->payload[1]);
}

static const struct spool_ws_config small_cfg = {
    .max_frame_bytes = 1000,
    .max_message_bytes = 1500,
    .send_buffer_bytes = 1 << 20,
    .heartbeat_ms = 0,
    .close_timeout_ms = 2000,
};

static uint8_t rbuf[1 << 18];

Test(ws_conn, echo_fragmented_ping_and_close)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    c->reply = true;
    client_send(c, 0x01, "hel", 3);  /* text, not final */
    client_send(c, 0x89, "p!", 2);   /* ping in the middle of a fragmented message */
    client_send(c, 0x80, "lo", 2);   /* final continuation */
    for (int i = 0; i < 100 && c->messages == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    client_send(c, 0x88, "\x03\xe8" "bye", 5); /* close 1000 */
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->messages, 1);
    cr_assert_eq(c->opcode, 1);
    cr_assert_eq(c->last_len, 5);
    cr_assert(memcmp(c->last, "hello", 5) == 0);
    cr_assert_eq(c->close_code, 1000);
    struct frame f[8];
    size_t n = client_frames(c, rbuf, sizeof rbuf, f, 8);
    cr_assert_eq(n, 3, "pong, echo, close; got %zu: %u %u", n, f[0].opcode, f[1].opcode);
    /* The pong and the echo may come in either order (the echo is written during parsing, the
     * pong when parsing of that input is done); the close comes last. */
    const struct frame *pong = f[0].opcode == 0xA ? &f[0] : &f[1];
    const struct frame *echo = f[0].opcode == 0xA ? &f[1] : &f[0];
    cr_assert_eq(pong->opcode, 0xA);
    cr_assert(pong->len == 2 && memcmp(pong->payload, "p!", 2) == 0);
    cr_assert_eq(echo->opcode, 0x1);
    cr_assert(echo->len == 5 && memcmp(echo->payload, "hello", 5) == 0);
    cr_assert_eq(close_code_of(&f[2]), 1000);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, frame_over_limit_closes_1009_before_payload)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    client_send_header(c, 0x82, 1001); /* the rest of the payload is never sent */
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->close_code, 1009, "code %u", c->close_code);
    cr_assert_eq(c->messages, 0);
    struct frame f[4];
    cr_assert_eq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(close_code_of(&f[0]), 1009);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, frame_at_limit_is_accepted)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    static char payload[1000];
    memset(payload, 'x', sizeof payload);
    client_send(c, 0x82, payload, sizeof payload);
    client_send(c, 0x88, "\x03\xe8", 2);
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert_eq(c->messages, 1);
    cr_assert_eq(c->opcode, 2);
    cr_assert_eq(c->last_len, 1000);
    cr_assert_eq(c->close_code, 1000);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, message_over_limit_closes_1009)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    static char payload[800];
    memset(payload, 'y', sizeof payload);
    client_send(c, 0x01, payload, sizeof payload); /* each frame is under max_frame_bytes */
    client_send(c, 0x80, payload, sizeof payload); /* but the message is 1600 > 1500 */
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->messages, 0);
    struct frame f[4];
    cr_assert_eq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(close_code_of(&f[0]), 1009);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, invalid_utf8_text_closes_1007)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    client_send(c, 0x81, "ok\xed\xa0\x80", 5); /* a surrogate */
    client_send(c, 0x81, "never delivered", 15);
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->messages, 0);
    cr_assert_eq(c->close_code, 1007, "code %u", c->close_code);
    struct frame f[4];
    cr_assert_eq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(close_code_of(&f[0]), 1007);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, unmasked_client_frame_is_a_protocol_error)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c, &small_cfg);
    cr_assert_eq(write(c->client, "\x81\x02hi", 4), 4);
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->messages, 0);
    struct frame f[4];
    cr_assert_eq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(close_code_of(&f[0]), 1002);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, silent_peer_is_declared_dead)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    struct spool_ws_config cfg = small_cfg;
    cfg.heartbeat_ms = 30;
    conn_open(&loop, c, &cfg);
    uint64_t t0 = uv_now(&loop);
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->close_code, 1006);
    cr_assert_geq(uv_now(&loop) - t0, 50); /* one ping went unanswered first */
    struct frame f[4];
    cr_assert_geq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(f[0].opcode, 0x9, "a ping came before the verdict");
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, send_buffer_limit_closes_1008)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    struct spool_ws_config cfg = small_cfg;
    cfg.send_buffer_bytes = 4096;
    conn_open(&loop, c, &cfg);
    static char big[5000];
    memset(big, 'z', sizeof big);
    cr_assert_eq(spool_ws_send_text(&c->ws, big, sizeof big), SPOOL_ELIMIT);
    cr_assert(spool_ws_is_closing(&c->ws));
    cr_assert_eq(spool_ws_send_text(&c->ws, "x", 1), SPOOL_ECLOSED);
    run_until_closed(&loop, &c, 1, 3000);
    cr_assert(c->closed);
    cr_assert_eq(c->close_code, 1008);
    struct frame f[4];
    cr_assert_eq(client_frames(c, rbuf, sizeof rbuf, f, 4), 1);
    cr_assert_eq(close_code_of(&f[0]), 1008);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ws_conn, shared_frame_reaches_every_connection)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    conn_open(&loop, a, &small_cfg);
    conn_open(&loop, b, &small_cfg);
    struct spool_wsframe *f = spool_wsframe_new(1, "{\"type\":\"message\"}", 18);
    cr_assert_eq(spool_ws_send_frame(&a->ws, f), 0);
    cr_assert_eq(spool_ws_send_frame(&b->ws, f), 0);
    cr_assert_geq(f->refs, 1);
    spool_ws_close(&a->ws, 1000, "done");
    spool_ws_close(&b->ws, 1000, "done");
    client_send(a, 0x88, "\x03\xe8", 2);
    client_send(b, 0x88, "\x03\xe8", 2);
    struct conn *both[2] = {a, b};
    run_until_closed(&loop, both, 2, 3000);
    cr_assert(a->closed && b->closed);
    cr_assert_eq(f->refs, 1, "every write released its reference");
    struct conn *cs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        struct frame fr[4];
        cr_assert_eq(client_frames(cs[i], rbuf, sizeof rbuf, fr, 4), 2);
        cr_assert_eq(fr[0].opcode, 1);
        cr_assert(fr[0].len == 18 && memcmp(fr[0].payload, "{\"type\":\"message\"}", 18) == 0);
        cr_assert_eq(close_code_of(&fr[1]), 1000);
        close(cs[i]->client);
    }
    spool_wsframe_unref(f);
    free(a);
    free(b);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- resume keys (gateway/resume.h) ---------------------------------------------------------- */

static const uint8_t secret_a[SPOOL_RESUME_SECRET_BYTES] = {1, 2, 3};
static const uint8_t secret_b[SPOOL_RESUME_SECRET_BYTES] = {1, 2, 4};

static char *make_key(int64_t issued, int64_t expires, size_t *len)
{
    struct spool_resume_state s;
    spool_resume_state_init(&s);
    cr_assert_eq(spool_resume_state_set(&s, "conn-1", "alice", "agent", issued, expires), 0);
    cr_assert_eq(spool_resume_state_add(&s, "chat:1", 41), 0);
    cr_assert_eq(spool_resume_state_add(&s, "weird \"name\" ,/?", 0), 0);
    char *key = spool_resume_encode(secret_a, &s, len);
    spool_resume_state_close(&s);
    cr_assert_not_null(key);
    return key;
}

Test(resume_key, round_trip)
{
    size_t len;
    char *key = make_key(1000, 5000, &len);
    cr_assert_eq(strlen(key), len);
    cr_assert_eq(strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."), len,
                 "query-safe characters only");
    struct spool_resume_state out;
    spool_resume_state_init(&out);
    struct spool_err err;
    cr_assert_eq(spool_resume_decode(secret_a, key, len, 4999, &out, &err), 0, "%s", err.msg);
    cr_assert_str_eq(out.connection_id, "conn-1");
    cr_assert_str_eq(out.client_id, "alice");
    cr_assert_str_eq(out.key_name, "agent");
    cr_assert_eq(out.issued_ms, 1000);
    cr_assert_eq(out.expires_ms, 5000);
    cr_assert_eq(out.n, 2);
    cr_assert_str_eq(out.atts[0].channel, "chat:1");
    cr_assert_eq(out.atts[0].serial, 41);
    cr_assert_str_eq(out.atts[1].channel, "weird \"name\" ,/?");
    spool_resume_state_close(&out);
    free(key);
}

Test(resume_key, expired_key_still_names_its_channels)
{
    size_t len;
    char *key = make_key(1000, 5000, &len);
    struct spool_resume_state out;
    spool_resume_state_init(&out);
    struct spool_err err;
    cr_assert_eq(spool_resume_decode(secret_a, key, len, 5001, &out, &err), SPOOL_ETIMEOUT);
    cr_assert_eq(out.n, 2);
    spool_resume_state_close(&out);
    free(key);
}

Test(resume_key, tampered_or_foreign_keys_are_refused)
{
    size_t len;
    char *key = make_key(1000, 5000, &len);
    struct spool_resume_state out;
    spool_resume_state_init(&out);
    struct spool_err err;
    cr_assert_eq(spool_resume_decode(secret_b, key, len, 2000, &out, &err), SPOOL_EDENIED);
    for (size_t i = 0; i < len; i += 7) {
        char saved = key[i];
        key[i] = key[i] == 'A' ? 'B' : 'A';
        cr_assert_neq(spool_resume_decode(secret_a, key, len, 2000, &out, &err), 0, "byte %zu", i);
        key[i] = saved;
    }
    cr_assert_eq(spool_resume_decode(secret_a, key, len - 1, 2000, &out, &err), SPOOL_EDENIED);
    cr_assert_eq(spool_resume_decode(secret_a, "", 0, 2000, &out, &err), SPOOL_EDENIED);
    cr_assert_eq(spool_resume_decode(secret_a, "abc.def", 7, 2000, &out, &err), SPOOL_EDENIED);
    spool_resume_state_close(&out);
    free(key);
}

Test(resume_key, secret_from_flag_or_data_dir)
{
    uint8_t a[SPOOL_RESUME_SECRET_BYTES], b[SPOOL_RESUME_SECRET_BYTES];
    struct spool_err err;
    cr_assert_eq(spool_resume_secret("shared", "/nonexistent", a, &err), 0);
    cr_assert_eq(spool_resume_secret("shared", "/elsewhere", b, &err), 0);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the same flag gives the same secret on every node");
    char dir[] = "/tmp/spool-resume-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(spool_resume_secret("", dir, a, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_resume_secret(NULL, dir, b, &err), 0, "%s", err.msg);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the data-dir secret persists");
    char path[512], sub[256];
    snprintf(path, sizeof path, "%s/resume.secret", dir);
    cr_assert_eq(unlink(path), 0);
    snprintf(sub, sizeof sub, "%s/not/yet", dir); /* a data dir that does not exist yet */
    cr_assert_eq(spool_resume_secret("", sub, a, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/resume.secret", sub);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(rmdir(sub), 0);
    snprintf(sub, sizeof sub, "%s/not", dir);
    cr_assert_eq(rmdir(sub), 0);
    cr_assert_eq(rmdir(dir), 0);
}
