/*
 * One WebSocket connection fed a client byte stream, cut into reads a given way, and what came of
 * it: shared by tests/gateway/test_ws_fastread.c and tests/fuzz/fuzz_ws_read.c, which feed the
 * same stream, cut the same way, to a connection using the direct read path and to one reading
 * everything through wslay (spool_ws_config.wslay_only) and require the same result.
 *
 * ws_pair_run() gives the server end of a socketpair to a struct spool_ws on a private libuv loop,
 * hands it the stream with spool_ws_feed() one piece per cut (running the loop once, without
 * waiting, after each piece, as if each piece were one uv_read), then lets it finish:
 *   - wait_ms > 0 (the criterion test): runs the loop until on_close, at most wait_ms; the
 *     streams of that test always end the connection (a close, or something wslay refuses);
 *   - wait_ms == 0 (the fuzzer, whose streams may stop anywhere): runs the loop a few times
 *     without waiting so that queued writes complete, notes whether the connection ended by
 *     itself, then aborts it if not (spool_ws_abort: on_close reports 1006), so that an
 *     iteration takes microseconds and leaves nothing behind.
 * Each message is logged as "opcode len payload" and echoed as a text message (so writes
 * interleave with wslay's pongs and close frames); everything the server wrote is read back from
 * the client end. ws_result_compare() names the first difference, or returns NULL.
 *
 * Assertions go through WS_PAIR_REQUIRE(cond, msg), which a file may define before including
 * this one (the criterion test maps it to cr_assert); by default it prints and aborts (a fuzzer
 * finding).
 */
#ifndef SPOOL_TESTS_WS_PAIR_H
#define SPOOL_TESTS_WS_PAIR_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "gateway/websocket.h"

#ifndef WS_PAIR_REQUIRE
#define WS_PAIR_REQUIRE(cond, msg)                                                                \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "ws_pair: %s (%s)\n", msg, #cond);                                    \
            abort();                                                                              \
        }                                                                                         \
    } while (0)
#endif

#define WS_PAIR_LOG_MAX (1 << 16)
#define WS_PAIR_OUT_MAX (1 << 17)

struct ws_result {
    char log[WS_PAIR_LOG_MAX]; /* every message as "opcode len payload" */
    size_t log_len;
    uint8_t out[WS_PAIR_OUT_MAX]; /* every byte the server wrote */
    size_t out_len;
    bool ended;       /* on_close came by itself (before any abort) */
    bool closing;     /* spool_ws_is_closing() when the stream was fed (wait_ms == 0) */
    bool peer_closed; /* spool_ws_peer_closed() then */
    uint16_t code;    /* on_close's code (1006 after an abort) */
};

struct ws_pair_conn {
    struct spool_ws ws;
    uv_pipe_t pipe;
    struct ws_result *r;
    bool closed;
};

static void ws_pair_on_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct ws_pair_conn *c = ws->data;
    struct ws_result *r = c->r;
    int h = snprintf(r->log + r->log_len, sizeof r->log - r->log_len, "%u %zu ", opcode, len);
    WS_PAIR_REQUIRE(h > 0 && r->log_len + (size_t)h + len < sizeof r->log, "message log full");
    r->log_len += (size_t)h;
    if (len > 0)
        memcpy(r->log + r->log_len, data, len);
    r->log_len += len;
    spool_ws_send_text(ws, (const char *)data, len); /* writes interleave with pongs */
}

static void ws_pair_on_close(struct spool_ws *ws, uint16_t code)
{
    struct ws_pair_conn *c = ws->data;
    WS_PAIR_REQUIRE(!c->closed, "on_close fires once");
    c->closed = true;
    c->r->code = code;
}

static const struct spool_ws_events ws_pair_events = {ws_pair_on_message, NULL, ws_pair_on_close};

static void ws_pair_on_deadline(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void ws_pair_read_back(int fd, struct ws_result *r)
{
    for (;;) {
        ssize_t k = read(fd, r->out + r->out_len, sizeof r->out - r->out_len);
        if (k <= 0)
            break;
        r->out_len += (size_t)k;
    }
}

static void ws_pair_run(const uint8_t *stream, size_t len, const size_t *cuts, size_t n_cuts,
                        const struct spool_ws_config *cfg, uint64_t wait_ms, struct ws_result *r)
{
    uv_loop_t loop;
    WS_PAIR_REQUIRE(uv_loop_init(&loop) == 0, "loop init");
    struct ws_pair_conn *c = malloc(sizeof *c);
    WS_PAIR_REQUIRE(c != NULL, "malloc");
    memset(c, 0, sizeof *c);
    r->log_len = r->out_len = 0;
    r->ended = r->closing = r->peer_closed = false;
    r->code = 0;
    c->r = r;
    int sv[2];
    WS_PAIR_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    WS_PAIR_REQUIRE(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0, "nonblocking client end");
    WS_PAIR_REQUIRE(uv_pipe_init(&loop, &c->pipe, 0) == 0, "pipe init");
    WS_PAIR_REQUIRE(uv_pipe_open(&c->pipe, sv[0]) == 0, "pipe open");
    c->ws.data = c;
    struct spool_err err;
    WS_PAIR_REQUIRE(spool_ws_start(&c->ws, (uv_stream_t *)&c->pipe, NULL, 0, cfg, &ws_pair_events,
                                   &err) == 0,
                    "ws start");
    size_t at = 0;
    for (size_t i = 0; i <= n_cuts && !c->closed; i++) {
        size_t end = i < n_cuts && cuts[i] < len ? cuts[i] : len;
        if (end < at)
            end = at;
        spool_ws_feed(&c->ws, stream + at, end - at);
        at = end;
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    if (wait_ms > 0) {
        uv_timer_t t;
        uv_timer_init(&loop, &t);
        uv_timer_start(&t, ws_pair_on_deadline, wait_ms, 0);
        for (int i = 0; i < 1000 && !c->closed && uv_is_active((uv_handle_t *)&t); i++)
            uv_run(&loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
        r->ended = c->closed;
    } else {
        for (int i = 0; i < 8 && !c->closed; i++) /* writes complete, handles close */
            uv_run(&loop, UV_RUN_NOWAIT);
        r->ended = c->closed;
        if (!c->closed) {
            r->closing = spool_ws_is_closing(&c->ws);
            r->peer_closed = spool_ws_peer_closed(&c->ws);
            ws_pair_read_back(sv[1], r); /* before the abort drops what is still queued */
            spool_ws_abort(&c->ws);
            for (int i = 0; i < 8 && !c->closed; i++)
                uv_run(&loop, UV_RUN_NOWAIT);
        }
    }
    WS_PAIR_REQUIRE(c->closed, "the connection ends");
    ws_pair_read_back(sv[1], r);
    close(sv[1]);
    free(c);
    WS_PAIR_REQUIRE(uv_loop_close(&loop) == 0, "nothing left on the loop");
}

/* NULL when a and b are the same, else what differs first. */
static const char *ws_result_compare(const struct ws_result *a, const struct ws_result *b)
{
    if (a->log_len != b->log_len || memcmp(a->log, b->log, a->log_len) != 0)
        return "messages differ";
    if (a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len) != 0)
        return "bytes written differ";
    if (a->ended != b->ended)
        return "one connection ended by itself, the other did not";
    if (a->code != b->code)
        return "close codes differ";
    if (a->closing != b->closing)
        return "closing states differ";
    if (a->peer_closed != b->peer_closed)
        return "peer-closed states differ";
    return NULL;
}

#endif
