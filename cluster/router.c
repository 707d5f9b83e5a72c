/*
 * Request routing: where a publish or a read goes, and what happens when it cannot go there yet.
 *
 * Every request is a `struct spool_op` owned by this file from creation to completion. An op
 * made by the local gateway (spool_node_publish / spool_node_read) or by subscription.c
 * (spool_router_follow) runs `attempt()` on a timer, never inside the call that created it:
 *
 *   publish: the shard led by a local replica -> that replica's group-commit queue (batch.h);
 *            otherwise -> SPOOL_METHOD_PUBLISH to the node believed to lead it
 *            (spool_node_route_target: the local replica's view, else the last leader hint a peer
 *            gave, else the shard's replicas in turn).
 *   read:    a local replica that has applied at least min_seq (store last_seq) serves it;
 *            otherwise -> SPOOL_METHOD_READ to the leader (or a replica) the same way.
 *   follow:  a long-poll read for a channel whose shard has no local replica (subscription.c).
 *
 * A "not the leader" / "not caught up" answer carries the replier's leader hint and the op tries
 * again at once if the hint is new, else after a backoff (5 ms doubling to 200 ms); while no
 * leader is known at all (an election) it keeps backing off. One forwarding attempt waits at
 * most two election timeouts (a stopped target must not eat the whole deadline). The op fails
 * with SPOOL_EBUSY (no leader found) or SPOOL_ETIMEOUT once forward_timeout_ms have passed
 * since it started. A timed-out forwarded publish may still commit: message ids make the retry
 * exact. Follow ops have no
 * deadline: they retry until they get an answer or are cancelled.
 *
 * Ops that arrive from peers (the RPC request callback) never forward again: the receiving node
 * serves them if it can (leads the shard for a publish, has applied min_seq for a read) or
 * answers at once with SPOOL_ENOTLEADER / SPOOL_EBUSY and its leader hint. The origin retries.
 * A forwarded read with wait_ms > 0 and nothing after after_seq yet is parked on node->waiters
 * until the local state machine applies a record of its channel or wait_ms passes.
 *
 * Ownership: an op is on node->ops (or node->waiters) from creation until op_release(), which
 * closes its timer; the memory goes in the timer's close callback, which also lets a closing
 * node finish once the last op is gone. `busy` marks an op whose batch item or RPC call is
 * outstanding: that callback is then the op's one way forward.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/node_int.h"
#include "common/log.h"

enum op_kind { OP_PUBLISH, OP_READ, OP_FOLLOW };

#define SPOOL_FOLLOW_WAIT_MS 2000 /* how long a replica holds a follow poll with nothing new */

struct spool_op {
    struct spool_op *prev, *next;
    struct spool_op **list; /* &node->ops or &node->waiters */
    struct spool_node *node;
    enum op_kind kind;
    uint32_t shard;
    uint64_t deadline; /* uv_now() ms; 0 = none */
    unsigned attempt;
    uint64_t target;
    uv_timer_t timer;
    bool busy, canceled, released;
    int last_code;
    char last_msg[128];
    struct spool_rpc_reply *reply; /* served for a peer: answer here */

    /* publish */
    Spool__PublishRequest *req;      /* owned (local: unpacked copy) */
    Spool__ForwardPublish *fwd;      /* owned when the request came from a peer */
    struct spool_batch_item item;
    spool_publish_cb publish_cb;

    /* read / follow */
    Spool__ReadRequest *read;        /* owned */
    spool_read_cb read_cb;
    spool_follow_cb follow_cb;
    void *arg;
};

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
    if (op->req && op->fwd == NULL)
        spool__publish_request__free_unpacked(op->req, NULL);
    if (op->fwd)
        spool__forward_publish__free_unpacked(op->fwd, NULL);
    if (op->read)
        spool__read_request__free_unpacked(op->read, NULL);
    free(op);
    n->pending_close--;
    maybe_finish_close(n);
}

static void op_release(struct spool_op *op)
{
    if (op->released)
        return;
    op->released = true;
    list_del(op);
    uv_close((uv_handle_t *)&op->timer, op_freed_cb);
}

static struct spool_op *op_new(struct spool_node *n, enum op_kind kind, uint32_t shard)
{
    struct spool_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->node = n;
    op->kind = kind;
    op->shard = shard;
    uv_timer_init(n->loop, &op->timer);
    op->timer.data = op;
    n->pending_close++; /* one per live op: the node is freed after the last one */
    list_add(&n->ops, op);
    return op;
}

static void set_last(struct spool_op *op, int code, const char *msg)
{
    op->last_code = code;
    snprintf(op->last_msg, sizeof op->last_msg, "%s", msg ? msg : "");
}

/* --- completion --------------------------------------------------------------------------- */

static void pack_status(Spool__ReplyStatus *st, int code, const char *msg, uint64_t hint)
{
    st->code = code;
    st->msg = (char *)(msg ? msg : "");
    st->leader_hint = hint;
}

static uint64_t local_leader(struct spool_node *n, uint32_t shard)
{
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    return sh ? spool_shard_leader(sh) : n->leader_hint[shard];
}

static void finish_publish(struct spool_op *op, int status, const struct spool_err *err,
                           const uint64_t *seqs, const bool *dups, size_t count)
{
    if (op->reply) {
        Spool__PublishReply r = SPOOL__PUBLISH_REPLY__INIT;
        Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
        pack_status(&st, status, status ? err->msg : "", local_leader(op->node, op->shard));
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
        size_t len = spool__publish_reply__get_packed_size(&r);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            spool__publish_reply__pack(&r, buf);
            spool_rpc_respond(op->reply, 0, NULL, buf, len);
        } else {
            spool_rpc_respond(op->reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
        }
        free(buf);
        free(d);
    } else if (!op->canceled) {
        op->publish_cb(op->arg, status, err, seqs, dups, count);
    }
    op_release(op);
}

static void finish_read(struct spool_op *op, int status, const struct spool_err *err,
                        Spool__Record **recs, size_t count, uint64_t first, uint64_t last)
{
    Spool__ReadReply r = SPOOL__READ_REPLY__INIT;
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    pack_status(&st, status, status ? err->msg : "", local_leader(op->node, op->shard));
    r.status = &st;
    r.n_records = count;
    r.records = recs;
    r.first_seq = first;
    r.last_seq = last;
    if (op->reply) {
        size_t len = spool__read_reply__get_packed_size(&r);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            spool__read_reply__pack(&r, buf);
            spool_rpc_respond(op->reply, 0, NULL, buf, len);
        } else {
            spool_rpc_respond(op->reply, SPOOL_ENOMEM, "out of memory", NULL, 0);
        }
        free(buf);
    } else if (op->canceled) {
        /* nobody to tell */
    } else if (op->kind == OP_FOLLOW) {
        op->follow_cb(op->arg, status, err, &r);
    } else {
        op->read_cb(op->arg, status, err, (const Spool__Record *const *)recs, count, first, last);
    }
    op_release(op);
}

static void finish_error(struct spool_op *op, int status, const char *msg)
{
    struct spool_err err;
    spool_err_set(&err, status, "%s", msg);
    if (op->kind == OP_PUBLISH)
        finish_publish(op, status, &err, NULL, NULL, 0);
    else
        finish_read(op, status, &err, NULL, 0, 0, 0);
}

/* --- local reads -------------------------------------------------------------------------- */

struct collect {
    Spool__Record **v;
    size_t n, cap;
    int rc;
};

static int collect_visit_cb(void *arg, const Spool__Record *rec)
{
    struct collect *c = arg;
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
static void serve_read(struct spool_op *op, struct spool_shard *sh)
{
    Spool__Record **recs = NULL;
    size_t count = 0;
    struct spool_err err;
    spool_err_clear(&err);
    int rc = spool_router_read_local(op->node, sh->store, op->read, &recs, &count, &err);
    uint64_t first = spool_store_first_seq(sh->store, op->read->channel);
    uint64_t last = spool_store_last_seq(sh->store, op->read->channel);
    finish_read(op, rc, &err, recs, count, first, last);
    spool_records_free(recs, count);
}

/* --- attempts ----------------------------------------------------------------------------- */

static void attempt(struct spool_op *op);

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

static void publish_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                             size_t len)
{
    struct spool_op *op = arg;
    op->busy = false;
    if (op->canceled || op->node->closing) {
        finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    if (status != 0) {
        set_last(op, status, err ? err->msg : "rpc failed");
        if (op->node->leader_hint[op->shard] == op->target)
            op->node->leader_hint[op->shard] = 0;
        retry(op, false);
        return;
    }
    Spool__PublishReply *r = spool__publish_reply__unpack(NULL, len, body);
    if (r == NULL || r->status == NULL) {
        if (r)
            spool__publish_reply__free_unpacked(r, NULL);
        set_last(op, SPOOL_ECORRUPT, "bad publish reply");
        retry(op, false);
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
        if (dups == NULL || count != op->req->n_messages) {
            spool_err_set(&ok, dups ? SPOOL_ECORRUPT : SPOOL_ENOMEM, "bad publish reply");
            finish_publish(op, ok.code, &ok, NULL, NULL, 0);
        } else {
            finish_publish(op, 0, &ok, r->seqs, dups, count);
        }
        free(dups);
    } else if (code == SPOOL_ENOTLEADER || code == SPOOL_EBUSY || code == SPOOL_ECLOSED) {
        uint64_t hint = r->status->leader_hint;
        bool fresh = hint != 0 && hint != op->target && hint != op->node->cfg.id;
        op->node->leader_hint[op->shard] = hint;
        set_last(op, code, r->status->msg);
        retry(op, fresh);
    } else {
        struct spool_err e;
        spool_err_set(&e, code, "%s", r->status->msg);
        finish_publish(op, code, &e, NULL, NULL, 0);
    }
    spool__publish_reply__free_unpacked(r, NULL);
}

static void read_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                          size_t len)
{
    struct spool_op *op = arg;
    op->busy = false;
    if (op->canceled || op->node->closing) {
        finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    if (status != 0) {
        set_last(op, status, err ? err->msg : "rpc failed");
        if (op->node->leader_hint[op->shard] == op->target)
            op->node->leader_hint[op->shard] = 0;
        retry(op, false);
        return;
    }
    Spool__ReadReply *r = spool__read_reply__unpack(NULL, len, body);
    if (r == NULL || r->status == NULL) {
        if (r)
            spool__read_reply__free_unpacked(r, NULL);
        set_last(op, SPOOL_ECORRUPT, "bad read reply");
        retry(op, false);
        return;
    }
    int code = r->status->code;
    if (code == 0) {
        struct spool_err ok;
        spool_err_clear(&ok);
        finish_read(op, 0, &ok, r->records, r->n_records, r->first_seq, r->last_seq);
    } else if (code == SPOOL_ENOTLEADER || code == SPOOL_EBUSY || code == SPOOL_ECLOSED) {
        uint64_t hint = r->status->leader_hint;
        bool fresh = hint != 0 && hint != op->target && hint != op->node->cfg.id;
        op->node->leader_hint[op->shard] = hint;
        set_last(op, code, r->status->msg);
        retry(op, fresh);
    } else {
        struct spool_err e;
        spool_err_set(&e, code, "%s", r->status->msg);
        finish_read(op, code, &e, NULL, 0, 0, 0);
    }
    spool__read_reply__free_unpacked(r, NULL);
}

static void batch_done_cb(struct spool_batch_item *item, int status, const struct spool_err *err,
                          const struct spool_fsm_publish_result *res)
{
    struct spool_op *op = (struct spool_op *)((char *)item - offsetof(struct spool_op, item));
    op->busy = false;
    if (status == 0) {
        finish_publish(op, 0, err, res->seqs, res->duplicate, res->n);
        return;
    }
    /* A peer's request goes back to the peer (it retries); our own is retried here, later. */
    if (op->reply || op->canceled || op->node->closing || status != SPOOL_ENOTLEADER) {
        finish_publish(op, op->node->closing ? SPOOL_ECLOSED : status, err, NULL, NULL, 0);
        return;
    }
    set_last(op, status, err->msg);
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
        set_last(op, SPOOL_EIO, "rpc call refused");
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
        op->item.req = op->req;
        op->item.done = batch_done_cb;
        spool_batch_submit(&sh->batch, &op->item);
        return;
    }
    Spool__ForwardPublish f = SPOOL__FORWARD_PUBLISH__INIT;
    f.request = op->req;
    size_t len = spool__forward_publish__get_packed_size(&f);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        finish_error(op, SPOOL_ENOMEM, "out of memory forwarding a publish");
        return;
    }
    spool__forward_publish__pack(&f, buf);
    bool sent = forward(op, SPOOL_METHOD_PUBLISH, buf, len, attempt_timeout_ms(op), publish_reply_cb);
    free(buf);
    if (!sent)
        retry(op, false);
}

static void attempt_read(struct spool_op *op)
{
    struct spool_node *n = op->node;
    struct spool_shard *sh = spool_node_local_shard(n, op->shard);
    if (op->kind == OP_READ && sh &&
        spool_store_last_seq(sh->store, op->read->channel) >= op->read->min_seq) {
        serve_read(op, sh);
        return;
    }
    size_t len = spool__read_request__get_packed_size(op->read);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        finish_error(op, SPOOL_ENOMEM, "out of memory forwarding a read");
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
        finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    if (op->deadline != 0 && uv_now(n->loop) >= op->deadline) {
        char msg[200];
        snprintf(msg, sizeof msg, "no leader reachable for shard %u within %llu ms%s%s", op->shard,
                 (unsigned long long)n->cfg.forward_timeout_ms, op->last_msg[0] ? ": " : "",
                 op->last_msg);
        finish_error(op, op->last_code == SPOOL_EBUSY || op->last_code == SPOOL_ENOTLEADER
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

/* --- public entry points ------------------------------------------------------------------ */

int spool_node_publish(struct spool_node *n, const char *channel, const Spool__Record *const *msgs,
                       size_t count, spool_publish_cb cb, void *arg)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    if (channel == NULL || channel[0] == '\0' || count == 0 || cb == NULL)
        return SPOOL_EINVAL;
    /* Copy: pack the caller's messages as a PublishRequest and unpack our own. */
    Spool__PublishRequest p = SPOOL__PUBLISH_REQUEST__INIT;
    p.channel = (char *)channel;
    p.n_messages = count;
    p.messages = (Spool__Record **)msgs;
    size_t len = spool__publish_request__get_packed_size(&p);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return SPOOL_ENOMEM;
    spool__publish_request__pack(&p, buf);
    Spool__PublishRequest *copy = spool__publish_request__unpack(NULL, len, buf);
    free(buf);
    if (copy == NULL)
        return SPOOL_ENOMEM;
    struct spool_op *op = op_new(n, OP_PUBLISH, spool_node_shard_of(n, channel));
    if (op == NULL) {
        spool__publish_request__free_unpacked(copy, NULL);
        return SPOOL_ENOMEM;
    }
    op->req = copy;
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
    struct spool_op *op = op_new(n, OP_READ, spool_node_shard_of(n, req->channel));
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
    }
    struct spool_op *op = op_new(n, OP_FOLLOW, spool_node_shard_of(n, channel));
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
        op_release(op);
    }
}

/* --- serving peers ------------------------------------------------------------------------ */

static void respond_status(struct spool_rpc_reply *reply, uint32_t method, int code,
                           const char *msg, uint64_t hint)
{
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    pack_status(&st, code, msg, hint);
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
                       local_leader(n, shard));
        return;
    }
    struct spool_op *op = op_new(n, OP_PUBLISH, shard);
    if (op == NULL) {
        spool__forward_publish__free_unpacked(f, NULL);
        respond_status(reply, SPOOL_METHOD_PUBLISH, SPOOL_ENOMEM, "out of memory", 0);
        return;
    }
    op->fwd = f;
    op->req = f->request;
    op->reply = reply;
    op->busy = true;
    op->item.req = op->req;
    op->item.done = batch_done_cb;
    spool_batch_submit(&sh->batch, &op->item);
}

static void waiter_timeout_cb(uv_timer_t *t)
{
    struct spool_op *op = t->data;
    struct spool_shard *sh = spool_node_local_shard(op->node, op->shard);
    if (sh == NULL || op->node->closing) {
        finish_error(op, SPOOL_ECLOSED, "node closing");
        return;
    }
    serve_read(op, sh);
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
    if (n->closing || sh == NULL || spool_store_last_seq(sh->store, r->channel) < r->min_seq) {
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_EBUSY,
                       sh ? "replica has not applied min_seq yet" : "no replica here",
                       local_leader(n, shard));
        spool__read_request__free_unpacked(r, NULL);
        return;
    }
    struct spool_op *op = op_new(n, OP_READ, shard);
    if (op == NULL) {
        spool__read_request__free_unpacked(r, NULL);
        respond_status(reply, SPOOL_METHOD_READ, SPOOL_ENOMEM, "out of memory", 0);
        return;
    }
    op->read = r;
    op->reply = reply;
    uint64_t wait = r->wait_ms > 30000 ? 30000 : r->wait_ms;
    if (wait > 0 && !r->backward && spool_store_last_seq(sh->store, r->channel) <= r->after_seq) {
        list_del(op);
        list_add(&n->waiters, op);
        uv_timer_start(&op->timer, waiter_timeout_cb, wait, 0);
        return;
    }
    serve_read(op, sh);
}

static void serve_leader_query(struct spool_node *n, const void *body, size_t len,
                               struct spool_rpc_reply *reply)
{
    Spool__LeaderQuery *q = spool__leader_query__unpack(NULL, len, body);
    Spool__LeaderReply r = SPOOL__LEADER_REPLY__INIT;
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    if (q == NULL || q->shard >= n->placement.shards) {
        pack_status(&st, SPOOL_EINVAL, "bad leader query", 0);
    } else {
        r.leader_id = local_leader(n, q->shard);
        pack_status(&st, 0, "", r.leader_id);
    }
    r.status = &st;
    uint8_t buf[256];
    size_t blen = spool__leader_reply__pack(&r, buf);
    spool_rpc_respond(reply, 0, NULL, buf, blen);
    if (q)
        spool__leader_query__free_unpacked(q, NULL);
}

void spool_router_request_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                             size_t len, struct spool_rpc_reply *reply)
{
    struct spool_node *n = arg;
    switch (method) {
    case SPOOL_METHOD_PUBLISH:
        serve_publish(n, body, len, reply);
        break;
    case SPOOL_METHOD_READ:
        serve_read_request(n, body, len, reply);
        break;
    case SPOOL_METHOD_LEADER:
        serve_leader_query(n, body, len, reply);
        break;
    default:
        spool_rpc_respond(reply, SPOOL_EINVAL, "unknown method", NULL, 0);
    }
}

void spool_router_message_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                             size_t len)
{
    SPOOL_DEBUG("router.unexpected_message", "from=%llu method=%u", (unsigned long long)from_node,
                method);
}

void spool_router_records_applied(struct spool_node *n, const char *channel)
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

void spool_router_close(struct spool_node *n)
{
    struct spool_op *lists[2] = {n->ops, n->waiters};
    for (int l = 0; l < 2; l++) {
        for (struct spool_op *op = lists[l]; op != NULL; op = op->next) {
            if (op->busy)
                continue; /* its batch item or RPC call fails as the shard / RPC layer closes */
            uv_timer_stop(&op->timer);
            uv_timer_start(&op->timer, l == 0 ? attempt_timer_cb : waiter_timeout_cb, 0, 0);
        }
    }
}

static void maybe_finish_close(struct spool_node *n)
{
    if (n->closing)
        spool_node_finish_close(n);
}
