/*
 * The presence reaper: heartbeats between nodes, and the leaves of dead nodes' members (see
 * presence_reaper.h for the model). One timer per node does both; the reaper owns itself and is
 * freed when that timer has closed. Each leave publish owns a small struct freed by its
 * callback, which touches nothing else (it may run after the reaper is gone, on close).
 */
#include "cluster/presence_reaper.h"

#include <stdlib.h>
#include <string.h>

#include "cluster/node_int.h"
#include "cluster/presence_index.h"
#include "common/log.h"

#define REAP_CHUNK 256
#define REAP_RETRY_MS 5000

struct spool_presence_reaper {
    uv_timer_t timer;
    struct spool_node *node;
    uint64_t boot;
    uint64_t interval_ms;
    uint64_t last_tick;
    struct spool_presence_liveness live;
};

/* --- liveness ----------------------------------------------------------------------------- */

void spool_presence_liveness_init(struct spool_presence_liveness *l, uint64_t self,
                                  uint64_t self_boot, uint64_t timeout_ms)
{
    memset(l, 0, sizeof *l);
    l->self = self;
    l->self_boot = self_boot;
    l->timeout_ms = timeout_ms;
}

void spool_presence_liveness_close(struct spool_presence_liveness *l)
{
    free(l->peers);
    l->peers = NULL;
    l->n = l->cap = 0;
}

static struct spool_presence_peer *peer_of(struct spool_presence_liveness *l, uint64_t node,
                                           uint64_t now)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->peers[i].node == node)
            return &l->peers[i];
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct spool_presence_peer *p = realloc(l->peers, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        l->peers = p;
        l->cap = cap;
    }
    l->peers[l->n] = (struct spool_presence_peer){.node = node, .boot = 0, .heard_at = now};
    return &l->peers[l->n++];
}

int spool_presence_liveness_heard(struct spool_presence_liveness *l, uint64_t node, uint64_t boot,
                                  uint64_t now)
{
    struct spool_presence_peer *p = peer_of(l, node, now);
    if (p == NULL)
        return SPOOL_ENOMEM;
    /* The last one heard is the node's incarnation (not the greatest: a clock stepped back
     * across a restart must not make the new process's members look like an old one's). */
    p->boot = boot;
    if (now > p->heard_at)
        p->heard_at = now;
    return 0;
}

void spool_presence_liveness_grace(struct spool_presence_liveness *l, uint64_t now)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->peers[i].heard_at < now)
            l->peers[i].heard_at = now;
}

bool spool_presence_liveness_dead(struct spool_presence_liveness *l, uint64_t node, uint64_t boot,
                                  uint64_t now)
{
    if (node == l->self)
        return boot != l->self_boot;
    struct spool_presence_peer *p = peer_of(l, node, now);
    if (p == NULL)
        return false; /* out of memory: keep, decide next time */
    if (p->boot != 0 && boot < p->boot)
        return true; /* an earlier incarnation: its connections died with it */
    return now - p->heard_at >= l->timeout_ms;
}

/* --- heartbeats --------------------------------------------------------------------------- */

void spool_node_presence_stamp(const struct spool_node *n, Spool__Record *rec)
{
    if (n->presence_reaper == NULL)
        return;
    rec->presence_node = n->cfg.id;
    rec->presence_boot = n->presence_reaper->boot;
}

static void send_heartbeats(struct spool_presence_reaper *r)
{
    struct spool_node *n = r->node;
    Spool__PresenceHeartbeat hb = SPOOL__PRESENCE_HEARTBEAT__INIT;
    hb.boot = r->boot;
    uint8_t buf[32];
    size_t len = spool__presence_heartbeat__pack(&hb, buf);
    for (size_t i = 0; i < n->placement.n_nodes; i++) {
        uint64_t id = n->placement.nodes[i].id;
        if (id != n->cfg.id)
            spool_rpc_send(n->rpc, id, SPOOL_METHOD_PRESENCE_HEARTBEAT, buf, len); /* best effort */
    }
}

void spool_node_presence_heartbeat_arrived(struct spool_node *n, uint64_t from, const void *body,
                                           size_t len)
{
    struct spool_presence_reaper *r = n->presence_reaper;
    if (r == NULL || n->closing)
        return;
    Spool__PresenceHeartbeat *hb = spool__presence_heartbeat__unpack(NULL, len, body);
    if (hb == NULL) {
        SPOOL_WARN("presence.bad_heartbeat", "from=%llu", (unsigned long long)from);
        return;
    }
    spool_presence_liveness_heard(&r->live, from, hb->boot, uv_now(n->loop));
    spool__presence_heartbeat__free_unpacked(hb, NULL);
}

/* --- reaping ------------------------------------------------------------------------------ */

struct reap_item {
    char *channel, *client_id, *connection_id;
    uint64_t seq;
};

struct reap_list {
    struct reap_item *v;
    size_t n, cap;
    uint64_t now;
    bool nomem;
};

static int collect_cb(void *arg, struct spool_pindex_member *m)
{
    struct reap_list *l = arg;
    if (m->reap_at != 0 && l->now - m->reap_at < REAP_RETRY_MS)
        return 0; /* proposed recently: its outcome is on its way */
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct reap_item *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            l->nomem = true;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    struct reap_item *it = &l->v[l->n];
    it->channel = strdup(m->channel);
    it->client_id = strdup(m->client_id);
    it->connection_id = strdup(m->connection_id);
    it->seq = m->seq;
    if (it->channel == NULL || it->client_id == NULL || it->connection_id == NULL) {
        free(it->channel);
        free(it->client_id);
        free(it->connection_id);
        l->nomem = true;
        return 1;
    }
    m->reap_at = l->now ? l->now : 1;
    l->n++;
    return 0;
}

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const struct reap_item *)a)->channel, ((const struct reap_item *)b)->channel);
}

struct reap_pub {
    char *channel;
    uint64_t host;
    size_t n;
};

static void on_reaped(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                      const bool *duplicate, size_t n)
{
    struct reap_pub *p = arg;
    if (status != 0) {
        SPOOL_WARN("presence.reap_failed", "channel=%s node=%llu members=%zu err=%s", p->channel,
                   (unsigned long long)p->host, p->n, spool_err_name(status));
    } else {
        size_t stored = 0;
        for (size_t i = 0; i < n; i++)
            stored += !duplicate[i];
        SPOOL_INFO("presence.reaped", "channel=%s node=%llu members=%zu left=%zu", p->channel,
                   (unsigned long long)p->host, p->n, stored);
    }
    free(p->channel);
    free(p);
}

/* One conditional leave per item of v[0..n) (one channel). */
static void publish_leaves(struct spool_node *n, uint64_t host, const struct reap_item *v,
                           size_t count)
{
    Spool__Record recs[REAP_CHUNK];
    const Spool__Record *ptrs[REAP_CHUNK];
    for (size_t i = 0; i < count; i++) {
        spool__record__init(&recs[i]);
        recs[i].action = SPOOL__ACTION__ACTION_PRESENCE;
        recs[i].name = "leave";
        recs[i].client_id = v[i].client_id;
        recs[i].connection_id = v[i].connection_id;
        recs[i].ref_seq = v[i].seq;
        ptrs[i] = &recs[i];
    }
    struct reap_pub *p = calloc(1, sizeof *p);
    if (p == NULL || (p->channel = strdup(v[0].channel)) == NULL) {
        free(p);
        return; /* retried after REAP_RETRY_MS */
    }
    p->host = host;
    p->n = count;
    if (spool_node_publish(n, v[0].channel, ptrs, count, on_reaped, p) != 0) {
        SPOOL_WARN("presence.reap_failed", "channel=%s node=%llu err=start", p->channel,
                   (unsigned long long)host);
        free(p->channel);
        free(p);
    }
}

static void reap_host(struct spool_presence_reaper *r, struct spool_pindex *x, uint32_t shard,
                      const struct spool_pindex_host *h, uint64_t now)
{
    uint64_t node = h->node, boot = h->boot;
    size_t members = h->members;
    struct reap_list l = {.now = now};
    spool_pindex_members_of(x, node, boot, collect_cb, &l); /* the index does not change here */
    if (l.n > 0) {
        SPOOL_INFO("presence.reap", "shard=%u node=%llu boot=%llu members=%zu proposing=%zu",
                   shard, (unsigned long long)node, (unsigned long long)boot, members, l.n);
        qsort(l.v, l.n, sizeof *l.v, item_cmp);
        for (size_t i = 0; i < l.n;) {
            size_t j = i + 1;
            while (j < l.n && j - i < REAP_CHUNK && strcmp(l.v[j].channel, l.v[i].channel) == 0)
                j++;
            publish_leaves(r->node, node, &l.v[i], j - i);
            i = j;
        }
    }
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].channel);
        free(l.v[i].client_id);
        free(l.v[i].connection_id);
    }
    free(l.v);
}

static void reap(struct spool_presence_reaper *r, uint64_t now)
{
    struct spool_node *n = r->node;
    for (uint32_t s = 0; s < n->placement.shards; s++) {
        struct spool_shard *sh = spool_node_local_shard(n, s);
        if (sh == NULL || sh->fsm.presence == NULL || !spool_shard_is_leader(sh))
            continue;
        size_t n_hosts;
        const struct spool_pindex_host *hosts = spool_pindex_hosts(sh->fsm.presence, &n_hosts);
        /* Copy: reaping marks members but never changes the hosts; still, stay independent. */
        struct spool_pindex_host dead[16];
        size_t n_dead = 0;
        for (size_t i = 0; i < n_hosts && n_dead < 16; i++)
            if (spool_presence_liveness_dead(&r->live, hosts[i].node, hosts[i].boot, now))
                dead[n_dead++] = hosts[i];
        for (size_t i = 0; i < n_dead; i++)
            reap_host(r, sh->fsm.presence, s, &dead[i], now);
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct spool_presence_reaper *r = t->data;
    struct spool_node *n = r->node;
    if (n->closing)
        return;
    uint64_t now = uv_now(n->loop);
    uint64_t timeout = n->cfg.presence_node_timeout_ms;
    uint64_t gap = r->last_tick != 0 ? now - r->last_tick : 0;
    bool late = gap > 2 * r->interval_ms && gap > timeout / 2;
    r->last_tick = now;
    send_heartbeats(r);
    if (late) {
        SPOOL_WARN("presence.reaper_late", "gap_ms=%llu", (unsigned long long)gap);
        spool_presence_liveness_grace(&r->live, now);
        return;
    }
    if (timeout > 0 && !n->cfg.gateway_only)
        reap(r, now);
}

int spool_presence_reaper_start(struct spool_node *n, struct spool_err *err)
{
    struct spool_presence_reaper *r = calloc(1, sizeof *r);
    if (r == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "presence reaper");
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    r->node = n;
    r->boot = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    uint64_t timeout = n->cfg.presence_node_timeout_ms;
    r->interval_ms = timeout == 0 ? 1000 : timeout / 4;
    if (r->interval_ms < 50)
        r->interval_ms = 50;
    if (r->interval_ms > 1000)
        r->interval_ms = 1000;
    spool_presence_liveness_init(&r->live, n->cfg.id, r->boot, timeout);
    if (uv_timer_init(n->loop, &r->timer) != 0) {
        free(r);
        return spool_err_set(err, SPOOL_EIO, "presence reaper timer");
    }
    r->timer.data = r;
    /* The first heartbeat goes out at once: before this node serves a client, so a leader does
     * not see this incarnation's members before it knows the incarnation. */
    uv_timer_start(&r->timer, tick_cb, 0, r->interval_ms);
    n->presence_reaper = r;
    SPOOL_INFO("presence.reaper_started", "boot=%llu timeout_ms=%llu interval_ms=%llu",
               (unsigned long long)r->boot, (unsigned long long)timeout,
               (unsigned long long)r->interval_ms);
    return 0;
}

static void reaper_closed_cb(uv_handle_t *h)
{
    struct spool_presence_reaper *r = h->data;
    struct spool_node *n = r->node;
    spool_presence_liveness_close(&r->live);
    free(r);
    n->pending_close--;
    spool_node_finish_close(n);
}

void spool_presence_reaper_close(struct spool_node *n)
{
    struct spool_presence_reaper *r = n->presence_reaper;
    if (r == NULL)
        return;
    n->presence_reaper = NULL;
    n->pending_close++;
    uv_close((uv_handle_t *)&r->timer, reaper_closed_cb);
}
