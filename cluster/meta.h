/*
 * The metadata group: one Raft group replicated on every storage node, holding the cluster map:
 * the slot -> shard table (cluster/placement.h), the storage nodes (id, cluster address), every
 * shard's replica set and the membership change in progress, with an epoch.
 *
 * At bootstrap every storage node starts the group with all storage nodes as voters (the same
 * deterministic rule as the shards: bootstrap only a pristine directory). The first leader finds
 * the map empty (epoch 0) and proposes the map derived from configuration as epoch 1; from then on
 * the map is whatever the log says, and every node adopts each applied map (on_map) for routing
 * and for which shard replicas it holds. Membership changes (cluster/membership.c, on the
 * group's leader) propose later epochs with spool_meta_propose, one at a time.
 *
 * The group's own voters follow the map: while it leads, a node compares the group's Raft
 * configuration with the map's nodes and makes one change at a time (raft_add + raft_assign
 * RAFT_VOTER for a node the map lists, raft_remove for one it does not; a leader that is no
 * longer listed first hands its leadership over). A joining node (`join`) never bootstraps: it
 * starts with an empty configuration and receives the log once the leader adds it.
 *
 * The state machine is the map alone, kept in memory: libraft restores it from the group's
 * snapshot and replays the log on restart. Snapshots carry a MetaEntry with the current map. A
 * map without nodes (written before membership changes existed) gets the configuration's.
 *
 * Nodes without a replica (gateway-only) ask a storage node for the map over RPC
 * (SPOOL_METHOD_SLOT_MAP, cluster/remote_view.c).
 */
#ifndef SPOOL_CLUSTER_META_H
#define SPOOL_CLUSTER_META_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/placement.h"
#include "cluster/transport.h"
#include "common/err.h"
#include "proto/entry.pb-c.h"

#define SPOOL_META_GROUP 0x80000000u /* transport group id; shard ids stay below it */

enum {
    SPOOL_CHANGE_NONE = 0,
    SPOOL_CHANGE_ADD = 1,
    SPOOL_CHANGE_REMOVE = 2,
    SPOOL_CHANGE_SHARDS = 3, /* adding shards: slots move (cluster/reshard.c) */
};

/* The step of the slot move in progress (SlotMap.move_phase, cluster/reshard.c). */
enum {
    SPOOL_MOVE_NONE = 0,
    SPOOL_MOVE_COPY = 1, /* fence on the source, copy to the destination; routers still use from */
    SPOOL_MOVE_DROP = 2, /* slot_shard already says `to`; the source drops the slots */
};


/* The cluster map (named for its first content, the slot map). */
struct spool_slot_map {
    uint64_t epoch;          /* 0 = not set yet */
    struct spool_placement p; /* shards, slot table, storage nodes, replica sets */
    uint32_t change;         /* SPOOL_CHANGE_*: the membership change in progress */
    uint64_t change_node;
    uint8_t n_target[SPOOL_MAX_SHARDS]; /* while a change runs: where each shard is going;
                                         * 0 = nothing (more) to do for that shard */
    uint64_t target[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    /* change == SPOOL_CHANGE_SHARDS (cluster/reshard.c): */
    uint32_t shards_before;              /* shards before the change (new ones are >= it) */
    uint16_t slot_target[SPOOL_SLOTS];   /* where each slot is going */
    uint32_t move_phase;                 /* SPOOL_MOVE_*: the move in progress */
    uint32_t move_from, move_to;
    uint8_t move_slots[SPOOL_SLOT_BITMAP_BYTES];
};

struct spool_meta;
typedef void (*spool_meta_map_cb)(void *arg, const struct spool_slot_map *map);

struct spool_meta_config {
    uint64_t node_id;
    const char *node_address;
    const char *data_dir;             /* the node's; the group uses <data_dir>/meta/raft */
    const struct spool_placement *placement; /* voters (all storage nodes) and the initial map */
    bool join;                        /* never bootstrap: wait to be added (cluster/membership.c) */
    uint64_t election_timeout_ms, heartbeat_ms;
    spool_meta_map_cb on_map;         /* each applied map (also after a restore) */
    void *cb_arg;
};

int spool_meta_init(struct spool_meta **out, uv_loop_t *loop, struct spool_mux *mux,
                    const struct spool_meta_config *cfg, struct spool_err *err);
/* Closes Raft and the transport; cb runs on the loop, then the meta is freed. */
void spool_meta_close(struct spool_meta *m, void (*cb)(void *arg), void *arg);

const struct spool_slot_map *spool_meta_map(const struct spool_meta *m);

/* SlotMap conversions (the RPC that serves the map to gateway-only nodes uses them too).
 * proto_new returns a SlotMap owning nothing but itself (free with proto_free), valid while `m`
 * is unchanged; NULL when out of memory. from_proto validates: -1 for a map no node could route
 * with (a map without nodes leaves m->p.n_nodes 0: the caller supplies the configuration's). */
Spool__SlotMap *spool_slot_map_proto_new(const struct spool_slot_map *m);
void spool_slot_map_proto_free(Spool__SlotMap *p);
int spool_slot_map_from_proto(const Spool__SlotMap *p, struct spool_slot_map *m);
uint64_t spool_meta_leader(struct spool_meta *m);
bool spool_meta_is_leader(struct spool_meta *m);
/* True if `id` is a voter in the group's committed configuration. */
bool spool_meta_is_voter(struct spool_meta *m, uint64_t id);

/* Proposes `next` as the next map (its epoch is set to the current one + 1). cb(arg, status)
 * runs once, on the loop, after it was applied (0) or failed (SPOOL_ENOTLEADER, SPOOL_EIO).
 * Returns 0, SPOOL_ENOTLEADER, SPOOL_EBUSY (a proposal is in flight) or SPOOL_ENOMEM without
 * calling cb. */
typedef void (*spool_meta_propose_cb)(void *arg, int status);
int spool_meta_propose(struct spool_meta *m, const struct spool_slot_map *next,
                       spool_meta_propose_cb cb, void *arg);

#endif
