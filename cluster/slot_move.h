/*
 * The shard side of moving slots between shards (resharding; docs/cluster.md "Adding shards"):
 * the wire bytes of the two control entries a move proposes on a shard (cluster/shard.h
 * spool_shard_propose_control), and the resumable copy of a slot set's channels out of a store.
 *
 * A move of slot set S from shard A to shard B (driven by cluster/reshard.c) is, on the shards:
 *   1. on B: SlotFence{S, fenced = false}  (B may have given S away before: accept it again)
 *   2. on A: SlotFence{S, fenced = true}   the cut: from this entry on A refuses publishes to
 *            S with SPOOL_EMOVED, so A's content of S no longer changes;
 *   3. A's leader exports S (spool_slot_export_*) in parts, each proposed on B as an entry of
 *      ChannelImports (idempotent: a copy restarted from the beginning stores nothing twice);
 *   4. the map switches S to B; on A: SlotFence{S, fenced = true, drop = true} deletes S's
 *      channels there and refuses their reads too.
 *
 * Bitmaps: SPOOL_SLOTS bits, slot i is bit (i % 8) of byte i / 8 (proto/entry.proto).
 *
 * Export. The channels of S are listed once, sorted by name, when the export starts; then each
 * call packs the next records (spool_store_read, ascending) as Entry field-6 elements
 * (tag, length, ChannelImport) up to max_bytes. A channel bigger than max_bytes is split into
 * ChannelImports with consecutive seq ranges; each part carries the channel's last_seq and
 * retention override; a channel with nothing retained is one ChannelImport without records (its
 * last_seq). Records are re-packed from the stored ones with every field. The store must not
 * change S's channels meanwhile (the fence sees to that; a retention tick trimming them between
 * parts makes the next part start later, which the importing side handles as a gap). One owner;
 * not thread-safe.
 */
#ifndef SPOOL_CLUSTER_SLOT_MOVE_H
#define SPOOL_CLUSTER_SLOT_MOVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/placement.h"
#include "common/err.h"
#include "storage/store.h"

/* Packs Entry field 5 (a SlotFence) as wire bytes that can follow an Entry's header fields
 * (tag + length + message). Caller frees *out with free(). */
int spool_slot_fence_pack(const uint8_t *bitmap, bool fenced, bool drop, uint8_t **out,
                          size_t *len, struct spool_err *err);

struct spool_slot_export;
/* Starts a copy of the channels of `bitmap`'s slots out of `store` (which must outlive it). */
int spool_slot_export_new(struct spool_slot_export **out, struct spool_store *store,
                          const uint8_t *bitmap, struct spool_err *err);
/* The next part: Entry field-6 elements totalling <= max_bytes (except one record that is alone
 * larger) in *out (malloc'd, caller frees; NULL when *len is 0); *done after the last part (a
 * slot set with no channels: one call, *len = 0, *done = true). Errors: SPOOL_ENOMEM, store
 * read errors (SPOOL_EIO, SPOOL_ECORRUPT); the export can be retried or freed. */
int spool_slot_export_next(struct spool_slot_export *x, size_t max_bytes, uint8_t **out,
                           size_t *len, bool *done, struct spool_err *err);
/* Channels listed and records packed so far (logs, tests). */
void spool_slot_export_counts(const struct spool_slot_export *x, size_t *channels,
                              uint64_t *records);
void spool_slot_export_free(struct spool_slot_export *x);

#endif
