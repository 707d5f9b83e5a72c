/*
 * Placement: channel name -> 64-bit hash -> one of SPOOL_SLOTS slots -> shard -> replicas.
 *
 * Slots, not shards, are what the hash picks, so adding a shard later moves whole slots between
 * shards and never rehashes a channel. The slot -> shard table is meant to live in a metadata
 * Raft group; until that group exists (see docs/cluster.md) every node derives the same initial
 * table from its configuration: slot s belongs to shard s % shards.
 *
 * Replicas are derived from configuration too, identically on every node: the storage nodes are
 * the ids listed in --peers, sorted ascending; shard i is replicated on R = min(replicas, N)
 * consecutive storage nodes starting at position i % N (wrapping). A node bootstraps a shard's
 * Raft group with exactly that voter set, so every node agrees without talking to each other.
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

struct spool_peer {
    uint64_t id;
    char address[SPOOL_ADDRESS_MAX];
};

/* Parses a peer list into `out` (capacity `cap`), sorted by id. Rejects id 0, duplicates, empty
 * addresses and more than `cap` peers with SPOOL_EINVAL. */
int spool_peers_parse(const char *list, struct spool_peer *out, size_t cap, size_t *n,
                      struct spool_err *err);

struct spool_placement {
    uint32_t shards;
    uint32_t replicas;                     /* effective: min(configured, n_nodes), >= 1 */
    size_t n_nodes;
    struct spool_peer nodes[SPOOL_MAX_NODES]; /* storage nodes, sorted by id */
    uint16_t slot_shard[SPOOL_SLOTS];
};

/* Initial placement from configuration. */
int spool_placement_init(struct spool_placement *p, const struct spool_peer *nodes, size_t n_nodes,
                         uint32_t shards, uint32_t replicas, struct spool_err *err);
uint32_t spool_placement_shard_of(const struct spool_placement *p, const char *channel);
/* The i-th replica of `shard` (i < p->replicas). */
const struct spool_peer *spool_placement_replica(const struct spool_placement *p, uint32_t shard,
                                                 uint32_t i);
bool spool_placement_has_replica(const struct spool_placement *p, uint32_t shard, uint64_t node_id);
/* The address of storage node `id`, or NULL. */
const char *spool_placement_address(const struct spool_placement *p, uint64_t id);

#endif
