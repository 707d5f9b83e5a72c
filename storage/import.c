/*
 * What resharding needs from the store (docs/cluster.md "Adding shards"): importing the content
 * of channels copied from another shard's store, and keeping the owner's shard state.
 *
 * Imports. A channel whose slot moves to this shard arrives as parts (ChannelImport), each a
 * run of its retained records with their original seqs, timestamps and fields. The records go
 * in through the normal append path (one batch, one COMMIT with the entry's Raft index), so
 * recovery, sealing, snapshots and reads treat them like any other. What differs is the start:
 * seqs must continue the channel here, and a channel that has nothing retained here may still
 * remember a last_seq (it was on this shard before, and was dropped when its slot left), possibly
 * *above* where the copy starts (the copy's first records may have been trimmed here long ago,
 * or the import brings an older, still retained part). So a channel with nothing retained is
 * restarted at the copy's base: its last_seq is set to the first record's seq - 1 and written
 * as a META frame with `reset` set, which recovery applies as "replace" rather than "raise".
 * With something retained, records at or below last_seq are skipped: applying the same part
 * twice (a copy restarted by a new leader) stores nothing twice.
 *
 * Ordering and crashes: META frames (reset, retention) are written before the batch. A crash
 * after them but before the batch's COMMIT leaves the applied index below the entry, and Raft
 * replays it: the channel then has nothing retained and the same base, so the replay makes the
 * same decisions.
 *
 * Shard state. An opaque byte string the owner (the shard state machine: its fenced and dropped
 * slots) keeps in the store so that it is part of what the store persists and snapshots: a
 * STATE frame carries the whole of it, recovery keeps the newest, checkpoints repeat it (a
 * deleted segment must not take it along), compaction keeps the frames, and a snapshot's header
 * carries it.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proto/snapshot.pb-c.h"
#include "storage/format.h"
#include "storage/store_int.h"

/* ---- shard state ---- */

int spool_store_put_shard_state(struct spool_store *s, const uint8_t *buf, size_t len,
                                struct spool_err *err)
{
    uint8_t *copy = NULL;
    if (len > 0) {
        if ((copy = malloc(len)) == NULL) return spool_err_set(err, SPOOL_ENOMEM, "shard state");
        memcpy(copy, buf, len);
    }
    free(s->state);
    s->state = copy;
    s->state_len = len;
    return 0;
}

static int write_state_frame(struct spool_store *s, const uint8_t *buf, size_t len, struct spool_err *err)
{
    if (len > SPOOL_FRAME_MAX) return spool_err_set(err, SPOOL_EINVAL, "shard state of %zu bytes", len);
    int rv = spool_store_grow_wbuf(s, SPOOL_FRAME_HDR + len, err);
    if (rv != 0) return rv;
    if (len > 0) memcpy(s->wbuf + SPOOL_FRAME_HDR, buf, len);
    spool_frame_finish(s->wbuf, SPOOL_FRAME_STATE, (uint32_t)len);
    return spool_store_write(s, s->wbuf, SPOOL_FRAME_HDR + len, err);
}

int spool_store_write_shard_state(struct spool_store *s, struct spool_err *err)
{
    return s->state_len > 0 ? write_state_frame(s, s->state, s->state_len, err) : 0;
}

int spool_store_set_shard_state(struct spool_store *s, const void *buf, size_t len,
                                struct spool_err *err)
{
    int rv = write_state_frame(s, buf, len, err);
    if (rv == 0) rv = spool_store_put_shard_state(s, buf, len, err);
    return rv;
}

const void *spool_store_shard_state(const struct spool_store *s, size_t *len)
{
    *len = s->state_len;
    return s->state;
}

bool spool_store_retention(const struct spool_store *s, const char *channel, struct spool_retention *r)
{
    const struct spool_chan *c = spool_chanmap_get(&s->chans, channel);
    if (c == NULL || !c->has_retention) return false;
    *r = c->retention;
    return true;
}

/* ---- imports ---- */

/* Restarts `c` (nothing retained, or what is retained is discarded) with last_seq `last`. */
static void restart(struct spool_store *s, struct spool_chan *c, uint64_t last)
{
    if (c->count > 0) spool_store_trim(s, c, c->base + c->count);
    c->last_seq = last;
    c->base = last + 1;
}

static bool same_retention(const struct spool_chan *c, const struct spool_store_import *im)
{
    if (c->has_retention != im->has_retention) return false;
    return !im->has_retention || (c->retention.max_age_ms == im->retention.max_age_ms &&
                                  c->retention.max_count == im->retention.max_count &&
                                  c->retention.max_bytes == im->retention.max_bytes);
}

int spool_store_import(struct spool_store *s, uint64_t raft_index,
                       const struct spool_store_import *imp, size_t n,
                       const Spool__Record **stored, size_t *n_stored, struct spool_err *err)
{
    *n_stored = 0;
    if (raft_index <= s->applied_index)
        return spool_err_set(err, SPOOL_EINVAL, "raft index %" PRIu64 " already applied (applied %" PRIu64 ")",
                             raft_index, s->applied_index);
    /* c->batch_gen / batch_seq mark the channels this call took records of, and their last. */
    uint64_t gen = ++s->batch_gen;
    size_t k = 0;
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        const struct spool_store_import *im = &imp[i];
        if (im->channel == NULL || im->channel[0] == '\0') {
            SPOOL_ERROR("store.import_skip", "import=%zu reason=no_channel", i);
            continue;
        }
        struct spool_chan *c = spool_chanmap_put(&s->chans, im->channel);
        if (c == NULL) return spool_err_set(err, SPOOL_ENOMEM, "channel table");
        bool taken = c->batch_gen == gen; /* records of it are already in this batch */
        uint64_t last = taken ? c->batch_seq : c->last_seq;
        bool retained = taken || c->count > 0;
        bool meta = false, reset = false;
        size_t j = 0;
        if (!retained) {
            uint64_t base = im->n > 0 ? im->recs[0]->seq - 1 : im->last_seq;
            if (im->n > 0 && im->recs[0]->seq == 0) base = c->last_seq; /* refused below */
            if (base != c->last_seq) {
                restart(s, c, base);
                meta = reset = true;
            }
            last = base;
        } else if (im->n == 0) {
            if (!taken && im->last_seq > last) { /* deleted at the source past what we hold */
                restart(s, c, im->last_seq);
                meta = true;
                last = im->last_seq;
            }
        } else {
            while (j < im->n && im->recs[j]->seq <= last) j++;
            if (j < im->n && im->recs[j]->seq != last + 1 && !taken) {
                SPOOL_WARN("store.import_gap", "channel=%s last_seq=%" PRIu64 " next=%" PRIu64
                           " retained_dropped=%zu", c->name, last, im->recs[j]->seq, c->count);
                last = im->recs[j]->seq - 1;
                restart(s, c, last);
                meta = reset = true;
            }
        }
        if (!same_retention(c, im)) {
            c->has_retention = im->has_retention;
            c->retention = im->has_retention ? im->retention : (struct spool_retention){0};
            meta = true;
        }
        if (meta && (rv = spool_store_write_meta_reset(s, c, reset, err)) != 0) break;
        size_t first = k;
        for (; j < im->n; j++) {
            const Spool__Record *r = im->recs[j];
            if (r->seq != last + 1 || r->channel == NULL || strcmp(r->channel, c->name) != 0) {
                SPOOL_ERROR("store.import_skip", "channel=%s seq=%" PRIu64 " expected=%" PRIu64
                            " reason=%s", c->name, r->seq, last + 1,
                            r->seq != last + 1 ? "not_consecutive" : "other_channel");
                break;
            }
            stored[k++] = r;
            last++;
        }
        if (k > first) {
            c->batch_gen = gen;
            c->batch_seq = last;
        }
    }
    if (rv == 0 && k > 0) rv = spool_store_append_batch(s, raft_index, stored, k, err);
    else if (rv == 0) rv = spool_store_mark_applied(s, raft_index, err);
    if (rv != 0) return rv;
    *n_stored = k;
    return 0;
}
