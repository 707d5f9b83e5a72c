/*
 * Group commit for one shard led by this node: every publish submitted during one loop turn
 * becomes part of ONE Raft entry (one raft_apply, one buffer, one fsync on each replica), capped
 * at SPOOL_BATCH_MAX_ENTRY_BYTES per entry (beyond that the turn's publishes are split over
 * several entries, each still applied as one atomic store batch).
 *
 * Flow: spool_batch_submit() queues an item and arms a zero-delay timer; the timer callback (the
 * next loop turn) frames the queued requests (already packed: entry_pack.h concatenates them)
 * into an Entry stamped with the leader's wall clock and proposes it. At most SPOOL_BATCH_MAX_IN_FLIGHT entries of a shard are proposed and not yet
 * applied: while that many are out, publishes queue, and the apply callback of one arms the
 * timer again, so under load each entry carries what arrived during the previous one's commit
 * (fewer, larger entries: less CPU per message in raft, framing, fsync and apply). When nothing
 * is in flight a publish is proposed on the next loop turn, as without the cap.
 * Each item completes exactly once through item->done:
 *   - status 0 with its spool_fsm_publish_result, from the apply callback once committed+applied;
 *   - SPOOL_ENOTLEADER when raft_apply refused or leadership was lost before commit (the entry
 *     may still commit under the next leader: clients that need exactly-once give messages ids);
 *   - SPOOL_ECLOSED when the batch or the Raft instance is closing.
 * `done` is never called from inside spool_batch_submit(), and a failed item is never re-proposed
 * here: the owner (cluster/router.c) decides, on a later loop turn, where it goes next.
 *
 * Control items (item->control, resharding: cluster/shard.h spool_shard_propose_control) go
 * through the same queue and the same one-entry-in-flight rule, but alone in their entry: `req`
 * is then already packed Entry fields (slot_fence, imports) that follow the entry's timestamp,
 * and `done` gets status 0 with a NULL result once the entry applied here. A control item bigger
 * than SPOOL_BATCH_MAX_CONTROL_BYTES fails with SPOOL_ELIMIT.
 */
#ifndef SPOOL_CLUSTER_BATCH_H
#define SPOOL_CLUSTER_BATCH_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/fsm.h"
#include "common/err.h"
#include "proto/entry.pb-c.h"

#define SPOOL_BATCH_MAX_ENTRY_BYTES (1u << 20)
#define SPOOL_BATCH_MAX_IN_FLIGHT 1 /* proposed entries awaiting their apply, per shard */
/* A control entry's fields: one record of the store's largest (64 MiB) and room for its
 * headers; an export part should stay near SPOOL_BATCH_MAX_ENTRY_BYTES. */
#define SPOOL_BATCH_MAX_CONTROL_BYTES ((64u << 20) + (64u << 10))

struct spool_batch_item;
struct spool_batch_proposal;
typedef void (*spool_batch_done_cb)(struct spool_batch_item *item, int status,
                                    const struct spool_err *err,
                                    const struct spool_fsm_publish_result *res);
struct spool_batch_item {
    struct spool_batch_item *next;
    const uint8_t *req; /* a packed PublishRequest, owned by the submitter, valid until done */
    size_t req_len;
    spool_batch_done_cb done;
    bool control;       /* req is packed Entry fields, proposed alone (see above) */
};

struct spool_batch {
    uv_timer_t flush_timer;
    struct raft *raft;
    struct spool_batch_item *head, *tail;
    struct spool_batch_proposal *in_flight; /* proposed, apply callback still to run */
    size_t n_in_flight;                     /* entries on in_flight */
    bool closing;
    bool retention_due;      /* the next entry carries a retention tick */
    uint64_t entries, items; /* counters */
    void (*close_cb)(struct spool_batch *b);
};

int spool_batch_init(struct spool_batch *b, uv_loop_t *loop, struct raft *raft);
void spool_batch_submit(struct spool_batch *b, struct spool_batch_item *item);
/* Asks for a retention tick (the leader's clock) in the next entry; fire and forget. */
void spool_batch_retention(struct spool_batch *b);
/* Gives the result of the entry at `index` to the proposal of this batch waiting for it, which
 * then owns it (spool_fsm.take_result; arg is the batch). False when no proposal waits. */
bool spool_batch_take_result(void *arg, uint64_t index, struct spool_fsm_result *r);
/* Fails queued items with SPOOL_ECLOSED and closes the timer; items already proposed complete
 * through their apply callbacks (raft_close cancels them). cb runs once the timer is closed. */
void spool_batch_close(struct spool_batch *b, void (*cb)(struct spool_batch *b));

#endif
