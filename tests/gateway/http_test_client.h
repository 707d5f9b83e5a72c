/*
 * A raw HTTP/1.1 test client on the test's libuv loop (the same loop as the server under test),
 * for tests/gateway/test_http_*.c. Everything waits with run_until(): the loop runs until a
 * condition holds or a deadline passes, never a sleep. Header-only (static functions, some unused
 * by a given test); it defines the test's `loop` and the server `port` the client connects to.
 */
#ifndef SPOOL_TESTS_HTTP_TEST_CLIENT_H
#define SPOOL_TESTS_HTTP_TEST_CLIENT_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#pragma GCC diagnostic ignored "-Wunused-function"

static uv_loop_t loop;
static int port;

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    bool connected, eof, closed;
    int connect_status;
    char buf[1 << 17];
    size_t len;
};

static void on_client_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct client *c = h->data;
    b->base = c->buf + c->len;
    b->len = sizeof c->buf - 1 - c->len;
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    if (n < 0) {
        c->eof = true;
        uv_read_stop(s);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
}

static void on_client_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    c->connected = true;
    c->connect_status = status;
    if (status == 0) uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
}

static void on_client_close(uv_handle_t *h)
{
    struct client *c = h->data;
    c->closed = true;
}

static bool deadline_hit;
static void on_deadline(uv_timer_t *t) { deadline_hit = true; }

/* Runs the loop until cond(arg) or ms elapse; returns cond(arg). */
static bool run_until(bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    deadline_hit = false;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!cond(arg) && !deadline_hit) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool is_connected(void *a) { return ((struct client *)a)->connected; }
static bool is_eof(void *a) { return ((struct client *)a)->eof; }
static bool is_closed(void *a) { return ((struct client *)a)->closed; }
static bool flag_set(void *a) { return *(bool *)a; }

static struct client *client_open(void)
{
    struct client *c = calloc(1, sizeof *c);
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&addr, on_client_connect);
    cr_assert(run_until(is_connected, c, 2000));
    cr_assert_eq(c->connect_status, 0);
    return c;
}

static void client_send(struct client *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    cr_assert_eq(uv_try_write((uv_stream_t *)&c->tcp, &b, 1), (int)len);
}
#define SEND(c, s) client_send(c, s, strlen(s))

static void client_free(struct client *c)
{
    uv_close((uv_handle_t *)&c->tcp, on_client_close);
    cr_assert(run_until(is_closed, c, 2000));
    free(c);
}

/* Counts occurrences of `needle` in the client's buffer. */
static size_t count_of(struct client *c, const char *needle)
{
    size_t n = 0;
    for (const char *p = c->buf; (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

struct wait_text {
    struct client *c;
    const char *needle;
    size_t times;
};
static bool has_text(void *a)
{
    struct wait_text *w = a;
    return count_of(w->c, w->needle) >= w->times;
}
static bool wait_text(struct client *c, const char *needle, size_t times)
{
    struct wait_text w = {c, needle, times};
    return run_until(has_text, &w, 3000);
}

/* One request on a fresh connection ("Connection: close" is added): waits for the server to
 * close, returns the status and copies the body (after the blank line) into `body`. */
static int http_call(const char *method, const char *target, const char *headers, const char *body,
                     char *out, size_t out_size)
{
    struct client *c = client_open();
    char head[4096];
    size_t blen = body != NULL ? strlen(body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                     method, target, headers != NULL ? headers : "", blen);
    client_send(c, head, (size_t)n);
    if (blen > 0) client_send(c, body, blen);
    cr_assert(run_until(is_eof, c, 10000), "no answer to %s %s", method, target);
    int status = 0;
    sscanf(c->buf, "HTTP/1.1 %d", &status);
    const char *b = strstr(c->buf, "\r\n\r\n");
    snprintf(out, out_size, "%s", b != NULL ? b + 4 : "");
    client_free(c);
    return status;
}

#endif
