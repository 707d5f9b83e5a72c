/*
 * The HTTP server's per-request buffers and response heads, as the publish path uses them: on one
 * keep-alive connection, requests with many and then few headers and path parameters of
 * different lengths (the header array, decoded path and parameter arena are kept across requests
 * and must never show a previous request's bytes), and response heads on both sides of the size
 * that travels inside the write request (WRITE_INLINE_HEAD) must come out byte for byte.
 * The connection timer is lazy (gateway/http_conn.h): deadlines earlier than the armed one must
 * still fire on time, and a timer armed for a deadline that has moved on must not close a busy
 * connection. A response larger than the socket takes in one go must arrive whole, and the
 * connection carry on. A raw TCP client on the server's loop (tests/gateway/http_test_client.h), no
 * sleeps.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "http_test_client.h"

static struct spool_http_server *srv;
static struct spool_http_router router;
static bool srv_closed;

/* Answers 201 with the parameter, the header count, the last header and the path, and, when
 * asked with "x-long: N", a response header of N bytes. */
static char long_value[2048];
static void handle_param(void *arg, struct spool_http_req *req)
{
    char out[1024];
    const struct spool_http_header *last =
        req->header_count > 0 ? &req->headers[req->header_count - 1] : NULL;
    int n = snprintf(out, sizeof out, "param=[%s] headers=%zu last=[%s: %s] path=[%s]",
                     req->params[0], req->header_count, last ? last->name : "-",
                     last ? last->value : "-", req->decoded_path);
    const char *big = spool_http_req_header(req, "x-big");
    if (big != NULL) { /* more than the socket takes at once: the rest goes through uv_write */
        size_t len = strtoul(big, NULL, 10);
        char *b = malloc(len);
        cr_assert_not_null(b);
        for (size_t i = 0; i < len; i++) b[i] = (char)('a' + i % 26);
        spool_http_respond_owned(req, 201, NULL, 0, b, len);
        return;
    }
    const char *x = spool_http_req_header(req, "x-long");
    size_t want = x != NULL ? strtoul(x, NULL, 10) : 0;
    cr_assert_lt(want, sizeof long_value);
    memset(long_value, 'v', want);
    long_value[want] = '\0';
    struct spool_http_header h[] = {{"Content-Type", "application/json"}, {"X-Long", long_value}};
    spool_http_respond(req, 201, h, x != NULL ? 2 : 1, out, (size_t)n);
}

static void on_server_closed(void *arg) { srv_closed = true; }

static uint64_t request_ms = 30000, idle_ms = 60000;

static void start(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    spool_http_router_init(&router);
    struct spool_err err;
    cr_assert_eq(spool_http_router_add(&router, "POST", "/v1/channels/{channel}/messages",
                                       handle_param, NULL, &err), 0);
    struct spool_http_config cfg;
    spool_http_config_defaults(&cfg);
    cfg.request_timeout_ms = request_ms;
    cfg.idle_timeout_ms = idle_ms;
    cfg.handler = spool_http_router_dispatch;
    cfg.handler_arg = &router;
    cr_assert_eq(spool_http_server_init(&srv, &loop, &cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_http_server_listen(srv, "127.0.0.1:0", &err), 0, "%s", err.msg);
    port = spool_http_server_port(srv);
    srv_closed = false;
}

static void stop(void)
{
    spool_http_server_close(srv, on_server_closed, NULL);
    cr_assert(run_until(flag_set, &srv_closed, 3000), "server did not close");
    spool_http_router_close(&router);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

TestSuite(http_publish_wire, .init = start, .fini = stop);

/* Sends one request with `extra` headers x-h0..x-h{extra-1} (the last one's value names it) on
 * `c` and waits for its answer (the nth on the connection). */
static void request(struct client *c, const char *channel, int extra, const char *more, size_t nth)
{
    char head[8192];
    int n = snprintf(head, sizeof head, "POST /v1/channels/%s/messages HTTP/1.1\r\nHost: t\r\n%s",
                     channel, more);
    for (int i = 0; i < extra; i++)
        n += snprintf(head + n, sizeof head - (size_t)n, "x-h%d: value-%d\r\n", i, i);
    n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: 2\r\n\r\n{}");
    client_send(c, head, (size_t)n);
    cr_assert(wait_text(c, "path=[", nth), "no answer %zu", nth);
}

Test(http_publish_wire, buffers_kept_across_requests_show_only_the_current_one)
{
    struct client *c = client_open();
    request(c, "a-much-longer-channel-name-than-the-next", 30, "", 1);
    cr_assert(strstr(c->buf, "param=[a-much-longer-channel-name-than-the-next] headers=32 "
                             "last=[Content-Length: 2] path=[/v1/channels/a-much-longer-"
                             "channel-name-than-the-next/messages]") != NULL, "%s", c->buf);
    c->len = 0, c->buf[0] = '\0';
    request(c, "b", 0, "", 1);
    cr_assert(strstr(c->buf, "param=[b] headers=2 last=[Content-Length: 2] "
                             "path=[/v1/channels/b/messages]") != NULL, "%s", c->buf);
    c->len = 0, c->buf[0] = '\0';
    request(c, "c%2Fd", 60, "", 1); /* more headers than before: the array grows */
    cr_assert(strstr(c->buf, "param=[c/d] headers=62 last=[Content-Length: 2] "
                             "path=[/v1/channels/c/d/messages]") != NULL, "%s", c->buf);
    c->len = 0, c->buf[0] = '\0';
    request(c, "e", 1, "", 1);
    cr_assert(strstr(c->buf, "param=[e] headers=3 last=[Content-Length: 2]") != NULL, "%s", c->buf);
    client_free(c);
}

Test(http_publish_wire, response_heads_of_every_size_around_the_inline_one)
{
    struct client *c = client_open();
    for (size_t want = 200; want <= 360; want += 3) {
        char more[64];
        snprintf(more, sizeof more, "x-long: %zu\r\n", want);
        c->len = 0, c->buf[0] = '\0';
        request(c, "ch", 0, more, 1);
        char expect[4096];
        memset(long_value, 'v', want);
        long_value[want] = '\0';
        const char *body = "param=[ch] headers=3 last=[Content-Length: 2] path=[/v1/channels/ch/messages]";
        snprintf(expect, sizeof expect,
                 "HTTP/1.1 201 Created\r\nServer: spool\r\nContent-Type: application/json\r\n"
                 "X-Long: %s\r\nContent-Length: %zu\r\n\r\n%s",
                 long_value, strlen(body), body);
        cr_assert_str_eq(c->buf, expect, "header of %zu bytes", want);
    }
    client_free(c);
}

static bool never(void *a) { return false; }

static uint64_t now_ms(void)
{
    uv_update_time(&loop);
    return uv_now(&loop);
}

/* Idle deadline armed far out, then a request that stalls: its (earlier) request timeout fires. */
Test(http_publish_wire, an_earlier_request_deadline_fires_on_time)
{
    stop();
    request_ms = 200, idle_ms = 20000;
    start();
    struct client *c = client_open();
    request(c, "a", 0, "", 1); /* answered: now idle, 20 s out */
    /* let the timer armed for the first request's 200 ms fire and re-arm for the idle deadline */
    cr_assert_not(run_until(never, NULL, 400));
    cr_assert_not(c->eof);
    uint64_t t0 = now_ms();
    SEND(c, "POST /v1/channels/a/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n{");
    cr_assert(wait_text(c, " 408 ", 1), "no 408: %s", c->buf);
    uint64_t waited = now_ms() - t0;
    cr_assert(waited >= 150 && waited < 3000, "408 after %llu ms", (unsigned long long)waited);
    client_free(c);
    request_ms = 30000, idle_ms = 60000;
}

/* Request deadline armed far out, then the connection idles: the (earlier) idle timeout closes it. */
Test(http_publish_wire, an_earlier_idle_deadline_fires_on_time)
{
    stop();
    request_ms = 20000, idle_ms = 200;
    start();
    struct client *c = client_open();
    request(c, "a", 0, "", 1);
    uint64_t t0 = now_ms();
    cr_assert(run_until(is_eof, c, 5000), "idle connection not closed");
    uint64_t waited = now_ms() - t0;
    cr_assert(waited >= 150 && waited < 3000, "closed after %llu ms", (unsigned long long)waited);
    client_free(c);
    request_ms = 30000, idle_ms = 60000;
}

/* Requests back to back for longer than both timeouts: the timer fires with the deadline moved
 * on, re-arms, and the connection stays open; once quiet, it closes at the idle timeout. */
Test(http_publish_wire, a_busy_connection_outlives_its_first_deadline)
{
    stop();
    request_ms = 150, idle_ms = 300;
    start();
    struct client *c = client_open();
    uint64_t t0 = now_ms();
    size_t n = 0;
    while (now_ms() - t0 < 1000 && n < 100000) {
        c->len = 0, c->buf[0] = '\0';
        request(c, "b", 0, "", 1);
        cr_assert_not(c->eof, "closed after %zu requests", n);
        n++;
    }
    cr_assert_gt(n, 3);
    cr_assert(run_until(is_eof, c, 5000), "idle connection not closed");
    client_free(c);
    request_ms = 30000, idle_ms = 60000;
}

/* A client that counts what it receives and checks the big body's pattern as it arrives. */
struct counter {
    uv_tcp_t tcp;
    uv_connect_t connect;
    bool connected, closed;
    size_t total, body_seen, bad;
    char head[4096];
    size_t head_len;
    bool in_body;
    char rbuf[65536];
};

static void counter_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct counter *k = h->data;
    *b = uv_buf_init(k->rbuf, sizeof k->rbuf);
}

static void counter_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct counter *k = st->data;
    if (n < 0) {
        uv_read_stop(st);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = b->base[i];
        k->total++;
        if (!k->in_body) {
            if (k->head_len < sizeof k->head - 1) k->head[k->head_len++] = ch;
            k->head[k->head_len] = '\0';
            if (k->head_len >= 4 && memcmp(k->head + k->head_len - 4, "\r\n\r\n", 4) == 0)
                k->in_body = true, k->body_seen = 0;
            continue;
        }
        if (ch != (char)('a' + k->body_seen % 26)) k->bad++;
        k->body_seen++;
    }
}

static void counter_connected(uv_connect_t *r, int status)
{
    struct counter *k = r->data;
    cr_assert_eq(status, 0);
    k->connected = true;
    uv_read_start((uv_stream_t *)&k->tcp, counter_alloc, counter_read);
}

static void counter_closed(uv_handle_t *h) { ((struct counter *)h->data)->closed = true; }
static bool counter_is_connected(void *a) { return ((struct counter *)a)->connected; }
static bool counter_is_closed(void *a) { return ((struct counter *)a)->closed; }

struct body_wait {
    struct counter *k;
    size_t len;
};
static bool body_done(void *a)
{
    struct body_wait *w = a;
    return w->k->in_body && w->k->body_seen >= w->len;
}

Test(http_publish_wire, a_response_larger_than_the_socket_takes_arrives_whole)
{
    struct counter *k = calloc(1, sizeof *k);
    uv_tcp_init(&loop, &k->tcp);
    k->tcp.data = k, k->connect.data = k;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    cr_assert_eq(uv_tcp_connect(&k->connect, &k->tcp, (struct sockaddr *)&sa, counter_connected), 0);
    cr_assert(run_until(counter_is_connected, k, 3000));
    const size_t sizes[] = {16u << 20, 100, 3u << 20};
    for (size_t r = 0; r < 3; r++) {
        char req[256];
        int n = snprintf(req, sizeof req,
                         "POST /v1/channels/big/messages HTTP/1.1\r\nHost: t\r\nx-big: %zu\r\n"
                         "Content-Length: 0\r\n\r\n", sizes[r]);
        k->in_body = false, k->head_len = 0, k->body_seen = 0;
        uv_buf_t b = uv_buf_init(req, (unsigned)n);
        cr_assert_eq(uv_try_write((uv_stream_t *)&k->tcp, &b, 1), n);
        struct body_wait w = {k, sizes[r]};
        cr_assert(run_until(body_done, &w, 20000), "body %zu: %zu bytes", sizes[r], k->body_seen);
        char cl[64];
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", sizes[r]);
        cr_assert(strstr(k->head, "HTTP/1.1 201 Created\r\n") == k->head, "%s", k->head);
        cr_assert(strstr(k->head, cl) != NULL, "%s", k->head);
        cr_assert_eq(k->body_seen, sizes[r]);
        cr_assert_eq(k->bad, 0);
    }
    uv_close((uv_handle_t *)&k->tcp, counter_closed);
    cr_assert(run_until(counter_is_closed, k, 2000));
    free(k);
}
