/*
 * publish: closed-loop publish load generator, Spool (HTTP/1.1 or the realtime WebSocket protocol)
 * or NATS JetStream (libnats).
 *
 *   publish --target spool    --urls 127.0.0.1:18081,127.0.0.1:18082 --size 100 --inflight 64
 *   publish --target spool-ws --urls 127.0.0.1:18081,127.0.0.1:18082 --size 100 --inflight 64
 *   publish --target nats  --urls nats://127.0.0.1:14222 --size 100 --inflight 64
 *
 * Every message is acknowledged before it counts. "In flight" is the number of publishes sent and
 * not yet acknowledged, held constant (closed loop):
 *   spool: inflight / pipeline keep-alive connections (round-robin over --urls), each with
 *          `pipeline` requests outstanding (1 = plain HTTP/1.1, one request at a time).
 *   spool-ws: --ws-conns WebSocket connections to /v1/realtime (default one per url), the
 *          in-flight publish frames spread over them, each acked by msgSerial (like NATS async).
 *   nats:  inflight 1 = js_Publish (sync) in a loop; > 1 = js_PublishAsync on one connection,
 *          a counting window keeps exactly `inflight` unacknowledged.
 * Latency is publish -> ack, measured per message. Only messages sent after the warm-up and
 * acknowledged before the end of the measured window count. Output ends with one line:
 *   RESULT target=.. size=.. inflight=.. acked=.. errors=.. secs=.. msgs_per_s=.. p50_ms=.. p99_ms=..
 * With --progress, one stderr line per second of the whole run (warm-up and drain included),
 *   PROGRESS t=S acked=N max_ms=M, shows a stall as it happens.
 * All loops are bounded by --duration and --count; traffic goes only where --urls says.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <poll.h>

#include "http_client.h"
#include "ws_client.h"

#ifdef SPOOL_BENCH_NATS
#include <nats/nats.h>
#endif

/* ------------------------------------------------------------------ common */

static struct {
    const char *target;
    const char *urls;
    size_t size;
    unsigned inflight;
    unsigned pipeline;
    unsigned ws_conns;
    double duration;
    double warmup;
    uint64_t count;
    const char *prefix;
    unsigned channels;
    unsigned streams;
    const char *stream;
    bool create_stream;
    unsigned replicas;
    bool msg_id;
    bool progress;
    bool quiet;
} opt = {
    .target = "spool",
    .urls = "127.0.0.1:8080",
    .size = 100,
    .inflight = 1,
    .pipeline = 1,
    .duration = 5,
    .warmup = 1,
    .count = 100000000,
    .prefix = "bench",
    .channels = 0,
    .streams = 1,
    .stream = "BENCH",
    .create_stream = false,
    .replicas = 3,
    .msg_id = false,
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Window: sends at >= t_measure count; acks at <= t_end count. */
static uint64_t t_start, t_measure, t_end;

struct samples {
    uint64_t *v;
    size_t n, cap;
};
static struct samples lat;
static uint64_t n_acked, n_errors, n_sent;

static void sample_add(uint64_t ns)
{
    if (lat.n == lat.cap) {
        size_t cap = lat.cap ? lat.cap * 2 : 1 << 16;
        uint64_t *v = realloc(lat.v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "out of memory for samples\n");
            exit(1);
        }
        lat.v = v;
        lat.cap = cap;
    }
    lat.v[lat.n++] = ns;
}

/* Called for each acknowledged publish (send time, ack time). */
/* --progress: one stderr line per second of the run (all acks, warm-up included), to see a
 * stall as it happens: "PROGRESS t=S acked=N max_ms=M" (M: the slowest ack of that second). */
static uint64_t prog_next, prog_n, prog_max;

static void progress_tick(uint64_t t)
{
    if (!opt.progress || t < prog_next)
        return;
    if (prog_next)
        fprintf(stderr, "PROGRESS t=%.0f acked=%" PRIu64 " max_ms=%.1f\n",
                (double)(prog_next - t_start) / 1e9, prog_n, (double)prog_max / 1e6);
    prog_next = (prog_next ? prog_next : t_start) + 1000000000ull;
    prog_n = prog_max = 0;
}

static void record_ack(uint64_t sent, uint64_t acked)
{
    prog_n++;
    if (acked - sent > prog_max)
        prog_max = acked - sent;
    progress_tick(acked);
    if (sent < t_measure || acked > t_end)
        return;
    n_acked++;
    sample_add(acked - sent);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
    if (lat.n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(lat.n - 1) + 0.5);
    return (double)lat.v[i] / 1e6;
}

static void report(const char *mode)
{
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_u64);
    double secs = (double)(t_end - t_measure) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    printf("RESULT target=%s mode=%s size=%zu inflight=%u pipeline=%u acked=%" PRIu64
           " errors=%" PRIu64 " secs=%.2f msgs_per_s=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f client_cpu_s=%.2f\n",
           opt.target, mode, opt.size, opt.inflight, opt.pipeline, n_acked, n_errors, secs,
           secs > 0 ? (double)n_acked / secs : 0, pct_ms(0.50), pct_ms(0.99), pct_ms(1.0), cpu);
    fflush(stdout);
}

/* ------------------------------------------------------------------ spool: shared */

#define MAX_URLS 16

static struct sockaddr_in addrs[MAX_URLS];
static unsigned n_addrs;
static char *payload;
static unsigned run_nonce;
static int ep;
static unsigned err_printed;
static uint64_t reconnects;

static int spool_setup(void)
{
    int n = bench_parse_urls(opt.urls, addrs, MAX_URLS);
    if (n <= 0)
        return -1;
    n_addrs = (unsigned)n;
    payload = malloc(opt.size + 1);
    for (size_t i = 0; i < opt.size; i++)
        payload[i] = (char)('a' + i % 26);
    ep = epoll_create1(0);
    t_start = now_ns();
    return 0;
}

static bool sending_allowed(uint64_t t)
{
    return t < t_end && n_sent < opt.count;
}

static void publish_failed(uint64_t sent, uint64_t t, const char *what, int status, const char *body, size_t blen)
{
    if (sent >= t_measure && t <= t_end)
        n_errors++;
    if (err_printed < 5) {
        err_printed++;
        fprintf(stderr, "publish failed: %s %d: %.*s\n", what, status, (int)(blen > 200 ? 200 : blen), body);
    }
}

/* Output buffer shared by both client kinds. */
struct outbuf {
    char *out;
    size_t out_len, out_off, out_cap;
    bool want_out;
};

static char *out_reserve(struct outbuf *o, size_t more)
{
    if (o->out_len + more > o->out_cap) {
        size_t cap = o->out_cap ? o->out_cap : 4096;
        while (cap < o->out_len + more)
            cap *= 2;
        o->out = realloc(o->out, cap);
        if (!o->out) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        o->out_cap = cap;
    }
    return o->out + o->out_len;
}

static void set_out(int fd, struct outbuf *o, void *ptr, bool want)
{
    if (o->want_out == want)
        return;
    o->want_out = want;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = ptr};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Write what is queued; EAGAIN leaves the rest for EPOLLOUT. Returns -1 when the connection
 * failed. */
static int out_flush(int fd, struct outbuf *o, void *ptr)
{
    while (o->out_off < o->out_len) {
        ssize_t w = write(fd, o->out + o->out_off, o->out_len - o->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(fd, o, ptr, true);
                return 0;
            }
            if (errno == EINTR)
                continue;
            return -1;
        }
        o->out_off += (size_t)w;
    }
    o->out_off = o->out_len = 0;
    set_out(fd, o, ptr, false);
    return 0;
}

/* ------------------------------------------------------------------ spool over HTTP/1.1 */

struct conn {
    struct http_in h;
    unsigned idx;
    struct sockaddr_in addr;
    struct outbuf o;
    uint64_t *sent_at;  /* FIFO of send times, capacity = pipeline */
    unsigned q_head, q_n;
    uint64_t seq;
    char path[128];
};

static int conn_open(struct conn *c)
{
    c->h.fd = bench_tcp_connect(&c->addr);
    if (c->h.fd < 0)
        return -1;
    c->o.out_len = c->o.out_off = 0;
    c->h.in_len = 0;
    c->q_n = 0;
    c->o.want_out = false;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->h.fd, &ev);
}

static void conn_close(struct conn *c)
{
    if (c->h.fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->h.fd, NULL);
        close(c->h.fd);
    }
    c->h.fd = -1;
}

static int conn_flush(struct conn *c)
{
    return out_flush(c->h.fd, &c->o, c);
}

/* Queue one request on c (the caller flushes). */
static void conn_send_one(struct conn *c, uint64_t t)
{
    char id[64];
    int idl = snprintf(id, sizeof id, "%08x-%04u-%012" PRIu64, run_nonce, c->idx, c->seq++);
    /* JSON: {"id":"<id>","data":"<payload>"} */
    size_t body = 7 + (size_t)idl + 10 + opt.size + 2;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      c->path, body);
    char *p = out_reserve(&c->o, (size_t)hl + body), *p0 = p;
    memcpy(p, head, (size_t)hl);
    p += hl;
    memcpy(p, "{\"id\":\"", 7);
    p += 7;
    memcpy(p, id, (size_t)idl);
    p += idl;
    memcpy(p, "\",\"data\":\"", 10);
    p += 10;
    memcpy(p, payload, opt.size);
    p += opt.size;
    memcpy(p, "\"}", 2);
    p += 2;
    c->o.out_len += (size_t)(p - p0);
    c->sent_at[(c->q_head + c->q_n) % opt.pipeline] = t;
    c->q_n++;
    if (t >= t_measure)
        n_sent++;
}

static void conn_fill(struct conn *c, uint64_t t)
{
    while (c->q_n < opt.pipeline && sending_allowed(t))
        conn_send_one(c, t);
}

/* Take as many complete responses as the input holds. Returns -1 on a protocol error or when
 * the server asked to close. */
static int conn_parse(struct conn *c, uint64_t t)
{
    size_t off = 0;
    int rc = 0;
    for (;;) {
        struct http_resp r;
        long used = http_resp_parse(c->h.in + off, c->h.in_len - off, &r);
        if (used == 0)
            break;
        if (used < 0) {
            fprintf(stderr, "bad response head\n");
            return -1;
        }
        if (c->q_n == 0) {
            fprintf(stderr, "response without a request\n");
            return -1;
        }
        uint64_t sent = c->sent_at[c->q_head];
        c->q_head = (c->q_head + 1) % opt.pipeline;
        c->q_n--;
        if (r.status == 201 && memmem(r.body, r.body_raw, "\"serials\"", 9))
            record_ack(sent, t);
        else
            publish_failed(sent, t, "HTTP", r.status, r.body, r.body_raw);
        off += (size_t)used;
        if (r.close) {
            rc = -1;
            break;
        }
    }
    if (off)
        http_in_consume(&c->h, off);
    return rc;
}

static int conn_read(struct conn *c, uint64_t t)
{
    int rc = http_in_read(&c->h);
    int prc = conn_parse(c, t);
    return rc < 0 ? -1 : prc;
}

static void conn_fail(struct conn *c, uint64_t t)
{
    /* Outstanding requests on a dropped connection count as errors. */
    while (c->q_n) {
        if (c->sent_at[c->q_head] >= t_measure && t <= t_end)
            n_errors++;
        c->q_head = (c->q_head + 1) % opt.pipeline;
        c->q_n--;
    }
    conn_close(c);
}

/* ------------------------------------------------------------------ the load loop of both spool modes */

/*
 * One epoll loop drives the connections of either spool mode (HTTP, WebSocket) through their
 * ops: every connection is filled and flushed at t_start; then, until t_end and the drain of what
 * is still outstanding (at most 10 s after t_end), each ready connection reads what arrived, is
 * refilled and flushed; a failing one is failed (its outstanding publishes count as errors);
 * before t_end, dropped connections are reopened, at most max_reconnects times in all.
 */
struct load_ops {
    size_t size; /* one connection struct: conns is an array of them */
    unsigned max_events, max_reconnects;
    int (*fd)(void *c);
    unsigned (*outstanding)(void *c);
    int (*read)(void *c, uint64_t t);                /* EPOLLIN; -1: fail it */
    int (*pump)(void *c, uint64_t t, bool writable); /* fill and flush; -1: fail it */
    void (*fail)(void *c, uint64_t t);
    int (*open)(void *c); /* reopen a dropped connection; -1 leaves it closed */
};

static void load_run(char *conns, unsigned nconn, const struct load_ops *ops)
{
#define LOAD_CONN(i) ((void *)(conns + (size_t)(i) * ops->size))
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    uint64_t hard_stop = t_end + 10ull * 1000000000ull; /* drain at most 10 s */
    for (unsigned i = 0; i < nconn; i++)
        if (ops->pump(LOAD_CONN(i), t_start, false) < 0)
            ops->fail(LOAD_CONN(i), t_start);
    struct epoll_event evs[256];
    int max_events = ops->max_events < 256 ? (int)ops->max_events : 256;
    for (;;) {
        uint64_t t = now_ns();
        if (t > hard_stop)
            break;
        unsigned outstanding = 0;
        for (unsigned i = 0; i < nconn; i++)
            outstanding += ops->outstanding(LOAD_CONN(i));
        if (t >= t_end && outstanding == 0)
            break;
        int n = epoll_wait(ep, evs, max_events, 10);
        t = now_ns();
        progress_tick(t);
        for (int k = 0; k < n; k++) {
            void *c = evs[k].data.ptr;
            if (ops->fd(c) < 0)
                continue;
            int bad = 0;
            if (evs[k].events & (EPOLLERR | EPOLLHUP))
                bad = -1;
            if (!bad && (evs[k].events & EPOLLIN))
                bad = ops->read(c, t);
            if (!bad)
                bad = ops->pump(c, t, (evs[k].events & EPOLLOUT) != 0);
            if (bad)
                ops->fail(c, t);
        }
        /* Reopen dropped connections (bounded). */
        for (unsigned i = 0; i < nconn && t < t_end; i++) {
            void *c = LOAD_CONN(i);
            if (ops->fd(c) >= 0 || reconnects >= ops->max_reconnects)
                continue;
            reconnects++;
            if (ops->open(c) == 0 && ops->pump(c, t, false) < 0)
                ops->fail(c, t);
        }
    }
#undef LOAD_CONN
}

/* The HTTP mode's ops. */
static int conn_fd(void *c) { return ((struct conn *)c)->h.fd; }
static unsigned conn_outstanding(void *c) { return ((struct conn *)c)->q_n; }
static int conn_read_op(void *c, uint64_t t) { return conn_read(c, t); }
static void conn_fail_op(void *c, uint64_t t) { conn_fail(c, t); }
static int conn_open_op(void *c) { return conn_open(c); }

static int conn_pump(void *vc, uint64_t t, bool writable)
{
    struct conn *c = vc;
    if (writable && conn_flush(c) < 0)
        return -1;
    conn_fill(c, t);
    return conn_flush(c);
}

static const struct load_ops conn_ops = {
    .size = sizeof(struct conn), .max_events = 256, .max_reconnects = 1000,
    .fd = conn_fd, .outstanding = conn_outstanding, .read = conn_read_op, .pump = conn_pump,
    .fail = conn_fail_op, .open = conn_open_op,
};

static int run_spool(void)
{
    if (spool_setup() < 0)
        return 2;
    if (opt.pipeline == 0)
        opt.pipeline = 1;
    unsigned nconn = (opt.inflight + opt.pipeline - 1) / opt.pipeline;
    unsigned nch = opt.channels ? opt.channels : nconn;
    struct conn *cs = calloc(nconn, sizeof *cs);
    for (unsigned i = 0; i < nconn; i++) {
        struct conn *c = &cs[i];
        c->idx = i;
        c->h.fd = -1;
        c->addr = addrs[i % n_addrs];
        c->sent_at = calloc(opt.pipeline, sizeof *c->sent_at);
        snprintf(c->path, sizeof c->path, "/v1/channels/%s-%u/messages", opt.prefix, i % nch);
        if (conn_open(c) < 0) {
            fprintf(stderr, "connect to %s:%u: %s\n", inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port),
                    strerror(errno));
            return 1;
        }
    }
    load_run((char *)cs, nconn, &conn_ops);
    uint64_t t = now_ns();
    for (unsigned i = 0; i < nconn; i++) {
        if (cs[i].h.fd >= 0)
            conn_fail(&cs[i], t);
        http_in_free(&cs[i].h);
        free(cs[i].o.out);
        free(cs[i].sent_at);
    }
    free(cs);
    if (reconnects)
        fprintf(stderr, "reconnects: %" PRIu64 "\n", reconnects);
    report(opt.pipeline > 1 ? "http-pipelined" : "http");
    return 0;
}

/* ------------------------------------------------------------------ spool over the realtime WebSocket */

/*
 * --target spool-ws: K WebSocket connections to /v1/realtime (--ws-conns, default one per url,
 * never more than --inflight), each holding its share of --inflight publish frames awaiting their
 * ack, like a NATS async publisher. Each publish frame carries one message
 * {"id":"<unique>","data":"<payload>"} for channel PREFIX-k (k round-robin over --channels,
 * default one per in-flight slot, as in the HTTP mode). The msgSerial names the in-flight slot
 * (serial = generation * slots + slot), so an ack finds its send time without a search.
 */
struct wsconn {
    struct http_in h;
    unsigned idx;
    struct sockaddr_in addr;
    struct outbuf o;
    unsigned slots;      /* in flight on this connection */
    uint64_t *sent_at;   /* per slot; 0 = free */
    unsigned *free_slots;
    unsigned n_free;
    uint64_t gen;
    uint64_t seq;
};

static unsigned ws_nch;
static uint64_t ws_next_channel;

static const char ws_upgrade[] = "GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n";

/* Append a masked client frame (mask 0: XOR with zero keeps the payload; still a valid masked
 * frame) whose payload the caller writes at the returned pointer. */
static char *ws_frame_start(struct outbuf *o, uint8_t opcode, size_t n)
{
    char *out = out_reserve(o, n + WS_CLIENT_HEAD_MAX);
    size_t h = ws_client_head(opcode, n, out);
    o->out_len += h + n;
    return out + h;
}

/* Blocking: connect, upgrade, wait for the "connected" message (10 s at most). Bytes after it
 * stay in the input buffer. */
static int ws_open(struct wsconn *c)
{
    c->h.fd = bench_tcp_connect(&c->addr);
    if (c->h.fd < 0)
        return -1;
    c->h.in_len = 0;
    c->o.out_len = c->o.out_off = 0;
    c->o.want_out = false;
    if (write(c->h.fd, ws_upgrade, sizeof ws_upgrade - 1) != (ssize_t)sizeof ws_upgrade - 1)
        return -1;
    uint64_t deadline = now_ns() + 10ull * 1000000000ull;
    char *hend = NULL;
    while (!(hend = c->h.in_len ? memmem(c->h.in, c->h.in_len, "\r\n\r\n", 4) : NULL) ||
           !memmem(c->h.in, c->h.in_len, "\"connected\"", 11)) {
        if (now_ns() > deadline) {
            fprintf(stderr, "websocket handshake timed out\n");
            return -1;
        }
        struct pollfd pf = {.fd = c->h.fd, .events = POLLIN};
        poll(&pf, 1, 100);
        if (http_in_read(&c->h) < 0) {
            fprintf(stderr, "websocket handshake: connection closed\n");
            return -1;
        }
    }
    if (c->h.in_len < 12 || memcmp(c->h.in + 9, "101", 3) != 0) {
        fprintf(stderr, "websocket upgrade refused: %.*s\n", (int)(c->h.in_len > 200 ? 200 : c->h.in_len), c->h.in);
        return -1;
    }
    http_in_consume(&c->h, (size_t)(hend + 4 - c->h.in));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->h.fd, &ev);
}

static void ws_send_one(struct wsconn *c, uint64_t t)
{
    unsigned slot = c->free_slots[--c->n_free];
    uint64_t serial = c->gen++ * c->slots + slot;
    char head[192], id[64];
    int idl = snprintf(id, sizeof id, "%08x-w%03u-%012" PRIu64, run_nonce, c->idx, c->seq++);
    int hl = snprintf(head, sizeof head,
                      "{\"type\":\"publish\",\"msgSerial\":%" PRIu64 ",\"channel\":\"%s-%" PRIu64
                      "\",\"messages\":[{\"id\":\"%.*s\",\"data\":\"",
                      serial, opt.prefix, ws_next_channel++ % ws_nch, idl, id);
    size_t n = (size_t)hl + opt.size + 4;
    char *p = ws_frame_start(&c->o, 1, n);
    memcpy(p, head, (size_t)hl);
    memcpy(p + hl, payload, opt.size);
    memcpy(p + hl + opt.size, "\"}]}", 4);
    c->sent_at[slot] = t;
    if (t >= t_measure)
        n_sent++;
}

static void ws_fill(struct wsconn *c, uint64_t t)
{
    while (c->n_free && sending_allowed(t))
        ws_send_one(c, t);
}

static unsigned ws_outstanding(const struct wsconn *c)
{
    return c->slots - c->n_free;
}

/* One text message from the server: an ack or nack completes its slot; anything else is ignored. */
static int ws_message(struct wsconn *c, const char *m, size_t n, uint64_t t)
{
    bool ack = memmem(m, n, "\"type\":\"ack\"", 12) != NULL;
    bool nack = !ack && memmem(m, n, "\"type\":\"nack\"", 13) != NULL;
    if (!ack && !nack) {
        if (memmem(m, n, "\"type\":\"error\"", 14))
            publish_failed(t, t, "error", 0, m, n);
        return 0;
    }
    const char *s = memmem(m, n, "\"msgSerial\":", 12);
    if (!s)
        return -1;
    uint64_t serial = strtoull(s + 12, NULL, 10);
    unsigned slot = (unsigned)(serial % c->slots);
    uint64_t sent = c->sent_at[slot];
    if (!sent) {
        fprintf(stderr, "ack for a msgSerial not in flight: %.*s\n", (int)(n > 200 ? 200 : n), m);
        return -1;
    }
    c->sent_at[slot] = 0;
    c->free_slots[c->n_free++] = slot;
    if (ack && memmem(m, n, "\"serials\"", 9))
        record_ack(sent, t);
    else
        publish_failed(sent, t, "nack", 0, m, n);
    return 0;
}

/* Parse the server's frames (never masked, never fragmented by Spool). -1 on close or error. */
static int ws_read(struct wsconn *c, uint64_t t)
{
    int rc = http_in_read(&c->h);
    size_t off = 0;
    const char *b = c->h.in;
    size_t n = c->h.in_len;
    struct ws_frame fr;
    while (ws_frame_parse(b + off, n - off, &fr)) {
        if (fr.masked)
            return -1; /* servers do not mask */
        if (n - off < fr.head + fr.len)
            break;
        const char *p = b + off + fr.head;
        uint64_t len = fr.len;
        uint8_t op = fr.op;
        off += fr.head + fr.len;
        if (op == 0x9) { /* ping -> pong */
            memcpy(ws_frame_start(&c->o, 0xA, (size_t)len), p, (size_t)len);
        } else if (op == 0x8) {
            rc = -1;
            break;
        } else if (op == 0x1) {
            if (ws_message(c, p, (size_t)len, t) < 0) {
                rc = -1;
                break;
            }
        } else if (op != 0xA) {
            fprintf(stderr, "unexpected websocket opcode %u\n", op);
            rc = -1;
            break;
        }
    }
    if (off)
        http_in_consume(&c->h, off);
    return rc;
}

static void ws_fail(struct wsconn *c, uint64_t t)
{
    for (unsigned s = 0; s < c->slots; s++) {
        if (c->sent_at[s]) {
            if (c->sent_at[s] >= t_measure && t <= t_end)
                n_errors++;
            c->sent_at[s] = 0;
            c->free_slots[c->n_free++] = s;
        }
    }
    if (c->h.fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->h.fd, NULL);
        close(c->h.fd);
    }
    c->h.fd = -1;
}

/* The WebSocket mode's ops (writes wait in the output buffer: no EPOLLOUT of their own). */
static int ws_fd(void *c) { return ((struct wsconn *)c)->h.fd; }
static unsigned ws_outstanding_op(void *c) { return ws_outstanding(c); }
static int ws_read_op(void *c, uint64_t t) { return ws_read(c, t); }
static void ws_fail_op(void *c, uint64_t t) { ws_fail(c, t); }

static int ws_pump(void *vc, uint64_t t, bool writable)
{
    struct wsconn *c = vc;
    (void)writable;
    ws_fill(c, t);
    return out_flush(c->h.fd, &c->o, c);
}

static int ws_open_op(void *vc)
{
    struct wsconn *c = vc;
    if (ws_open(c) == 0)
        return 0;
    if (c->h.fd >= 0) {
        close(c->h.fd);
        c->h.fd = -1;
    }
    return -1;
}

static const struct load_ops ws_ops = {
    .size = sizeof(struct wsconn), .max_events = 64, .max_reconnects = 100,
    .fd = ws_fd, .outstanding = ws_outstanding_op, .read = ws_read_op, .pump = ws_pump,
    .fail = ws_fail_op, .open = ws_open_op,
};

static int run_spool_ws(void)
{
    if (spool_setup() < 0)
        return 2;
    unsigned nconn = opt.ws_conns ? opt.ws_conns : n_addrs;
    if (nconn > opt.inflight)
        nconn = opt.inflight;
    ws_nch = opt.channels ? opt.channels : opt.inflight;
    struct wsconn *cs = calloc(nconn, sizeof *cs);
    for (unsigned i = 0; i < nconn; i++) {
        struct wsconn *c = &cs[i];
        c->idx = i;
        c->addr = addrs[i % n_addrs];
        c->slots = opt.inflight / nconn + (i < opt.inflight % nconn);
        c->sent_at = calloc(c->slots, sizeof *c->sent_at);
        c->free_slots = calloc(c->slots, sizeof *c->free_slots);
        for (unsigned s = 0; s < c->slots; s++)
            c->free_slots[c->n_free++] = c->slots - 1 - s;
        if (ws_open(c) < 0) {
            fprintf(stderr, "websocket to %s:%u: %s\n", inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port),
                    strerror(errno));
            return 1;
        }
    }
    load_run((char *)cs, nconn, &ws_ops);
    uint64_t t = now_ns();
    for (unsigned i = 0; i < nconn; i++) {
        if (cs[i].h.fd >= 0)
            ws_fail(&cs[i], t);
        http_in_free(&cs[i].h);
        free(cs[i].o.out);
        free(cs[i].sent_at);
        free(cs[i].free_slots);
    }
    free(cs);
    if (reconnects)
        fprintf(stderr, "reconnects: %" PRIu64 "\n", reconnects);
    report("ws");
    return 0;
}

/* ------------------------------------------------------------------ nats (JetStream) */

#ifdef SPOOL_BENCH_NATS
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned in_flight;

/* The payload starts with the send time in decimal, so the ack handler can compute latency
 * without any per-message bookkeeping. */
static void stamp(char *buf, uint64_t t)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%020" PRIu64, t);
    size_t k = (size_t)n < opt.size ? (size_t)n : opt.size;
    memcpy(buf, tmp, k);
}

static void ack_cb(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    uint64_t t = now_ns();
    uint64_t sent = 0;
    const char *d = natsMsg_GetData(msg);
    int dl = natsMsg_GetDataLength(msg);
    for (int i = 0; i < dl && i < 20; i++)
        sent = sent * 10 + (uint64_t)(d[i] - '0');
    pthread_mutex_lock(&mu);
    if (pa)
        record_ack(sent, t);
    else if (sent >= t_measure && t <= t_end) {
        n_errors++;
        if (err_printed < 5) {
            err_printed++;
            fprintf(stderr, "publish failed: %s (%s)\n", natsStatus_GetText(pae->Err),
                    pae->ErrText ? pae->ErrText : "");
        }
    }
    in_flight--;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    natsMsg_Destroy(msg);
}

static void stream_name(char *buf, size_t n, unsigned k)
{
    if (opt.streams <= 1)
        snprintf(buf, n, "%s", opt.stream);
    else
        snprintf(buf, n, "%s%u", opt.stream, k);
}

/* Subject of the i-th publish: one stream takes PREFIX.>, K streams take PREFIX.k.> each. */
static void subject_for(char *buf, size_t n, uint64_t i)
{
    if (opt.streams <= 1)
        snprintf(buf, n, "%s.%u", opt.prefix, (unsigned)(i % (opt.channels ? opt.channels : 1)));
    else
        snprintf(buf, n, "%s.%u.m", opt.prefix, (unsigned)(i % opt.streams));
}

static int nats_setup_stream(jsCtx *js)
{
    uint64_t deadline = now_ns() + 30ull * 1000000000ull;
    /* Remove what an earlier run left (one stream or several), then create. */
    for (unsigned k = 0; k <= 16; k++) {
        char name[128];
        if (k == 16)
            snprintf(name, sizeof name, "%s", opt.stream);
        else
            snprintf(name, sizeof name, "%s%u", opt.stream, k);
        jsErrCode jerr = 0;
        js_DeleteStream(js, name, NULL, &jerr);
    }
    unsigned ns = opt.streams ? opt.streams : 1;
    for (unsigned k = 0; k < ns; k++) {
        char name[128], subj[128];
        stream_name(name, sizeof name, k);
        if (ns <= 1)
            snprintf(subj, sizeof subj, "%s.>", opt.prefix);
        else
            snprintf(subj, sizeof subj, "%s.%u.>", opt.prefix, k);
        const char *subjects[] = {subj};
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = name;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Replicas = (int64_t)opt.replicas;
        for (;;) {
            jsErrCode jerr = 0;
            jsStreamInfo *si = NULL;
            natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
            if (s == NATS_OK) {
                jsStreamInfo_Destroy(si);
                break;
            }
            if (now_ns() > deadline) {
                fprintf(stderr, "create stream %s: %s (jerr %d)\n", name, natsStatus_GetText(s), (int)jerr);
                return -1;
            }
            usleep(500000);
        }
        /* Wait until the stream answers a publish (its Raft group has a leader). */
        for (;;) {
            char s1[160];
            subject_for(s1, sizeof s1, k);
            jsPubAck *pa = NULL;
            if (js_Publish(&pa, js, s1, "x", 1, NULL, NULL) == NATS_OK) {
                jsPubAck_Destroy(pa);
                break;
            }
            if (now_ns() > deadline) {
                fprintf(stderr, "stream %s never accepted a publish\n", name);
                return -1;
            }
            usleep(200000);
        }
    }
    return 0;
}

static int run_nats(void)
{
    if (opt.inflight > 1 && opt.size < 20) {
        fprintf(stderr, "nats async needs --size >= 20 (the payload carries its send time)\n");
        return 2;
    }
    char *list = strdup(opt.urls);
    const char *servers[MAX_URLS];
    int ns = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && ns < MAX_URLS; tok = strtok_r(NULL, ",", &save))
        servers[ns++] = tok;
    natsOptions *no = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, servers, ns);
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(no, true);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, 5000);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, no);
    if (s != NATS_OK) {
        fprintf(stderr, "nats connect %s: %s\n", opt.urls, natsStatus_GetText(s));
        return 1;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    jo.PublishAsync.MaxPending = (int64_t)opt.inflight + 16;
    jo.PublishAsync.AckHandler = ack_cb;
    jo.PublishAsync.StallWait = 10000;
    s = natsConnection_JetStream(&js, nc, &jo);
    if (s != NATS_OK) {
        fprintf(stderr, "jetstream: %s\n", natsStatus_GetText(s));
        return 1;
    }
    if (opt.create_stream && nats_setup_stream(js) < 0)
        return 1;
    char *buf = malloc(opt.size + 24);
    for (size_t i = 0; i < opt.size; i++)
        buf[i] = (char)('a' + i % 26);
    char subj[160];
    char idbuf[64];
    unsigned nonce = run_nonce;
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    const char *mode = opt.inflight <= 1 ? "js-sync" : "js-async";
    uint64_t i = 0;
    for (;; i++) {
        uint64_t t = now_ns();
        if (!sending_allowed(t))
            break;
        subject_for(subj, sizeof subj, i);
        jsPubOptions po;
        jsPubOptions *pop = NULL;
        if (opt.msg_id) {
            jsPubOptions_Init(&po);
            snprintf(idbuf, sizeof idbuf, "%08x-%012" PRIu64, nonce, i);
            po.MsgId = idbuf;
            pop = &po;
        }
        if (opt.inflight <= 1) {
            jsPubAck *pa = NULL;
            jsErrCode jerr = 0;
            s = js_Publish(&pa, js, subj, buf, (int)opt.size, pop, &jerr);
            uint64_t t2 = now_ns();
            if (s == NATS_OK)
                record_ack(t, t2);
            else if (t >= t_measure && t2 <= t_end) {
                n_errors++;
                if (err_printed++ < 5)
                    fprintf(stderr, "publish failed: %s (jerr %d)\n", natsStatus_GetText(s), (int)jerr);
            }
            jsPubAck_Destroy(pa);
            if (t >= t_measure)
                n_sent++;
            continue;
        }
        pthread_mutex_lock(&mu);
        while (in_flight >= opt.inflight) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&cv, &mu, &ts);
            if (now_ns() > t_end + 10ull * 1000000000ull)
                break;
        }
        in_flight++;
        pthread_mutex_unlock(&mu);
        t = now_ns();
        stamp(buf, t);
        s = js_PublishAsync(js, subj, buf, (int)opt.size, pop);
        if (s != NATS_OK) {
            pthread_mutex_lock(&mu);
            in_flight--;
            if (t >= t_measure)
                n_errors++;
            pthread_mutex_unlock(&mu);
            if (err_printed++ < 5)
                fprintf(stderr, "publish async: %s\n", natsStatus_GetText(s));
        } else if (t >= t_measure) {
            n_sent++;
        }
    }
    if (opt.inflight > 1) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 10000;
        js_PublishAsyncComplete(js, &po);
    }
    pthread_mutex_lock(&mu);
    report(mode);
    pthread_mutex_unlock(&mu);
    free(buf);
    free(list);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(no);
    nats_Close();
    return 0;
}
#else
static int run_nats(void)
{
    fprintf(stderr, "built without libnats (install libnats-dev and reconfigure)\n");
    return 2;
}
#endif

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: publish [options]\n"
            "  --target spool|spool-ws|nats  system under test (spool: HTTP; spool-ws: /v1/realtime)\n"
            "  --urls LIST             spool: host:port,...; nats: nats://host:port,... (first is used first)\n"
            "  --size BYTES            payload bytes (100)\n"
            "  --inflight N            publishes awaiting their ack at any time (1)\n"
            "  --pipeline P            spool: requests outstanding per connection (1 = no pipelining);\n"
            "                          connections = inflight / P\n"
            "  --ws-conns K            spool-ws: WebSocket connections, round-robin over --urls, the\n"
            "                          in-flight publishes spread over them (default: one per url)\n"
            "  --duration S            measured seconds (5)\n"
            "  --warmup S              seconds before measuring (1)\n"
            "  --count N               at most N measured publishes (100000000)\n"
            "  --prefix NAME           channel name / subject prefix (bench)\n"
            "  --channels K            spool: channels spread over connections (default: one per\n"
            "                          connection); nats: subjects (1)\n"
            "  --stream NAME           nats: stream name (BENCH)\n"
            "  --streams K             nats: K streams NAME0.. on PREFIX.k.>, publishes round-robin (1)\n"
            "  --create-stream         nats: (re)create the stream: file storage, --replicas, PREFIX.>\n"
            "  --replicas R            nats: stream replicas (3)\n"
            "  --progress              print PROGRESS t=S acked=N max_ms=M to stderr once a second\n"
            "  --msg-id                nats: send a Nats-Msg-Id per message (JetStream dedup, like Spool's id)\n");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--target"))
            opt.target = v;
        else if (ARG("--urls"))
            opt.urls = v;
        else if (ARG("--size"))
            opt.size = strtoull(v, NULL, 10);
        else if (ARG("--inflight"))
            opt.inflight = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--pipeline"))
            opt.pipeline = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--ws-conns"))
            opt.ws_conns = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--duration"))
            opt.duration = atof(v);
        else if (ARG("--warmup"))
            opt.warmup = atof(v);
        else if (ARG("--count"))
            opt.count = strtoull(v, NULL, 10);
        else if (ARG("--prefix"))
            opt.prefix = v;
        else if (ARG("--channels"))
            opt.channels = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--streams"))
            opt.streams = (unsigned)strtoul(v, NULL, 10);
        else if (ARG("--stream"))
            opt.stream = v;
        else if (ARG("--replicas"))
            opt.replicas = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--create-stream") == 0)
            opt.create_stream = true;
        else if (strcmp(a, "--progress") == 0)
            opt.progress = true;
        else if (strcmp(a, "--msg-id") == 0)
            opt.msg_id = true;
        else {
            usage();
            return strcmp(a, "--help") == 0 ? 0 : 2;
        }
#undef ARG
    }
    if (opt.streams == 0 || opt.streams > 16) {
        fprintf(stderr, "--streams must be 1..16\n");
        return 2;
    }
    if (opt.inflight == 0 || opt.size < 1 || opt.duration <= 0 || opt.duration > 600 || opt.warmup < 0 ||
        opt.warmup > 60) {
        fprintf(stderr, "bad options (inflight >= 1, size >= 1, 0 < duration <= 600, warmup <= 60)\n");
        return 2;
    }
    run_nonce = (unsigned)(now_ns() ^ ((uint64_t)getpid() << 16));
    if (strcmp(opt.target, "spool") == 0)
        return run_spool();
    if (strcmp(opt.target, "spool-ws") == 0)
        return run_spool_ws();
    if (strcmp(opt.target, "nats") == 0)
        return run_nats();
    usage();
    return 2;
}
