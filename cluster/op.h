/*
 * The unit of work of the router (router.c) and of the serving side (serve.c): one publish, read
 * or follow, from its creation to its single completion. Internal to the cluster layer.
 *
 * Ownership: an op is on node->ops (or node->waiters, parked long polls) from spool_op_new()
 * until spool_op_release(), which closes its timer; the memory goes in the timer's close callback,
 * which also lets a closing node finish once the last op is gone. `busy` marks an op whose batch
 * item or RPC call is outstanding: that callback is then the op's one way forward. `reply` set
 * means the op serves a peer and completes by answering it; otherwise it completes through the
 * caller's callback (never when `canceled`). The requests of a served publish batch are not ops:
 * each is a batch item in its group's arena (spool_fwd_group_submit).
 */
#ifndef SPOOL_CLUSTER_OP_H
#define SPOOL_CLUSTER_OP_H

#include "cluster/node_int.h"
#include "cluster/pb_arena.h"

enum op_kind { OP_PUBLISH, OP_READ, OP_FOLLOW };

/* A served SPOOL_METHOD_PUBLISH_BATCH (serve.c): the peer's requests, each served by an op of
 * its own (or answered at once), and their answers collected here until the last one is in;
 * then one PublishBatchReply goes back and the group is freed. Everything the group holds (the
 * peer's bytes, which the ops' items point into, the decoded requests, the answers) lives in its
 * arena and goes with it at once. */
struct spool_fwd_group {
    struct spool_node *node;
    struct spool_rpc_reply *reply;
    struct spool_pb_arena arena;
    size_t n, left;
    Spool__PublishReply *replies;    /* [n] */
    Spool__PublishReply **ptrs;      /* [n] */
    Spool__ReplyStatus *status;      /* [n]; msg copied into the arena */
};
/* A group for a batch of `len` packed bytes (its arena's first block is sized for them); the
 * caller decodes into g->arena, then spool_fwd_group_start() for its n requests. */
struct spool_fwd_group *spool_fwd_group_new(struct spool_node *n, struct spool_rpc_reply *reply,
                                            size_t len);
/* Makes room for n answers; SPOOL_ENOMEM (then free the group with spool_fwd_group_free). */
int spool_fwd_group_start(struct spool_fwd_group *g, size_t n);
void spool_fwd_group_free(struct spool_fwd_group *g);
/* Queues request i (its packed bytes, valid while the group lives) on the shard's group commit
 * as an item allocated in the group's arena: no op, no timer. Its completion answers request i
 * (a peer's request never retries here). SPOOL_ENOMEM when the arena cannot grow. */
int spool_fwd_group_submit(struct spool_fwd_group *g, size_t i, struct spool_shard *sh,
                           uint32_t shard, const uint8_t *packed, size_t len);
/* Records request i's answer (seqs / dups copied); the last one sends the reply and frees. */
void spool_fwd_group_answer(struct spool_fwd_group *g, size_t i, int status, const char *msg,
                            uint64_t hint, const uint64_t *seqs, const bool *dups, size_t count);

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

    /* publish: the PublishRequest as protobuf-c packed it once, at the origin node; forwarded
     * and proposed as these bytes (never decoded again before the state machine applies it) */
    const uint8_t *packed;
    size_t packed_len;
    bool packed_owned;               /* malloc'd for this op (else in the op or its group) */
    size_t n_messages;               /* records in it: a reply must give as many seqs */
    struct spool_batch_item item;
    spool_publish_cb publish_cb;

    /* read / follow */
    Spool__ReadRequest *read;        /* owned */
    spool_read_cb read_cb;
    spool_follow_cb follow_cb;
    void *arg;
    const Spool__ReadReply *peer_reply; /* the peer's reply completing it (its ephemerals) */
};

struct spool_op *spool_op_new(struct spool_node *n, enum op_kind kind, uint32_t shard);
/* The same with `extra` bytes of the caller's in the same allocation (*extra_buf; freed with
 * the op): a local publish packs its request there. */
struct spool_op *spool_op_new_with(struct spool_node *n, enum op_kind kind, uint32_t shard,
                                   size_t extra, void **extra_buf);
void spool_op_release(struct spool_op *op);
/* Moves an op from node->ops to `list` (node->waiters). */
void spool_op_move(struct spool_op *op, struct spool_op **list);
void spool_op_set_last(struct spool_op *op, int code, const char *msg);

/* Completions: answer the peer or call the caller, then release. */
void spool_op_finish_publish(struct spool_op *op, int status, const struct spool_err *err,
                             const uint64_t *seqs, const bool *dups, size_t count);
void spool_op_finish_read(struct spool_op *op, int status, const struct spool_err *err,
                          Spool__Record **recs, size_t count, uint64_t first, uint64_t last);
void spool_op_finish_error(struct spool_op *op, int status, const char *msg);
/* Serves a read from the local replica's store and completes the op. */
void spool_op_serve_read(struct spool_op *op, struct spool_shard *sh);

void spool_op_pack_status(Spool__ReplyStatus *st, int code, const char *msg, uint64_t hint);
/* The leader of `shard` as this node knows it (local replica's view, else the last hint). */
uint64_t spool_op_local_leader(struct spool_node *n, uint32_t shard);

/* router.c: the batch completion shared by local and served publishes. */
void spool_router_batch_done_cb(struct spool_batch_item *item, int status,
                                const struct spool_err *err,
                                const struct spool_fsm_publish_result *res);

#endif
