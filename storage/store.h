/*
 * The applied store: one per shard, the state the shard's Raft state machine applies into and
 * the thing that serves history and resume. (The Raft log itself is libraft's.)
 *
 * Contract (implemented in storage/store.c and the files storage/store_int.h lists; formats,
 * recovery rules and measurements in docs/storage-format.md):
 *
 * - Records are written in *batches*, one batch per applied Raft entry, tagged with that entry's
 *   Raft index, which must be above the applied index (SPOOL_EINVAL otherwise). A batch is atomic
 *   across crashes: after reopening, either all of its records are there or none are, and
 *   spool_store_applied_index() is the index of the last complete batch. The state machine skips
 *   entries at or below it when libraft replays its log.
 * - Sequence numbers are dense per channel: a record's seq must be last_seq(channel) + 1
 *   (counting earlier records of the same batch); otherwise SPOOL_ECONFLICT and nothing of the
 *   batch is written.
 * - Nothing is fsynced until spool_store_sync(); the Raft log is what makes acknowledged data
 *   durable, and the state machine syncs the store before libraft may drop log entries
 *   (i.e. before a snapshot is taken), which also syncs full segments whose seal is still in
 *   progress. Exceptions, all rare: the append that completes a segment's incremental seal
 *   fsyncs the new .lz4 file, enforce_retention syncs before deleting a segment, restore syncs
 *   what it built.
 * - Reads never return a corrupt record: every record is checksummed (CRC32C) and a mismatch
 *   is an SPOOL_ECORRUPT error, not data. Recent records come from an in-memory tail cache.
 * - Unknown channels read as empty: last_seq 0, first_seq 1, seq_at_time 1.
 * - last_seq only ever rises, with one exception: spool_store_import restarts a channel that has
 *   nothing retained at the base its imported records bring (resharding: a channel whose slot
 *   left this shard and comes back), which may lower it. Seqs are still never reused for
 *   different content: the imported records are the channel's own, from the shard it was on.
 * - The owner may keep an opaque "shard state" in the store (spool_store_set_shard_state): it is
 *   written in log order like channel state, survives reopening, checkpoints and snapshots.
 * - Visitors and the channels() callback may read from the store (nested reads are safe) but
 *   must not write to it.
 * - Not thread-safe: one owner (the shard's loop thread).
 */
#ifndef SPOOL_STORAGE_STORE_H
#define SPOOL_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/record.pb-c.h"

struct spool_store;

struct spool_retention {
    uint64_t max_age_ms; /* 0 = unlimited */
    uint64_t max_count;  /* 0 = unlimited */
    uint64_t max_bytes;  /* 0 = unlimited */
};

struct spool_store_config {
    const char *dir;                   /* created if missing */
    uint64_t segment_bytes;            /* roll the active segment at this size (default 64 MiB) */
    uint32_t block_bytes;              /* lz4 block size in sealed segments (default 64 KiB) */
    uint64_t tail_cache_bytes;         /* bound on all channels' cached tails (default 64 MiB) */
    uint32_t tail_cache_entries;       /* newest entries kept per channel (default 1024) */
    struct spool_retention retention;  /* default for channels without their own */
};

/* Fills defaults for every zero field. */
void spool_store_config_defaults(struct spool_store_config *cfg);

/* Opens (recovering after a crash: torn tails are truncated, corrupt records dropped with a log
 * line) or creates the store in cfg->dir. */
int spool_store_open(struct spool_store **out, const struct spool_store_config *cfg,
                     struct spool_err *err);
void spool_store_close(struct spool_store *s);

/* Appends the records of one applied Raft entry atomically. The store copies what it needs. */
int spool_store_append_batch(struct spool_store *s, uint64_t raft_index, const Spool__Record *const *recs,
                             size_t n, struct spool_err *err);
/* Marks `raft_index` applied without records (an entry that produced none), so replay skips it. */
int spool_store_mark_applied(struct spool_store *s, uint64_t raft_index, struct spool_err *err);
/* fsync everything written so far. */
int spool_store_sync(struct spool_store *s, struct spool_err *err);

uint64_t spool_store_applied_index(const struct spool_store *s);
/* Highest seq ever assigned in the channel (0 if it never had one). Survives retention. */
uint64_t spool_store_last_seq(const struct spool_store *s, const char *channel);
/* Lowest seq still readable (last_seq + 1 when nothing is retained). */
uint64_t spool_store_first_seq(const struct spool_store *s, const char *channel);
/* The channel's newest retained record's timestamp, from the index (no read, no decode), and its
 * last_seq in *last_seq (may be NULL) from the same lookup. INT64_MIN when nothing is retained
 * (unknown, deleted or fully trimmed channel). The value is a function of the store's content,
 * so it is the same on every replica. */
int64_t spool_store_newest_ts(const struct spool_store *s, const char *channel, uint64_t *last_seq);
/* spool_store_newest_ts of n channels at once (ts[i], last_seq[i]): the same answers, with the
 * lookups' cache misses overlapped (the state machine asks for every channel of an entry). */
void spool_store_newest_ts_many(const struct spool_store *s, const char *const *channels, size_t n,
                                int64_t *ts, uint64_t *last_seq);

/* Visitor for reads. The record and its strings are valid only during the call. Return 0 to go
 * on, non-zero to stop (the read then returns 0). */
typedef int (*spool_store_visit_cb)(void *arg, const Spool__Record *rec);

/* Records of `channel` with seq > after_seq, ascending, at most `limit` (0 = no limit). */
int spool_store_read(struct spool_store *s, const char *channel, uint64_t after_seq, size_t limit,
                     spool_store_visit_cb cb, void *arg, struct spool_err *err);
/* Records of `channel` with seq < before_seq (0 = from the newest), descending, at most `limit`.
 * "The latest K entries" is spool_store_read_backward(s, c, 0, K, ...). */
int spool_store_read_backward(struct spool_store *s, const char *channel, uint64_t before_seq,
                              size_t limit, spool_store_visit_cb cb, void *arg,
                              struct spool_err *err);
/* The first seq of `channel` whose timestamp is >= ts_ms (last_seq + 1 if none). Binary search:
 * assumes timestamps are non-decreasing within a channel (the leader assigns them). */
uint64_t spool_store_seq_at_time(struct spool_store *s, const char *channel, int64_t ts_ms);

/* Per-channel retention override (NULL = back to the store default). */
int spool_store_set_retention(struct spool_store *s, const char *channel,
                              const struct spool_retention *r, struct spool_err *err);
/* Applies retention as of `now_ms` (a timestamp carried in a Raft entry, so every replica trims
 * the same records) and reclaims space by dropping or compacting segments. */
int spool_store_enforce_retention(struct spool_store *s, int64_t now_ms, struct spool_err *err);
/* Removes every record of the channel; its last_seq is kept so seqs are never reused (first_seq
 * becomes last_seq + 1). Unknown or already empty channels: 0, nothing written. */
int spool_store_delete_channel(struct spool_store *s, const char *channel, struct spool_err *err);

/* The channel's own retention override: true with *r filled, false when it has none (the store
 * default applies). */
bool spool_store_retention(const struct spool_store *s, const char *channel, struct spool_retention *r);

/* --- resharding (storage/import.c) --- */

/* Replaces the owner's opaque shard state with `len` bytes (0 = empty) and writes it (a STATE
 * frame, never inside a batch; recovery, checkpoints and snapshots keep it). Not an applied
 * entry by itself: the owner marks its entry applied after it (replaying the entry after a
 * crash in between sets the same state again). */
int spool_store_set_shard_state(struct spool_store *s, const void *buf, size_t len,
                                struct spool_err *err);
/* The current shard state (valid until the next change); NULL with *len 0 when empty. */
const void *spool_store_shard_state(const struct spool_store *s, size_t *len);

/* Part of one channel's content copied from another store (proto/entry.proto ChannelImport). */
struct spool_store_import {
    const char *channel;
    uint64_t last_seq;                /* the channel's last seq at the source */
    const Spool__Record *const *recs; /* retained records, ascending consecutive seqs, naming
                                         `channel`, every field as stored there */
    size_t n;
    bool has_retention;               /* the channel's retention override at the source */
    struct spool_retention retention;
};

/* Applies the imports of the entry at `raft_index`, in order, as one batch (then the applied
 * index is raft_index; a crash loses the records together, Raft replays the entry). Per import:
 *   - the channel has something retained here (or earlier imports of this call took records):
 *     records at or below its last seq are skipped (an idempotent re-copy); a record that does
 *     not continue the channel (a gap) discards what is retained here first (logged);
 *   - it has nothing retained: its last seq is first set to (first record's seq - 1), or to
 *     the import's last_seq when it brings no records (lowered if need be: the META frame says
 *     "reset"), so the records keep their seqs;
 *   - an import without records whose last_seq is above the channel's trims what is retained
 *     here and raises last_seq (the channel was deleted at the source);
 *   - the retention override becomes the import's.
 * Records are stored exactly as given (seq, timestamp, every field). The records stored are put
 * in stored[] (capacity: the imports' record count) and counted in *n_stored, for the owner's
 * derived state. Errors: SPOOL_EINVAL (raft_index not above the applied index), SPOOL_ENOMEM,
 * SPOOL_EIO; imports that cannot apply (no channel name, a record naming another channel, seq
 * 0) are skipped and logged, so every replica does the same. */
int spool_store_import(struct spool_store *s, uint64_t raft_index,
                       const struct spool_store_import *imp, size_t n,
                       const Spool__Record **stored, size_t *n_stored, struct spool_err *err);

/* Iterates channel names (order unspecified): every channel that ever had a record or a
 * retention override, deleted ones included (they keep their last_seq). Return non-zero from cb
 * to stop. */
int spool_store_channels(const struct spool_store *s, int (*cb)(void *arg, const char *channel),
                         void *arg);

struct spool_store_stats {
    uint64_t channels;
    uint64_t records;          /* retained records */
    uint64_t bytes_on_disk;    /* all segment files */
    uint64_t segments;
    uint64_t sealed_segments;
    uint64_t raw_bytes_sealed; /* uncompressed size of what sealed segments hold */
    uint64_t tail_cache_bytes;
    uint64_t tail_cache_hits;
    uint64_t disk_reads;       /* blocks (sealed) or records (active) read from segment files */
    uint64_t fsyncs;
    uint64_t fsync_ns_total;   /* for fsync latency */
};
void spool_store_stats(const struct spool_store *s, struct spool_store_stats *out);

/* Snapshot stream (format in proto/snapshot.proto). The writer is called with consecutive
 * chunks; return non-zero from it to abort. */
typedef int (*spool_store_write_cb)(void *arg, const void *buf, size_t len);
int spool_store_snapshot(struct spool_store *s, spool_store_write_cb write, void *arg,
                         struct spool_err *err);
/* Replaces the whole store's content with the snapshot in `buf` (validated first: a bad
 * snapshot leaves the store untouched and returns SPOOL_ECORRUPT). */
int spool_store_restore(struct spool_store *s, const void *buf, size_t len, struct spool_err *err);
/* Reads the applied index out of a snapshot without restoring it (0 and an error if invalid). */
uint64_t spool_store_snapshot_applied_index(const void *buf, size_t len, struct spool_err *err);

#endif
