/*
 * Placement: channel name -> 64-bit hash -> one of SPOOL_SLOTS slots -> shard -> replicas.
 *
 * Slots, not shards, are what the hash picks, so adding a shard later moves whole slots between
 * shards and never rehashes a channel. The slot -> shard table is meant to live in a metadata
 * Raft group; until that group exists (see docs/cluster.md) every node derives the same initial
 * table from its configuration: slot s belongs to shard s % shards.
 *
 * Replicas: at bootstrap every node derives the same sets from configuration: the storage
 * nodes are the ids listed in --peers, sorted ascending; shard i is replicated on
 * R = min(replicas, N) consecutive storage nodes starting at position i % N (wrapping). A node
 * bootstraps a shard's Raft group with exactly that voter set, so every node agrees without
 * talking to each other. That is what the metadata group's map holds at epoch 1; membership
 * changes (cluster/membership.c) then rewrite the node list and the replica sets explicitly,
 * so a placement stores each shard's replicas rather than computing them.
 *
 * spool_placement_balance() is the rule membership changes use to decide where replicas go:
 * drop replicas on nodes that left, fill shards below R with the least-loaded nodes, then move
 * single replicas from the most- to the least-loaded node until no two nodes differ by more than
 * one replica. It is a pure function, so it is unit-tested alone (tests/cluster/test_placement.c).
 *
 * The peer list is "id@host:port,id@host:port,..." (the empty string means a single node whose
 * only peer is itself, listening on its own cluster address).
 */
#ifndef SPOOL_CLUSTER_PLACEMENT_H
#define SPOOL_CLUSTER_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SPOOL_SLOTS 4096
#define SPOOL_MAX_NODES 64
#define SPOOL_MAX_SHARDS 1024
#define SPOOL_ADDRESS_MAX 256

/* The slot of a channel: stable across versions and platforms (FNV-1a 64, then modulo). */
uint32_t spool_slot_of(const char *channel, size_t len);

/* A set of slots (resharding): SPOOL_SLOTS bits, slot i = bit i % 8 of byte i / 8. */
#define SPOOL_SLOT_BITMAP_BYTES (SPOOL_SLOTS / 8)

static inline bool spool_slot_bit(const uint8_t *bm, uint32_t slot)
{
    return slot < SPOOL_SLOTS && (bm[slot / 8] >> (slot % 8) & 1) != 0;
}

static inline void spool_slot_bit_set(uint8_t *bm, uint32_t slot)
{
    if (slot < SPOOL_SLOTS)
        bm[slot / 8] |= (uint8_t)(1u << (slot % 8));
}

static inline void spool_slot_bit_clear(uint8_t *bm, uint32_t slot)
{
    if (slot < SPOOL_SLOTS)
        bm[slot / 8] &= (uint8_t)~(1u << (slot % 8));
}

static inline uint32_t spool_slot_count(const uint8_t *bm)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < SPOOL_SLOT_BITMAP_BYTES; i++)
        n += (uint32_t)__builtin_popcount(bm[i]);
    return n;
}


struct spool_peer {
    uint64_t id;
    char address[SPOOL_ADDRESS_MAX];
};

/* Parses a peer list into `out` (capacity `cap`), sorted by id. Rejects id 0, duplicates, empty
 * addresses and more than `cap` peers with SPOOL_EINVAL. */
int spool_peers_parse(const char *list, struct spool_peer *out, size_t cap, size_t *n,
                      struct spool_err *err);

#define SPOOL_MAX_REPLICAS 8 /* per shard, including one extra while a replica moves */

struct spool_placement {
    uint32_t shards;
    uint32_t replicas;                     /* effective: min(wanted, n_nodes), >= 1 */
    uint32_t wanted;                       /* configured (--replicas) */
    size_t n_nodes;
    struct spool_peer nodes[SPOOL_MAX_NODES]; /* storage nodes, sorted by id */
    uint16_t slot_shard[SPOOL_SLOTS];
    uint8_t n_replicas[SPOOL_MAX_SHARDS];  /* per shard: how many of replica[shard] are set */
    uint64_t replica[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS]; /* node ids; [0] is the home */
};

/* Initial placement from configuration. */
int spool_placement_init(struct spool_placement *p, const struct spool_peer *nodes, size_t n_nodes,
                         uint32_t shards, uint32_t replicas, struct spool_err *err);
uint32_t spool_placement_shard_of(const struct spool_placement *p, const char *channel);
/* How many replicas `shard` has now (usually p->replicas; one more while a replica moves). */
uint32_t spool_placement_replica_count(const struct spool_placement *p, uint32_t shard);
/* The i-th replica of `shard` (i wraps around the shard's replica count). */
const struct spool_peer *spool_placement_replica(const struct spool_placement *p, uint32_t shard,
                                                 uint32_t i);
bool spool_placement_has_replica(const struct spool_placement *p, uint32_t shard, uint64_t node_id);
/* The address of storage node `id`, or NULL. */
const char *spool_placement_address(const struct spool_placement *p, uint64_t id);
/* Index of node `id` in p->nodes, or -1. */
int spool_placement_node_index(const struct spool_placement *p, uint64_t id);
/* Replicas placed on node `id`. */
uint32_t spool_placement_load(const struct spool_placement *p, uint64_t id);
/* Adds a storage node (kept sorted); SPOOL_EINVAL if present or full. */
int spool_placement_add_node(struct spool_placement *p, uint64_t id, const char *address,
                             struct spool_err *err);
/* Removes a storage node from the node list (not from replica sets: see balance). */
void spool_placement_remove_node(struct spool_placement *p, uint64_t id);
/* Recomputes p->replicas from wanted and n_nodes. */
void spool_placement_set_replicas(struct spool_placement *p);

/* Where replicas should be for p->nodes (see the top of this file): writes, per shard, the
 * target set into target[s] / n_target[s], moving as few replicas as the rule allows and never
 * more than one of a shard's replicas (so each shard's change is one add and at most one
 * remove). Returns the number of shards whose set changes. */
uint32_t spool_placement_balance(const struct spool_placement *p,
                                 uint64_t target[][SPOOL_MAX_REPLICAS], uint8_t *n_target);

/* Adding shards (resharding, cluster/reshard.c, docs/resharding.md): grows `p` from p->shards to
 * `shards` (more, at most SPOOL_MAX_SHARDS) and plans where slots go. The new shards get replica
 * sets of p->replicas nodes each, the least-loaded nodes first (ties by lowest id, load counted
 * as shards are added), so replicas stay balanced. slot_target[SPOOL_SLOTS] receives each slot's
 * shard after the change (p->slot_shard is left as it is: slots move later, one batch at a time):
 * every shard ends with floor or ceil of SPOOL_SLOTS / shards slots (the ceil ones are the most
 * loaded existing shards first, then the new shards in order), only new shards receive slots,
 * and each slot a new shard still needs comes from the existing shard the furthest above its
 * share (ties by lowest shard), its lowest-numbered slot first: the fewest slots move. Pure
 * and deterministic. Returns the number of slots that move, or -1 with err (SPOOL_EINVAL). */
long spool_placement_plan_shards(struct spool_placement *p, uint32_t shards, uint16_t *slot_target,
                                 struct spool_err *err);

#endif
