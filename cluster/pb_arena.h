/*
 * A one-shot bump allocator for protobuf-c, for messages whose pieces all die together: a
 * forwarded publish batch on the leader (the peer's bytes, their decoded requests and the
 * replies collected for them, freed when the group answers) or a reply decoded on the stack
 * and dropped once read. protobuf-c's default allocator costs one malloc and one free per
 * field and string; here an allocation bumps a pointer in the current block, frees are no-ops,
 * and spool_pb_arena_close() frees the few blocks at once.
 *
 * The first block may be the caller's (a stack buffer, or memory allocated with the owner);
 * when it is full a block of at least twice the previous size is malloc'd. Memory is aligned
 * for any type (16 bytes). Not for long-lived, growing data: nothing is reused before close.
 */
#ifndef SPOOL_CLUSTER_PB_ARENA_H
#define SPOOL_CLUSTER_PB_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct spool_pb_block;

struct spool_pb_arena {
    ProtobufCAllocator pb; /* hand &arena.pb to protobuf-c's unpack */
    char *cur, *end;       /* free space of the current block */
    struct spool_pb_block *blocks; /* malloc'd blocks, newest first */
    size_t next;           /* size of the next block */
};

/* `buf`/`cap`: the first block, owned by the caller (NULL/0: the first allocation mallocs). */
void spool_pb_arena_init(struct spool_pb_arena *a, void *buf, size_t cap);
/* NULL when out of memory. size 0 gives a valid, unique pointer. */
void *spool_pb_arena_alloc(struct spool_pb_arena *a, size_t size);
void spool_pb_arena_close(struct spool_pb_arena *a);

#endif
