/*
 * appends: token streaming load (docs/ai-semantics.md). --streams concurrent responses, each a
 * message created once and then grown by one append every 1/--rate s over its own HTTP/1.1
 * keep-alive connection (one request in flight per stream: an append due while the previous one
 * is unacknowledged waits and its latency includes the wait, so a server that falls behind shows
 * it). Open loop, one libuv thread.
 *
 *   appends --url 127.0.0.1:8080 --streams 1000 --rate 50 --duration 10 --warmup 2 [--batch K]
 *
 * --batch K: the agent sends its tokens K at a time (one POST with an array of K appends every
 * K/rate s), as an agent that flushes what its model produced every few tens of ms would.
 *
 * Output ends with one line:
 *   RESULT streams=.. rate=.. offered_per_s=.. acked_per_s=.. errors=.. p50_ms=.. p99_ms=..
 *          appends_per_entry=..
 * appends_per_entry is the group-commit batching seen by the server: the increase of
 * spool_raft_proposed_publishes_total over spool_raft_proposals_total on that node's /metrics
 * during the measured window (single-node or the leader of every shard), times --batch.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr */
#endif
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

static struct {
    char host[64];
    int port;
    unsigned streams, rate, token, batch;
    double duration, warmup;
} opt = {"127.0.0.1", 8080, 1000, 50, 4, 1, 10, 2};

struct stream {
    uv_tcp_t tcp;
    uv_timer_t tick;
    unsigned id;
    uint64_t msg;      /* serial of the message; 0 while creating */
    bool busy;         /* a request in flight */
    unsigned due;      /* appends due and not yet sent */
    uint64_t sent_at;  /* ns: when the in-flight append became due */
    uint64_t due_at[64];
    char in[8192];
    size_t in_len;
};

static uv_loop_t *loop;
static struct stream *streams;
static uint64_t start_ns, measure_ns, end_ns;
static uint64_t acked, errors, offered;
static double *lat;
static size_t n_lat, cap_lat;
static bool stopping;

static void send_next(struct stream *s);

static void on_write(uv_write_t *w, int status)
{
    if (status < 0)
        errors++;
    free(w->data);
    free(w);
}

static void post(struct stream *s, const char *body)
{
    char *buf = malloc(512 + strlen(body) + 1);
    int n = sprintf(buf,
                    "POST /v1/channels/bench-appends-%u/messages HTTP/1.1\r\nHost: x\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                    s->id, strlen(body), body);
    uv_write_t *w = malloc(sizeof *w);
    w->data = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)n);
    s->busy = true;
    if (uv_write(w, (uv_stream_t *)&s->tcp, &b, 1, on_write) != 0) {
        errors++;
        free(buf);
        free(w);
    }
}

static void record_latency(double ms)
{
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[n_lat++] = ms;
}

/* One complete response: status and body. */
static void on_response(struct stream *s, int status, const char *body)
{
    uint64_t now = uv_hrtime();
    s->busy = false;
    if (status != 201) {
        errors++;
        if (errors < 5)
            fprintf(stderr, "stream %u: HTTP %d %s\n", s->id, status, body);
    } else if (s->msg == 0) {
        const char *p = strstr(body, "\"serials\":[");
        s->msg = p ? strtoull(p + 11, NULL, 10) : 0;
    } else if (s->sent_at >= measure_ns && now <= end_ns) {
        acked += opt.batch;
        record_latency((double)(now - s->sent_at) / 1e6);
    }
    send_next(s);
}

static void parse(struct stream *s)
{
    for (;;) {
        s->in[s->in_len] = '\0';
        char *hdr_end = strstr(s->in, "\r\n\r\n");
        if (hdr_end == NULL)
            return;
        int status = atoi(s->in + 9);
        const char *cl = strcasestr(s->in, "content-length:");
        size_t len = cl && cl < hdr_end ? strtoul(cl + 15, NULL, 10) : 0;
        size_t total = (size_t)(hdr_end + 4 - s->in) + len;
        if (s->in_len < total)
            return;
        char body[4096];
        size_t bl = len < sizeof body - 1 ? len : sizeof body - 1;
        memcpy(body, hdr_end + 4, bl);
        body[bl] = '\0';
        memmove(s->in, s->in + total, s->in_len - total);
        s->in_len -= total;
        on_response(s, status, body);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct stream *s = h->data;
    (void)suggested;
    *buf = uv_buf_init(s->in + s->in_len, (unsigned)(sizeof s->in - 1 - s->in_len));
}

static void on_read(uv_stream_t *t, ssize_t n, const uv_buf_t *buf)
{
    struct stream *s = t->data;
    (void)buf;
    if (n < 0) {
        if (!stopping) {
            errors++;
            fprintf(stderr, "stream %u: connection lost: %s\n", s->id, uv_strerror((int)n));
        }
        uv_read_stop(t);
        return;
    }
    s->in_len += (size_t)n;
    parse(s);
}

static void send_next(struct stream *s)
{
    if (s->busy || s->msg == 0 || s->due == 0 || stopping)
        return;
    s->sent_at = s->due_at[0];
    memmove(s->due_at, s->due_at + 1, (s->due - 1) * sizeof s->due_at[0]);
    s->due--;
    char body[16384], tok[64];
    unsigned n = opt.token < sizeof tok - 1 ? opt.token : sizeof tok - 1;
    memset(tok, 'a' + (char)(s->id % 26), n);
    tok[n] = '\0';
    size_t o = 0;
    if (opt.batch > 1)
        body[o++] = '[';
    for (unsigned k = 0; k < opt.batch && o + 256 < sizeof body; k++)
        o += (size_t)snprintf(body + o, sizeof body - o,
                              "%s{\"clientId\":\"agent-%u\",\"action\":\"append\",\"refSerial\":%" PRIu64
                              ",\"data\":\"%s\"}",
                              k ? "," : "", s->id, s->msg, tok);
    if (opt.batch > 1)
        body[o++] = ']';
    body[o] = '\0';
    post(s, body);
}

static void on_tick(uv_timer_t *t)
{
    struct stream *s = t->data;
    uint64_t now = uv_hrtime();
    if (now >= measure_ns && now <= end_ns)
        offered += opt.batch;
    if (s->due < sizeof s->due_at / sizeof s->due_at[0])
        s->due_at[s->due++] = now;
    else
        errors++; /* more than 64 appends behind: the server is not keeping up */
    send_next(s);
}

static void on_connect(uv_connect_t *c, int status)
{
    struct stream *s = c->data;
    free(c);
    if (status < 0) {
        errors++;
        fprintf(stderr, "stream %u: connect: %s\n", s->id, uv_strerror(status));
        return;
    }
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    char body[128];
    snprintf(body, sizeof body, "{\"clientId\":\"agent-%u\",\"data\":\"\"}", s->id);
    post(s, body);
    uint64_t period = 1000 * opt.batch / opt.rate ? 1000 * opt.batch / opt.rate : 1;
    uv_timer_start(&s->tick, on_tick, (s->id * 7919u) % period + 1, period);
}

static void on_stop(uv_timer_t *t)
{
    stopping = true;
    for (unsigned i = 0; i < opt.streams; i++) {
        uv_timer_stop(&streams[i].tick);
        uv_close((uv_handle_t *)&streams[i].tick, NULL);
        uv_close((uv_handle_t *)&streams[i].tcp, NULL);
    }
    uv_close((uv_handle_t *)t, NULL);
}

/* Sum of every sample of a metric family on GET /metrics (blocking, before and after). */
static double metric_sum(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "curl -s --max-time 5 http://%s:%d/metrics", opt.host, opt.port);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    char line[1024];
    double sum = 0;
    size_t nl = strlen(name);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, name, nl) == 0 && (line[nl] == '{' || line[nl] == ' '))
            sum += strtod(strrchr(line, ' ') + 1, NULL);
    pclose(f);
    return sum;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0) {
            const char *c = strrchr(argv[i + 1], ':');
            if (c == NULL || (size_t)(c - argv[i + 1]) >= sizeof opt.host) return 2;
            memcpy(opt.host, argv[i + 1], (size_t)(c - argv[i + 1]));
            opt.host[c - argv[i + 1]] = '\0';
            opt.port = atoi(c + 1);
        } else if (strcmp(argv[i], "--streams") == 0) opt.streams = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0) opt.rate = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--token-bytes") == 0) opt.token = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0) opt.batch = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--duration") == 0) opt.duration = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--warmup") == 0) opt.warmup = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: appends [--url host:port] [--streams N] [--rate tokens/s] "
                            "[--token-bytes B] [--batch K] [--duration s] [--warmup s]\n");
            return 2;
        }
    }
    if (opt.streams == 0 || opt.rate == 0 || opt.batch == 0 || opt.batch > 50 || opt.duration <= 0) return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < opt.streams + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    streams = calloc(opt.streams, sizeof *streams);
    struct sockaddr_in addr;
    uv_ip4_addr(opt.host, opt.port, &addr);
    start_ns = uv_hrtime();
    measure_ns = start_ns + (uint64_t)(opt.warmup * 1e9);
    end_ns = measure_ns + (uint64_t)(opt.duration * 1e9);
    for (unsigned i = 0; i < opt.streams; i++) {
        struct stream *s = &streams[i];
        s->id = i;
        uv_tcp_init(loop, &s->tcp);
        uv_tcp_nodelay(&s->tcp, 1);
        uv_timer_init(loop, &s->tick);
        s->tcp.data = s->tick.data = s;
        uv_connect_t *c = malloc(sizeof *c);
        c->data = s;
        uv_tcp_connect(c, &s->tcp, (const struct sockaddr *)&addr, on_connect);
    }
    uv_timer_t stop;
    uv_timer_init(loop, &stop);
    uv_timer_start(&stop, on_stop, (uint64_t)((opt.warmup + opt.duration) * 1000) + 1, 0);
    /* Sample the server's group-commit counters around the measured window. */
    double p0 = -1, e0 = -1;
    while (uv_run(loop, UV_RUN_ONCE) != 0) {
        if (p0 < 0 && uv_hrtime() >= measure_ns) {
            p0 = metric_sum("spool_raft_proposed_publishes_total");
            e0 = metric_sum("spool_raft_proposals_total");
        }
    }
    double p1 = metric_sum("spool_raft_proposed_publishes_total");
    double e1 = metric_sum("spool_raft_proposals_total");
    qsort(lat, n_lat, sizeof *lat, cmp);
    double p50 = n_lat ? lat[n_lat / 2] : 0, p99 = n_lat ? lat[(size_t)((double)n_lat * 0.99)] : 0;
    printf("RESULT streams=%u rate=%u batch=%u offered_per_s=%.0f acked_per_s=%.0f errors=%" PRIu64
           " p50_ms=%.2f p99_ms=%.2f appends_per_entry=%.1f\n",
           opt.streams, opt.rate, opt.batch, (double)offered / opt.duration, (double)acked / opt.duration,
           errors, p50, p99, e1 > e0 && e0 >= 0 ? (p1 - p0) / (e1 - e0) * opt.batch : 0.0);
    free(lat);
    free(streams);
    return errors != 0;
}
