/*
 * AI conversation rules in the shard state machine (docs/ai-semantics.md): message appends,
 * updates and deletes refer to a message by its serial, and a channel has a turn holder fenced
 * by an epoch. Everything is checked at apply time, so every replica accepts or refuses the same
 * publish, and a refused publish stores nothing.
 *
 * State. Per message: author (client id of the create), version, final (an append or update
 * whose extras carry "final": true), deleted. Per channel: the turn (holder, epoch, lease end).
 * Both are a function of the store's records, so they are never snapshotted: a bounded cache
 * (LRU, max_entries) keeps the recent ones and a miss rebuilds the entry from the store
 *   - a message: forward from its create, at most scan_max records (appends, updates, deletes
 *     refer to it by ref_seq);
 *   - a turn: the newest "ai.turn" record, backward from the channel's tail, at most scan_max.
 * Channels that never use these actions never touch the cache.
 *
 * Records handled here (anything else passes untouched):
 *   ACTION_MESSAGE_APPEND  ref_seq = message: exists, not deleted, not final, same author (or
 *                          flags & EDIT_ANY); version stays
 *   ACTION_MESSAGE_UPDATE  not deleted; author or EDIT_ANY; version + 1
 *   ACTION_MESSAGE_DELETE  not deleted; author or DELETE_ANY; version + 1; tombstone
 *   turn_epoch != 0        (any message) the publisher holds the channel's turn at that epoch
 *   ACTION_CHANNEL_META "ai.turn", data "claim" | "release": expires_ms = lease length; a
 *                          claim bumps the epoch unless the claimer already holds a live lease
 *                          (a renewal); a live lease of someone else refuses the claim unless
 *                          flags & TAKEOVER. The stored record is rewritten to the outcome:
 *                          turn_epoch = epoch, expires_ms = lease end (0 after a release),
 *                          data = JSON {"op","holder","epoch","expiresAt","previousHolder",
 *                          "previousExpired"}.
 *                          data "expire" (turn_epoch = E): ends the lease of epoch E if, at the
 *                          entry's time, it is still that lease and it has ended (else refused,
 *                          nothing stored); proposed by the shard leader (conversation_turn.c)
 *                          so the expiry is an event on the channel, written once. Stored as
 *                          client_id = the expired holder, expires_ms = 0, data {"op":"expire",
 *                          "holder":"","epoch","expiresAt":0,"previousHolder",
 *                          "previousExpired":true,"expiredAt": the lease end}.
 *
 * Use from the state machine, per publish request of an entry:
 *   rc = spool_conv_check(c, channel, msgs, skip, n, ts, reason)   all or nothing, no change
 *   for each stored record: spool_conv_stored(c, &rec)             rewrites fields, updates
 * and spool_conv_entry_done() after the entry's batch is in the store (frees rewritten data),
 * spool_conv_reset() when the store changed under the cache (restore, failed entry).
 */
#ifndef SPOOL_CLUSTER_CONVERSATION_H
#define SPOOL_CLUSTER_CONVERSATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/record.pb-c.h"
#include "storage/store.h"

#define SPOOL_CONV_TURN "ai.turn"

enum {
    SPOOL_CONV_FLAG_EDIT_ANY = 1u << 0,
    SPOOL_CONV_FLAG_DELETE_ANY = 1u << 1,
    SPOOL_CONV_FLAG_TAKEOVER = 1u << 2,
};

#define SPOOL_CONV_REASON_MAX 200

struct spool_conv_config {
    size_t max_entries; /* cached message + turn states; 0 = 65536 */
    size_t scan_max;    /* records read to rebuild one state; 0 = 100000 */
};

struct spool_conv;

struct spool_conv *spool_conv_new(struct spool_store *store, const struct spool_conv_config *cfg);
void spool_conv_free(struct spool_conv *c);
void spool_conv_reset(struct spool_conv *c);

/* Does this record fall under the rules above? */
bool spool_conv_applies(const Spool__Record *m);
/* True when extras (JSON) has a top-level-looking "final": true. */
bool spool_conv_is_final(const Spool__Record *m);

/* Checks msgs[0..n) of one publish to `channel` at entry time ts, in order, as if stored (skip[i]
 * true: not stored, e.g. a duplicate). Returns 0, or SPOOL_ENOENT / SPOOL_ECONFLICT /
 * SPOOL_EDENIED / SPOOL_EINVAL / SPOOL_ENOMEM with reason[SPOOL_CONV_REASON_MAX] filled. */
int spool_conv_check(struct spool_conv *c, const char *channel, const Spool__Record *const *msgs,
                     const bool *skip, size_t n, int64_t ts, char *reason);
/* `rec` (channel, seq, timestamp set) is being stored after a successful check: its fields are
 * rewritten as described above and the cached state moves on. Returns 0 or SPOOL_ENOMEM. */
int spool_conv_stored(struct spool_conv *c, Spool__Record *rec);
void spool_conv_entry_done(struct spool_conv *c);

/* Leader side: calls cb for every cached turn whose lease ended at or before `now` (local clock)
 * and was not reported in the last retry_ms; the caller proposes an "expire" record for it.
 * Turns with a lease are never evicted from the cache, so none is missed while this node has
 * applied its claim. Returns how many were reported. */
/* The channel's turn now (a read, between entries): 0 with *holder (valid until the next call
 * on c; "" = not held: none, released or ended), *epoch and *expires; SPOOL_ENOMEM. */
int spool_conv_turn(struct spool_conv *c, const char *channel, int64_t now, const char **holder,
                    uint64_t *epoch, int64_t *expires);
typedef void (*spool_conv_due_cb)(void *arg, const char *channel, uint64_t epoch,
                                  const char *holder);
size_t spool_conv_due(struct spool_conv *c, int64_t now, int64_t retry_ms, spool_conv_due_cb cb,
                      void *arg);

#endif
