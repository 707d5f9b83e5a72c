/*
 * spool_node end to end, in one process and one loop: a single node (publish, dedup, reads,
 * subscribe, restart on the same data directory), and three nodes with 2 shards x 3 replicas
 * (forwarding, read-your-writes everywhere, subscribers everywhere, graceful leader close), plus
 * a gateway-only node that reaches everything over RPC.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/node.h"
#include "scratch_dir.h"
#include "cluster/node_int.h" /* forward-batch counters */

static char root[64];
static uv_loop_t loop;
static uv_timer_t tick; /* keeps run_until's loop turns short */

static void tick_cb(uv_timer_t *t) {}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write must be an error code, as in spoold */
    snprintf(root, sizeof root, "/tmp/spool-node-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
}

static void closed_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void teardown(void)
{
    uv_timer_stop(&tick);
    uv_close((uv_handle_t *)&tick, NULL);
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
        ;
    uv_walk(&loop, closed_walk_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left open");
    scratch_dir_remove(root);
}

/* Runs the loop until cond(arg) holds or `ms` pass; returns whether it held. */
static bool run_until(bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_update_time(&loop);
    uint64_t deadline = uv_now(&loop) + ms;
    while (!cond(arg)) {
        if (uv_now(&loop) >= deadline)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* --- a node under test -------------------------------------------------------------------- */

#define MAX_RECS 512

struct sub_log {
    uint64_t seqs[MAX_RECS];
    size_t n;
    bool out_of_order;
    struct spool_sub *sub;
};

static void record_cb(void *arg, const Spool__Record *rec)
{
    struct sub_log *l = arg;
    if (l->n > 0 && rec->seq != l->seqs[l->n - 1] + 1)
        l->out_of_order = true;
    if (l->n < MAX_RECS)
        l->seqs[l->n++] = rec->seq;
}

/* Unsubscribes itself from inside its callback once it has seen `stop_after` records. */
struct quitter {
    struct sub_log log;
    size_t stop_after;
};

static void quitter_cb(void *arg, const Spool__Record *rec)
{
    struct quitter *q = arg;
    record_cb(&q->log, rec);
    if (q->log.n == q->stop_after) {
        spool_node_unsubscribe(q->log.sub);
        q->log.sub = NULL;
    }
}

struct tnode {
    struct spool_node *node;
    struct spool_node_config cfg;
    char dir[128], listen[64];
    bool closed;
};

static uint64_t forward_timeout_ms = 8000;
static uint64_t tail_cache_bytes = 1 << 20; /* per node */

static void node_start(struct tnode *t, uint64_t id, const char *peers, uint32_t shards,
                       bool gateway_only)
{
    snprintf(t->dir, sizeof t->dir, "%s/n%llu", root, (unsigned long long)id);
    spool_node_config_defaults(&t->cfg);
    t->cfg.id = id;
    t->cfg.data_dir = t->dir;
    t->cfg.cluster_listen = t->listen;
    t->cfg.peers = peers;
    t->cfg.shards = shards;
    t->cfg.replicas = 3;
    t->cfg.gateway_only = gateway_only;
    t->cfg.election_timeout_ms = 400;
    t->cfg.heartbeat_ms = 50;
    t->cfg.forward_timeout_ms = forward_timeout_ms;
    t->cfg.snapshot_threshold = 64;
    t->cfg.snapshot_trailing = 64;
    t->cfg.store.segment_bytes = 1 << 20;
    t->cfg.store.tail_cache_bytes = tail_cache_bytes;
    struct spool_err err;
    cr_assert_eq(spool_node_init(&t->node, &loop, &t->cfg, &err), 0, "%s", err.msg);
    t->closed = false;
}

static void node_closed_cb(void *arg)
{
    ((struct tnode *)arg)->closed = true;
}

static bool closed_cond(void *arg)
{
    return ((struct tnode *)arg)->closed;
}

static void node_stop(struct tnode *t)
{
    spool_node_close(t->node, node_closed_cb, t);
    cr_assert(run_until(closed_cond, t, 10000), "node close did not finish");
    t->node = NULL;
}

static bool ready_cond(void *arg)
{
    struct tnode **ts = arg;
    for (; *ts; ts++)
        if (!spool_node_ready((*ts)->node))
            return false;
    return true;
}

/* Every replica of channel "q"'s shard has applied as far as the first node's leader did. */
static bool q_applied_everywhere(void *arg)
{
    struct tnode **ts = arg;
    uint32_t shard = spool_node_shard_of(ts[0]->node, "q");
    uint64_t want = 0;
    for (struct tnode **t = ts; *t; t++) {
        struct spool_shard_status st;
        spool_node_shard_status((*t)->node, shard, &st);
        if (st.commit_index > want) want = st.commit_index;
    }
    for (struct tnode **t = ts; *t; t++) {
        struct spool_shard_status st;
        spool_node_shard_status((*t)->node, shard, &st);
        if (st.applied_index < want) return false;
    }
    return want > 0;
}

/* --- publish / read helpers --------------------------------------------------------------- */

struct pub {
    bool done;
    int status;
    char msg[256];
    uint64_t seqs[16];
    bool dup[16];
    size_t n;
};

static void publish_cb(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                       const bool *duplicate, size_t n)
{
    struct pub *p = arg;
    cr_assert_not(p->done, "publish completed twice");
    p->done = true;
    p->status = status;
    if (status != 0)
        snprintf(p->msg, sizeof p->msg, "%s", err->msg);
    p->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        p->seqs[i] = seqs[i];
        p->dup[i] = duplicate[i];
    }
}

static bool pub_done(void *arg)
{
    return ((struct pub *)arg)->done;
}

struct pubs {
    struct pub *v;
    size_t n;
};

static bool pubs_done(void *arg)
{
    struct pubs *p = arg;
    for (size_t i = 0; i < p->n; i++)
        if (!p->v[i].done)
            return false;
    return true;
}

static void publish_start(struct spool_node *n, const char *channel, const char *const *ids,
                          size_t count, struct pub *p)
{
    Spool__Record recs[16];
    const Spool__Record *ptrs[16];
    for (size_t i = 0; i < count; i++) {
        spool__record__init(&recs[i]);
        recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
        recs[i].id = (char *)(ids ? ids[i] : "");
        recs[i].data.data = (uint8_t *)"payload";
        recs[i].data.len = 7;
        ptrs[i] = &recs[i];
    }
    memset(p, 0, sizeof *p);
    cr_assert_eq(spool_node_publish(n, channel, ptrs, count, publish_cb, p), 0);
    cr_assert_not(p->done, "publish completed inside the call");
}

static void publish_sync(struct spool_node *n, const char *channel, const char *const *ids,
                         size_t count, struct pub *p)
{
    publish_start(n, channel, ids, count, p);
    cr_assert(run_until(pub_done, p, 15000), "publish did not complete");
    cr_assert_eq(p->status, 0, "publish failed: %s", p->msg);
}

struct rd {
    bool done;
    int status;
    char msg[256];
    uint64_t seqs[MAX_RECS];
    size_t n;
    uint64_t first, last;
};

static void read_cb(void *arg, int status, const struct spool_err *err,
                    const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                    uint64_t last_seq)
{
    struct rd *r = arg;
    cr_assert_not(r->done, "read completed twice");
    r->done = true;
    r->status = status;
    if (status != 0)
        snprintf(r->msg, sizeof r->msg, "%s", err->msg);
    for (size_t i = 0; i < n && i < MAX_RECS; i++) {
        cr_assert_eq(recs[i]->data.len, 7);
        r->seqs[i] = recs[i]->seq;
    }
    r->n = n;
    r->first = first_seq;
    r->last = last_seq;
}

static bool rd_done(void *arg)
{
    return ((struct rd *)arg)->done;
}

static void read_sync(struct spool_node *n, const struct spool_read_req *req, struct rd *r)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(spool_node_read(n, req, read_cb, r), 0);
    cr_assert_not(r->done, "read completed inside the call");
    cr_assert(run_until(rd_done, r, 15000), "read did not complete");
    cr_assert_eq(r->status, 0, "read failed: %s", r->msg);
}

struct sub_want {
    struct sub_log **logs;
    size_t n_logs;
    size_t count;
};

static bool subs_have(void *arg)
{
    struct sub_want *w = arg;
    for (size_t i = 0; i < w->n_logs; i++)
        if (w->logs[i]->n < w->count)
            return false;
    return true;
}

static bool log_reached_16(void *arg)
{
    struct sub_log *l = arg;
    return l->n > 0 && l->seqs[l->n - 1] == 16;
}

static bool log_reached_302(void *arg)
{
    struct sub_log *l = arg;
    return l->n > 0 && l->seqs[l->n - 1] == 302;
}

static void assert_log(const struct sub_log *l, uint64_t first, size_t count)
{
    cr_assert_eq(l->n, count, "subscriber saw %zu records, want %zu", l->n, count);
    cr_assert_not(l->out_of_order);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq(l->seqs[i], first + i);
}

TestSuite(node, .init = setup, .fini = teardown, .timeout = 120);

/* --- single node -------------------------------------------------------------------------- */

Test(node, single_node_publish_read_subscribe_restart)
{
    struct tnode t;
    snprintf(t.listen, sizeof t.listen, "127.0.0.1:%u", free_port());
    node_start(&t, 1, "", 2, false);
    struct tnode *all[] = {&t, NULL};
    cr_assert(run_until(ready_cond, all, 10000), "single node never became ready");
    cr_assert_eq(spool_node_shard_count(t.node), 2);
    cr_assert_eq(spool_node_slot_map_epoch(t.node), 1, "the metadata group holds the slot map");

    struct sub_log log = {0};
    cr_assert_eq(spool_node_subscribe(t.node, "chat", record_cb, &log, &log.sub), 0);
    struct quitter q = {.stop_after = 2};
    cr_assert_eq(spool_node_subscribe(t.node, "chat", quitter_cb, &q, &q.log.sub), 0);

    struct pub p;
    struct spool_shard_status st0, st1;
    const char *ids[3] = {"a", "b", ""};
    publish_sync(t.node, "chat", ids, 3, &p);
    cr_assert_eq(p.n, 3);
    cr_assert_eq(p.seqs[0], 1);
    cr_assert_eq(p.seqs[2], 3);
    cr_assert_not(p.dup[0]);
    publish_sync(t.node, "chat", NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 4);
    /* Same id again: not stored, original seq. */
    const char *again[1] = {"b"};
    publish_sync(t.node, "chat", again, 1, &p);
    cr_assert(p.dup[0]);
    cr_assert_eq(p.seqs[0], 2);

    /* Group commit: ten publishes made in one loop turn become one Raft entry. */
    spool_node_shard_status(t.node, spool_node_shard_of(t.node, "chat"), &st0);
    struct pub ten[10];
    struct pubs tens = {ten, 10};
    for (int i = 0; i < 10; i++)
        publish_start(t.node, "chat", NULL, 1, &ten[i]);
    cr_assert(run_until(pubs_done, &tens, 10000));
    for (int i = 0; i < 10; i++)
        cr_assert_eq(ten[i].seqs[0], 5 + (uint64_t)i, "publish order is seq order");
    spool_node_shard_status(t.node, spool_node_shard_of(t.node, "chat"), &st1);
    cr_assert_eq(st1.proposals - st0.proposals, 1);
    cr_assert_eq(st1.proposed_publishes - st0.proposed_publishes, 10);

    /* Invalid calls are refused synchronously. */
    cr_assert_eq(spool_node_publish(t.node, "", NULL, 1, publish_cb, &p), SPOOL_EINVAL);

    struct sub_log *logs[] = {&log};
    struct sub_want w = {logs, 1, 14};
    cr_assert(run_until(subs_have, &w, 5000));
    assert_log(&log, 1, 14);
    assert_log(&q.log, 1, 2); /* left from inside its callback; the other one went on */

    struct rd r;
    struct spool_read_req fwd = {.channel = "chat"};
    read_sync(t.node, &fwd, &r);
    cr_assert_eq(r.n, 14);
    cr_assert_eq(r.seqs[0], 1);
    cr_assert_eq(r.seqs[13], 14);
    cr_assert_eq(r.first, 1);
    cr_assert_eq(r.last, 14);
    struct spool_read_req back = {.channel = "chat", .backward = true, .limit = 3};
    read_sync(t.node, &back, &r);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.seqs[0], 14);
    cr_assert_eq(r.seqs[2], 12);
    struct spool_read_req after = {.channel = "chat", .after_seq = 2, .limit = 1};
    read_sync(t.node, &after, &r);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.seqs[0], 3);

    struct spool_shard_status st;
    uint32_t shard = spool_node_shard_of(t.node, "chat");
    spool_node_shard_status(t.node, shard, &st);
    cr_assert(st.local_replica);
    cr_assert_eq(st.leader_id, 1);
    cr_assert_geq(st.applied_index, 4);
    cr_assert_eq(st.store.records, 14);

    spool_node_unsubscribe(log.sub);
    node_stop(&t);

    /* Restart on the same directory: data is there and seqs continue. */
    node_start(&t, 1, "", 2, false);
    cr_assert(run_until(ready_cond, all, 10000), "restarted node never became ready");
    cr_assert_eq(spool_node_slot_map_epoch(t.node), 1, "slot map replayed from the log");
    read_sync(t.node, &fwd, &r);
    cr_assert_eq(r.n, 14);
    publish_sync(t.node, "chat", NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 15);
    /* Dedup survives the restart. */
    const char *a[1] = {"a"};
    publish_sync(t.node, "chat", a, 1, &p);
    cr_assert(p.dup[0]);
    cr_assert_eq(p.seqs[0], 1);
    node_stop(&t);
}

/* --- three nodes -------------------------------------------------------------------------- */

/* Gives t[0..n-1] (n <= 4) free listen addresses and starts t[0..2] as storage nodes 1..3 with
 * `shards` shards; `peers` receives their peer list (it must outlive the nodes). */
static void three_nodes_start(struct tnode *t, int n, uint32_t shards, char *peers, size_t size)
{
    uint16_t ports[4];
    for (int i = 0; i < n; i++) {
        ports[i] = free_port();
        snprintf(t[i].listen, sizeof t[i].listen, "127.0.0.1:%u", ports[i]);
    }
    snprintf(peers, size, "1@127.0.0.1:%u,2@127.0.0.1:%u,3@127.0.0.1:%u", ports[0], ports[1],
             ports[2]);
    for (int i = 0; i < 3; i++)
        node_start(&t[i], (uint64_t)i + 1, peers, shards, false);
}

Test(node, three_nodes_forward_read_your_writes_subscribe_failover)
{
    struct tnode t[4];
    char peers[256];
    three_nodes_start(t, 4, 2, peers, sizeof peers);
    /* Node 4 holds no replica: everything goes over RPC. It is not one of the peers (those are
     * the storage nodes), and refuses to start as if it were, or without any. */
    struct spool_node_config bad;
    spool_node_config_defaults(&bad);
    bad.id = 3;
    bad.peers = peers;
    bad.gateway_only = true;
    bad.cluster_listen = "127.0.0.1:0";
    bad.data_dir = root;
    struct spool_node *nope;
    struct spool_err err;
    cr_assert_eq(spool_node_init(&nope, &loop, &bad, &err), SPOOL_EINVAL);
    cr_assert_null(nope);
    bad.id = 4;
    bad.peers = "";
    cr_assert_eq(spool_node_init(&nope, &loop, &bad, &err), SPOOL_EINVAL);
    node_start(&t[3], 4, peers, 2, true);
    struct tnode *all[] = {&t[0], &t[1], &t[2], &t[3], NULL};
    cr_assert(run_until(ready_cond, all, 20000), "cluster never became ready");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(spool_node_slot_map_epoch(t[i].node), 1);
    cr_assert_eq(spool_node_slot_map_epoch(t[3].node), 1, "gateway-only: map fetched over RPC");
    struct spool_shard_status gst;
    for (uint32_t s = 0; s < 2; s++) {
        spool_node_shard_status(t[3].node, s, &gst);
        cr_assert_not(gst.local_replica);
        cr_assert_neq(gst.leader_id, 0, "gateway-only node learned shard %u's leader", s);
    }

    const char *channel = "conversation-7";
    uint32_t shard = spool_node_shard_of(t[0].node, channel);
    struct spool_shard_status st;
    spool_node_shard_status(t[0].node, shard, &st);
    uint64_t leader = st.leader_id;
    cr_assert(leader >= 1 && leader <= 3);
    struct tnode *follower = &t[leader % 3]; /* some node that does not lead the shard */

    struct sub_log logs[4];
    memset(logs, 0, sizeof logs);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(
            spool_node_subscribe(t[i].node, channel, record_cb, &logs[i], &logs[i].sub), 0);

    /* Through a follower: forwarded to the leader. */
    struct pub p;
    publish_sync(follower->node, channel, NULL, 2, &p);
    cr_assert_eq(p.seqs[0], 1);
    cr_assert_eq(p.seqs[1], 2);

    /* Let node 4's follower anchor at the channel before the burst (it subscribed first, so it
     * must then see 3.. at least; it anchors at what the replica had when its first poll ran). */
    struct pub burst[12];
    struct pubs bs = {burst, 12};
    for (int i = 0; i < 12; i++)
        publish_start(t[i % 4].node, channel, NULL, 1, &burst[i]);
    cr_assert(run_until(pubs_done, &bs, 20000), "burst did not complete");
    bool seen[15] = {0};
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(burst[i].status, 0, "publish %d: %s", i, burst[i].msg);
        cr_assert(burst[i].seqs[0] >= 3 && burst[i].seqs[0] <= 14);
        cr_assert_not(seen[burst[i].seqs[0]], "seq %llu assigned twice",
                      (unsigned long long)burst[i].seqs[0]);
        seen[burst[i].seqs[0]] = true;
    }

    /* Read-your-writes through every node. */
    for (int i = 0; i < 4; i++) {
        struct rd r;
        struct spool_read_req req = {.channel = channel, .min_seq = 14, .limit = 100};
        read_sync(t[i].node, &req, &r);
        cr_assert_eq(r.n, 14, "node %d read %zu records", i + 1, r.n);
        cr_assert_eq(r.seqs[13], 14);
        cr_assert_eq(r.last, 14);
    }

    /* Replicas' subscribers saw 1..14 once, in order; node 4's saw a gap-free suffix. */
    struct sub_log *lp[4] = {&logs[0], &logs[1], &logs[2], &logs[3]};
    struct sub_want w = {lp, 3, 14};
    cr_assert(run_until(subs_have, &w, 10000));
    for (int i = 0; i < 3; i++)
        assert_log(&logs[i], 1, 14);

    /* Graceful close of the shard's leader: leadership moves, publishing continues. */
    struct tnode *old = &t[leader - 1];
    node_stop(old);
    struct tnode *rest[3];
    int k = 0;
    for (int i = 0; i < 4; i++)
        if (&t[i] != old)
            rest[k++] = &t[i];
    publish_sync(rest[0]->node, channel, NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 15);
    publish_sync(rest[2]->node, channel, NULL, 1, &p); /* the gateway-only node */
    cr_assert_eq(p.seqs[0], 16);
    struct sub_log *lr[3];
    k = 0;
    for (int i = 0; i < 4; i++)
        if (&t[i] != old)
            lr[k++] = &logs[i];
    struct sub_want w2 = {lr, 3, 0};
    /* Replica subscribers: 16 records; node 4's: ends at 16. */
    w2.n_logs = 2;
    w2.count = 16;
    cr_assert(run_until(subs_have, &w2, 10000));
    assert_log(lr[0], 1, 16);
    assert_log(lr[1], 1, 16);
    struct sub_log *gw = &logs[3];
    cr_assert(run_until(log_reached_16, gw, 15000), "gateway-only subscriber stuck at %zu records",
              gw->n);
    cr_assert_not(gw->out_of_order);
    cr_assert_geq(gw->n, 14, "gateway-only subscriber missed records after anchoring");
    /* Leaving while its long poll is parked on a replica: the poll is cancelled, not leaked. */
    spool_node_unsubscribe(gw->sub);

    for (int i = 0; i < 4; i++)
        if (t[i].node != NULL)
            node_stop(&t[i]);
}

/* Three nodes with one shard, ready; returns a node that does not lead it (*leader: the id of
 * the one that does, when not NULL). */
static struct spool_node *one_shard_follower(struct tnode t[3], uint64_t *leader)
{
    char peers[256];
    three_nodes_start(t, 3, 1, peers, sizeof peers);
    struct tnode *all[] = {&t[0], &t[1], &t[2], NULL};
    cr_assert(run_until(ready_cond, all, 20000), "cluster never became ready");
    struct spool_shard_status st;
    spool_node_shard_status(t[0].node, 0, &st);
    cr_assert(st.leader_id >= 1 && st.leader_id <= 3);
    if (leader != NULL)
        *leader = st.leader_id;
    return t[st.leader_id % 3].node;
}

/* Publishes a follower node makes for one shard during one loop turn reach the leader in one
 * SPOOL_METHOD_PUBLISH_BATCH call, and each gets its own result; the same ids again, in one
 * turn, come back as duplicates with their original seqs. */
Test(node, forwarded_publishes_of_one_turn_share_one_call)
{
    struct tnode t[3];
    struct spool_node *follower = one_shard_follower(t, NULL);
    const char *chans[2] = {"fb-a", "fb-b"}; /* one shard: one batch */
    enum { N = 24 };
    char idbuf[N][16];
    const char *ids[N][1];
    for (int i = 0; i < N; i++) {
        snprintf(idbuf[i], sizeof idbuf[i], "m%d", i);
        ids[i][0] = idbuf[i];
    }
    uint64_t first[N];
    for (int round = 0; round < 2; round++) {
        uint64_t calls0 = follower->fwd_calls, pubs0 = follower->fwd_publishes;
        struct pub p[N];
        struct pubs ps = {p, N};
        for (int i = 0; i < N; i++)
            publish_start(follower, chans[i % 2], ids[i], 1, &p[i]);
        cr_assert(run_until(pubs_done, &ps, 20000), "publishes did not complete");
        bool seen[2][N / 2 + 1];
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(p[i].status, 0, "publish %d: %s", i, p[i].msg);
            cr_assert_eq(p[i].n, 1);
            if (round == 0) {
                uint64_t seq = p[i].seqs[0];
                cr_assert_not(p[i].dup[0]);
                cr_assert(seq >= 1 && seq <= N / 2, "seq %llu", (unsigned long long)seq);
                cr_assert_not(seen[i % 2][seq], "seq %llu given twice", (unsigned long long)seq);
                seen[i % 2][seq] = true;
                first[i] = seq;
            } else {
                cr_assert(p[i].dup[0], "publish %d not reported as a duplicate", i);
                cr_assert_eq(p[i].seqs[0], first[i]);
            }
        }
        uint64_t calls = follower->fwd_calls - calls0;
        uint64_t pubs = follower->fwd_publishes - pubs0;
        cr_assert(calls >= 1 && calls <= 2, "round %d: %llu forward calls for %d publishes", round,
                  (unsigned long long)calls, N);
        cr_assert_geq(pubs, N);
    }
    for (int i = 0; i < 3; i++)
        node_stop(&t[i]);
}

/* A SPOOL_METHOD_PUBLISH_BATCH body built by hand, sent straight to the leader: each request
 * answered on its own (a bad one refused, the others stored with the bytes they carried), both
 * when the body is exactly what protobuf-c writes (the leader proposes the requests' bytes as
 * found by cluster/fwd_scan.c) and when it carries an unknown field (the leader packs the
 * decoded requests again). */
struct raw_call {
    bool done;
    int status;
    Spool__PublishBatchReply *reply;
};

static void raw_call_cb(void *arg, int status, const struct spool_err *err, const void *body,
                        size_t len)
{
    (void)err;
    struct raw_call *c = arg;
    c->done = true;
    c->status = status;
    if (status == 0)
        c->reply = spool__publish_batch_reply__unpack(NULL, len, body);
}

static bool raw_done(void *arg)
{
    return ((struct raw_call *)arg)->done;
}

static size_t raw_request(const char *channel, size_t count, uint8_t *out)
{
    Spool__Record recs[4];
    Spool__Record *ptrs[4];
    for (size_t i = 0; i < count; i++) {
        spool__record__init(&recs[i]);
        recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
        recs[i].data.data = (uint8_t *)"payload";
        recs[i].data.len = 7;
        ptrs[i] = &recs[i];
    }
    Spool__PublishRequest r = SPOOL__PUBLISH_REQUEST__INIT;
    r.channel = (char *)channel;
    r.n_messages = count;
    r.messages = ptrs;
    return spool__publish_request__pack(&r, out);
}

Test(node, served_publish_batch_answers_each_request)
{
    struct tnode t[3];
    uint64_t leader_id;
    struct spool_node *follower = one_shard_follower(t, &leader_id);
    for (int unknown = 0; unknown < 2; unknown++) {
        const char *ch[3] = {unknown ? "raw-c" : "raw-a", "", unknown ? "raw-d" : "raw-b"};
        size_t counts[3] = {1, 1, 3};
        uint8_t body[1024], req[256];
        size_t len = 0;
        for (int i = 0; i < 3; i++) {
            size_t n = raw_request(ch[i], counts[i], req);
            cr_assert_lt(n, 128);
            body[len++] = 0x0a; /* requests = 1 */
            body[len++] = (uint8_t)n;
            memcpy(body + len, req, n);
            len += n;
        }
        if (unknown) {
            body[len++] = 0x10; /* field 2, a varint: not what protobuf-c writes here */
            body[len++] = 0x01;
        }
        struct raw_call c = {0};
        cr_assert_eq(spool_rpc_call(follower->rpc, leader_id, SPOOL_METHOD_PUBLISH_BATCH, body,
                                    len, 10000, raw_call_cb, &c), 0);
        cr_assert(run_until(raw_done, &c, 15000), "batch call did not complete");
        cr_assert_eq(c.status, 0);
        cr_assert(c.reply != NULL && c.reply->n_replies == 3);
        for (int i = 0; i < 3; i++) {
            const Spool__PublishReply *r = c.reply->replies[i];
            cr_assert(r->status != NULL);
            if (i == 1) {
                cr_assert_eq(r->status->code, SPOOL_EINVAL, "an empty channel is refused");
                continue;
            }
            cr_assert_eq(r->status->code, 0, "request %d: %s", i, r->status->msg);
            cr_assert_eq(r->n_seqs, counts[i]);
            cr_assert_eq(r->seqs[0], 1);
            struct spool_read_req rq = {.channel = ch[i], .leader = true};
            struct rd rr;
            read_sync(t[leader_id - 1].node, &rq, &rr); /* read_cb checks each payload */
            cr_assert_eq(rr.n, counts[i]);
        }
        spool__publish_batch_reply__free_unpacked(c.reply, NULL);
    }
    for (int i = 0; i < 3; i++)
        node_stop(&t[i]);
}

struct applied_want {
    struct spool_node *node;
    uint32_t shard;
    uint64_t records;
};

static bool store_has(void *arg)
{
    struct applied_want *w = arg;
    struct spool_shard_status st;
    spool_node_shard_status(w->node, w->shard, &st);
    return st.store.records >= w->records;
}

/* A replica that comes back after the others compacted their logs catches up by snapshot, and
 * then serves reads and feeds subscribers locally. */
/* One storage node plus a gateway-only node: both become ready within a few election timeouts
 * (the storage node does not wait for the gateway, which holds no replica and no meta vote), and
 * a publish through the gateway lands on the storage node. */
Test(node, one_storage_node_and_a_gateway_become_ready)
{
    struct tnode t[2];
    char peers[80];
    for (int i = 0; i < 2; i++)
        snprintf(t[i].listen, sizeof t[i].listen, "127.0.0.1:%u", free_port());
    snprintf(peers, sizeof peers, "1@%s", t[0].listen);
    node_start(&t[1], 2, peers, 2, true); /* the gateway first: it must wait for the map */
    node_start(&t[0], 1, peers, 2, false);
    struct tnode *storage[] = {&t[0], NULL};
    cr_assert(run_until(ready_cond, storage, 5000), "storage node never became ready");
    struct tnode *all[] = {&t[0], &t[1], NULL};
    cr_assert(run_until(ready_cond, all, 5000), "gateway never became ready");
    cr_assert_eq(spool_node_slot_map_epoch(t[1].node), 1);
    struct pub p;
    publish_sync(t[1].node, "solo", NULL, 1, &p);
    node_stop(&t[1]);
    node_stop(&t[0]);
}

/* --tail-cache-bytes is a node budget: 4 local shards share it, so after writing 4x the budget
 * across channels of every shard the caches together hold at most the budget. */
Test(node, tail_cache_budget_is_per_node)
{
    tail_cache_bytes = 64 << 10;
    struct tnode t;
    snprintf(t.listen, sizeof t.listen, "127.0.0.1:%u", free_port());
    node_start(&t, 1, "", 4, false);
    tail_cache_bytes = 1 << 20;
    struct tnode *all[] = {&t, NULL};
    cr_assert(run_until(ready_cond, all, 10000), "node never became ready");
    static uint8_t data[2048];
    memset(data, 'x', sizeof data);
    Spool__Record recs[8];
    const Spool__Record *ptrs[8];
    for (size_t i = 0; i < 8; i++) {
        spool__record__init(&recs[i]);
        recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
        recs[i].data.data = data;
        recs[i].data.len = sizeof data;
        ptrs[i] = &recs[i];
    }
    struct pub p[16];
    bool shard_used[4] = {false};
    for (int c = 0; c < 16; c++) { /* 16 x 8 x 2 KiB = 256 KiB */
        char channel[16];
        snprintf(channel, sizeof channel, "tail-%d", c);
        shard_used[spool_node_shard_of(t.node, channel)] = true;
        memset(&p[c], 0, sizeof p[c]);
        cr_assert_eq(spool_node_publish(t.node, channel, ptrs, 8, publish_cb, &p[c]), 0);
    }
    struct pubs all_pubs = {p, 16};
    cr_assert(run_until(pubs_done, &all_pubs, 15000), "publishes did not complete");
    uint64_t cached = 0;
    for (uint32_t s = 0; s < 4; s++) {
        cr_assert(shard_used[s], "channel names cover shard %u", s);
        struct spool_shard_status st;
        spool_node_shard_status(t.node, s, &st);
        cr_assert(st.local_replica);
        cr_assert_leq(st.store.tail_cache_bytes, (64 << 10) / 4, "shard %u over its share", s);
        cached += st.store.tail_cache_bytes;
    }
    cr_assert_gt(cached, 0);
    cr_assert_leq(cached, 64 << 10, "all tail caches within the node budget");
    for (int c = 0; c < 16; c++)
        cr_assert_eq(p[c].status, 0, "%s", p[c].msg);
    node_stop(&t);
}

Test(node, lagging_replica_catches_up_by_snapshot)
{
    struct tnode t[3];
    char peers[256];
    three_nodes_start(t, 3, 1, peers, sizeof peers);
    struct tnode *all[] = {&t[0], &t[1], &t[2], NULL};
    cr_assert(run_until(ready_cond, all, 20000), "cluster never became ready");

    const char *channel = "snap";
    struct pub p;
    publish_sync(t[0].node, channel, NULL, 1, &p);
    node_stop(&t[2]);
    /* 64 is the floor for threshold and trailing: 300 entries force at least one snapshot and
     * drop the entries node 3 is missing from the others' logs. */
    for (int i = 0; i < 300; i++)
        publish_sync(t[i % 2].node, channel, NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 301);

    node_start(&t[2], 3, peers, 1, false);
    struct sub_log log = {0};
    cr_assert_eq(spool_node_subscribe(t[2].node, channel, record_cb, &log, &log.sub), 0);
    struct applied_want w = {t[2].node, 0, 301};
    cr_assert(run_until(store_has, &w, 20000), "node 3 never caught up");

    /* Served locally now: node 3's replica has applied everything. */
    struct rd r;
    struct spool_read_req req = {.channel = channel, .after_seq = 290, .min_seq = 301};
    read_sync(t[2].node, &req, &r);
    cr_assert_eq(r.n, 11);
    cr_assert_eq(r.seqs[10], 301);

    /* Node 3's subscriber gets what comes next, once, in order. (It subscribed while its
     * replica was still behind, so it may also have seen the records the snapshot brought, in
     * order: the topic fills that gap from the restored store.) */
    publish_sync(t[1].node, channel, NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 302);
    cr_assert(run_until(log_reached_302, &log, 10000), "subscriber stuck at %zu records", log.n);
    cr_assert_not(log.out_of_order);

    for (int i = 0; i < 3; i++)
        node_stop(&t[i]);
}

/* Without a quorum a publish fails within forward_timeout_ms (never hangs, never succeeds); a
 * read without min_seq is still served by the local replica; with the quorum back, publishing
 * works again. */
Test(node, no_quorum_fails_in_bounded_time_then_recovers)
{
    forward_timeout_ms = 1500;
    struct tnode t[3];
    char peers[256];
    three_nodes_start(t, 3, 1, peers, sizeof peers);
    struct tnode *all[] = {&t[0], &t[1], &t[2], NULL};
    cr_assert(run_until(ready_cond, all, 20000), "cluster never became ready");
    struct pub p;
    publish_sync(t[0].node, "q", NULL, 1, &p);
    cr_assert_eq(p.seqs[0], 1);
    /* The local read below must find seq 1 on node 1's own replica, which a follower applies a
     * heartbeat after the leader acknowledged it. */
    cr_assert(run_until(q_applied_everywhere, all, 10000), "replicas never applied seq 1");
    node_stop(&t[1]);
    node_stop(&t[2]);

    uv_update_time(&loop);
    uint64_t started = uv_now(&loop);
    publish_start(t[0].node, "q", NULL, 1, &p);
    cr_assert(run_until(pub_done, &p, 10000), "publish without quorum never completed");
    uint64_t took = uv_now(&loop) - started;
    cr_assert(p.status == SPOOL_EBUSY || p.status == SPOOL_ETIMEOUT, "status %d: %s", p.status,
              p.msg);
    cr_assert_geq(took, 1400);
    cr_assert_lt(took, 5000, "took %llu ms", (unsigned long long)took);

    struct rd r;
    struct spool_read_req stale = {.channel = "q"};
    read_sync(t[0].node, &stale, &r);
    cr_assert_eq(r.n, 1);

    forward_timeout_ms = 8000;
    node_start(&t[1], 2, peers, 1, false);
    publish_sync(t[1].node, "q", NULL, 1, &p);
    /* Seq 2 unless the refused publish above was committed after all by the new majority (its
     * entry may have reached the log before the others stopped): either way, dense. */
    cr_assert(p.seqs[0] == 2 || p.seqs[0] == 3, "seq %llu", (unsigned long long)p.seqs[0]);
    node_stop(&t[0]);
    node_stop(&t[1]);
}
