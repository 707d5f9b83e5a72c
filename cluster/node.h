/*
 * A Spool node: the cluster layer's face to the gateway.
 *
 * A node owns, on one libuv loop: the cluster port (every Raft group's traffic and the internal
 * RPC share it, see cluster/transport.h), the replicas of the shards placed on it (one Raft group
 * each, applying into a storage/store.h store), and a replica of the metadata group that holds
 * the slot -> shard map. A gateway-only node (`gateway_only`) holds no replicas and reaches every
 * shard over RPC.
 *
 * The gateway calls the functions below without knowing where a channel's shard lives: the node
 * routes each request to the shard's leader (forwarding over RPC when that is another node),
 * waits (bounded by forward_timeout_ms) through elections, and completes each request exactly
 * once through its callback, always on the loop thread and never from inside the call itself.
 *
 * Semantics the gateway relies on:
 * - publish: the callback fires once the entry is committed (fsynced on a majority of the shard's
 *   replicas) and applied, with the channel seq assigned to each message. A message whose `id`
 *   (client-supplied message id) was already published on the channel within the dedup window is
 *   not stored again: its original seq is returned and `duplicate[i]` is set.
 * - subscribe: delivers every record of the channel committed after the subscription started, in
 *   seq order, each exactly once, whichever node the shard's leader is on and across leader
 *   changes. To attach "from seq S" the gateway subscribes first, then reads history after S,
 *   and drops live records it has already delivered (seqs are dense, so the join is exact).
 * - read: history served by any replica that has applied at least what the caller has been
 *   acknowledged (read-your-writes: the node reads from the leader unless a local replica has
 *   applied at least `min_seq`).
 */
#ifndef SPOOL_CLUSTER_NODE_H
#define SPOOL_CLUSTER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "proto/record.pb-c.h"
#include "storage/store.h"

struct spool_node;
struct spool_sub;

struct spool_node_config {
    uint64_t id;
    const char *data_dir;
    const char *cluster_listen; /* host:port this node listens on for peers */
    const char *peers;          /* "id@host:port,..." including this node; "" = single node */
    uint32_t shards;            /* shard count at bootstrap */
    uint32_t replicas;          /* replicas per shard (capped at the number of storage nodes) */
    bool gateway_only;
    bool join;                  /* a new storage node: never bootstrap, wait to be added to the
                                 * running cluster (`peers` = nodes to contact; docs/cluster.md) */
    uint64_t snapshot_threshold;
    uint64_t snapshot_trailing;
    uint64_t election_timeout_ms;
    uint64_t heartbeat_ms;
    uint64_t forward_timeout_ms;
    uint64_t dedup_window_ms;
    uint64_t conv_max_entries; /* cached AI message/turn states per shard (0 = 65536) */
    uint64_t conv_scan_max;    /* records read to rebuild one such state (0 = 100000) */
    uint64_t rebalance_interval_ms; /* leader-spreading passes (cluster/admin.h); 0 = off */
    uint64_t presence_node_timeout_ms; /* a silent node's presence members leave after
                                        * (cluster/presence_reaper.h); 0 = never */
    uint64_t home_id;           /* with home_address: a peer whose address is fixed, whatever
                                 * the slot map says (a worker loop's own process's storage node,
                                 * gateway/workers.c: the map may hold a previous run's port) */
    char home_address[256];
    struct spool_store_config store; /* dir is set per shard by the node; tail_cache_bytes is
                                      * for the whole node, divided among its local shards */
};

/* Sets every field to its default (call first, then override); spool_node_init also gives the
 * defaults to fields left zero. */
void spool_node_config_defaults(struct spool_node_config *cfg);

int spool_node_init(struct spool_node **out, uv_loop_t *loop, const struct spool_node_config *cfg,
                    struct spool_err *err);
/* Graceful stop: transfers this node's leaderships, stops Raft, syncs and closes stores, then
 * calls cb (on the loop) after which the node is freed. */
void spool_node_close(struct spool_node *n, void (*cb)(void *arg), void *arg);

/* True once this node can route every slot: it knows the slot map (its metadata replica applied
 * one, or a storage node sent it one) and the leader of every shard it serves requests for
 * (local replicas' view; a gateway-only node asks the replicas over RPC). */
bool spool_node_ready(const struct spool_node *n);

/* --- publish ------------------------------------------------------------------------------- */

/* Called once. On success status = 0 and seqs[i] / duplicate[i] describe msgs[i]. */
typedef void (*spool_publish_cb)(void *arg, int status, const struct spool_err *err,
                                 const uint64_t *seqs, const bool *duplicate, size_t n);
/* Publishes `n` messages to `channel` as one atomic entry. Each msgs[i] supplies action, ref_seq,
 * client_id, id, name, data, content_type, extras, connection_id; channel, seq and timestamp are
 * assigned by the shard leader. The node copies the messages before returning. */
int spool_node_publish(struct spool_node *n, const char *channel, const Spool__Record *const *msgs,
                       size_t count, spool_publish_cb cb, void *arg);

/* --- history -------------------------------------------------------------------------------- */

struct spool_read_req {
    const char *channel;
    uint64_t after_seq;  /* forward: records with seq > after_seq */
    uint64_t before_seq; /* backward: records with seq < before_seq (0 = from the newest) */
    bool backward;
    size_t limit;        /* 0 = the node's default page size */
    uint64_t min_seq;    /* read-your-writes: the replica read must have applied this seq */
    bool leader;         /* read at the shard's leader, which has applied every write that was
                          * acknowledged (for reads whose caller knows no seq to wait for) */
    bool turn;           /* instead of records: the channel's turn (set leader too), one "ai.turn"
                          * record (client_id = holder, turn_epoch, expires_ms) or none when
                          * nobody holds it (cluster/conversation_turn.c) */
};
/* Records in the order read (ascending forward, descending backward); valid during the call.
 * first_seq / last_seq describe the channel as the replica saw it. A page may hold fewer than
 * `limit` records (at most 1000, and it stops after ~4 MiB of records): page on with last_seq. */
typedef void (*spool_read_cb)(void *arg, int status, const struct spool_err *err,
                              const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                              uint64_t last_seq);
int spool_node_read(struct spool_node *n, const struct spool_read_req *req, spool_read_cb cb,
                    void *arg);

/* --- live ----------------------------------------------------------------------------------- */

/* Each committed record of the channel, in seq order, exactly once; `rec` is valid during the
 * call. The node shares one upstream subscription per channel among all local subscribers. */
typedef void (*spool_record_cb)(void *arg, const Spool__Record *rec);
int spool_node_subscribe(struct spool_node *n, const char *channel, spool_record_cb cb, void *arg,
                         struct spool_sub **out);
/* Allowed from inside the sub's own (or another sub's) record callback. Every spool_sub of a node
 * becomes invalid once spool_node_close() starts: do not unsubscribe after that. */
void spool_node_unsubscribe(struct spool_sub *sub);
/* Called once per record the node fans out to its local subscribers of a channel (not once per
 * subscriber), before them; for delivery-latency metrics. NULL turns it off. */
void spool_node_set_fanout_observer(struct spool_node *n, spool_record_cb cb, void *arg);

/* --- ephemeral records (cluster/conversation_ephemeral.c) ----------------------------------- */

/* Sends `rec` (channel set; never stored, no seq) to every other storage node, best effort; the
 * caller delivers it to its own local consumers. 0, SPOOL_ECLOSED or SPOOL_ENOMEM. */
int spool_node_ephemeral(struct spool_node *n, const Spool__Record *rec);
/* Who receives the ephemeral records peers send (the gateway); NULL to stop. */
void spool_node_set_ephemeral_cb(struct spool_node *n, spool_record_cb cb, void *arg);

/* --- status and metrics --------------------------------------------------------------------- */

struct spool_shard_status {
    uint32_t shard;
    uint64_t leader_id;   /* 0 = unknown */
    bool local_replica;
    int raft_state;       /* RAFT_LEADER / RAFT_FOLLOWER / RAFT_CANDIDATE / 0 when no replica */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t proposals;          /* Raft entries this replica proposed as leader (group commit) */
    uint64_t proposed_publishes; /* publish calls those entries carried */
    struct spool_store_stats store;
};
uint32_t spool_node_shard_count(const struct spool_node *n);
void spool_node_shard_status(const struct spool_node *n, uint32_t shard, struct spool_shard_status *out);
/* The epoch of the slot map this node routes with: its metadata replica's, or on a gateway-only
 * node the one a storage node sent it; 0 until then (routing uses the configuration-derived
 * map meanwhile, which is what epoch 1 holds). */
uint64_t spool_node_slot_map_epoch(const struct spool_node *n);
/* The shard that currently owns `channel`. */
uint32_t spool_node_shard_of(const struct spool_node *n, const char *channel);
/* The host:port this node's cluster port is bound to (the real port when configured as 0). */
const char *spool_node_cluster_address(const struct spool_node *n);

#endif
