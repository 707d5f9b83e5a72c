/*
 * The idempotent-publish window of one shard: (channel, message id) -> (seq, timestamp).
 *
 * A message published with a client-supplied `id` that was already stored on the same channel
 * no more than `window_ms` before (measured with the timestamps carried in Raft entries, never a
 * local clock) is a duplicate: the state machine returns the original seq instead of storing it
 * again. Every replica applies the same entries in the same order, so every replica's table
 * holds the same ids and answers the same way.
 *
 * Entries live in a FIFO in insertion order. They leave its head once they are older than the
 * window relative to the newest insert, or when the table holds more than `max_entries` (the
 * guarantee is therefore "within the window, for the most recent max_entries ids of the shard";
 * documented in docs/cluster.md). After a restart or a snapshot install the state machine
 * rebuilds the table from the store's tails.
 *
 * Layout (this runs for every message on every replica, so it allocates nothing per insert):
 * the FIFO is a ring of fixed-size entries; the "channel\0id" keys sit in a ring of bytes
 * allocated and freed in the same FIFO order; an open-addressing table (linear probing, at most
 * half full) maps the key hash to the ring slot, keeping 32 hash bits beside the slot so that a
 * lookup of an unknown id (the common case) reads only the table. Inserting a key that is still
 * in the FIFO (it was outside the window) points the table at the new entry; the older one stays
 * in the FIFO, shadowed, until it expires. All three arrays double while the FIFO grows towards
 * max_entries, and stay.
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
    size_t count;                    /* entries in the FIFO (shadowed ones included) */
    struct spool_dedup_entry *ring;  /* FIFO: ring[head] is the oldest */
    size_t ring_cap, head;           /* ring_cap: power of two */
    uint64_t *table;                 /* slot: (hash low 32 bits) << 32 | (ring index + 1); 0 = empty */
    size_t table_cap;                /* power of two, 2 x ring_cap */
    char *keys;                      /* key bytes, FIFO order */
    size_t keys_cap, keys_end;       /* keys_end: where the next key goes */
};

/* A key hashed once for a find followed by an insert. */
struct spool_dedup_key {
    const char *channel, *id;
    uint32_t channel_len, len; /* len: strlen(channel) + 1 + strlen(id) */
    uint64_t hash;
};

void spool_dedup_init(struct spool_dedup *d, uint64_t window_ms, size_t max_entries);
void spool_dedup_close(struct spool_dedup *d);
/* Drops everything (before a rebuild). */
void spool_dedup_reset(struct spool_dedup *d);
/* Fills `k`; false (nothing to look up or record) when the id is NULL or empty. */
bool spool_dedup_key_init(struct spool_dedup_key *k, const char *channel, const char *id);
/* True if (channel, id) was recorded at a timestamp within the window of `now_ms`; *seq gets the
 * original seq. */
bool spool_dedup_find(const struct spool_dedup *d, const char *channel, const char *id,
                      int64_t now_ms, uint64_t *seq);
bool spool_dedup_find_key(const struct spool_dedup *d, const struct spool_dedup_key *k,
                          int64_t now_ms, uint64_t *seq);
/* Starts loading the table slot `k` will probe: the table is bigger than the caches, so the
 * state machine issues these for a whole entry before it looks any key up. */
static inline void spool_dedup_prefetch(const struct spool_dedup *d, const struct spool_dedup_key *k)
{
    if (d->table_cap != 0)
        __builtin_prefetch(&d->table[k->hash & (d->table_cap - 1)]);
}
/* Records (channel, id) -> seq at `ts_ms` and expires old entries; returns SPOOL_ENOMEM or 0. */
int spool_dedup_insert(struct spool_dedup *d, const char *channel, const char *id, uint64_t seq,
                       int64_t ts_ms);
int spool_dedup_insert_key(struct spool_dedup *d, const struct spool_dedup_key *k, uint64_t seq,
                           int64_t ts_ms);

#endif
