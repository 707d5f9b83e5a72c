/*
 * The cluster port (cluster/transport.h): preamble parsing, rejection of bad connections, the
 * exact hand-over of the bytes after the preamble, and libraft running over the shared port:
 * 3 servers x 2 Raft groups in one process and one loop, elected, replicating and closing
 * leak-free.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/preamble.h"
#include "cluster/transport.h"
#include "loop_helpers.h"

/* --- the pure parser ----------------------------------------------------------------------- */

Test(preamble, round_trip_and_every_prefix_needs_more)
{
    struct spool_preamble p = {.kind = SPOOL_PREAMBLE_RAFT, .group = 0xdeadbeef, .id = 1ull << 60};
    strcpy(p.address, "node-2.spool.svc.cluster.local:7000");
    uint8_t buf[SPOOL_PREAMBLE_MAX];
    size_t n = spool_preamble_encode(&p, buf);
    cr_assert_eq(n, SPOOL_PREAMBLE_FIXED + strlen(p.address));
    for (size_t len = 0; len < n; len++) {
        struct spool_preamble out;
        size_t size = 0;
        cr_assert_eq(spool_preamble_parse(buf, len, &out, &size, NULL), SPOOL_PREAMBLE_MORE,
                     "prefix %zu", len);
        cr_assert(size > len && size <= n, "prefix %zu asks for %zu", len, size);
    }
    struct spool_preamble out;
    size_t size = 0;
    cr_assert_eq(spool_preamble_parse(buf, n + 10, &out, &size, NULL), SPOOL_PREAMBLE_OK);
    cr_assert_eq(size, n);
    cr_assert_eq(out.kind, SPOOL_PREAMBLE_RAFT);
    cr_assert_eq(out.group, 0xdeadbeef);
    cr_assert_eq(out.id, 1ull << 60);
    cr_assert_str_eq(out.address, p.address);
}

Test(preamble, rejects_bad_fields_early)
{
    struct spool_preamble p = {.kind = SPOOL_PREAMBLE_RPC, .id = 7};
    strcpy(p.address, "10.0.0.1:7000");
    uint8_t good[SPOOL_PREAMBLE_MAX];
    size_t n = spool_preamble_encode(&p, good);
    struct {
        size_t off;
        uint8_t value;
        size_t len; /* bytes given to the parser */
    } cases[] = {
        {0, 'X', 4},   /* magic, refused after 4 bytes */
        {4, 9, 5},     /* version */
        {5, 0, 6},     /* kind */
        {5, 3, 6},     /* kind */
        {7, 1, 8},     /* reserved */
        {20, 0x10, SPOOL_PREAMBLE_FIXED}, /* address length 4096+ */
        {23, 1, SPOOL_PREAMBLE_FIXED},    /* reserved */
        {SPOOL_PREAMBLE_FIXED + 2, '\n', SPOOL_PREAMBLE_FIXED + 3}, /* control byte in address */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t b[SPOOL_PREAMBLE_MAX];
        memcpy(b, good, n);
        b[cases[i].off] = cases[i].value;
        struct spool_preamble out;
        struct spool_err err = {0};
        size_t size = 0;
        cr_assert_eq(spool_preamble_parse(b, cases[i].len, &out, &size, &err), SPOOL_PREAMBLE_BAD,
                     "case %zu", i);
        cr_assert_eq(err.code, SPOOL_ECORRUPT);
    }
    /* A zero address length, and encode refusing what parse would refuse. */
    uint8_t b[SPOOL_PREAMBLE_MAX];
    memcpy(b, good, n);
    b[20] = b[21] = 0;
    size_t size;
    struct spool_preamble out;
    cr_assert_eq(spool_preamble_parse(b, n, &out, &size, NULL), SPOOL_PREAMBLE_BAD);
    strcpy(p.address, "has space:1");
    cr_assert_eq(spool_preamble_encode(&p, b), 0);
    p.address[0] = '\0';
    cr_assert_eq(spool_preamble_encode(&p, b), 0);
}

Test(preamble, split_address)
{
    char h[64], p[8];
    cr_assert_eq(spool_mux_split_address("spool-0.spool:7000", h, sizeof h, p, sizeof p), 0);
    cr_assert_str_eq(h, "spool-0.spool");
    cr_assert_str_eq(p, "7000");
    cr_assert_eq(spool_mux_split_address("[::1]:80", h, sizeof h, p, sizeof p), 0);
    cr_assert_str_eq(h, "::1");
    cr_assert_neq(spool_mux_split_address("nohost", h, sizeof h, p, sizeof p), 0);
    cr_assert_neq(spool_mux_split_address(":7000", h, sizeof h, p, sizeof p), 0);
    cr_assert_neq(spool_mux_split_address("h:", h, sizeof h, p, sizeof p), 0);
    cr_assert_neq(spool_mux_split_address("h:70000", h, sizeof h, p, sizeof p), 0);
    cr_assert_neq(spool_mux_split_address("h:7x", h, sizeof h, p, sizeof p), 0);
}

/* --- raw clients against a mux ------------------------------------------------------------- */

struct raw_client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write[2];
    uint8_t data[2][1200];
    uv_buf_t bufs[2];
    int nbufs;
    bool connected, eof, closed;
    size_t received;
};

static void raw_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[256];
    buf->base = scratch;
    buf->len = sizeof scratch;
}

static void raw_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct raw_client *c = s->data;
    if (nread > 0) c->received += (size_t)nread;
    if (nread < 0) {
        c->eof = true;
        uv_read_stop(s);
    }
}

static void raw_written_cb(uv_write_t *req, int status) {}

static void raw_connected_cb(uv_connect_t *req, int status)
{
    struct raw_client *c = req->data;
    cr_assert_eq(status, 0);
    c->connected = true;
    uv_read_start((uv_stream_t *)&c->tcp, raw_alloc_cb, raw_read_cb);
    /* Separate writes so the server sees the preamble arrive in pieces. */
    for (int i = 0; i < c->nbufs; i++)
        uv_write(&c->write[i], (uv_stream_t *)&c->tcp, &c->bufs[i], 1, raw_written_cb);
}

static void raw_closed_cb(uv_handle_t *h) { ((struct raw_client *)h->data)->closed = true; }

static void raw_start(struct raw_client *c, uv_loop_t *loop, struct spool_mux *m)
{
    char host[64], port[8];
    cr_assert_eq(spool_mux_split_address(spool_mux_address(m), host, sizeof host, port,
                                         sizeof port), 0);
    struct sockaddr_in sa;
    uv_ip4_addr(host, atoi(port), &sa);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    cr_assert_eq(uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&sa, raw_connected_cb),
                 0);
}

static bool raw_connected(void *arg) { return ((struct raw_client *)arg)->connected; }
static bool raw_eof(void *arg) { return ((struct raw_client *)arg)->eof; }

struct rpc_sink {
    uv_stream_t *stream;
    uint64_t peer;
    char address[64];
    char data[64];
    size_t len;
};

static void sink_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct rpc_sink *s = h->data;
    buf->base = s->data + s->len;
    buf->len = sizeof s->data - 1 - s->len;
}

static void sink_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct rpc_sink *s = st->data;
    if (nread > 0) s->len += (size_t)nread;
    if (nread < 0) uv_read_stop(st);
}

static void sink_accept_cb(void *arg, uint64_t peer_id, const char *peer_address,
                           uv_stream_t *stream)
{
    struct rpc_sink *s = arg;
    cr_assert_null(s->stream, "accepted twice");
    s->stream = stream;
    s->peer = peer_id;
    snprintf(s->address, sizeof s->address, "%s", peer_address);
    stream->data = s;
    uv_read_start(stream, sink_alloc_cb, sink_read_cb);
}

static bool sink_accepted(void *arg) { return ((struct rpc_sink *)arg)->stream != NULL; }

static bool sink_has_hello(void *arg)
{
    struct rpc_sink *s = arg;
    return s->len >= 5;
}

static void stream_free_cb(uv_handle_t *h) { raft_free(h); }

Test(mux, rejects_bad_preambles_and_hands_over_exact_bytes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct spool_mux *m;
    struct spool_err err;
    cr_assert_eq(spool_mux_init(&m, &loop, 1, "127.0.0.1:0", &err), 0, "%s", err.msg);
    struct rpc_sink sink = {0};

    struct spool_preamble p = {.kind = SPOOL_PREAMBLE_RAFT, .group = 99, .id = 5};
    strcpy(p.address, "127.0.0.1:1");
    uint8_t unknown_group[SPOOL_PREAMBLE_MAX];
    size_t unknown_group_len = spool_preamble_encode(&p, unknown_group);
    p.kind = SPOOL_PREAMBLE_RPC;
    p.group = 0;
    uint8_t rpc[SPOOL_PREAMBLE_MAX];
    size_t rpc_len = spool_preamble_encode(&p, rpc);

    /* 0: garbage; 1: oversized address length; 2: unknown Raft group; 3: RPC with no RPC
     * listener yet; all must be closed by the server. */
    struct raw_client bad[4];
    memset(bad, 0, sizeof bad);
    memcpy(bad[0].data[0], "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    bad[0].bufs[0] = uv_buf_init((char *)bad[0].data[0], 27);
    memcpy(bad[1].data[0], rpc, rpc_len);
    bad[1].data[0][20] = 0x04; /* address length 1024+ */
    memset(bad[1].data[0] + SPOOL_PREAMBLE_FIXED, 'a', 1100);
    bad[1].bufs[0] = uv_buf_init((char *)bad[1].data[0], 1124);
    memcpy(bad[2].data[0], unknown_group, unknown_group_len);
    bad[2].bufs[0] = uv_buf_init((char *)bad[2].data[0], (unsigned)unknown_group_len);
    memcpy(bad[3].data[0], rpc, rpc_len);
    bad[3].bufs[0] = uv_buf_init((char *)bad[3].data[0], (unsigned)rpc_len);
    for (int i = 0; i < 4; i++) {
        bad[i].nbufs = 1;
        raw_start(&bad[i], &loop, m);
    }
    for (int i = 0; i < 4; i++)
        cr_assert(run_until(&loop, raw_eof, &bad[i], 5000), "bad client %d not closed", i);

    /* A good RPC preamble sent in two pieces, followed by bytes that belong to the RPC layer
     * in the same write: the accept callback must get every one of them. */
    spool_mux_set_rpc_accept(m, sink_accept_cb, &sink);
    struct raw_client good = {0};
    memcpy(good.data[0], rpc, 10);
    good.bufs[0] = uv_buf_init((char *)good.data[0], 10);
    memcpy(good.data[1], rpc + 10, rpc_len - 10);
    memcpy(good.data[1] + rpc_len - 10, "hello", 5);
    good.bufs[1] = uv_buf_init((char *)good.data[1], (unsigned)(rpc_len - 10 + 5));
    good.nbufs = 2;
    raw_start(&good, &loop, m);
    cr_assert(run_until(&loop, sink_has_hello, &sink, 5000));
    cr_assert_eq(sink.len, 5);
    cr_assert_eq(memcmp(sink.data, "hello", 5), 0);
    cr_assert_eq(sink.peer, 5);
    cr_assert_str_eq(sink.address, "127.0.0.1:1");
    cr_assert_not(good.eof);

    /* A client that stops mid-preamble is closed when the mux closes. */
    struct raw_client slow = {0};
    memcpy(slow.data[0], rpc, 7);
    slow.bufs[0] = uv_buf_init((char *)slow.data[0], 7);
    slow.nbufs = 1;
    raw_start(&slow, &loop, m);
    bool closed = false;
    cr_assert(run_until(&loop, raw_connected, &slow, 5000));
    spool_mux_close(m, set_flag, &closed);
    cr_assert(run_until(&loop, flag_set, &closed, 5000));
    cr_assert(run_until(&loop, raw_eof, &slow, 5000));

    uv_close((uv_handle_t *)sink.stream, stream_free_cb);
    struct raw_client *all[] = {&bad[0], &bad[1], &bad[2], &bad[3], &good, &slow};
    for (int i = 0; i < 6; i++) uv_close((uv_handle_t *)&all[i]->tcp, raw_closed_cb);
    loop_finish(&loop);
}

/* --- RPC connects -------------------------------------------------------------------------- */

struct connect_result {
    int calls;
    int status;
    uv_stream_t *stream;
};

static void connect_done_cb(void *arg, uv_stream_t *stream, int status)
{
    struct connect_result *r = arg;
    r->calls++;
    r->status = status;
    r->stream = stream;
}

static bool connect_done(void *arg) { return ((struct connect_result *)arg)->calls > 0; }

Test(mux, rpc_connect_success_refused_and_canceled)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct spool_mux *a, *b;
    struct spool_err err;
    cr_assert_eq(spool_mux_init(&a, &loop, 1, "127.0.0.1:0", &err), 0, "%s", err.msg);
    cr_assert_eq(spool_mux_init(&b, &loop, 2, "localhost:0", &err), 0, "%s", err.msg);
    struct rpc_sink sink = {0};
    spool_mux_set_rpc_accept(b, sink_accept_cb, &sink);

    struct connect_result ok = {0}, refused = {0}, canceled = {0};
    cr_assert_eq(spool_mux_rpc_connect(a, spool_mux_address(b), connect_done_cb, &ok, NULL), 0);
    cr_assert_eq(ok.calls, 0, "callback must not run inside the call");
    cr_assert(run_until(&loop, connect_done, &ok, 5000));
    cr_assert_eq(ok.status, 0);
    cr_assert_not_null(ok.stream);
    cr_assert(run_until(&loop, sink_accepted, &sink, 5000));
    cr_assert_eq(sink.peer, 1);
    cr_assert_str_eq(sink.address, spool_mux_address(a));

    /* Port 1 on localhost: nothing listens there. */
    cr_assert_eq(spool_mux_rpc_connect(a, "127.0.0.1:1", connect_done_cb, &refused, NULL), 0);
    cr_assert(run_until(&loop, connect_done, &refused, 5000));
    cr_assert_lt(refused.status, 0);
    cr_assert_null(refused.stream);

    struct spool_mux_connect *h;
    cr_assert_eq(spool_mux_rpc_connect(a, spool_mux_address(b), connect_done_cb, &canceled, &h),
                 0);
    spool_mux_rpc_connect_cancel(h);
    cr_assert(run_until(&loop, connect_done, &canceled, 5000));
    cr_assert_eq(canceled.status, UV_ECANCELED);
    cr_assert_eq(canceled.calls, 1);

    cr_assert_neq(spool_mux_rpc_connect(a, "no-port", connect_done_cb, &refused, NULL), 0);

    /* A connect still pending when the mux closes is canceled. */
    struct connect_result pending = {0};
    cr_assert_eq(spool_mux_rpc_connect(a, spool_mux_address(b), connect_done_cb, &pending, NULL),
                 0);
    bool a_closed = false, b_closed = false;
    spool_mux_close(a, set_flag, &a_closed);
    cr_assert(run_until(&loop, flag_set, &a_closed, 5000));
    cr_assert_eq(pending.calls, 1);
    cr_assert_eq(pending.status, UV_ECANCELED);
    spool_mux_close(b, set_flag, &b_closed);
    cr_assert(run_until(&loop, flag_set, &b_closed, 5000));
    uv_close((uv_handle_t *)ok.stream, stream_free_cb);
    if (sink.stream != NULL) uv_close((uv_handle_t *)sink.stream, stream_free_cb);
    loop_finish(&loop);
}

Test(mux, slow_preamble_times_out)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct spool_mux *m;
    struct spool_err err;
    cr_assert_eq(spool_mux_init(&m, &loop, 1, "127.0.0.1:0", &err), 0, "%s", err.msg);
    spool_mux_set_preamble_timeout(m, 200);
    struct raw_client slow = {0};
    memcpy(slow.data[0], "SPMX", 4);
    slow.bufs[0] = uv_buf_init((char *)slow.data[0], 4);
    slow.nbufs = 1;
    raw_start(&slow, &loop, m);
    uint64_t start = uv_now(&loop);
    cr_assert(run_until(&loop, raw_eof, &slow, 5000), "stalled preamble never closed");
    cr_assert_geq(uv_now(&loop) - start, 150, "closed before its timeout");
    bool closed = false;
    spool_mux_close(m, set_flag, &closed);
    cr_assert(run_until(&loop, flag_set, &closed, 5000));
    uv_close((uv_handle_t *)&slow.tcp, raw_closed_cb);
    loop_finish(&loop);
}

/* --- one raft_uv_transport driven by hand -------------------------------------------------- */

struct raft_side {
    int accepts;
    raft_id id;
    char address[64];
    uv_stream_t *accepted;
    int connects;
    int connect_status;
    uv_stream_t *connected;
    bool closed;
    int connects_at_close; /* connect callbacks seen when the close callback ran */
};

static void side_accept_cb(struct raft_uv_transport *t, raft_id id, const char *address,
                           uv_stream_t *stream)
{
    struct raft_side *s = t->data;
    s->accepts++;
    s->id = id;
    snprintf(s->address, sizeof s->address, "%s", address);
    s->accepted = stream;
}

static void side_connect_cb(struct raft_uv_connect *req, uv_stream_t *stream, int status)
{
    struct raft_side *s = req->data;
    s->connects++;
    s->connect_status = status;
    s->connected = stream;
}

static void side_close_cb(struct raft_uv_transport *t)
{
    struct raft_side *s = t->data;
    s->closed = true;
    s->connects_at_close = s->connects;
}

static bool side_accepted(void *arg) { return ((struct raft_side *)arg)->accepts > 0; }
static bool side_connected(void *arg) { return ((struct raft_side *)arg)->connects > 0; }
static bool side_closed(void *arg) { return ((struct raft_side *)arg)->closed; }

Test(mux, raft_transport_connect_accept_and_cancel)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct spool_mux *ma, *mb;
    struct spool_err err;
    cr_assert_eq(spool_mux_init(&ma, &loop, 1, "127.0.0.1:0", &err), 0, "%s", err.msg);
    cr_assert_eq(spool_mux_init(&mb, &loop, 2, "127.0.0.1:0", &err), 0, "%s", err.msg);
    struct raft_uv_transport ta, tb;
    struct raft_side sa = {0}, sb = {0};
    cr_assert_eq(spool_mux_transport_init(ma, 7, &ta), 0);
    cr_assert_eq(spool_mux_transport_init(mb, 7, &tb), 0);
    cr_assert_neq(spool_mux_transport_init(mb, 7, &tb), 0, "group registered twice");
    ta.data = &sa;
    tb.data = &sb;
    cr_assert_eq(ta.init(&ta, 11, "a.example:1"), 0);
    cr_assert_eq(tb.init(&tb, 22, spool_mux_address(mb)), 0);
    cr_assert_eq(tb.listen(&tb, side_accept_cb), 0);

    struct raft_uv_connect req = {.data = &sa};
    cr_assert_eq(ta.connect(&ta, &req, 22, spool_mux_address(mb), side_connect_cb), 0);
    cr_assert(run_until(&loop, side_connected, &sa, 5000));
    cr_assert_eq(sa.connect_status, 0);
    cr_assert_not_null(sa.connected);
    cr_assert(run_until(&loop, side_accepted, &sb, 5000));
    cr_assert_eq(sb.id, 11);
    cr_assert_str_eq(sb.address, "a.example:1");

    /* A connect still resolving when the transport closes: its callback runs once, with
     * RAFT_CANCELED, before the close callback. */
    struct raft_side sc = {0};
    struct raft_uv_connect req2 = {.data = &sc};
    cr_assert_eq(ta.connect(&ta, &req2, 22, spool_mux_address(mb), side_connect_cb), 0);
    ta.data = &sc;
    ta.close(&ta, side_close_cb);
    cr_assert_eq(sc.connects, 0, "callbacks must not run inside close");
    cr_assert(run_until(&loop, side_closed, &sc, 5000));
    cr_assert_eq(sc.connects_at_close, 1);
    cr_assert_eq(sc.connect_status, RAFT_CANCELED);
    cr_assert_null(sc.connected);

    tb.close(&tb, side_close_cb);
    cr_assert(run_until(&loop, side_closed, &sb, 5000));
    spool_mux_transport_close(&ta);
    spool_mux_transport_close(&tb);
    bool a_closed = false, b_closed = false;
    spool_mux_close(ma, set_flag, &a_closed);
    spool_mux_close(mb, set_flag, &b_closed);
    cr_assert(run_until(&loop, flag_set, &a_closed, 5000));
    cr_assert(run_until(&loop, flag_set, &b_closed, 5000));
    uv_close((uv_handle_t *)sa.connected, stream_free_cb);
    uv_close((uv_handle_t *)sb.accepted, stream_free_cb);
    loop_finish(&loop);
}

/* --- libraft over the mux: 3 servers x 2 groups -------------------------------------------- */

#define SERVERS 3
#define GROUPS 2
#define ENTRIES 5

struct replica {
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    char dir[64];
    uint64_t counter;
    unsigned applied;
    bool closed;
};

struct cluster {
    uv_loop_t loop;
    struct spool_mux *mux[SERVERS];
    bool mux_closed[SERVERS];
    struct replica r[GROUPS][SERVERS];
    unsigned applies_done;
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct replica *r = fsm->data;
    uint64_t v;
    if (buf->len != sizeof v) return RAFT_MALFORMED;
    memcpy(&v, buf->base, sizeof v);
    r->counter += v;
    r->applied++;
    *result = NULL;
    return 0;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static bool all_groups_have_leader(void *arg)
{
    struct cluster *c = arg;
    for (int g = 0; g < GROUPS; g++) {
        int leaders = 0;
        for (int s = 0; s < SERVERS; s++)
            if (raft_state(&c->r[g][s].raft) == RAFT_LEADER) leaders++;
        if (leaders == 0) return false;
    }
    return true;
}

static bool all_applied(void *arg)
{
    struct cluster *c = arg;
    if (c->applies_done < GROUPS * ENTRIES) return false;
    for (int g = 0; g < GROUPS; g++)
        for (int s = 0; s < SERVERS; s++)
            if (c->r[g][s].applied < ENTRIES) return false;
    return true;
}

static bool all_closed(void *arg)
{
    struct cluster *c = arg;
    for (int g = 0; g < GROUPS; g++)
        for (int s = 0; s < SERVERS; s++)
            if (!c->r[g][s].closed) return false;
    return true;
}

static bool muxes_closed(void *arg)
{
    struct cluster *c = arg;
    for (int s = 0; s < SERVERS; s++)
        if (!c->mux_closed[s]) return false;
    return true;
}

static void apply_done_cb(struct raft_apply *req, int status, void *result)
{
    struct cluster *c = req->data;
    cr_assert_eq(status, 0, "apply failed: %d", status);
    c->applies_done++;
    free(req);
}

static void raft_closed_cb(struct raft *raft)
{
    ((struct replica *)raft->data)->closed = true;
}

static void mux_closed_cb(void *arg) { *(bool *)arg = true; }

Test(mux, raft_three_servers_two_groups, .timeout = 60)
{
    struct cluster *c = calloc(1, sizeof *c);
    uv_loop_init(&c->loop);
    struct spool_err err;
    for (int s = 0; s < SERVERS; s++)
        cr_assert_eq(spool_mux_init(&c->mux[s], &c->loop, (uint64_t)s + 1, "127.0.0.1:0", &err),
                     0, "%s", err.msg);

    for (int g = 0; g < GROUPS; g++) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (int s = 0; s < SERVERS; s++)
            cr_assert_eq(raft_configuration_add(&conf, (raft_id)s + 1,
                                                spool_mux_address(c->mux[s]), RAFT_VOTER),
                         0);
        for (int s = 0; s < SERVERS; s++) {
            struct replica *r = &c->r[g][s];
            snprintf(r->dir, sizeof r->dir, "/tmp/spool-transport-XXXXXX");
            cr_assert_not_null(mkdtemp(r->dir));
            cr_assert_eq(spool_mux_transport_init(c->mux[s], (uint32_t)g + 10, &r->transport), 0);
            cr_assert_eq(raft_uv_init(&r->io, &c->loop, r->dir, &r->transport), 0);
            raft_uv_set_connect_retry_delay(&r->io, 50);
            raft_uv_set_segment_size(&r->io, 64 * 1024);
            r->fsm.version = 1;
            r->fsm.data = r;
            r->fsm.apply = fsm_apply;
            cr_assert_eq(raft_init(&r->raft, &r->io, &r->fsm, (raft_id)s + 1,
                                   spool_mux_address(c->mux[s])),
                         0, "%s", raft_errmsg(&r->raft));
            r->raft.data = r;
            raft_set_election_timeout(&r->raft, 150);
            raft_set_heartbeat_timeout(&r->raft, 30);
            /* Small segments keep the test light; libraft's default threshold (4 MiB free)
             * would then refuse entries with RAFT_NOSPACE. */
            raft_set_capacity_threshold(&r->raft, 0);
            cr_assert_eq(raft_bootstrap(&r->raft, &conf), 0, "%s", raft_errmsg(&r->raft));
            cr_assert_eq(raft_start(&r->raft), 0, "%s", raft_errmsg(&r->raft));
        }
        raft_configuration_close(&conf);
    }

    cr_assert(run_until(&c->loop, all_groups_have_leader, c, 20000), "no leader elected");

    uint64_t expected = 0;
    for (int g = 0; g < GROUPS; g++) {
        struct raft *leader = NULL;
        for (int s = 0; s < SERVERS; s++)
            if (raft_state(&c->r[g][s].raft) == RAFT_LEADER) leader = &c->r[g][s].raft;
        for (int i = 0; i < ENTRIES; i++) {
            uint64_t v = (uint64_t)(g + 1) * 100 + (uint64_t)i;
            if (g == 0) expected += v;
            struct raft_buffer buf = {.base = raft_malloc(sizeof v), .len = sizeof v};
            memcpy(buf.base, &v, sizeof v);
            struct raft_apply *req = malloc(sizeof *req);
            req->data = c;
            cr_assert_eq(raft_apply(leader, req, &buf, 1, apply_done_cb), 0, "%s",
                         raft_errmsg(leader));
        }
    }
    cr_assert(run_until(&c->loop, all_applied, c, 20000), "entries not applied everywhere");
    for (int s = 0; s < SERVERS; s++) {
        cr_assert_eq(c->r[0][s].counter, expected);
        cr_assert_eq(c->r[1][s].counter, expected + ENTRIES * 100, "groups must not mix");
        cr_assert_eq(c->r[0][s].applied, ENTRIES);
    }

    for (int g = 0; g < GROUPS; g++)
        for (int s = 0; s < SERVERS; s++) raft_close(&c->r[g][s].raft, raft_closed_cb);
    cr_assert(run_until(&c->loop, all_closed, c, 10000), "raft instances did not close");
    for (int g = 0; g < GROUPS; g++)
        for (int s = 0; s < SERVERS; s++) {
            raft_uv_close(&c->r[g][s].io);
            spool_mux_transport_close(&c->r[g][s].transport);
            rm_dir(c->r[g][s].dir);
        }
    for (int s = 0; s < SERVERS; s++) spool_mux_close(c->mux[s], mux_closed_cb, &c->mux_closed[s]);
    cr_assert(run_until(&c->loop, muxes_closed, c, 5000));
    loop_finish(&c->loop);
    free(c);
}
