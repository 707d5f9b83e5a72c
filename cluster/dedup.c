/*
 * Idempotent-publish window (see dedup.h). Keys are "channel\0id" byte strings hashed with
 * FNV-1a; buckets double when the load passes 1. Expiry walks the FIFO from its head, so the
 * cost of an insert is amortised O(1).
 */
#include "cluster/dedup.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

struct spool_dedup_entry {
    struct spool_dedup_entry *chain; /* next in bucket */
    struct spool_dedup_entry *next;  /* FIFO: next newer */
    uint64_t hash;
    uint64_t seq;
    int64_t ts_ms;
    size_t key_len;
    char key[]; /* channel \0 id */
};

static uint64_t key_hash(const char *channel, const char *id, size_t *len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t n = 0;
    for (const char *p = channel;; p++, n++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ULL;
        if (*p == '\0')
            break;
    }
    n++;
    for (const char *p = id; *p != '\0'; p++, n++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ULL;
    }
    *len = n;
    return h;
}

static bool key_eq(const struct spool_dedup_entry *e, const char *channel, const char *id,
                   size_t len)
{
    size_t cl = strlen(channel) + 1;
    return e->key_len == len && memcmp(e->key, channel, cl) == 0 &&
           memcmp(e->key + cl, id, len - cl) == 0;
}

void spool_dedup_init(struct spool_dedup *d, uint64_t window_ms, size_t max_entries)
{
    memset(d, 0, sizeof *d);
    d->window_ms = window_ms;
    d->max_entries = max_entries ? max_entries : 1;
}

void spool_dedup_reset(struct spool_dedup *d)
{
    struct spool_dedup_entry *e = d->head;
    while (e != NULL) {
        struct spool_dedup_entry *next = e->next;
        free(e);
        e = next;
    }
    free(d->buckets);
    d->buckets = NULL;
    d->n_buckets = 0;
    d->count = 0;
    d->head = d->tail = NULL;
}

void spool_dedup_close(struct spool_dedup *d)
{
    spool_dedup_reset(d);
}

bool spool_dedup_find(const struct spool_dedup *d, const char *channel, const char *id,
                      int64_t now_ms, uint64_t *seq)
{
    if (d->n_buckets == 0 || id == NULL || id[0] == '\0')
        return false;
    size_t len;
    uint64_t h = key_hash(channel, id, &len);
    for (struct spool_dedup_entry *e = d->buckets[h & (d->n_buckets - 1)]; e; e = e->chain) {
        if (e->hash == h && key_eq(e, channel, id, len)) {
            if (now_ms - e->ts_ms > (int64_t)d->window_ms)
                return false;
            *seq = e->seq;
            return true;
        }
    }
    return false;
}

static void unlink_entry(struct spool_dedup *d, struct spool_dedup_entry *e)
{
    struct spool_dedup_entry **pp = &d->buckets[e->hash & (d->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
}

static void expire(struct spool_dedup *d, int64_t now_ms)
{
    while (d->head != NULL &&
           (d->count > d->max_entries || now_ms - d->head->ts_ms > (int64_t)d->window_ms)) {
        struct spool_dedup_entry *e = d->head;
        d->head = e->next;
        if (d->head == NULL)
            d->tail = NULL;
        unlink_entry(d, e);
        free(e);
        d->count--;
    }
}

static int grow(struct spool_dedup *d)
{
    size_t n = d->n_buckets ? d->n_buckets * 2 : 64;
    struct spool_dedup_entry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return SPOOL_ENOMEM;
    for (struct spool_dedup_entry *e = d->head; e; e = e->next) {
        e->chain = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(d->buckets);
    d->buckets = b;
    d->n_buckets = n;
    return 0;
}

int spool_dedup_insert(struct spool_dedup *d, const char *channel, const char *id, uint64_t seq,
                       int64_t ts_ms)
{
    if (id == NULL || id[0] == '\0')
        return 0;
    if (d->count + 1 > d->n_buckets && grow(d) != 0)
        return SPOOL_ENOMEM;
    size_t len;
    uint64_t h = key_hash(channel, id, &len);
    struct spool_dedup_entry *e = malloc(sizeof *e + len);
    if (e == NULL)
        return SPOOL_ENOMEM;
    e->hash = h;
    e->seq = seq;
    e->ts_ms = ts_ms;
    e->key_len = len;
    size_t cl = strlen(channel) + 1;
    memcpy(e->key, channel, cl);
    memcpy(e->key + cl, id, len - cl);
    e->next = NULL;
    e->chain = d->buckets[h & (d->n_buckets - 1)];
    d->buckets[h & (d->n_buckets - 1)] = e;
    if (d->tail)
        d->tail->next = e;
    else
        d->head = e;
    d->tail = e;
    d->count++;
    expire(d, ts_ms);
    return 0;
}
