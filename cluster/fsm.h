/*
 * The state machine of a shard's Raft group: applies committed entries (proto/entry.proto) into
 * the shard's store (storage/store.h).
 *
 * Apply, for the entry at Raft index i:
 *   - i <= spool_store_applied_index(): already in the store (libraft replays its log after a
 *     restart from the last snapshot): skipped, no result, no notification.
 *   - otherwise every publish request gets consecutive seqs after the channel's last seq and the
 *     entry's timestamp; a message whose `id` was stored on the channel within the dedup window
 *     (cluster/dedup.h) is not stored again and reports its original seq with duplicate set.
 *     All records of the entry go to the store in one spool_store_append_batch (or
 *     spool_store_mark_applied when there are none), then `on_records` sees them (every replica
 *     applies, so every replica can feed its local subscribers).
 *   - the result (struct spool_fsm_result, owned by whoever receives it: the leader's apply
 *     callback, see cluster/batch.h) tells each request its seqs.
 *
 * Resharding (control entries, cluster/slot_move.h; proposed alone by
 * spool_shard_propose_control). An entry with slot_fence and/or imports carries nothing else
 * (publishes in it are refused with SPOOL_EINVAL, a retention tick in it is ignored):
 *   - slot_fence{slots, fenced = true}: publishes to channels of those slots are refused from
 *     this entry on (status SPOOL_EMOVED, nothing stored, the rest of an entry applies);
 *     with drop as well, every channel of those slots is deleted from the store (its last_seq
 *     stays) and the slots read as dropped (readers answer SPOOL_EMOVED);
 *     fenced = true without drop leaves the dropped mark as it was; fenced = false clears both
 *     marks (the slots are accepted again).
 *     The marks are part of the replicated state: the store keeps them (its shard state), so
 *     they survive restart, replay, snapshots and snapshot installs.
 *   - imports (ChannelImport): spool_store_import (storage/store.h) stores the records with
 *     their seqs, timestamps and fields, skipping what is already here, restarting a channel
 *     with nothing retained at the copy's base, carrying the retention override. Derived state
 *     follows: ids of imported records no older than the dedup window before the entry's
 *     timestamp enter the dedup table (a re-sent id is still a duplicate on the new shard),
 *     imported presence records enter the presence index, the conversation cache is reset.
 *     Imported records are not passed to on_records (nobody subscribed to them here yet).
 *   After a drop the presence index is rebuilt and the conversation cache reset.
 *
 * Snapshots are the store's own stream (spool_store_sync first, so the store is durable before
 * libraft drops log entries); restore skips a snapshot the store has already passed.
 *
 * The Raft index of the entry being applied is not an argument of raft_fsm.apply; with libraft
 * it is raft_last_applied() + 1 (only command entries reach the FSM), which spool_fsm reads from
 * the `raft` pointer the shard sets. spool_fsm_apply_entry() takes it explicitly (tests).
 */
#ifndef SPOOL_CLUSTER_FSM_H
#define SPOOL_CLUSTER_FSM_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/conversation.h"
#include "cluster/dedup.h"
#include "cluster/presence_index.h"
#include "cluster/slot_move.h"
#include "common/err.h"
#include "proto/entry.pb-c.h"
#include "proto/record.pb-c.h"
#include "storage/arena.h"
#include "storage/store.h"

struct spool_fsm_publish_result {
    int status;       /* 0, or a SPOOL_E* code for a request the state machine refused */
    char reason[SPOOL_CONV_REASON_MAX]; /* why it was refused ("" = a generic refusal) */
    size_t n;
    uint64_t *seqs;
    bool *duplicate;
};

struct spool_fsm_result {
    uint64_t index;
    uint64_t proposal; /* the entry's proposal nonce (Entry.proposal) */
    size_t n;
    struct spool_fsm_publish_result *publishes; /* one per PublishRequest of the entry */
};
void spool_fsm_result_free(struct spool_fsm_result *r);

/* New records stored by one entry, in the order stored (valid during the call). */
typedef void (*spool_fsm_records_cb)(void *arg, const Spool__Record *const *recs, size_t n);
/* The store was replaced by a snapshot (records may have appeared without on_records). */
typedef void (*spool_fsm_restored_cb)(void *arg);

struct spool_fsm {
    struct raft_fsm raft_fsm; /* what raft_init takes; raft_fsm.data = this */
    struct raft *raft;        /* the group, for the applied index (NULL when driven directly) */
    struct spool_store *store;
    struct spool_dedup dedup;
    struct spool_conv *conv; /* AI conversation rules (cluster/conversation.h) */
    struct spool_pindex *presence; /* present members by host (cluster/presence_index.h) */
    struct spool_arena arena;  /* the entry being applied, decoded, and its scratch tables */
    spool_fsm_records_cb on_records;
    spool_fsm_restored_cb on_restored;
    void *cb_arg;
    /* Hands the result of the entry at `index` to whoever proposed it here; returns true when it
     * took ownership, false when nobody waits (followers, earlier leaders' entries: the result
     * is freed). Results never travel through libraft's apply result: libraft 0.22 may forget a
     * request on stepping down before the entry it proposed is applied, and would then drop the
     * result (a leak) and report the committed entry as failed. NULL = return the result from
     * spool_fsm_apply_entry (tests). */
    bool (*take_result)(void *arg, uint64_t index, struct spool_fsm_result *r);
    void *take_arg;
    /* Resharding marks (a copy of the store's shard state; see above). */
    uint8_t fenced[SPOOL_SLOT_BITMAP_BYTES];
    uint8_t dropped[SPOOL_SLOT_BITMAP_BYTES];
    uint32_t n_fenced; /* 0: publishes skip the slot check */
};

/* Publishes to this slot are refused (SPOOL_EMOVED). */
bool spool_fsm_slot_fenced(const struct spool_fsm *f, uint32_t slot);
/* This slot's channels were dropped here: reads are refused too (answer SPOOL_EMOVED). */
bool spool_fsm_slot_dropped(const struct spool_fsm *f, uint32_t slot);
/* Both, for a channel name. */
bool spool_fsm_channel_fenced(const struct spool_fsm *f, const char *channel);
bool spool_fsm_channel_dropped(const struct spool_fsm *f, const char *channel);

/* Builds the dedup table from the store's tails. */
int spool_fsm_init(struct spool_fsm *f, struct spool_store *store, uint64_t dedup_window_ms,
                   struct spool_err *err);
void spool_fsm_close(struct spool_fsm *f);
/* Replaces the conversation state with one using these limits (before the first apply). */
int spool_fsm_set_conv_limits(struct spool_fsm *f, const struct spool_conv_config *cfg,
                              struct spool_err *err);

/* Encodes an Entry as a framed Raft payload (cluster/entry_frame.h) in a raft_malloc'd buffer;
 * returns SPOOL_ENOMEM or 0. */
int spool_fsm_encode_entry(const Spool__Entry *e, void **buf, size_t *len);

/* Applies the encoded Entry at Raft index `index`. *result is NULL when nothing was applied. */
int spool_fsm_apply_entry(struct spool_fsm *f, uint64_t index, const void *buf, size_t len,
                          struct spool_fsm_result **result, struct spool_err *err);

#endif
