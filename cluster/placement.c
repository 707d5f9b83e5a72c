/*
 * Placement from configuration (see placement.h for the rules). Pure functions over a plain
 * struct: no I/O, no allocation, so every node computes bit-for-bit the same answer.
 */
#include "cluster/placement.h"

#include <stdio.h>
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

void spool_placement_set_replicas(struct spool_placement *p)
{
    uint32_t r = p->wanted == 0 ? 1 : p->wanted;
    if (r > p->n_nodes)
        r = (uint32_t)p->n_nodes;
    if (r > SPOOL_MAX_REPLICAS - 1)
        r = SPOOL_MAX_REPLICAS - 1;
    p->replicas = r == 0 ? 1 : r;
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
    p->wanted = replicas == 0 ? 1 : replicas;
    spool_placement_set_replicas(p);
    for (uint32_t s = 0; s < SPOOL_SLOTS; s++)
        p->slot_shard[s] = (uint16_t)(s % shards);
    for (uint32_t s = 0; s < shards; s++) {
        p->n_replicas[s] = (uint8_t)p->replicas;
        for (uint32_t i = 0; i < p->replicas; i++)
            p->replica[s][i] = p->nodes[(s + i) % n_nodes].id;
    }
    return 0;
}

uint32_t spool_placement_shard_of(const struct spool_placement *p, const char *channel)
{
    return p->slot_shard[spool_slot_of(channel, strlen(channel))];
}

int spool_placement_node_index(const struct spool_placement *p, uint64_t id)
{
    for (size_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].id == id)
            return (int)i;
    return -1;
}

uint32_t spool_placement_replica_count(const struct spool_placement *p, uint32_t shard)
{
    return shard < p->shards ? p->n_replicas[shard] : 0;
}

const struct spool_peer *spool_placement_replica(const struct spool_placement *p, uint32_t shard,
                                                 uint32_t i)
{
    static const struct spool_peer none; /* id 0: never returned for a valid map */
    uint32_t n = spool_placement_replica_count(p, shard);
    if (n == 0)
        return &none;
    int k = spool_placement_node_index(p, p->replica[shard][i % n]);
    return k < 0 ? &none : &p->nodes[k];
}

bool spool_placement_has_replica(const struct spool_placement *p, uint32_t shard, uint64_t node_id)
{
    uint32_t n = spool_placement_replica_count(p, shard);
    for (uint32_t i = 0; i < n; i++)
        if (p->replica[shard][i] == node_id)
            return true;
    return false;
}

const char *spool_placement_address(const struct spool_placement *p, uint64_t id)
{
    int k = spool_placement_node_index(p, id);
    return k < 0 ? NULL : p->nodes[k].address;
}

uint32_t spool_placement_load(const struct spool_placement *p, uint64_t id)
{
    uint32_t c = 0;
    for (uint32_t s = 0; s < p->shards; s++)
        c += spool_placement_has_replica(p, s, id);
    return c;
}

int spool_placement_add_node(struct spool_placement *p, uint64_t id, const char *address,
                             struct spool_err *err)
{
    if (id == 0 || spool_placement_node_index(p, id) >= 0)
        return spool_err_set(err, SPOOL_EINVAL, "node %llu is already a member",
                             (unsigned long long)id);
    if (p->n_nodes >= SPOOL_MAX_NODES)
        return spool_err_set(err, SPOOL_EINVAL, "at most %d storage nodes", SPOOL_MAX_NODES);
    if (address == NULL || address[0] == '\0' || strlen(address) >= SPOOL_ADDRESS_MAX ||
        strchr(address, ':') == NULL)
        return spool_err_set(err, SPOOL_EINVAL, "bad address (want host:port)");
    p->nodes[p->n_nodes].id = id;
    snprintf(p->nodes[p->n_nodes].address, SPOOL_ADDRESS_MAX, "%s", address);
    p->n_nodes++;
    qsort(p->nodes, p->n_nodes, sizeof p->nodes[0], peer_cmp);
    return 0;
}

void spool_placement_remove_node(struct spool_placement *p, uint64_t id)
{
    int k = spool_placement_node_index(p, id);
    if (k < 0)
        return;
    memmove(&p->nodes[k], &p->nodes[k + 1], (p->n_nodes - (size_t)k - 1) * sizeof p->nodes[0]);
    p->n_nodes--;
}

/* --- balancing ---------------------------------------------------------------------------- */

static bool in_set(const uint64_t *set, uint8_t n, uint64_t id)
{
    for (uint8_t i = 0; i < n; i++)
        if (set[i] == id)
            return true;
    return false;
}

/* The node (index) with the fewest (least) or most replicas among those `ok` allows; ties go to
 * the lowest id, so every node computes the same plan. -1 if none qualifies. */
static int pick(const struct spool_placement *p, const uint32_t *load, const uint64_t *set,
                uint8_t n, bool least)
{
    int best = -1;
    for (size_t i = 0; i < p->n_nodes; i++) {
        bool member = in_set(set, n, p->nodes[i].id);
        if (least ? member : !member)
            continue; /* least: a node not in the set; most: a node in the set */
        if (best < 0 || (least ? load[i] < load[best] : load[i] > load[best]))
            best = (int)i;
    }
    return best;
}

uint32_t spool_placement_balance(const struct spool_placement *p,
                                 uint64_t target[][SPOOL_MAX_REPLICAS], uint8_t *n_target)
{
    uint32_t load[SPOOL_MAX_NODES] = {0};
    bool touched[SPOOL_MAX_SHARDS] = {false};
    uint32_t r = p->replicas;
    /* 1. Keep the replicas on nodes still listed (in order). */
    for (uint32_t s = 0; s < p->shards; s++) {
        n_target[s] = 0;
        for (uint32_t i = 0; i < p->n_replicas[s]; i++) {
            int k = spool_placement_node_index(p, p->replica[s][i]);
            if (k < 0) {
                touched[s] = true;
                continue;
            }
            if (n_target[s] < SPOOL_MAX_REPLICAS) {
                target[s][n_target[s]++] = p->replica[s][i];
                load[k]++;
            }
        }
    }
    /* 2. Fill shards below R with the least-loaded nodes (one per shard). */
    for (uint32_t s = 0; s < p->shards; s++) {
        if (n_target[s] >= r)
            continue;
        int k = pick(p, load, target[s], n_target[s], true);
        if (k < 0)
            continue;
        target[s][n_target[s]++] = p->nodes[k].id;
        load[k]++;
        touched[s] = true;
    }
    /* 3. Move replicas from the most- to the least-loaded node, one per untouched shard, while
     *    that narrows the spread by more than one. */
    for (;;) {
        size_t hi = 0, lo = 0;
        for (size_t i = 1; i < p->n_nodes; i++) {
            if (load[i] > load[hi])
                hi = i;
            if (load[i] < load[lo])
                lo = i;
        }
        if (load[hi] <= load[lo] + 1)
            break;
        bool moved = false;
        for (uint32_t s = 0; s < p->shards && !moved; s++) {
            if (touched[s] || !in_set(target[s], n_target[s], p->nodes[hi].id) ||
                in_set(target[s], n_target[s], p->nodes[lo].id))
                continue;
            for (uint8_t i = 0; i < n_target[s]; i++)
                if (target[s][i] == p->nodes[hi].id)
                    target[s][i] = p->nodes[lo].id; /* same position: the home moves too */
            load[hi]--;
            load[lo]++;
            touched[s] = moved = true;
        }
        if (!moved)
            break;
    }
    uint32_t changed = 0;
    for (uint32_t s = 0; s < p->shards; s++) {
        bool same = n_target[s] == p->n_replicas[s];
        for (uint8_t i = 0; same && i < n_target[s]; i++)
            same = in_set(p->replica[s], p->n_replicas[s], target[s][i]);
        changed += !same;
    }
    return changed;
}

/* --- adding shards ------------------------------------------------------------------------ */

long spool_placement_plan_shards(struct spool_placement *p, uint32_t shards, uint16_t *slot_target,
                                 struct spool_err *err)
{
    uint32_t old = p->shards;
    if (shards <= old || shards > SPOOL_MAX_SHARDS) {
        spool_err_set(err, SPOOL_EINVAL, "the new shard count must be above %u and at most %d",
                      old, SPOOL_MAX_SHARDS);
        return -1;
    }
    if (shards > SPOOL_SLOTS) {
        spool_err_set(err, SPOOL_EINVAL, "at most %d shards (one slot each)", SPOOL_SLOTS);
        return -1;
    }
    /* 1. Replica sets of the new shards: least-loaded nodes first. */
    uint32_t load[SPOOL_MAX_NODES];
    for (size_t i = 0; i < p->n_nodes; i++)
        load[i] = spool_placement_load(p, p->nodes[i].id);
    for (uint32_t s = old; s < shards; s++) {
        p->n_replicas[s] = 0;
        for (uint32_t r = 0; r < p->replicas; r++) {
            int k = pick(p, load, p->replica[s], p->n_replicas[s], true);
            if (k < 0)
                break;
            p->replica[s][p->n_replicas[s]++] = p->nodes[k].id;
            load[k]++;
        }
    }
    p->shards = shards;
    /* 2. Shares: floor or ceil of SPOOL_SLOTS / shards; the ceil ones go to the most loaded
     *    existing shards first (so they give fewer slots), then to the new shards in order. */
    uint32_t count[SPOOL_MAX_SHARDS] = {0}, quota[SPOOL_MAX_SHARDS];
    bool ceil_given[SPOOL_MAX_SHARDS] = {false};
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        slot_target[i] = p->slot_shard[i];
        count[p->slot_shard[i]]++;
    }
    uint32_t base = SPOOL_SLOTS / shards, extra = SPOOL_SLOTS % shards;
    for (uint32_t e = 0; e < extra; e++) {
        int best = -1;
        for (uint32_t s = 0; s < old; s++)
            if (!ceil_given[s] && (best < 0 || count[s] > count[best]))
                best = (int)s;
        if (best < 0 || count[best] <= base) /* no existing shard above the floor: new ones */
            for (uint32_t s = old; s < shards && (best < 0 || count[best] <= base); s++)
                if (!ceil_given[s]) {
                    best = (int)s;
                    break;
                }
        ceil_given[best] = true;
    }
    for (uint32_t s = 0; s < shards; s++)
        quota[s] = base + ceil_given[s];
    /* 3. Every new shard takes what it needs from the existing shard furthest above its share,
     *    that shard's lowest-numbered slot first. */
    long moved = 0;
    for (uint32_t b = old; b < shards; b++) {
        while (count[b] < quota[b]) {
            int a = -1;
            for (uint32_t s = 0; s < old; s++)
                if (count[s] > quota[s] &&
                    (a < 0 || count[s] - quota[s] > count[a] - quota[a]))
                    a = (int)s;
            if (a < 0)
                break; /* cannot happen: the shares add up to SPOOL_SLOTS */
            for (uint32_t i = 0; i < SPOOL_SLOTS; i++)
                if (slot_target[i] == (uint16_t)a) {
                    slot_target[i] = (uint16_t)b;
                    break;
                }
            count[a]--;
            count[b]++;
            moved++;
        }
    }
    return moved;
}
