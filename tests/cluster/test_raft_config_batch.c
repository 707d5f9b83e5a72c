/*
 * A regression test for a libraft 0.22.1 bug that scripts/setup.sh fixes with a local patch:
 * a follower that receives a configuration entry inside an AppendEntries batch, not as the
 * batch's first entry, records the batch's FIRST index as its uncommitted configuration index
 * (src/replication.c, replicationAppend: `membershipUncommittedChange(r, index, entry)` where
 * `index + i` is meant). Applying the configuration entry at its real index never clears that
 * mark, so once the follower leads, every raft_add / raft_assign / raft_remove is refused with
 * RAFT_CANTCHANGE, forever. In Spool that was the shard whose new leader could no longer take a
 * replica out (docs/cluster.md, "A libraft 0.22.1 bug").
 *
 * Deterministic, on libraft's raft_fixture (simulated time and network, no threads): three
 * voters, server 0 leads; the link from 0 to 2 is saturated (messages silently dropped) while
 * 0 commits a few commands and then a configuration change (raft_add of a spare, id 4) with
 * server 1; the link is restored and server 2 catches up, receiving the commands and the
 * configuration entry in one AppendEntries batch, the configuration entry last. Then 0 is
 * deposed, 2 is elected, and 2 must be able to make a configuration change (raft_remove of the
 * spare) that commits. Against the unpatched library raft_remove answers RAFT_CANTCHANGE.
 *
 * The FSM is a counter: only the entries' order and commitment matter here.
 */
#include <criterion/criterion.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <string.h>

#define N 3
#define N_CMDS 4

static struct raft_fixture fx;
static struct raft_fsm fsms[N];
static unsigned applied[N];

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    (void)buf;
    applied[(struct raft_fsm *)fsm - fsms]++;
    *result = NULL;
    return 0;
}

/* Snapshots are never taken (threshold far above this test's log), but libraft wants both. */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    (void)fsm;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL)
        return RAFT_NOMEM;
    (*bufs)[0].base = raft_malloc(8);
    (*bufs)[0].len = 8;
    memset((*bufs)[0].base, 0, 8);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    raft_free(buf->base);
    return 0;
}

static void quiet_emit(struct raft_tracer *t, int type, const void *info)
{
    (void)t, (void)type, (void)info;
}
static struct raft_tracer quiet = {.version = 2, .emit = quiet_emit};

static void setup(void)
{
    memset(applied, 0, sizeof applied);
    cr_assert_eq(raft_fixture_init(&fx), 0);
    for (unsigned i = 0; i < N; i++) {
        fsms[i] = (struct raft_fsm){.version = 1, .apply = fsm_apply,
                                    .snapshot = fsm_snapshot, .restore = fsm_restore};
        cr_assert_eq(raft_fixture_grow(&fx, &fsms[i]), 0);
        if (getenv("SPOOL_FIXTURE_TRACE") == NULL)
            raft_fixture_get(&fx, i)->tracer = &quiet;
    }
    struct raft_configuration conf;
    cr_assert_eq(raft_fixture_configuration(&fx, N, &conf), 0);
    cr_assert_eq(raft_fixture_bootstrap(&fx, &conf), 0);
    raft_configuration_close(&conf);
    cr_assert_eq(raft_fixture_start(&fx), 0);
}

static void teardown(void)
{
    raft_fixture_close(&fx);
}

TestSuite(raft_config_batch, .init = setup, .fini = teardown, .timeout = 60);

struct done {
    bool fired;
    int status;
};

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct done *d = req->data;
    d->fired = true;
    d->status = status;
}

static void change_cb(struct raft_change *req, int status)
{
    struct done *d = req->data;
    d->fired = true;
    d->status = status;
}

/* Steps the fixture until *fired or max_ms of simulated time have passed. */
static bool step_until_fired(const struct done *d, unsigned max_ms)
{
    raft_time start = raft_fixture_time(&fx);
    while (!d->fired && raft_fixture_time(&fx) - start < max_ms)
        raft_fixture_step(&fx);
    return d->fired;
}

Test(raft_config_batch, follower_that_got_a_change_mid_batch_can_change_as_leader)
{
    raft_fixture_elect(&fx, 0);
    struct raft *r0 = raft_fixture_get(&fx, 0), *r2 = raft_fixture_get(&fx, 2);
    raft_index before = raft_last_index(r2);

    /* 0 -> 2 drops everything: 2 misses the commands and the change, committed by 0 and 1. */
    raft_fixture_saturate(&fx, 0, 2);
    struct raft_apply reqs[N_CMDS];
    struct done cmds[N_CMDS] = {0};
    for (unsigned k = 0; k < N_CMDS; k++) {
        struct raft_buffer buf = {.base = raft_malloc(8), .len = 8};
        memset(buf.base, (int)k, 8);
        reqs[k].data = &cmds[k];
        cr_assert_eq(raft_apply(r0, &reqs[k], &buf, 1, apply_cb), 0);
    }
    for (unsigned k = 0; k < N_CMDS; k++) {
        cr_assert(step_until_fired(&cmds[k], 5000), "command %u not committed", k);
        cr_assert_eq(cmds[k].status, 0);
    }
    struct raft_change add;
    struct done added = {0};
    add.data = &added;
    cr_assert_eq(raft_add(r0, &add, 4, "4", change_cb), 0);
    cr_assert(step_until_fired(&added, 5000), "raft_add not committed");
    cr_assert_eq(added.status, 0);
    raft_index change_index = raft_last_index(r0);
    cr_assert_eq(raft_last_index(r2), before, "server 2 was not cut off");

    /* 2 catches up in one batch: the commands first, the configuration entry last. */
    raft_fixture_desaturate(&fx, 0, 2);
    raft_time start = raft_fixture_time(&fx);
    while (raft_last_applied(r2) < change_index && raft_fixture_time(&fx) - start < 5000)
        raft_fixture_step(&fx);
    cr_assert_geq(raft_last_applied(r2), change_index, "server 2 did not catch up");
    cr_assert_eq(r2->configuration.n, 4);
    /* The entry is applied: no configuration of 2's can still be uncommitted. */
    cr_assert_eq(r2->configuration_uncommitted_index, 0,
                 "server 2 holds a stale uncommitted configuration index %llu (the change is "
                 "at %llu, the batch started at %llu): the libraft replicationAppend bug",
                 (unsigned long long)r2->configuration_uncommitted_index,
                 (unsigned long long)change_index, (unsigned long long)before + 1);

    /* 2 leads and must be able to change the configuration: remove the spare. */
    raft_fixture_depose(&fx);
    raft_fixture_elect(&fx, 2);
    cr_assert_eq(raft_state(r2), RAFT_LEADER);
    struct raft_change rm;
    struct done removed = {0};
    rm.data = &removed;
    int rv = raft_remove(r2, &rm, 4, change_cb);
    cr_assert_eq(rv, 0, "raft_remove on the new leader: %s (%d)", raft_strerror(rv), rv);
    cr_assert(step_until_fired(&removed, 5000), "raft_remove not committed");
    cr_assert_eq(removed.status, 0);
    cr_assert_eq(r2->configuration.n, 3);
}
