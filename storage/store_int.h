/*
 * The store's internals, shared by the files that implement storage/store.h:
 *
 *   store.c      open/close, append, reads, sync, stats (the hot paths)
 *   recover.c    rebuilding the in-memory state from the segments at open
 *   seal.c       sealing a full active segment, compacting mostly-dead sealed ones
 *   retention.c  retention, channel deletion, checkpoints
 *   snapshot.c   snapshot streams and restore
 *   gen.c        the generation directory and its atomic switch (used by restore)
 *   import.c     resharding: channel imports, the owner's shard state
 *
 * Directory layout: <dir>/CURRENT names the live generation directory <dir>/gen-<n>, which
 * holds the segment files. Restore builds gen-<n+1> next to it and switches CURRENT with a
 * rename, so a store is always entirely one generation or entirely the other. <dir>/LOCK is
 * held with flock while the store is open, so two processes never share one.
 */
#ifndef SPOOL_STORAGE_STORE_INT_H
#define SPOOL_STORAGE_STORE_INT_H

#include "proto/snapshot.pb-c.h"
#include "storage/arena.h"
#include "storage/chan.h"
#include "storage/segment.h"
#include "storage/store.h"
#include "storage/tail.h"

#define SPOOL_BLOCK_CACHE 4

struct spool_block_cache {
    uint32_t seg, block; /* seg 0 = empty */
    uint8_t *buf;
    size_t cap, len;
    uint64_t used; /* LRU tick */
};

/* A seal in progress: the frames of a full .log segment are copied into lz4 blocks a slice at a
 * time after appends, instead of all at once inside the append that filled it. */
struct spool_sealing {
    bool on;
    uint32_t seg;
    const uint8_t *map; /* the .log, read-only mapping */
    size_t maplen;
    uint64_t pos;       /* next raw offset to copy */
    struct spool_sealer w;
};

struct spool_store {
    struct spool_store_config cfg;
    char *root;            /* cfg->dir */
    char *dir;             /* the live generation directory */
    uint64_t gen;
    int lock_fd;           /* flock on <root>/LOCK: one process per store */
    struct spool_segment *segs; /* ascending id; the last one is active unless sealed */
    size_t nsegs, capsegs;
    uint64_t applied_index;
    struct spool_chanmap chans;
    struct spool_tailcache tail;
    struct spool_block_cache blocks[SPOOL_BLOCK_CACHE];
    uint64_t block_tick;
    struct spool_arena arena;
    uint8_t *wbuf; /* batch encoding buffer */
    size_t wcap;
    uint8_t *rbuf; /* active-segment read buffer */
    size_t rcap;
    struct spool_chan **batch_chans;
    size_t batch_cap;
    uint64_t batch_gen;
    bool dir_dirty; /* a segment was created since the last directory fsync */
    struct spool_sealing sealing;
    struct spool_iostats io;
    uint64_t tail_hits;
    uint8_t *state; /* the owner's shard state (STATE frames), malloc'd; NULL when empty */
    size_t state_len;
};

/* segments */
struct spool_segment *spool_store_seg(struct spool_store *s, uint32_t id);
static inline struct spool_segment *spool_store_active(struct spool_store *s)
{
    return s->nsegs > 0 && !s->segs[s->nsegs - 1].sealed ? &s->segs[s->nsegs - 1] : NULL;
}
int spool_store_add_seg(struct spool_store *s, const struct spool_segment *seg, struct spool_err *err);
void spool_store_remove_seg(struct spool_store *s, uint32_t id);
void spool_store_forget_blocks(struct spool_store *s, uint32_t seg);
/* Makes sure an active segment exists with room for `len` more bytes, rolling if needed. */
int spool_store_ensure_room(struct spool_store *s, size_t len, struct spool_err *err);
int spool_store_write(struct spool_store *s, const uint8_t *buf, size_t len, struct spool_err *err);
int spool_store_grow_wbuf(struct spool_store *s, size_t need, struct spool_err *err);

/* Fetches the payload of a record frame from its segment (checked); valid until the next
 * fetch. */
int spool_store_fetch(struct spool_store *s, const struct spool_entry *e, const uint8_t **payload,
                      struct spool_err *err);

/* The encoded record `seq` of `c`, from the tail cache or its segment (checked). */
int spool_store_payload(struct spool_store *s, struct spool_chan *c, uint64_t seq, const uint8_t **p,
                        uint32_t *len, struct spool_err *err);
/* Appends records without the seq-continuity and applied-index checks (restore: the snapshot
 * was validated, and may skip seqs). */
int spool_store_load_batch(struct spool_store *s, uint64_t raft_index, const Spool__Record *const *recs,
                           size_t n, struct spool_err *err);

/* index bookkeeping */
int spool_store_index(struct spool_store *s, struct spool_chan *c, uint64_t seq,
                      const struct spool_entry *e);
/* Drops the retained records of `c` below `first` from index, cache and segment counters. */
void spool_store_trim(struct spool_store *s, struct spool_chan *c, uint64_t first);
/* Turns the entry of `seq` into a hole (its bytes turned out to be damaged). */
void spool_store_mark_hole(struct spool_store *s, struct spool_chan *c, uint64_t seq);
/* Applies a channel state (a META frame's, a snapshot's): creates the channel if need be,
 * raises its last_seq, trims it below first_seq, sets its retention override; *out (if not NULL)
 * is the channel. */
int spool_store_put_state(struct spool_store *s, const Spool__ChannelState *st,
                          struct spool_chan **out, struct spool_err *err);
/* Fills `st` with the channel's state as META frames and snapshots carry it; `ret` holds the
 * retention override `st` points at, if there is one. */
void spool_chan_state(const struct spool_chan *c, Spool__ChannelState *st, Spool__Retention *ret);
/* Applies a META frame's channel state. */
int spool_store_apply_meta(struct spool_store *s, const uint8_t *payload, uint32_t len,
                           struct spool_err *err);
/* Writes a META frame with the channel's current state. */
int spool_store_write_meta(struct spool_store *s, struct spool_chan *c, struct spool_err *err);
/* The same META with ChannelState.reset set as given: `reset` replaces last_seq instead of raising
 * it (resharding imports, storage/import.c). */
int spool_store_write_meta_reset(struct spool_store *s, struct spool_chan *c, bool reset,
                                 struct spool_err *err);

/* import.c */
/* Replaces the in-memory shard state (a STATE frame's, a snapshot header's); no write. */
int spool_store_put_shard_state(struct spool_store *s, const uint8_t *buf, size_t len,
                                struct spool_err *err);
/* Writes a STATE frame with the current shard state (checkpoints); nothing when empty. */
int spool_store_write_shard_state(struct spool_store *s, struct spool_err *err);

/* recover.c */
int spool_store_recover(struct spool_store *s, struct spool_err *err);
/* seal.c */
/* Seals `seg` (an unsealed segment that is not the active one any more) right now. */
int spool_store_seal(struct spool_store *s, struct spool_segment *seg, struct spool_err *err);
/* Starts sealing `seg` incrementally (finishing any seal still in progress first). */
int spool_store_seal_begin(struct spool_store *s, struct spool_segment *seg, struct spool_err *err);
/* Advances the seal in progress by about `budget` raw bytes; completes it when done. Failures
 * are logged and leave the segment unsealed (recovery seals it at the next open). */
void spool_store_seal_step(struct spool_store *s, uint64_t budget);
void spool_store_seal_abort(struct spool_store *s);
int spool_store_compact(struct spool_store *s, struct spool_segment *seg, struct spool_err *err);
/* gen.c */
int spool_gen_lock(const char *root, int *fd, struct spool_err *err);
int spool_gen_open(const char *root, uint64_t *gen, char **dir, struct spool_err *err);
int spool_gen_prepare(const char *root, uint64_t gen, char **dir, struct spool_err *err);
int spool_gen_switch(const char *root, uint64_t gen, struct spool_iostats *io, struct spool_err *err);
void spool_gen_remove(const char *dir);

/* store.c: creating / freeing the in-memory part around a generation directory */
int spool_store_init_mem(struct spool_store *s, const struct spool_store_config *cfg,
                         struct spool_err *err);
void spool_store_free_mem(struct spool_store *s);

#endif
