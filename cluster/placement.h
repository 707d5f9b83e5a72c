/*
 * Placement: channel name -> 64-bit hash -> one of SPOOL_SLOTS slots -> shard. Slots, not
 * shards, are what the hash picks, so adding a shard later moves whole slots between shards and
 * never rehashes a channel. The slot -> shard table itself lives in the metadata group.
 */
#ifndef SPOOL_CLUSTER_PLACEMENT_H
#define SPOOL_CLUSTER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_SLOTS 4096

/* The slot of a channel: stable across versions and platforms (FNV-1a 64, then modulo). */
uint32_t spool_slot_of(const char *channel, size_t len);

#endif
