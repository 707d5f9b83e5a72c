/*
 * The idempotent-publish window of one shard: (channel, message id) -> (seq, timestamp).
 *
 * A message published with a client-supplied `id` that was already stored on the same channel
 * no more than `window_ms` before (measured with the timestamps carried in Raft entries, never a
 * local clock) is a duplicate: the state machine returns the original seq instead of storing it
 * again. Every replica applies the same entries in the same order, so every replica's table
 * holds the same ids and answers the same way.
 *
 * The table is a chained hash over "channel\0id" keys plus a FIFO in insertion order. Entries
 * leave the FIFO's head once they are older than the window relative to the newest insert, or
 * when the table holds more than `max_entries` (the guarantee is therefore "within the window,
 * for the most recent max_entries ids of the shard"; documented in docs/cluster.md). After a
 * restart or a snapshot install the state machine rebuilds the table from the store's tails.
 */
#ifndef SPOOL_CLUSTER_DEDUP_H
#define SPOOL_CLUSTER_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool_dedup_entry;

struct spool_dedup {
    uint64_t window_ms;
    size_t max_entries;
    size_t count;
    size_t n_buckets; /* power of two */
    struct spool_dedup_entry **buckets;
    struct spool_dedup_entry *head, *tail; /* FIFO, oldest first */
};

void spool_dedup_init(struct spool_dedup *d, uint64_t window_ms, size_t max_entries);
void spool_dedup_close(struct spool_dedup *d);
/* Drops everything (before a rebuild). */
void spool_dedup_reset(struct spool_dedup *d);
/* True if (channel, id) was recorded at a timestamp within the window of `now_ms`; *seq gets the
 * original seq. */
bool spool_dedup_find(const struct spool_dedup *d, const char *channel, const char *id,
                      int64_t now_ms, uint64_t *seq);
/* Records (channel, id) -> seq at `ts_ms` and expires old entries; returns SPOOL_ENOMEM or 0. */
int spool_dedup_insert(struct spool_dedup *d, const char *channel, const char *id, uint64_t seq,
                       int64_t ts_ms);

#endif
