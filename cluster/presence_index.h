/*
 * The present members of a shard, by the node that hosts their connection: what the presence
 * reaper (cluster/presence_reaper.h) needs to make the members of a dead node leave.
 *
 * A presence "enter" or "update" record carries presence_node and presence_boot (the node whose
 * gateway holds the member's connection, and that process's incarnation; stamped by
 * spool_node_presence_stamp). The index maps (channel, client_id, connection_id) to the host
 * (node, boot) and the serial of the member's newest presence record, upserted by enter/update
 * and removed by leave, and counts members per host. Records without a host (presence_node 0:
 * written before this existed, or by a node that does not stamp) are not indexed: nobody reaps
 * them, exactly as before.
 *
 * It is derived from the store, so it is never snapshotted: every replica's state machine keeps
 * it up to date from the records it applies (spool_pindex_apply after each stored batch), and
 * rebuilds it from the store when the store was opened or replaced by a snapshot
 * (spool_pindex_rebuild: the newest `scan_max` records of every channel, the same bound
 * presence.get folds). It is advice for the shard's leader, not replicated state: nothing that
 * is applied depends on it, so replicas whose indexes differ (one rebuilt with the bound, one
 * that saw older records) never diverge. What makes a leave exact is checked against the store
 * at apply time (spool_presence_leave_superseded).
 *
 * Conditional leaves. A presence "leave" with ref_seq != 0 means "leave unless the member changed
 * since its record ref_seq": the state machine stores it only if no presence record of the same
 * (client_id, connection_id) on the channel has a serial above ref_seq, in the store or earlier
 * in the same entry; otherwise it is not stored and reported like a duplicate (seq = ref_seq).
 * Every replica checks the same store content, so every replica decides the same. The reaper
 * and the gateway's connection-timeout leaves are conditional, so a member is never left twice
 * and a member that re-entered (on another node, after a resume) is never removed by a stale
 * leave.
 */
#ifndef SPOOL_CLUSTER_PRESENCE_INDEX_H
#define SPOOL_CLUSTER_PRESENCE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/record.pb-c.h"
#include "storage/store.h"

#define SPOOL_PINDEX_SCAN_MAX 100000 /* records per channel read by a rebuild / a leave check */
#define SPOOL_PINDEX_MAX_MEMBERS (1u << 20) /* members per shard; more are not indexed (logged) */

struct spool_pindex_member {
    const char *channel, *client_id, *connection_id;
    uint64_t node, boot; /* the host */
    uint64_t seq;        /* the member's newest presence record (enter or update) */
    uint64_t reap_at;    /* the reaper's: uv_now when it last proposed this member's leave */
};

struct spool_pindex_host {
    uint64_t node, boot;
    size_t members;
};

struct spool_pindex;

struct spool_pindex *spool_pindex_new(void);
void spool_pindex_free(struct spool_pindex *x);
void spool_pindex_reset(struct spool_pindex *x);

/* Folds one stored record of `channel` (anything but a presence record is ignored). 0 or
 * SPOOL_ENOMEM (the index is then incomplete but consistent). */
int spool_pindex_apply(struct spool_pindex *x, const char *channel, const Spool__Record *rec);
/* Resets, then folds the newest scan_max (0 = SPOOL_PINDEX_SCAN_MAX) records of every channel. */
int spool_pindex_rebuild(struct spool_pindex *x, struct spool_store *store, size_t scan_max,
                         struct spool_err *err);

size_t spool_pindex_size(const struct spool_pindex *x);
/* The hosts with members (valid until the next change of the index). */
const struct spool_pindex_host *spool_pindex_hosts(const struct spool_pindex *x, size_t *n);
/* Calls cb for each member hosted by (node, boot); cb returns non-zero to stop. The index must
 * not change during the walk (cb may change m->reap_at). */
void spool_pindex_members_of(struct spool_pindex *x, uint64_t node, uint64_t boot,
                             int (*cb)(void *arg, struct spool_pindex_member *m), void *arg);
/* The member's entry, or NULL. */
struct spool_pindex_member *spool_pindex_find(struct spool_pindex *x, const char *channel,
                                              const char *client_id, const char *connection_id);

/* The state machine's check, per publish request to `channel` (deterministic for a given store
 * content and entry):
 *   if (spool_presence_has_conditional_leave(msgs, n)):
 *     spool_presence_leaves_in_store(store, channel, msgs, n, gone)   one read for all of them
 *     then per message j: skip it if gone[j] || spool_presence_leave_in_entry(channel, msgs[j],
 *                                                                          stored, n_stored)
 * "In the store" reads the channel forward once, after the smallest ref_seq of the request's
 * conditional leaves, at most SPOOL_PINDEX_SCAN_MAX records (a member changed only past that
 * is not seen: its leave is stored), so a reaper publish of many members of a long channel
 * costs one read, not one per member. */
bool spool_presence_is_conditional_leave(const Spool__Record *m);
bool spool_presence_has_conditional_leave(Spool__Record *const *msgs, size_t n);
/* Sets gone[j] (gone[0..n) zeroed by the caller) for each conditional leave msgs[j] whose member
 * has a presence record above its ref_seq in the store. */
void spool_presence_leaves_in_store(struct spool_store *store, const char *channel,
                                    Spool__Record *const *msgs, size_t n, bool *gone);
/* Is `m` a conditional leave whose member has a presence record of `channel` in entry[0..n)
 * (the records of the entry being applied that were already assigned, any channel)? */
bool spool_presence_leave_in_entry(const char *channel, const Spool__Record *m,
                                   const Spool__Record *entry, size_t n);
/* Both checks for one message (tests). */
bool spool_presence_leave_superseded(struct spool_store *store, const char *channel,
                                     const Spool__Record *m, const Spool__Record *entry, size_t n);

#endif
