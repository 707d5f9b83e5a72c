/*
 * Idempotent-publish window (see dedup.h for the layout).
 *
 * Hashing reads the key 8 bytes at a time (the hash only places keys in the table; it never
 * reaches the apply output, so replicas on any platform still answer alike). Lookups compare
 * 32 hash bits kept in the table slot before touching an entry, so a miss costs one or two
 * cache lines. Deleting from the table (when the FIFO's head expires) uses backward-shift
 * deletion, so no tombstones build up. Expiry order, the window test and the count bound are
 * exactly those of the original chained table: the FIFO is the insertion order, and an
 * expiry pass runs after every insert.
 */
#include "cluster/dedup.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

struct spool_dedup_entry {
    uint64_t hash;
    uint64_t seq;
    int64_t ts_ms;
    size_t key_off; /* in d->keys: channel \0 id */
    uint32_t key_len;
    bool shadowed; /* a newer entry of the same key owns the table slot */
};

#define MIN_RING 64
#define MIN_KEYS 1024

static uint64_t hash_bytes(const char *p, size_t n, uint64_t h)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w ^ ((uint64_t)n << 56)) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 32);
}

bool spool_dedup_key_init(struct spool_dedup_key *k, const char *channel, const char *id)
{
    if (id == NULL || id[0] == '\0')
        return false;
    size_t cl = strlen(channel), il = strlen(id);
    uint64_t h = hash_bytes(id, il, hash_bytes(channel, cl, 0x6a09e667f3bcc908ULL));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    k->channel = channel;
    k->id = id;
    k->channel_len = (uint32_t)cl;
    k->len = (uint32_t)(cl + 1 + il);
    k->hash = h;
    return true;
}

static bool key_eq(const struct spool_dedup *d, const struct spool_dedup_entry *e,
                   const struct spool_dedup_key *k)
{
    const char *key = d->keys + e->key_off;
    size_t cl = (size_t)k->channel_len + 1;
    return e->hash == k->hash && e->key_len == k->len && memcmp(key, k->channel, cl) == 0 &&
           memcmp(key + cl, k->id, k->len - cl) == 0;
}

void spool_dedup_init(struct spool_dedup *d, uint64_t window_ms, size_t max_entries)
{
    memset(d, 0, sizeof *d);
    d->window_ms = window_ms;
    d->max_entries = max_entries ? max_entries : 1;
}

void spool_dedup_reset(struct spool_dedup *d)
{
    free(d->ring);
    free(d->table);
    free(d->keys);
    spool_dedup_init(d, d->window_ms, d->max_entries);
}

void spool_dedup_close(struct spool_dedup *d)
{
    spool_dedup_reset(d);
}

bool spool_dedup_find_key(const struct spool_dedup *d, const struct spool_dedup_key *k,
                          int64_t now_ms, uint64_t *seq)
{
    if (d->count == 0)
        return false;
    size_t mask = d->table_cap - 1;
    uint32_t tag = (uint32_t)k->hash;
    for (size_t i = k->hash & mask;; i = (i + 1) & mask) {
        uint64_t s = d->table[i];
        if (s == 0)
            return false;
        if ((uint32_t)(s >> 32) != tag)
            continue;
        const struct spool_dedup_entry *e = &d->ring[(uint32_t)s - 1];
        if (key_eq(d, e, k)) {
            if (now_ms - e->ts_ms > (int64_t)d->window_ms)
                return false;
            *seq = e->seq;
            return true;
        }
    }
}

bool spool_dedup_find(const struct spool_dedup *d, const char *channel, const char *id,
                      int64_t now_ms, uint64_t *seq)
{
    struct spool_dedup_key k;
    return spool_dedup_key_init(&k, channel, id) && spool_dedup_find_key(d, &k, now_ms, seq);
}

/* Removes ring slot `r` from the table (backward-shift deletion). */
static void table_delete(struct spool_dedup *d, size_t r)
{
    size_t mask = d->table_cap - 1;
    size_t i = d->ring[r].hash & mask;
    while ((uint32_t)d->table[i] != r + 1)
        i = (i + 1) & mask;
    for (size_t j = i;;) {
        j = (j + 1) & mask;
        uint64_t s = d->table[j];
        if (s == 0)
            break;
        size_t home = (size_t)(s >> 32) & mask;
        /* Move s into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            d->table[i] = s;
            i = j;
        }
    }
    d->table[i] = 0;
}

static void table_put(struct spool_dedup *d, uint64_t hash, size_t r)
{
    size_t mask = d->table_cap - 1;
    size_t i = hash & mask;
    while (d->table[i] != 0)
        i = (i + 1) & mask;
    d->table[i] = (uint64_t)(uint32_t)hash << 32 | (uint64_t)(r + 1);
}

static void remove_head(struct spool_dedup *d)
{
    if (!d->ring[d->head].shadowed)
        table_delete(d, d->head);
    d->head = (d->head + 1) & (d->ring_cap - 1);
    d->count--;
}

static void expire(struct spool_dedup *d, int64_t now_ms)
{
    while (d->count > 0 && (d->count > d->max_entries ||
                            now_ms - d->ring[d->head].ts_ms > (int64_t)d->window_ms))
        remove_head(d);
}

/* Doubles the ring (entries move to 0..count-1) and rebuilds the table at twice its size. */
static int grow_ring(struct spool_dedup *d)
{
    size_t n = d->ring_cap ? d->ring_cap * 2 : MIN_RING;
    struct spool_dedup_entry *ring = malloc(n * sizeof *ring);
    uint64_t *table = calloc(2 * n, sizeof *table);
    if (ring == NULL || table == NULL) {
        free(ring);
        free(table);
        return SPOOL_ENOMEM;
    }
    for (size_t i = 0; i < d->count; i++)
        ring[i] = d->ring[(d->head + i) & (d->ring_cap - 1)];
    free(d->ring);
    free(d->table);
    d->ring = ring;
    d->ring_cap = n;
    d->head = 0;
    d->table = table;
    d->table_cap = 2 * n;
    for (size_t i = 0; i < d->count; i++)
        if (!ring[i].shadowed)
            table_put(d, ring[i].hash, i);
    return 0;
}

/* Room for `len` key bytes after the live ones (which run from the head entry's key to
 * keys_end, possibly wrapping); returns the offset, or SIZE_MAX when out of memory. */
static size_t keys_alloc(struct spool_dedup *d, size_t len)
{
    if (d->count == 0)
        d->keys_end = 0;
    size_t start = d->count > 0 ? d->ring[d->head].key_off : 0;
    size_t end = d->keys_end;
    if (d->count == 0 || end > start) { /* live bytes are [start, end) */
        if (end + len <= d->keys_cap)
            return end;
        if (len < start)
            return 0;
    } else if (end + len < start) { /* live bytes are [start, cap) and [0, end) */
        return end;
    }
    size_t live = 0;
    for (size_t i = 0; i < d->count; i++)
        live += d->ring[(d->head + i) & (d->ring_cap - 1)].key_len;
    size_t n = d->keys_cap ? d->keys_cap * 2 : MIN_KEYS;
    while (n < 2 * (live + len))
        n *= 2;
    char *keys = malloc(n);
    if (keys == NULL)
        return SIZE_MAX;
    size_t pos = 0;
    for (size_t i = 0; i < d->count; i++) {
        struct spool_dedup_entry *e = &d->ring[(d->head + i) & (d->ring_cap - 1)];
        memcpy(keys + pos, d->keys + e->key_off, e->key_len);
        e->key_off = pos;
        pos += e->key_len;
    }
    free(d->keys);
    d->keys = keys;
    d->keys_cap = n;
    d->keys_end = pos;
    return pos;
}

int spool_dedup_insert_key(struct spool_dedup *d, const struct spool_dedup_key *k, uint64_t seq,
                           int64_t ts_ms)
{
    if (d->count == d->ring_cap) {
        if (d->ring_cap < d->max_entries) {
            if (grow_ring(d) != 0)
                return SPOOL_ENOMEM;
        } else {
            /* count >= max_entries: the expiry after this insert would drop the head first. */
            remove_head(d);
        }
    }
    size_t off = keys_alloc(d, k->len);
    if (off == SIZE_MAX)
        return SPOOL_ENOMEM;
    size_t cl = (size_t)k->channel_len + 1;
    memcpy(d->keys + off, k->channel, cl);
    memcpy(d->keys + off + cl, k->id, k->len - cl);
    d->keys_end = off + k->len;
    size_t r = (d->head + d->count) & (d->ring_cap - 1);
    d->ring[r] = (struct spool_dedup_entry){
        .hash = k->hash, .seq = seq, .ts_ms = ts_ms, .key_off = off, .key_len = k->len};
    /* The newest entry of a key owns its table slot. */
    size_t mask = d->table_cap - 1;
    uint32_t tag = (uint32_t)k->hash;
    size_t i = k->hash & mask;
    for (;; i = (i + 1) & mask) {
        uint64_t s = d->table[i];
        if (s == 0)
            break;
        if ((uint32_t)(s >> 32) == tag && key_eq(d, &d->ring[(uint32_t)s - 1], k)) {
            d->ring[(uint32_t)s - 1].shadowed = true;
            break;
        }
    }
    d->table[i] = (uint64_t)tag << 32 | (uint64_t)(r + 1);
    d->count++;
    /* At the count bound every insert expires the head: start loading the table slot an
     * expiry a few inserts from now will clear. */
    if (d->count > 8)
        __builtin_prefetch(&d->table[d->ring[(d->head + 8) & (d->ring_cap - 1)].hash & mask]);
    expire(d, ts_ms);
    return 0;
}

int spool_dedup_insert(struct spool_dedup *d, const char *channel, const char *id, uint64_t seq,
                       int64_t ts_ms)
{
    struct spool_dedup_key k;
    if (!spool_dedup_key_init(&k, channel, id))
        return 0;
    return spool_dedup_insert_key(d, &k, seq, ts_ms);
}
