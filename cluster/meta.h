/*
 * The metadata group: one Raft group replicated on every storage node, holding the slot -> shard
 * map (cluster/placement.h) with an epoch.
 *
 * At bootstrap every storage node starts the group with all storage nodes as voters (the same
 * deterministic rule as the shards: bootstrap only a pristine directory). The first leader finds
 * the map empty (epoch 0) and proposes the map derived from configuration as epoch 1; from then on
 * the map is whatever the log says, and every node adopts each applied map (on_map) for routing.
 * Nothing proposes a later epoch yet: moving slots between shards (resharding) is future work
 * that will add entries here, not a new mechanism.
 *
 * The state machine is the map alone, kept in memory: libraft restores it from the group's
 * snapshot and replays the log on restart. Snapshots carry a MetaEntry with the current map.
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

struct spool_slot_map {
    uint64_t epoch; /* 0 = not set yet */
    uint32_t shards;
    uint16_t slot_shard[SPOOL_SLOTS];
};

struct spool_meta;
typedef void (*spool_meta_map_cb)(void *arg, const struct spool_slot_map *map);

struct spool_meta_config {
    uint64_t node_id;
    const char *node_address;
    const char *data_dir;             /* the node's; the group uses <data_dir>/meta/raft */
    const struct spool_placement *placement; /* voters (all storage nodes) and the initial map */
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
 * `bytes` holds 2 * SPOOL_SLOTS bytes and must outlive `p`. from_proto validates: -1 for a map
 * no node could route with. */
void spool_slot_map_to_proto(const struct spool_slot_map *m, Spool__SlotMap *p, uint8_t *bytes);
int spool_slot_map_from_proto(const Spool__SlotMap *p, struct spool_slot_map *m);
uint64_t spool_meta_leader(struct spool_meta *m);

#endif
