/*
 * The per-shard presence member index and the conditional-leave check (see presence_index.h).
 *
 * Members live in a chained hash table keyed by channel \0 client \0 connection (FNV-1a), grown
 * at load 1; hosts are a small array (a cluster has few nodes) with a member count each, so the
 * reaper's periodic look at "which hosts have members" costs nothing per member.
 */
#include "cluster/presence_index.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct ent {
    struct ent *next;
    uint64_t hash;
    struct spool_pindex_member m;
    char *key; /* channel \0 client \0 connection \0: m's strings point into it */
};

struct spool_pindex {
    struct ent **buckets;
    size_t n_buckets, n;
    struct spool_pindex_host *hosts;
    size_t n_hosts, cap_hosts;
    bool warned_full;
};

static const char *str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    h ^= 0xff; /* separator, so ("ab","c") and ("a","bc") differ */
    h *= 1099511628211ull;
    return h;
}

static uint64_t key_hash(const char *channel, const char *client, const char *conn)
{
    return fnv(fnv(fnv(14695981039346656037ull, channel), client), conn);
}

struct spool_pindex *spool_pindex_new(void)
{
    struct spool_pindex *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    x->n_buckets = 64;
    x->buckets = calloc(x->n_buckets, sizeof *x->buckets);
    if (x->buckets == NULL) {
        free(x);
        return NULL;
    }
    return x;
}

void spool_pindex_reset(struct spool_pindex *x)
{
    for (size_t i = 0; i < x->n_buckets; i++) {
        struct ent *e = x->buckets[i];
        while (e != NULL) {
            struct ent *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
        x->buckets[i] = NULL;
    }
    x->n = 0;
    x->n_hosts = 0;
}

void spool_pindex_free(struct spool_pindex *x)
{
    if (x == NULL)
        return;
    spool_pindex_reset(x);
    free(x->buckets);
    free(x->hosts);
    free(x);
}

size_t spool_pindex_size(const struct spool_pindex *x)
{
    return x->n;
}

const struct spool_pindex_host *spool_pindex_hosts(const struct spool_pindex *x, size_t *n)
{
    *n = x->n_hosts;
    return x->hosts;
}

/* +1 / -1 member for (node, boot); a host with no members left is dropped. */
static int host_count(struct spool_pindex *x, uint64_t node, uint64_t boot, int delta)
{
    size_t i;
    for (i = 0; i < x->n_hosts; i++)
        if (x->hosts[i].node == node && x->hosts[i].boot == boot)
            break;
    if (i == x->n_hosts) {
        if (delta < 0)
            return 0;
        if (x->n_hosts == x->cap_hosts) {
            size_t cap = x->cap_hosts ? 2 * x->cap_hosts : 8;
            struct spool_pindex_host *h = realloc(x->hosts, cap * sizeof *h);
            if (h == NULL)
                return SPOOL_ENOMEM;
            x->hosts = h;
            x->cap_hosts = cap;
        }
        x->hosts[x->n_hosts++] = (struct spool_pindex_host){.node = node, .boot = boot};
    }
    if (delta > 0) {
        x->hosts[i].members++;
    } else if (--x->hosts[i].members == 0) {
        x->hosts[i] = x->hosts[--x->n_hosts];
    }
    return 0;
}

static struct ent **find_slot(struct spool_pindex *x, uint64_t h, const char *channel,
                              const char *client, const char *conn)
{
    struct ent **p = &x->buckets[h % x->n_buckets];
    for (; *p != NULL; p = &(*p)->next) {
        const struct spool_pindex_member *m = &(*p)->m;
        if ((*p)->hash == h && strcmp(m->channel, channel) == 0 &&
            strcmp(m->client_id, client) == 0 && strcmp(m->connection_id, conn) == 0)
            return p;
    }
    return p;
}

struct spool_pindex_member *spool_pindex_find(struct spool_pindex *x, const char *channel,
                                              const char *client_id, const char *connection_id)
{
    const char *client = str_or_empty(client_id), *conn = str_or_empty(connection_id);
    struct ent **p = find_slot(x, key_hash(channel, client, conn), channel, client, conn);
    return *p != NULL ? &(*p)->m : NULL;
}

static void grow(struct spool_pindex *x)
{
    size_t nb = x->n_buckets * 2;
    struct ent **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return; /* stays correct, only slower */
    for (size_t i = 0; i < x->n_buckets; i++) {
        struct ent *e = x->buckets[i];
        while (e != NULL) {
            struct ent *next = e->next;
            e->next = b[e->hash % nb];
            b[e->hash % nb] = e;
            e = next;
        }
    }
    free(x->buckets);
    x->buckets = b;
    x->n_buckets = nb;
}

static void remove_at(struct spool_pindex *x, struct ent **p)
{
    struct ent *e = *p;
    *p = e->next;
    host_count(x, e->m.node, e->m.boot, -1);
    free(e->key);
    free(e);
    x->n--;
}

int spool_pindex_apply(struct spool_pindex *x, const char *channel, const Spool__Record *rec)
{
    if (rec->action != SPOOL__ACTION__ACTION_PRESENCE || rec->name == NULL)
        return 0;
    bool leave = strcmp(rec->name, "leave") == 0;
    if (!leave && strcmp(rec->name, "enter") != 0 && strcmp(rec->name, "update") != 0)
        return 0;
    const char *client = str_or_empty(rec->client_id), *conn = str_or_empty(rec->connection_id);
    uint64_t h = key_hash(channel, client, conn);
    struct ent **p = find_slot(x, h, channel, client, conn);
    if (leave || rec->presence_node == 0) { /* a member without a host is not ours to reap */
        if (*p != NULL)
            remove_at(x, p);
        return 0;
    }
    struct ent *e = *p;
    if (e != NULL) {
        if (e->m.node != rec->presence_node || e->m.boot != rec->presence_boot) {
            if (host_count(x, rec->presence_node, rec->presence_boot, +1) != 0)
                return SPOOL_ENOMEM;
            host_count(x, e->m.node, e->m.boot, -1);
            e->m.node = rec->presence_node;
            e->m.boot = rec->presence_boot;
        }
        e->m.seq = rec->seq;
        e->m.reap_at = 0;
        return 0;
    }
    if (x->n >= SPOOL_PINDEX_MAX_MEMBERS) {
        if (!x->warned_full)
            SPOOL_WARN("presence.index_full", "members=%zu", x->n);
        x->warned_full = true;
        return 0;
    }
    size_t lc = strlen(channel), la = strlen(client), lb = strlen(conn);
    e = calloc(1, sizeof *e);
    char *key = malloc(lc + la + lb + 3);
    if (e == NULL || key == NULL || host_count(x, rec->presence_node, rec->presence_boot, +1) != 0) {
        free(e);
        free(key);
        return SPOOL_ENOMEM;
    }
    memcpy(key, channel, lc + 1);
    memcpy(key + lc + 1, client, la + 1);
    memcpy(key + lc + la + 2, conn, lb + 1);
    e->key = key;
    e->hash = h;
    e->m.channel = key;
    e->m.client_id = key + lc + 1;
    e->m.connection_id = key + lc + la + 2;
    e->m.node = rec->presence_node;
    e->m.boot = rec->presence_boot;
    e->m.seq = rec->seq;
    e->next = x->buckets[h % x->n_buckets];
    x->buckets[h % x->n_buckets] = e;
    if (++x->n > x->n_buckets)
        grow(x);
    return 0;
}

void spool_pindex_members_of(struct spool_pindex *x, uint64_t node, uint64_t boot,
                             int (*cb)(void *arg, struct spool_pindex_member *m), void *arg)
{
    for (size_t i = 0; i < x->n_buckets; i++)
        for (struct ent *e = x->buckets[i]; e != NULL; e = e->next)
            if (e->m.node == node && e->m.boot == boot && cb(arg, &e->m) != 0)
                return;
}

/* --- rebuild ------------------------------------------------------------------------------ */

struct rebuild {
    struct spool_pindex *x;
    struct spool_store *store;
    size_t scan_max;
    const char *channel;
    int rc;
};

static int rebuild_visit_cb(void *arg, const Spool__Record *rec)
{
    struct rebuild *b = arg;
    b->rc = spool_pindex_apply(b->x, b->channel, rec);
    return b->rc != 0;
}

static int rebuild_channel_cb(void *arg, const char *channel)
{
    struct rebuild *b = arg;
    uint64_t last = spool_store_last_seq(b->store, channel);
    uint64_t first = spool_store_first_seq(b->store, channel);
    if (first > last)
        return 0;
    uint64_t after = last > b->scan_max ? last - b->scan_max : 0;
    if (after < first - 1)
        after = first - 1;
    b->channel = channel;
    struct spool_err err;
    int rc = spool_store_read(b->store, channel, after, 0, rebuild_visit_cb, b, &err);
    if (rc != 0)
        SPOOL_WARN("presence.index_rebuild_read", "channel=%s code=%s msg=\"%s\"", channel,
                   spool_err_name(rc), err.msg);
    return b->rc != 0;
}

int spool_pindex_rebuild(struct spool_pindex *x, struct spool_store *store, size_t scan_max,
                         struct spool_err *err)
{
    spool_pindex_reset(x);
    struct rebuild b = {.x = x, .store = store,
                        .scan_max = scan_max ? scan_max : SPOOL_PINDEX_SCAN_MAX};
    spool_store_channels(store, rebuild_channel_cb, &b);
    if (b.rc != 0)
        return spool_err_set(err, b.rc, "rebuilding the presence index: out of memory");
    if (x->n > 0)
        SPOOL_INFO("presence.index_rebuilt", "members=%zu hosts=%zu", x->n, x->n_hosts);
    return 0;
}

/* --- conditional leaves ------------------------------------------------------------------- */

static bool same_member(const Spool__Record *r, const Spool__Record *m)
{
    return r->action == SPOOL__ACTION__ACTION_PRESENCE &&
           strcmp(str_or_empty(r->client_id), str_or_empty(m->client_id)) == 0 &&
           strcmp(str_or_empty(r->connection_id), str_or_empty(m->connection_id)) == 0;
}

bool spool_presence_is_conditional_leave(const Spool__Record *m)
{
    return m->action == SPOOL__ACTION__ACTION_PRESENCE && m->ref_seq != 0 && m->name != NULL &&
           strcmp(m->name, "leave") == 0;
}

bool spool_presence_has_conditional_leave(Spool__Record *const *msgs, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (spool_presence_is_conditional_leave(msgs[j]))
            return true;
    return false;
}

struct in_store {
    Spool__Record *const *msgs;
    size_t n;
    bool *gone;
};

static int in_store_visit_cb(void *arg, const Spool__Record *rec)
{
    struct in_store *s = arg;
    if (rec->action != SPOOL__ACTION__ACTION_PRESENCE)
        return 0; /* most records of a busy channel: no per-leave work */
    for (size_t j = 0; j < s->n; j++)
        if (!s->gone[j] && spool_presence_is_conditional_leave(s->msgs[j]) &&
            rec->seq > s->msgs[j]->ref_seq && same_member(rec, s->msgs[j]))
            s->gone[j] = true;
    return 0;
}

void spool_presence_leaves_in_store(struct spool_store *store, const char *channel,
                                    Spool__Record *const *msgs, size_t n, bool *gone)
{
    uint64_t from = UINT64_MAX;
    for (size_t j = 0; j < n; j++)
        if (spool_presence_is_conditional_leave(msgs[j]) && msgs[j]->ref_seq < from)
            from = msgs[j]->ref_seq;
    if (from == UINT64_MAX)
        return;
    struct in_store s = {.msgs = msgs, .n = n, .gone = gone};
    struct spool_err err;
    /* A read error leaves the rest unmarked (every replica reads the same bytes): stored. */
    spool_store_read(store, channel, from, SPOOL_PINDEX_SCAN_MAX, in_store_visit_cb, &s, &err);
}

bool spool_presence_leave_in_entry(const char *channel, const Spool__Record *m,
                                   const Spool__Record *entry, size_t n)
{
    if (!spool_presence_is_conditional_leave(m))
        return false;
    for (size_t i = 0; i < n; i++)
        if (entry[i].channel != NULL && strcmp(entry[i].channel, channel) == 0 &&
            same_member(&entry[i], m))
            return true;
    return false;
}

bool spool_presence_leave_superseded(struct spool_store *store, const char *channel,
                                     const Spool__Record *m, const Spool__Record *entry, size_t n)
{
    Spool__Record *one[1] = {(Spool__Record *)m};
    bool gone = false;
    spool_presence_leaves_in_store(store, channel, one, 1, &gone);
    return gone || spool_presence_leave_in_entry(channel, m, entry, n);
}
