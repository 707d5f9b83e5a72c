/*
 * libraft's AIO calls (cluster/raft_aio.h). io_destroy() in this program is raft_aio.c's: it
 * returns at once and a background thread makes the real call (which waits for an RCU grace
 * period, tens of ms). Checks: the context is really destroyed afterwards (io_getevents on it
 * fails with EINVAL), the caller does not wait for it, a write submitted before the destroy still
 * reaches the file, and with the feature off the call is made inline as before.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cluster/raft_aio.h"

int io_setup(unsigned nr_events, aio_context_t *ctx_idp);
int io_destroy(aio_context_t ctx_id);
int io_submit(aio_context_t ctx_id, long nr, struct iocb **iocbpp);
int io_getevents(aio_context_t ctx_id, long min_nr, long nr, struct io_event *events,
                 struct timespec *timeout);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* True once the kernel no longer knows ctx (destroyed): io_getevents answers EINVAL. */
static bool gone(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    return io_getevents(ctx, 0, 1, &ev, &zero) < 0 && errno == EINVAL;
}

/* Waits (at most 10 s) until ctx is destroyed. */
static bool await_gone(aio_context_t ctx)
{
    uint64_t deadline = now_ms() + 10000;
    while (!gone(ctx)) {
        if (now_ms() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

Test(raft_aio, destroy_is_deferred_and_done)
{
    spool_raft_aio_enable(true);
    uint64_t before = spool_raft_aio_deferred();
    aio_context_t ctx = 0;
    cr_assert_eq(io_setup(1, &ctx), 0, "io_setup: %s", strerror(errno));
    cr_assert(!gone(ctx));
    cr_assert_eq(io_destroy(ctx), 0);
    cr_assert(await_gone(ctx), "the context was never destroyed");
    uint64_t deadline = now_ms() + 10000;
    while (spool_raft_aio_deferred() == before && now_ms() < deadline)
        usleep(1000);
    cr_assert_eq(spool_raft_aio_deferred(), before + 1, "destroyed by the background thread");
}

Test(raft_aio, caller_does_not_wait)
{
    /* Eight destroys in a row: inline each waits for a grace period (ms to tens of ms); deferred
     * they only queue. Compared with the same done inline, so the check holds on a fast kernel. */
    aio_context_t ctx[8];
    spool_raft_aio_enable(false);
    memset(ctx, 0, sizeof ctx); /* io_setup wants 0 in */
    for (int i = 0; i < 8; i++)
        cr_assert_eq(io_setup(1, &ctx[i]), 0, "io_setup: %s", strerror(errno));
    uint64_t t0 = now_ms();
    for (int i = 0; i < 8; i++)
        cr_assert_eq(io_destroy(ctx[i]), 0);
    uint64_t inline_ms = now_ms() - t0;
    for (int i = 0; i < 8; i++)
        cr_assert(gone(ctx[i]), "inline destroy is done on return");

    spool_raft_aio_enable(true);
    memset(ctx, 0, sizeof ctx); /* io_setup wants 0 in */
    for (int i = 0; i < 8; i++)
        cr_assert_eq(io_setup(1, &ctx[i]), 0, "io_setup: %s", strerror(errno));
    (void)io_destroy(0); /* a bad context: EINVAL later in the thread, nothing here */
    t0 = now_ms();
    for (int i = 0; i < 8; i++)
        cr_assert_eq(io_destroy(ctx[i]), 0);
    uint64_t deferred_ms = now_ms() - t0;
    for (int i = 0; i < 8; i++)
        cr_assert(await_gone(ctx[i]));
    cr_log_info("8 io_destroy: inline %llu ms, deferred %llu ms", (unsigned long long)inline_ms,
                (unsigned long long)deferred_ms);
    if (inline_ms >= 8)
        cr_assert_lt(deferred_ms, inline_ms / 2, "inline %llu ms, deferred %llu ms",
                     (unsigned long long)inline_ms, (unsigned long long)deferred_ms);
}

Test(raft_aio, write_before_destroy_lands)
{
    spool_raft_aio_enable(true);
    const char *t = getenv("TMPDIR");
    char path[256];
    snprintf(path, sizeof path, "%s/spool-raft-aio-XXXXXX", t && *t ? t : "/tmp");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    aio_context_t ctx = 0;
    cr_assert_eq(io_setup(1, &ctx), 0);
    static char buf[4096];
    memset(buf, 'x', sizeof buf);
    struct iocb cb = {0};
    struct iocb *cbs[1] = {&cb};
    cb.aio_lio_opcode = IOCB_CMD_PWRITE;
    cb.aio_fildes = (uint32_t)fd;
    cb.aio_buf = (uint64_t)(uintptr_t)buf;
    cb.aio_nbytes = sizeof buf;
    cr_assert_eq(io_submit(ctx, 1, cbs), 1, "io_submit: %s", strerror(errno));
    cr_assert_eq(io_destroy(ctx), 0);
    cr_assert(await_gone(ctx));
    char back[4096];
    cr_assert_eq(pread(fd, back, sizeof back, 0), (ssize_t)sizeof back);
    cr_assert_eq(memcmp(back, buf, sizeof buf), 0);
    close(fd);
    unlink(path);
}
