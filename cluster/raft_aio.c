/*
 * libraft's AIO system calls, with io_destroy() done by a background thread.
 *
 * Why. libraft (0.22, statically linked) writes its log with kernel AIO: each open segment has a
 * writer with its own AIO context (io_setup), and when the segment is full and closed the writer
 * destroys the context with io_destroy() on the loop thread (uvWriterCleanUpAndFireCloseCb). In
 * Linux io_destroy() kills the context and then waits for an RCU grace period before it returns
 * (kill_ioctx + wait_for_completion). On the bench machine (2 shared vCPUs, 6.18 kernel) that was
 * 26-40 ms per call, measured with strace -T on a node's loop thread in the 3-node publish bench
 * at 1 KiB / 256 in flight; segments are 8 MiB, so with three groups' logs a node closed a
 * segment about every 0.7 s, and every node's loop (all its Raft groups, its clients, its
 * followers' answers) stood still for the grace period, in D state, using no CPU. That is the
 * "stall at 1 KiB / 256 in flight" of bench/README.md: p99 of 80-575 ms, servers at ~0.55 cores.
 * libraft's thread-pool fallback write also sets up and destroys a context per write.
 *
 * What. This file defines io_setup, io_destroy, io_submit and io_getevents for the program, the
 * same thin syscall wrappers as libraft's src/syscall.c (so the linker takes these and never
 * pulls that object: shard.c references spool_raft_aio_enable, which links this one first).
 * io_destroy() queues the context for one detached thread that makes the real call and returns
 * 0 at once. libraft never touches a context after destroying it: it has already closed the
 * file and canceled its own requests; a write still in the kernel keeps its file and pinned
 * pages until it completes, and the real io_destroy still waits for it. If the queue is full
 * (DEFER_MAX contexts waiting) or the thread cannot be started, or the feature is off, the call
 * is made inline as before. Contexts still queued at exit are released by the kernel with the
 * process.
 */
#include "cluster/raft_aio.h"

#include <errno.h>
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Same prototypes as libraft's src/syscall.h. */
int io_setup(unsigned nr_events, aio_context_t *ctx_idp);
int io_destroy(aio_context_t ctx_id);
int io_submit(aio_context_t ctx_id, long nr, struct iocb **iocbpp);
int io_getevents(aio_context_t ctx_id, long min_nr, long nr, struct io_event *events,
                 struct timespec *timeout);

#define DEFER_MAX 64

static atomic_bool enabled = true;
static atomic_uint_fast64_t deferred;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static aio_context_t queue[DEFER_MAX];
static unsigned q_head, q_len;
static int thread_state; /* 0 not started, 1 running, -1 could not start */

void spool_raft_aio_enable(bool on) { atomic_store(&enabled, on); }

uint64_t spool_raft_aio_deferred(void) { return atomic_load(&deferred); }

int io_setup(unsigned nr_events, aio_context_t *ctx_idp)
{
    return (int)syscall(__NR_io_setup, nr_events, ctx_idp);
}

int io_submit(aio_context_t ctx_id, long nr, struct iocb **iocbpp)
{
    return (int)syscall(__NR_io_submit, ctx_id, nr, iocbpp);
}

int io_getevents(aio_context_t ctx_id, long min_nr, long nr, struct io_event *events,
                 struct timespec *timeout)
{
    return (int)syscall(__NR_io_getevents, ctx_id, min_nr, nr, events, timeout);
}

static void *reaper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (q_len == 0)
            pthread_cond_wait(&cond, &mu);
        aio_context_t ctx = queue[q_head];
        q_head = (q_head + 1) % DEFER_MAX;
        q_len--;
        pthread_mutex_unlock(&mu);
        syscall(__NR_io_destroy, ctx);
        atomic_fetch_add(&deferred, 1);
        pthread_mutex_lock(&mu);
    }
    return NULL;
}

/* Queues ctx for the reaper thread (started on first use). False: do it inline. */
static bool defer(aio_context_t ctx)
{
    bool ok = false;
    pthread_mutex_lock(&mu);
    if (thread_state == 0) {
        pthread_t t;
        pthread_attr_t attr;
        thread_state = -1;
        if (pthread_attr_init(&attr) == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&t, &attr, reaper_main, NULL) == 0)
                thread_state = 1;
            pthread_attr_destroy(&attr);
        }
    }
    if (thread_state == 1 && q_len < DEFER_MAX) {
        queue[(q_head + q_len) % DEFER_MAX] = ctx;
        q_len++;
        pthread_cond_signal(&cond);
        ok = true;
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

int io_destroy(aio_context_t ctx_id)
{
    if (atomic_load(&enabled) && defer(ctx_id))
        return 0;
    return (int)syscall(__NR_io_destroy, ctx_id);
}
