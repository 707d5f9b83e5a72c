/*
 * A bump allocator handed to protobuf-c when decoding records. Every read decodes one record,
 * hands it to a visitor and forgets it, so allocating its strings one malloc at a time and
 * freeing them again would be pure overhead: instead the decoder bumps a pointer in one reused
 * buffer and spool_arena_reset() forgets everything at once. A request that does not fit goes to
 * malloc and is remembered; the next reset grows the buffer to the high-water mark, so a steady
 * workload stops calling malloc after the first few records.
 *
 * Marks make it safe to nest: a visitor may read from the store while holding a decoded record.
 * Each decode takes a mark first and releases back to it afterwards, so an inner read allocates
 * after the outer record and frees only its own memory.
 */
#ifndef SPOOL_STORAGE_ARENA_H
#define SPOOL_STORAGE_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct spool_arena {
    char *buf;
    size_t cap, used, want; /* want: bytes the last cycle needed in total */
    void **big;             /* overflow allocations of this cycle */
    size_t nbig, capbig;
    ProtobufCAllocator pb;  /* protobuf-c view of this arena */
};

void spool_arena_init(struct spool_arena *a);
void spool_arena_close(struct spool_arena *a);
void spool_arena_reset(struct spool_arena *a);

struct spool_arena_mark {
    size_t used, nbig;
};
static inline struct spool_arena_mark spool_arena_mark(const struct spool_arena *a)
{
    return (struct spool_arena_mark){a->used, a->nbig};
}
/* Forgets what was allocated since `m` (everything, and regrows, when `m` is the bottom). */
void spool_arena_release(struct spool_arena *a, struct spool_arena_mark m);

#endif
