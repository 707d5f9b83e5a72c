/*
 * Internal RPC (cluster/rpc.h) between two nodes on one loop, each with its own mux: frames,
 * request/response, errors, many concurrent calls both ways, one-way messages in order,
 * timeouts with late answers, oversized frames, a peer restarting on the same port, and close
 * with calls pending. Every test closes everything and checks the loop is empty (LeakSanitizer
 * checks the memory).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/rpc.h"
#include "cluster/rpc_frame.h"
#include "cluster/transport.h"
#include "loop_helpers.h"

enum { M_ECHO = 1, M_HOLD = 2, M_FAIL = 3, M_BIG = 4 };

#define MAX_HELD 8
#define MAX_MSGS 64

struct node {
    uv_loop_t *loop;
    uint64_t id;
    size_t max_frame;
    char address[64];
    struct spool_mux *mux;
    struct spool_rpc *rpc;
    struct spool_rpc_reply *held[MAX_HELD];
    int nheld;
    unsigned msgs[MAX_MSGS];
    int nmsgs;
    uint64_t last_from;
};

static void on_request(void *arg, uint64_t from, uint32_t method, const void *body, size_t len,
                       struct spool_rpc_reply *reply)
{
    struct node *n = arg;
    n->last_from = from;
    switch (method) {
        case M_ECHO:
            spool_rpc_respond(reply, 0, NULL, body, len);
            break;
        case M_BIG: { /* an answer over the frame limit */
            static char big[2 << 20];
            spool_rpc_respond(reply, 0, NULL, big, sizeof big);
            break;
        }
        case M_HOLD:
            cr_assert_lt(n->nheld, MAX_HELD);
            n->held[n->nheld++] = reply;
            break;
        default:
            spool_rpc_respond(reply, SPOOL_ENOTLEADER, "not the leader of shard 3", NULL, 0);
    }
}

static void on_message(void *arg, uint64_t from, uint32_t method, const void *body, size_t len)
{
    struct node *n = arg;
    unsigned v;
    cr_assert_eq(len, sizeof v);
    memcpy(&v, body, sizeof v);
    cr_assert_lt(n->nmsgs, MAX_MSGS);
    n->msgs[n->nmsgs++] = v;
    n->last_from = from;
}

static void node_start(struct node *n, uv_loop_t *loop, uint64_t id, const char *address,
                       size_t max_frame)
{
    struct spool_err err;
    n->loop = loop;
    n->id = id;
    n->max_frame = max_frame;
    cr_assert_eq(spool_mux_init(&n->mux, loop, id, address, &err), 0, "%s", err.msg);
    snprintf(n->address, sizeof n->address, "%s", spool_mux_address(n->mux));
    cr_assert_eq(spool_rpc_init(&n->rpc, loop, n->mux, id, max_frame, on_request, on_message, n,
                                &err),
                 0, "%s", err.msg);
}

static void node_stop(struct node *n)
{
    bool rpc_closed = false, mux_closed = false;
    spool_rpc_close(n->rpc, set_flag, &rpc_closed);
    cr_assert(run_until(n->loop, flag_set, &rpc_closed, 5000), "rpc did not close");
    spool_mux_close(n->mux, set_flag, &mux_closed);
    cr_assert(run_until(n->loop, flag_set, &mux_closed, 5000), "mux did not close");
    n->rpc = NULL;
    n->mux = NULL;
}

/* Two connected nodes, 1 and 2, that know each other. */
struct pair {
    uv_loop_t loop;
    struct node a, b;
};

static void pair_start(struct pair *p, size_t max_a, size_t max_b)
{
    uv_loop_init(&p->loop);
    node_start(&p->a, &p->loop, 1, "127.0.0.1:0", max_a);
    node_start(&p->b, &p->loop, 2, "127.0.0.1:0", max_b);
    cr_assert_eq(spool_rpc_set_peer(p->a.rpc, 2, p->b.address), 0);
    cr_assert_eq(spool_rpc_set_peer(p->b.rpc, 1, p->a.address), 0);
}

static void pair_stop(struct pair *p)
{
    if (p->a.rpc != NULL) node_stop(&p->a);
    if (p->b.rpc != NULL) node_stop(&p->b);
    loop_finish(&p->loop);
}

struct result {
    int calls;
    int status;
    char msg[256];
    char body[8192];
    size_t len;
};

static void call_done_cb(void *arg, int status, const struct spool_err *err, const void *body,
                         size_t len)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    if (status != 0) {
        cr_assert_not_null(err);
        cr_assert_eq(err->code, status);
        snprintf(r->msg, sizeof r->msg, "%s", err->msg);
    }
    cr_assert_leq(len, sizeof r->body);
    if (len > 0) memcpy(r->body, body, len);
    r->len = len;
}

static bool result_done(void *arg) { return ((struct result *)arg)->calls > 0; }

/* --- frames -------------------------------------------------------------------------------- */

Test(rpc_frame, round_trip_prefixes_and_corruption)
{
    Spool__RpcFrame f = SPOOL__RPC_FRAME__INIT;
    f.id = 42;
    f.kind = SPOOL__RPC_KIND__RPC_KIND_RESPONSE;
    f.method = 7;
    f.status = SPOOL_ENOTLEADER;
    f.error = "not leader";
    f.body.data = (uint8_t *)"abc";
    f.body.len = 3;
    uint8_t *b;
    size_t n;
    cr_assert_eq(spool_rpc_frame_encode(&f, 1024, &b, &n), 0);
    for (size_t len = 0; len < n; len++) {
        Spool__RpcFrame *out = NULL;
        size_t size = 0;
        cr_assert_eq(spool_rpc_frame_parse(b, len, 1024, &out, &size, NULL), SPOOL_RPC_FRAME_MORE);
        cr_assert(size > len && size <= n);
    }
    Spool__RpcFrame *out = NULL;
    size_t size = 0;
    cr_assert_eq(spool_rpc_frame_parse(b, n, 1024, &out, &size, NULL), SPOOL_RPC_FRAME_OK);
    cr_assert_eq(size, n);
    cr_assert_eq(out->id, 42);
    cr_assert_eq(out->kind, SPOOL__RPC_KIND__RPC_KIND_RESPONSE);
    cr_assert_eq(out->status, SPOOL_ENOTLEADER);
    cr_assert_str_eq(out->error, "not leader");
    cr_assert_eq(out->body.len, 3);
    spool__rpc_frame__free_unpacked(out, NULL);

    struct spool_err err = {0};
    b[n - 1] ^= 1; /* payload bit flip: checksum */
    cr_assert_eq(spool_rpc_frame_parse(b, n, 1024, &out, &size, &err), SPOOL_RPC_FRAME_BAD);
    cr_assert_eq(err.code, SPOOL_ECORRUPT);
    /* Over the limit: refused from the header alone. */
    cr_assert_eq(spool_rpc_frame_parse(b, SPOOL_RPC_FRAME_HEADER, 4, &out, &size, &err),
                 SPOOL_RPC_FRAME_BAD);
    cr_assert_eq(err.code, SPOOL_ELIMIT);
    uint8_t *none = NULL;
    cr_assert_eq(spool_rpc_frame_encode(&f, 4, &none, &size), SPOOL_ELIMIT);
    cr_assert_null(none);
    free(b);

    /* A well-formed frame of kind 0 is refused. */
    Spool__RpcFrame z = SPOOL__RPC_FRAME__INIT;
    z.id = 1;
    cr_assert_eq(spool_rpc_frame_encode(&z, 1024, &b, &n), 0);
    cr_assert_eq(spool_rpc_frame_parse(b, n, 1024, &out, &size, &err), SPOOL_RPC_FRAME_BAD);
    free(b);
}

/* --- calls --------------------------------------------------------------------------------- */

Test(rpc, request_response_and_errors)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);

    struct result r = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "ping", 4, 5000, call_done_cb, &r), 0);
    cr_assert_eq(r.calls, 0, "completion must not run inside the call");
    cr_assert(run_until(&p.loop, result_done, &r, 5000));
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.len, 4);
    cr_assert_eq(memcmp(r.body, "ping", 4), 0);
    cr_assert_eq(p.b.last_from, 1);

    struct result e = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_FAIL, NULL, 0, 5000, call_done_cb, &e), 0);
    cr_assert(run_until(&p.loop, result_done, &e, 5000));
    cr_assert_eq(e.status, SPOOL_ENOTLEADER);
    cr_assert_str_eq(e.msg, "not the leader of shard 3");

    /* An empty body echoes back empty. */
    struct result z = {0};
    cr_assert_eq(spool_rpc_call(p.b.rpc, 1, M_ECHO, NULL, 0, 5000, call_done_cb, &z), 0);
    cr_assert(run_until(&p.loop, result_done, &z, 5000));
    cr_assert_eq(z.status, 0);
    cr_assert_eq(z.len, 0);
    cr_assert_eq(p.a.last_from, 2);

    static char big[2 << 20];
    cr_assert_eq(spool_rpc_call(p.a.rpc, 9, M_ECHO, "x", 1, 100, call_done_cb, &r), SPOOL_ENOENT);
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, big, sizeof big, 100, call_done_cb, &r),
                 SPOOL_ELIMIT);
    cr_assert_eq(spool_rpc_send(p.a.rpc, 2, M_ECHO, big, sizeof big), SPOOL_ELIMIT);
    cr_assert_eq(spool_rpc_set_peer(p.a.rpc, 5, "no-port"), SPOOL_EINVAL);

    /* An answer too large for the frame limit arrives as a SPOOL_ELIMIT error instead. */
    struct result lim = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_BIG, NULL, 0, 5000, call_done_cb, &lim), 0);
    cr_assert(run_until(&p.loop, result_done, &lim, 5000));
    cr_assert_eq(lim.status, SPOOL_ELIMIT, "got %d (%s)", lim.status, lim.msg);
    pair_stop(&p);
}

#define CONCURRENT 200

struct many {
    struct result r[CONCURRENT];
    int done;
};

static void many_done_cb(void *arg, int status, const struct spool_err *err, const void *body,
                         size_t len)
{
    struct result *r = arg;
    call_done_cb(r, status, err, body, len);
}

static bool many_done(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < CONCURRENT; i++)
        if (m->r[i].calls == 0) return false;
    return true;
}

static bool messages_arrived(void *arg) { return ((struct node *)arg)->nmsgs == 50; }

Test(rpc, many_concurrent_calls_both_ways_and_ordered_messages)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);
    struct many *ab = calloc(1, sizeof *ab), *ba = calloc(1, sizeof *ba);
    char body[32];
    for (int i = 0; i < CONCURRENT; i++) {
        int n = snprintf(body, sizeof body, "a-to-b %d", i);
        cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, body, (size_t)n, 10000, many_done_cb,
                                    &ab->r[i]),
                     0);
        n = snprintf(body, sizeof body, "b-to-a %d", i);
        cr_assert_eq(spool_rpc_call(p.b.rpc, 1, M_ECHO, body, (size_t)n, 10000, many_done_cb,
                                    &ba->r[i]),
                     0);
    }
    for (unsigned i = 0; i < 50; i++) cr_assert_eq(spool_rpc_send(p.a.rpc, 2, 5, &i, sizeof i), 0);
    cr_assert(run_until(&p.loop, many_done, ab, 10000));
    cr_assert(run_until(&p.loop, many_done, ba, 10000));
    cr_assert(run_until(&p.loop, messages_arrived, &p.b, 10000));
    for (int i = 0; i < CONCURRENT; i++) {
        int n = snprintf(body, sizeof body, "a-to-b %d", i);
        cr_assert_eq(ab->r[i].calls, 1);
        cr_assert_eq(ab->r[i].status, 0);
        cr_assert_eq(ab->r[i].len, (size_t)n);
        cr_assert_eq(memcmp(ab->r[i].body, body, (size_t)n), 0, "reply %d mismatched", i);
        n = snprintf(body, sizeof body, "b-to-a %d", i);
        cr_assert_eq(ba->r[i].status, 0);
        cr_assert_eq(memcmp(ba->r[i].body, body, (size_t)n), 0, "reply %d mismatched", i);
    }
    for (unsigned i = 0; i < 50; i++) cr_assert_eq(p.b.msgs[i], i, "message %u out of order", i);
    cr_assert_eq(p.b.last_from, 1);
    pair_stop(&p);
    free(ab);
    free(ba);
}

static bool held_one(void *arg) { return ((struct node *)arg)->nheld >= 1; }

Test(rpc, timeout_then_late_answer)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);
    struct result r = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_HOLD, "x", 1, 100, call_done_cb, &r), 0);
    cr_assert(run_until(&p.loop, result_done, &r, 5000));
    cr_assert_eq(r.status, SPOOL_ETIMEOUT);
    cr_assert_eq(p.b.nheld, 1, "the request reached the handler");

    /* The handler answers after the caller gave up; the next call on the same connection
     * completes after that answer was read, so by then it has been dropped. */
    spool_rpc_respond(p.b.held[0], 0, NULL, "late", 4);
    struct result next = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "next", 4, 5000, call_done_cb, &next), 0);
    cr_assert(run_until(&p.loop, result_done, &next, 5000));
    cr_assert_eq(next.status, 0);
    cr_assert_eq(memcmp(next.body, "next", 4), 0);
    cr_assert_eq(r.calls, 1, "timed-out call completed twice");
    pair_stop(&p);
}

Test(rpc, oversized_frame_closes_connection)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1024); /* b accepts at most 1 KiB */
    static char body[4000];
    struct result r = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, body, sizeof body, 5000, call_done_cb, &r), 0);
    cr_assert(run_until(&p.loop, result_done, &r, 5000));
    cr_assert_eq(r.status, SPOOL_EIO, "got %d (%s)", r.status, r.msg);
    /* Small calls still work over a fresh connection. */
    struct result ok = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "hi", 2, 5000, call_done_cb, &ok), 0);
    cr_assert(run_until(&p.loop, result_done, &ok, 5000));
    cr_assert_eq(ok.status, 0);
    pair_stop(&p);
}

Test(rpc, peer_restart_on_same_port)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);
    struct result r = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "one", 3, 5000, call_done_cb, &r), 0);
    cr_assert(run_until(&p.loop, result_done, &r, 5000));
    cr_assert_eq(r.status, 0);

    char address[64];
    snprintf(address, sizeof address, "%s", p.b.address);
    node_stop(&p.b);

    /* b is gone: the call fails with an I/O error (lost connection or refused dial), well
     * before its timeout. */
    struct result down = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "two", 3, 5000, call_done_cb, &down), 0);
    cr_assert(run_until(&p.loop, result_done, &down, 4000));
    cr_assert_eq(down.status, SPOOL_EIO, "got %d (%s)", down.status, down.msg);

    memset(&p.b, 0, sizeof p.b);
    node_start(&p.b, &p.loop, 2, address, 1 << 20);
    cr_assert_eq(spool_rpc_set_peer(p.b.rpc, 1, p.a.address), 0);
    struct result up = {0};
    for (int attempt = 0; attempt < 20 && up.status == 0 && up.calls == 0; attempt++) {
        memset(&up, 0, sizeof up);
        cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "three", 5, 3000, call_done_cb, &up), 0);
        cr_assert(run_until(&p.loop, result_done, &up, 5000));
        if (up.status != 0) up.calls = 0; /* retry: the backoff dial may still be refused */
    }
    cr_assert_eq(up.status, 0, "calls never succeeded after the restart: %s", up.msg);
    cr_assert_eq(memcmp(up.body, "three", 5), 0);
    pair_stop(&p);
}

static bool held_three(void *arg) { return ((struct node *)arg)->nheld == 3; }

Test(rpc, close_with_pending_calls)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);
    cr_assert_eq(spool_rpc_set_peer(p.a.rpc, 3, "127.0.0.1:1"), 0); /* nobody there */
    struct result held[3] = {{0}}, queued = {0}, unreachable = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_HOLD, "h", 1, 10000, call_done_cb, &held[i]), 0);
    cr_assert(run_until(&p.loop, held_three, &p.b, 5000));
    cr_assert_eq(spool_rpc_call(p.a.rpc, 3, M_ECHO, "u", 1, 10000, call_done_cb, &unreachable), 0);
    /* Connected to b, but b's reply is never sent: this one is on the connection too. */
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_HOLD, "q", 1, 10000, call_done_cb, &queued), 0);

    bool closed = false;
    spool_rpc_close(p.a.rpc, set_flag, &closed);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(held[i].calls, 1);
        cr_assert_eq(held[i].status, SPOOL_ECLOSED);
    }
    cr_assert_eq(queued.calls, 1);
    cr_assert_eq(queued.status, SPOOL_ECLOSED);
    cr_assert_eq(unreachable.calls, 1);
    cr_assert_eq(unreachable.status, SPOOL_ECLOSED);
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_ECHO, "x", 1, 100, call_done_cb, &queued),
                 SPOOL_ECLOSED);
    cr_assert(run_until(&p.loop, flag_set, &closed, 5000));
    p.a.rpc = NULL;
    bool mux_closed = false;
    spool_mux_close(p.a.mux, set_flag, &mux_closed);
    cr_assert(run_until(&p.loop, flag_set, &mux_closed, 5000));

    /* b answers after a is gone: dropped without harm, whether or not b noticed yet. */
    for (int i = 0; i < p.b.nheld; i++) spool_rpc_respond(p.b.held[i], 0, NULL, "late", 4);
    node_stop(&p.b);
    cr_assert_eq(held[0].calls, 1);
    loop_finish(&p.loop);
}

Test(rpc, replies_answered_after_close_are_freed)
{
    struct pair p = {0};
    pair_start(&p, 1 << 20, 1 << 20);
    struct result r = {0};
    cr_assert_eq(spool_rpc_call(p.a.rpc, 2, M_HOLD, "h", 1, 10000, call_done_cb, &r), 0);
    cr_assert(run_until(&p.loop, held_one, &p.b, 5000));
    node_stop(&p.b); /* b closes holding the reply handle */
    cr_assert(run_until(&p.loop, result_done, &r, 5000));
    cr_assert_eq(r.status, SPOOL_EIO);
    spool_rpc_respond(p.b.held[0], 0, NULL, "late", 4); /* only frees */
    pair_stop(&p);
}
