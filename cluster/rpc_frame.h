/*
 * RPC frames on the wire (cluster/rpc.h): u32 payload length (big endian) | u32 crc32c of the
 * payload (big endian) | payload, an RpcFrame (proto/rpc.proto).
 *
 * Pure functions, no I/O: the RPC connection code and the fuzzer
 * (tests/fuzz/fuzz_rpc_frame.c) run the same parser. The parser looks at one frame at the
 * start of a buffer and says "complete", "need more (this many bytes in total)" or "invalid";
 * it refuses an oversized length as soon as the header is in, before any payload is buffered.
 */
#ifndef SPOOL_CLUSTER_RPC_FRAME_H
#define SPOOL_CLUSTER_RPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/rpc.pb-c.h"

#define SPOOL_RPC_FRAME_HEADER 8

enum { SPOOL_RPC_FRAME_OK = 0, SPOOL_RPC_FRAME_MORE = 1, SPOOL_RPC_FRAME_BAD = 2 };

/* Parses the frame at the start of `buf`.
 * - SPOOL_RPC_FRAME_OK: *frame is the decoded frame (release with
 *   spool__rpc_frame__free_unpacked(*frame, NULL)); *size = bytes consumed.
 * - SPOOL_RPC_FRAME_MORE: *size = total bytes needed before calling again (> len).
 * - SPOOL_RPC_FRAME_BAD: payload over `max_payload`, bad checksum, undecodable protobuf or an
 *   unknown kind; `err` says which. The connection must be closed. */
int spool_rpc_frame_parse(const void *buf, size_t len, size_t max_payload,
                          Spool__RpcFrame **frame, size_t *size, struct spool_err *err);

/* Encodes `f` with its header into a malloc()ed buffer. Returns 0, SPOOL_ELIMIT when the
 * payload would exceed `max_payload`, or SPOOL_ENOMEM. */
int spool_rpc_frame_encode(const Spool__RpcFrame *f, size_t max_payload, uint8_t **out,
                           size_t *len);

#endif
