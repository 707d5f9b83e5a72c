/*
 * Live subscriptions: every local subscriber of a channel hangs off one `struct spool_topic`,
 * which remembers the last seq it delivered. Whatever feeds a topic, it delivers a record only if
 * its seq is last + 1 (older ones are dropped as duplicates), so subscribers see each record once
 * and in order.
 *
 * Feeding:
 *   - a node with a replica of the channel's shard: the local state machine's on_records (every
 *     replica applies every entry), starting after the store's last seq at subscribe time. A gap
 *     (records that arrived through a snapshot install instead of apply) is filled by reading the
 *     local store, which then holds them.
 *   - a node without one: a chain of long-poll reads (router.c, spool_router_follow) to a
 *     replica, leader first: an "anchor" read tells the channel's last seq, then each poll asks
 *     for records after the last delivered one and the next poll starts when it answers. Because
 *     every poll names its starting seq, a failed poll, a dead replica or a new leader never
 *     leaves a gap: the next poll, wherever it goes, resumes from the last delivered seq.
 *   - a node whose replica FOLLOWS the shard: both. A follower applies an entry only once the
 *     leader's next AppendEntries tells it the new commit index, which under light load is the
 *     next heartbeat (~100 ms after the leader applied it). So such a topic also runs the
 *     long-poll chain, parked on the leader, which answers as soon as the leader applies: live
 *     delivery about half a round trip after the leader's apply, as on the leader's own node.
 *     The local FSM stays the fallback (a dead or partitioned leader, an election): whichever
 *     feeder brings seq last + 1 first delivers it, the other's copy is dropped. The chain runs
 *     only while the local replica does not lead: it stops at its next answer once this node
 *     leads (router.c serves a follow from the local store then, so it never waits on itself),
 *     and starts again at the first record the local FSM feeds while a follower, so a node that
 *     loses the leadership gets its first record at the old (heartbeat) pace, the rest at once.
 *     Idle cost: one poll per such topic per SPOOL_FOLLOW_WAIT_MS.
 *
 * A node's replica of a shard can go away (a membership change moves it, cluster/replicas.c)
 * or be added. Going away: as soon as the replica starts retiring (spool_node_local_shard then
 * no longer returns it) and again once it is closed, spool_subs_replica_gone starts the chain
 * of every topic of that shard that has none (a former leader's topic: its chain stopped while
 * it led, and an idle channel gave it no record to restart it), from the last delivered seq,
 * so the topic neither stalls nor skips. A record the retiring replica still applies past a gap
 * it can no longer fill from its store is left to that chain. Added: the chain keeps running
 * (the new replica does not lead) and the new replica's state machine, replaying the channel
 * from its start or a snapshot, only brings seqs already delivered until it has caught up.
 *
 * Resharding moves a channel's slot to another shard (docs/resharding.md) with its seqs, so the
 * last + 1 rule holds across the move. A topic's shard is always the current map's (taken again
 * on each record and in chain_wanted; the FNV-1a hash of the channel gives its slot). When a map
 * moves slots, spool_subs_slots_moved switches each topic of a moved slot to its new shard,
 * delivers what the local replica of it already holds, and starts the chain if the topic needs
 * one: a node that led the old shard (no chain) and holds no replica of the new one would
 * otherwise stall on an idle channel. A record past a gap the local store cannot fill starts the
 * chain even on a leading replica's node.
 *
 * Unsubscribing inside a delivery callback is allowed: the sub is only marked while the topic
 * is delivering and freed when the delivery loop ends.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/node_int.h"
#include "common/log.h"

struct spool_sub {
    struct spool_sub *next;
    struct spool_topic *topic;
    spool_record_cb cb;
    void *arg;
    bool removed;
};

struct spool_topic {
    struct spool_topic *prev, *next; /* node->topics */
    struct spool_topic *chain;       /* hash bucket */
    uint64_t hash;
    struct spool_node *node;
    char *channel;
    uint32_t shard;
    uint64_t last;        /* last seq delivered */
    bool anchored;        /* `last` is known (always, with a local replica) */
    struct spool_sub *subs;
    size_t live;          /* subs not removed */
    struct spool_op *follow;
    int delivering;
    struct spool_eph_pos eph; /* gateway-only: ephemerals ride the polls (conversation_ephemeral.c) */
};

static uint64_t channel_hash(const char *channel)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = channel; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static struct spool_topic *topic_find(struct spool_node *n, const char *channel)
{
    if (n->n_topic_buckets == 0)
        return NULL;
    uint64_t h = channel_hash(channel);
    for (struct spool_topic *t = n->topic_buckets[h & (n->n_topic_buckets - 1)]; t; t = t->chain)
        if (t->hash == h && strcmp(t->channel, channel) == 0)
            return t;
    return NULL;
}

/* Links a new topic into the list and the hash index (doubling the buckets past load 1). */
static int topic_link(struct spool_node *n, struct spool_topic *t)
{
    if (n->n_topics + 1 > n->n_topic_buckets) {
        size_t nb = n->n_topic_buckets ? n->n_topic_buckets * 2 : 64;
        struct spool_topic **b = calloc(nb, sizeof *b);
        if (b == NULL)
            return SPOOL_ENOMEM;
        for (struct spool_topic *x = n->topics; x; x = x->next) {
            x->chain = b[x->hash & (nb - 1)];
            b[x->hash & (nb - 1)] = x;
        }
        free(n->topic_buckets);
        n->topic_buckets = b;
        n->n_topic_buckets = nb;
    }
    t->hash = channel_hash(t->channel);
    t->chain = n->topic_buckets[t->hash & (n->n_topic_buckets - 1)];
    n->topic_buckets[t->hash & (n->n_topic_buckets - 1)] = t;
    t->prev = NULL;
    t->next = n->topics;
    if (n->topics)
        n->topics->prev = t;
    n->topics = t;
    n->n_topics++;
    return 0;
}

static void topic_free(struct spool_topic *t)
{
    struct spool_node *n = t->node;
    if (t->prev)
        t->prev->next = t->next;
    else
        n->topics = t->next;
    if (t->next)
        t->next->prev = t->prev;
    struct spool_topic **pp = &n->topic_buckets[t->hash & (n->n_topic_buckets - 1)];
    while (*pp != t)
        pp = &(*pp)->chain;
    *pp = t->chain;
    n->n_topics--;
    while (t->subs) {
        struct spool_sub *s = t->subs;
        t->subs = s->next;
        free(s);
    }
    free(t->channel);
    free(t);
}

/* Frees removed subs, and the topic once nobody listens and nothing is in flight. */
static void topic_gc(struct spool_topic *t)
{
    if (t->delivering > 0)
        return;
    struct spool_sub **pp = &t->subs;
    while (*pp) {
        struct spool_sub *s = *pp;
        if (s->removed) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
    if (t->live == 0) {
        if (t->follow) {
            spool_router_cancel(t->follow);
            t->follow = NULL;
        }
        topic_free(t);
    }
}

static void deliver(struct spool_topic *t, const Spool__Record *rec)
{
    if (rec->seq <= t->last)
        return;
    t->last = rec->seq;
    if (t->node->fanout_cb != NULL)
        t->node->fanout_cb(t->node->fanout_arg, rec);
    t->delivering++;
    for (struct spool_sub *s = t->subs; s; s = s->next)
        if (!s->removed)
            s->cb(s->arg, rec);
    t->delivering--;
}

void spool_node_set_fanout_observer(struct spool_node *n, spool_record_cb cb, void *arg)
{
    n->fanout_cb = cb;
    n->fanout_arg = arg;
}

static int gap_visit_cb(void *arg, const Spool__Record *rec)
{
    deliver(arg, rec);
    return 0;
}

/* Delivers what the local store holds after t->last, up to `upto` (exclusive; 0 = all). */
static void catch_up_local(struct spool_topic *t, struct spool_store *store, uint64_t upto)
{
    size_t limit = upto ? (size_t)(upto - t->last - 1) : 0;
    struct spool_err err;
    if (spool_store_read(store, t->channel, t->last, limit, gap_visit_cb, t, &err) != 0)
        SPOOL_WARN("subs.catch_up_failed", "shard=%u msg=\"%s\"", t->shard, err.msg);
}

static void follow_start(struct spool_topic *t);

/* Whether the topic should have a long-poll chain running: always without a local replica (it is
 * the only feeder), and while the local replica does not lead the shard (see the top). */
static bool chain_wanted(struct spool_topic *t)
{
    if (t->live == 0 || t->node->closing)
        return false;
    /* By the current map: a follow op goes to the shard the map names now (resharding), so
     * judging by an older one could restart a chain its local answer just ended, forever. */
    t->shard = t->node->placement.slot_shard[t->hash % SPOOL_SLOTS];
    struct spool_shard *sh = spool_node_local_shard(t->node, t->shard);
    return sh == NULL || !spool_shard_is_leader(sh);
}

void spool_subs_records_cb(void *arg, const Spool__Record *const *recs, size_t n)
{
    struct spool_node *node = arg;
    for (size_t i = 0; i < n; i++) {
        const Spool__Record *rec = recs[i];
        if (i == 0 || strcmp(rec->channel, recs[i - 1]->channel) != 0)
            spool_serve_records_applied(node, rec->channel);
        struct spool_topic *t = topic_find(node, rec->channel);
        if (t == NULL || !t->anchored)
            continue;
        /* The channel's shard by the current map (resharding moves slots; t->hash is the
         * channel's FNV-1a 64, whose remainder is its slot). */
        t->shard = node->placement.slot_shard[t->hash % SPOOL_SLOTS];
        struct spool_shard *sh = spool_node_local_shard(node, t->shard);
        if (rec->seq > t->last + 1 && sh != NULL)
            catch_up_local(t, sh->store, rec->seq);
        /* A gap left (a retiring replica, whose store is no longer ours to read; a record of
         * the slot's new shard applied here before this node's map moved the slot): the chain
         * fills it from t->last, started even if the local replica leads (it then reads the
         * local store of the shard the current map names). */
        bool gap = rec->seq > t->last + 1;
        if (!gap)
            deliver(t, rec);
        if (t->follow == NULL && (gap || chain_wanted(t)))
            follow_start(t);
        topic_gc(t);
    }
}

void spool_subs_replica_gone(struct spool_node *node, uint32_t shard)
{
    for (struct spool_topic *t = node->topics; t; t = t->next)
        if (t->shard == shard && t->follow == NULL && chain_wanted(t)) {
            SPOOL_INFO("subs.chain_after_replica", "shard=%u last=%llu", shard,
                       (unsigned long long)t->last);
            follow_start(t); /* never calls back before it returns (router.c) */
        }
}

void spool_subs_slots_moved(struct spool_node *node)
{
    struct spool_topic *t = node->topics;
    while (t) {
        struct spool_topic *next = t->next;
        uint32_t shard = node->placement.slot_shard[t->hash % SPOOL_SLOTS];
        if (shard != t->shard && t->live > 0) {
            SPOOL_INFO("subs.slot_moved", "from=%u to=%u last=%llu", t->shard, shard,
                       (unsigned long long)t->last);
            t->shard = shard;
            /* Seqs continue on the new shard (the copy kept them): what its local replica
             * already holds after t->last is delivered now, the rest by its state machine or by
             * the chain, which an idle channel would otherwise never restart. */
            struct spool_shard *sh = spool_node_local_shard(node, shard);
            if (sh != NULL && t->anchored && !spool_router_slot_moving(sh, t->channel))
                catch_up_local(t, sh->store, 0);
            if (t->follow == NULL && chain_wanted(t))
                follow_start(t);
            topic_gc(t);
        }
        t = next;
    }
}

void spool_subs_restored_cb(void *arg)
{
    struct spool_node *node = arg;
    struct spool_topic *t = node->topics;
    while (t) {
        struct spool_topic *next = t->next;
        struct spool_shard *sh = spool_node_local_shard(node, t->shard);
        if (sh != NULL && t->anchored) {
            catch_up_local(t, sh->store, 0);
            if (t->follow == NULL && chain_wanted(t))
                follow_start(t);
            topic_gc(t);
        }
        t = next;
    }
}

/* --- remote follow ------------------------------------------------------------------------ */

static void follow_cb(void *arg, int status, const struct spool_err *err,
                      const Spool__ReadReply *reply)
{
    struct spool_topic *t = arg;
    t->follow = NULL;
    if (status != 0) {
        /* Only ECLOSED ends a follow (router.c retries everything else itself). */
        if (!t->node->closing)
            SPOOL_WARN("subs.follow_failed", "code=%s msg=\"%s\"", spool_err_name(status),
                       err->msg);
        topic_gc(t);
        return;
    }
    if (!t->anchored) {
        t->last = reply->last_seq;
        t->anchored = true;
    } else {
        for (size_t i = 0; i < reply->n_records; i++)
            deliver(t, reply->records[i]);
    }
    t->delivering++;
    spool_eph_followed(t->node, &t->eph, reply);
    t->delivering--;
    if (chain_wanted(t))
        follow_start(t);
    topic_gc(t);
}

static void follow_start(struct spool_topic *t)
{
    t->follow = spool_router_follow(t->node, t->channel, t->last, !t->anchored, follow_cb, t);
    spool_eph_follow_ask(t->node, t->follow, &t->eph);
    if (t->follow == NULL)
        SPOOL_WARN("subs.follow_start_failed", "shard=%u", t->shard);
}

/* --- API ---------------------------------------------------------------------------------- */

int spool_node_subscribe(struct spool_node *n, const char *channel, spool_record_cb cb, void *arg,
                         struct spool_sub **out)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    if (channel == NULL || channel[0] == '\0' || cb == NULL)
        return SPOOL_EINVAL;
    struct spool_sub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return SPOOL_ENOMEM;
    struct spool_topic *t = topic_find(n, channel);
    if (t == NULL) {
        t = calloc(1, sizeof *t);
        char *c = strdup(channel);
        if (t == NULL || c == NULL) {
            free(t);
            free(c);
            free(s);
            return SPOOL_ENOMEM;
        }
        t->node = n;
        t->channel = c;
        t->shard = spool_node_shard_of(n, channel);
        spool_eph_pos_start(&t->eph);
        if (topic_link(n, t) != 0) {
            free(c);
            free(t);
            free(s);
            return SPOOL_ENOMEM;
        }
        struct spool_shard *sh = spool_node_local_shard(n, t->shard);
        if (sh != NULL) {
            t->last = spool_store_last_seq(sh->store, channel);
            t->anchored = true;
        }
    }
    s->topic = t;
    s->cb = cb;
    s->arg = arg;
    s->next = t->subs;
    t->subs = s;
    t->live++;
    if (t->follow == NULL && chain_wanted(t))
        follow_start(t);
    *out = s;
    return 0;
}

void spool_node_unsubscribe(struct spool_sub *sub)
{
    if (sub == NULL || sub->removed)
        return;
    struct spool_topic *t = sub->topic;
    sub->removed = true;
    t->live--;
    topic_gc(t);
}

void spool_subs_close(struct spool_node *n)
{
    struct spool_topic *t = n->topics;
    while (t) {
        struct spool_topic *next = t->next;
        if (t->follow) {
            spool_router_cancel(t->follow);
            t->follow = NULL;
        }
        if (t->delivering == 0) {
            topic_free(t);
        } else {
            /* Closing from inside a delivery: the delivery loop's topic_gc frees it. */
            for (struct spool_sub *s = t->subs; s; s = s->next)
                s->removed = true;
            t->live = 0;
        }
        t = next;
    }
    if (n->topics == NULL) {
        free(n->topic_buckets);
        n->topic_buckets = NULL;
        n->n_topic_buckets = 0;
    }
}
