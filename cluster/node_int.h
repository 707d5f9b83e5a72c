/*
 * Internals of a spool_node shared by the files that implement it (not for the gateway):
 *   node.c          lifecycle, configuration, status getters
 *   router.c        publish/read: local leader or forward over RPC, retries through elections
 *   serve.c         the RPC server side of forwarded requests (and parked long polls)
 *   op.{h,c}        the request object both use: lifecycle, completion, local reads
 *   subscription.c  local subscribers per channel, fed by the local state machine or, on nodes
 *                   without a replica of the channel's shard, by a long-poll follower
 *
 * Every operation a node has in flight (struct spool_op, router.c) is on node->ops so close can
 * fail them; every one completes exactly once, on the loop, never inside the call that began it.
 */
#ifndef SPOOL_CLUSTER_NODE_INT_H
#define SPOOL_CLUSTER_NODE_INT_H

#include "cluster/node.h"
#include "cluster/meta.h"
#include "cluster/placement.h"
#include "cluster/rpc.h"
#include "cluster/shard.h"
#include "cluster/transport.h"
#include "proto/cluster.pb-c.h"

/* RPC methods of the cluster layer (bodies in proto/cluster.proto). */
enum {
    SPOOL_METHOD_PUBLISH = 1, /* ForwardPublish -> PublishReply */
    SPOOL_METHOD_READ = 2,    /* ReadRequest -> ReadReply */
    SPOOL_METHOD_LEADER = 3,  /* LeaderQuery -> LeaderReply */
    SPOOL_METHOD_SLOT_MAP = 4, /* SlotMapQuery -> SlotMapReply */
    SPOOL_METHOD_EPHEMERAL = 5, /* one-way: a packed Record, live only (conversation_ephemeral.c) */
    SPOOL_METHOD_REBALANCE = 6, /* one-way, empty: run a leader-spreading pass (admin.c) */
    SPOOL_METHOD_MEMBERSHIP = 20,  /* MembershipRequest -> MembershipReply (membership.c) */
    SPOOL_METHOD_RECONFIGURE = 21, /* ReconfigureRequest -> ReconfigureReply (membership.c) */
    SPOOL_METHOD_PRESENCE_HEARTBEAT = 7, /* one-way: PresenceHeartbeat (presence_reaper.c) */
    SPOOL_METHOD_PUBLISH_BATCH = 8, /* ForwardPublishBatch -> PublishBatchReply (router.c) */
    SPOOL_METHOD_SLOT_EXPORT = 22, /* SlotExportRequest -> SlotReply (reshard.c, polled) */
    SPOOL_METHOD_SLOT_IMPORT = 23, /* SlotImportRequest -> SlotReply (reshard.c) */
};

#define SPOOL_READ_DEFAULT_LIMIT 100
#define SPOOL_READ_MAX_LIMIT 1000
#define SPOOL_READ_MAX_BYTES (4u << 20) /* a read page stops past this (at least one record) */
#define SPOOL_RPC_MAX_FRAME (16u << 20)

struct spool_op;
struct spool_topic;
struct spool_membership;
struct spool_reshard;

/* The resharding state of the map this node routes with (admin status, any node). */
struct spool_reshard_view {
    bool running;           /* change == SPOOL_CHANGE_SHARDS */
    uint32_t shards_before;
    uint32_t slots_left;    /* slots whose shard is not their target yet */
    uint32_t move_phase, move_from, move_to, move_count;
};

/* What a node without replicas knows of the cluster, refreshed over RPC (remote_view.c): the
 * slot map (from a storage node's metadata replica) and every shard's leader. */
struct spool_remote_view {
    uv_timer_t timer;
    uint64_t epoch;     /* of the adopted slot map; 0 = none yet */
    unsigned attempt;   /* rotates over the storage nodes asked */
    unsigned in_flight; /* calls not answered yet: a new round waits for them */
    bool started;
    bool map_now;       /* a request met SPOOL_EMOVED: ask for the map on the next tick */
};

struct spool_node {
    uv_loop_t *loop;
    struct spool_node_config cfg; /* strings point at the copies below */
    char *data_dir, *cluster_listen, *peers;
    struct spool_placement placement;
    struct spool_mux *mux;
    struct spool_rpc *rpc;
    struct spool_meta *meta;     /* the metadata group's local replica (NULL: gateway-only) */
    struct spool_remote_view view; /* gateway-only nodes */
    struct spool_shard **shards; /* [placement.shards]; NULL where no local replica */
    uint64_t *leader_hint;       /* [placement.shards]; last leader learned from peers */
    struct spool_op *ops;        /* in flight (router.c) */
    struct spool_fwd_batch *fwd_pending; /* publishes to forward at the end of this turn (router.c) */
    uv_idle_t fwd_idle;          /* sends fwd_pending (router.c; initialised on first use) */
    bool fwd_idle_init;
    uint64_t fwd_calls, fwd_publishes; /* SPOOL_METHOD_PUBLISH_BATCH calls sent, publishes in them */
    struct spool_topic *topics;  /* channels with local subscribers (subscription.c) */
    spool_record_cb fanout_cb;   /* spool_node_set_fanout_observer (subscription.c) */
    void *fanout_arg;
    spool_record_cb ephemeral_cb; /* spool_node_set_ephemeral_cb (conversation_ephemeral.c) */
    void *ephemeral_arg;
    struct spool_eph_ring *eph;   /* ephemerals kept for gateway-only followers (same file) */
    uv_timer_t expiry_timer;      /* turn lease expiry proposals (conversation_turn.c) */
    bool expiry_started;
    struct spool_topic **topic_buckets; /* hash index over `topics` by channel */
    size_t n_topic_buckets, n_topics;
    uv_timer_t rebalance_timer;  /* periodic leader-spreading passes (admin.c) */
    bool rebalance_started;
    struct spool_presence_reaper *presence_reaper; /* heartbeats, dead nodes' members leave */
    struct spool_op *waiters;    /* parked long-poll reads served for peers (router.c) */
    struct spool_membership *membership; /* membership changes driven here (membership.c) */
    struct spool_reshard *reshard;       /* the resharding driver and export jobs (reshard.c) */
    struct spool_reshard_view reshard_view;
    uint64_t epoch_mark;         /* the map epoch local replicas follow, on disk (replicas.c) */
    uint32_t view_change;        /* the adopted map's membership change (gateway-only status) */
    uint64_t view_change_node;
    bool closing;
    int pending_close;   /* live ops (router.c) + the closing stages below */
    uint32_t shards_open; /* shards and the metadata replica still closing */
    bool rpc_closed, mux_closed;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* conversation_ephemeral.c: an ephemeral record sent by a peer */
void spool_node_ephemeral_arrived(struct spool_node *n, uint64_t from, const void *body, size_t len);
/* Serving a follow poll of a gateway-only node (ReadRequest.ephemerals): true when the ring
 * holds ephemerals of the channel after the poll's position (answer now, do not park; a poll
 * whose position is another node's is moved to this node's: since its last answer there, or
 * its arrival for a new follower); fill
 * puts them (and the new position) into the reply, done frees them after it is sent. */
bool spool_eph_pending(struct spool_node *n, Spool__ReadRequest *req);
void spool_eph_fill(struct spool_node *n, Spool__ReadRequest *req, Spool__ReadReply *r);
void spool_eph_fill_done(Spool__ReadReply *r);
/* Following from a gateway-only node: ask for ephemerals from where `pos` says (on the poll op
 * about to be sent), and deliver those of a reply to the gateway, moving `pos` on. */
struct spool_eph_pos {
    uint64_t node, seq;
    int64_t at_ms;     /* wall clock of the last answer (of the topic's start before one) */
    uint64_t seen[64]; /* hashes of the last ephemerals delivered (a replica switch replays) */
    unsigned n_seen;
};
/* A new topic's position: no replica's yet, ephemerals wanted from now (the attach). */
void spool_eph_pos_start(struct spool_eph_pos *pos);
void spool_eph_follow_ask(struct spool_node *n, struct spool_op *op, const struct spool_eph_pos *pos);
void spool_eph_followed(struct spool_node *n, struct spool_eph_pos *pos, const Spool__ReadReply *reply);
/* Frees the ring (closing). */
void spool_eph_close(struct spool_node *n);

/* conversation_turn.c: the leader proposes an "expire" record when a turn lease ends */
int spool_expiry_start(struct spool_node *n, struct spool_err *err);
/* Stops the timer; counts in pending_close until it is closed. */
void spool_expiry_close(struct spool_node *n);
/* conversation_turn.c: the turn of a local replica's state machine as one record (turn read) */
int spool_turn_read_local(struct spool_node *n, struct spool_shard *sh, const char *channel,
                          Spool__Record ***recs, size_t *count);

/* admin.c: leader spreading */
int spool_rebalancer_start(struct spool_node *n, struct spool_err *err);
/* Stops the periodic passes; counts in pending_close until the timer is closed. */
void spool_rebalancer_close(struct spool_node *n);
/* A peer asked for a pass (SPOOL_METHOD_REBALANCE). */
void spool_node_rebalance_arrived(struct spool_node *n, uint64_t from);

/* presence_reaper.c (cluster/presence_reaper.h) */
int spool_presence_reaper_start(struct spool_node *n, struct spool_err *err);
/* Stops it; counts in pending_close until its timer is closed. */
void spool_presence_reaper_close(struct spool_node *n);
void spool_node_presence_heartbeat_arrived(struct spool_node *n, uint64_t from, const void *body,
                                           size_t len);

/* replicas.c: which shard replicas this node holds */
uint64_t spool_replicas_load_mark(const char *data_dir);
int spool_replicas_start(struct spool_node *n, struct spool_err *err);
/* Opens and retires local replicas to match the applied map (epoch >= 2). */
void spool_replicas_reconcile(struct spool_node *n);
/* This node's cluster address: its map entry, else (joining) the bound cluster port. */
const char *spool_node_self_address(const struct spool_node *n);

/* membership.c: adding and removing storage nodes (cluster/admin.h) */
int spool_membership_start(struct spool_node *n, struct spool_err *err);
/* Stops the driver; counts in pending_close until its timer is closed. */
void spool_membership_close(struct spool_node *n);
void spool_membership_serve(struct spool_node *n, uint32_t method, const void *body, size_t len,
                            struct spool_rpc_reply *reply);

/* reshard.c: adding shards (docs/resharding.md) */
int spool_reshard_start(struct spool_node *n, struct spool_err *err);
/* Stops the driver and abandons export jobs; counts in pending_close until all is released. */
void spool_reshard_close(struct spool_node *n);
void spool_reshard_serve(struct spool_node *n, uint32_t method, const void *body, size_t len,
                         struct spool_rpc_reply *reply);
/* Refreshes n->reshard_view from an adopted map. */
void spool_reshard_view_update(struct spool_node *n, const struct spool_slot_map *map);
/* SPOOL_EMOVED met: this node's map is older than the request's target's (gateway-only nodes
 * fetch the map at once). */
void spool_reshard_map_stale(struct spool_node *n);

/* serve.c: requests from peers */
void spool_serve_request_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                            size_t len, struct spool_rpc_reply *reply);
void spool_serve_message_cb(void *arg, uint64_t from_node, uint32_t method, const void *body,
                            size_t len);
/* New records applied locally: wakes parked long-poll reads of their channel. */
void spool_serve_records_applied(struct spool_node *n, const char *channel);
/* An ephemeral record of `channel` arrived: wakes the parked polls that asked for them. */
void spool_serve_ephemeral_arrived(struct spool_node *n, const char *channel);
/* Answers every parked long-poll read (closing). */
void spool_serve_close(struct spool_node *n);

/* op.c */
/* Reads `channel` from a local store: deep copies of the records (free with spool_records_free). */
int spool_router_read_local(struct spool_node *n, struct spool_store *store,
                            const Spool__ReadRequest *req, Spool__Record ***recs, size_t *count,
                            struct spool_err *err);
void spool_records_free(Spool__Record **recs, size_t n);

/* router.c */
/* Fails every idle operation in flight with SPOOL_ECLOSED (on the loop). */
void spool_router_close(struct spool_node *n);
/* A long-poll read (used by subscription.c for remote channels): completes once. */
typedef void (*spool_follow_cb)(void *arg, int status, const struct spool_err *err,
                                const Spool__ReadReply *reply);
struct spool_op *spool_router_follow(struct spool_node *n, const char *channel, uint64_t after_seq,
                                     bool anchor, spool_follow_cb cb, void *arg);
void spool_router_cancel(struct spool_op *op);
/* True when `channel`'s slot is fenced or dropped on this replica (resharding moves it away):
 * reads of it are refused with SPOOL_EMOVED, as its publishes are. */
bool spool_router_slot_moving(struct spool_shard *sh, const char *channel);

/* subscription.c */
void spool_subs_records_cb(void *arg, const Spool__Record *const *recs, size_t n);
void spool_subs_restored_cb(void *arg);
void spool_subs_close(struct spool_node *n);
/* The topics of a shard whose local replica goes away switch to a long-poll chain. */
void spool_subs_replica_gone(struct spool_node *n, uint32_t shard);
/* The slot table changed (resharding): topics of moved slots follow their new shard. */
void spool_subs_slots_moved(struct spool_node *n);

/* remote_view.c (gateway-only nodes) */
int spool_remote_view_start(struct spool_node *n, struct spool_err *err);
/* Stops refreshing; counts in pending_close until the timer is closed. */
void spool_remote_view_close(struct spool_node *n);
bool spool_remote_view_ready(const struct spool_node *n);

/* node.c */
/* Routes with `map` from now on (false, logged, if it does not fit the configured shards). */
bool spool_node_adopt_slot_map(struct spool_node *n, const struct spool_slot_map *map);
/* A shard that was retiring when the node began closing has closed. */
void spool_node_shard_closed(struct spool_node *n);
/* Called whenever a part of a closing node finished closing; frees it after the last one. */
void spool_node_finish_close(struct spool_node *n);
struct spool_shard *spool_node_local_shard(const struct spool_node *n, uint32_t shard);
/* The node a request for `shard` should go to next: the known leader, else a replica picked by
 * `attempt` (never this node). 0 when there is nobody to ask. */
uint64_t spool_node_route_target(struct spool_node *n, uint32_t shard, unsigned attempt);

#endif
