/*
 * The tail cache: the newest records of each channel, kept encoded (the exact protobuf bytes
 * written to the segment) so that the reads a realtime transport does most — resume from a
 * recent seq, "latest K" — are served from memory without touching a file.
 *
 * Per channel it is a ring of up to `per_chan` slots holding consecutive seqs that always end
 * at the channel's newest record. A slot's buffer is reused when the ring wraps, so a steady
 * stream stops allocating once the ring is full. All channels together stay under `limit`
 * bytes (buffer capacities plus ring arrays): when over, the oldest records of the least
 * recently appended channel go first.
 */
#ifndef SPOOL_STORAGE_TAIL_H
#define SPOOL_STORAGE_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool_chan;

struct spool_tail_slot {
    uint8_t *buf;
    uint32_t len, cap;
};

struct spool_tail {
    struct spool_tail_slot *slots;
    uint32_t cap, head, count;
    uint64_t first; /* seq in slots[head] */
};

struct spool_tailcache {
    uint64_t bytes, limit;
    uint32_t per_chan;
    struct spool_chan *lru_head, *lru_tail; /* most recently appended first */
};

void spool_tailcache_init(struct spool_tailcache *tc, uint64_t limit, uint32_t per_chan);
/* Frees every channel's cache. */
void spool_tailcache_close(struct spool_tailcache *tc);
/* Caches the record `seq` just appended to `c` (copying it). Never fails: on a gap, an
 * oversized record or no memory the channel's cache is dropped instead. */
void spool_tail_put(struct spool_tailcache *tc, struct spool_chan *c, uint64_t seq,
                    const uint8_t *payload, uint32_t len);
bool spool_tail_get(const struct spool_chan *c, uint64_t seq, const uint8_t **payload,
                    uint32_t *len);
/* Forgets cached records below `first` (retention) or all of them. */
void spool_tail_trim(struct spool_tailcache *tc, struct spool_chan *c, uint64_t first);
void spool_tail_clear(struct spool_tailcache *tc, struct spool_chan *c);

#endif
