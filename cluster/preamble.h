/*
 * The preamble that opens every connection to a node's cluster port (see cluster/transport.h).
 *
 * Wire layout, all integers big endian, 24 fixed bytes then the address:
 *
 *   off size field
 *     0    4 magic "SPMX"
 *     4    1 version (1)
 *     5    1 kind: 1 = Raft, 2 = RPC
 *     6    2 reserved, zero
 *     8    4 Raft group id (0 for RPC)
 *    12    8 sender id: the Raft server id (Raft) or the node id (RPC)
 *    20    2 address length, 1..SPOOL_PREAMBLE_MAX_ADDRESS
 *    22    2 reserved, zero
 *    24    n sender address, printable ASCII, no NUL
 *
 * The parser is pure (no I/O, no allocation) so that the accepting side and the fuzzer
 * (tests/fuzz/fuzz_preamble.c) run the same code. It is incremental: given the bytes received
 * so far it says "complete", "need more (this many in total)" or "invalid", and it rejects a
 * bad magic, version or kind as soon as those bytes have arrived, so garbage is dropped early.
 * The accepting side never reads past the size it was told, so no byte after the preamble is
 * consumed: those belong to libraft or to the RPC framing.
 */
#ifndef SPOOL_CLUSTER_PREAMBLE_H
#define SPOOL_CLUSTER_PREAMBLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SPOOL_PREAMBLE_MAGIC 0x53504d58u /* "SPMX" */
#define SPOOL_PREAMBLE_VERSION 1
#define SPOOL_PREAMBLE_FIXED 24
#define SPOOL_PREAMBLE_MAX_ADDRESS 255
#define SPOOL_PREAMBLE_MAX (SPOOL_PREAMBLE_FIXED + SPOOL_PREAMBLE_MAX_ADDRESS)

enum spool_preamble_kind { SPOOL_PREAMBLE_RAFT = 1, SPOOL_PREAMBLE_RPC = 2 };

/* Results of spool_preamble_parse. */
enum { SPOOL_PREAMBLE_OK = 0, SPOOL_PREAMBLE_MORE = 1, SPOOL_PREAMBLE_BAD = 2 };

struct spool_preamble {
    uint8_t kind;  /* enum spool_preamble_kind */
    uint32_t group;
    uint64_t id;
    char address[SPOOL_PREAMBLE_MAX_ADDRESS + 1]; /* NUL-terminated */
};

/* Parses the first `len` bytes of a connection.
 * - SPOOL_PREAMBLE_OK: `out` is filled, *size = the preamble's exact length (<= len).
 * - SPOOL_PREAMBLE_MORE: *size = the total byte count needed before calling again (> len).
 * - SPOOL_PREAMBLE_BAD: the bytes can never become a valid preamble; `err` says why. */
int spool_preamble_parse(const void *buf, size_t len, struct spool_preamble *out, size_t *size,
                         struct spool_err *err);

/* Encodes `p` into `buf` (at least SPOOL_PREAMBLE_MAX bytes); returns its length, or 0 if the
 * address is empty, too long or not printable. */
size_t spool_preamble_encode(const struct spool_preamble *p, void *buf);

#endif
