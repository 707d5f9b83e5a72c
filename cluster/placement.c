/*
 * Placement from configuration (see placement.h for the rules). Pure functions over a plain
 * struct: no I/O, no allocation, so every node computes bit-for-bit the same answer.
 */
#include "cluster/placement.h"

#include <stdlib.h>
#include <string.h>

uint32_t spool_slot_of(const char *channel, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)channel[i];
        h *= 0x100000001b3ULL;
    }
    return (uint32_t)(h % SPOOL_SLOTS);
}

static int peer_cmp(const void *a, const void *b)
{
    const struct spool_peer *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id ? 1 : 0;
}

int spool_peers_parse(const char *list, struct spool_peer *out, size_t cap, size_t *n,
                      struct spool_err *err)
{
    *n = 0;
    const char *p = list ? list : "";
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            p = end ? end + 1 : p + len;
            continue;
        }
        const char *at = memchr(p, '@', len);
        if (at == NULL || at == p || (size_t)(at - p) >= 21)
            return spool_err_set(err, SPOOL_EINVAL, "peer %.*s: want id@host:port", (int)len, p);
        char idbuf[21];
        memcpy(idbuf, p, (size_t)(at - p));
        idbuf[at - p] = '\0';
        char *idend;
        unsigned long long id = strtoull(idbuf, &idend, 10);
        size_t alen = len - (size_t)(at - p) - 1;
        if (*idend != '\0' || id == 0)
            return spool_err_set(err, SPOOL_EINVAL, "peer %.*s: bad id", (int)len, p);
        if (alen == 0 || alen >= SPOOL_ADDRESS_MAX || memchr(at + 1, ':', alen) == NULL)
            return spool_err_set(err, SPOOL_EINVAL, "peer %.*s: bad address", (int)len, p);
        if (*n == cap)
            return spool_err_set(err, SPOOL_EINVAL, "more than %zu peers", cap);
        out[*n].id = id;
        memcpy(out[*n].address, at + 1, alen);
        out[*n].address[alen] = '\0';
        (*n)++;
        p = end ? end + 1 : p + len;
    }
    qsort(out, *n, sizeof *out, peer_cmp);
    for (size_t i = 1; i < *n; i++)
        if (out[i].id == out[i - 1].id)
            return spool_err_set(err, SPOOL_EINVAL, "peer id %llu listed twice",
                                 (unsigned long long)out[i].id);
    return 0;
}

int spool_placement_init(struct spool_placement *p, const struct spool_peer *nodes, size_t n_nodes,
                         uint32_t shards, uint32_t replicas, struct spool_err *err)
{
    if (n_nodes == 0 || n_nodes > SPOOL_MAX_NODES)
        return spool_err_set(err, SPOOL_EINVAL, "need 1..%d storage nodes, got %zu",
                             SPOOL_MAX_NODES, n_nodes);
    if (shards == 0 || shards > SPOOL_MAX_SHARDS)
        return spool_err_set(err, SPOOL_EINVAL, "need 1..%d shards, got %u", SPOOL_MAX_SHARDS,
                             shards);
    memset(p, 0, sizeof *p);
    memcpy(p->nodes, nodes, n_nodes * sizeof *nodes);
    qsort(p->nodes, n_nodes, sizeof *nodes, peer_cmp);
    p->n_nodes = n_nodes;
    p->shards = shards;
    p->replicas = replicas == 0 ? 1 : replicas;
    if (p->replicas > n_nodes)
        p->replicas = (uint32_t)n_nodes;
    for (uint32_t s = 0; s < SPOOL_SLOTS; s++)
        p->slot_shard[s] = (uint16_t)(s % shards);
    return 0;
}

uint32_t spool_placement_shard_of(const struct spool_placement *p, const char *channel)
{
    return p->slot_shard[spool_slot_of(channel, strlen(channel))];
}

const struct spool_peer *spool_placement_replica(const struct spool_placement *p, uint32_t shard,
                                                 uint32_t i)
{
    return &p->nodes[(shard + i) % p->n_nodes];
}

bool spool_placement_has_replica(const struct spool_placement *p, uint32_t shard, uint64_t node_id)
{
    for (uint32_t i = 0; i < p->replicas; i++)
        if (spool_placement_replica(p, shard, i)->id == node_id)
            return true;
    return false;
}

const char *spool_placement_address(const struct spool_placement *p, uint64_t id)
{
    for (size_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].id == id)
            return p->nodes[i].address;
    return NULL;
}
