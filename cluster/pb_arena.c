/* One-shot bump allocator for protobuf-c (see pb_arena.h). */
#include "cluster/pb_arena.h"

#include <stdint.h>
#include <stdlib.h>

#define ALIGN 16
#define MIN_BLOCK 1024

struct spool_pb_block {
    struct spool_pb_block *next;
    _Alignas(16) char data[];
};

static void *pb_alloc_cb(void *data, size_t size)
{
    return spool_pb_arena_alloc(data, size);
}

static void pb_free_cb(void *data, void *ptr)
{
    (void)data, (void)ptr; /* everything goes at close */
}

void spool_pb_arena_init(struct spool_pb_arena *a, void *buf, size_t cap)
{
    *a = (struct spool_pb_arena){0};
    a->pb.alloc = pb_alloc_cb;
    a->pb.free = pb_free_cb;
    a->pb.allocator_data = a;
    if (buf != NULL && cap >= ALIGN) {
        uintptr_t p = ((uintptr_t)buf + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
        uintptr_t e = (uintptr_t)buf + cap;
        if (p < e) {
            a->cur = (char *)p;
            a->end = (char *)e;
        }
    }
    a->next = cap * 2 > MIN_BLOCK ? cap * 2 : MIN_BLOCK;
}

void *spool_pb_arena_alloc(struct spool_pb_arena *a, size_t size)
{
    size_t need = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (need == 0)
        need = ALIGN;
    if (need < size) /* overflow */
        return NULL;
    if (a->cur == NULL || (size_t)(a->end - a->cur) < need) {
        size_t cap = a->next;
        while (cap < need) {
            if (cap > SIZE_MAX / 2)
                return NULL;
            cap *= 2;
        }
        if (cap > SIZE_MAX - sizeof(struct spool_pb_block))
            return NULL;
        struct spool_pb_block *b = malloc(sizeof *b + cap);
        if (b == NULL)
            return NULL;
        b->next = a->blocks;
        a->blocks = b;
        a->cur = b->data;
        a->end = b->data + cap;
        a->next = cap <= SIZE_MAX / 2 ? cap * 2 : cap;
    }
    void *p = a->cur;
    a->cur += need;
    return p;
}

void spool_pb_arena_close(struct spool_pb_arena *a)
{
    struct spool_pb_block *b = a->blocks;
    while (b != NULL) {
        struct spool_pb_block *next = b->next;
        free(b);
        b = next;
    }
    a->blocks = NULL;
    a->cur = a->end = NULL;
}
