/* Bump allocator for decoded records; see storage/arena.h. */
#include "storage/arena.h"

#include <stdlib.h>

#define ARENA_MAX (4u << 20)

static void *arena_alloc(void *data, size_t size)
{
    struct spool_arena *a = data;
    size = (size + 15) & ~(size_t)15;
    a->want += size;
    if (a->used + size <= a->cap) {
        void *p = a->buf + a->used;
        a->used += size;
        return p;
    }
    if (a->nbig == a->capbig) {
        size_t n = a->capbig ? a->capbig * 2 : 8;
        void **b = realloc(a->big, n * sizeof *b);
        if (b == NULL) return NULL;
        a->big = b;
        a->capbig = n;
    }
    void *p = malloc(size);
    if (p != NULL) a->big[a->nbig++] = p;
    return p;
}

static void arena_free(void *data, void *ptr) { (void)data, (void)ptr; }

void spool_arena_init(struct spool_arena *a)
{
    *a = (struct spool_arena){0};
    a->pb.alloc = arena_alloc;
    a->pb.free = arena_free;
    a->pb.allocator_data = a;
}

void spool_arena_reset(struct spool_arena *a)
{
    for (size_t i = 0; i < a->nbig; i++) free(a->big[i]);
    a->nbig = 0;
    /* Grow for the common case only: one huge record must not pin a huge buffer forever. */
    if (a->want > a->cap && a->want <= ARENA_MAX) {
        size_t n = a->want * 2;
        char *b = realloc(a->buf, n);
        if (b != NULL) {
            a->buf = b;
            a->cap = n;
        }
    }
    a->used = 0;
    a->want = 0;
}

void spool_arena_release(struct spool_arena *a, struct spool_arena_mark m)
{
    if (m.used == 0 && m.nbig == 0) {
        spool_arena_reset(a);
        return;
    }
    for (size_t i = m.nbig; i < a->nbig; i++) free(a->big[i]);
    a->nbig = m.nbig;
    a->used = m.used;
}

void spool_arena_close(struct spool_arena *a)
{
    spool_arena_reset(a);
    free(a->buf);
    free(a->big);
    *a = (struct spool_arena){0};
}
