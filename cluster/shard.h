/*
 * One shard replica on this node: a Raft group (libraft with raft_uv storage in
 * <data>/shard-<n>/raft and a mux transport on the node's cluster port), its state machine
 * (cluster/fsm.h) applying into the store in <data>/shard-<n>/store, and the group-commit queue
 * (cluster/batch.h) used while this replica leads.
 *
 * Lifecycle: spool_shard_init() opens the store, starts Raft and bootstraps the group with the
 * configured voters if the Raft directory is pristine (libraft refuses to bootstrap anything
 * else, so restarting on an existing directory simply resumes); with no voters (a replica a
 * membership change adds, cluster/replicas.c) it starts empty and waits for the leader.
 * spool_shard_close() first hands leadership to another voter (bounded by one election
 * timeout, libraft's own bound), then
 * closes Raft, the transport, the state machine and the store (synced), and calls cb. (The
 * transfer is bounded by our own timer too: a leader that lost its quorum steps down and
 * libraft then keeps the transfer pending until a new leader appears, possibly never.)
 */
#ifndef SPOOL_CLUSTER_SHARD_H
#define SPOOL_CLUSTER_SHARD_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/batch.h"
#include "cluster/fsm.h"
#include "cluster/placement.h"
#include "cluster/transport.h"
#include "storage/store.h"

#define SPOOL_RETENTION_TICK_MS 30000

struct spool_shard_config {
    uint32_t id;
    uint64_t node_id;
    const char *node_address;
    const char *data_dir;                 /* the node's; the shard uses <data_dir>/shard-<id> */
    const struct spool_peer *voters;      /* the group's bootstrap configuration */
    size_t n_voters;
    uint64_t snapshot_threshold, snapshot_trailing;
    uint64_t election_timeout_ms, heartbeat_ms, dedup_window_ms;
    struct spool_conv_config conv; /* AI conversation state limits (cluster/conversation.h) */
    struct spool_store_config store;      /* dir is set here */
    spool_fsm_records_cb on_records;      /* state machine notifications (may be NULL) */
    spool_fsm_restored_cb on_restored;
    void *cb_arg;
};

struct spool_shard {
    uint32_t id;
    uint64_t node_id;
    struct spool_store *store;
    struct spool_fsm fsm;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    struct spool_batch batch;
    struct raft_transfer transfer;
    uv_timer_t transfer_timer; /* bounds the transfer: libraft may never call back */
    struct raft_transfer move; /* spool_shard_transfer (leader spreading, cluster/admin.c) */
    bool moving;               /* `move` is pending */
    struct raft_change change; /* spool_shard_reconfigure (membership changes) */
    bool changing;             /* `change` is pending */
    void (*change_cb)(void *arg, int status);
    void *change_arg;
    uv_timer_t retention_timer; /* while leading: a retention tick every SPOOL_RETENTION_TICK_MS */
    struct raft_barrier read_barrier; /* spool_shard_leader_reads_ready: this term's first */
    bool read_barrier_pending;
    raft_term read_barrier_term;
    raft_term reads_ready_term; /* leader reads are served in this term (0: none yet) */
    uint64_t election_timeout_ms;
    bool closing, raft_closing;
    int pending_close; /* raft + batch + 2 timers */
    void (*close_cb)(struct spool_shard *s);
    void *data;        /* owner's */
};

/* Allocates the shard; on failure *out is NULL (a half-started Raft instance is released by the
 * loop's next iterations). */
int spool_shard_init(struct spool_shard **out, uv_loop_t *loop, struct spool_mux *mux,
                     const struct spool_shard_config *cfg, struct spool_err *err);
/* cb runs on the loop once everything is released; the shard is freed right after it. */
void spool_shard_close(struct spool_shard *s, void (*cb)(struct spool_shard *s));

bool spool_shard_is_leader(struct spool_shard *s);
/* True when this replica leads and has applied everything committed before its term, so a read
 * here sees every acknowledged publish. A new leader is not there until the barrier libraft
 * appends at election is applied: the first call of a term issues a raft_barrier and answers
 * false until it completes (callers answer "busy" and their router retries). */
bool spool_shard_leader_reads_ready(struct spool_shard *s);
/* Hands this replica's leadership to voter `to` (leader spreading): 0 once libraft accepted
 * it, SPOOL_EBUSY while another transfer of this shard is pending, SPOOL_ENOTLEADER when this
 * replica does not lead (or is closing), SPOOL_EINVAL if libraft refused it. */
int spool_shard_transfer(struct spool_shard *s, uint64_t to);
/* One step towards "the group's voters are exactly `voters`" (membership changes, run on the
 * leader): adds (raft_add, then raft_assign RAFT_VOTER, which libraft starts only once the new
 * server caught up) come before removals (raft_remove), one configuration change at a time, so
 * every publish acknowledged meanwhile is on a majority of either configuration. Returns:
 *   0 with *done = true: the configuration already matches;
 *   0 with *done = false: a change started; cb(arg, status), unless NULL, runs once when it
 *     is committed (status 0) or failed; call again afterwards for the next step;
 *   SPOOL_ENOTLEADER: not the leader (when this replica is the one to remove, it has started
 *     handing its leadership to a remaining voter: ask the new leader);
 *   SPOOL_EBUSY: a change or transfer is pending (libraft allows one at a time). */
int spool_shard_reconfigure(struct spool_shard *s, const struct spool_peer *voters, size_t n,
                            bool *done, void (*cb)(void *arg, int status), void *arg);
/* The leader this replica knows of (0 = none). */
uint64_t spool_shard_leader(struct spool_shard *s);

/* Resharding (cluster/slot_move.h): proposes one entry made of `fields` (already packed Entry
 * fields, e.g. from spool_slot_fence_pack or spool_slot_export_next; the shard adds
 * timestamp_ms and the proposal nonce) on this replica, which must lead. It goes through the
 * group-commit queue (cluster/batch.c: one entry in flight per shard), alone in its entry. The
 * shard copies `fields`.
 * Returns 0, and then `cb` runs exactly once, never from inside this call:
 *   status 0 once the entry is applied here (the state machine took it: fsm.h);
 *   SPOOL_ENOTLEADER if this replica does not lead, leadership is lost or the proposal fails
 *     (the entry may still commit under the next leader: control entries are idempotent);
 *   SPOOL_ECLOSED when the shard closes first;
 *   SPOOL_ELIMIT if `len` exceeds SPOOL_BATCH_MAX_CONTROL_BYTES.
 * Or returns SPOOL_ENOMEM / SPOOL_ECLOSED (shard closing) with `err` set, and `cb` never runs. */
typedef void (*spool_shard_control_cb)(void *arg, int status);
int spool_shard_propose_control(struct spool_shard *sh, const uint8_t *fields, size_t len,
                                spool_shard_control_cb cb, void *arg, struct spool_err *err);

#endif
