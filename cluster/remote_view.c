/*
 * The cluster as a node without replicas sees it (gateway-only nodes): the slot map, fetched from
 * a storage node's metadata replica (SPOOL_METHOD_SLOT_MAP), and the leader of every shard, asked
 * of the shard's replicas (SPOOL_METHOD_LEADER) whenever the router's hint is unknown.
 *
 * One timer ticks every 250 ms: a tick asks for the map while it is unknown (then every 5 s;
 * every tick while a membership change or resharding runs, and at once after a request met
 * SPOOL_EMOVED: resharding moved a slot, cluster/reshard.c) and
 * for the leader of each shard whose hint is unknown (the router forgets a hint when the node it
 * names stops answering). A tick sends the calls it needs and later ticks wait until all of them
 * have answered (each is bounded by its RPC timeout): never more than one round in flight.
 * Each call carries a small context freed by its callback, its one completion path; spool_rpc
 * fails pending calls with SPOOL_ECLOSED when the node closes, before the node is freed.
 *
 * Until the map arrives the node routes with the configuration-derived map, which is what the
 * metadata group's epoch 1 holds; readiness waits for both the map and every leader.
 */
#include <stdlib.h>

#include "cluster/node_int.h"
#include "common/log.h"

#define VIEW_FAST_MS 250
#define VIEW_SLOW_MS 5000
#define VIEW_CALL_TIMEOUT_MS 1000

struct view_call {
    struct spool_node *node;
    uint32_t shard; /* leader queries */
};

static bool view_complete(const struct spool_node *n)
{
    if (n->view.epoch == 0)
        return false;
    for (uint32_t s = 0; s < n->placement.shards; s++)
        if (n->leader_hint[s] == 0)
            return false;
    return true;
}

static void slot_map_reply_cb(void *arg, int status, const struct spool_err *err,
                              const void *body, size_t len)
{
    struct view_call *c = arg;
    struct spool_node *n = c->node;
    free(c);
    n->view.in_flight--;
    if (status != 0 || n->closing)
        return;
    Spool__SlotMapReply *r = spool__slot_map_reply__unpack(NULL, len, body);
    struct spool_slot_map map;
    if (r != NULL && r->status != NULL && r->status->code == 0 && r->map != NULL &&
        spool_slot_map_from_proto(r->map, &map) == 0 && map.epoch > n->view.epoch &&
        spool_node_adopt_slot_map(n, &map)) {
        n->view.epoch = map.epoch;
        SPOOL_INFO("view.slot_map", "epoch=%llu", (unsigned long long)map.epoch);
    }
    if (r)
        spool__slot_map_reply__free_unpacked(r, NULL);
}

static void leader_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                            size_t len)
{
    struct view_call *c = arg;
    struct spool_node *n = c->node;
    uint32_t shard = c->shard;
    free(c);
    n->view.in_flight--;
    if (status != 0 || n->closing)
        return;
    Spool__LeaderReply *r = spool__leader_reply__unpack(NULL, len, body);
    if (r != NULL && r->status != NULL && r->status->code == 0 && r->leader_id != 0 &&
        n->leader_hint[shard] == 0)
        n->leader_hint[shard] = r->leader_id;
    if (r)
        spool__leader_reply__free_unpacked(r, NULL);
}

static void call(struct spool_node *n, uint64_t target, uint32_t method, uint32_t shard,
                 spool_rpc_call_cb cb)
{
    struct view_call *c = malloc(sizeof *c);
    if (c == NULL)
        return;
    c->node = n;
    c->shard = shard;
    uint8_t buf[32];
    size_t len = 0;
    if (method == SPOOL_METHOD_LEADER) {
        Spool__LeaderQuery q = SPOOL__LEADER_QUERY__INIT;
        q.shard = shard;
        len = spool__leader_query__pack(&q, buf);
    }
    if (spool_rpc_call(n->rpc, target, method, buf, len, VIEW_CALL_TIMEOUT_MS, cb, c) != 0) {
        free(c);
        return;
    }
    n->view.in_flight++;
}

static void view_timer_cb(uv_timer_t *t)
{
    struct spool_node *n = t->data;
    if (n->closing || n->rpc == NULL || n->view.in_flight > 0)
        return;
    const struct spool_placement *p = &n->placement;
    unsigned a = n->view.attempt++;
    /* map_now: a request met SPOOL_EMOVED (resharding moved its slot): the map at once. */
    /* While a change runs (resharding moves slots every few hundred ms), every tick. */
    bool changing = n->view_change != SPOOL_CHANGE_NONE;
    if (n->view.epoch == 0 || n->view.map_now || changing ||
        a % (VIEW_SLOW_MS / VIEW_FAST_MS) == 0) {
        n->view.map_now = false;
        call(n, p->nodes[a % p->n_nodes].id, SPOOL_METHOD_SLOT_MAP, 0, slot_map_reply_cb);
    }
    for (uint32_t s = 0; s < p->shards; s++)
        if (n->leader_hint[s] == 0)
            call(n, spool_placement_replica(p, s, a % p->replicas)->id, SPOOL_METHOD_LEADER, s,
                 leader_reply_cb);
}

int spool_remote_view_start(struct spool_node *n, struct spool_err *err)
{
    if (uv_timer_init(n->loop, &n->view.timer) != 0)
        return spool_err_set(err, SPOOL_EIO, "view timer");
    n->view.timer.data = n;
    n->view.started = true;
    uv_timer_start(&n->view.timer, view_timer_cb, 0, VIEW_FAST_MS);
    return 0;
}

static void view_timer_closed_cb(uv_handle_t *h)
{
    struct spool_node *n = h->data;
    n->pending_close--;
    spool_node_finish_close(n);
}

void spool_remote_view_close(struct spool_node *n)
{
    if (!n->view.started)
        return;
    n->view.started = false;
    n->pending_close++;
    uv_close((uv_handle_t *)&n->view.timer, view_timer_closed_cb);
}

bool spool_remote_view_ready(const struct spool_node *n)
{
    return view_complete(n);
}
