/* Per-channel rings of recent encoded records under a global byte bound; see storage/tail.h. */
#include "storage/tail.h"

#include <stdlib.h>
#include <string.h>

#include "storage/chan.h"

void spool_tailcache_init(struct spool_tailcache *tc, uint64_t limit, uint32_t per_chan)
{
    *tc = (struct spool_tailcache){.limit = limit, .per_chan = per_chan};
}

static void lru_unlink(struct spool_tailcache *tc, struct spool_chan *c)
{
    if (c->lru_prev != NULL) c->lru_prev->lru_next = c->lru_next;
    else if (tc->lru_head == c) tc->lru_head = c->lru_next;
    if (c->lru_next != NULL) c->lru_next->lru_prev = c->lru_prev;
    else if (tc->lru_tail == c) tc->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

static void lru_front(struct spool_tailcache *tc, struct spool_chan *c)
{
    if (tc->lru_head == c) return;
    lru_unlink(tc, c);
    c->lru_next = tc->lru_head;
    if (tc->lru_head != NULL) tc->lru_head->lru_prev = c;
    tc->lru_head = c;
    if (tc->lru_tail == NULL) tc->lru_tail = c;
}

void spool_tail_clear(struct spool_tailcache *tc, struct spool_chan *c)
{
    struct spool_tail *t = &c->tail;
    for (uint32_t i = 0; i < t->cap; i++) {
        tc->bytes -= t->slots[i].cap;
        free(t->slots[i].buf);
    }
    tc->bytes -= (uint64_t)t->cap * sizeof *t->slots;
    free(t->slots);
    *t = (struct spool_tail){0};
    lru_unlink(tc, c);
}

void spool_tailcache_close(struct spool_tailcache *tc)
{
    while (tc->lru_head != NULL) spool_tail_clear(tc, tc->lru_head);
}

/* Drops the oldest cached record of `c`, releasing its buffer. */
static void drop_oldest(struct spool_tailcache *tc, struct spool_chan *c)
{
    struct spool_tail *t = &c->tail;
    struct spool_tail_slot *sl = &t->slots[t->head];
    tc->bytes -= sl->cap;
    free(sl->buf);
    *sl = (struct spool_tail_slot){0};
    t->head = (t->head + 1) % t->cap;
    t->first++;
    if (--t->count == 0) spool_tail_clear(tc, c);
}

static int grow_ring(struct spool_tailcache *tc, struct spool_tail *t)
{
    uint32_t n = t->cap ? t->cap * 2 : 8;
    if (n > tc->per_chan) n = tc->per_chan;
    struct spool_tail_slot *slots = calloc(n, sizeof *slots);
    if (slots == NULL) return -1;
    for (uint32_t i = 0; i < t->count; i++) slots[i] = t->slots[(t->head + i) % t->cap];
    /* Slots past count may hold reusable buffers only when the ring was never full; a full
     * ring has none, so nothing else to carry over. */
    tc->bytes += (uint64_t)(n - t->cap) * sizeof *slots;
    free(t->slots);
    t->slots = slots;
    t->cap = n;
    t->head = 0;
    return 0;
}

void spool_tail_put(struct spool_tailcache *tc, struct spool_chan *c, uint64_t seq,
                    const uint8_t *payload, uint32_t len)
{
    struct spool_tail *t = &c->tail;
    if (t->count > 0 && seq != t->first + t->count) spool_tail_clear(tc, c);
    if (tc->per_chan == 0 || (uint64_t)len > tc->limit / 4) {
        spool_tail_clear(tc, c);
        return;
    }
    if (t->count == t->cap) {
        if (t->cap < tc->per_chan) {
            if (grow_ring(tc, t) != 0) {
                spool_tail_clear(tc, c);
                return;
            }
        } else { /* full: the oldest slot becomes the newest, keeping its buffer */
            t->head = (t->head + 1) % t->cap;
            t->first++;
            t->count--;
        }
    }
    struct spool_tail_slot *sl = &t->slots[(t->head + t->count) % t->cap];
    if (sl->cap < len || sl->cap > 4 * len + 4096) {
        uint32_t want = len > 0 ? len : 1;
        uint8_t *b = realloc(sl->buf, want);
        if (b == NULL) {
            spool_tail_clear(tc, c);
            return;
        }
        tc->bytes = tc->bytes - sl->cap + want;
        sl->buf = b;
        sl->cap = want;
    }
    memcpy(sl->buf, payload, len);
    sl->len = len;
    if (t->count == 0) t->first = seq;
    t->count++;
    lru_front(tc, c);
    while (tc->bytes > tc->limit && tc->lru_tail != NULL) {
        struct spool_chan *victim = tc->lru_tail;
        if (victim == c && c->tail.count == 1) break; /* keep the record just added */
        drop_oldest(tc, victim);
    }
}

bool spool_tail_get(const struct spool_chan *c, uint64_t seq, const uint8_t **payload,
                    uint32_t *len)
{
    const struct spool_tail *t = &c->tail;
    if (t->count == 0 || seq < t->first || seq - t->first >= t->count) return false;
    const struct spool_tail_slot *sl = &t->slots[(t->head + (seq - t->first)) % t->cap];
    *payload = sl->buf;
    *len = sl->len;
    return true;
}

void spool_tail_trim(struct spool_tailcache *tc, struct spool_chan *c, uint64_t first)
{
    while (c->tail.count > 0 && c->tail.first < first) drop_oldest(tc, c);
}
