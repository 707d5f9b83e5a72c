/*
 * Administration of a node's cluster (cluster/admin.c), for the gateway's /v1/admin API and
 * spoolctl (docs/admin.md): who the storage nodes are and whether they answer, the leader's view
 * of each replica's progress, and leader spreading.
 *
 * Leader spreading: Raft elections leave leaderships wherever they were won (after start-up,
 * after a node rejoins), so one node can end up proposing for most shards. A "pass" on a node
 * looks at the leaders it knows of (its replicas' view, else the last hint) and, while it leads
 * more than its fair share ceil(shards / storage nodes), hands one of its leaderships (libraft
 * raft_transfer) to a replica of that shard that leads fewer than the fair share, preferring the
 * shard's home node (its first replica in placement order). Every node only ever gives away its
 * own leaderships, so passes on different nodes never fight over a shard; a transfer that does
 * not happen (target unreachable, libraft's election-timeout bound) is simply retried by a later
 * pass. While a membership change runs, a replica the change takes out of a shard (the node a
 * remove takes out, or any replica outside the shard's target set) is never a target: the
 * driver (cluster/membership.c) hands a leaving replica's leadership away before removing it,
 * and giving it back undid that every pass. Passes run every `rebalance_interval_ms` (one
 * transfer per pass, 0 = never) and on demand (spool_node_rebalance with all = true: every
 * excess leadership at once, and every other storage node is asked to run one too, over the
 * cluster RPC, one-way).
 */
#ifndef SPOOL_CLUSTER_ADMIN_H
#define SPOOL_CLUSTER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"
#include "cluster/meta.h"
#include "cluster/placement.h"

struct spool_member {
    uint64_t id;
    char address[SPOOL_ADDRESS_MAX]; /* cluster port */
    bool self;
    bool reachable; /* answered a cluster RPC within the probe's timeout (self: true) */
};
struct spool_members {
    size_t n;
    struct spool_member nodes[SPOOL_MAX_NODES]; /* the storage nodes, sorted by id */
};
typedef void (*spool_members_cb)(void *arg, const struct spool_members *m);
/* Asks every other storage node a cheap question (its view of shard 0's leader) and reports who
 * answered within timeout_ms. cb runs once, on the loop, never inside the call. 0, or
 * SPOOL_ECLOSED / SPOOL_ENOMEM without calling cb. */
int spool_node_probe_members(struct spool_node *n, uint64_t timeout_ms, spool_members_cb cb,
                             void *arg);

/* Replicas per shard, and the i-th replica of `shard` in placement order (i = 0: its home). */
uint32_t spool_node_replicas(const struct spool_node *n);
uint64_t spool_node_replica(const struct spool_node *n, uint32_t shard, uint32_t i);
/* The leader's view of replica `id` of `shard`: true, with the highest log index known to be
 * replicated on it, when this node's replica leads the shard. */
bool spool_node_replica_match(const struct spool_node *n, uint32_t shard, uint64_t id,
                              uint64_t *match_index);
/* The slot (of SPOOL_SLOTS) of a channel. */
uint32_t spool_node_slot_of(const struct spool_node *n, const char *channel);

struct spool_leader_move {
    uint32_t shard;
    uint64_t to;
};
/* Runs one leader-spreading pass on this node (see above); returns how many transfers it started
 * and lists up to `max` of them. With `all`, gives away every excess leadership and asks the
 * other storage nodes to run a pass too. Transfers complete asynchronously. */
size_t spool_node_rebalance(struct spool_node *n, bool all, struct spool_leader_move *moves,
                            size_t max);

/* ---- membership changes (cluster/membership.c, docs/cluster.md "Membership changes") ---- */

/* Asks the metadata group's leader (forwarding to it over the cluster RPC when that is another
 * node) to add storage node `id` at cluster address `address` (kind SPOOL_CHANGE_ADD; the node
 * must be running with `join` and answer on that address) or to remove `id` (kind
 * SPOOL_CHANGE_REMOVE, address unused). cb runs once, on the loop, when the change was accepted
 * (status 0, `epoch` = the map that started it) or refused: SPOOL_ECONFLICT (another change in
 * progress), SPOOL_EINVAL (already a member / not a member / last node / bad address),
 * SPOOL_EBUSY (no metadata leader, or the new node does not answer), SPOOL_ETIMEOUT. The change
 * itself then runs in the background: follow it with spool_node_membership_status. Returns 0,
 * or SPOOL_ECLOSED / SPOOL_ENOMEM without calling cb. */
typedef void (*spool_membership_cb)(void *arg, int status, const struct spool_err *err,
                                    uint64_t epoch);
int spool_node_membership_change(struct spool_node *n, uint32_t kind, uint64_t id,
                                 const char *address, spool_membership_cb cb, void *arg);

struct spool_membership_status {
    uint64_t epoch;        /* of the map this node follows (0: none yet) */
    uint64_t meta_leader;  /* the metadata group's leader as this node knows it (0: unknown) */
    uint32_t change;       /* SPOOL_CHANGE_NONE / _ADD / _REMOVE (cluster/meta.h) */
    uint64_t node;         /* the node being added or removed */
    uint32_t shards_left;  /* shards whose replica set has not reached its target yet */
};
void spool_node_membership_status(const struct spool_node *n, struct spool_membership_status *out);
/* While a membership change runs: the replica set `shard` is moving to (up to `cap` ids); 0
 * when the shard has nothing (more) to do or this node does not know (gateway-only). */
size_t spool_node_shard_target(const struct spool_node *n, uint32_t shard, uint64_t *out,
                               size_t cap);
/* Replicas `shard` has now (admin: one more than replicasPerShard while a replica moves). */
uint32_t spool_node_replica_count(const struct spool_node *n, uint32_t shard);
/* The storage nodes in the map this node follows (id and cluster address). */
size_t spool_node_members(const struct spool_node *n, struct spool_peer *out, size_t cap);

/* ---- adding shards (cluster/reshard.c, docs/resharding.md) ---- */

/* Adding shards goes through spool_node_membership_change with kind SPOOL_CHANGE_SHARDS and
 * id = the new shard count (refused: SPOOL_EINVAL for a count not above the current one or
 * above SPOOL_MAX_SHARDS, SPOOL_ECONFLICT while another change runs). */
struct spool_reshard_status {
    bool running;           /* a resharding change is in progress */
    uint32_t shards;        /* the map's shard count (the new one while running) */
    uint32_t shards_before;
    uint32_t slots_left;    /* slots not on their target shard yet */
    uint32_t move_phase;    /* SPOOL_MOVE_* of the move in progress (0: none) */
    uint32_t move_from, move_to, move_slots;
};
void spool_node_reshard_status(const struct spool_node *n, struct spool_reshard_status *out);
/* Slots `shard` owns in the map this node routes with. */
uint32_t spool_node_shard_slots(const struct spool_node *n, uint32_t shard);
/* The plan the metadata leader would make from this node's map (the same function): *out is
 * the grown placement; returns the number of slots that move, or -1 with err. */
long spool_node_plan_shards(const struct spool_node *n, uint32_t shards, struct spool_placement *out,
                            struct spool_err *err);
/* membership.c: turns `next` (a copy of the current map) into the map that starts adding
 * shards up to `shards`; *moved = slots that will move. */
int spool_reshard_plan_map(struct spool_slot_map *next, uint32_t shards, long *moved,
                           struct spool_err *err);

#endif
