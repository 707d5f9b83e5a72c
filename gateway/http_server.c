/*
 * The HTTP server: binding and listening, accepting connections (counted against
 * max_connections; one beyond it is served 503 to every request and closed), and the graceful
 * close: stop accepting, close idle connections, tell in-flight requests, cut what is left after
 * drain_timeout_ms, then free everything and call back. Connections are http_conn.c's; the design
 * is described in gateway/http_conn.h.
 */
#include "gateway/http_server.h"

#include <stdatomic.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/http_conn.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"

void spool_http_config_defaults(struct spool_http_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_connections = 100000;
    cfg->max_header_bytes = 16 << 10;
    cfg->max_body_bytes = 8 << 20;
    cfg->request_timeout_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    cfg->drain_timeout_ms = 10000;
}

/* ---- accepting ---- */

static void format_remote(uv_tcp_t *tcp, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    snprintf(out, size, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(out, size, "[%s]:%d", ip, port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(out, size, "%s:%d", ip, port);
    }
}

static void on_rejected_close(uv_handle_t *h) { free(h); }

/* Makes `tcp` (connected, owned by `c` from now on) one of the server's connections. */
static void conn_start(struct spool_http_server *s, struct spool_http_conn *c, uv_tcp_t *tcp)
{
    tcp->data = c;
    c->server = s;
    c->tcp = tcp;
    c->id = ++s->next_conn_id;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns != NULL) s->conns->prev = c;
    s->conns = c;
    uv_tcp_nodelay(tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    format_remote(tcp, c->remote, sizeof c->remote);
    /* With a process-wide count (several loops), a slot is taken there first and given back if
     * the limit is already reached. */
    _Atomic uint64_t *all = s->cfg.shared_connections;
    uint64_t open = all != NULL ? atomic_fetch_add_explicit(all, 1, memory_order_relaxed) : s->n_conns;
    if (s->cfg.max_connections > 0 && open >= s->cfg.max_connections) {
        if (all != NULL) atomic_fetch_sub_explicit(all, 1, memory_order_relaxed);
        c->rejected = true;
        SPOOL_WARN("http.too_many_connections", "remote=%s max=%llu", c->remote,
                   (unsigned long long)s->cfg.max_connections);
    } else {
        c->counted = true;
        s->n_conns++;
    }
    c->phase = PHASE_IDLE;
    /* the first request must arrive within the request timeout, not the idle one */
    spool_http_conn_timer_set(c, s->cfg.request_timeout_ms ? s->cfg.request_timeout_ms : s->cfg.idle_timeout_ms);
    spool_http_conn_read_start(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct spool_http_server *s = listener->data;
    if (status < 0 || s->closing) return;
    struct spool_http_conn *c = calloc(1, sizeof *c);
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    if (c == NULL || tcp == NULL || uv_tcp_init(s->loop, tcp) != 0) {
        free(c), free(tcp);
        return;
    }
    if (uv_accept(listener, (uv_stream_t *)tcp) != 0) {
        free(c);
        uv_close((uv_handle_t *)tcp, on_rejected_close);
        return;
    }
    conn_start(s, c, tcp);
}

int spool_http_server_adopt(struct spool_http_server *s, uv_os_sock_t fd, struct spool_err *err)
{
    return spool_http_server_adopt_bytes(s, fd, NULL, 0, err);
}

int spool_http_server_adopt_bytes(struct spool_http_server *s, uv_os_sock_t fd, const char *data,
                                  size_t len, struct spool_err *err)
{
    if (s->closing) return spool_err_set(err, SPOOL_ECLOSED, "http server: closing");
    struct spool_http_conn *c = calloc(1, sizeof *c);
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    int rv = c == NULL || tcp == NULL ? UV_ENOMEM : uv_tcp_init(s->loop, tcp);
    if (rv != 0) {
        free(c), free(tcp);
        close(fd);
        return spool_err_set(err, SPOOL_ENOMEM, "http server: out of memory");
    }
    if ((rv = uv_tcp_open(tcp, fd)) != 0) {
        free(c);
        close(fd);
        uv_close((uv_handle_t *)tcp, on_rejected_close);
        return spool_err_set(err, SPOOL_EIO, "http server: adopt socket: %s", uv_strerror(rv));
    }
    conn_start(s, c, tcp);
    if (len > 0 && !c->closing) {
        if (buf_reserve(&c->pending, &c->pending_cap, len + 1) != 0) {
            spool_http_conn_close(c);
            return spool_err_set(err, SPOOL_ENOMEM, "http server: out of memory");
        }
        memcpy(c->pending, data, len);
        c->pending_len = len;
        spool_http_conn_parse_pending(c);
    }
    return 0;
}

/* ---- server ---- */

int spool_http_server_init(struct spool_http_server **out, uv_loop_t *loop,
                           const struct spool_http_config *cfg, struct spool_err *err)
{
    if (cfg->handler == NULL) return spool_err_set(err, SPOOL_EINVAL, "http server: no handler");
    struct spool_http_server *s = calloc(1, sizeof *s);
    if (s == NULL) return spool_err_set(err, SPOOL_ENOMEM, "http server: out of memory");
    s->loop = loop;
    s->cfg = *cfg;
    spool_http_parser_settings(&s->settings);
    /* http-parser's own (process-wide) head limit must not be the tighter one. Set once: with
     * several loops (--workers) the others would rewrite it while loop 0 parses. */
    static _Atomic uint64_t parser_limit;
    uint64_t want = cfg->max_header_bytes + 1024;
    if (want > HTTP_MAX_HEADER_SIZE && atomic_load(&parser_limit) != want) {
        atomic_store(&parser_limit, want);
        http_parser_set_max_header_size((uint32_t)want);
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_idle_init(loop, &s->finish_idle);
    s->finish_idle.data = s;
    *out = s;
    return 0;
}

static int parse_port(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0') return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > 65535) return -1;
    }
    *out = v;
    return 0;
}

/* A plain bind (SO_REUSEADDR as libuv sets it, no SO_REUSEPORT) tells whether anyone else holds
 * the port: sockets with SO_REUSEPORT would otherwise silently share it with another process. */
static int port_in_use(const struct sockaddr *sa)
{
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    int rv = bind(fd, sa, len) == 0 ? 0 : uv_translate_sys_error(errno);
    close(fd);
    return rv;
}

static int bind_reuseport(struct spool_http_server *s, const struct sockaddr *sa, uint64_t port)
{
    int rv;
    if (s->cfg.reuse_port == SPOOL_HTTP_REUSEPORT_FIRST && port != 0 && (rv = port_in_use(sa)) != 0)
        return rv;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 || bind(fd, sa, len) != 0) {
        rv = uv_translate_sys_error(errno);
        close(fd);
        return rv;
    }
    if ((rv = uv_tcp_open(&s->listener, fd)) != 0) close(fd);
    return rv;
}

int spool_http_server_listen(struct spool_http_server *s, const char *address, struct spool_err *err)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof host)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s' is not host:port", address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h[hl - 1] = '\0', h++;
    if (h[0] == '\0') h = "0.0.0.0"; /* ":8080" */
    else if (strcmp(h, "localhost") == 0) h = "127.0.0.1";
    uint64_t port;
    if (parse_port(colon + 1, &port) != 0)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s': bad port", address);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(h, (int)port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(h, (int)port, (struct sockaddr_in6 *)&ss) != 0)
        return spool_err_set(err, SPOOL_EINVAL, "listen address '%s': bad host", address);
    int rv = s->cfg.reuse_port != SPOOL_HTTP_REUSEPORT_OFF ? bind_reuseport(s, (struct sockaddr *)&ss, port)
                                                            : uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rv != 0)
        return spool_err_set(err, SPOOL_EIO, "listen on %s: %s", address, uv_strerror(rv));
    int len = sizeof ss;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int spool_http_server_port(const struct spool_http_server *s) { return s->port; }
uint64_t spool_http_server_connections(const struct spool_http_server *s) { return s->n_conns; }
bool spool_http_server_closing(const struct spool_http_server *s) { return s->closing; }

static void on_server_handle_close(uv_handle_t *h)
{
    struct spool_http_server *s = h->data;
    if (h == (uv_handle_t *)&s->listener) s->listener_closed = true;
    else if (h == (uv_handle_t *)&s->finish_idle) s->finish_idle_closed = true;
    else s->drain_timer_closed = true;
    spool_http_server_maybe_finish(s);
}

void spool_http_server_maybe_finish(struct spool_http_server *s)
{
    if (!s->closing || s->conns != NULL || s->finished) return;
    if (!s->drain_timer_closing) {
        s->drain_timer_closing = true;
        uv_close((uv_handle_t *)&s->drain_timer, on_server_handle_close);
        uv_close((uv_handle_t *)&s->finish_idle, on_server_handle_close);
    }
    if (!s->listener_closed || !s->drain_timer_closed || !s->finish_idle_closed) return;
    s->finished = true;
    if (s->close_cb != NULL) s->close_cb(s->close_arg);
    free(s);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct spool_http_server *s = t->data;
    SPOOL_WARN("http.drain_timeout", "connections=%llu", (unsigned long long)s->n_conns);
    for (struct spool_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        spool_http_conn_close(c);
    }
}

void spool_http_server_close(struct spool_http_server *s, void (*cb)(void *arg), void *arg)
{
    if (s->closing) { /* one close, one callback */
        SPOOL_WARN("http.close_twice", "msg=\"spool_http_server_close called again; ignored\"");
        return;
    }
    s->closing = true;
    s->close_cb = cb, s->close_arg = arg;
    uv_close((uv_handle_t *)&s->listener, on_server_handle_close);
    /* spool_http_conn_close() never frees synchronously; a close callback may complete its request, which
     * can free a connection whose handles are already closed: walk with `next` saved. */
    for (struct spool_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->phase == PHASE_IDLE || c->phase == PHASE_RECEIVING || c->phase == PHASE_DONE) spool_http_conn_close(c);
        else {
            c->close_after = true;
            spool_http_conn_notify_close(c, SPOOL_HTTP_CLOSE_SHUTDOWN);
        }
    }
    if (s->conns != NULL && s->cfg.drain_timeout_ms > 0)
        uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg.drain_timeout_ms, 0);
    spool_http_server_maybe_finish(s);
}

