/*
 * Rolling up token streams for readers that catch up (docs/ai-semantics.md).
 *
 * A streamed response is one message (a create) followed by many appends referring to it. A
 * reader that attaches, resumes or reads history should not replay hundreds of token events:
 * this filter folds every RUN of consecutive records about one message M (its create or an
 * append to it, then any appends, updates and deletes of M with no other record in between)
 * into one event that carries the serial of the LAST record it covers:
 *
 *   create M + appends/updates      -> action create, serial = last, refSerial = M, the text so
 *                                      far (latest version), extras merged
 *   appends of M (create not in it) -> action append, serial = last, the concatenated deltas
 *   ... then an update              -> action update, serial = last, the latest full data
 *   ... ending with a delete        -> action delete, serial = last (the tombstone)
 *
 * A run of one record is that record unchanged. Because a run is a contiguous serial range,
 * every event still means "you have everything up to this serial": a resume from it continues
 * exactly, with no gap and no duplicate. Interleaved streams (two messages appending in turns)
 * give short runs; they are still exact, just less folded. While a run is pending, the reader's
 * resumable position is the serial before it (spool_ai_rollup_pending_from() - 1).
 *
 * Rolled records are built here and marked (spool_ai_rollup_is_rolled) so shared encoders do
 * not cache them under the serial of the raw record they end at. A run holds at most
 * max_bytes of data; beyond that it is emitted and the next record starts a new run.
 */
#ifndef SPOOL_GATEWAY_AI_ROLLUP_H
#define SPOOL_GATEWAY_AI_ROLLUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/record.pb-c.h"

struct spool_ai_rollup;

typedef void (*spool_ai_emit_cb)(void *arg, const Spool__Record *rec);

/* max_bytes 0 = 1 MiB. NULL when out of memory. */
struct spool_ai_rollup *spool_ai_rollup_new(uint64_t max_bytes);
void spool_ai_rollup_free(struct spool_ai_rollup *r);
/* Feeds the next record (ascending serials). Emits what it completes, in serial order. Returns
 * 0 or SPOOL_ENOMEM. */
int spool_ai_rollup_push(struct spool_ai_rollup *r, const Spool__Record *rec, spool_ai_emit_cb emit,
                         void *arg);
/* Emits the pending run, if any. */
void spool_ai_rollup_flush(struct spool_ai_rollup *r, spool_ai_emit_cb emit, void *arg);
/* The first serial of the pending run; 0 when nothing is pending. */
uint64_t spool_ai_rollup_pending_from(const struct spool_ai_rollup *r);
bool spool_ai_rollup_is_rolled(const Spool__Record *rec);
/* Where a live / last-N reader should start, given the channel's newest record `tail` and the
 * starting point it asked for (the serial it "has"): before the create of a response that is
 * still streaming (tail an unfinished append/update of a message created at or before `start`),
 * else `start`. */
uint64_t spool_ai_attach_start(const Spool__Record *tail, uint64_t start);

/* Rolls up recs[0..n) (ascending, or descending when `descending`: then emitted descending too)
 * in one go, for history pages. Returns 0 or SPOOL_ENOMEM. */
int spool_ai_rollup_page(const Spool__Record *const *recs, size_t n, bool descending,
                         uint64_t max_bytes, spool_ai_emit_cb emit, void *arg);

#endif
