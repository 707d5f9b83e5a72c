/*
 * HTTP/1.1 server on libuv, parsing requests with http-parser.
 *
 * One `struct spool_http_server` listens on one address and owns its connections. Each connection
 * handles one request at a time (pipelined bytes wait in a buffer until the previous response
 * has been written), so handlers never see two concurrent requests on one connection.
 *
 * Request life cycle (one owner at a time, one completion path):
 *
 *   reading  --(head + body complete)-->  handler owns `req`  --(completion call)-->  writing
 *      ^                                                                                 |
 *      +------------------- keep-alive: next request (pipelined bytes first) <-----------+
 *
 * The server calls the handler once per request with a `struct spool_http_req *`. From then on
 * the handler owns the request until it makes exactly one *completion call*:
 *   - spool_http_respond() / spool_http_respond_owned() / spool_http_respond_error(), or
 *   - spool_http_stream_end() after spool_http_stream_start() (+ any stream writes), or
 *   - spool_http_upgrade() (the handler takes the socket; see below).
 * The handler may complete synchronously (inside the handler call) or later from any loop
 * callback. The request and everything it points to stay valid until the completion call, even
 * if the client has gone away or the server is closing: the connection is freed only after the
 * handler has let go of its request. After the completion call `req` must not be touched.
 *
 * Client gone / shutdown: a handler that waits (long-poll, streams) registers a close callback
 * with spool_http_req_on_close(). It fires at most once, on the loop, when the peer closes or
 * resets the connection, a write fails, or the server starts draining. The handler must still
 * make its completion call (writes after the peer is gone are dropped). A handler that finishes
 * quickly (e.g. waits for a publish to commit) needs no close callback.
 *
 * Backpressure: spool_http_req_queued() is the number of response bytes handed to the kernel
 * but not yet written; spool_http_req_on_drain() fires when it falls back to zero. Streaming
 * handlers should stop producing (or coalesce) above a bound of their own.
 *
 * Upgrade (WebSocket): for a request that carries `Connection: upgrade`, the handler may call
 * spool_http_upgrade() instead of responding. The server has written nothing for that request;
 * it stops reading, cancels its timers, forgets the connection, and hands over the socket plus
 * any bytes it had already read past the request (the client may send its first frame right
 * behind the handshake). If the handler responds normally instead, the connection is closed
 * after that response (the parser cannot resume after an upgrade request).
 *
 * Limits (all from the server config, all enforced, each answered with a JSON error body
 * {"error":{"code":<int>,"message":"...","status":<http status>}} and the connection closed):
 *   - request head (URL + headers) > max_header_bytes           -> 431
 *   - body > max_body_bytes (Content-Length up front, or while a chunked body arrives) -> 413
 *   - a request not fully received within request_timeout_ms of its first byte -> 408
 *   - malformed HTTP                                              -> 400
 *   - more than max_connections open connections: the new one gets 503 and is closed
 * An idle keep-alive connection is closed silently after idle_timeout_ms. `Expect:
 * 100-continue` is answered with "100 Continue" (or 413 when the declared body is too large)
 * before the body is read. Request bodies may be Content-Length or chunked.
 *
 * Graceful close: spool_http_server_close() stops accepting, closes idle connections and those
 * still receiving a request, fires the close callback of every in-flight request, lets in-flight
 * requests complete (their responses carry "Connection: close"), and after drain_timeout_ms cuts
 * whatever is left. The callback runs once every connection is freed (which also waits for every
 * handler's completion call); then the server memory may be released.
 */
#ifndef SPOOL_GATEWAY_HTTP_SERVER_H
#define SPOOL_GATEWAY_HTTP_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

struct spool_http_server;
struct spool_http_conn; /* opaque: one client connection */
struct spool_http_req;

#define SPOOL_HTTP_MAX_PARAMS 4
#define SPOOL_HTTP_MAX_EXTRA_HEADERS 4

struct spool_http_header {
    const char *name;
    const char *value;
};

/* Called once per request; the handler now owns `req` (see the completion calls). */
typedef void (*spool_http_handler)(void *arg, struct spool_http_req *req);

/* Why a close callback fired. */
enum spool_http_close_reason {
    SPOOL_HTTP_CLOSE_PEER = 1, /* the client closed or reset the connection, or a write failed */
    SPOOL_HTTP_CLOSE_SHUTDOWN, /* the server is draining */
};
typedef void (*spool_http_close_cb)(void *arg, struct spool_http_req *req, int reason);
typedef void (*spool_http_drain_cb)(void *arg, struct spool_http_req *req);

/* Observer of every finished request (access log, metrics): called once the response has been
 * written (or dropped), with the status sent (0 when the request was upgraded) and the time from
 * the request's first byte in microseconds. `req` is valid during the call only. */
typedef void (*spool_http_done_cb)(void *arg, const struct spool_http_req *req, int status,
                                   uint64_t duration_us);

struct spool_http_config {
    uint64_t max_connections;    /* 0 = unlimited */
    uint64_t max_header_bytes;   /* request line + headers */
    uint64_t max_body_bytes;
    uint64_t request_timeout_ms; /* from a request's first byte to its last; 0 = none */
    uint64_t idle_timeout_ms;    /* keep-alive idle; 0 = none */
    uint64_t drain_timeout_ms;   /* graceful close: then cut what is left; 0 = wait forever */
    spool_http_handler handler;
    void *handler_arg;
    spool_http_done_cb on_done; /* may be NULL */
    void *on_done_arg;
    /* Several servers (one per event loop, gateway/workers.h) on one port: SO_REUSEPORT, and the
     * kernel spreads incoming connections over them. FIRST also checks that no other socket
     * holds the port (so a second process still fails with "address in use"); JOIN is for the
     * servers that join the first one's port. */
    enum { SPOOL_HTTP_REUSEPORT_OFF, SPOOL_HTTP_REUSEPORT_FIRST, SPOOL_HTTP_REUSEPORT_JOIN } reuse_port;
    /* Servers sharing one max_connections budget count their open connections here (atomic);
     * NULL: this server's own count. */
    _Atomic uint64_t *shared_connections;
};

/* Defaults for every field (limits as in gateway/options.c); handler must be set by the caller. */
void spool_http_config_defaults(struct spool_http_config *cfg);

struct spool_http_req {
    struct spool_http_server *server;
    struct spool_http_conn *conn;
    uint64_t conn_id;   /* unique per server, from 1 */
    uint64_t seq;       /* 1 for the first request on the connection, then 2, ... */
    const char *method; /* "GET", "POST", ... */
    int method_id;      /* enum http_method from <http_parser.h> */
    const char *target; /* the raw request target as received ("/v1/x%20y?a=1") */
    const char *path;   /* the raw path (target without the query, not decoded) */
    const char *decoded_path; /* the path percent-decoded ("%2F" becomes '/', so for display and
                                 logs; route on raw segments, see gateway/http_path.h) */
    const char *query;  /* the raw query without '?', "" when there is none */
    const struct spool_http_header *headers; /* in arrival order, names as sent */
    size_t header_count;
    const char *body; /* NUL-terminated for convenience; may hold NULs, use body_len */
    size_t body_len;
    const char *remote; /* "127.0.0.1:51234" or "[::1]:51234" */
    unsigned short http_major, http_minor;
    bool keep_alive; /* the client wants the connection kept (HTTP/1.1 default) */
    bool upgrade;    /* Connection: upgrade was requested */
    uint64_t start_ns; /* uv_hrtime() at the request's first byte */
    /* Path parameters captured by the router ("{name}" segments), percent-decoded. */
    const char *params[SPOOL_HTTP_MAX_PARAMS];
    size_t n_params;
    void *user; /* free for the handler */
    /* Headers every response to this request carries besides the handler's own (CORS). */
    struct spool_http_header extra_headers[SPOOL_HTTP_MAX_EXTRA_HEADERS];
    size_t n_extra_headers;
};

/* ---- server ---- */

int spool_http_server_init(struct spool_http_server **out, uv_loop_t *loop,
                           const struct spool_http_config *cfg, struct spool_err *err);
/* Binds and listens on "host:port" with a numeric host (IPv4 "127.0.0.1:8080", "0.0.0.0:0",
 * IPv6 "[::1]:8080"), "localhost:port", or ":port" for every IPv4 address.
 * Port 0 picks a free port: read it back with spool_http_server_port(). */
int spool_http_server_listen(struct spool_http_server *s, const char *address, struct spool_err *err);
int spool_http_server_port(const struct spool_http_server *s);
/* Serves an already connected stream socket as if it had been accepted (socket activation,
 * tests, fuzzing). The server owns `fd` from now on (it is closed on failure too). */
int spool_http_server_adopt(struct spool_http_server *s, uv_os_sock_t fd, struct spool_err *err);
/* Same, with `len` bytes already read from it (copied), parsed before anything it sends next:
 * how another event loop hands over a connection together with the request it received. */
int spool_http_server_adopt_bytes(struct spool_http_server *s, uv_os_sock_t fd, const char *data,
                                  size_t len, struct spool_err *err);
/* Open connections (upgraded ones no longer count: their new owner accounts for them). */
uint64_t spool_http_server_connections(const struct spool_http_server *s);
/* Graceful close as described at the top; `cb` runs once, on the loop, after which the server is
 * freed. Safe to call before listen. */
void spool_http_server_close(struct spool_http_server *s, void (*cb)(void *arg), void *arg);
/* True once spool_http_server_close() has been called. */
bool spool_http_server_closing(const struct spool_http_server *s);

/* ---- request accessors ---- */

/* The first header named `name` (case-insensitive), or NULL. */
const char *spool_http_req_header(const struct spool_http_req *req, const char *name);
/* Appends a path parameter (copied, NUL-terminated; owned by the request). For the router.
 * Returns 0, or SPOOL_ELIMIT beyond SPOOL_HTTP_MAX_PARAMS, SPOOL_ENOMEM. */
int spool_http_req_add_param(struct spool_http_req *req, const char *value, size_t len);
/* Adds a header to whatever response (or stream head) this request gets, after the handler's.
 * Not copied: `name` and `value` must outlive the response (static text or the request's own
 * header values). Returns 0, or SPOOL_ELIMIT beyond SPOOL_HTTP_MAX_EXTRA_HEADERS. */
int spool_http_req_add_response_header(struct spool_http_req *req, const char *name,
                                       const char *value);
void spool_http_req_on_close(struct spool_http_req *req, spool_http_close_cb cb, void *arg);
void spool_http_req_on_drain(struct spool_http_req *req, spool_http_drain_cb cb, void *arg);
/* Response bytes queued to the socket and not yet written. */
size_t spool_http_req_queued(const struct spool_http_req *req);
/* True once the peer is gone (writes are dropped) or the server is draining. */
bool spool_http_req_closing(const struct spool_http_req *req);

/* ---- completion calls: exactly one per request ---- */

/* A complete response. Content-Length, Connection and Server headers are added by the
 * server; `headers` must not contain Content-Length, Transfer-Encoding or Connection. The body
 * is copied. For HEAD the body is omitted (Content-Length still describes it); 1xx, 204 and 304
 * answers carry neither body nor Content-Length. */
void spool_http_respond(struct spool_http_req *req, int status, const struct spool_http_header *headers,
                        size_t n_headers, const void *body, size_t len);
/* Same, taking ownership of a malloc'd `body` (freed with free() once written). */
void spool_http_respond_owned(struct spool_http_req *req, int status,
                              const struct spool_http_header *headers, size_t n_headers, char *body,
                              size_t len);
/* {"error":{"code":code,"message":...,"status":status}} as application/json. */
void spool_http_respond_error(struct spool_http_req *req, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- streaming (SSE, long responses) ---- */

/* Starts a streaming response: status line and headers now, the body in pieces. Uses chunked
 * transfer encoding for HTTP/1.1 clients and "close-delimited" for HTTP/1.0 (the connection then
 * closes at the end). Not a completion call. Returns 0, or SPOOL_ECLOSED if the peer is gone. */
int spool_http_stream_start(struct spool_http_req *req, int status,
                            const struct spool_http_header *headers, size_t n_headers);
/* Writes one piece (copied; one vectored write with the chunk framing). Returns 0 or
 * SPOOL_ECLOSED (the peer is gone: stop producing and call spool_http_stream_end()). */
int spool_http_stream_write(struct spool_http_req *req, const void *data, size_t len);
/* Several pieces in one chunk and one write. */
int spool_http_stream_writev(struct spool_http_req *req, const uv_buf_t *bufs, size_t n);
/* Completion call for a stream: writes the terminating chunk (when the peer is still there). */
void spool_http_stream_end(struct spool_http_req *req);

/* ---- upgrade (WebSocket) ---- */

/* Completion call that hands the connection's socket to the caller: the returned handle is
 * malloc'd, reading is stopped and handle->data is NULL; the new owner sets data, starts reading,
 * and eventually uv_close()s it and free()s it in the close callback. `*leftover` is a malloc'd
 * copy (free()) of the bytes already received after the request (NULL and 0 when none).
 * Fails with SPOOL_ECLOSED when the peer is already gone (the request is then completed and
 * the connection closed by the server: do not touch `req` either way). */
int spool_http_upgrade(struct spool_http_req *req, uv_tcp_t **tcp, char **leftover,
                       size_t *leftover_len, struct spool_err *err);

#endif
