/*
 * Request routing: where a publish or a read goes, and what happens when it cannot go there yet.
 *
 * Every request is a `struct spool_op` (op.h) from creation to completion. An op
 * made by the local gateway (spool_node_publish / spool_node_read) or by subscription.c
 * (spool_router_follow) runs `attempt()` on a timer, never inside the call that created it:
 *
 *   publish: the shard led by a local replica -> that replica's group-commit queue (batch.h);
 *            otherwise -> to the node believed to lead it (spool_node_route_target: the local
 *            replica's view, else the last leader hint a peer gave, else the shard's replicas in
 *            turn), together with the other publishes for that shard and node made during the
 *            same loop turn: one SPOOL_METHOD_PUBLISH_BATCH call (sent from a uv_idle callback,
 *            so before the RPC layer's end-of-turn write) and one reply with a PublishReply per
 *            publish. Each op keeps its own outcome, retries and deadline; a batch's call timeout
 *            is the shortest attempt timeout among its ops. (Peers still serve the one-publish
 *            SPOOL_METHOD_PUBLISH of older nodes.)
 *   read:    a local replica that has applied at least min_seq (store last_seq) serves it;
 *            otherwise -> SPOOL_METHOD_READ to the leader (or a replica) the same way.
 *   follow:  a long-poll read, at the shard's leader, for a channel whose shard has no local
 *            replica or whose local replica follows (subscription.c); answered from the local
 *            store once this node leads the shard.
 *
 * A "not the leader" / "not caught up" answer carries the replier's leader hint and the op tries
 * again at once if the hint is new, else after a backoff (5 ms doubling to 200 ms); while no
 * leader is known at all (an election) it keeps backing off. One forwarding attempt waits at
 * most two election timeouts (a stopped target must not eat the whole deadline). The op fails
 * with SPOOL_EBUSY (no leader found) or SPOOL_ETIMEOUT once forward_timeout_ms have passed
 * since it started. A timed-out forwarded publish may still commit: message ids make the retry
 * exact. Follow ops have no deadline: they retry until they get an answer or are cancelled.
 *
 * Resharding (docs/resharding.md): a shard answers SPOOL_EMOVED for a channel whose slot it has
 * fenced (being copied to another shard) or dropped -- publishes from its state machine, reads
 * before serving. The op then takes its shard from the map this node has now (reroute()) and
 * retries with the same backoff, bounded by its deadline: the same shard again until the map
 * flips the slot, the new one after. Gateway-only nodes fetch the map at once when that happens.
 *
 * Ops that arrive from peers (the RPC request callback) never forward again: the receiving node
 * serves them if it can (leads the shard for a publish, has applied min_seq for a read) or
 * answers at once with SPOOL_ENOTLEADER / SPOOL_EBUSY and its leader hint. The origin retries.
 * A forwarded read with wait_ms > 0 and nothing after after_seq yet is parked on node->waiters
 * until the local state machine applies a record of its channel or wait_ms passes.
 *
 * Ownership: an op is on node->ops (or node->waiters) from creation until spool_op_release(), which
 * closes its timer; the memory goes in the timer's close callback, which also lets a closing
 * node finish once the last op is gone. `busy` marks an op whose batch item or RPC call is
 * outstanding: that callback is then the op's one way forward.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/entry_pack.h"
#include "cluster/op.h"
#include "common/log.h"

/* --- attempts ----------------------------------------------------------------------------- */

static void attempt(struct spool_op *op);

/* The channel of a publish op: the first field of its packed PublishRequest (protobuf-c writes
 * fields in order, channel = 1). False if the bytes do not start that way. */
static bool packed_channel(const struct spool_op *op, const char **ch, size_t *len)
{
    const uint8_t *p = op->packed, *end = op->packed + op->packed_len;
    if (p == NULL || p >= end || *p++ != 0x0a)
        return false;
    uint64_t v = 0;
    for (unsigned shift = 0; p < end && shift < 64; shift += 7) {
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (v > (uint64_t)(end - p))
                return false;
            *ch = (const char *)p;
            *len = (size_t)v;
            return true;
        }
    }
    return false;
}

/* The op's channel is in a slot that moved (or is moving) to another shard (SPOOL_EMOVED from
 * a fenced or dropped slot, docs/resharding.md): route by the current map from now on. Until
 * the map this node follows flips the slot, that is the same shard again, which answers
 * SPOOL_EMOVED again: the op backs off as during an election, bounded by its deadline. */
static void reroute(struct spool_op *op)
{
    struct spool_node *n = op->node;
    uint32_t shard = op->shard;
    if (op->kind == OP_PUBLISH) {
        const char *ch;
        size_t len;
        if (packed_channel(op, &ch, &len))
            shard = n->placement.slot_shard[spool_slot_of(ch, len)];
    } else if (op->read != NULL && op->read->channel != NULL) {
        shard = spool_node_shard_of(n, op->read->channel);
    }
    spool_reshard_map_stale(n);
    if (shard != op->shard)
        SPOOL_DEBUG("router.rerouted", "from=%u to=%u", op->shard, shard);
    op->shard = shard;
}

static void attempt_timer_cb(uv_timer_t *t)
{
    attempt(t->data);
}

static void retry(struct spool_op *op, bool at_once)
{
    uint64_t delay = 0;
    if (!at_once) {
        unsigned shift = op->attempt < 6 ? op->attempt : 6;
        delay = 5u << shift;
        if (delay > 200)
            delay = 200;
    }
    op->attempt++;
    uv_timer_start(&op->timer, attempt_timer_cb, delay, 0);
}

/* The timeout of one forwarding attempt: what is left of the op's deadline, but at most two
 * election timeouts, so a stopped or partitioned target costs one attempt, not the whole
 * deadline (by then a new leader exists and the next attempt finds it). */
static uint64_t attempt_timeout_ms(struct spool_op *op)
{
    uint64_t now = uv_now(op->node->loop);
    uint64_t left = op->deadline > now ? op->deadline - now : 1;
    uint64_t cap = 2 * op->node->cfg.election_timeout_ms;
    if (cap < 1000)
        cap = 1000;
    return left < cap ? left : cap;
}

/* The common head of a forwarded call's answer: true when `body` is the peer's reply to decode;
 * false when the op has already been finished (closing) or retried (the call failed). */
static bool reply_arrived(struct spool_op *op, int status, const struct spool_err *err)
{
    op->busy = false;
    if (op->canceled || op->node->closing) {
        spool_op_finish_error(op, SPOOL_ECLOSED, "node closing");
        return false;
    }
    if (status != 0) {
        spool_op_set_last(op, status, err ? err->msg : "rpc failed");
        if (op->node->leader_hint[op->shard] == op->target)
            op->node->leader_hint[op->shard] = 0;
        retry(op, false);
        return false;
    }
    return true;
}

/* A reply that did not decode: remembered as the last error, and the op tries again later. */
static void bad_reply(struct spool_op *op, const char *msg)
{
    spool_op_set_last(op, SPOOL_ECORRUPT, msg);
    retry(op, false);
}

/* A reply status that says "ask elsewhere" (not the leader, busy, closing): the op keeps the
 * replier's leader hint and tries again, at once if the hint names a new node. True if so. */
static bool redirected(struct spool_op *op, const Spool__ReplyStatus *s)
{
    int code = s->code;
    if (code == SPOOL_EMOVED && !op->reply) {
        spool_op_set_last(op, code, s->msg);
        reroute(op);
        retry(op, false);
        return true;
    }
    if (code != SPOOL_ENOTLEADER && code != SPOOL_EBUSY && code != SPOOL_ECLOSED)
        return false;
    uint64_t hint = s->leader_hint;
    bool fresh = hint != 0 && hint != op->target && hint != op->node->cfg.id;
    op->node->leader_hint[op->shard] = hint;
    spool_op_set_last(op, code, s->msg);
    retry(op, fresh);
    return true;
}

/* One publish's answer from the leader (its part of a PublishBatchReply). */
static void publish_replied(struct spool_op *op, const Spool__PublishReply *r)
{
    if (r == NULL || r->status == NULL) {
        bad_reply(op, "bad publish reply");
        return;
    }
    int code = r->status->code;
    if (code == 0) {
        size_t count = r->n_seqs;
        bool *dups = calloc(count ? count : 1, sizeof *dups);
        for (size_t i = 0; dups && i < count && i < r->n_duplicate; i++)
            dups[i] = r->duplicate[i];
        struct spool_err ok;
        spool_err_clear(&ok);
        if (dups == NULL || count != op->n_messages) {
            spool_err_set(&ok, dups ? SPOOL_ECORRUPT : SPOOL_ENOMEM, "bad publish reply");
            spool_op_finish_publish(op, ok.code, &ok, NULL, NULL, 0);
        } else {
            spool_op_finish_publish(op, 0, &ok, r->seqs, dups, count);
        }
        free(dups);
    } else if (!redirected(op, r->status)) {
        struct spool_err e;
        spool_err_set(&e, code, "%s", r->status->msg);
        spool_op_finish_publish(op, code, &e, NULL, NULL, 0);
    }
}

/* --- forwarded publishes: one call per shard and target per loop turn -------------------- */

/* The publishes for one shard and one target node that attempts made during this loop turn,
 * then the one SPOOL_METHOD_PUBLISH_BATCH call carrying them: the struct lives until its reply
 * (or the call's failure) has given every op its own outcome. Each op stays `busy` throughout:
 * the reply is its one way forward, exactly as with a call of its own. */
struct spool_fwd_batch {
    struct spool_fwd_batch *next;
    struct spool_node *node;
    uint32_t shard;
    uint64_t target;
    uint64_t timeout; /* the shortest attempt timeout of its ops */
    size_t bytes;     /* packed requests, to split at SPOOL_FWD_BATCH_MAX_BYTES */
    size_t n, cap;
    struct spool_op **ops;
};

#define SPOOL_FWD_BATCH_MAX_BYTES (1u << 20) /* like a group-commit entry (batch.h) */

static void fwd_batch_free(struct spool_fwd_batch *b)
{
    free(b->ops);
    free(b);
}

static void fwd_batch_reply_cb(void *arg, int status, const struct spool_err *err,
                               const void *body, size_t len)
{
    struct spool_fwd_batch *b = arg;
    Spool__PublishBatchReply *r = NULL;
    /* Decoded into a stack arena: the reply dies with this call. */
    _Alignas(16) char stack[16384];
    struct spool_pb_arena arena;
    spool_pb_arena_init(&arena, stack, sizeof stack);
    if (status == 0) {
        r = spool__publish_batch_reply__unpack(&arena.pb, len, body);
        if (r != NULL && r->n_replies != b->n)
            r = NULL;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct spool_op *op = b->ops[i];
        if (!reply_arrived(op, status, err))
            continue;
        if (r == NULL)
            bad_reply(op, "bad publish batch reply");
        else
            publish_replied(op, r->replies[i]);
    }
    spool_pb_arena_close(&arena);
    fwd_batch_free(b);
}

/* Sends one collected batch; on failure every op goes back to its backoff. The body is the
 * ForwardPublishBatch protobuf-c would pack from the ops' requests, built by concatenating each
 * op's packed request behind its field header (no decoding, no second pack). */
static void fwd_batch_send(struct spool_fwd_batch *b)
{
    struct spool_node *n = b->node;
    size_t len = 0;
    for (size_t i = 0; i < b->n; i++)
        len += spool_pb_len_field_size(b->ops[i]->packed_len);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf != NULL) {
        uint8_t *w = buf;
        for (size_t i = 0; i < b->n; i++) {
            const struct spool_op *op = b->ops[i];
            w += spool_pb_put_len_header(w, 0x0a /* requests = 1 */, op->packed_len);
            memcpy(w, op->packed, op->packed_len);
            w += op->packed_len;
        }
    }
    int rc = buf == NULL ? SPOOL_ENOMEM
                         : spool_rpc_call(n->rpc, b->target, SPOOL_METHOD_PUBLISH_BATCH, buf, len,
                                          b->timeout, fwd_batch_reply_cb, b);
    free(buf);
    if (rc == 0) {
        n->fwd_calls++;
        n->fwd_publishes += b->n;
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct spool_op *op = b->ops[i];
        op->busy = false;
        spool_op_set_last(op, rc == SPOOL_ENOMEM ? rc : SPOOL_EIO,
                          rc == SPOOL_ENOMEM ? "out of memory forwarding publishes"
                                             : "rpc call refused");
        if (op->canceled || n->closing)
            spool_op_finish_error(op, SPOOL_ECLOSED, "node closing");
        else
            retry(op, false);
    }
    fwd_batch_free(b);
}

/* End of the loop turn's callbacks (idle runs before the RPC layer's prepare flush, so the calls
 * leave in this turn's writev): every collected batch goes out. */
static void fwd_idle_cb(uv_idle_t *idle)
{
    struct spool_node *n = idle->data;
    uv_idle_stop(idle);
    struct spool_fwd_batch *b = n->fwd_pending;
    n->fwd_pending = NULL;
    while (b != NULL) {
        struct spool_fwd_batch *next = b->next;
        fwd_batch_send(b);
        b = next;
    }
}

/* Adds a publish to this turn's batch for (shard, target); false when out of memory. */
static bool fwd_enqueue(struct spool_op *op)
{
    struct spool_node *n = op->node;
    size_t sz = spool_pb_len_field_size(op->packed_len);
    struct spool_fwd_batch *b = n->fwd_pending;
    while (b != NULL && (b->shard != op->shard || b->target != op->target ||
                         b->bytes + sz > SPOOL_FWD_BATCH_MAX_BYTES))
        b = b->next;
    if (b == NULL) {
        if (!n->fwd_idle_init) {
            if (uv_idle_init(n->loop, &n->fwd_idle) != 0)
                return false;
            n->fwd_idle.data = n;
            n->fwd_idle_init = true;
        }
        if ((b = calloc(1, sizeof *b)) == NULL)
            return false;
        b->node = n;
        b->shard = op->shard;
        b->target = op->target;
        b->timeout = UINT64_MAX;
        b->next = n->fwd_pending;
        n->fwd_pending = b;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct spool_op **ops = realloc(b->ops, cap * sizeof *ops);
        if (ops == NULL) {
            if (b->n == 0) { /* just made: unlink it again */
                n->fwd_pending = b->next;
                fwd_batch_free(b);
            }
            return false;
        }
        b->ops = ops;
        b->cap = cap;
    }
    b->ops[b->n++] = op;
    b->bytes += sz;
    uint64_t t = attempt_timeout_ms(op);
    if (t < b->timeout)
        b->timeout = t;
    uv_idle_start(&n->fwd_idle, fwd_idle_cb);
    return true;
}

/* Closing: publishes still waiting for the end of the turn go back to their timers (attempt()
 * then finishes them as closing); the idle handle counts in pending_close until closed. */
static void fwd_idle_closed_cb(uv_handle_t *h)
{
    struct spool_node *n = h->data;
    n->pending_close--;
    spool_node_finish_close(n);
}

static void fwd_close(struct spool_node *n)
{
    struct spool_fwd_batch *b = n->fwd_pending;
    n->fwd_pending = NULL;
    while (b != NULL) {
        struct spool_fwd_batch *next = b->next;
        for (size_t i = 0; i < b->n; i++) {
            b->ops[i]->busy = false;
            uv_timer_start(&b->ops[i]->timer, attempt_timer_cb, 0, 0);
        }
        fwd_batch_free(b);
        b = next;
    }
    if (n->fwd_idle_init) {
        n->fwd_idle_init = false;
        n->pending_close++;
        uv_close((uv_handle_t *)&n->fwd_idle, fwd_idle_closed_cb);
    }
}

static void read_reply_cb(void *arg, int status, const struct spool_err *err,
                          const void *body, size_t len)
{
    struct spool_op *op = arg;
    if (!reply_arrived(op, status, err))
        return;
    Spool__ReadReply *r = spool__read_reply__unpack(NULL, len, body);
    if (r == NULL || r->status == NULL) {
        if (r)
            spool__read_reply__free_unpacked(r, NULL);
        bad_reply(op, "bad read reply");
        return;
    }
    int code = r->status->code;
    if (code == 0) {
        struct spool_err ok;
        spool_err_clear(&ok);
        op->peer_reply = r; /* its ephemerals, for a follow (conversation_ephemeral.c) */
        spool_op_finish_read(op, 0, &ok, r->records, r->n_records, r->first_seq, r->last_seq);
    } else if (!redirected(op, r->status)) {
        struct spool_err e;
        spool_err_set(&e, code, "%s", r->status->msg);
        spool_op_finish_read(op, code, &e, NULL, 0, 0, 0);
    }
    spool__read_reply__free_unpacked(r, NULL);
}

void spool_router_batch_done_cb(struct spool_batch_item *item, int status,
                                const struct spool_err *err,
                                const struct spool_fsm_publish_result *res)
{
    struct spool_op *op = (struct spool_op *)((char *)item - offsetof(struct spool_op, item));
    op->busy = false;
    if (status == 0) {
        spool_op_finish_publish(op, 0, err, res->seqs, res->duplicate, res->n);
        return;
    }
    /* A peer's request goes back to the peer (it retries); our own is retried here, later
     * (SPOOL_EMOVED: the slot is fenced here, so by the next map's shard). */
    if (status == SPOOL_EMOVED && !op->reply && !op->canceled && !op->node->closing) {
        spool_op_set_last(op, status, err->msg);
        reroute(op);
        retry(op, false);
        return;
    }
    if (op->reply || op->canceled || op->node->closing || status != SPOOL_ENOTLEADER) {
        spool_op_finish_publish(op, op->node->closing ? SPOOL_ECLOSED : status, err, NULL, NULL, 0);
        return;
    }
    spool_op_set_last(op, status, err->msg);
    retry(op, false);
}

static bool forward(struct spool_op *op, uint32_t method, const void *body, size_t len,
                    uint64_t timeout, spool_rpc_call_cb cb)
{
    op->target = spool_node_route_target(op->node, op->shard, op->attempt);
    if (op->target == 0)
        return false;
    op->busy = true;
    if (spool_rpc_call(op->node->rpc, op->target, method, body, len, timeout, cb, op) != 0) {
        op->busy = false;
        spool_op_set_last(op, SPOOL_EIO, "rpc call refused");
        return false;
    }
    return true;
}

static void attempt_publish(struct spool_op *op)
{
    struct spool_node *n = op->node;
    struct spool_shard *sh = spool_node_local_shard(n, op->shard);
    if (sh && spool_shard_is_leader(sh)) {
        op->busy = true;
        op->item.req = op->packed;
        op->item.req_len = op->packed_len;
        op->item.done = spool_router_batch_done_cb;
        spool_batch_submit(&sh->batch, &op->item);
        return;
    }
    /* To the leader with the other publishes of this shard made during this loop turn. */
    op->target = spool_node_route_target(n, op->shard, op->attempt);
    if (op->target == 0) {
        retry(op, false);
        return;
    }
    op->busy = true;
    if (!fwd_enqueue(op)) {
        op->busy = false;
        spool_op_finish_error(op, SPOOL_ENOMEM, "out of memory forwarding a publish");
    }
}

static void attempt_read(struct spool_op *op)
{
    struct spool_node *n = op->node;
    struct spool_shard *sh = spool_node_local_shard(n, op->shard);
    if (sh != NULL && spool_router_slot_moving(sh, op->read->channel)) {
        /* The slot is leaving (or left) this shard: its content here may miss what the new
         * shard already acknowledged. Wait for the map that sends it there. */
        spool_op_set_last(op, SPOOL_EMOVED, "the channel's slot is moving to another shard");
        reroute(op);
        retry(op, false);
        return;
    }
    if (op->kind == OP_READ && sh && (op->read->leader ? spool_shard_leader_reads_ready(sh)
                                      : spool_store_last_seq(sh->store, op->read->channel) >=
                                            op->read->min_seq)) {
        spool_op_serve_read(op, sh);
        return;
    }
    /* Leading, but a publish acknowledged by the previous leader may not be applied here yet:
     * wait for this term's barrier (spool_shard_leader_reads_ready started it). */
    if (op->kind == OP_READ && sh && op->read->leader && spool_shard_is_leader(sh)) {
        spool_op_set_last(op, SPOOL_EBUSY, "new leader still applying its predecessors' entries");
        retry(op, false);
        return;
    }
    /* A follow for a shard this node now leads never waits on itself: the local store answers
     * (subscription.c then ends the chain; the local state machine feeds the topic at once). */
    if (op->kind == OP_FOLLOW && sh && spool_shard_is_leader(sh)) {
        spool_op_serve_read(op, sh);
        return;
    }
    size_t len = spool__read_request__get_packed_size(op->read);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        spool_op_finish_error(op, SPOOL_ENOMEM, "out of memory forwarding a read");
        return;
    }
    spool__read_request__pack(op->read, buf);
    /* A poll's answer is due after wait_ms; a stopped replica is given up one election timeout
     * later (at least 1 s), so a live stream stalls at most about wait_ms + that. */
    uint64_t grace = n->cfg.election_timeout_ms > 1000 ? n->cfg.election_timeout_ms : 1000;
    uint64_t timeout = op->kind == OP_FOLLOW ? op->read->wait_ms + grace : attempt_timeout_ms(op);
    bool sent = forward(op, SPOOL_METHOD_READ, buf, len, timeout, read_reply_cb);
    free(buf);
    if (!sent)
        retry(op, false);
}

static void attempt(struct spool_op *op)
{
    struct spool_node *n = op->node;
    if (n->closing || op->canceled) {
        spool_op_finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    if (op->deadline != 0 && uv_now(n->loop) >= op->deadline) {
        char msg[200];
        snprintf(msg, sizeof msg, "no leader reachable for shard %u within %llu ms%s%s", op->shard,
                 (unsigned long long)n->cfg.forward_timeout_ms, op->last_msg[0] ? ": " : "",
                 op->last_msg);
        spool_op_finish_error(op, op->last_code == SPOOL_EBUSY || op->last_code == SPOOL_ENOTLEADER
                             ? SPOOL_EBUSY
                             : SPOOL_ETIMEOUT,
                     msg);
        return;
    }
    if (op->kind == OP_PUBLISH)
        attempt_publish(op);
    else
        attempt_read(op);
}

static void start(struct spool_op *op)
{
    if (op->kind != OP_FOLLOW)
        op->deadline = uv_now(op->node->loop) + op->node->cfg.forward_timeout_ms;
    uv_timer_start(&op->timer, attempt_timer_cb, 0, 0);
}

bool spool_router_slot_moving(struct spool_shard *sh, const char *channel)
{
    uint32_t slot = spool_slot_of(channel, strlen(channel));
    return spool_fsm_slot_fenced(&sh->fsm, slot) || spool_fsm_slot_dropped(&sh->fsm, slot);
}

/* --- public entry points ------------------------------------------------------------------ */

int spool_node_publish(struct spool_node *n, const char *channel, const Spool__Record *const *msgs,
                       size_t count, spool_publish_cb cb, void *arg)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    if (channel == NULL || channel[0] == '\0' || count == 0 || cb == NULL)
        return SPOOL_EINVAL;
    /* The copy the op keeps is the PublishRequest packed once, in the op's own allocation:
     * forwarded and proposed as these bytes. */
    Spool__PublishRequest p = SPOOL__PUBLISH_REQUEST__INIT;
    p.channel = (char *)channel;
    p.n_messages = count;
    p.messages = (Spool__Record **)msgs;
    size_t len = spool__publish_request__get_packed_size(&p);
    void *buf;
    struct spool_op *op =
        spool_op_new_with(n, OP_PUBLISH, spool_node_shard_of(n, channel), len, &buf);
    if (op == NULL)
        return SPOOL_ENOMEM;
    spool__publish_request__pack(&p, buf);
    op->packed = buf;
    op->packed_len = len;
    op->n_messages = count;
    op->publish_cb = cb;
    op->arg = arg;
    start(op);
    return 0;
}

static Spool__ReadRequest *read_request_new(const char *channel)
{
    Spool__ReadRequest *r = malloc(sizeof *r);
    char *c = strdup(channel);
    if (r == NULL || c == NULL) {
        free(r);
        free(c);
        return NULL;
    }
    spool__read_request__init(r);
    r->channel = c;
    return r;
}

int spool_node_read(struct spool_node *n, const struct spool_read_req *req, spool_read_cb cb,
                    void *arg)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    if (req->channel == NULL || req->channel[0] == '\0' || cb == NULL)
        return SPOOL_EINVAL;
    Spool__ReadRequest *r = read_request_new(req->channel);
    if (r == NULL)
        return SPOOL_ENOMEM;
    r->after_seq = req->after_seq;
    r->before_seq = req->before_seq;
    r->backward = req->backward;
    r->limit = req->limit;
    r->min_seq = req->min_seq;
    r->leader = req->leader || req->turn;
    r->turn = req->turn;
    struct spool_op *op = spool_op_new(n, OP_READ, spool_node_shard_of(n, req->channel));
    if (op == NULL) {
        spool__read_request__free_unpacked(r, NULL);
        return SPOOL_ENOMEM;
    }
    op->read = r;
    op->read_cb = cb;
    op->arg = arg;
    start(op);
    return 0;
}

struct spool_op *spool_router_follow(struct spool_node *n, const char *channel, uint64_t after_seq,
                                     bool anchor, spool_follow_cb cb, void *arg)
{
    if (n->closing)
        return NULL;
    Spool__ReadRequest *r = read_request_new(channel);
    if (r == NULL)
        return NULL;
    if (anchor) {
        r->backward = true; /* the newest record only: tells the channel's last seq */
        r->limit = 1;
    } else {
        r->after_seq = after_seq;
        r->limit = 256;
        r->wait_ms = SPOOL_FOLLOW_WAIT_MS;
        /* Parked on the leader, which applies first: a follower replica would answer only once
         * it learns the commit index (its next heartbeat). A former leader redirects at once. */
        r->leader = true;
    }
    struct spool_op *op = spool_op_new(n, OP_FOLLOW, spool_node_shard_of(n, channel));
    if (op == NULL) {
        spool__read_request__free_unpacked(r, NULL);
        return NULL;
    }
    op->read = r;
    op->follow_cb = cb;
    op->arg = arg;
    start(op);
    return op;
}

void spool_router_cancel(struct spool_op *op)
{
    op->canceled = true;
    if (!op->busy) {
        uv_timer_stop(&op->timer);
        spool_op_release(op);
    }
}

void spool_router_close(struct spool_node *n)
{
    fwd_close(n);
    for (struct spool_op *op = n->ops; op != NULL; op = op->next) {
        if (op->busy)
            continue; /* its batch item or RPC call fails as the shard / RPC layer closes */
        uv_timer_stop(&op->timer);
        uv_timer_start(&op->timer, attempt_timer_cb, 0, 0);
    }
}
