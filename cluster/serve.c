/*
 * The serving side of the cluster RPC: requests other nodes forward here (router.c sends them).
 *
 * A served request never forwards again: the node serves it if it can (leads the shard for a
 * publish; has applied min_seq for a read) or answers at once with SPOOL_ENOTLEADER / SPOOL_EBUSY
 * and its leader hint, and the origin retries. A SPOOL_METHOD_PUBLISH_BATCH (router.c sends one
 * per shard and loop turn) is served request by request the same way, each its own
 * group-commit item, and answered once, when the last of them completes (op.c's fwd group).
 * A read with wait_ms > 0 and nothing after
 * after_seq yet (a follow poll, see subscription.c) is parked on node->waiters until the local
 * state machine applies a record of its channel or wait_ms passes, then answered from the store.
 * A gateway-only node's poll (ReadRequest.ephemerals) is also answered when an ephemeral record
 * of its channel arrives (cluster/conversation_ephemeral.c puts them into the answer).
 * A read of a channel whose slot is fenced or dropped here (resharding moves it to another
 * shard) is answered SPOOL_EMOVED, also when a parked poll wakes: the origin routes it again.
 * SPOOL_METHOD_SLOT_EXPORT / SLOT_IMPORT go to cluster/reshard.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fwd_scan.h"
#include "cluster/op.h"
#include "common/log.h"

/* --- serving peers ------------------------------------------------------------------------ */

static void respond_status(struct spool_rpc_reply *reply, uint32_t method, int code,
                           const char *msg, uint64_t hint)
{
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    spool_op_pack_status(&st, code, msg, hint);
    uint8_t buf[512];
    size_t len;
    if (method == SPOOL_METHOD_PUBLISH) {
        Spool__PublishReply r = SPOOL__PUBLISH_REPLY__INIT;
        r.status = &st;
        len = spool__publish_reply__get_packed_size(&r);
        if (len <= sizeof buf)
            spool__publish_reply__pack(&r, buf);
    } else {
        Spool__ReadReply r = SPOOL__READ_REPLY__INIT;
        r.status = &st;
        len = spool__read_reply__get_packed_size(&r);
        if (len <= sizeof buf)
            spool__read_reply__pack(&r, buf);
    }
    if (len > sizeof buf)
        spool_rpc_respond(reply, code, msg, NULL, 0);
    else
        spool_rpc_respond(reply, 0, NULL, buf, len);
}

static void serve_publish(struct spool_node *n, const void *body, size_t len,
                          struct spool_rpc_reply *reply)
{
    Spool__ForwardPublish *f = spool__forward_publish__unpack(NULL, len, body);
    if (f == NULL || f->request == NULL || f->request->channel == NULL ||
        f->request->channel[0] == '\0' || f->request->n_messages == 0) {
        if (f)
            spool__forward_publish__free_unpacked(f, NULL);
        respond_status(reply, SPOOL_METHOD_PUBLISH, SPOOL_EINVAL, "bad forwarded publish", 0);
        return;
    }
    uint32_t shard = spool_node_shard_of(n, f->request->channel);
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    if (n->closing || sh == NULL || !spool_shard_is_leader(sh)) {
        spool__forward_publish__free_unpacked(f, NULL);
        respond_status(reply, SPOOL_METHOD_PUBLISH, SPOOL_ENOTLEADER, "not the leader",
                       spool_op_local_leader(n, shard));
        return;
    }
    /* The one-publish method of older nodes: packed again (their batch method is the hot path). */
    size_t plen = spool__publish_request__get_packed_size(f->request);
    uint8_t *packed = malloc(plen ? plen : 1);
    struct spool_op *op = packed ? spool_op_new(n, OP_PUBLISH, shard) : NULL;
    if (op == NULL) {
        free(packed);
        spool__forward_publish__free_unpacked(f, NULL);
        respond_status(reply, SPOOL_METHOD_PUBLISH, SPOOL_ENOMEM, "out of memory", 0);
        return;
    }
    spool__publish_request__pack(f->request, packed);
    op->packed = packed;
    op->packed_len = plen;
    op->packed_owned = true;
    op->n_messages = f->request->n_messages;
    spool__forward_publish__free_unpacked(f, NULL);
    op->reply = reply;
    op->busy = true;
    op->item.req = op->packed;
    op->item.req_len = op->packed_len;
    op->item.done = spool_router_batch_done_cb;
    spool_batch_submit(&sh->batch, &op->item);
}

/* Where each request's bytes are in the group's copy of the batch: found by the scanner
 * (fwd_scan.h) when the batch is exactly what protobuf-c writes (always, from Spool nodes),
 * else packed again from the decoded requests. NULL when out of memory. */
static struct spool_fwd_slice *request_bytes(struct spool_fwd_group *g, const uint8_t *body,
                                             size_t len, const Spool__ForwardPublishBatch *f)
{
    size_t k = f->n_requests;
    if (k > SIZE_MAX / sizeof(struct spool_fwd_slice))
        return NULL;
    struct spool_fwd_slice *s = spool_pb_arena_alloc(&g->arena, k * sizeof *s);
    if (s == NULL)
        return NULL;
    if (spool_fwd_scan(body, len, s, k) == (long)k)
        return s;
    for (size_t i = 0; i < k; i++) {
        size_t plen = f->requests[i] ? spool__publish_request__get_packed_size(f->requests[i]) : 0;
        uint8_t *p = spool_pb_arena_alloc(&g->arena, plen);
        if (p == NULL)
            return NULL;
        if (f->requests[i])
            spool__publish_request__pack(f->requests[i], p);
        s[i].buf = p;
        s[i].len = plen;
    }
    return s;
}

/* SPOOL_METHOD_PUBLISH_BATCH: each request is served as serve_publish() serves one (its own op
 * and group-commit item, or an answer at once), and the answers go back together. The batch is
 * decoded into the group's arena (validation, channels); each request's group-commit item is
 * its bytes as the peer sent them, in the group's copy of the body; items and bytes live in the
 * arena until the group answers (after the last item has completed). */
static void serve_publish_batch(struct spool_node *n, const void *body, size_t len,
                                struct spool_rpc_reply *reply)
{
    struct spool_fwd_group *g = spool_fwd_group_new(n, reply, len);
    uint8_t *copy = g ? spool_pb_arena_alloc(&g->arena, len) : NULL;
    if (copy == NULL) {
        spool_rpc_respond(reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
        if (g)
            spool_fwd_group_free(g);
        return;
    }
    if (len > 0)
        memcpy(copy, body, len);
    Spool__ForwardPublishBatch *f = spool__forward_publish_batch__unpack(&g->arena.pb, len, copy);
    if (f == NULL || f->n_requests == 0) {
        spool_rpc_respond(reply, SPOOL_EINVAL, "bad forwarded publish batch", NULL, 0);
        spool_fwd_group_free(g); /* decoding failed or nothing in it (memory: see the arena) */
        return;
    }
    struct spool_fwd_slice *bytes = request_bytes(g, copy, len, f);
    if (bytes == NULL || spool_fwd_group_start(g, f->n_requests) != 0) {
        spool_rpc_respond(reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
        spool_fwd_group_free(g);
        return;
    }
    size_t k = f->n_requests; /* the group may answer (and be freed) during the loop */
    for (size_t i = 0; i < k; i++) {
        Spool__PublishRequest *req = f->requests[i];
        if (req == NULL || req->channel == NULL || req->channel[0] == '\0' ||
            req->n_messages == 0) {
            spool_fwd_group_answer(g, i, SPOOL_EINVAL, "bad forwarded publish", 0, NULL, NULL, 0);
            continue;
        }
        uint32_t shard = spool_node_shard_of(n, req->channel);
        struct spool_shard *sh = spool_node_local_shard(n, shard);
        if (n->closing || sh == NULL || !spool_shard_is_leader(sh)) {
            spool_fwd_group_answer(g, i, SPOOL_ENOTLEADER, "not the leader",
                                   spool_op_local_leader(n, shard), NULL, NULL, 0);
            continue;
        }
        if (spool_fwd_group_submit(g, i, sh, shard, bytes[i].buf, bytes[i].len) != 0)
            spool_fwd_group_answer(g, i, SPOOL_EBUSY, "out of memory", 0, NULL, NULL, 0);
    }
}

static void waiter_timeout_cb(uv_timer_t *t)
{
    struct spool_op *op = t->data;
    struct spool_shard *sh = spool_node_local_shard(op->node, op->shard);
    if (sh == NULL || op->node->closing) {
        spool_op_finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    if (spool_router_slot_moving(sh, op->read->channel)) { /* fenced or dropped meanwhile */
        spool_op_finish_error(op, SPOOL_EMOVED, "the channel's slot is moving to another shard");
        return;
    }
    spool_op_serve_read(op, sh);
}

static void serve_read_request(struct spool_node *n, const void *body, size_t len,
                               struct spool_rpc_reply *reply)
{
    Spool__ReadRequest *r = spool__read_request__unpack(NULL, len, body);
    if (r == NULL || r->channel == NULL || r->channel[0] == '\0') {
        if (r)
            spool__read_request__free_unpacked(r, NULL);
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_EINVAL, "bad read request", 0);
        return;
    }
    uint32_t shard = spool_node_shard_of(n, r->channel);
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    if (!n->closing && sh != NULL && r->leader && !spool_shard_is_leader(sh)) {
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_ENOTLEADER, "not the shard's leader",
                       spool_op_local_leader(n, shard));
        spool__read_request__free_unpacked(r, NULL);
        return;
    }
    if (!n->closing && sh != NULL && r->leader && !spool_shard_leader_reads_ready(sh)) {
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_EBUSY,
                       "new leader still applying its predecessors' entries",
                       spool_op_local_leader(n, shard));
        spool__read_request__free_unpacked(r, NULL);
        return;
    }
    if (!n->closing && sh != NULL && spool_router_slot_moving(sh, r->channel)) {
        /* Resharding: the slot is fenced (being copied away) or dropped here. The origin waits
         * for the map that sends it to its new shard (router.c). */
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_EMOVED,
                       "the channel's slot is moving to another shard", 0);
        spool__read_request__free_unpacked(r, NULL);
        return;
    }
    if (n->closing || sh == NULL ||
        (!r->leader && spool_store_last_seq(sh->store, r->channel) < r->min_seq)) {
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_EBUSY,
                       sh ? "replica has not applied min_seq yet" : "no replica here",
                       spool_op_local_leader(n, shard));
        spool__read_request__free_unpacked(r, NULL);
        return;
    }
    struct spool_op *op = spool_op_new(n, OP_READ, shard);
    if (op == NULL) {
        spool__read_request__free_unpacked(r, NULL);
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_ENOMEM, "out of memory", 0);
        return;
    }
    op->read = r;
    op->reply = reply;
    uint64_t wait = r->wait_ms > 30000 ? 30000 : r->wait_ms;
    if (wait > 0 && !r->backward && spool_store_last_seq(sh->store, r->channel) <= r->after_seq &&
        !spool_eph_pending(n, r)) {
        spool_op_move(op, &n->waiters);
        uv_timer_start(&op->timer, waiter_timeout_cb, wait, 0);
        return;
    }
    spool_op_serve_read(op, sh);
}

static void serve_leader_query(struct spool_node *n, const void *body, size_t len,
                               struct spool_rpc_reply *reply)
{
    Spool__LeaderQuery *q = spool__leader_query__unpack(NULL, len, body);
    Spool__LeaderReply r = SPOOL__LEADER_REPLY__INIT;
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    if (q == NULL || q->shard >= n->placement.shards) {
        spool_op_pack_status(&st, SPOOL_EINVAL, "bad leader query", 0);
    } else {
        r.leader_id = spool_op_local_leader(n, q->shard);
        spool_op_pack_status(&st, 0, "", r.leader_id);
    }
    r.status = &st;
    r.shards = n->placement.shards; /* membership.c checks a joining node with these */
    r.joining = n->cfg.join && spool_node_slot_map_epoch(n) == 0;
    uint8_t buf[256];
    size_t blen = spool__leader_reply__pack(&r, buf);
    spool_rpc_respond(reply, 0, NULL, buf, blen);
    if (q)
        spool__leader_query__free_unpacked(q, NULL);
}

static void serve_slot_map(struct spool_node *n, struct spool_rpc_reply *reply)
{
    Spool__SlotMapReply r = SPOOL__SLOT_MAP_REPLY__INIT;
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    Spool__SlotMap *sm = NULL;
    if (n->meta == NULL || spool_meta_map(n->meta)->epoch == 0) {
        spool_op_pack_status(&st, SPOOL_EBUSY, "no slot map here yet", 0);
    } else if ((sm = spool_slot_map_proto_new(spool_meta_map(n->meta))) == NULL) {
        spool_op_pack_status(&st, SPOOL_ENOMEM, "out of memory", 0);
    } else {
        r.map = sm; /* the cluster map: slots, nodes, replica sets (membership.c) */
        spool_op_pack_status(&st, 0, "", 0);
    }
    r.status = &st;
    size_t len = spool__slot_map_reply__get_packed_size(&r);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        spool_rpc_respond(reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
    } else {
        spool__slot_map_reply__pack(&r, buf);
        spool_rpc_respond(reply, 0, NULL, buf, len);
    }
    free(buf);
    if (sm)
        spool_slot_map_proto_free(sm);
}

void spool_serve_request_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                             size_t len, struct spool_rpc_reply *reply)
{
    struct spool_node *n = arg;
    switch (method) {
    case SPOOL_METHOD_PUBLISH:
        serve_publish(n, body, len, reply);
        break;
    case SPOOL_METHOD_PUBLISH_BATCH:
        serve_publish_batch(n, body, len, reply);
        break;
    case SPOOL_METHOD_READ:
        serve_read_request(n, body, len, reply);
        break;
    case SPOOL_METHOD_LEADER:
        serve_leader_query(n, body, len, reply);
        break;
    case SPOOL_METHOD_SLOT_MAP:
        serve_slot_map(n, reply);
        break;
    case SPOOL_METHOD_MEMBERSHIP:
    case SPOOL_METHOD_RECONFIGURE:
        spool_membership_serve(n, method, body, len, reply);
        break;
    case SPOOL_METHOD_SLOT_EXPORT:
    case SPOOL_METHOD_SLOT_IMPORT:
        spool_reshard_serve(n, method, body, len, reply);
        break;
    default:
        spool_rpc_respond(reply, SPOOL_EINVAL, "unknown method", NULL, 0);
    }
}

void spool_serve_message_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                             size_t len)
{
    if (method == SPOOL_METHOD_EPHEMERAL) { /* conversation_ephemeral.c */
        spool_node_ephemeral_arrived(arg, from_node, body, len);
        return;
    }
    if (method == SPOOL_METHOD_REBALANCE) { /* admin.c */
        spool_node_rebalance_arrived(arg, from_node);
        return;
    }
    if (method == SPOOL_METHOD_PRESENCE_HEARTBEAT) { /* presence_reaper.c */
        spool_node_presence_heartbeat_arrived(arg, from_node, body, len);
        return;
    }
    SPOOL_DEBUG("router.unexpected_message", "from=%llu method=%u", (unsigned long long)from_node,
                method);
}

void spool_serve_records_applied(struct spool_node *n, const char *channel)
{
    struct spool_op *op = n->waiters;
    while (op != NULL) {
        struct spool_op *next = op->next;
        if (strcmp(op->read->channel, channel) == 0) {
            uv_timer_stop(&op->timer);
            /* Serve on the next turn, outside the state machine's apply. */
            uv_timer_start(&op->timer, waiter_timeout_cb, 0, 0);
        }
        op = next;
    }
}

void spool_serve_ephemeral_arrived(struct spool_node *n, const char *channel)
{
    for (struct spool_op *op = n->waiters; op != NULL; op = op->next) {
        if (op->read->ephemerals && strcmp(op->read->channel, channel) == 0) {
            uv_timer_stop(&op->timer);
            uv_timer_start(&op->timer, waiter_timeout_cb, 0, 0);
        }
    }
}

void spool_serve_close(struct spool_node *n)
{
    for (struct spool_op *op = n->waiters; op != NULL; op = op->next) {
        uv_timer_stop(&op->timer);
        uv_timer_start(&op->timer, waiter_timeout_cb, 0, 0);
    }
}
