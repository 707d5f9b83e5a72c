/*
 * Durable Streams state in the shard state machine (docs/durable-streams.md, section 18).
 *
 * A stream is a channel. Its state (proto/streams.proto StreamState: content type, TTL or
 * expiry, closed flag and closing producer, last Stream-Seq, producer table, fork origin and the
 * forks reading it) is the newest "ds.state" record of the channel, so it is replicated, stored
 * and snapshotted with the channel's data, and every replica derives the same state.
 *
 * Commands travel as ordinary publishes (spool_node_publish) so they reuse routing, forwarding
 * and group commit. The publish's messages are laid out as
 *
 *     [0]      ACTION_CHANNEL_META "ds.cmd", data = StreamCommand
 *     [1..3]   ACTION_CHANNEL_META "ds.pad" (result slots)
 *     [4..]    the data records (already JSON-flattened by the gateway)
 *
 * and the state machine applies them here, at apply time, against the current state: the
 * conditional checks (existence, expiry by the entry's timestamp, closed, content type,
 * producer epoch/seq fencing, Stream-Seq order, fork references) and the data they guard commit
 * in one store batch, or nothing is stored. The outcome comes back in the publish result's
 * seqs (the command always succeeds as a publish): seqs[0] = HTTP status | closed << 16,
 * seqs[1] = the tail offset's L, seqs[2] = a status-specific value (current epoch for 403,
 * expected seq for a 409 gap, highest accepted seq for a duplicate, 1 when a FORK_RELEASE or
 * DELETE left a fork whose source must be released), seqs[3] = the seq of the state record
 * stored (0 = nothing stored), for read-your-writes.
 *
 * Offsets: a data record with channel seq s has L = s - base_seq + origin (origin = base_seq
 * for a plain stream, so L = s; the fork offset for a fork). See the mapping section of the doc.
 */
#ifndef SPOOL_CLUSTER_STREAMS_H
#define SPOOL_CLUSTER_STREAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/entry.pb-c.h"
#include "proto/record.pb-c.h"
#include "proto/streams.pb-c.h"
#include "storage/store.h"

#define SPOOL_STREAMS_CMD "ds.cmd"
#define SPOOL_STREAMS_PAD "ds.pad"
#define SPOOL_STREAMS_STATE "ds.state"
#define SPOOL_STREAMS_SLOTS 4

/* Per-entry overlay: the states changed by earlier commands of the entry being applied (they are
 * not in the store until the entry's batch is appended). */
struct spool_streams_tx;
struct spool_streams_tx *spool_streams_tx_new(struct spool_store *store);
void spool_streams_tx_free(struct spool_streams_tx *tx);

bool spool_streams_is_command(const Spool__PublishRequest *p);
/* Applies command `p` (see above): appends the records to store to recs/ptrs at *n with seqs
 * from *next_seq and timestamp ts, and writes the result into out[0..SPOOL_STREAMS_SLOTS). */
int spool_streams_apply(struct spool_streams_tx *tx, const Spool__PublishRequest *p,
                        uint64_t *next_seq, int64_t ts, uint64_t *out, Spool__Record *recs,
                        const Spool__Record **ptrs, size_t *n, struct spool_err *err);

/* --- for the gateway ---------------------------------------------------------------------- */

struct spool_stream_result {
    int status;
    bool closed;
    uint64_t tail;
    uint64_t extra;
    uint64_t seq;
};
void spool_streams_result(const uint64_t *seqs, size_t n, struct spool_stream_result *out);
bool spool_streams_is_state(const Spool__Record *rec);
/* L of the data record with channel seq `seq`, and the inverse (the seq whose L is `l`). */
uint64_t spool_streams_l_of(const Spool__StreamState *st, uint64_t seq);
uint64_t spool_streams_seq_of(const Spool__StreamState *st, uint64_t l);
/* Messages published natively to a stream's channel (not through Durable Streams) after its
 * newest state record are part of the stream: raises st->tail to the newest such record. */
void spool_streams_native_tail(Spool__StreamState *st, uint64_t newest_data_seq);
/* Media types equal (before ';', trimmed, case-insensitive; empty = application/octet-stream). */
bool spool_streams_ct_equal(const char *a, const char *b);

#endif
