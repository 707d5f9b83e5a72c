/*
 * Op lifecycle, completion and local reads (see op.h). A completion encodes the answer for a peer
 * (PublishReply / ReadReply with a ReplyStatus carrying this node's leader hint) or calls the
 * local caller, exactly once, then releases the op.
 */
#include "cluster/op.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* --- lifecycle ---------------------------------------------------------------------------- */

static void list_add(struct spool_op **list, struct spool_op *op)
{
    op->list = list;
    op->prev = NULL;
    op->next = *list;
    if (*list)
        (*list)->prev = op;
    *list = op;
}

static void list_del(struct spool_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        *op->list = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void maybe_finish_close(struct spool_node *n);

static void op_freed_cb(uv_handle_t *h)
{
    struct spool_op *op = h->data;
    struct spool_node *n = op->node;
    if (op->packed_owned)
        free((void *)op->packed);
    if (op->read)
        spool__read_request__free_unpacked(op->read, NULL);
    free(op);
    n->pending_close--;
    maybe_finish_close(n);
}

void spool_op_release(struct spool_op *op)
{
    if (op->released)
        return;
    op->released = true;
    list_del(op);
    uv_close((uv_handle_t *)&op->timer, op_freed_cb);
}

struct spool_op *spool_op_new(struct spool_node *n, enum op_kind kind, uint32_t shard)
{
    return spool_op_new_with(n, kind, shard, 0, NULL);
}

struct spool_op *spool_op_new_with(struct spool_node *n, enum op_kind kind, uint32_t shard,
                                   size_t extra, void **extra_buf)
{
    if (extra > SIZE_MAX - sizeof(struct spool_op))
        return NULL;
    struct spool_op *op = malloc(sizeof *op + extra);
    if (op == NULL)
        return NULL;
    memset(op, 0, sizeof *op);
    if (extra_buf != NULL)
        *extra_buf = op + 1;
    op->node = n;
    op->kind = kind;
    op->shard = shard;
    uv_timer_init(n->loop, &op->timer);
    op->timer.data = op;
    n->pending_close++; /* one per live op: the node is freed after the last one */
    list_add(&n->ops, op);
    return op;
}

void spool_op_move(struct spool_op *op, struct spool_op **list)
{
    list_del(op);
    list_add(list, op);
}

void spool_op_set_last(struct spool_op *op, int code, const char *msg)
{
    op->last_code = code;
    snprintf(op->last_msg, sizeof op->last_msg, "%s", msg ? msg : "");
}
/* --- completion --------------------------------------------------------------------------- */

void spool_op_pack_status(Spool__ReplyStatus *st, int code, const char *msg, uint64_t hint)
{
    st->code = code;
    st->msg = (char *)(msg ? msg : "");
    st->leader_hint = hint;
}

uint64_t spool_op_local_leader(struct spool_node *n, uint32_t shard)
{
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    return sh ? spool_shard_leader(sh) : n->leader_hint[shard];
}

/* Answers a peer with `m` packed as the reply body (SPOOL_ENOMEM if it cannot be packed). */
static void respond_packed(struct spool_rpc_reply *reply, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        protobuf_c_message_pack(m, buf);
        spool_rpc_respond(reply, 0, NULL, buf, len);
    } else {
        spool_rpc_respond(reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
    }
    free(buf);
}

/* The arena's first block comes with the group: the peer's bytes, their decoded requests and
 * the answers usually fit, so a whole batch costs one malloc (and one free). */
#define GROUP_BLOCK_MAX (4u << 20)

struct spool_fwd_group *spool_fwd_group_new(struct spool_node *n, struct spool_rpc_reply *reply,
                                            size_t len)
{
    size_t block = len < GROUP_BLOCK_MAX / 4 ? 4 * len + 1024 : GROUP_BLOCK_MAX;
    struct spool_fwd_group *g = malloc(sizeof *g + block);
    if (g == NULL)
        return NULL;
    *g = (struct spool_fwd_group){.node = n, .reply = reply};
    spool_pb_arena_init(&g->arena, g + 1, block);
    n->pending_close++; /* its items may complete while the node closes: freed before it */
    return g;
}

int spool_fwd_group_start(struct spool_fwd_group *g, size_t n)
{
    size_t k = n ? n : 1;
    if (k > SIZE_MAX / sizeof *g->replies)
        return SPOOL_ENOMEM;
    g->replies = spool_pb_arena_alloc(&g->arena, k * sizeof *g->replies);
    g->ptrs = spool_pb_arena_alloc(&g->arena, k * sizeof *g->ptrs);
    g->status = spool_pb_arena_alloc(&g->arena, k * sizeof *g->status);
    if (g->replies == NULL || g->ptrs == NULL || g->status == NULL)
        return SPOOL_ENOMEM;
    g->n = g->left = n;
    for (size_t i = 0; i < n; i++) {
        spool__publish_reply__init(&g->replies[i]);
        spool__reply_status__init(&g->status[i]);
        g->replies[i].status = &g->status[i];
        g->ptrs[i] = &g->replies[i];
    }
    return 0;
}

void spool_fwd_group_free(struct spool_fwd_group *g)
{
    struct spool_node *n = g->node;
    spool_pb_arena_close(&g->arena);
    free(g);
    n->pending_close--;
    maybe_finish_close(n);
}

/* One request of a served batch on its way through group commit. */
struct fwd_item {
    struct spool_batch_item item;
    struct spool_fwd_group *group;
    size_t i;
    uint32_t shard;
};

static void fwd_item_done_cb(struct spool_batch_item *item, int status,
                             const struct spool_err *err,
                             const struct spool_fsm_publish_result *res)
{
    struct fwd_item *it = (struct fwd_item *)((char *)item - offsetof(struct fwd_item, item));
    struct spool_fwd_group *g = it->group;
    struct spool_node *n = g->node;
    if (status == 0) {
        spool_fwd_group_answer(g, it->i, 0, "", spool_op_local_leader(n, it->shard), res->seqs,
                               res->duplicate, res->n);
    } else {
        /* The peer retries (ENOTLEADER with our hint) or gives up; closing says so. */
        spool_fwd_group_answer(g, it->i, n->closing ? SPOOL_ECLOSED : status, err->msg,
                               spool_op_local_leader(n, it->shard), NULL, NULL, 0);
    }
    /* `it` lived in the group's arena: gone if that was the last answer. */
}

int spool_fwd_group_submit(struct spool_fwd_group *g, size_t i, struct spool_shard *sh,
                           uint32_t shard, const uint8_t *packed, size_t len)
{
    struct fwd_item *it = spool_pb_arena_alloc(&g->arena, sizeof *it);
    if (it == NULL)
        return SPOOL_ENOMEM;
    *it = (struct fwd_item){.group = g, .i = i, .shard = shard};
    it->item.req = packed;
    it->item.req_len = len;
    it->item.done = fwd_item_done_cb;
    spool_batch_submit(&sh->batch, &it->item);
    return 0;
}

void spool_fwd_group_answer(struct spool_fwd_group *g, size_t i, int status, const char *msg,
                            uint64_t hint, const uint64_t *seqs, const bool *dups, size_t count)
{
    Spool__PublishReply *r = &g->replies[i];
    Spool__ReplyStatus *st = &g->status[i];
    st->code = status;
    st->leader_hint = hint;
    if (status != 0 && msg != NULL && msg[0] != '\0') {
        size_t len = strlen(msg) + 1;
        char *m = spool_pb_arena_alloc(&g->arena, len);
        if (m != NULL)
            st->msg = memcpy(m, msg, len);
    }
    if (status == 0 && count > 0) {
        r->seqs = spool_pb_arena_alloc(&g->arena, count * sizeof *r->seqs);
        r->duplicate = spool_pb_arena_alloc(&g->arena, count * sizeof *r->duplicate);
        if (r->seqs == NULL || r->duplicate == NULL) {
            r->seqs = NULL;
            r->duplicate = NULL;
            st->code = SPOOL_EBUSY; /* the origin retries (as after a lost reply); ids dedup */
        } else {
            memcpy(r->seqs, seqs, count * sizeof *r->seqs);
            for (size_t j = 0; j < count; j++)
                r->duplicate[j] = dups[j];
            r->n_seqs = r->n_duplicate = count;
        }
    }
    if (--g->left > 0)
        return;
    Spool__PublishBatchReply b = SPOOL__PUBLISH_BATCH_REPLY__INIT;
    b.n_replies = g->n;
    b.replies = g->ptrs;
    size_t len = spool__publish_batch_reply__get_packed_size(&b);
    uint8_t *buf = spool_pb_arena_alloc(&g->arena, len);
    if (buf != NULL) {
        spool__publish_batch_reply__pack(&b, buf);
        spool_rpc_respond(g->reply, 0, NULL, buf, len);
    } else {
        spool_rpc_respond(g->reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
    }
    spool_fwd_group_free(g);
}

void spool_op_finish_publish(struct spool_op *op, int status, const struct spool_err *err,
                           const uint64_t *seqs, const bool *dups, size_t count)
{
    if (op->reply) {
        Spool__PublishReply r = SPOOL__PUBLISH_REPLY__INIT;
        Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
        spool_op_pack_status(&st, status, status ? err->msg : "",
                             spool_op_local_leader(op->node, op->shard));
        r.status = &st;
        r.n_seqs = status ? 0 : count;
        r.seqs = (uint64_t *)seqs;
        r.n_duplicate = status ? 0 : count;
        protobuf_c_boolean *d = calloc(count ? count : 1, sizeof *d);
        for (size_t i = 0; d && i < count; i++)
            d[i] = dups[i];
        r.duplicate = d;
        if (d == NULL)
            r.n_duplicate = 0;
        respond_packed(op->reply, &r.base);
        free(d);
    } else if (!op->canceled) {
        op->publish_cb(op->arg, status, err, seqs, dups, count);
    }
    spool_op_release(op);
}

void spool_op_finish_read(struct spool_op *op, int status, const struct spool_err *err,
                        Spool__Record **recs, size_t count, uint64_t first, uint64_t last)
{
    Spool__ReadReply r = SPOOL__READ_REPLY__INIT;
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    spool_op_pack_status(&st, status, status ? err->msg : "",
                         spool_op_local_leader(op->node, op->shard));
    r.status = &st;
    r.n_records = count;
    r.records = recs;
    r.first_seq = first;
    r.last_seq = last;
    if (op->kind == OP_FOLLOW && op->peer_reply != NULL) { /* conversation_ephemeral.c */
        r.n_ephemerals = op->peer_reply->n_ephemerals;
        r.ephemerals = op->peer_reply->ephemerals;
        r.eph_node = op->peer_reply->eph_node;
        r.eph_seq = op->peer_reply->eph_seq;
    }
    if (op->reply) {
        if (status == 0 && op->read != NULL && op->read->ephemerals)
            spool_eph_fill(op->node, op->read, &r);
        respond_packed(op->reply, &r.base);
        if (r.ephemerals != NULL)
            spool_eph_fill_done(&r);
    } else if (op->canceled) {
        /* nobody to tell */
    } else if (op->kind == OP_FOLLOW) {
        op->follow_cb(op->arg, status, err, &r);
    } else {
        op->read_cb(op->arg, status, err, (const Spool__Record *const *)recs, count, first, last);
    }
    spool_op_release(op);
}

void spool_op_finish_error(struct spool_op *op, int status, const char *msg)
{
    struct spool_err err;
    spool_err_set(&err, status, "%s", msg);
    if (op->kind == OP_PUBLISH)
        spool_op_finish_publish(op, status, &err, NULL, NULL, 0);
    else
        spool_op_finish_read(op, status, &err, NULL, 0, 0, 0);
}
/* --- local reads -------------------------------------------------------------------------- */

struct collect {
    Spool__Record **v;
    size_t n, cap;
    size_t bytes; /* packed size so far: a page stops at SPOOL_READ_MAX_BYTES */
    int rc;
};

static int collect_visit_cb(void *arg, const Spool__Record *rec)
{
    struct collect *c = arg;
    if (c->n > 0 && c->bytes >= SPOOL_READ_MAX_BYTES)
        return 1; /* a short page: callers page on using last_seq / first_seq */
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Spool__Record **v = realloc(c->v, cap * sizeof *v);
        if (v == NULL) {
            c->rc = SPOOL_ENOMEM;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    /* Deep copy through the wire format: the store's record lives only during this call. */
    size_t len = spool__record__get_packed_size(rec);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        c->rc = SPOOL_ENOMEM;
        return 1;
    }
    spool__record__pack(rec, buf);
    c->bytes += len;
    Spool__Record *copy = spool__record__unpack(NULL, len, buf);
    free(buf);
    if (copy == NULL) {
        c->rc = SPOOL_ENOMEM;
        return 1;
    }
    c->v[c->n++] = copy;
    return 0;
}

void spool_records_free(Spool__Record **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        spool__record__free_unpacked(recs[i], NULL);
    free(recs);
}

int spool_router_read_local(struct spool_node *n, struct spool_store *store,
                            const Spool__ReadRequest *req, Spool__Record ***recs, size_t *count,
                            struct spool_err *err)
{
    struct collect c = {0};
    size_t limit = req->limit ? req->limit : SPOOL_READ_DEFAULT_LIMIT;
    if (limit > SPOOL_READ_MAX_LIMIT)
        limit = SPOOL_READ_MAX_LIMIT;
    int rc = req->backward ? spool_store_read_backward(store, req->channel, req->before_seq, limit,
                                                       collect_visit_cb, &c, err)
                           : spool_store_read(store, req->channel, req->after_seq, limit,
                                              collect_visit_cb, &c, err);
    if (rc == 0 && c.rc != 0)
        rc = spool_err_set(err, c.rc, "reading %s: out of memory", req->channel);
    if (rc != 0) {
        spool_records_free(c.v, c.n);
        return rc;
    }
    *recs = c.v;
    *count = c.n;
    return 0;
}

/* Serves a read from the local store and completes the op. */
void spool_op_serve_read(struct spool_op *op, struct spool_shard *sh)
{
    Spool__Record **recs = NULL;
    size_t count = 0;
    struct spool_err err;
    spool_err_clear(&err);
    int rc = op->read->turn /* the turn, not records (conversation_turn.c) */
                 ? spool_turn_read_local(op->node, sh, op->read->channel, &recs, &count)
                 : spool_router_read_local(op->node, sh->store, op->read, &recs, &count, &err);
    if (rc != 0 && op->read->turn)
        spool_err_set(&err, rc, "reading the turn: out of memory");
    uint64_t first = spool_store_first_seq(sh->store, op->read->channel);
    uint64_t last = spool_store_last_seq(sh->store, op->read->channel);
    spool_op_finish_read(op, rc, &err, recs, count, first, last);
    spool_records_free(recs, count);
}
static void maybe_finish_close(struct spool_node *n)
{
    if (n->closing)
        spool_node_finish_close(n);
}
