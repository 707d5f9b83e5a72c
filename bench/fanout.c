/*
 * fanout: one publisher, N WebSocket subscribers on one channel/subject; deliveries/s and
 * publish->deliver latency, against Spool (/v1/realtime) or NATS (its WebSocket listener).
 *
 *   fanout --target spool --port 18090 --subs 1000 --rate 100 --duration 5
 *   fanout --target nats  --port 14290 --pub-port 14222 --subs 1000 --rate 100
 *   fanout --target spool --port 18090 --subs 10000 --idle 3 --rss-pid PID   (memory per idle conn)
 *
 * Subscribers: one epoll thread, minimal RFC 6455 client (masked client frames, unmasked server
 * frames, pings answered). Spool: GET /v1/realtime, attach {"channel":C,"from":"live"}, ready on
 * "attached"; every {"type":"message"} frame is one delivery. NATS: CONNECT, SUB C 1, PING inside
 * WebSocket frames, ready on PONG; every MSG is one delivery.
 * Publisher: its own thread, open loop at --rate msg/s (absolute schedule). Spool: realtime
 * publish frames on one WebSocket connection (acks drained, not waited for). NATS: plain NATS
 * protocol over TCP (PUB), i.e. a core (non-JetStream) publish. The payload starts with
 * "T<monotonic ns of the send>", so every delivery gives a latency sample (same process, same clock).
 * Deliveries received in the measured window count (after --warmup); then a drain of up to 2 s
 * checks that every published message reached every subscriber ("missing").
 * Output ends with one line:
 *   RESULT target=.. subs=.. rate=.. offered=.. deliveries_per_s=.. p50_ms=.. p99_ms=.. ...
 * Everything is bounded (--duration, --warmup, connect timeout 60 s); only 127.0.0.1 by default.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ws_client.h"

static struct {
    const char *target, *host, *channel;
    int port, pub_port;
    unsigned subs, rate, size, max_connecting;
    double duration, warmup, idle;
    int rss_pid;
} opt = {.target = "spool", .host = "127.0.0.1", .channel = "fanout", .port = 18090, .pub_port = 14222,
         .subs = 1000, .rate = 100, .size = 100, .max_connecting = 200, .duration = 5, .warmup = 1};

static bool is_nats;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *m)
{
    fprintf(stderr, "fanout: %s (%s)\n", m, strerror(errno));
    exit(1);
}

/* ------------------------------------------------------------------ samples */

static uint32_t *lat_us; /* publish->deliver, microseconds */
static size_t lat_n, lat_cap;
static uint64_t t_measure, t_end;
static uint64_t n_window, n_total, n_closed, n_ready, n_failed, n_bad;
static _Atomic uint64_t n_published, n_pub_acks, n_pub_errors;
static _Atomic uint64_t pub_first_ns; /* send time of the first message */
static _Atomic int pub_stop;

static void delivered(uint64_t sent, uint64_t now)
{
    n_total++;
    if (now < t_measure || now > t_end || t_measure == 0)
        return;
    n_window++;
    if (lat_n == lat_cap) {
        size_t cap = lat_cap ? lat_cap * 2 : 1 << 20;
        uint32_t *v = realloc(lat_us, cap * sizeof *v);
        if (!v)
            die("out of memory for samples");
        lat_us = v;
        lat_cap = cap;
    }
    uint64_t us = now > sent ? (now - sent) / 1000 : 0;
    lat_us[lat_n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
    if (lat_n == 0)
        return 0;
    return (double)lat_us[(size_t)(p * (double)(lat_n - 1) + 0.5)] / 1e3;
}

/* ------------------------------------------------------------------ WebSocket client pieces */

static struct sockaddr_in addr_of(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, opt.host, &a.sin_addr) != 1) {
        fprintf(stderr, "fanout: bad --host %s\n", opt.host);
        exit(2);
    }
    return a;
}

/* A masked client frame (mask 0: XOR with zero keeps the payload, still a valid masked frame). */
static size_t ws_frame(uint8_t opcode, const char *p, size_t n, char *out)
{
    size_t h = ws_client_head(opcode, n, out);
    memcpy(out + h, p, n);
    return h + n;
}

static const char *upgrade_req(int port, const char *path)
{
    static char buf[512];
    snprintf(buf, sizeof buf,
             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path, opt.host, port);
    return buf;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ------------------------------------------------------------------ subscribers */

enum state { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_WAIT_READY, S_READY, S_CLOSING, S_DONE };

struct sub {
    int fd;
    enum state st;
    char *pend; /* unparsed bytes kept between reads */
    uint32_t pend_len, pend_cap;
    char *text; /* NATS: stream bytes not yet parsed; Spool: fragmented message */
    uint32_t text_len, text_cap;
};

static struct sub *subs;
static int ep;
static unsigned n_connecting, next_to_open;

static void buf_put(char **b, uint32_t *len, uint32_t *cap, const char *p, size_t n)
{
    if (*len + n > *cap) {
        uint32_t c = *cap ? *cap : 256;
        while (c < *len + n)
            c *= 2;
        char *nb = realloc(*b, c);
        if (!nb)
            die("out of memory");
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, p, n);
    *len += (uint32_t)n;
}

static void sub_send_text(struct sub *s, const char *p, size_t n)
{
    char frame[1024];
    size_t f = ws_frame(1, p, n, frame);
    if (write_all(s->fd, frame, f) != 0)
        s->st = S_DONE;
}

static void sub_close(struct sub *s, bool failed)
{
    if (s->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    if (s->st == S_CONNECTING || s->st == S_HANDSHAKE || s->st == S_WAIT_READY)
        n_connecting--;
    if (failed) {
        if (s->st == S_READY)
            n_closed++;
        else if (s->st != S_CLOSING)
            n_failed++;
    }
    s->fd = -1;
    s->st = S_DONE;
    free(s->pend);
    free(s->text);
    s->pend = s->text = NULL;
    s->pend_len = s->pend_cap = s->text_len = s->text_cap = 0;
}

static void open_more(void)
{
    struct sockaddr_in a = addr_of(opt.port);
    while (next_to_open < opt.subs && n_connecting < opt.max_connecting) {
        struct sub *s = &subs[next_to_open++];
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0)
            die("socket (raise ulimit -n)");
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        n_connecting++;
        s->st = S_CONNECTING;
        if (connect(s->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
            sub_close(s, true);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(s - subs)};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
}

static void on_ready(struct sub *s)
{
    s->st = S_READY;
    n_ready++;
    n_connecting--;
}

/* Spool: one complete text message. */
static void spool_message(struct sub *s, const char *p, size_t n, uint64_t now)
{
    if (s->st == S_READY) {
        const char *d = memmem(p, n, "\"data\":\"T", 9);
        if (d && memmem(p, n, "\"type\":\"message\"", 16)) {
            delivered(strtoull(d + 9, NULL, 10), now);
            return;
        }
    }
    if (memmem(p, n, "\"type\":\"connected\"", 18)) {
        char m[512];
        int k = snprintf(m, sizeof m, "{\"type\":\"attach\",\"channel\":\"%s\",\"from\":\"live\"}", opt.channel);
        sub_send_text(s, m, (size_t)k);
    } else if (memmem(p, n, "\"type\":\"attached\"", 17)) {
        if (s->st == S_WAIT_READY)
            on_ready(s);
    } else if (memmem(p, n, "\"type\":\"error\"", 14)) {
        if (n_bad++ < 3)
            fprintf(stderr, "fanout: server error: %.*s\n", (int)(n > 300 ? 300 : n), p);
    }
}

/* NATS: parse the protocol stream in s->text. */
static void nats_stream(struct sub *s, uint64_t now)
{
    char *p = s->text, *end = s->text + s->text_len;
    for (;;) {
        char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!nl)
            break;
        if (end - p >= 4 && memcmp(p, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n */
            char *sp = nl;
            while (sp > p && sp[-1] != ' ')
                sp--;
            size_t len = strtoul(sp, NULL, 10);
            char *pl = nl + 2;
            if ((size_t)(end - pl) < len + 2)
                break; /* payload not complete yet */
            if (len > 1 && pl[0] == 'T')
                delivered(strtoull(pl + 1, NULL, 10), now);
            p = pl + len + 2;
            continue;
        }
        if (nl - p == 4 && memcmp(p, "PING", 4) == 0)
            sub_send_text(s, "PONG\r\n", 6);
        else if (nl - p == 4 && memcmp(p, "PONG", 4) == 0) {
            if (s->st == S_WAIT_READY)
                on_ready(s);
        } else if (end - p >= 4 && memcmp(p, "INFO", 4) == 0) {
            char m[512];
            int k = snprintf(m, sizeof m,
                             "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nSUB %s 1\r\nPING\r\n",
                             opt.channel);
            sub_send_text(s, m, (size_t)k);
        } else if (end - p >= 4 && memcmp(p, "-ERR", 4) == 0) {
            if (n_bad++ < 3)
                fprintf(stderr, "fanout: nats: %.*s\n", (int)(nl - p), p);
        }
        p = nl + 2;
    }
    size_t rest = (size_t)(end - p);
    memmove(s->text, p, rest);
    s->text_len = (uint32_t)rest;
}

static char rbuf[1 << 20];

/* Parse WebSocket frames in b[0..n); returns bytes consumed. */
static size_t ws_parse(struct sub *s, char *b, size_t n, uint64_t now)
{
    size_t off = 0;
    struct ws_frame fr;
    /* Servers must not mask; a masked frame is tolerated by skipping its key (fr.head counts it;
     * the payload would be garbled). */
    while (ws_frame_parse(b + off, n - off, &fr)) {
        if (n - off < fr.head + fr.len)
            break;
        char *p = b + off + fr.head;
        uint64_t len = fr.len;
        uint8_t op = fr.op;
        bool fin = fr.fin;
        off += fr.head + fr.len;
        if (op == 0x9) { /* ping -> pong */
            char f[256];
            if (len <= 125) {
                size_t k = ws_frame(0xA, p, (size_t)len, f);
                if (write_all(s->fd, f, k) != 0)
                    s->st = S_DONE;
            }
        } else if (op == 0x8) {
            return SIZE_MAX; /* close */
        } else if (op == 0x1 || op == 0x2 || op == 0x0) {
            if (is_nats) {
                buf_put(&s->text, &s->text_len, &s->text_cap, p, (size_t)len);
                nats_stream(s, now);
            } else if (fin && s->text_len == 0) {
                spool_message(s, p, (size_t)len, now);
            } else {
                buf_put(&s->text, &s->text_len, &s->text_cap, p, (size_t)len);
                if (fin) {
                    spool_message(s, s->text, s->text_len, now);
                    s->text_len = 0;
                }
            }
        }
    }
    return off;
}

static void sub_event(struct sub *s, uint32_t events)
{
    if (s->st == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            sub_close(s, true);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        const char *r = upgrade_req(opt.port, is_nats ? "/" : "/v1/realtime");
        if (write_all(s->fd, r, strlen(r)) != 0) {
            sub_close(s, true);
            return;
        }
        s->st = S_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(s - subs)};
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    for (int rounds = 0; rounds < 4; rounds++) {
        size_t have = s->pend_len;
        if (have)
            memcpy(rbuf, s->pend, have);
        ssize_t r = read(s->fd, rbuf + have, sizeof rbuf - have);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            sub_close(s, s->st != S_CLOSING);
            return;
        }
        if (r < 0)
            return;
        uint64_t now = now_ns();
        size_t n = have + (size_t)r, off = 0;
        if (s->st == S_HANDSHAKE) {
            char *e = memmem(rbuf, n, "\r\n\r\n", 4);
            if (!e) {
                s->pend_len = 0;
                buf_put(&s->pend, &s->pend_len, &s->pend_cap, rbuf, n);
                continue;
            }
            if (n < 12 || memcmp(rbuf + 9, "101", 3) != 0) {
                if (n_bad++ < 3)
                    fprintf(stderr, "fanout: upgrade refused: %.*s\n", (int)(n > 200 ? 200 : n), rbuf);
                sub_close(s, true);
                return;
            }
            s->st = S_WAIT_READY;
            off = (size_t)(e + 4 - rbuf);
        }
        size_t used = ws_parse(s, rbuf + off, n - off, now);
        if (used == SIZE_MAX || s->st == S_DONE) {
            sub_close(s, s->st != S_CLOSING);
            return;
        }
        off += used;
        s->pend_len = 0;
        if (n > off)
            buf_put(&s->pend, &s->pend_len, &s->pend_cap, rbuf + off, n - off);
        else if (s->pend_cap > 4096) {
            free(s->pend);
            s->pend = NULL;
            s->pend_cap = 0;
        }
        if ((size_t)r < sizeof rbuf - have)
            return;
    }
}

static void loop_until(uint64_t deadline, bool (*done)(void))
{
    struct epoll_event evs[512];
    while (now_ns() < deadline && !(done && done())) {
        int ms = (int)((deadline - now_ns()) / 1000000) + 1;
        int k = epoll_wait(ep, evs, 512, ms > 50 ? 50 : ms);
        for (int i = 0; i < k; i++) {
            struct sub *s = &subs[evs[i].data.u32];
            if (s->fd >= 0)
                sub_event(s, evs[i].events);
        }
        if (next_to_open < opt.subs)
            open_more();
    }
}

static bool all_settled(void) { return n_ready + n_failed >= opt.subs; }
static bool all_closed(void)
{
    for (unsigned i = 0; i < opt.subs; i++)
        if (subs[i].fd >= 0)
            return false;
    return true;
}

/* ------------------------------------------------------------------ publisher thread */

static int pub_fd;

static void pub_drain(void)
{
    static char b[65536];
    for (;;) {
        ssize_t r = recv(pub_fd, b, sizeof b, MSG_DONTWAIT);
        if (r <= 0)
            return;
        /* Counting is approximate when a marker straddles two reads; acks are informational. */
        for (char *p = b, *e = b + r; (p = memmem(p, (size_t)(e - p), is_nats ? "PING\r\n" : "\"type\":\"ack\"", is_nats ? 6 : 12));
             p++) {
            if (is_nats)
                write_all(pub_fd, "PONG\r\n", 6);
            else
                n_pub_acks++;
        }
        for (char *p = b, *e = b + r; (p = memmem(p, (size_t)(e - p), is_nats ? "-ERR" : "\"type\":\"nack\"", is_nats ? 4 : 13)); p++)
            n_pub_errors++;
    }
}

static void pub_connect(void)
{
    struct sockaddr_in a = addr_of(is_nats ? opt.pub_port : opt.port);
    pub_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(pub_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (pub_fd < 0 || connect(pub_fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("publisher connect");
    char b[4096];
    size_t n = 0;
    if (is_nats) {
        const char *c = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n";
        write_all(pub_fd, c, strlen(c));
        return;
    }
    const char *r = upgrade_req(opt.port, "/v1/realtime");
    write_all(pub_fd, r, strlen(r));
    /* Read until the "connected" message arrived (handshake + first frame). */
    while (n < sizeof b - 1 && !memmem(b, n, "\"connected\"", 11)) {
        ssize_t k = read(pub_fd, b + n, sizeof b - 1 - n);
        if (k <= 0)
            die("publisher handshake");
        n += (size_t)k;
    }
    if (memcmp(b + 9, "101", 3) != 0) {
        fprintf(stderr, "fanout: publisher upgrade refused: %.*s\n", (int)n, b);
        exit(1);
    }
}

static void *publisher(void *arg)
{
    (void)arg;
    char payload[70000], msg[72000], frame[72100];
    uint64_t interval = 1000000000ull / opt.rate, next = now_ns();
    for (uint64_t i = 0; !pub_stop; i++) {
        struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (pub_stop)
            break;
        uint64_t t = now_ns();
        int k = snprintf(payload, sizeof payload, "T%" PRIu64 "-", t);
        while ((unsigned)k < opt.size && (size_t)k < sizeof payload - 1)
            payload[k++] = 'x';
        payload[k] = 0;
        size_t f;
        if (is_nats) {
            f = (size_t)snprintf(frame, sizeof frame, "PUB %s %d\r\n%s\r\n", opt.channel, k, payload);
        } else {
            int m = snprintf(msg, sizeof msg,
                             "{\"type\":\"publish\",\"msgSerial\":%" PRIu64 ",\"channel\":\"%s\",\"messages\":[{\"data\":\"%s\"}]}",
                             i, opt.channel, payload);
            f = ws_frame(1, msg, (size_t)m, frame);
        }
        if (write_all(pub_fd, frame, f) != 0) {
            n_pub_errors++;
            break;
        }
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&pub_first_ns, &zero, t);
        n_published++;
        pub_drain();
        next += interval;
    }
    return NULL;
}

/* ------------------------------------------------------------------ main */

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: fanout --target spool|nats [--host 127.0.0.1] --port WS_PORT [--pub-port NATS_TCP_PORT]\n"
            "              [--subs N] [--rate MSG_PER_S] [--size BYTES] [--duration S] [--warmup S]\n"
            "              [--channel NAME] [--max-connecting N] [--idle S --rss-pid PID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--target"))
            opt.target = v;
        else if (!strcmp(a, "--host"))
            opt.host = v;
        else if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--pub-port"))
            opt.pub_port = atoi(v);
        else if (!strcmp(a, "--subs"))
            opt.subs = (unsigned)atoi(v);
        else if (!strcmp(a, "--rate"))
            opt.rate = (unsigned)atoi(v);
        else if (!strcmp(a, "--size"))
            opt.size = (unsigned)atoi(v);
        else if (!strcmp(a, "--duration"))
            opt.duration = atof(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atof(v);
        else if (!strcmp(a, "--channel"))
            opt.channel = v;
        else if (!strcmp(a, "--max-connecting"))
            opt.max_connecting = (unsigned)atoi(v);
        else if (!strcmp(a, "--idle"))
            opt.idle = atof(v);
        else if (!strcmp(a, "--rss-pid"))
            opt.rss_pid = atoi(v);
        else
            usage();
        i++;
    }
    is_nats = !strcmp(opt.target, "nats");
    if ((!is_nats && strcmp(opt.target, "spool")) || opt.subs == 0 || opt.subs > 100000 || opt.rate == 0 ||
        opt.rate > 1000000 || opt.size < 24 || opt.size > 60000 || opt.duration <= 0 || opt.duration > 600 ||
        opt.warmup < 0 || opt.warmup > 60 || opt.idle < 0 || opt.idle > 600 || strlen(opt.channel) > 200)
        usage();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < opt.subs + 64) {
        rl.rlim_cur = rl.rlim_max < opt.subs + 64 ? rl.rlim_max : opt.subs + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    subs = calloc(opt.subs, sizeof *subs);
    if (!subs)
        die("calloc");
    for (unsigned i = 0; i < opt.subs; i++)
        subs[i].fd = -1;
    ep = epoll_create1(0);
    long rss0 = opt.rss_pid ? rss_kb(opt.rss_pid) : -1;

    /* Connect and attach/subscribe everyone (bounded at 60 s). */
    uint64_t t0 = now_ns();
    open_more();
    loop_until(t0 + 60000000000ull, all_settled);
    double connect_s = (double)(now_ns() - t0) / 1e9;
    fprintf(stderr, "fanout: %s: %" PRIu64 " of %u subscribers ready in %.2f s (%" PRIu64 " failed)\n", opt.target,
            n_ready, opt.subs, connect_s, n_failed);
    if (n_ready == 0) {
        printf("RESULT target=%s subs=%u ready=0 error=no_subscribers\n", opt.target, opt.subs);
        return 1;
    }

    if (opt.idle > 0) {
        /* Memory per idle attached connection: let the server settle, then read its RSS. */
        loop_until(now_ns() + (uint64_t)(opt.idle * 1e9), NULL);
        long rss1 = opt.rss_pid ? rss_kb(opt.rss_pid) : -1;
        printf("RESULT target=%s mode=idle subs=%u ready=%" PRIu64 " closed=%" PRIu64 " rss_before_kb=%ld rss_after_kb=%ld "
               "bytes_per_conn=%.0f connect_s=%.2f\n",
               opt.target, opt.subs, n_ready, n_closed, rss0, rss1,
               n_ready && rss0 > 0 && rss1 > 0 ? (double)(rss1 - rss0) * 1024.0 / (double)n_ready : 0.0, connect_s);
    } else {
        pub_connect();
        /* Let the subscriptions settle on the server before publishing (NATS PONG / Spool attached
           already confirm them; this is only slack). */
        loop_until(now_ns() + 200000000ull, NULL);
        uint64_t ts = now_ns();
        t_measure = ts + (uint64_t)(opt.warmup * 1e9);
        t_end = t_measure + (uint64_t)(opt.duration * 1e9);
        double c0 = cpu_s();
        pthread_t th;
        if (pthread_create(&th, NULL, publisher, NULL) != 0)
            die("pthread_create");
        loop_until(t_end, NULL);
        pub_stop = 1;
        pthread_join(th, NULL);
        double c1 = cpu_s();
        /* Drain: every published message should reach every live subscriber. */
        uint64_t expect;
        uint64_t dl = now_ns() + 2000000000ull;
        while (now_ns() < dl) {
            expect = n_published * (n_ready - n_closed);
            if (n_total >= expect)
                break;
            loop_until(now_ns() + 50000000ull, NULL);
            pub_drain();
        }
        expect = n_published * (n_ready - n_closed);
        uint64_t missing = expect > n_total ? expect - n_total : 0;
        qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
        double secs = opt.duration;
        printf("RESULT target=%s subs=%u ready=%" PRIu64 " rate=%u size=%u offered=%" PRIu64 " deliveries_per_s=%.0f "
               "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f published=%" PRIu64 " pub_acks=%" PRIu64
               " pub_errors=%" PRIu64 " missing=%" PRIu64 " closed=%" PRIu64 " failed=%" PRIu64
               " client_cpu=%.2f connect_s=%.2f\n",
               opt.target, opt.subs, n_ready, opt.rate, opt.size, (uint64_t)opt.rate * n_ready,
               (double)n_window / secs, pct_ms(0.50), pct_ms(0.90), pct_ms(0.99), pct_ms(1.0), (uint64_t)n_published,
               (uint64_t)n_pub_acks, (uint64_t)n_pub_errors, missing, n_closed, n_failed,
               (c1 - c0) / (secs + opt.warmup), connect_s);
    }
    fflush(stdout);

    /* Close politely: close frame, then wait (bounded) for the server to close. */
    char cf[16];
    size_t k = ws_frame(0x8, "\x03\xe8", 2, cf);
    for (unsigned i = 0; i < opt.subs; i++)
        if (subs[i].fd >= 0) {
            if (write(subs[i].fd, cf, k) < 0) {
            }
            subs[i].st = S_CLOSING;
        }
    loop_until(now_ns() + 3000000000ull, all_closed);
    for (unsigned i = 0; i < opt.subs; i++)
        if (subs[i].fd >= 0)
            sub_close(&subs[i], false);
    if (pub_fd > 0)
        close(pub_fd);
    return 0;
}
