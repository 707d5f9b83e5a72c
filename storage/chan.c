/* Channel index vectors and the name -> channel table; see storage/chan.h. */
#include "storage/chan.h"

#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int spool_chan_push(struct spool_chan *c, uint64_t seq, const struct spool_entry *e)
{
    if (c->count == 0) {
        c->head = 0;
        c->base = seq;
    } else if (seq < c->base + c->count) {
        return -1;
    }
    size_t need = (size_t)(seq - c->base) + 1; /* entries after this push */
    if (c->head + need > c->cap) {
        if (c->head > 0 && c->head >= c->count) { /* slide the live part down first */
            memmove(c->ent, c->ent + c->head, c->count * sizeof *c->ent);
            c->head = 0;
        }
        if (c->head + need > c->cap) {
            size_t n = c->cap ? c->cap * 2 : 16;
            while (n < c->head + need) n *= 2;
            struct spool_entry *ent = realloc(c->ent, n * sizeof *ent);
            if (ent == NULL) return -1;
            c->ent = ent;
            c->cap = n;
        }
    }
    int64_t prev_ts = c->count > 0 ? c->ent[c->head + c->count - 1].ts : e->ts;
    while (c->count + 1 < need) { /* holes keep timestamps ordered for seq_at_time */
        c->ent[c->head + c->count] = (struct spool_entry){.seg = 0, .ts = prev_ts};
        c->count++;
    }
    c->ent[c->head + c->count++] = *e;
    if (seq > c->last_seq) c->last_seq = seq;
    return 0;
}

void spool_chan_drop_front(struct spool_chan *c, size_t n)
{
    if (n >= c->count) {
        c->base += c->count;
        c->count = 0;
        c->head = 0;
        return;
    }
    c->head += n;
    c->base += n;
    c->count -= n;
}

void spool_chanmap_init(struct spool_chanmap *m) { *m = (struct spool_chanmap){0}; }

void spool_chanmap_close(struct spool_chanmap *m)
{
    SPOOL_CHANMAP_FOREACH(m, c)
    {
        free(c->ent);
        free(c->name);
        free(c);
    }
    free(m->slots);
    *m = (struct spool_chanmap){0};
}

uint64_t spool_chanmap_hash(const char *name) { return fnv1a(name); }

struct spool_chan *spool_chanmap_get(const struct spool_chanmap *m, const char *name)
{
    return m->cap == 0 ? NULL : spool_chanmap_get_hashed(m, name, fnv1a(name));
}

struct spool_chan *spool_chanmap_get_hashed(const struct spool_chanmap *m, const char *name,
                                            uint64_t h)
{
    if (m->cap == 0) return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct spool_chan *c = m->slots[i];
        if (c == NULL) return NULL;
        if (c->hash == h && strcmp(c->name, name) == 0) return c;
    }
}

static int grow(struct spool_chanmap *m)
{
    size_t n = m->cap ? m->cap * 2 : 64;
    struct spool_chan **slots = calloc(n, sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        struct spool_chan *c = m->slots[i];
        if (c == NULL) continue;
        size_t j = c->hash & (n - 1);
        while (slots[j] != NULL) j = (j + 1) & (n - 1);
        slots[j] = c;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = n;
    return 0;
}

struct spool_chan *spool_chanmap_put(struct spool_chanmap *m, const char *name)
{
    struct spool_chan *c = spool_chanmap_get(m, name);
    if (c != NULL) return c;
    if ((m->count + 1) * 10 > m->cap * 7 && grow(m) != 0) return NULL;
    c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->name = strdup(name);
    if (c->name == NULL) {
        free(c);
        return NULL;
    }
    c->hash = fnv1a(name);
    c->base = 1;
    size_t i = c->hash & (m->cap - 1);
    while (m->slots[i] != NULL) i = (i + 1) & (m->cap - 1);
    m->slots[i] = c;
    m->count++;
    return c;
}
