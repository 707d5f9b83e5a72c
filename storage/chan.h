/*
 * Channels and their in-memory index.
 *
 * Every channel owns a dense vector of index entries, one per retained seq: entry i describes
 * seq base + i, giving the segment and raw offset of its frame, the payload length and the
 * record's timestamp. Reads, retention and seq_at_time therefore touch only the channel's own
 * entries and never scan other channels' bytes. The vector is trimmed from the front (retention,
 * delete) by advancing `head`, and slid back down when the dead prefix gets large, so trimming
 * is O(trimmed).
 *
 * An entry with seg == 0 is a hole: a record that recovery knows existed (a later seq of the
 * channel survived) but could not read back intact. Reading it is SPOOL_ECORRUPT.
 *
 * Channels are found by name in an open-addressing hash table (linear probing, FNV-1a). They
 * are never removed from it: a deleted channel keeps its last_seq so seqs are never reused.
 */
#ifndef SPOOL_STORAGE_CHAN_H
#define SPOOL_STORAGE_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"
#include "storage/tail.h"

struct spool_entry {
    uint32_t seg; /* segment id, 0 = hole */
    uint32_t off; /* raw offset of the frame in the segment */
    uint32_t len; /* payload length */
    uint32_t unused;
    int64_t ts;   /* record timestamp_ms */
};

struct spool_chan {
    char *name;
    uint64_t hash;
    uint64_t last_seq; /* highest seq ever assigned */
    uint64_t base;     /* seq of ent[head] */
    struct spool_entry *ent;
    size_t head, count, cap;
    uint64_t bytes;    /* frame bytes of the retained records */
    bool has_retention;
    struct spool_retention retention;
    struct spool_tail tail;
    struct spool_chan *lru_prev, *lru_next; /* tail cache eviction order */
    uint64_t batch_gen, batch_seq;          /* append_batch validation scratch */
};

/* Whether the channel exists for channels(), stats and snapshots: a rejected batch can create
 * a channel object that never got anything. */
static inline bool spool_chan_listed(const struct spool_chan *c)
{
    return c->last_seq != 0 || c->has_retention;
}

/* Lowest readable seq (last_seq + 1 if none). */
static inline uint64_t spool_chan_first(const struct spool_chan *c)
{
    return c->count > 0 ? c->base : c->last_seq + 1;
}
static inline struct spool_entry *spool_chan_at(const struct spool_chan *c, uint64_t seq)
{
    if (seq < c->base || seq - c->base >= c->count) return NULL;
    return &c->ent[c->head + (seq - c->base)];
}

/* Adds the entry for `seq`, which must be above every entry the channel has; seqs skipped in
 * between become holes (only recovery and restore ever skip). Raises last_seq. */
int spool_chan_push(struct spool_chan *c, uint64_t seq, const struct spool_entry *e);
/* Drops the `n` oldest entries (the caller accounts for them first). */
void spool_chan_drop_front(struct spool_chan *c, size_t n);

struct spool_chanmap {
    struct spool_chan **slots;
    size_t cap, count;
};

void spool_chanmap_init(struct spool_chanmap *m);
/* Frees every channel (the tail cache must have released them first). */
void spool_chanmap_close(struct spool_chanmap *m);
struct spool_chan *spool_chanmap_get(const struct spool_chanmap *m, const char *name);
/* The same lookup split in two, so that many lookups can overlap their cache misses: the hash
 * (prefetch `spool_chanmap_slot` with it), then the probe. */
uint64_t spool_chanmap_hash(const char *name);
static inline const void *spool_chanmap_slot(const struct spool_chanmap *m, uint64_t h)
{
    return m->cap != 0 ? (const void *)&m->slots[h & (m->cap - 1)] : NULL;
}
struct spool_chan *spool_chanmap_get_hashed(const struct spool_chanmap *m, const char *name,
                                            uint64_t h);
/* Returns the existing channel or a new empty one, NULL when out of memory. */
struct spool_chan *spool_chanmap_put(struct spool_chanmap *m, const char *name);

#define SPOOL_CHANMAP_FOREACH(m, c)                                                               \
    for (size_t c##_i = 0; c##_i < (m)->cap; c##_i++)                                             \
        for (struct spool_chan *c = (m)->slots[c##_i]; c != NULL; c = NULL)

#endif
