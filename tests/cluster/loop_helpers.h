/* Shared by the cluster tests that drive their own loops (test_rpc.c, test_transport.c): running
 * a loop until a condition holds, a flag callback, and the leak check at the end. Header-only so
 * each test program stays one file. */
#ifndef SPOOL_TESTS_CLUSTER_LOOP_HELPERS_H
#define SPOOL_TESTS_CLUSTER_LOOP_HELPERS_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <uv.h>

static void tick_cb(uv_timer_t *t) {}

/* Runs the loop until cond(arg) holds or `ms` pass; returns whether it holds. A repeating timer
 * keeps uv_run(ONCE) returning even when nothing else happens. */
__attribute__((unused)) static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg,
                                              uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
    uint64_t deadline = uv_now(loop) + ms;
    bool ok = cond(arg);
    for (int i = 0; !ok && i < 1000000 && uv_now(loop) < deadline; i++) {
        uv_run(loop, UV_RUN_ONCE);
        ok = cond(arg);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

__attribute__((unused)) static bool flag_set(void *arg) { return *(bool *)arg; }
__attribute__((unused)) static void set_flag(void *arg) { *(bool *)arg = true; }

/* Drains remaining close callbacks and checks nothing is left on the loop. */
__attribute__((unused)) static void loop_finish(uv_loop_t *loop)
{
    for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT) != 0; i++) usleep(1000);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left open on the loop");
}

#endif
