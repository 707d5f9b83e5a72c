/*
 * Presence: who is on a channel, built on the channel's own log.
 *
 * A presence change is a record like any message (action ACTION_PRESENCE, `name` = "enter",
 * "update" or "leave", client_id and connection_id identifying the member, `data` its state), so
 * it is replicated, ordered by serial and delivered exactly once to every attachment together
 * with the messages around it. A member is keyed by (clientId, connectionId): one client may be
 * present several times through several connections.
 *
 * The member set at serial S is the fold of the presence records up to S (enter/update upsert,
 * leave removes). spool_presence_sync() computes it by reading the channel's history forward in
 * pages (at the shard's leader, so it includes everything an attachment has delivered) and
 * folding only presence records, bounded by `max_records` read; the result carries the
 * serial it is valid at, so a client attached to the channel applies the presence events with a
 * greater serial on top and stays exact. (A channel whose history is longer than the bound
 * reports SPOOL_ELIMIT; retention that removed an enter removes that member too. A per-shard
 * members index in the state machine would lift both limits.)
 *
 * Leaving on connection death: the realtime layer (gateway/realtime.c) remembers what a dropped
 * connection had entered; when presence_timeout_ms passes without the connection being resumed
 * on the same node, spool_presence_leave() publishes the leaves, each unless the member entered
 * or updated again after the death (a resume on another node, after which the client re-enters).
 * The leave is conditional on the member's newest presence record it saw (ref_seq, see
 * cluster/presence_index.h), so it is not written if the member changed since, or already left
 * (the shard leader's reaper removes the members of nodes it stopped hearing from, including
 * this one if it was cut off: cluster/presence_reaper.h).
 */
#ifndef SPOOL_GATEWAY_PRESENCE_H
#define SPOOL_GATEWAY_PRESENCE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"
#include "common/err.h"

struct spool_presence_member {
    char *client_id;
    char *connection_id;
    json_t *data; /* as clients see it (owned reference) */
    uint64_t serial;
    int64_t timestamp_ms;
    char role[16]; /* user / agent / operator from the member's credentials ("" = unknown) */
};

struct spool_presence_set {
    struct spool_presence_member *members;
    size_t n, cap;
    uint64_t serial; /* the set is the fold of every presence record up to this serial */
};

void spool_presence_set_init(struct spool_presence_set *s);
void spool_presence_set_close(struct spool_presence_set *s);
/* Folds one record (non-presence records only advance `serial`). Returns 0 or SPOOL_ENOMEM. */
int spool_presence_set_apply(struct spool_presence_set *s, const Spool__Record *rec);
/* [{"clientId","connectionId","data","serial","timestamp","role"?}...] (new reference): the one
 * encoding of members, for the realtime presence.members and GET /v1/channels/{c}/presence. */
json_t *spool_presence_set_json(const struct spool_presence_set *s);
/* Same, only the members whose clientId is `client_id` (NULL: every member). */
json_t *spool_presence_set_json_of(const struct spool_presence_set *s, const char *client_id);

/* True for "enter", "update", "leave". */
int spool_presence_action_valid(const char *action);

/* Records a member-set sync reads at most (realtime presence.get and the HTTP presence list alike);
 * a longer channel answers SPOOL_ELIMIT. */
#define SPOOL_PRESENCE_SCAN_MAX 100000

struct spool_presence_sync;
/* Called once; `set` is valid during the call (status 0). */
typedef void (*spool_presence_sync_cb)(void *arg, int status, const struct spool_err *err,
                                       const struct spool_presence_set *set);
int spool_presence_sync(struct spool_presence_sync **out, struct spool_node *node,
                        const char *channel, uint64_t max_records, spool_presence_sync_cb cb,
                        void *arg, struct spool_err *err);
/* The callback will not be called; memory is released when the read in flight completes. */
void spool_presence_sync_cancel(struct spool_presence_sync *s);

/* The leave of a member whose connection died at `died_at_ms`: reads the channel after
 * `after_serial` (bounded by max_records) and publishes a "leave" record unless the member has a
 * presence record stamped after the death (its client resumed, possibly on another node, and
 * entered again). Fire and forget: the operation owns itself and logs its outcome. */
int spool_presence_leave(struct spool_node *node, const char *channel, const char *client_id,
                         const char *connection_id, uint64_t after_serial, int64_t died_at_ms,
                         uint64_t max_records);

#endif
