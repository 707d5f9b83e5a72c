/*
 * WebSocket output queued within one loop iteration (gateway/websocket.c): small text messages
 * share one owned buffer (acks to a pipelining publisher), interleaved with shared frames and
 * large messages. The peer must get every frame whole, in the order sent, and the byte
 * accounting (spool_ws_buffered) must return to zero. Over a socketpair, like test_websocket.c.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "gateway/websocket.h"

struct conn {
    struct spool_ws ws;
    uv_pipe_t pipe;
    int client;
    bool closed;
    int messages;
    bool reply; /* echo every message back with spool_ws_send_text */
};

static void on_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len)
{
    (void)opcode;
    struct conn *c = ws->data;
    c->messages++;
    if (c->reply)
        spool_ws_send_text(ws, (const char *)data, len);
}

static void on_close(struct spool_ws *ws, uint16_t code)
{
    (void)code;
    ((struct conn *)ws->data)->closed = true;
}

static const struct spool_ws_events events = {on_message, NULL, on_close};
static const struct spool_ws_config cfg = {65536, 65536, 1 << 20, 0, 2000, false};

static void conn_open(uv_loop_t *loop, struct conn *c)
{
    memset(c, 0, sizeof *c);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    c->client = sv[1];
    cr_assert_eq(uv_pipe_init(loop, &c->pipe, 0), 0);
    cr_assert_eq(uv_pipe_open(&c->pipe, sv[0]), 0);
    c->ws.data = c;
    struct spool_err err;
    cr_assert_eq(spool_ws_start(&c->ws, (uv_stream_t *)&c->pipe, NULL, 0, &cfg, &events, &err), 0);
}

static void on_deadline(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_until_closed(uv_loop_t *loop, struct conn *c, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_deadline, ms, 0);
    for (int i = 0; i < 1000 && !c->closed && uv_is_active((uv_handle_t *)&t); i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* A masked client frame appended at buf + *n. */
static void client_frame(uint8_t *buf, size_t *n, uint8_t first, const void *payload, size_t len)
{
    cr_assert_lt(len, 126);
    const uint8_t mask[4] = {0x0a, 0x0b, 0x0c, 0x0d};
    buf[(*n)++] = first;
    buf[(*n)++] = (uint8_t)(0x80 | len);
    memcpy(buf + *n, mask, 4);
    *n += 4;
    for (size_t i = 0; i < len; i++)
        buf[(*n)++] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
}

struct frame {
    uint8_t opcode;
    size_t len;
    const uint8_t *payload;
};

static uint8_t rbuf[1 << 20];

static size_t client_frames(struct conn *c, struct frame *out, size_t max)
{
    size_t got = 0;
    for (int i = 0; i < 10000; i++) {
        ssize_t r = read(c->client, rbuf + got, sizeof rbuf - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    size_t n = 0, off = 0;
    while (off + 2 <= got && n < max) {
        uint64_t len = rbuf[off + 1] & 0x7F;
        size_t h = 2;
        if (len == 126) {
            len = ((uint64_t)rbuf[off + 2] << 8) | rbuf[off + 3];
            h = 4;
        }
        cr_assert_neq(len, 127);
        cr_assert_leq(off + h + len, got, "truncated frame");
        out[n++] = (struct frame){rbuf[off] & 0x0F, (size_t)len, rbuf + off + h};
        off += h + (size_t)len;
    }
    cr_assert_eq(off, got, "bytes after the last frame");
    return n;
}

static size_t text_of(int i, char *out)
{
    /* sizes 1..~700 bytes: most share a buffer, some are too big for the one before */
    size_t len = (size_t)(1 + (i * 37) % 700);
    int h = snprintf(out, 32, "msg %d:", i);
    memset(out + h, 'a' + i % 26, len);
    return (size_t)h + len;
}

Test(ws_batch, small_messages_share_a_buffer_and_arrive_in_order)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c);
    struct spool_wsframe *shared = spool_wsframe_new(1, "{\"shared\":1}", 12);
    enum { N = 200 };
    char text[800];
    uint64_t bytes = 0;
    for (int i = 0; i < N; i++) {
        size_t len = text_of(i, text);
        cr_assert_eq(spool_ws_send_text(&c->ws, text, len), 0);
        bytes += len + (len < 126 ? 2 : 4);
        if (i % 17 == 5) {
            cr_assert_eq(spool_ws_send_frame(&c->ws, shared), 0);
            bytes += shared->len;
        }
    }
    cr_assert_eq(spool_ws_buffered(&c->ws), bytes, "every queued byte is accounted once");
    spool_ws_close(&c->ws, 1000, "done");
    uint8_t close_frame[16];
    size_t cn = 0;
    client_frame(close_frame, &cn, 0x88, "\x03\xe8", 2);
    cr_assert_eq(write(c->client, close_frame, cn), (ssize_t)cn);
    run_until_closed(&loop, c, 5000);
    cr_assert(c->closed);
    cr_assert_eq(shared->refs, 1, "every write released its reference");
    spool_wsframe_unref(shared);

    static struct frame f[N + N / 17 + 8];
    size_t n = client_frames(c, f, sizeof f / sizeof f[0]);
    size_t k = 0;
    for (int i = 0; i < N; i++) {
        size_t len = text_of(i, text);
        cr_assert_lt(k, n);
        cr_assert_eq(f[k].opcode, 1);
        cr_assert(f[k].len == len && memcmp(f[k].payload, text, len) == 0, "message %d", i);
        k++;
        if (i % 17 == 5) {
            cr_assert(f[k].len == 12 && memcmp(f[k].payload, "{\"shared\":1}", 12) == 0);
            k++;
        }
    }
    cr_assert_eq(k + 1, n, "then only the close frame");
    cr_assert_eq(f[k].opcode, 8);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* A pipelining client: many frames in one read, each answered from on_message (as acks are). */
Test(ws_batch, answers_to_pipelined_frames_arrive_in_order)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct conn *c = malloc(sizeof *c);
    conn_open(&loop, c);
    c->reply = true;
    enum { N = 300 };
    static uint8_t out[N * 64 + 16];
    size_t on = 0;
    for (int i = 0; i < N; i++) {
        char m[48];
        int len = snprintf(m, sizeof m, "{\"type\":\"ack\",\"msgSerial\":%d}", i);
        client_frame(out, &on, 0x81, m, (size_t)len);
    }
    client_frame(out, &on, 0x88, "\x03\xe8", 2);
    cr_assert_eq(write(c->client, out, on), (ssize_t)on);
    run_until_closed(&loop, c, 5000);
    cr_assert(c->closed);
    cr_assert_eq(c->messages, N);
    static struct frame f[N + 8];
    size_t n = client_frames(c, f, sizeof f / sizeof f[0]);
    cr_assert_eq(n, N + 1);
    for (int i = 0; i < N; i++) {
        char m[48];
        int len = snprintf(m, sizeof m, "{\"type\":\"ack\",\"msgSerial\":%d}", i);
        cr_assert(f[i].opcode == 1 && f[i].len == (size_t)len && memcmp(f[i].payload, m, (size_t)len) == 0,
                  "answer %d", i);
    }
    cr_assert_eq(f[N].opcode, 8);
    close(c->client);
    free(c);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
