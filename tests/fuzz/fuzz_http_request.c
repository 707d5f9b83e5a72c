/*
 * Fuzzes the HTTP server's request handling end to end: the input is written into one end of a
 * socketpair whose other end the server adopts (spool_http_server_adopt), on a real libuv loop,
 * with small limits and a handler that answers according to the path's first letter (plain
 * response, stream, hold until closed, upgrade), so pipelining, refusals, chunked bodies,
 * 100-continue and the close paths all run. Sanitizers catch memory errors and leaks; the loop
 * must close cleanly afterwards (no handle left behind).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "gateway/http_server.h"

static struct spool_http_req *held;
static bool server_closed;

static void on_held_close(void *arg, struct spool_http_req *req, int reason)
{
    spool_http_respond(req, 200, NULL, 0, "late", 4);
    held = NULL;
}

static void on_upgraded_close(uv_handle_t *h) { free(h); }

static void handle(void *arg, struct spool_http_req *req)
{
    char c = req->path[0] == '/' ? req->path[1] : 0;
    if (c == 's') {
        spool_http_stream_start(req, 200, NULL, 0);
        spool_http_stream_write(req, req->body, req->body_len);
        spool_http_stream_end(req);
    } else if (c == 'h' && held == NULL) {
        held = req;
        spool_http_req_on_close(req, on_held_close, NULL);
    } else if (c == 'u' && req->upgrade) {
        uv_tcp_t *tcp;
        char *rest;
        size_t rest_len;
        struct spool_err err;
        if (spool_http_upgrade(req, &tcp, &rest, &rest_len, &err) == 0) {
            free(rest);
            uv_close((uv_handle_t *)tcp, on_upgraded_close);
        }
    } else {
        const char *x = spool_http_req_header(req, "x-a");
        struct spool_http_header h[] = {{"X-Echo", x != NULL ? x : "-"}};
        spool_http_respond(req, 200, h, 1, req->body, req->body_len);
    }
}

static void on_server_closed(void *arg) { server_closed = true; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) return 0;
    signal(SIGPIPE, SIG_IGN); /* as in spoold: a peer gone mid-write is an error code */
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct spool_http_config cfg;
    spool_http_config_defaults(&cfg);
    cfg.max_header_bytes = 512;
    cfg.max_body_bytes = 1024;
    cfg.request_timeout_ms = 0;
    cfg.idle_timeout_ms = 0;
    cfg.drain_timeout_ms = 0;
    cfg.handler = handle;
    struct spool_http_server *s;
    struct spool_err err;
    if (spool_http_server_init(&s, &loop, &cfg, &err) != 0) abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    if (spool_http_server_adopt(s, sv[1], &err) != 0) abort();
    held = NULL;
    server_closed = false;
    size_t off = 0;
    char sink[65536];
    /* bounded: feed the input and drain the answers for a fixed number of loop turns */
    for (int turn = 0; turn < 64; turn++) {
        if (off < size) {
            ssize_t n = write(sv[0], data + off, size - off);
            if (n > 0) off += (size_t)n;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        while (read(sv[0], sink, sizeof sink) > 0)
            ;
    }
    close(sv[0]); /* the client goes away */
    for (int turn = 0; turn < 16; turn++) uv_run(&loop, UV_RUN_NOWAIT);
    spool_http_server_close(s, on_server_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!server_closed || held != NULL) abort();
    if (uv_loop_close(&loop) != 0) abort();
    return 0;
}
