/*
 * A Spool node's lifecycle and status (the request paths are router.c and subscription.c).
 *
 * Init, in order: copy the configuration, parse the peer list (the storage nodes), derive the
 * placement (cluster/placement.h), open the cluster port (mux) and the RPC layer on it, then
 * start the metadata replica and the shard replicas this node holds (cluster/replicas.c). A node
 * restarted on the same data directory finds its Raft logs and stores and resumes where it
 * stopped. Each map the metadata group applies replaces the placement (membership changes move
 * replicas, cluster/membership.c; resharding grows the shard count and moves slots,
 * cluster/reshard.c) and the local replicas follow it. The map is the authority on the shard
 * count (--shards only seeds the bootstrap map): the per-shard arrays have room for
 * SPOOL_MAX_SHARDS.
 *
 * Close: mark closing (new calls fail with SPOOL_ECLOSED), fail idle ops, drop subscriptions,
 * close every shard (each hands its leadership to another voter first), then the RPC layer
 * (failing forwarded calls), then the mux; the node is freed, and the caller's callback called,
 * once all of that and every op in flight has completed.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/node_int.h"
#include "common/log.h"

/* Gives every zero field its default (init applies it to the caller's copy). */
static void config_fill_zero(struct spool_node_config *cfg)
{
    if (cfg->data_dir == NULL)
        cfg->data_dir = "./data";
    if (cfg->cluster_listen == NULL)
        cfg->cluster_listen = "127.0.0.1:7400";
    if (cfg->peers == NULL)
        cfg->peers = "";
    if (cfg->id == 0)
        cfg->id = 1;
    if (cfg->shards == 0)
        cfg->shards = 4;
    if (cfg->replicas == 0)
        cfg->replicas = 3;
    if (cfg->snapshot_threshold == 0)
        cfg->snapshot_threshold = 1024;
    if (cfg->snapshot_trailing == 0)
        cfg->snapshot_trailing = 256;
    if (cfg->election_timeout_ms == 0)
        cfg->election_timeout_ms = 1000;
    if (cfg->heartbeat_ms == 0)
        cfg->heartbeat_ms = 100;
    if (cfg->forward_timeout_ms == 0)
        cfg->forward_timeout_ms = 5000;
    if (cfg->dedup_window_ms == 0)
        cfg->dedup_window_ms = 120000;
    spool_store_config_defaults(&cfg->store);
}

void spool_node_config_defaults(struct spool_node_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    config_fill_zero(cfg);
}

struct spool_shard *spool_node_local_shard(const struct spool_node *n, uint32_t shard)
{
    if (shard >= n->placement.shards || n->shards == NULL)
        return NULL;
    struct spool_shard *sh = n->shards[shard];
    return sh && !sh->closing ? sh : NULL;
}

uint64_t spool_node_route_target(struct spool_node *n, uint32_t shard, unsigned attempt)
{
    uint64_t self = n->cfg.id;
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    if (sh != NULL) {
        uint64_t leader = spool_shard_leader(sh);
        if (leader != 0 && leader != self)
            return leader;
        if (leader == self)
            return 0; /* leading but not accepting (closing): wait for the next leader */
    }
    uint64_t hint = n->leader_hint[shard];
    if (hint != 0 && hint != self)
        return hint;
    if (sh != NULL)
        return 0; /* an election is running in a group we are part of: wait for it */
    uint32_t r = spool_placement_replica_count(&n->placement, shard);
    for (uint32_t i = 0; i < r; i++) {
        const struct spool_peer *p =
            spool_placement_replica(&n->placement, shard, (attempt + i) % r);
        if (p->id != self)
            return p->id;
    }
    return 0;
}

static char *dup_or_null(const char *s, bool *failed)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        *failed = true;
    return d;
}

static void node_free(struct spool_node *n)
{
    free(n->shards);
    free(n->leader_hint);
    free(n->topic_buckets);
    free(n->data_dir);
    free(n->cluster_listen);
    free(n->peers);
    free(n);
}

static void close_stage(struct spool_node *n);

static void shard_closed_cb(struct spool_shard *s)
{
    struct spool_node *n = s->data;
    n->shards[s->id] = NULL;
    n->shards_open--;
    close_stage(n);
}

static void meta_closed_cb(void *arg)
{
    struct spool_node *n = arg;
    n->meta = NULL;
    n->shards_open--;
    close_stage(n);
}

static void rpc_closed_cb(void *arg)
{
    struct spool_node *n = arg;
    n->rpc = NULL;
    n->rpc_closed = true;
    close_stage(n);
}

static void mux_closed_cb(void *arg)
{
    struct spool_node *n = arg;
    n->mux = NULL;
    n->mux_closed = true;
    close_stage(n);
}

/* Advances the close: shards first, then RPC, then the mux, then the node itself. */
static void close_stage(struct spool_node *n)
{
    if (n->shards_open > 0)
        return;
    if (!n->rpc_closed) {
        if (n->rpc == NULL) {
            n->rpc_closed = true;
        } else {
            struct spool_rpc *r = n->rpc;
            n->rpc = NULL;
            spool_rpc_close(r, rpc_closed_cb, n);
            return;
        }
    }
    if (!n->mux_closed) {
        if (n->mux == NULL) {
            n->mux_closed = true;
        } else {
            struct spool_mux *m = n->mux;
            n->mux = NULL;
            spool_mux_close(m, mux_closed_cb, n);
            return;
        }
    }
    spool_node_finish_close(n);
}

void spool_node_finish_close(struct spool_node *n)
{
    if (!n->closing || n->shards_open > 0 || !n->rpc_closed || !n->mux_closed ||
        n->pending_close > 0)
        return;
    void (*cb)(void *) = n->close_cb;
    void *arg = n->close_arg;
    n->close_cb = NULL;
    SPOOL_INFO("node.closed", "id=%llu", (unsigned long long)n->cfg.id);
    node_free(n);
    if (cb)
        cb(arg);
}

void spool_node_close(struct spool_node *n, void (*cb)(void *arg), void *arg)
{
    if (n->closing)
        return;
    n->closing = true;
    n->close_cb = cb;
    n->close_arg = arg;
    spool_router_close(n);
    spool_serve_close(n);
    spool_subs_close(n);
    spool_remote_view_close(n);
    spool_rebalancer_close(n);
    spool_expiry_close(n);
    spool_eph_close(n);
    spool_presence_reaper_close(n);
    spool_membership_close(n);
    n->shards_open = n->meta != NULL;
    spool_reshard_close(n);
    for (uint32_t i = 0; i < SPOOL_MAX_SHARDS; i++)
        if (n->shards[i] != NULL)
            n->shards_open++; /* retiring ones too: replicas.c reports them */
    if (n->meta != NULL)
        spool_meta_close(n->meta, meta_closed_cb, n);
    for (uint32_t i = 0; i < SPOOL_MAX_SHARDS; i++)
        if (n->shards[i] != NULL && !n->shards[i]->closing)
            spool_shard_close(n->shards[i], shard_closed_cb);
    close_stage(n);
}

void spool_node_shard_closed(struct spool_node *n)
{
    n->shards_open--;
    close_stage(n);
}

/* Where to dial a peer: its map address, unless it is the configured home node (cfg.home_id). */
static const char *node_peer_address(const struct spool_node *n, const struct spool_peer *p)
{
    if (n->cfg.home_id != 0 && p->id == n->cfg.home_id && n->cfg.home_address[0] != '\0')
        return n->cfg.home_address;
    return p->address;
}

bool spool_node_adopt_slot_map(struct spool_node *n, const struct spool_slot_map *map)
{
    if (map->p.n_nodes == 0) { /* an old map: membership stays the configuration's */
        if (map->p.shards != n->placement.shards) {
            SPOOL_ERROR("node.slot_map_mismatch", "epoch=%llu shards=%u configured=%u",
                        (unsigned long long)map->epoch, map->p.shards, n->placement.shards);
            return false;
        }
        memcpy(n->placement.slot_shard, map->p.slot_shard, sizeof n->placement.slot_shard);
        return true;
    }
    /* The map is the authority on the shard count (--shards only seeds the bootstrap map):
     * resharding (cluster/reshard.c) grows it; n->shards / leader_hint have room for all. */
    if (map->p.shards != n->placement.shards)
        SPOOL_INFO("node.shard_count", "epoch=%llu shards=%u was=%u",
                   (unsigned long long)map->epoch, map->p.shards, n->placement.shards);
    bool slots_moved =
        memcmp(n->placement.slot_shard, map->p.slot_shard, sizeof map->p.slot_shard) != 0;
    n->placement = map->p;
    n->view_change = map->change;
    n->view_change_node = map->change_node;
    spool_reshard_view_update(n, map);
    if (slots_moved)
        spool_subs_slots_moved(n); /* topics of moved slots follow their new shard */
    for (size_t i = 0; i < map->p.n_nodes && n->rpc != NULL; i++)
        if (map->p.nodes[i].id != n->cfg.id)
            spool_rpc_set_peer(n->rpc, map->p.nodes[i].id, node_peer_address(n, &map->p.nodes[i]));
    return true;
}

/* A map applied by the metadata group becomes the routing table and the replica placement. */
static void slot_map_applied_cb(void *arg, const struct spool_slot_map *map)
{
    struct spool_node *n = arg;
    if (spool_node_adopt_slot_map(n, map))
        spool_replicas_reconcile(n);
}

static int start_meta(struct spool_node *n, struct spool_err *err)
{
    if (n->cfg.gateway_only)
        return 0;
    struct spool_meta_config mc = {
        .node_id = n->cfg.id,
        .node_address = spool_node_self_address(n),
        .data_dir = n->data_dir,
        .placement = &n->placement,
        .join = n->cfg.join || n->epoch_mark > 1,
        .election_timeout_ms = n->cfg.election_timeout_ms,
        .heartbeat_ms = n->cfg.heartbeat_ms,
        .on_map = slot_map_applied_cb,
        .cb_arg = n,
    };
    return spool_meta_init(&n->meta, n->loop, n->mux, &mc, err);
}

int spool_node_init(struct spool_node **out, uv_loop_t *loop, const struct spool_node_config *cfg,
                    struct spool_err *err)
{
    *out = NULL;
    struct spool_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "node");
    bool failed = false;
    n->loop = loop;
    n->cfg = *cfg;
    config_fill_zero(&n->cfg);
    n->data_dir = dup_or_null(n->cfg.data_dir, &failed);
    n->cluster_listen = dup_or_null(n->cfg.cluster_listen, &failed);
    n->peers = dup_or_null(n->cfg.peers, &failed);
    if (failed) {
        node_free(n);
        return spool_err_set(err, SPOOL_ENOMEM, "node config");
    }
    if (n->cfg.gateway_only)
        n->cfg.join = false; /* a joining node's client loops (gateway/workers.c) */
    n->cfg.data_dir = n->data_dir;
    n->cfg.cluster_listen = n->cluster_listen;
    n->cfg.peers = n->peers;
    n->cfg.store.dir = NULL;

    struct spool_peer peers[SPOOL_MAX_NODES]; /* scratch, copied into the placement */
    size_t n_peers = 0;
    int rc = spool_peers_parse(n->peers, peers, SPOOL_MAX_NODES, &n_peers, err);
    if (rc != 0)
        goto err_free;

    rc = spool_mux_init(&n->mux, loop, cfg->id, n->cluster_listen, err);
    if (rc != 0)
        goto err_free;
    if (n_peers == 0 && n->cfg.join) {
        rc = spool_err_set(err, SPOOL_EINVAL, "a joining node needs --peers (running nodes to "
                           "contact)");
        goto err_mux;
    }
    if (n_peers == 0 && n->cfg.gateway_only) {
        rc = spool_err_set(err, SPOOL_EINVAL, "a gateway-only node needs --peers (the storage "
                           "nodes it serves)");
        goto err_mux;
    }
    if (n_peers == 0) {
        /* Single node: its own (bound) address is the whole cluster. */
        peers[0].id = cfg->id;
        snprintf(peers[0].address, sizeof peers[0].address, "%s", spool_mux_address(n->mux));
        n_peers = 1;
    }
    rc = spool_placement_init(&n->placement, peers, n_peers, n->cfg.shards, n->cfg.replicas, err);
    if (rc != 0)
        goto err_mux;
    if (cfg->gateway_only && spool_placement_address(&n->placement, cfg->id) != NULL) {
        /* The others would place replicas (and metadata votes) on it: quorums that never form. */
        rc = spool_err_set(err, SPOOL_EINVAL,
                           "gateway-only node %llu must not be listed in --peers (the peers are "
                           "the storage nodes)",
                           (unsigned long long)cfg->id);
        goto err_mux;
    }
    if (cfg->join && (cfg->gateway_only || spool_placement_address(&n->placement, cfg->id))) {
        rc = spool_err_set(err, SPOOL_EINVAL, "a joining node must be a storage node that is "
                           "not in --peers (--peers lists the nodes it contacts)");
        goto err_mux;
    }
    if (!cfg->gateway_only && !cfg->join &&
        spool_placement_address(&n->placement, cfg->id) == NULL) {
        rc = spool_err_set(err, SPOOL_EINVAL, "node id %llu is not in --peers (use gateway-only "
                           "mode for a node without replicas)", (unsigned long long)cfg->id);
        goto err_mux;
    }
    /* Room for every shard a map can name: resharding grows the count at run time. */
    n->shards = calloc(SPOOL_MAX_SHARDS, sizeof *n->shards);
    n->leader_hint = calloc(SPOOL_MAX_SHARDS, sizeof *n->leader_hint);
    if (n->shards == NULL || n->leader_hint == NULL) {
        rc = spool_err_set(err, SPOOL_ENOMEM, "node shards");
        goto err_mux;
    }
    rc = spool_rpc_init(&n->rpc, loop, n->mux, cfg->id, SPOOL_RPC_MAX_FRAME,
                        spool_serve_request_cb, spool_serve_message_cb, n, err);
    if (rc != 0)
        goto err_mux;
    for (size_t i = 0; i < n->placement.n_nodes; i++)
        if (n->placement.nodes[i].id != cfg->id)
            spool_rpc_set_peer(n->rpc, n->placement.nodes[i].id,
                               node_peer_address(n, &n->placement.nodes[i]));
    n->epoch_mark = n->cfg.gateway_only ? 0 : spool_replicas_load_mark(n->data_dir);
    rc = start_meta(n, err);
    if (rc == 0)
        rc = spool_replicas_start(n, err);
    if (rc == 0)
        rc = spool_membership_start(n, err);
    if (rc == 0)
        rc = spool_reshard_start(n, err);
    if (rc == 0 && n->cfg.gateway_only)
        rc = spool_remote_view_start(n, err);
    if (rc == 0)
        rc = spool_rebalancer_start(n, err);
    if (rc == 0)
        rc = spool_expiry_start(n, err);
    if (rc == 0)
        rc = spool_presence_reaper_start(n, err);
    if (rc != 0) {
        /* Shards already started close asynchronously, then the rest, then the node is freed. */
        SPOOL_ERROR("node.init_failed", "msg=\"%s\"", err->msg);
        spool_node_close(n, NULL, NULL);
        return rc;
    }
    SPOOL_INFO("node.started", "id=%llu listen=%s nodes=%zu shards=%u replicas=%u gateway_only=%d "
               "join=%d epoch_mark=%llu",
               (unsigned long long)cfg->id, spool_mux_address(n->mux), n->placement.n_nodes,
               n->placement.shards, n->placement.replicas, cfg->gateway_only, cfg->join,
               (unsigned long long)n->epoch_mark);
    *out = n;
    return 0;

err_mux:
    spool_mux_close(n->mux, NULL, NULL);
err_free:
    node_free(n);
    return rc;
}

bool spool_node_ready(const struct spool_node *n)
{
    if (n->closing)
        return false;
    if (n->meta != NULL && spool_meta_map(n->meta)->epoch == 0)
        return false;
    if (n->cfg.gateway_only)
        return spool_remote_view_ready(n);
    for (uint32_t s = 0; s < n->placement.shards; s++) {
        struct spool_shard *sh = n->shards[s];
        if (sh != NULL && spool_shard_leader(sh) == 0)
            return false;
    }
    return true;
}

uint32_t spool_node_shard_count(const struct spool_node *n)
{
    return n->placement.shards;
}

uint64_t spool_node_slot_map_epoch(const struct spool_node *n)
{
    return n->meta != NULL ? spool_meta_map(n->meta)->epoch : n->view.epoch;
}

uint32_t spool_node_shard_of(const struct spool_node *n, const char *channel)
{
    return spool_placement_shard_of(&n->placement, channel);
}

const char *spool_node_cluster_address(const struct spool_node *n)
{
    return spool_mux_address(n->mux);
}

void spool_node_shard_status(const struct spool_node *n, uint32_t shard,
                             struct spool_shard_status *out)
{
    memset(out, 0, sizeof *out);
    out->shard = shard;
    if (shard >= n->placement.shards)
        return;
    struct spool_shard *sh = n->shards[shard];
    if (sh == NULL) {
        out->leader_id = n->leader_hint[shard];
        return;
    }
    out->local_replica = true;
    out->leader_id = spool_shard_leader(sh);
    out->raft_state = raft_state(&sh->raft);
    out->term = raft_current_term(&sh->raft);
    out->commit_index = raft_commit_index(&sh->raft);
    out->applied_index = raft_last_applied(&sh->raft);
    out->last_index = raft_last_index(&sh->raft);
    out->proposals = sh->batch.entries;
    out->proposed_publishes = sh->batch.items;
    spool_store_stats(sh->store, &out->store);
}
