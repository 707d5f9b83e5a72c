/*
 * One attachment: a consumer (an SSE stream, a realtime WebSocket connection) following one
 * channel from a chosen point, history first and then live, with no gap and no duplicate. This
 * is the single implementation of that join; SSE and the realtime protocol only encode what it
 * delivers.
 *
 * The join. The node's live subscription delivers every record committed after it started, in
 * seq order, exactly once; history comes from spool_node_read in pages. Seqs are dense (1, 2,
 * 3, ...), so the join is exact:
 *
 *   1. subscribe first; live records are buffered (packed) until history has caught up;
 *   2. find the starting point `delivered` (the serial the consumer already has):
 *        start        -> 0
 *        serial S     -> S
 *        live, last N -> one backward read of 1 record tells the channel's last serial L;
 *                        live is L, last N is max(L - N, 0);
 *      and report it with on_attached(L) before anything else;
 *   3. read forward after `delivered` page by page, delivering each record whose seq is exactly
 *      delivered + 1;
 *   4. when a page comes back short, drain the buffer: drop what is <= delivered (the page
 *      already had it), deliver while the next is delivered + 1. If the buffer starts further
 *      ahead (the replica read lagged behind the live stream), read again asking the node for
 *      read-your-writes up to that seq (min_seq) -- bounded, then the attachment fails;
 *   5. then live: a record that is delivered + 1 goes straight through; one <= delivered is a
 *      duplicate and dropped; one further ahead (a gap, should the node ever produce one) sends
 *      the attachment back to step 3, so a gap is never skipped silently.
 *
 * History retention may have removed records the consumer asked for (seq < the channel's first
 * seq): the attachment then continues from the oldest record kept and says so with a log line.
 *
 * Backpressure. History can be large; before each page the attachment asks the consumer
 * (can_send) and, when told no, waits for spool_attach_continue(). Live records are buffered up
 * to max_buffer_bytes while history is read; beyond that the attachment fails with SPOOL_ELIMIT
 * (the consumer reports it; the client can re-attach from its last serial).
 *
 * Rollup (gateway/ai_rollup.h). Until the attachment is live, records pass through the token
 * stream rollup: a run of records about one message (its create or an append, then appends,
 * updates, deletes of it) arrives as ONE record carrying the serial of the last record it covers,
 * so a reader joining mid-response gets the text so far at once and then the live appends.
 * spool_attach_serial() stays exact (the serial before a pending run). no_rollup turns it off.
 * A "live" or "last N" attachment whose starting point falls inside a response still streaming
 * (the channel's newest record is an unfinished append to a message created at or before it)
 * starts at that message's create instead, so the reader gets the text so far rolled up.
 * Live, the same rollup coalesces consecutive appends of a message while the consumer says it
 * has no room (can_send), and delivers them as one record at spool_attach_continue().
 *
 * Ownership. The consumer owns the attachment; spool_attach_close() may be called at any time,
 * including from inside an event callback; no event fires after it. A read still in flight keeps
 * the memory until its completion (one completion path: the read callback frees).
 */
#ifndef SPOOL_GATEWAY_ATTACH_H
#define SPOOL_GATEWAY_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"
#include "common/err.h"

enum spool_from_kind {
    SPOOL_FROM_LIVE = 0, /* only what is published from now on */
    SPOOL_FROM_START,    /* the whole retained history */
    SPOOL_FROM_SERIAL,   /* everything after serial n */
    SPOOL_FROM_LAST,     /* the last n records, then live */
};

struct spool_from {
    enum spool_from_kind kind;
    uint64_t n;
};

struct spool_attach;

struct spool_attach_events {
    /* Once, first: `serial` is the channel's last serial when the attachment was made. */
    void (*on_attached)(void *arg, uint64_t serial);
    /* Each record in seq order, exactly once; `rec` is valid during the call. */
    void (*on_record)(void *arg, const Spool__Record *rec);
    /* The attachment cannot continue (read failure, buffer limit); nothing follows. */
    void (*on_error)(void *arg, const struct spool_err *err);
    /* May another history page be read now? NULL = always. */
    bool (*can_send)(void *arg);
};

struct spool_attach_config {
    size_t page;               /* records per history read; 0 = 256 */
    uint64_t max_buffer_bytes; /* live records held while history is read; 0 = 4 MiB */
    bool no_rollup;            /* deliver every record as stored, even while catching up */
};

int spool_attach_start(struct spool_attach **out, struct spool_node *node, const char *channel,
                       struct spool_from from, const struct spool_attach_config *cfg,
                       const struct spool_attach_events *ev, void *arg, struct spool_err *err);
/* The consumer has room again (after can_send said no). */
void spool_attach_continue(struct spool_attach *a);
/* The last serial delivered (the starting point until something is delivered). */
uint64_t spool_attach_serial(const struct spool_attach *a);
const char *spool_attach_channel(const struct spool_attach *a);
/* True once history has caught up and records arrive live. */
bool spool_attach_is_live(const struct spool_attach *a);
void spool_attach_close(struct spool_attach *a);

#endif
