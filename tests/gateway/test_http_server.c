/*
 * HTTP server tests: a raw TCP client (libuv, same loop as the server) on 127.0.0.1 against a
 * server with small limits, driven by run_until(), which runs the loop until a condition holds
 * or a deadline passes (never a sleep).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "http_test_client.h"

static struct spool_http_server *srv;
static struct spool_http_router router;
static bool srv_closed;

/* ---- test handlers ---- */

static void handle_echo(void *arg, struct spool_http_req *req)
{
    char out[4096];
    const char *x = spool_http_req_header(req, "x-test");
    int n = snprintf(out, sizeof out, "%s %s q=%s seq=%llu x=%s body=%.*s", req->method,
                     req->decoded_path, req->query, (unsigned long long)req->seq, x ? x : "-",
                     (int)req->body_len, req->body);
    struct spool_http_header h[] = {{"Content-Type", "text/plain"}};
    spool_http_respond(req, 200, h, 1, out, (size_t)n);
}

static void handle_param(void *arg, struct spool_http_req *req)
{
    char out[256];
    int n = snprintf(out, sizeof out, "param=[%s]", req->params[0]);
    spool_http_respond(req, 200, NULL, 0, out, (size_t)n);
}

/* A stream that writes two pieces, then holds until the client goes away or the server drains. */
static struct spool_http_req *held;
static int held_reason;
static void on_held_close(void *arg, struct spool_http_req *req, int reason)
{
    held_reason = reason;
    spool_http_stream_end(req);
    held = NULL;
}
static bool held_gone(void *a) { return held == NULL; }
static int drains;
static size_t queued_after_writes;
static void on_stream_drained(void *arg, struct spool_http_req *req)
{
    cr_expect_eq(spool_http_req_queued(req), 0);
    drains++;
}
static void handle_stream(void *arg, struct spool_http_req *req)
{
    struct spool_http_header h[] = {{"Content-Type", "text/event-stream"}};
    cr_assert_eq(spool_http_stream_start(req, 200, h, 1), 0);
    size_t after_head = spool_http_req_queued(req);
    cr_assert_eq(spool_http_stream_write(req, "data: one\n\n", 11), 0);
    uv_buf_t v[2] = {uv_buf_init("data: ", 6), uv_buf_init("two\n\n", 5)};
    cr_assert_eq(spool_http_stream_writev(req, v, 2), 0);
    /* writes complete in their callbacks, later: each piece is queued with its chunk framing */
    queued_after_writes = spool_http_req_queued(req) - after_head;
    drains = 0;
    spool_http_req_on_drain(req, on_stream_drained, NULL);
    held = req;
    spool_http_req_on_close(req, on_held_close, NULL);
}

/* Takes the socket and answers on it directly. */
static uv_tcp_t *upgraded;
static char *leftover;
static size_t leftover_len;
static void on_upgraded_close(uv_handle_t *h) { free(h); }
static void handle_upgrade(void *arg, struct spool_http_req *req)
{
    struct spool_err err;
    cr_assert_eq(spool_http_upgrade(req, &upgraded, &leftover, &leftover_len, &err), 0);
    cr_assert_null(upgraded->data);
    uv_buf_t b = uv_buf_init("HTTP/1.1 101 Switching Protocols\r\n\r\nhello", 41);
    cr_assert_eq(uv_try_write((uv_stream_t *)upgraded, &b, 1), 41);
}

/* A plain request answered later, by the test. */
static struct spool_http_req *pending_req;
static int pending_reason;
static void on_pending_close(void *arg, struct spool_http_req *req, int reason) { pending_reason = reason; }
static void handle_hold(void *arg, struct spool_http_req *req)
{
    pending_req = req;
    spool_http_req_on_close(req, on_pending_close, NULL);
}

static void handle_get_both(void *arg, struct spool_http_req *req) { spool_http_respond(req, 200, NULL, 0, "get", 3); }
static void handle_head_both(void *arg, struct spool_http_req *req)
{
    struct spool_http_header h[] = {{"X-Head", "yes"}};
    spool_http_respond(req, 200, h, 1, NULL, 0);
}
static void handle_no_content(void *arg, struct spool_http_req *req) { spool_http_respond(req, 204, NULL, 0, "x", 1); }

static void on_server_closed(void *arg) { srv_closed = true; }

static uint64_t drain_ms = 2000;

static void start(uint64_t max_conns, uint64_t max_header, uint64_t max_body, uint64_t req_ms,
                  uint64_t idle_ms)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    spool_http_router_init(&router);
    struct spool_err err;
    cr_assert_eq(spool_http_router_add(&router, NULL, "/echo", handle_echo, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "GET", "/p/{name}/x", handle_param, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "GET", "/stream", handle_stream, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "GET", "/ws", handle_upgrade, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "GET", "/hold", handle_hold, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "GET", "/both", handle_get_both, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "HEAD", "/both", handle_head_both, NULL, &err), 0);
    cr_assert_eq(spool_http_router_add(&router, "DELETE", "/nocontent", handle_no_content, NULL, &err), 0);
    struct spool_http_config cfg;
    spool_http_config_defaults(&cfg);
    cfg.max_connections = max_conns;
    cfg.max_header_bytes = max_header;
    cfg.max_body_bytes = max_body;
    cfg.request_timeout_ms = req_ms;
    cfg.idle_timeout_ms = idle_ms;
    cfg.drain_timeout_ms = drain_ms;
    cfg.handler = spool_http_router_dispatch;
    cfg.handler_arg = &router;
    cr_assert_eq(spool_http_server_init(&srv, &loop, &cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_http_server_listen(srv, "127.0.0.1:0", &err), 0, "%s", err.msg);
    port = spool_http_server_port(srv);
    cr_assert_gt(port, 0);
    srv_closed = false;
    held = NULL;
    pending_req = NULL;
    pending_reason = 0;
    upgraded = NULL;
}

static void stop(void)
{
    spool_http_server_close(srv, on_server_closed, NULL);
    cr_assert(run_until(flag_set, &srv_closed, 3000), "server did not close");
    spool_http_router_close(&router);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

static void start_default(void) { start(8, 1024, 64, 5000, 5000); }

TestSuite(http_server);

Test(http_server, keep_alive_and_pipelining_in_order)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /echo?a=1 HTTP/1.1\r\nHost: x\r\nX-Test: one\r\n\r\n"
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    cr_assert(wait_text(c, "HTTP/1.1 200 OK", 2), "got: %s", c->buf);
    const char *first = strstr(c->buf, "GET /echo q=a=1 seq=1 x=one body=");
    const char *second = strstr(c->buf, "POST /echo q= seq=2 x=- body=hello");
    cr_assert(first != NULL && second != NULL && first < second, "got: %s", c->buf);
    cr_expect_eq(count_of(c, "Connection: close"), 0);
    /* the same connection serves a third request later */
    SEND(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "seq=3", 1), "got: %s", c->buf);
    cr_expect(!c->eof);
    client_free(c);
    stop();
}

Test(http_server, chunked_request_body_and_expect_continue)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    cr_assert(wait_text(c, "body=abcde", 1), "got: %s", c->buf);
    SEND(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    cr_assert(wait_text(c, "HTTP/1.1 100 Continue\r\n\r\n", 1), "got: %s", c->buf);
    cr_expect_eq(count_of(c, "HTTP/1.1 200"), 1); /* no answer before the body */
    SEND(c, "xyz");
    cr_assert(wait_text(c, "body=xyz", 1), "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, oversized_head_is_431_json_and_closes)
{
    start_default();
    struct client *c = client_open();
    char req[4096];
    memset(req, 'a', sizeof req);
    memcpy(req, "GET /echo HTTP/1.1\r\nX-Big: ", 27);
    memcpy(req + sizeof req - 4, "\r\n\r\n", 4);
    client_send(c, req, sizeof req);
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 431 ") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "{\"error\":{\"code\":43100,") != NULL, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"status\":431}}") != NULL, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, oversized_body_is_413_before_reading_it)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n");
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 413 ") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"code\":41300") != NULL, "got: %s", c->buf);
    client_free(c);
    /* chunked bodies are counted as they arrive */
    c = client_open();
    SEND(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
            "1\r\nx\r\n0\r\n\r\n");
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 413 ") == c->buf, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, malformed_request_is_400_and_closes)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /echo HTTP/1.1\r\nBad Header Line\r\n\r\n");
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 400 ") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"code\":40000") != NULL, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "Connection: close") != NULL, "got: %s", c->buf);
    client_free(c);
    c = client_open();
    SEND(c, "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"code\":40004") != NULL, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, slow_client_gets_408)
{
    start(8, 1024, 64, 150, 5000);
    struct client *c = client_open();
    SEND(c, "GET /echo HTTP/1.1\r\nHo");
    cr_assert(run_until(is_eof, c, 3000), "not closed; got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 408 ") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"code\":40800") != NULL, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, idle_keep_alive_connection_closes)
{
    start(8, 1024, 64, 5000, 150);
    struct client *c = client_open();
    SEND(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "HTTP/1.1 200", 1));
    cr_assert(run_until(is_eof, c, 3000), "idle connection not closed");
    cr_expect_eq(count_of(c, "HTTP/1.1"), 1, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, routes_404_405_and_decoded_params)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /p/a%2Fb%20c/x HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "param=[a/b c]", 1), "got: %s", c->buf);
    SEND(c, "POST /p/n/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    cr_assert(wait_text(c, "HTTP/1.1 405", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "Allow: GET\r\n") != NULL, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"code\":40500") != NULL, "got: %s", c->buf);
    SEND(c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "HTTP/1.1 404", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "{\"error\":{\"code\":40400,\"message\":\"no route for GET /nope\","
                             "\"status\":404}}") != NULL, "got: %s", c->buf);
    SEND(c, "HEAD /p/n/x HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "Content-Length: 9\r\n", 1), "got: %s", c->buf); /* no body for HEAD */
    cr_expect_eq(count_of(c, "param=[n]"), 0, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, streaming_response_and_client_going_away)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "b\r\ndata: two\n\n\r\n", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "Transfer-Encoding: chunked\r\n") != NULL, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "b\r\ndata: one\n\n\r\n") != NULL, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "0\r\n\r\n") == NULL);
    cr_assert_not_null(held);
    cr_expect_eq(queued_after_writes, 2 * (3 + 11 + 2), "queued bytes: chunk head + data + CRLF each");
    cr_expect_eq(spool_http_req_queued(held), 0);
    cr_expect_geq(drains, 1, "drain callback did not fire");
    held_reason = 0;
    client_free(c); /* the client goes away: the handler hears of it */
    cr_assert(run_until(held_gone, NULL, 3000), "close callback did not fire");
    stop();
    cr_expect_eq(held_reason, SPOOL_HTTP_CLOSE_PEER);
}

Test(http_server, stream_ends_on_graceful_close)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "data: two", 1), "got: %s", c->buf);
    spool_http_server_close(srv, on_server_closed, NULL);
    cr_assert(run_until(is_eof, c, 3000));
    cr_expect_eq(held_reason, SPOOL_HTTP_CLOSE_SHUTDOWN);
    cr_expect(strstr(c->buf, "\r\n0\r\n\r\n") != NULL, "stream not terminated: %s", c->buf);
    cr_assert(run_until(flag_set, &srv_closed, 3000));
    client_free(c);
    spool_http_router_close(&router);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(http_server, upgrade_hands_over_socket_and_leftover_bytes)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            "\x81\x05" "frame");
    cr_assert(wait_text(c, "hello", 1), "got: %s", c->buf);
    cr_expect(strncmp(c->buf, "HTTP/1.1 101 Switching Protocols\r\n\r\nhello", 41) == 0, "got: %s", c->buf);
    cr_assert_not_null(upgraded);
    cr_assert_eq(leftover_len, 7);
    cr_expect(memcmp(leftover, "\x81\x05" "frame", 7) == 0);
    cr_expect_eq(spool_http_server_connections(srv), 0);
    free(leftover);
    uv_close((uv_handle_t *)upgraded, on_upgraded_close);
    cr_assert(run_until(is_eof, c, 3000));
    client_free(c);
    stop();
}

Test(http_server, max_connections_gets_503)
{
    start(1, 1024, 64, 5000, 5000);
    struct client *a = client_open();
    SEND(a, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(a, "HTTP/1.1 200", 1));
    cr_expect_eq(spool_http_server_connections(srv), 1);
    struct client *b = client_open();
    SEND(b, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(run_until(is_eof, b, 3000), "got: %s", b->buf);
    cr_expect(strstr(b->buf, "HTTP/1.1 503 ") == b->buf, "got: %s", b->buf);
    cr_expect(strstr(b->buf, "\"code\":50300") != NULL, "got: %s", b->buf);
    client_free(b);
    client_free(a);
    stop();
}

static void on_big_written(uv_write_t *w, int status) { free(w); }

Test(http_server, refused_body_is_not_reset_away)
{
    /* The client sends a too-large body in full, more than the server reads before refusing:
     * the 413 must still reach it intact (lingering close), not be lost to a connection reset
     * caused by closing a socket with unread input. (Linux loopback usually delivers the
     * response even without lingering, so this guards the outcome more than the mechanism.) */
    start_default();
    struct client *c = client_open();
    static char req[300000];
    int n = snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                     sizeof req - 100);
    memset(req + n, 'b', sizeof req - (size_t)n);
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(req, (unsigned)(sizeof req - 100 + (size_t)n));
    cr_assert_eq(uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_big_written), 0);
    cr_assert(run_until(is_eof, c, 5000), "not closed");
    cr_expect(strstr(c->buf, "HTTP/1.1 413 ") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "\"status\":413}}") != NULL, "got: %s", c->buf);
    client_free(c);
    stop();
}

static bool pending_arrived(void *a) { return pending_req != NULL; }

Test(http_server, graceful_close_lets_in_flight_request_finish)
{
    start_default();
    struct client *busy = client_open(), *idle = client_open();
    SEND(idle, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(idle, "HTTP/1.1 200", 1));
    SEND(busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(run_until(pending_arrived, NULL, 3000));
    spool_http_server_close(srv, on_server_closed, NULL);
    cr_assert(run_until(is_eof, idle, 3000), "idle keep-alive connection not closed");
    cr_expect_eq(pending_reason, SPOOL_HTTP_CLOSE_SHUTDOWN);
    cr_expect(!busy->eof && !srv_closed, "in-flight request cut");
    spool_http_respond(pending_req, 200, NULL, 0, "late", 4);
    cr_assert(run_until(is_eof, busy, 3000));
    cr_expect(strstr(busy->buf, "HTTP/1.1 200 OK\r\n") == busy->buf, "got: %s", busy->buf);
    cr_expect(strstr(busy->buf, "Connection: close\r\n") != NULL, "got: %s", busy->buf);
    cr_expect(strstr(busy->buf, "\r\n\r\nlate") != NULL, "got: %s", busy->buf);
    cr_assert(run_until(flag_set, &srv_closed, 3000));
    client_free(busy);
    client_free(idle);
    spool_http_router_close(&router);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(http_server, drain_timeout_cuts_a_request_that_does_not_finish)
{
    drain_ms = 100;
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(run_until(pending_arrived, NULL, 3000));
    spool_http_server_close(srv, on_server_closed, NULL);
    cr_expect_eq(pending_reason, SPOOL_HTTP_CLOSE_SHUTDOWN);
    cr_assert(run_until(is_eof, c, 3000), "not cut after the drain timeout");
    cr_expect_eq(c->len, 0, "got: %s", c->buf);
    cr_expect(!srv_closed, "server closed while a handler still owns a request");
    cr_expect(spool_http_req_closing(pending_req));
    spool_http_respond(pending_req, 200, NULL, 0, "late", 4); /* dropped, but completes it */
    cr_assert(run_until(flag_set, &srv_closed, 3000));
    client_free(c);
    spool_http_router_close(&router);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(http_server, pipelined_request_waits_for_an_async_answer)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?second HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(run_until(pending_arrived, NULL, 3000));
    /* the second request is not handled while the first is in flight */
    struct wait_text w = {c, "HTTP/1.1", 1};
    cr_expect_not(run_until(has_text, &w, 100), "answered out of order: %s", c->buf);
    spool_http_respond(pending_req, 200, NULL, 0, "first", 5);
    cr_assert(wait_text(c, "seq=2", 1), "got: %s", c->buf);
    const char *first = strstr(c->buf, "\r\n\r\nfirst"), *second = strstr(c->buf, "q=second");
    cr_expect(first != NULL && second != NULL && first < second, "got: %s", c->buf);
    client_free(c);
    stop();
}

Test(http_server, head_route_wins_over_get_and_204_has_no_length)
{
    start_default();
    struct client *c = client_open();
    SEND(c, "HEAD /both HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "\r\n\r\n", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "X-Head: yes\r\n") != NULL, "GET handler served HEAD: %s", c->buf);
    c->len = 0, c->buf[0] = '\0';
    SEND(c, "DELETE /nocontent HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(wait_text(c, "\r\n\r\n", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "HTTP/1.1 204 No Content\r\n") == c->buf, "got: %s", c->buf);
    cr_expect(strstr(c->buf, "Content-Length") == NULL, "got: %s", c->buf);
    /* the connection is still in step: nothing was sent after the head */
    SEND(c, "PUT /both HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    cr_assert(wait_text(c, "HTTP/1.1 405", 1), "got: %s", c->buf);
    cr_expect(strstr(c->buf, "Allow: GET, HEAD\r\n") != NULL, "got: %s", c->buf);
    cr_expect(strncmp(c->buf, "HTTP/1.1 204", 12) == 0, "stray bytes after the 204: %s", c->buf);
    client_free(c);
    stop();
}
