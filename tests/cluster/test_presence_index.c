/* The presence member index (cluster/presence_index.h), conditional leaves in the state machine,
 * and the reaper's liveness rules (cluster/presence_reaper.h). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "cluster/presence_index.h"
#include "cluster/presence_reaper.h"
#include "proto/entry.pb-c.h"
#include "scratch_dir.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/spool-pidx-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    scratch_dir_remove(dir);
}

static struct spool_store *open_store(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/store", dir);
    struct spool_store_config cfg = {.dir = path};
    spool_store_config_defaults(&cfg);
    struct spool_store *s;
    struct spool_err err;
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0, "%s", err.msg);
    return s;
}

static Spool__Record pres(const char *action, const char *client, const char *conn, uint64_t node,
                          uint64_t boot)
{
    Spool__Record r;
    spool__record__init(&r);
    r.action = SPOOL__ACTION__ACTION_PRESENCE;
    r.name = (char *)action;
    r.client_id = (char *)client;
    r.connection_id = (char *)conn;
    r.presence_node = node;
    r.presence_boot = boot;
    return r;
}

static size_t host_members(struct spool_pindex *x, uint64_t node, uint64_t boot)
{
    size_t n;
    const struct spool_pindex_host *h = spool_pindex_hosts(x, &n);
    for (size_t i = 0; i < n; i++)
        if (h[i].node == node && h[i].boot == boot)
            return h[i].members;
    return 0;
}

static int count_cb(void *arg, struct spool_pindex_member *m)
{
    (*(size_t *)arg)++;
    return 0;
}

Test(presence_index, enter_update_leave_by_host)
{
    struct spool_pindex *x = spool_pindex_new();
    cr_assert_not_null(x);
    Spool__Record r = pres("enter", "alice", "c1", 4, 100);
    r.seq = 1;
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    r = pres("enter", "bob", "c2", 2, 7);
    r.seq = 2;
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    r = pres("enter", "alice", "c1", 4, 100); /* same member on another channel */
    r.seq = 1;
    cr_assert_eq(spool_pindex_apply(x, "other", &r), 0);
    cr_assert_eq(spool_pindex_size(x), 3);
    cr_assert_eq(host_members(x, 4, 100), 2);
    cr_assert_eq(host_members(x, 2, 7), 1);

    /* An update from another host (a resume elsewhere, then a re-enter) moves the member. */
    r = pres("update", "alice", "c1", 2, 7);
    r.seq = 5;
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    struct spool_pindex_member *m = spool_pindex_find(x, "ch", "alice", "c1");
    cr_assert_not_null(m);
    cr_assert_eq(m->node, 2);
    cr_assert_eq(m->seq, 5);
    cr_assert_eq(host_members(x, 4, 100), 1);
    cr_assert_eq(host_members(x, 2, 7), 2);
    size_t n = 0;
    spool_pindex_members_of(x, 2, 7, count_cb, &n);
    cr_assert_eq(n, 2);

    /* Leaves remove; a host without members disappears; unknown leaves are harmless. */
    r = pres("leave", "alice", "c1", 0, 0);
    cr_assert_eq(spool_pindex_apply(x, "other", &r), 0);
    cr_assert_eq(host_members(x, 4, 100), 0);
    size_t n_hosts;
    spool_pindex_hosts(x, &n_hosts);
    cr_assert_eq(n_hosts, 1);
    r = pres("leave", "zed", "c9", 0, 0);
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    cr_assert_eq(spool_pindex_size(x), 2);

    /* Records without a host (old records) and other actions are not indexed. */
    r = pres("enter", "old", "c0", 0, 0);
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    cr_assert_null(spool_pindex_find(x, "ch", "old", "c0"));
    Spool__Record msg;
    spool__record__init(&msg);
    msg.action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    msg.name = "enter";
    cr_assert_eq(spool_pindex_apply(x, "ch", &msg), 0);
    cr_assert_eq(spool_pindex_size(x), 2);
    /* An enter without a host for a hosted member removes it (nobody may reap it now). */
    r = pres("enter", "bob", "c2", 0, 0);
    cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    cr_assert_null(spool_pindex_find(x, "ch", "bob", "c2"));
    cr_assert_eq(host_members(x, 2, 7), 1);
    spool_pindex_free(x);
}

Test(presence_index, many_members_grow)
{
    struct spool_pindex *x = spool_pindex_new();
    char client[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(client, sizeof client, "c%d", i);
        Spool__Record r = pres("enter", client, "k", 1 + i % 3, 9);
        r.seq = (uint64_t)i + 1;
        cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    }
    cr_assert_eq(spool_pindex_size(x), 5000);
    cr_assert_eq(host_members(x, 1, 9) + host_members(x, 2, 9) + host_members(x, 3, 9), 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(client, sizeof client, "c%d", i);
        Spool__Record r = pres("leave", client, "k", 0, 0);
        cr_assert_eq(spool_pindex_apply(x, "ch", &r), 0);
    }
    cr_assert_eq(spool_pindex_size(x), 2500);
    cr_assert_not_null(spool_pindex_find(x, "ch", "c1", "k"));
    cr_assert_null(spool_pindex_find(x, "ch", "c2", "k"));
    spool_pindex_free(x);
}

/* Appends records (seq, channel set by the caller) at raft index `index`. */
static void store_append(struct spool_store *s, uint64_t index, Spool__Record *recs, size_t n)
{
    const Spool__Record *ptrs[16];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &recs[i];
    struct spool_err err;
    cr_assert_eq(spool_store_append_batch(s, index, ptrs, n, &err), 0, "%s", err.msg);
}

Test(presence_index, rebuild_matches_the_fold_and_leaves_are_conditional, .init = setup,
     .fini = teardown)
{
    struct spool_store *s = open_store();
    Spool__Record recs[5];
    recs[0] = pres("enter", "alice", "c1", 4, 100);
    recs[1] = pres("enter", "bob", "c2", 4, 100);
    recs[2] = pres("enter", "carol", "c3", 2, 7);
    recs[3] = pres("leave", "bob", "c2", 0, 0);
    recs[4] = pres("update", "alice", "c1", 4, 100);
    for (int i = 0; i < 5; i++) {
        recs[i].channel = "ch";
        recs[i].seq = (uint64_t)i + 1;
        recs[i].timestamp_ms = 1000;
    }
    store_append(s, 1, recs, 5);

    struct spool_pindex *x = spool_pindex_new();
    struct spool_err err;
    cr_assert_eq(spool_pindex_rebuild(x, s, 0, &err), 0);
    cr_assert_eq(spool_pindex_size(x), 2);
    struct spool_pindex_member *m = spool_pindex_find(x, "ch", "alice", "c1");
    cr_assert_not_null(m);
    cr_assert_eq(m->seq, 5);
    cr_assert_null(spool_pindex_find(x, "ch", "bob", "c2"));
    cr_assert_eq(host_members(x, 4, 100), 1);
    cr_assert_eq(host_members(x, 2, 7), 1);
    /* A bounded rebuild sees only the newest records: carol's enter (seq 3) is out of reach. */
    cr_assert_eq(spool_pindex_rebuild(x, s, 2, &err), 0);
    cr_assert_null(spool_pindex_find(x, "ch", "carol", "c3"));
    spool_pindex_free(x);

    /* Conditional leaves: alice's newest record is 5. */
    Spool__Record leave = pres("leave", "alice", "c1", 0, 0);
    leave.ref_seq = 5;
    cr_assert_not(spool_presence_leave_superseded(s, "ch", &leave, NULL, 0));
    leave.ref_seq = 1; /* she updated after 1 */
    cr_assert(spool_presence_leave_superseded(s, "ch", &leave, NULL, 0));
    leave.ref_seq = 0; /* unconditional */
    cr_assert_not(spool_presence_leave_superseded(s, "ch", &leave, NULL, 0));
    /* carol (ref 3): bob's leave and alice's update after it are other members */
    Spool__Record lc = pres("leave", "carol", "c3", 0, 0);
    lc.ref_seq = 3;
    cr_assert_not(spool_presence_leave_superseded(s, "ch", &lc, NULL, 0));
    /* ... but a record of hers earlier in the same entry wins */
    Spool__Record in_entry[2] = {pres("enter", "carol", "c3", 2, 8), pres("enter", "carol", "c3", 2, 8)};
    in_entry[0].channel = "elsewhere";
    in_entry[1].channel = "ch";
    cr_assert_not(spool_presence_leave_superseded(s, "ch", &lc, in_entry, 1));
    cr_assert(spool_presence_leave_superseded(s, "ch", &lc, in_entry, 2));
    /* a conditional leave whose member already left (bob, ref 2) is kept out too */
    Spool__Record lb = pres("leave", "bob", "c2", 0, 0);
    lb.ref_seq = 2;
    cr_assert(spool_presence_leave_superseded(s, "ch", &lb, NULL, 0));
    spool_store_close(s);
}

/* One entry with one publish of `n` records to `channel`. */
static uint8_t *encode(const char *channel, Spool__Record *msgs, size_t n, size_t *len)
{
    Spool__Entry e = SPOOL__ENTRY__INIT;
    Spool__PublishRequest req = SPOOL__PUBLISH_REQUEST__INIT, *rp = &req;
    Spool__Record *mp[8];
    for (size_t i = 0; i < n; i++)
        mp[i] = &msgs[i];
    req.channel = (char *)channel;
    req.messages = mp;
    req.n_messages = n;
    e.timestamp_ms = 1000;
    e.publishes = &rp;
    e.n_publishes = 1;
    void *buf;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf, len), 0);
    return buf;
}

static struct spool_fsm_result *apply(struct spool_fsm *f, uint64_t index, Spool__Record *msgs,
                                      size_t n)
{
    size_t len;
    uint8_t *buf = encode("room", msgs, n, &len);
    struct spool_fsm_result *r;
    struct spool_err err;
    cr_assert_eq(spool_fsm_apply_entry(f, index, buf, len, &r, &err), 0, "%s", err.msg);
    raft_free(buf);
    cr_assert_not_null(r);
    return r;
}

Test(presence_index, state_machine_never_leaves_twice, .init = setup, .fini = teardown)
{
    struct spool_store *s = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, s, 60000, &err), 0, "%s", err.msg);
    Spool__Record m[2] = {pres("enter", "alice", "c1", 3, 33), pres("enter", "bob", "c2", 1, 11)};
    struct spool_fsm_result *r = apply(&f, 1, m, 2);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_pindex_size(f.presence), 2);
    cr_assert_eq(host_members(f.presence, 3, 33), 1);

    /* The reaper's leave of alice (ref 1) twice in one entry and again in the next: one stored. */
    Spool__Record l[2] = {pres("leave", "alice", "c1", 0, 0), pres("leave", "alice", "c1", 0, 0)};
    l[0].ref_seq = l[1].ref_seq = 1;
    r = apply(&f, 2, l, 2);
    cr_assert_eq(r->publishes[0].seqs[0], 3);
    cr_assert_not(r->publishes[0].duplicate[0]);
    cr_assert(r->publishes[0].duplicate[1]);
    spool_fsm_result_free(r);
    r = apply(&f, 3, l, 1);
    cr_assert(r->publishes[0].duplicate[0]);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_store_last_seq(s, "room"), 3);
    cr_assert_null(spool_pindex_find(f.presence, "room", "alice", "c1"));
    cr_assert_eq(host_members(f.presence, 3, 33), 0);

    /* bob re-entered through another node before his old host's leave arrived: he stays. */
    Spool__Record again = pres("enter", "bob", "c2", 2, 22);
    spool_fsm_result_free(apply(&f, 4, &again, 1));
    Spool__Record lb = pres("leave", "bob", "c2", 0, 0);
    lb.ref_seq = 2;
    r = apply(&f, 5, &lb, 1);
    cr_assert(r->publishes[0].duplicate[0]);
    spool_fsm_result_free(r);
    struct spool_pindex_member *bm = spool_pindex_find(f.presence, "room", "bob", "c2");
    cr_assert_not_null(bm);
    cr_assert_eq(bm->node, 2);
    cr_assert_eq(spool_store_last_seq(s, "room"), 4);

    /* Reopening rebuilds the same index from the store. */
    spool_fsm_close(&f);
    spool_store_close(s);
    s = open_store();
    cr_assert_eq(spool_fsm_init(&f, s, 60000, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_pindex_size(f.presence), 1);
    cr_assert_eq(host_members(f.presence, 2, 22), 1);
    spool_fsm_close(&f);
    spool_store_close(s);
}

Test(presence_index, one_reaper_publish_many_members, .init = setup, .fini = teardown)
{
    struct spool_store *s = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, s, 60000, &err), 0, "%s", err.msg);
    Spool__Record m[4] = {pres("enter", "a", "k", 5, 1), pres("enter", "b", "k", 5, 1),
                          pres("enter", "c", "k", 5, 1), pres("update", "b", "k", 6, 1)};
    spool_fsm_result_free(apply(&f, 1, m, 4)); /* seqs 1..4; b moved to node 6 at 4 */
    cr_assert_eq(host_members(f.presence, 5, 1), 2);
    Spool__Record l[4] = {pres("leave", "a", "k", 0, 0), pres("leave", "b", "k", 0, 0),
                          pres("leave", "c", "k", 0, 0), pres("enter", "d", "k", 5, 1)};
    l[0].ref_seq = 1;
    l[1].ref_seq = 2;
    l[2].ref_seq = 3;
    struct spool_fsm_result *r = apply(&f, 2, l, 4);
    cr_assert_not(r->publishes[0].duplicate[0]);
    cr_assert(r->publishes[0].duplicate[1]); /* b changed after 2: stays */
    cr_assert_eq(r->publishes[0].seqs[1], 2);
    cr_assert_not(r->publishes[0].duplicate[2]);
    cr_assert_not(r->publishes[0].duplicate[3]); /* not a conditional leave */
    cr_assert_eq(r->publishes[0].seqs[3], 7);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_store_last_seq(s, "room"), 7);
    cr_assert_not_null(spool_pindex_find(f.presence, "room", "b", "k"));
    cr_assert_not_null(spool_pindex_find(f.presence, "room", "d", "k"));
    cr_assert_eq(spool_pindex_size(f.presence), 2);
    spool_fsm_close(&f);
    spool_store_close(s);
}

Test(presence_liveness, timeouts_restarts_and_grace)
{
    struct spool_presence_liveness l;
    spool_presence_liveness_init(&l, 1, 500, 3000);
    /* this node: only an earlier incarnation is dead */
    cr_assert_not(spool_presence_liveness_dead(&l, 1, 500, 0));
    cr_assert(spool_presence_liveness_dead(&l, 1, 400, 0));
    /* a node never heard of gets the timeout from the first look */
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 70, 1000));
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 70, 3999));
    cr_assert(spool_presence_liveness_dead(&l, 7, 70, 4000));
    /* heartbeats keep it alive */
    cr_assert_eq(spool_presence_liveness_heard(&l, 7, 70, 3500), 0);
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 70, 6000));
    cr_assert(spool_presence_liveness_dead(&l, 7, 70, 6500));
    /* it restarted: the old incarnation is dead at once, the new one alive */
    cr_assert_eq(spool_presence_liveness_heard(&l, 7, 80, 6600), 0);
    cr_assert(spool_presence_liveness_dead(&l, 7, 70, 6600));
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 80, 6600));
    /* silent again: everything of node 7 is dead after the timeout */
    cr_assert(spool_presence_liveness_dead(&l, 7, 80, 9600));
    /* a newer incarnation not heard yet counts as alive while the node is */
    cr_assert_eq(spool_presence_liveness_heard(&l, 7, 80, 9800), 0);
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 90, 9900));
    /* the clock stepped back across a restart: the new process (smaller boot) is what counts, its
     * members are alive; the earlier one's look newer and wait for the node's silence */
    cr_assert_eq(spool_presence_liveness_heard(&l, 7, 60, 10000), 0);
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 60, 12000));
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 80, 12000));
    cr_assert(spool_presence_liveness_dead(&l, 7, 50, 12000));
    cr_assert(spool_presence_liveness_dead(&l, 7, 80, 13000));
    /* grace after this node's own stall: everybody counts as heard now */
    cr_assert(spool_presence_liveness_dead(&l, 7, 60, 20000));
    spool_presence_liveness_grace(&l, 20000);
    cr_assert_not(spool_presence_liveness_dead(&l, 7, 60, 20001));
    spool_presence_liveness_close(&l);
}
