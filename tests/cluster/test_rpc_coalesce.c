/*
 * RPC write coalescing (cluster/rpc.c): frames made for one connection during a loop turn are
 * written together when the turn ends, never one syscall each, and never later than that turn.
 *
 * The peer here is a plain TCP socket the test reads itself (through the real preamble and frame
 * parsers), so "nothing was written yet" and "everything arrived after one turn" are observed on
 * the wire: right after N spool_rpc_send calls the peer has received no byte (an immediate
 * uv_write per frame would already have put them in its receive buffer on 127.0.0.1), and one
 * uv_run(NOWAIT) later all N frames are there, in order, including more frames than one writev
 * carries (RPC_MAX_WRITE_BUFS = 256).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/preamble.h"
#include "cluster/rpc.h"
#include "cluster/rpc_frame.h"
#include "cluster/transport.h"
#include "loop_helpers.h"

#define METHOD 7
#define N_FRAMES 700 /* > 2 x RPC_MAX_WRITE_BUFS: several writevs in one flush */

static void on_request(void *arg, uint64_t from, uint32_t method, const void *body, size_t len,
                       struct spool_rpc_reply *reply)
{
    spool_rpc_respond(reply, SPOOL_EINVAL, "unexpected", NULL, 0);
}

static void on_message(void *arg, uint64_t from, uint32_t method, const void *body, size_t len) {}

/* The fake peer: a listening socket, then the one connection the node dials. */
struct fake {
    int lfd, fd;
    uint8_t *buf;
    size_t len, cap;
    bool preamble_done;
    unsigned frames;      /* parsed so far */
    unsigned next_value;  /* expected body of the next frame */
    bool out_of_order;
};

static void fake_listen(struct fake *f, char *address, size_t cap)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(f->lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(f->lfd, 4), 0);
    cr_assert_eq(getsockname(f->lfd, (struct sockaddr *)&a, &al), 0);
    snprintf(address, cap, "127.0.0.1:%u", ntohs(a.sin_port));
    f->cap = 1 << 20;
    f->buf = malloc(f->cap);
}

/* Reads what has arrived (never blocks) and parses it. Returns bytes read by this call. */
static size_t fake_pump(struct fake *f)
{
    if (f->fd < 0) {
        f->fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK);
        if (f->fd < 0)
            return 0;
    }
    size_t got = 0;
    for (;;) {
        if (f->len == f->cap) {
            f->cap *= 2;
            f->buf = realloc(f->buf, f->cap);
        }
        ssize_t n = recv(f->fd, f->buf + f->len, f->cap - f->len, MSG_DONTWAIT);
        if (n <= 0)
            break;
        f->len += (size_t)n;
        got += (size_t)n;
    }
    size_t off = 0;
    if (!f->preamble_done) {
        struct spool_preamble p;
        struct spool_err err;
        size_t size = 0;
        int rv = spool_preamble_parse(f->buf, f->len, &p, &size, &err);
        cr_assert_neq(rv, SPOOL_PREAMBLE_BAD, "%s", err.msg);
        if (rv == SPOOL_PREAMBLE_MORE)
            return got;
        cr_assert_eq(p.kind, SPOOL_PREAMBLE_RPC);
        f->preamble_done = true;
        off = size;
    }
    for (;;) {
        Spool__RpcFrame *fr = NULL;
        size_t size = 0;
        struct spool_err err = {0};
        int rv = spool_rpc_frame_parse(f->buf + off, f->len - off, 1 << 20, &fr, &size, &err);
        if (rv == SPOOL_RPC_FRAME_MORE)
            break;
        cr_assert_eq(rv, SPOOL_RPC_FRAME_OK, "%s", err.msg);
        unsigned v = 0;
        cr_assert_eq(fr->body.len, sizeof v);
        memcpy(&v, fr->body.data, sizeof v);
        if (v != f->next_value)
            f->out_of_order = true;
        f->next_value = v + 1;
        f->frames++;
        spool__rpc_frame__free_unpacked(fr, NULL);
        off += size;
    }
    memmove(f->buf, f->buf + off, f->len - off);
    f->len -= off;
    return got;
}

static void fake_close(struct fake *f)
{
    if (f->fd >= 0)
        close(f->fd);
    close(f->lfd);
    free(f->buf);
}

static void send_value(struct spool_rpc *r, unsigned v)
{
    cr_assert_eq(spool_rpc_send(r, 2, METHOD, &v, sizeof v), 0);
}

/* A node's rpc + mux on `loop`, connected to a fake peer (node 2): the first frame (value 0) waits
 * in the peer's queue for the dial, then goes out. */
struct harness {
    uv_loop_t loop;
    struct spool_mux *mux;
    struct spool_rpc *rpc;
    struct fake f;
};

static void harness_connect(struct harness *h)
{
    struct spool_err err;
    char address[64];
    uv_loop_init(&h->loop);
    cr_assert_eq(spool_mux_init(&h->mux, &h->loop, 1, "127.0.0.1:0", &err), 0, "%s", err.msg);
    cr_assert_eq(spool_rpc_init(&h->rpc, &h->loop, h->mux, 1, 1 << 20, on_request, on_message, NULL,
                                &err),
                 0, "%s", err.msg);
    fake_listen(&h->f, address, sizeof address);
    cr_assert_eq(spool_rpc_set_peer(h->rpc, 2, address), 0);
    send_value(h->rpc, 0);
    for (int i = 0; i < 2000 && h->f.frames < 1; i++) {
        uv_run(&h->loop, UV_RUN_NOWAIT);
        fake_pump(&h->f);
        usleep(1000);
    }
    cr_assert_eq(h->f.frames, 1, "the first frame never arrived");
}

/* Reads what the peer receives until it holds `want` frames (bounded). */
static void harness_receive(struct harness *h, unsigned want)
{
    for (int i = 0; i < 1000 && h->f.frames < want; i++) {
        struct pollfd pf = {.fd = h->f.fd, .events = POLLIN};
        poll(&pf, 1, 5);
        fake_pump(&h->f);
    }
}

static void harness_close(struct harness *h)
{
    bool closed = false, mux_closed = false;
    spool_rpc_close(h->rpc, set_flag, &closed);
    cr_assert(run_until(&h->loop, flag_set, &closed, 5000), "rpc did not close");
    spool_mux_close(h->mux, set_flag, &mux_closed);
    cr_assert(run_until(&h->loop, flag_set, &mux_closed, 5000), "mux did not close");
}

Test(rpc_coalesce, frames_of_one_turn_leave_together_at_its_end_in_order)
{
    struct harness h;
    harness_connect(&h);
    for (int round = 0; round < 3; round++) {
        unsigned before = h.f.frames;
        for (unsigned i = 0; i < N_FRAMES; i++)
            send_value(h.rpc, before + i);
        /* Still inside the turn: nothing on the wire yet. */
        cr_assert_eq(fake_pump(&h.f), 0, "frames were written before the loop turn ended");
        cr_assert_eq(h.f.frames, before);
        /* One loop turn writes them all (the peer may need a moment to receive them). */
        uv_run(&h.loop, UV_RUN_NOWAIT);
        harness_receive(&h, before + N_FRAMES);
        cr_assert_eq(h.f.frames, before + N_FRAMES, "round %d: %u of %u frames after one turn",
                     round, h.f.frames - before, N_FRAMES);
        cr_assert(!h.f.out_of_order, "frames arrived out of order");
    }
    harness_close(&h);
    fake_close(&h.f);
    loop_finish(&h.loop);
}

/* Frames still queued when the rpc object closes go out first (what a closing node answers its
 * peers in its last turn must not be lost), and nothing leaks (LeakSanitizer). */
Test(rpc_coalesce, close_writes_what_is_queued)
{
    struct harness h;
    harness_connect(&h);
    for (unsigned i = 1; i <= 100; i++)
        send_value(h.rpc, i);
    harness_close(&h);
    harness_receive(&h, 101);
    cr_assert_eq(h.f.frames, 101, "frames queued at close were lost: %u of 101", h.f.frames);
    cr_assert(!h.f.out_of_order);
    fake_close(&h.f);
    loop_finish(&h.loop);
}

/* A frame made inside another handle's prepare callback (libraft completes requests, so our
 * answers are made, from its prepare and check callbacks) must not wait for the next event: the
 * loop turn that made it may not block in poll. The guard timer is the only other event here, so
 * with a flush handle that cannot run before the poll, the turn would sleep until it fires. */
struct from_prepare {
    struct spool_rpc *rpc;
    unsigned value;
};

static void send_from_prepare_cb(uv_prepare_t *p)
{
    struct from_prepare *fp = p->data;
    send_value(fp->rpc, fp->value);
    uv_prepare_stop(p);
}

static void guard_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

Test(rpc_coalesce, a_frame_made_in_a_prepare_callback_does_not_wait_for_the_next_event)
{
    struct harness h;
    harness_connect(&h);
    struct from_prepare fp = {h.rpc, h.f.frames};
    uv_prepare_t prep;
    uv_prepare_init(&h.loop, &prep);
    prep.data = &fp;
    uv_prepare_start(&prep, send_from_prepare_cb);
    bool guard_fired = false;
    uv_timer_t guard;
    uv_timer_init(&h.loop, &guard);
    guard.data = &guard_fired;
    uv_timer_start(&guard, guard_cb, 3000, 0);
    uv_run(&h.loop, UV_RUN_ONCE); /* the turn that makes the frame */
    cr_assert(!guard_fired, "the loop blocked in poll with a frame queued");
    uv_run(&h.loop, UV_RUN_NOWAIT);
    harness_receive(&h, fp.value + 1);
    cr_assert_eq(h.f.frames, fp.value + 1, "the frame made in the prepare callback never left");
    cr_assert(!guard_fired);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_close((uv_handle_t *)&guard, NULL);
    harness_close(&h);
    fake_close(&h.f);
    loop_finish(&h.loop);
}
