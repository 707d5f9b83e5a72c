/*
 * Ephemeral records across nodes (docs/ai-semantics.md, gateway/ai_ephemeral.h): typing,
 * progress and interrupts are never stored and never go through Raft. The node that receives one
 * delivers it to its own clients (the gateway does that) and sends it, packed as a Record, as a
 * one-way cluster RPC message (SPOOL_METHOD_EPHEMERAL) to every storage node it knows; each of
 * those hands it to its gateway (spool_node_set_ephemeral_cb), which delivers it to the
 * connections attached to the channel. Best effort like any live-only signal: a peer that is
 * unreachable misses it (spool_rpc_send drops it), nothing is retried or replayed.
 *
 * Gateway-only nodes (and the --workers loops, which are gateway-only nodes) are not in --peers,
 * so nobody can send to them; but every channel they have subscribers on is followed by a chain
 * of long-poll reads parked at a storage node (subscription.c, router.c, serve.c), and those
 * polls carry the ephemerals too:
 *   - every storage node keeps the ephemerals it receives or originates in a ring (the last
 *     EPH_RING_MAX, at most EPH_RING_BYTES), numbered by a node-local position that starts at
 *     the wall clock in microseconds (so it grows across restarts);
 *   - a gateway-only node's poll asks for them (ReadRequest.ephemerals) from the position its
 *     last answer gave (eph_node, eph_after); the replica answers at once when it holds newer
 *     ephemerals of the channel, otherwise parks the poll as usual and wakes it when one arrives
 *     (spool_serve_ephemeral_arrived); the answer carries them and the new position;
 *   - a position is only read by the node that gave it. The first poll of a new topic replays
 *     what arrived since the topic started (its first subscriber attached; eph_since_ms), so an
 *     ephemeral sent right after an attach is not lost to the time the poll takes to arrive. A poll that moved from another
 *     replica (a new leader, a lost replica) replays the channel's ephemerals that arrived
 *     there since the follower's last answer (eph_since_ms, wall clock, less EPH_SKEW_MS, at
 *     most EPH_REPLAY_MAX_MS back): every storage node received them too, so the switch loses
 *     nothing; the gateway-only node drops the ones it already delivered (a hash of each of the
 *     last 64 it delivered per topic).
 * So a gateway-only node gets each ephemeral of the channels it follows once (its chain parks
 * at one replica at a time), as fast as a record, including its own clients' (sent to the
 * storage nodes like any other, they come back; the gateway drops those whose connection is
 * its own). What can be missed: ephemerals of a switch that took longer than
 * EPH_REPLAY_MAX_MS, or more than the ring holds between two polls. Fan-out goes to every storage node and every follower
 * of the channel, not only to nodes with subscribers: fine for small clusters.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/node_int.h"
#include "cluster/op.h"
#include "common/log.h"

#define EPH_RING_MAX 1024
#define EPH_RING_BYTES (8u << 20)
#define EPH_SKEW_MS 1000          /* clock difference between nodes tolerated by a replay */
#define EPH_REPLAY_MAX_MS 30000   /* how far back a replay goes at most */

struct eph_slot {
    uint64_t pos;
    int64_t at_ms; /* wall clock when it arrived */
    char *channel;
    uint8_t *packed; /* the Record */
    size_t len;
};

struct spool_eph_ring {
    struct eph_slot v[EPH_RING_MAX];
    size_t head, n; /* oldest at head */
    size_t bytes;
    uint64_t next; /* position of the next record */
};

static void slot_clear(struct spool_eph_ring *r, struct eph_slot *s)
{
    r->bytes -= s->len;
    free(s->channel);
    free(s->packed);
    memset(s, 0, sizeof *s);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The ring (storage nodes; NULL on gateway-only nodes, or out of memory). */
static struct spool_eph_ring *ring_get(struct spool_node *n, bool create)
{
    if (n->eph == NULL && create && !n->closing) {
        n->eph = calloc(1, sizeof *n->eph);
        if (n->eph != NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            n->eph->next = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        }
    }
    return n->eph;
}

/* Keeps a copy of an ephemeral record for the gateway-only followers and wakes their polls. */
static void ring_put(struct spool_node *n, const Spool__Record *rec, const void *packed, size_t len)
{
    struct spool_eph_ring *r = ring_get(n, !n->cfg.gateway_only);
    if (r == NULL || len > EPH_RING_BYTES)
        return;
    while (r->n > 0 && (r->n == EPH_RING_MAX || r->bytes + len > EPH_RING_BYTES)) {
        slot_clear(r, &r->v[r->head]);
        r->head = (r->head + 1) % EPH_RING_MAX;
        r->n--;
    }
    struct eph_slot *s = &r->v[(r->head + r->n) % EPH_RING_MAX];
    s->channel = strdup(rec->channel);
    s->packed = malloc(len ? len : 1);
    if (s->channel == NULL || s->packed == NULL) {
        free(s->channel);
        free(s->packed);
        memset(s, 0, sizeof *s);
        return;
    }
    memcpy(s->packed, packed, len);
    s->len = len;
    s->pos = r->next++;
    s->at_ms = wall_ms();
    r->bytes += len;
    r->n++;
    spool_serve_ephemeral_arrived(n, rec->channel);
}

static bool from_here(const struct spool_node *n, const Spool__ReadRequest *req)
{
    return req->eph_node == n->cfg.id && req->eph_after != 0;
}

/* A poll carrying another node's position (or none) gets one of this node's: a moved one starts
 * at its last answer elsewhere, a new follower's when its topic started (its first subscriber
 * attached): what arrived here between that attach and this first poll is not lost. Both go back
 * EPH_SKEW_MS more for clocks that differ between nodes. */
static void take_over_position(struct spool_node *n, struct spool_eph_ring *r, Spool__ReadRequest *req)
{
    if (from_here(n, req))
        return;
    uint64_t after = r->next - 1;
    if (req->eph_node != 0 || req->eph_since_ms != 0) {
        int64_t now = wall_ms(), since = (int64_t)req->eph_since_ms - EPH_SKEW_MS;
        if (since < now - EPH_REPLAY_MAX_MS)
            since = now - EPH_REPLAY_MAX_MS;
        for (size_t i = r->n; i-- > 0;) {
            const struct eph_slot *s = &r->v[(r->head + i) % EPH_RING_MAX];
            if (s->at_ms < since)
                break;
            after = s->pos - 1;
        }
    }
    req->eph_node = n->cfg.id;
    req->eph_after = after;
}

bool spool_eph_pending(struct spool_node *n, Spool__ReadRequest *req)
{
    struct spool_eph_ring *r = ring_get(n, req->ephemerals);
    if (r == NULL || !req->ephemerals)
        return false;
    take_over_position(n, r, req);
    for (size_t i = r->n; i-- > 0;) {
        const struct eph_slot *s = &r->v[(r->head + i) % EPH_RING_MAX];
        if (s->pos <= req->eph_after)
            break;
        if (strcmp(s->channel, req->channel) == 0)
            return true;
    }
    return false;
}

void spool_eph_fill(struct spool_node *n, Spool__ReadRequest *req, Spool__ReadReply *out)
{
    struct spool_eph_ring *r = ring_get(n, true);
    out->n_ephemerals = 0;
    out->ephemerals = NULL;
    if (r == NULL)
        return;
    out->eph_node = n->cfg.id;
    out->eph_seq = r->next - 1;
    take_over_position(n, r, req);
    size_t first = r->n;
    while (first > 0 && r->v[(r->head + first - 1) % EPH_RING_MAX].pos > req->eph_after)
        first--;
    size_t want = 0;
    for (size_t i = first; i < r->n; i++)
        want += strcmp(r->v[(r->head + i) % EPH_RING_MAX].channel, req->channel) == 0;
    if (want == 0 || (out->ephemerals = calloc(want, sizeof *out->ephemerals)) == NULL)
        return;
    for (size_t i = first; i < r->n; i++) {
        const struct eph_slot *s = &r->v[(r->head + i) % EPH_RING_MAX];
        if (strcmp(s->channel, req->channel) != 0)
            continue;
        Spool__Record *rec = spool__record__unpack(NULL, s->len, s->packed);
        if (rec != NULL)
            out->ephemerals[out->n_ephemerals++] = rec;
    }
}

void spool_eph_fill_done(Spool__ReadReply *r)
{
    for (size_t i = 0; i < r->n_ephemerals; i++)
        spool__record__free_unpacked(r->ephemerals[i], NULL);
    free(r->ephemerals);
    r->ephemerals = NULL;
    r->n_ephemerals = 0;
}

void spool_eph_pos_start(struct spool_eph_pos *pos)
{
    pos->at_ms = wall_ms();
}

void spool_eph_follow_ask(struct spool_node *n, struct spool_op *op, const struct spool_eph_pos *pos)
{
    if (op == NULL || !n->cfg.gateway_only || op->read->backward)
        return; /* storage nodes get every ephemeral directly; an anchor read needs none */
    op->read->ephemerals = true;
    op->read->eph_node = pos->node;
    op->read->eph_after = pos->seq;
    op->read->eph_since_ms = (uint64_t)pos->at_ms;
}

/* Identity of an ephemeral record: every node holds the same copy of what its sender packed. */
static uint64_t fnv(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t record_hash(const Spool__Record *rec)
{
    uint64_t h = 1469598103934665603ull;
    const char *strs[] = {rec->channel, rec->connection_id, rec->client_id, rec->id, rec->name};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        h = fnv(h, strs[i] ? strs[i] : "", strs[i] ? strlen(strs[i]) + 1 : 1);
    h = fnv(h, &rec->timestamp_ms, sizeof rec->timestamp_ms);
    h = fnv(h, rec->data.data, rec->data.len);
    return fnv(h, rec->extras.data, rec->extras.len);
}

void spool_eph_followed(struct spool_node *n, struct spool_eph_pos *pos, const Spool__ReadReply *reply)
{
    if (!n->cfg.gateway_only || reply == NULL || reply->eph_node == 0)
        return;
    pos->node = reply->eph_node;
    pos->seq = reply->eph_seq;
    pos->at_ms = wall_ms();
    for (size_t i = 0; i < reply->n_ephemerals && !n->closing; i++) {
        const Spool__Record *rec = reply->ephemerals[i];
        uint64_t h = record_hash(rec);
        bool seen = false;
        for (unsigned k = 0; k < pos->n_seen && k < 64 && !seen; k++)
            seen = pos->seen[k] == h;
        if (seen)
            continue; /* replayed after a replica switch */
        pos->seen[pos->n_seen++ % 64] = h;
        if (n->ephemeral_cb != NULL && rec->channel != NULL && rec->channel[0] != '\0')
            n->ephemeral_cb(n->ephemeral_arg, rec);
    }
}

void spool_eph_close(struct spool_node *n)
{
    struct spool_eph_ring *r = n->eph;
    if (r == NULL)
        return;
    while (r->n > 0) {
        slot_clear(r, &r->v[r->head]);
        r->head = (r->head + 1) % EPH_RING_MAX;
        r->n--;
    }
    free(r);
    n->eph = NULL;
}

void spool_node_set_ephemeral_cb(struct spool_node *n, spool_record_cb cb, void *arg)
{
    n->ephemeral_cb = cb;
    n->ephemeral_arg = arg;
}

int spool_node_ephemeral(struct spool_node *n, const Spool__Record *rec)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    size_t len = spool__record__get_packed_size(rec);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return SPOOL_ENOMEM;
    spool__record__pack(rec, buf);
    for (size_t i = 0; i < n->placement.n_nodes; i++) {
        uint64_t id = n->placement.nodes[i].id;
        if (id != n->cfg.id)
            spool_rpc_send(n->rpc, id, SPOOL_METHOD_EPHEMERAL, buf, len); /* best effort */
    }
    ring_put(n, rec, buf, len); /* for the gateway-only nodes following the channel here */
    free(buf);
    return 0;
}

void spool_node_ephemeral_arrived(struct spool_node *n, uint64_t from, const void *body, size_t len)
{
    Spool__Record *rec = spool__record__unpack(NULL, len, body);
    if (rec == NULL || rec->channel == NULL || rec->channel[0] == '\0') {
        SPOOL_WARN("node.ephemeral_bad", "from=%llu len=%zu", (unsigned long long)from, len);
    } else if (!n->closing) {
        if (n->ephemeral_cb != NULL)
            n->ephemeral_cb(n->ephemeral_arg, rec);
        ring_put(n, rec, body, len);
    }
    if (rec != NULL)
        spool__record__free_unpacked(rec, NULL);
}
