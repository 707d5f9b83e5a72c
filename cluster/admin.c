/*
 * Cluster administration (see cluster/admin.h): member probes, the leader's replica progress,
 * and leader spreading (one pass = count the leaders this node knows of, give away this node's
 * excess leaderships; a periodic timer and SPOOL_METHOD_REBALANCE messages run passes).
 */
#include "cluster/admin.h"

#include <stdlib.h>
#include <string.h>

#include "cluster/node_int.h"
#include "common/log.h"

/* ---- member probes ---- */

struct probe {
    struct spool_node *node;
    struct spool_members members;
    unsigned pending;
    uv_timer_t done; /* completes the probe on the loop when no call is pending */
    spool_members_cb cb;
    void *arg;
};

static void probe_freed_cb(uv_handle_t *h) { free(h->data); }

static void probe_finish(struct probe *p)
{
    p->cb(p->arg, &p->members);
    uv_close((uv_handle_t *)&p->done, probe_freed_cb);
}

static void probe_timer_cb(uv_timer_t *t) { probe_finish(t->data); }

struct probe_call {
    struct probe *probe;
    size_t index;
};

static void probe_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                           size_t len)
{
    (void)err, (void)body, (void)len;
    struct probe_call *c = arg;
    struct probe *p = c->probe;
    /* Any answer, even an error reply, means the node is up and talking. */
    p->members.nodes[c->index].reachable =
        status != SPOOL_ETIMEOUT && status != SPOOL_EIO && status != SPOOL_ECLOSED;
    free(c);
    if (--p->pending == 0)
        probe_finish(p);
}

int spool_node_probe_members(struct spool_node *n, uint64_t timeout_ms, spool_members_cb cb,
                             void *arg)
{
    if (n->closing || n->rpc == NULL)
        return SPOOL_ECLOSED;
    struct probe *p = calloc(1, sizeof *p);
    if (p == NULL)
        return SPOOL_ENOMEM;
    p->node = n;
    p->cb = cb;
    p->arg = arg;
    uv_timer_init(n->loop, &p->done);
    p->done.data = p;
    const struct spool_placement *pl = &n->placement;
    p->members.n = pl->n_nodes;
    uint8_t buf[16];
    Spool__LeaderQuery q = SPOOL__LEADER_QUERY__INIT;
    size_t len = spool__leader_query__pack(&q, buf);
    p->pending = 1; /* held until every call is issued */
    for (size_t i = 0; i < pl->n_nodes; i++) {
        struct spool_member *m = &p->members.nodes[i];
        m->id = pl->nodes[i].id;
        memcpy(m->address, pl->nodes[i].address, sizeof m->address);
        m->self = m->reachable = m->id == n->cfg.id;
        if (m->self)
            continue;
        struct probe_call *c = malloc(sizeof *c);
        if (c == NULL)
            continue;
        *c = (struct probe_call){p, i};
        if (spool_rpc_call(n->rpc, m->id, SPOOL_METHOD_LEADER, buf, len, timeout_ms,
                           probe_reply_cb, c) != 0)
            free(c);
        else
            p->pending++;
    }
    if (--p->pending == 0)
        uv_timer_start(&p->done, probe_timer_cb, 0, 0);
    return 0;
}

/* ---- replicas ---- */

uint32_t spool_node_replicas(const struct spool_node *n) { return n->placement.replicas; }

uint64_t spool_node_replica(const struct spool_node *n, uint32_t shard, uint32_t i)
{
    if (shard >= n->placement.shards || i >= spool_placement_replica_count(&n->placement, shard))
        return 0;
    return spool_placement_replica(&n->placement, shard, i)->id;
}

bool spool_node_replica_match(const struct spool_node *n, uint32_t shard, uint64_t id,
                              uint64_t *match_index)
{
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    if (sh == NULL || !spool_shard_is_leader(sh))
        return false;
    raft_index idx = 0;
    if (raft_match_index(&sh->raft, id, &idx) != 0)
        return false;
    *match_index = idx;
    return true;
}

uint32_t spool_node_slot_of(const struct spool_node *n, const char *channel)
{
    (void)n;
    return spool_slot_of(channel, strlen(channel));
}

/* ---- leader spreading ---- */

/* Index of node `id` in the placement, or n_nodes. */
static size_t node_index(const struct spool_placement *p, uint64_t id)
{
    size_t i = 0;
    while (i < p->n_nodes && p->nodes[i].id != id)
        i++;
    return i;
}

/* Whether a membership change in the map (cluster/membership.c) takes `id` out of shard s: the
 * node a remove takes out of the cluster, or any replica not in the shard's target set while
 * the shard still has one. Its leadership must not go there: the driver hands the leadership
 * of a leaving replica to a remaining voter before removing it, and giving it back (the leaving
 * node is often the shard's home and, losing its shards, leads the fewest) undoes that hand-over
 * every pass -- a remove whose new leader could not finish within one rebalance interval (a
 * loaded machine) never finished. */
static bool leaving(const struct spool_node *n, uint32_t s, uint64_t id)
{
    const struct spool_slot_map *map = n->meta ? spool_meta_map(n->meta) : NULL;
    if (map == NULL || map->epoch == 0 ||
        (map->change != SPOOL_CHANGE_ADD && map->change != SPOOL_CHANGE_REMOVE))
        return false;
    if (map->change == SPOOL_CHANGE_REMOVE && id == map->change_node)
        return true;
    if (s >= map->p.shards || s >= SPOOL_MAX_SHARDS || map->n_target[s] == 0)
        return false;
    for (uint8_t i = 0; i < map->n_target[s] && i < SPOOL_MAX_REPLICAS; i++)
        if (map->target[s][i] == id)
            return false;
    return true;
}

/* Where shard s's leadership should go: its home if that leads fewer than `fair`, else the
 * replica leading the fewest (fewer than `fair`); 0 = nowhere. Never a replica that a running
 * membership change takes out of the shard. */
static uint64_t move_target(const struct spool_node *n, uint32_t s, const unsigned *count,
                            unsigned fair)
{
    const struct spool_placement *p = &n->placement;
    uint64_t best = 0;
    unsigned best_count = fair;
    for (uint32_t i = 0; i < spool_placement_replica_count(p, s); i++) {
        uint64_t id = spool_placement_replica(p, s, i)->id;
        unsigned c = count[node_index(p, id)];
        if (id == n->cfg.id || c >= fair || leaving(n, s, id))
            continue;
        if (i == 0)
            return id; /* home */
        if (c < best_count) {
            best = id;
            best_count = c;
        }
    }
    return best;
}

static size_t pass(struct spool_node *n, bool all, struct spool_leader_move *moves, size_t max)
{
    const struct spool_placement *p = &n->placement;
    if (n->closing || n->cfg.gateway_only || p->n_nodes < 2)
        return 0;
    unsigned count[SPOOL_MAX_NODES + 1] = {0}; /* [n_nodes] collects unknown leaders */
    for (uint32_t s = 0; s < p->shards; s++) {
        struct spool_shard_status st;
        spool_node_shard_status(n, s, &st);
        if (st.leader_id != 0)
            count[node_index(p, st.leader_id)]++;
    }
    unsigned fair = (unsigned)((p->shards + p->n_nodes - 1) / p->n_nodes);
    size_t self = node_index(p, n->cfg.id), started = 0;
    /* Two rounds: first shards whose home can take them, then any under-loaded replica. */
    for (int round = 0; round < 2; round++) {
        for (uint32_t s = 0; s < p->shards && count[self] > fair; s++) {
            struct spool_shard *sh = spool_node_local_shard(n, s);
            if (sh == NULL || !spool_shard_is_leader(sh))
                continue;
            uint64_t to = move_target(n, s, count, fair);
            if (to == 0 || (round == 0 && to != spool_placement_replica(p, s, 0)->id))
                continue;
            if (spool_shard_transfer(sh, to) != 0)
                continue;
            SPOOL_INFO("node.rebalance", "shard=%u from=%llu to=%llu led=%u fair=%u", s,
                       (unsigned long long)n->cfg.id, (unsigned long long)to, count[self], fair);
            count[self]--;
            count[node_index(p, to)]++;
            if (started < max)
                moves[started] = (struct spool_leader_move){s, to};
            started++;
            if (!all)
                return started;
        }
    }
    return started;
}

size_t spool_node_rebalance(struct spool_node *n, bool all, struct spool_leader_move *moves,
                            size_t max)
{
    const struct spool_placement *p = &n->placement;
    if (all && n->rpc != NULL && !n->closing)
        for (size_t i = 0; i < p->n_nodes; i++)
            if (p->nodes[i].id != n->cfg.id) /* best effort: an unreachable node is skipped */
                spool_rpc_send(n->rpc, p->nodes[i].id, SPOOL_METHOD_REBALANCE, NULL, 0);
    return pass(n, all, moves, max);
}

static void rebalance_timer_cb(uv_timer_t *t)
{
    struct spool_node *n = t->data;
    if (spool_node_ready(n))
        pass(n, false, NULL, 0);
}

void spool_node_rebalance_arrived(struct spool_node *n, uint64_t from)
{
    SPOOL_INFO("node.rebalance_asked", "from=%llu", (unsigned long long)from);
    pass(n, true, NULL, 0);
}

int spool_rebalancer_start(struct spool_node *n, struct spool_err *err)
{
    uint64_t ms = n->cfg.rebalance_interval_ms;
    if (ms == 0 || n->cfg.gateway_only)
        return 0;
    if (uv_timer_init(n->loop, &n->rebalance_timer) != 0)
        return spool_err_set(err, SPOOL_EIO, "rebalance timer");
    n->rebalance_timer.data = n;
    n->rebalance_started = true;
    uv_timer_start(&n->rebalance_timer, rebalance_timer_cb, ms, ms);
    return 0;
}

static void rebalance_timer_closed_cb(uv_handle_t *h)
{
    struct spool_node *n = h->data;
    n->pending_close--;
    spool_node_finish_close(n);
}

void spool_rebalancer_close(struct spool_node *n)
{
    if (!n->rebalance_started)
        return;
    n->rebalance_started = false;
    n->pending_close++;
    uv_close((uv_handle_t *)&n->rebalance_timer, rebalance_timer_closed_cb);
}
