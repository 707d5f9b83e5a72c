/*
 * durable_streams: Durable Streams protocol load generator (HTTP/1.1, plain C, epoll/poll).
 * Drives any server speaking the protocol: a Spool cluster (/v1/stream/...) or the reference
 * server @durable-streams/server (its streams live at the root: --base "").
 *
 *   durable_streams --mode rtt  --write-url 127.0.0.1:18191 --read-url 127.0.0.1:18192 \
 *                   --base /v1/stream --count 2000
 *   durable_streams --mode tput --urls 127.0.0.1:18191,127.0.0.1:18192 --base /v1/stream \
 *                   --conns 64 --streams 8 --duration 5
 *
 * rtt:  one reader long-polls (GET ?offset=X&live=long-poll) one stream while one writer appends
 *       --size byte messages one at a time (POST). For each message: the reader's long-poll is
 *       (re)issued, --gap-us later the POST starts (t0); latency = reader has the whole 200
 *       response carrying the message - t0. Also reports the POST's own ack latency. The next
 *       message starts once both the ack and the read are in. --warmup-count messages first are
 *       not sampled. Before the first message the reader reads the new stream until it is found
 *       (a node other than the creating one may answer 404 for a moment: counted, reported as
 *       not_found_after_create).
 * tput: --conns keep-alive connections (round-robin over --urls), each appending --size bytes to
 *       stream (conn % --streams), one request at a time (closed loop). Counts 2xx answers to
 *       requests sent after the warm-up and answered before the end of the window.
 *
 * Output ends with one line:
 *   RESULT mode=.. size=.. n=.. errors=.. [msgs_per_s=..] p50_ms=.. p99_ms=.. max_ms=.. ...
 * All loops are bounded (--count, --duration, --timeout); traffic goes only where the urls say.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

#include "http_client.h"

#define MAX_URLS 16
#define MAX_CONNS 4096

static struct {
    const char *mode;
    const char *urls;
    const char *write_url;
    const char *read_url;
    const char *base;
    const char *prefix;
    const char *stream;
    size_t size;
    unsigned conns;
    unsigned streams;
    unsigned count;
    unsigned warmup_count;
    unsigned gap_us;
    double duration;
    double warmup;
    double timeout;
} opt = {
    .mode = "rtt",
    .urls = "127.0.0.1:8080",
    .base = "/v1/stream",
    .prefix = "dsbench",
    .size = 100,
    .conns = 64,
    .streams = 8,
    .count = 2000,
    .warmup_count = 100,
    .gap_us = 1000,
    .duration = 5,
    .warmup = 1,
    .timeout = 10,
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ samples */

struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void sample_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            return;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(struct samples *s, double p)
{
    if (s->n == 0) {
        return 0;
    }
    size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1e6;
}

static void samples_sort(struct samples *s)
{
    if (s->n) {
        qsort(s->v, s->n, sizeof *s->v, cmp_u64);
    }
}

/* Addresses, connections, response parsing: bench/http_client.h. */

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                struct pollfd pf = {.fd = fd, .events = POLLOUT};
                poll(&pf, 1, 1000);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Blocking request/response on a (non-blocking) connection, bounded by --timeout. */
static int roundtrip(struct http_in *c, const char *req, size_t len, struct http_resp *r)
{
    if (send_all(c->fd, req, len) != 0) {
        return -1;
    }
    uint64_t deadline = now_ns() + (uint64_t)(opt.timeout * 1e9);
    for (;;) {
        long n = http_resp_parse(c->in, c->in_len, r);
        if (n < 0) {
            return -1;
        }
        if (n > 0) {
            http_in_consume(c, (size_t)n);
            return 0;
        }
        uint64_t t = now_ns();
        if (t >= deadline) {
            return -1;
        }
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        poll(&pf, 1, (int)((deadline - t) / 1000000) + 1);
        if (http_in_read(c) != 0) {
            return -1;
        }
    }
}

static char *payload;
static char stream_names[1024][96];

static size_t fmt_post(char *buf, size_t cap, const char *host, const char *stream)
{
    int n = snprintf(buf, cap,
                     "POST %s/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     opt.base, stream, host, opt.size);
    if (n < 0 || (size_t)n + opt.size > cap) {
        return 0;
    }
    memcpy(buf + n, payload, opt.size);
    return (size_t)n + opt.size;
}

/* PUT the stream; fills its tail offset. */
static int create_stream(const struct sockaddr_in *a, const char *host, const char *stream, char *tail, size_t tail_cap)
{
    struct http_in c = {.fd = bench_tcp_connect(a)};
    if (c.fd < 0) {
        fprintf(stderr, "connect %s: %s\n", host, strerror(errno));
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "PUT %s/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: 0\r\n\r\n",
                     opt.base, stream, host);
    struct http_resp r;
    int rc = roundtrip(&c, req, (size_t)n, &r);
    close(c.fd);
    free(c.in);
    if (rc != 0 || (r.status != 201 && r.status != 200)) {
        fprintf(stderr, "PUT %s/%s on %s: %s %d\n", opt.base, stream, host, rc ? "failed" : "status", r.status);
        return -1;
    }
    if (tail) {
        snprintf(tail, tail_cap, "%s", r.next_offset[0] ? r.next_offset : "-1");
    }
    return 0;
}

/* ------------------------------------------------------------------ rtt */

static int run_rtt(void)
{
    struct sockaddr_in wa, ra;
    const char *wu = opt.write_url ? opt.write_url : opt.urls;
    const char *ru = opt.read_url ? opt.read_url : wu;
    if (bench_parse_hostport(wu, &wa) != 0 || bench_parse_hostport(ru, &ra) != 0) {
        fprintf(stderr, "bad --write-url/--read-url\n");
        return 2;
    }
    const char *stream = opt.stream ? opt.stream : stream_names[0];
    char offset[128];
    if (create_stream(&wa, wu, stream, offset, sizeof offset) != 0) {
        return 1;
    }
    struct http_in w = {.fd = bench_tcp_connect(&wa)};
    struct http_in rd = {.fd = bench_tcp_connect(&ra)};
    if (w.fd < 0 || rd.fd < 0) {
        fprintf(stderr, "connect: %s\n", strerror(errno));
        return 1;
    }
    static char post[65536 + 1024];
    size_t post_len = fmt_post(post, sizeof post, wu, stream);
    if (!post_len) {
        fprintf(stderr, "--size too large\n");
        return 2;
    }
    /* Wait until the reader's node knows the stream: on Spool a GET on another node right after
     * the PUT's 201 can answer 404 for a moment. Counted (not_found_after_create) and reported. */
    uint64_t not_found = 0;
    for (unsigned k = 0;; k++) {
        char get[512];
        int gl = snprintf(get, sizeof get, "GET %s/%s?offset=%s HTTP/1.1\r\nHost: %s\r\n\r\n", opt.base, stream,
                          offset, ru);
        struct http_resp r;
        if (roundtrip(&rd, get, (size_t)gl, &r) != 0) {
            fprintf(stderr, "reader: first read failed\n");
            return 1;
        }
        if (r.status == 200) {
            break;
        }
        if (r.status != 404 || k >= 5000) {
            fprintf(stderr, "reader: first read: status %d after %u tries\n", r.status, k + 1);
            return 1;
        }
        not_found++;
        struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&ms, NULL);
    }
    if (not_found) {
        fprintf(stderr, "reader: stream answered 404 for %" PRIu64 " reads (about %" PRIu64 " ms) after its 201\n",
                not_found, not_found);
    }
    struct samples rtt = {0}, ack = {0};
    uint64_t errors = 0, timeouts = 0, done = 0;
    char cursor[64] = "";
    uint64_t t_begin = now_ns();
    uint64_t hard_end = t_begin + (uint64_t)(opt.timeout * 1e9) * 10 + (uint64_t)opt.count * 50000000u;
    unsigned total = opt.count + opt.warmup_count;
    for (unsigned i = 0; i < total && now_ns() < hard_end; i++) {
        char get[512];
        int gl = snprintf(get, sizeof get, "GET %s/%s?offset=%s&live=long-poll%s%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                          opt.base, stream, offset, cursor[0] ? "&cursor=" : "", cursor, ru);
        if (send_all(rd.fd, get, (size_t)gl) != 0) {
            fprintf(stderr, "reader send failed\n");
            return 1;
        }
        /* Let the long-poll reach the server and park before the append. */
        struct timespec gap = {.tv_sec = 0, .tv_nsec = (long)opt.gap_us * 1000};
        nanosleep(&gap, NULL);
        uint64_t t0 = now_ns();
        if (send_all(w.fd, post, post_len) != 0) {
            fprintf(stderr, "writer send failed\n");
            return 1;
        }
        bool acked = false, got = false;
        uint64_t t_ack = 0, t_got = 0, deadline = t0 + (uint64_t)(opt.timeout * 1e9);
        while (!(acked && got)) {
            struct http_resp r;
            long n;
            if (!acked && (n = http_resp_parse(w.in, w.in_len, &r)) != 0) {
                if (n < 0) {
                    fprintf(stderr, "writer: bad response\n");
                    return 1;
                }
                http_in_consume(&w, (size_t)n);
                acked = true;
                t_ack = now_ns();
                if (r.status < 200 || r.status > 299) {
                    errors++;
                    if (errors < 5) {
                        fprintf(stderr, "append: status %d\n", r.status);
                    }
                }
                continue;
            }
            if (!got && (n = http_resp_parse(rd.in, rd.in_len, &r)) != 0) {
                if (n < 0) {
                    fprintf(stderr, "reader: bad response\n");
                    return 1;
                }
                http_in_consume(&rd, (size_t)n);
                if (r.cursor[0]) {
                    snprintf(cursor, sizeof cursor, "%s", r.cursor);
                }
                if (r.next_offset[0]) {
                    snprintf(offset, sizeof offset, "%s", r.next_offset);
                }
                if (r.status == 200 && r.body_len > 0) {
                    got = true;
                    t_got = now_ns();
                } else if (r.status == 204 || (r.status == 200 && r.body_len == 0)) {
                    timeouts++; /* long-poll timed out before the data: ask again */
                    gl = snprintf(get, sizeof get, "GET %s/%s?offset=%s&live=long-poll%s%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                  opt.base, stream, offset, cursor[0] ? "&cursor=" : "", cursor, ru);
                    if (send_all(rd.fd, get, (size_t)gl) != 0) {
                        return 1;
                    }
                } else {
                    fprintf(stderr, "read: status %d\n", r.status);
                    return 1;
                }
                continue;
            }
            uint64_t t = now_ns();
            if (t >= deadline) {
                fprintf(stderr, "message %u: no %s within %.0f s\n", i, acked ? "read" : "ack", opt.timeout);
                return 1;
            }
            struct pollfd pf[2] = {{.fd = w.fd, .events = acked ? 0 : POLLIN}, {.fd = rd.fd, .events = got ? 0 : POLLIN}};
            poll(pf, 2, (int)((deadline - t) / 1000000) + 1);
            if ((pf[0].revents && http_in_read(&w) != 0) || (pf[1].revents && http_in_read(&rd) != 0)) {
                fprintf(stderr, "connection closed\n");
                return 1;
            }
        }
        if (i >= opt.warmup_count) {
            sample_add(&rtt, t_got - t0);
            sample_add(&ack, t_ack - t0);
            done++;
        }
    }
    double secs = (double)(now_ns() - t_begin) / 1e9;
    samples_sort(&rtt);
    samples_sort(&ack);
    printf("RESULT mode=rtt size=%zu n=%" PRIu64 " errors=%" PRIu64 " timeouts=%" PRIu64 " not_found_after_create=%" PRIu64
           " secs=%.2f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f ack_p50_ms=%.3f ack_p99_ms=%.3f\n",
           opt.size, done, errors, timeouts, not_found, secs, pct_ms(&rtt, 0.5), pct_ms(&rtt, 0.99), pct_ms(&rtt, 1.0),
           pct_ms(&ack, 0.5), pct_ms(&ack, 0.99));
    close(w.fd);
    close(rd.fd);
    return done == opt.count ? 0 : 1;
}

/* ------------------------------------------------------------------ tput */

struct tconn {
    struct http_in h;
    unsigned addr;
    const char *host;
    const char *stream;
    uint64_t sent_at;
    bool busy;
};

static struct sockaddr_in addrs[MAX_URLS];
static char hosts[MAX_URLS][64];

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static int run_tput(void)
{
    int na = bench_parse_urls(opt.urls, addrs, MAX_URLS);
    if (na <= 0) {
        return 2;
    }
    {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", opt.urls);
        int k = 0;
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && k < na; t = strtok_r(NULL, ",", &save)) {
            snprintf(hosts[k++], sizeof hosts[0], "%s", t);
        }
    }
    for (unsigned s = 0; s < opt.streams; s++) {
        if (create_stream(&addrs[s % (unsigned)na], hosts[s % (unsigned)na], stream_names[s], NULL, 0) != 0) {
            return 1;
        }
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct tconn *cs = calloc(opt.conns, sizeof *cs);
    if (ep < 0 || !cs) {
        return 1;
    }
    for (unsigned i = 0; i < opt.conns; i++) {
        struct tconn *c = &cs[i];
        c->addr = i % (unsigned)na;
        c->host = hosts[c->addr];
        c->stream = stream_names[i % opt.streams];
        c->h.fd = bench_tcp_connect(&addrs[c->addr]);
        if (c->h.fd < 0) {
            fprintf(stderr, "connect %s: %s\n", c->host, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->h.fd, &ev);
    }
    /* One request buffer per (host, stream). */
    static char post[65536 + 1024];
    struct samples lat = {0};
    uint64_t n_ok = 0, errors = 0, reconnects = 0;
    double cpu0 = cpu_seconds();
    uint64_t t_start = now_ns();
    uint64_t t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    uint64_t t_drain = t_end + (uint64_t)(opt.timeout * 1e9);
    for (unsigned i = 0; i < opt.conns; i++) {
        struct tconn *c = &cs[i];
        size_t len = fmt_post(post, sizeof post, c->host, c->stream);
        c->sent_at = now_ns();
        if (!len || send_all(c->h.fd, post, len) != 0) {
            fprintf(stderr, "send failed: %s\n", strerror(errno));
            return 1;
        }
        c->busy = true;
    }
    unsigned busy = opt.conns;
    struct epoll_event evs[256];
    while (busy > 0) {
        uint64_t t = now_ns();
        if (t >= t_drain) {
            break;
        }
        int n = epoll_wait(ep, evs, 256, 10);
        for (int k = 0; k < n; k++) {
            struct tconn *c = evs[k].data.ptr;
            int rc = http_in_read(&c->h);
            for (;;) {
                struct http_resp r;
                long used = http_resp_parse(c->h.in, c->h.in_len, &r);
                if (used == 0) {
                    break;
                }
                if (used < 0) {
                    rc = -1;
                    break;
                }
                http_in_consume(&c->h, (size_t)used);
                uint64_t tn = now_ns();
                bool ok = r.status >= 200 && r.status <= 299;
                if (c->sent_at >= t_measure && tn <= t_end) {
                    if (ok) {
                        n_ok++;
                        sample_add(&lat, tn - c->sent_at);
                    } else {
                        errors++;
                    }
                }
                if (!ok && errors < 5) {
                    fprintf(stderr, "append: status %d\n", r.status);
                }
                c->busy = false;
                busy--;
                if (tn < t_end) {
                    size_t len = fmt_post(post, sizeof post, c->host, c->stream);
                    c->sent_at = tn;
                    if (send_all(c->h.fd, post, len) != 0) {
                        rc = -1;
                        break;
                    }
                    c->busy = true;
                    busy++;
                }
            }
            if (rc != 0) { /* dropped: reconnect and go on (counted as an error in the window) */
                if (now_ns() <= t_end) {
                    errors++;
                }
                reconnects++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->h.fd, NULL);
                close(c->h.fd);
                c->h.in_len = 0;
                if (c->busy) {
                    busy--;
                    c->busy = false;
                }
                if (reconnects > 1000 || now_ns() >= t_end) {
                    continue;
                }
                c->h.fd = bench_tcp_connect(&addrs[c->addr]);
                if (c->h.fd < 0) {
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->h.fd, &ev);
                size_t len = fmt_post(post, sizeof post, c->host, c->stream);
                c->sent_at = now_ns();
                if (send_all(c->h.fd, post, len) == 0) {
                    c->busy = true;
                    busy++;
                }
            }
        }
    }
    double cpu = cpu_seconds() - cpu0;
    samples_sort(&lat);
    printf("RESULT mode=tput size=%zu conns=%u streams=%u n=%" PRIu64 " errors=%" PRIu64 " secs=%.2f msgs_per_s=%.0f"
           " p50_ms=%.3f p99_ms=%.3f max_ms=%.3f client_cpu_s=%.2f\n",
           opt.size, opt.conns, opt.streams, n_ok, errors, opt.duration, (double)n_ok / opt.duration,
           pct_ms(&lat, 0.5), pct_ms(&lat, 0.99), pct_ms(&lat, 1.0), cpu);
    for (unsigned i = 0; i < opt.conns; i++) {
        if (cs[i].h.fd >= 0) {
            close(cs[i].h.fd);
        }
        free(cs[i].h.in);
    }
    free(cs);
    close(ep);
    return n_ok > 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: durable_streams --mode rtt|tput [options]\n"
            "  --urls H:P[,H:P..]   servers (tput: round-robin; rtt: default for both ends)\n"
            "  --write-url H:P      rtt: where the writer appends\n"
            "  --read-url H:P       rtt: where the reader long-polls\n"
            "  --base PATH          stream path prefix (Spool: /v1/stream; reference server: \"\")\n"
            "  --prefix NAME        stream name prefix (a random suffix is added)\n"
            "  --stream NAME        rtt: use exactly this (new) stream name\n"
            "  --size N             message bytes (100)\n"
            "  --count N            rtt: measured messages (2000); --warmup-count N (100) first\n"
            "  --gap-us N           rtt: pause between issuing the long-poll and the append (1000)\n"
            "  --conns N            tput: concurrent writers, one connection each (64)\n"
            "  --streams N          tput: streams written (8)\n"
            "  --duration S         tput: measured seconds (5); --warmup S (1)\n"
            "  --timeout S          per-request bound (10)\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--mode") == 0) {
            opt.mode = v;
        } else if (strcmp(a, "--urls") == 0) {
            opt.urls = v;
        } else if (strcmp(a, "--write-url") == 0) {
            opt.write_url = v;
        } else if (strcmp(a, "--read-url") == 0) {
            opt.read_url = v;
        } else if (strcmp(a, "--base") == 0) {
            opt.base = v;
        } else if (strcmp(a, "--prefix") == 0) {
            opt.prefix = v;
        } else if (strcmp(a, "--stream") == 0) {
            opt.stream = v;
        } else if (strcmp(a, "--size") == 0) {
            opt.size = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--count") == 0) {
            opt.count = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--warmup-count") == 0) {
            opt.warmup_count = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--gap-us") == 0) {
            opt.gap_us = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--conns") == 0) {
            opt.conns = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--streams") == 0) {
            opt.streams = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--duration") == 0) {
            opt.duration = strtod(v, NULL);
        } else if (strcmp(a, "--warmup") == 0) {
            opt.warmup = strtod(v, NULL);
        } else if (strcmp(a, "--timeout") == 0) {
            opt.timeout = strtod(v, NULL);
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (opt.size == 0 || opt.size > 65536 || opt.conns == 0 || opt.conns > MAX_CONNS || opt.streams == 0 ||
        opt.streams > 1024 || opt.count == 0 || opt.count > 10000000 || opt.gap_us > 1000000 ||
        opt.duration <= 0 || opt.duration > 600 || opt.warmup < 0 || opt.warmup > 60 || opt.timeout <= 0 ||
        opt.timeout > 120) {
        fprintf(stderr, "option out of range\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    payload = malloc(opt.size);
    if (!payload) {
        return 1;
    }
    for (size_t i = 0; i < opt.size; i++) {
        payload[i] = (char)('a' + i % 26);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned nonce = (unsigned)(ts.tv_nsec ^ (ts.tv_sec << 8) ^ getpid());
    for (unsigned s = 0; s < 1024; s++) {
        snprintf(stream_names[s], sizeof stream_names[s], "%s-%08x-%u", opt.prefix, nonce, s);
    }
    if (strcmp(opt.mode, "rtt") == 0) {
        return run_rtt();
    }
    if (strcmp(opt.mode, "tput") == 0) {
        return run_tput();
    }
    usage();
    return 2;
}
