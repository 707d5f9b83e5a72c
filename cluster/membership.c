/*
 * Membership changes: adding a storage node to a running cluster and removing one, with shard
 * replicas moving (docs/cluster.md "Membership changes", cluster/admin.h for the API).
 *
 * Everything is driven by the metadata group's leader from the cluster map (cluster/meta.h),
 * so a new leader picks up a change where the old one stopped:
 *
 *   accept   A request (spool_node_membership_change, forwarded over SPOOL_METHOD_MEMBERSHIP to
 *            the leader) is checked against the map: one change at a time; for an add the new
 *            node must answer a cluster RPC first, as a --join node without a map and with the
 *            map's shard count (LeaderReply.joining / shards; resharding may have grown it
 *            past the original --shards). The leader then
 *            proposes the next map: for an add the node joins the node list; the change (kind,
 *            node) and every shard's target replica set (spool_placement_balance) are recorded.
 *   meta     The metadata group's voters follow the map's node list (meta.c, one Raft change
 *            at a time); an add waits until the new node is a voter, so it receives the maps.
 *   shards   For the first shard that still has a target, one step per tick:
 *              1. propose a map whose replica set is current + incoming (the incoming node
 *                 opens an empty replica, cluster/replicas.c);
 *              2. SPOOL_METHOD_RECONFIGURE to the shard's leader (when this node knows none
 *                 -- e.g. it is the incoming replica, opened empty -- the map's replicas in
 *                 turn: a follower answers with its leader), every tick, until it reports
 *                 done: each call that finds no change pending starts the next one -- raft_add
 *                 the incoming node, raft_assign it RAFT_VOTER (libraft catches it up first),
 *                 then raft_remove the outgoing one (handing leadership over first if it is
 *                 the outgoing one) -- and answers at once (EBUSY while a change is pending),
 *                 so no call waits for a catch-up. One voter at a time: libraft's rules keep
 *                 every acknowledged publish on a majority of whichever configuration;
 *              3. propose a map with the target set and that shard's target cleared (the
 *                 outgoing node closes and deletes its replica). A shard is pending while it
 *                 has a target: an add-only move has current + incoming == target after step 1
 *                 and still needs step 2.
 *            Steps 2 and 3 are idempotent, so repeating them after a leader change is safe.
 *   finish   Once every shard is at its target: propose a map without the change (and, for a
 *            remove, without the node; meta.c then removes it from the metadata group).
 *
 * At most one step is in flight (`busy`), completed by its one callback. The driver's timer runs
 * on every storage node and does nothing unless this node leads the metadata group.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/admin.h"
#include "cluster/node_int.h"
#include "cluster/op.h"
#include "common/log.h"

#define TICK_MS 200
#define PROBE_TIMEOUT_MS 2000
#define RECONFIGURE_TIMEOUT_MS 3000 /* answered at once: a started change is polled, not awaited */
#define STALL_LOG_MS 5000            /* a step not progressing is logged this often */
#define FORWARD_TIMEOUT_MS 10000

struct spool_membership {
    struct spool_node *node;
    uv_timer_t timer;
    bool busy;          /* a step is in flight */
    bool closing;
    unsigned inflight;  /* callbacks still to come (steps, accepts, requests) */
    unsigned attempt;   /* rotates the replicas asked when a shard's leader is unknown */
    uint64_t progress_epoch, progress_ms; /* the map epoch last seen and since when (stalls) */
    int last_status;    /* of the last RECONFIGURE step (logged on a stall) */
    uint32_t last_shard;
    uint64_t last_target; /* the node the last RECONFIGURE step went to: self, a peer, 0 = none */
};

static void maybe_free(struct spool_membership *m);

/* ---- helpers ---- */

static bool same_set(const uint64_t *a, uint8_t na, const uint64_t *b, uint8_t nb)
{
    if (na != nb)
        return false;
    for (uint8_t i = 0; i < na; i++) {
        bool found = false;
        for (uint8_t j = 0; j < nb && !found; j++)
            found = a[i] == b[j];
        if (!found)
            return false;
    }
    return true;
}

static uint32_t shards_left(const struct spool_slot_map *map)
{
    if (map->change == SPOOL_CHANGE_NONE)
        return 0;
    uint32_t left = 0;
    for (uint32_t s = 0; s < map->p.shards; s++)
        left += map->n_target[s] > 0; /* a shard's target is cleared once it is reached */
    return left;
}

static struct spool_slot_map *map_copy(const struct spool_slot_map *map)
{
    struct spool_slot_map *c = malloc(sizeof *c);
    if (c != NULL)
        *c = *map;
    return c;
}

/* ---- the driver ---- */

static void step_proposed_cb(void *arg, int status)
{
    struct spool_membership *m = arg;
    m->busy = false;
    m->inflight--;
    if (status != 0 && !m->closing)
        SPOOL_WARN("membership.propose_failed", "code=%s", spool_err_name(status));
    maybe_free(m);
}

static void propose_step(struct spool_membership *m, const struct spool_slot_map *next,
                         const char *what, uint32_t shard)
{
    struct spool_node *n = m->node;
    m->busy = true;
    m->inflight++;
    int rc = spool_meta_propose(n->meta, next, step_proposed_cb, m);
    if (rc != 0) {
        m->busy = false;
        m->inflight--;
        return;
    }
    SPOOL_INFO("membership.step", "step=%s shard=%u epoch=%llu", what, shard,
               (unsigned long long)spool_meta_map(n->meta)->epoch + 1);
}

struct reconf_call {
    struct spool_membership *m;
    uint32_t shard;
    uint64_t epoch; /* of the map the step was planned on */
};

/* The shard's leader answered (or failed) one RECONFIGURE step. */
static void reconf_result(struct reconf_call *c, int status, bool done, uint64_t hint)
{
    struct spool_membership *m = c->m;
    struct spool_node *n = m->node;
    m->busy = false;
    m->inflight--;
    if (hint != 0 && !n->closing && c->shard < n->placement.shards)
        n->leader_hint[c->shard] = hint;
    m->last_status = status;
    m->last_shard = c->shard;
    if (status != 0 && status != SPOOL_EBUSY && status != SPOOL_ENOTLEADER)
        SPOOL_DEBUG("membership.reconfigure_failed", "shard=%u code=%s", c->shard,
                    spool_err_name(status));
    if (status == 0 && done && !m->closing && n->meta != NULL &&
        spool_meta_map(n->meta)->epoch == c->epoch && spool_meta_is_leader(n->meta)) {
        const struct spool_slot_map *map = spool_meta_map(n->meta);
        struct spool_slot_map *next = map_copy(map);
        if (next != NULL) {
            uint32_t s = c->shard;
            next->p.n_replicas[s] = next->n_target[s];
            memcpy(next->p.replica[s], next->target[s], sizeof next->p.replica[s]);
            next->n_target[s] = 0; /* reached */
            propose_step(m, next, "replicas_target", s);
            free(next);
        }
    }
    free(c);
    maybe_free(m);
}


static void reconf_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                            size_t len)
{
    (void)err;
    struct reconf_call *c = arg;
    bool done = false;
    uint64_t hint = 0;
    if (status == 0) {
        Spool__ReconfigureReply *r = spool__reconfigure_reply__unpack(NULL, len, body);
        if (r == NULL || r->status == NULL) {
            status = SPOOL_ECORRUPT;
        } else {
            status = r->status->code;
            hint = r->status->leader_hint;
            done = r->done;
        }
        if (r)
            spool__reconfigure_reply__free_unpacked(r, NULL);
    }
    reconf_result(c, status, done, hint);
}

static void fill_voters(const struct spool_slot_map *map, uint32_t s, struct spool_peer *out)
{
    for (uint8_t i = 0; i < map->n_target[s]; i++) {
        out[i].id = map->target[s][i];
        const char *a = spool_placement_address(&map->p, out[i].id);
        snprintf(out[i].address, sizeof out[i].address, "%s", a ? a : "");
    }
}

static void reconfigure_step(struct spool_membership *m, const struct spool_slot_map *map,
                             uint32_t s)
{
    struct spool_node *n = m->node;
    struct reconf_call *c = malloc(sizeof *c);
    if (c == NULL)
        return;
    *c = (struct reconf_call){m, s, map->epoch};
    m->busy = true;
    m->inflight++;
    struct spool_shard *sh = spool_node_local_shard(n, s);
    if (sh != NULL && spool_shard_is_leader(sh)) {
        m->last_target = n->cfg.id;
        struct spool_peer voters[SPOOL_MAX_REPLICAS];
        fill_voters(map, s, voters);
        bool done = false;
        int rc = spool_shard_reconfigure(sh, voters, map->n_target[s], &done, NULL, NULL);
        reconf_result(c, rc, done, 0); /* a started change is polled by the next ticks */
        return;
    }
    uint64_t target = spool_node_route_target(n, s, m->attempt++);
    if (target == 0) {
        /* No leader known here: typically this node is the incoming replica (step 1 opened it
         * empty; it hears from no leader until the leader adds it) and no peer gave a hint, so
         * spool_node_route_target waits for an election that is not running. Ask the map's
         * other replicas in turn; a follower answers ENOTLEADER with its leader as the hint. */
        uint32_t r = spool_placement_replica_count(&map->p, s);
        for (uint32_t i = 0; i < r && target == 0; i++) {
            uint64_t id = spool_placement_replica(&map->p, s, (m->attempt + i) % r)->id;
            if (id != n->cfg.id)
                target = id;
        }
    }
    Spool__ReconfigureRequest q = SPOOL__RECONFIGURE_REQUEST__INIT;
    Spool__Member members[SPOOL_MAX_REPLICAS], *ptrs[SPOOL_MAX_REPLICAS];
    struct spool_peer voters[SPOOL_MAX_REPLICAS];
    fill_voters(map, s, voters);
    for (uint8_t i = 0; i < map->n_target[s]; i++) {
        spool__member__init(&members[i]);
        members[i].id = voters[i].id;
        members[i].address = voters[i].address;
        ptrs[i] = &members[i];
    }
    q.shard = s;
    q.n_voters = map->n_target[s];
    q.voters = ptrs;
    uint8_t buf[2048];
    size_t len = spool__reconfigure_request__pack(&q, buf);
    m->last_shard = s;
    m->last_target = target;
    int rc = target == 0 || n->rpc == NULL
                 ? SPOOL_ENOTLEADER
                 : spool_rpc_call(n->rpc, target, SPOOL_METHOD_RECONFIGURE, buf, len,
                                  RECONFIGURE_TIMEOUT_MS, reconf_reply_cb, c);
    if (rc != 0) {
        m->last_status = rc; /* not sent (stall line: last= with this target=) */
        m->busy = false;
        m->inflight--;
        free(c);
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct spool_membership *m = t->data;
    struct spool_node *n = m->node;
    if (m->busy || m->closing || n->closing || n->meta == NULL || !spool_meta_is_leader(n->meta))
        return;
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    if (map->epoch == 0 || map->change == SPOOL_CHANGE_NONE || map->change == SPOOL_CHANGE_SHARDS)
        return; /* adding shards: cluster/reshard.c drives it */
    uint64_t now = uv_now(n->loop);
    if (map->epoch != m->progress_epoch) {
        m->progress_epoch = map->epoch;
        m->progress_ms = now;
    } else if (now - m->progress_ms >= STALL_LOG_MS) {
        m->progress_ms = now; /* once per STALL_LOG_MS */
        bool voter = spool_meta_is_voter(n->meta, map->change_node);
        SPOOL_WARN("membership.waiting", "epoch=%llu change_node=%llu meta_voter=%d "
                   "shards_left=%u shard=%u last=%s target=%llu",
                   (unsigned long long)map->epoch, (unsigned long long)map->change_node,
                   voter, shards_left(map), m->last_shard, spool_err_name(m->last_status),
                   (unsigned long long)m->last_target);
    }
    if (map->change == SPOOL_CHANGE_ADD && !spool_meta_is_voter(n->meta, map->change_node))
        return; /* meta.c adds it to the metadata group first */
    for (uint32_t s = 0; s < map->p.shards; s++) {
        if (map->n_target[s] == 0)
            continue; /* no change, or reached */
        /* Incoming replicas first join the map (so their node opens them). */
        struct spool_slot_map *next = NULL;
        for (uint8_t i = 0; i < map->n_target[s]; i++) {
            uint64_t id = map->target[s][i];
            if (spool_placement_has_replica(&map->p, s, id))
                continue;
            if (next == NULL && (next = map_copy(map)) == NULL)
                return;
            if (next->p.n_replicas[s] < SPOOL_MAX_REPLICAS)
                next->p.replica[s][next->p.n_replicas[s]++] = id;
        }
        if (next != NULL) {
            propose_step(m, next, "replicas_add", s);
            free(next);
            return;
        }
        reconfigure_step(m, map, s);
        return;
    }
    struct spool_slot_map *next = map_copy(map);
    if (next == NULL)
        return;
    if (map->change == SPOOL_CHANGE_REMOVE) {
        spool_placement_remove_node(&next->p, map->change_node);
        spool_placement_set_replicas(&next->p);
    }
    SPOOL_INFO("membership.done", "change=%s node=%llu",
               map->change == SPOOL_CHANGE_ADD ? "add" : "remove",
               (unsigned long long)map->change_node);
    next->change = SPOOL_CHANGE_NONE;
    next->change_node = 0;
    memset(next->n_target, 0, sizeof next->n_target);
    propose_step(m, next, "finish", 0);
    free(next);
}

/* ---- accepting a change (on the metadata leader) ---- */

typedef void (*accept_cb)(void *arg, int status, const char *msg, uint64_t hint, uint64_t epoch);

struct accept {
    struct spool_membership *m;
    uint32_t kind;
    uint64_t id;
    char address[SPOOL_ADDRESS_MAX];
    accept_cb cb;
    void *arg;
};

static void accept_finish(struct accept *a, int status, const char *msg, uint64_t epoch)
{
    struct spool_membership *m = a->m;
    uint64_t hint = m->node->meta ? spool_meta_leader(m->node->meta) : 0;
    a->cb(a->arg, status, msg, hint, epoch);
    m->inflight--;
    free(a);
    maybe_free(m);
}

static void accept_proposed_cb(void *arg, int status)
{
    struct accept *a = arg;
    struct spool_node *n = a->m->node;
    if (status == 0)
        SPOOL_INFO("membership.accepted", "change=%s node=%llu epoch=%llu",
                   a->kind == SPOOL_CHANGE_ADD      ? "add"
                   : a->kind == SPOOL_CHANGE_SHARDS ? "shards"
                                                    : "remove",
                   (unsigned long long)a->id,
                   (unsigned long long)spool_meta_map(n->meta)->epoch);
    accept_finish(a, status, status == 0 ? "" : "the metadata group did not commit the change",
                  status == 0 ? spool_meta_map(n->meta)->epoch : 0);
}

/* Checks the request against the current map; 0 or an error code with *msg. */
static int accept_check(struct spool_node *n, uint32_t kind, uint64_t id, const char *address,
                        const char **msg)
{
    if (n->meta == NULL || !spool_meta_is_leader(n->meta)) {
        *msg = "not the metadata group's leader";
        return SPOOL_ENOTLEADER;
    }
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    if (map->epoch == 0) {
        *msg = "no cluster map yet";
        return SPOOL_EBUSY;
    }
    if (map->change != SPOOL_CHANGE_NONE) {
        *msg = map->change == SPOOL_CHANGE_ADD      ? "another membership change (an add) is in progress"
               : map->change == SPOOL_CHANGE_REMOVE ? "another membership change (a remove) is in progress"
                                                    : "shards are being added (resharding in progress)";
        return SPOOL_ECONFLICT;
    }
    if (kind == SPOOL_CHANGE_SHARDS) {
        if (id <= map->p.shards || id > SPOOL_MAX_SHARDS) {
            *msg = "the new shard count must be above the current one and at most 1024";
            return SPOOL_EINVAL;
        }
        return 0;
    }
    bool member = spool_placement_node_index(&map->p, id) >= 0;
    if (id == 0) {
        *msg = "node id must be > 0";
        return SPOOL_EINVAL;
    }
    if (kind == SPOOL_CHANGE_ADD) {
        if (member) {
            *msg = "that node is already a member";
            return SPOOL_EINVAL;
        }
        if (map->p.n_nodes >= SPOOL_MAX_NODES) {
            *msg = "the cluster has the most storage nodes it can have";
            return SPOOL_EINVAL;
        }
        char host[256], port[16];
        if (address == NULL || strlen(address) >= SPOOL_ADDRESS_MAX ||
            spool_mux_split_address(address, host, sizeof host, port, sizeof port) != 0) {
            *msg = "address must be host:port (the new node's --cluster-listen)";
            return SPOOL_EINVAL;
        }
        return 0;
    }
    if (kind != SPOOL_CHANGE_REMOVE) {
        *msg = "unknown change";
        return SPOOL_EINVAL;
    }
    if (!member) {
        *msg = "no such storage node";
        return SPOOL_ENOENT;
    }
    if (map->p.n_nodes < 2) {
        *msg = "cannot remove the last storage node";
        return SPOOL_EINVAL;
    }
    return 0;
}

static void accept_propose(struct accept *a)
{
    struct spool_node *n = a->m->node;
    const char *msg = NULL;
    int rc = accept_check(n, a->kind, a->id, a->address, &msg);
    if (rc != 0) {
        accept_finish(a, rc, msg, 0);
        return;
    }
    struct spool_slot_map *next = map_copy(spool_meta_map(n->meta));
    struct spool_placement *tmp = malloc(sizeof *tmp);
    if (next == NULL || tmp == NULL) {
        free(next);
        free(tmp);
        accept_finish(a, SPOOL_ENOMEM, "out of memory", 0);
        return;
    }
    struct spool_err err;
    if (a->kind == SPOOL_CHANGE_SHARDS) {
        long moved = 0;
        rc = spool_reshard_plan_map(next, (uint32_t)a->id, &moved, &err);
        if (rc == 0) {
            SPOOL_INFO("reshard.plan", "shards=%u was=%u slots_to_move=%ld", next->p.shards,
                       next->shards_before, moved);
            rc = spool_meta_propose(n->meta, next, accept_proposed_cb, a);
            msg = rc == SPOOL_EBUSY ? "the metadata group is busy: retry" : "proposal refused";
        } else {
            msg = err.msg;
        }
        free(next);
        free(tmp);
        if (rc != 0)
            accept_finish(a, rc, msg, 0);
        return;
    }
    if (a->kind == SPOOL_CHANGE_ADD) {
        rc = spool_placement_add_node(&next->p, a->id, a->address, &err);
        spool_placement_set_replicas(&next->p);
        *tmp = next->p;
    } else {
        *tmp = next->p;
        spool_placement_remove_node(tmp, a->id);
        spool_placement_set_replicas(tmp);
    }
    if (rc == 0) {
        uint32_t moves = spool_placement_balance(tmp, next->target, next->n_target);
        for (uint32_t s = 0; s < next->p.shards; s++) /* pending = a target is set */
            if (same_set(next->p.replica[s], next->p.n_replicas[s], next->target[s],
                         next->n_target[s]))
                next->n_target[s] = 0;
        next->change = a->kind;
        next->change_node = a->id;
        SPOOL_INFO("membership.plan", "change=%s node=%llu shards_to_change=%u",
                   a->kind == SPOOL_CHANGE_ADD ? "add" : "remove", (unsigned long long)a->id,
                   moves);
        rc = spool_meta_propose(n->meta, next, accept_proposed_cb, a);
        msg = rc == SPOOL_EBUSY ? "the metadata group is busy: retry" : "proposal refused";
    } else {
        msg = err.msg;
    }
    free(next);
    free(tmp);
    if (rc != 0)
        accept_finish(a, rc, msg, 0);
}

static void probe_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                           size_t len)
{
    (void)err;
    struct accept *a = arg;
    if (status != 0) {
        accept_finish(a, SPOOL_EBUSY,
                      "the new node does not answer on its cluster address (start it with "
                      "--join first)", 0);
        return;
    }
    /* It must be a node waiting to join, shaped like this cluster: a node that cannot open the
     * shards it is given would leave a promotion pending forever. */
    Spool__LeaderReply *r = spool__leader_reply__unpack(NULL, len, body);
    struct spool_node *n = a->m->node;
    /* Compared with the map's count (resharding grows it, cluster/reshard.c), not --shards. */
    uint32_t shards = n->meta ? spool_meta_map(n->meta)->p.shards : 0;
    const char *msg = NULL;
    if (r == NULL)
        msg = "the new node sent a bad answer";
    else if (!r->joining)
        msg = "the node at that address is not waiting to join (start it with --join, on an "
              "empty data directory, with --peers naming running nodes)";
    else if (r->shards != shards)
        msg = "the new node's --shards differs from the cluster map's shard count";
    if (r)
        spool__leader_reply__free_unpacked(r, NULL);
    if (msg != NULL) {
        SPOOL_WARN("membership.add_refused", "node=%llu address=%s msg=\"%s\"",
                   (unsigned long long)a->id, a->address, msg);
        accept_finish(a, SPOOL_EINVAL, msg, 0);
        return;
    }
    accept_propose(a);
}

/* Starts accepting a change here (the metadata leader): 0 and cb runs once (possibly inside
 * the call, for a refusal), or SPOOL_ECLOSED / SPOOL_ENOMEM without cb. */
static int accept_start(struct spool_node *n, uint32_t kind, uint64_t id, const char *address,
                        accept_cb cb, void *arg)
{
    struct spool_membership *m = n->membership;
    if (m == NULL || m->closing)
        return SPOOL_ECLOSED;
    struct accept *a = calloc(1, sizeof *a);
    if (a == NULL)
        return SPOOL_ENOMEM;
    *a = (struct accept){.m = m, .kind = kind, .id = id, .cb = cb, .arg = arg};
    snprintf(a->address, sizeof a->address, "%s", address ? address : "");
    m->inflight++;
    const char *msg = NULL;
    int rc = accept_check(n, kind, id, a->address, &msg);
    if (rc == 0 && kind == SPOOL_CHANGE_ADD) {
        /* The new node must answer first: a promotion to a dead node would hang the group. */
        uint8_t buf[16];
        Spool__LeaderQuery q = SPOOL__LEADER_QUERY__INIT;
        size_t len = spool__leader_query__pack(&q, buf);
        if (spool_rpc_set_peer(n->rpc, id, a->address) == 0 &&
            spool_rpc_call(n->rpc, id, SPOOL_METHOD_LEADER, buf, len, PROBE_TIMEOUT_MS,
                           probe_reply_cb, a) == 0)
            return 0;
        rc = SPOOL_EINVAL;
        msg = "cannot reach that address";
    }
    if (rc == 0)
        accept_propose(a); /* completes through the proposal's callback */
    else
        accept_finish(a, rc, msg, 0);
    return 0;
}

/* ---- the RPC side ---- */

/* Answers with the packed reply `m`; one too large for the buffer (a very long status message)
 * answers the status as an RPC error instead. */
static void respond_packed(struct spool_rpc_reply *reply, int code, const char *msg,
                           const ProtobufCMessage *m)
{
    uint8_t buf[1024];
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > sizeof buf) {
        spool_rpc_respond(reply, code, msg, NULL, 0);
        return;
    }
    protobuf_c_message_pack(m, buf);
    spool_rpc_respond(reply, 0, NULL, buf, len);
}

static void respond_membership(struct spool_rpc_reply *reply, int code, const char *msg,
                               uint64_t hint, uint64_t epoch)
{
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    spool_op_pack_status(&st, code, msg, hint);
    Spool__MembershipReply r = SPOOL__MEMBERSHIP_REPLY__INIT;
    r.status = &st;
    r.epoch = epoch;
    respond_packed(reply, code, msg, &r.base);
}

static void served_accept_cb(void *arg, int status, const char *msg, uint64_t hint, uint64_t epoch)
{
    respond_membership(arg, status, msg, hint, epoch);
}

static void serve_membership(struct spool_node *n, const void *body, size_t len,
                             struct spool_rpc_reply *reply)
{
    Spool__MembershipRequest *q = spool__membership_request__unpack(NULL, len, body);
    if (q == NULL) {
        respond_membership(reply, SPOOL_EINVAL, "bad membership request", 0, 0);
        return;
    }
    int rc = accept_start(n, q->kind, q->node, q->address, served_accept_cb, reply);
    if (rc != 0)
        respond_membership(reply, rc, spool_err_name(rc), 0, 0);
    spool__membership_request__free_unpacked(q, NULL);
}

static void respond_reconf(struct spool_rpc_reply *reply, int code, const char *msg,
                           uint64_t hint, bool done)
{
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    spool_op_pack_status(&st, code, msg, hint);
    Spool__ReconfigureReply r = SPOOL__RECONFIGURE_REPLY__INIT;
    r.status = &st;
    r.done = done;
    respond_packed(reply, code, msg, &r.base);
}

static void serve_reconfigure(struct spool_node *n, const void *body, size_t len,
                              struct spool_rpc_reply *reply)
{
    Spool__ReconfigureRequest *q = spool__reconfigure_request__unpack(NULL, len, body);
    if (q == NULL || q->n_voters == 0 || q->n_voters > SPOOL_MAX_REPLICAS) {
        if (q)
            spool__reconfigure_request__free_unpacked(q, NULL);
        respond_reconf(reply, SPOOL_EINVAL, "bad reconfigure request", 0, false);
        return;
    }
    struct spool_shard *sh = n->closing ? NULL : spool_node_local_shard(n, q->shard);
    if (sh == NULL) {
        uint32_t s = q->shard;
        spool__reconfigure_request__free_unpacked(q, NULL);
        respond_reconf(reply, SPOOL_ENOTLEADER, "no replica here",
                       s < n->placement.shards ? n->leader_hint[s] : 0, false);
        return;
    }
    struct spool_peer voters[SPOOL_MAX_REPLICAS];
    for (size_t i = 0; i < q->n_voters; i++) {
        voters[i].id = q->voters[i]->id;
        snprintf(voters[i].address, sizeof voters[i].address, "%s",
                 q->voters[i]->address ? q->voters[i]->address : "");
    }
    size_t nv = q->n_voters;
    spool__reconfigure_request__free_unpacked(q, NULL);
    bool done = false;
    /* Answered at once: a change it started is committed later, and the driver, calling again
     * every tick, sees EBUSY until then and the next step (or done) after. */
    int rc = spool_shard_reconfigure(sh, voters, nv, &done, NULL, NULL);
    if (rc == SPOOL_EBUSY) {
        /* Refused without starting anything: say why, at most every STALL_LOG_MS per shard. */
        static uint64_t logged_ms[SPOOL_MAX_SHARDS];
        uint64_t now = uv_now(n->loop);
        uint32_t s = sh->id < SPOOL_MAX_SHARDS ? sh->id : 0;
        if (logged_ms[s] == 0 || now - logged_ms[s] >= STALL_LOG_MS) {
            logged_ms[s] = now;
            SPOOL_INFO("membership.reconfigure_busy",
                       "shard=%u changing=%d moving=%d transferee=%llu conf_uncommitted=%llu "
                       "conf_committed=%llu commit=%llu applied=%llu last=%llu",
                       sh->id, sh->changing, sh->moving,
                       (unsigned long long)raft_transferee(&sh->raft),
                       (unsigned long long)sh->raft.configuration_uncommitted_index,
                       (unsigned long long)sh->raft.configuration_committed_index,
                       (unsigned long long)raft_commit_index(&sh->raft),
                       (unsigned long long)raft_last_applied(&sh->raft),
                       (unsigned long long)raft_last_index(&sh->raft));
        }
    }
    respond_reconf(reply, rc == 0 && !done ? SPOOL_EBUSY : rc,
                   rc == 0 ? (done ? "" : "change started: call again") : spool_err_name(rc),
                   spool_shard_leader(sh), done);
}

void spool_membership_serve(struct spool_node *n, uint32_t method, const void *body, size_t len,
                            struct spool_rpc_reply *reply)
{
    if (method == SPOOL_METHOD_MEMBERSHIP)
        serve_membership(n, body, len, reply);
    else
        serve_reconfigure(n, body, len, reply);
}

/* ---- the caller's side: spool_node_membership_change ---- */

struct mreq {
    struct spool_node *node;
    uint32_t kind;
    uint64_t id;
    char address[SPOOL_ADDRESS_MAX];
    spool_membership_cb cb;
    void *arg;
    unsigned hops;
    uint64_t target;      /* asked last */
    uint64_t started_ms;  /* uv_now at the call: retries stop FORWARD_TIMEOUT_MS later */
    uint64_t failed;      /* the last target that did not answer */
    unsigned rotate;
    int status;
    char msg[256];
    uint64_t epoch;
    uv_timer_t done; /* completes on the loop */
};

static void mreq_closed_cb(uv_handle_t *h)
{
    struct mreq *r = h->data;
    struct spool_node *n = r->node;
    free(r);
    n->pending_close--;
    spool_node_finish_close(n);
}

static void mreq_done_cb(uv_timer_t *t)
{
    struct mreq *r = t->data;
    struct spool_err err;
    spool_err_set(&err, r->status, "%s", r->msg);
    r->cb(r->arg, r->status, &err, r->epoch);
    uv_close((uv_handle_t *)&r->done, mreq_closed_cb);
}

static void mreq_finish(struct mreq *r, int status, const char *msg, uint64_t epoch)
{
    r->status = status;
    r->epoch = epoch;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
    uv_timer_start(&r->done, mreq_done_cb, 0, 0);
}

static void mreq_send(struct mreq *r, uint64_t target);

/* Where to ask next: the metadata leader as this node knows it, unless that is the node that
 * just did not answer (a dead leader is still believed in until an election); else the
 * storage nodes in turn. */
static uint64_t mreq_target(struct mreq *r)
{
    struct spool_node *n = r->node;
    uint64_t leader = n->meta != NULL ? spool_meta_leader(n->meta) : 0;
    if (leader != 0 && leader != r->failed)
        return leader;
    const struct spool_placement *p = &n->placement;
    for (size_t i = 0; i < p->n_nodes; i++) {
        uint64_t id = p->nodes[(r->rotate++) % p->n_nodes].id;
        if (id != r->failed)
            return id;
    }
    return n->cfg.id;
}

static void mreq_retry_cb(uv_timer_t *t)
{
    struct mreq *r = t->data;
    r->hops = 0;
    mreq_send(r, mreq_target(r));
}

/* A target did not answer (down, or no route): ask again elsewhere for a while. */
static bool mreq_retry(struct mreq *r, uint64_t failed)
{
    struct spool_node *n = r->node;
    if (n->closing || uv_now(n->loop) - r->started_ms >= FORWARD_TIMEOUT_MS)
        return false;
    r->failed = failed;
    uv_timer_start(&r->done, mreq_retry_cb, 200, 0);
    return true;
}

static void mreq_local_cb(void *arg, int status, const char *msg, uint64_t hint, uint64_t epoch)
{
    struct mreq *r = arg;
    if (status == SPOOL_ENOTLEADER && hint != 0 && hint != r->node->cfg.id && r->hops < 3) {
        mreq_send(r, hint);
        return;
    }
    if (status == SPOOL_ENOTLEADER && mreq_retry(r, 0))
        return;
    mreq_finish(r, status == SPOOL_ENOTLEADER ? SPOOL_EBUSY : status,
                status == SPOOL_ENOTLEADER ? "no metadata leader known (election running?)" : msg,
                epoch);
}

static void mreq_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                          size_t len)
{
    struct mreq *r = arg;
    if ((status == SPOOL_EIO || status == SPOOL_ETIMEOUT || status == SPOOL_EBUSY) &&
        mreq_retry(r, r->target))
        return;
    if (status != 0) {
        mreq_finish(r, status == SPOOL_ETIMEOUT ? SPOOL_ETIMEOUT : SPOOL_EBUSY,
                    status == SPOOL_ETIMEOUT ? "the metadata leader did not answer in time"
                                             : err->msg, 0);
        return;
    }
    Spool__MembershipReply *m = spool__membership_reply__unpack(NULL, len, body);
    if (m == NULL || m->status == NULL) {
        if (m)
            spool__membership_reply__free_unpacked(m, NULL);
        mreq_finish(r, SPOOL_ECORRUPT, "bad membership reply", 0);
        return;
    }
    int code = m->status->code;
    uint64_t hint = m->status->leader_hint, epoch = m->epoch;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", m->status->msg ? m->status->msg : "");
    spool__membership_reply__free_unpacked(m, NULL);
    if (code == SPOOL_ENOTLEADER && hint != 0 && r->hops < 3) {
        mreq_send(r, hint);
        return;
    }
    if (code == SPOOL_ENOTLEADER && mreq_retry(r, 0))
        return; /* no leader known there either: an election is running */
    mreq_finish(r, code == SPOOL_ENOTLEADER ? SPOOL_EBUSY : code,
                code == SPOOL_ENOTLEADER ? "no metadata leader known (election running?)" : msg,
                epoch);
}

static void mreq_send(struct mreq *r, uint64_t target)
{
    struct spool_node *n = r->node;
    r->hops++;
    if (n->closing) {
        mreq_finish(r, SPOOL_ECLOSED, "node closing", 0);
        return;
    }
    if (target == n->cfg.id) {
        int rc = accept_start(n, r->kind, r->id, r->address, mreq_local_cb, r);
        if (rc != 0)
            mreq_finish(r, rc, spool_err_name(rc), 0);
        return;
    }
    Spool__MembershipRequest q = SPOOL__MEMBERSHIP_REQUEST__INIT;
    q.kind = r->kind;
    q.node = r->id;
    q.address = r->address;
    uint8_t buf[SPOOL_ADDRESS_MAX + 64];
    size_t len = spool__membership_request__pack(&q, buf);
    r->target = target;
    if (target == 0 || n->rpc == NULL ||
        spool_rpc_call(n->rpc, target, SPOOL_METHOD_MEMBERSHIP, buf, len, 3000, mreq_reply_cb,
                       r) != 0) {
        if (!mreq_retry(r, target))
            mreq_finish(r, SPOOL_EBUSY, "no metadata leader known (election running?)", 0);
    }
}

int spool_node_membership_change(struct spool_node *n, uint32_t kind, uint64_t id,
                                 const char *address, spool_membership_cb cb, void *arg)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    struct mreq *r = calloc(1, sizeof *r);
    if (r == NULL)
        return SPOOL_ENOMEM;
    *r = (struct mreq){.node = n, .kind = kind, .id = id, .cb = cb, .arg = arg};
    snprintf(r->address, sizeof r->address, "%s", address ? address : "");
    uv_timer_init(n->loop, &r->done);
    r->done.data = r;
    r->started_ms = uv_now(n->loop);
    n->pending_close++;
    /* The metadata leader, as this node knows it; a gateway-only node asks a storage node,
     * which answers with the leader as its hint. */
    mreq_send(r, mreq_target(r));
    return 0;
}

/* ---- status ---- */

void spool_node_membership_status(const struct spool_node *n, struct spool_membership_status *out)
{
    memset(out, 0, sizeof *out);
    if (n->meta == NULL) {
        out->epoch = n->view.epoch;
        out->change = n->view_change;
        out->node = n->view_change_node;
        out->shards_left = n->view_change != SPOOL_CHANGE_NONE; /* not tracked: at least one */
        return;
    }
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    out->epoch = map->epoch;
    out->meta_leader = spool_meta_leader(n->meta);
    out->change = map->change;
    out->node = map->change_node;
    out->shards_left = shards_left(map);
}

size_t spool_node_shard_target(const struct spool_node *n, uint32_t shard, uint64_t *out,
                               size_t cap)
{
    if (n->meta == NULL || shard >= n->placement.shards)
        return 0;
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    if (map->change == SPOOL_CHANGE_NONE || shard >= map->p.shards)
        return 0;
    size_t k = 0;
    for (uint8_t i = 0; i < map->n_target[shard] && k < cap; i++)
        out[k++] = map->target[shard][i];
    return k;
}

uint32_t spool_node_replica_count(const struct spool_node *n, uint32_t shard)
{
    return spool_placement_replica_count(&n->placement, shard);
}

size_t spool_node_members(const struct spool_node *n, struct spool_peer *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n->placement.n_nodes && k < cap; i++)
        out[k++] = n->placement.nodes[i];
    return k;
}

/* ---- lifecycle ---- */

static void maybe_free(struct spool_membership *m)
{
    if (!m->closing || m->inflight > 0)
        return;
    struct spool_node *n = m->node;
    n->membership = NULL;
    free(m);
    n->pending_close--;
    spool_node_finish_close(n);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct spool_membership *m = h->data;
    m->inflight--;
    maybe_free(m);
}

int spool_membership_start(struct spool_node *n, struct spool_err *err)
{
    if (n->cfg.gateway_only)
        return 0;
    struct spool_membership *m = calloc(1, sizeof *m);
    if (m == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "membership");
    m->node = n;
    if (uv_timer_init(n->loop, &m->timer) != 0) {
        free(m);
        return spool_err_set(err, SPOOL_EIO, "membership timer");
    }
    m->timer.data = m;
    uv_timer_start(&m->timer, tick_cb, TICK_MS, TICK_MS);
    n->membership = m;
    return 0;
}

void spool_membership_close(struct spool_node *n)
{
    struct spool_membership *m = n->membership;
    if (m == NULL || m->closing)
        return;
    m->closing = true;
    m->inflight++; /* the timer */
    n->pending_close++;
    uv_close((uv_handle_t *)&m->timer, timer_closed_cb);
}
