/*
 * Splits a packed ForwardPublishBatch (proto/cluster.proto: `repeated PublishRequest requests =
 * 1`, nothing else) into the bytes of each request, without decoding them. The leader (serve.c)
 * still decodes the batch with protobuf-c (into an arena) to validate every request and read its
 * channel; this scan only finds where each request's bytes are, so they can go into the Raft
 * entry as they arrived (entry_pack.h) instead of being packed again.
 *
 * Hand-written parser of network bytes: bounds-checked, fuzzed (tests/fuzz/fuzz_fwd_scan.c
 * checks it against protobuf-c on every input). It accepts only what protobuf-c itself writes
 * for this message: each element as the one-byte tag 0x0a, a varint length (at most 10 bytes,
 * within what is left) and that many bytes. Anything else (another field, another wire type, a
 * longer tag encoding) makes it answer -1, and the caller packs the decoded requests instead.
 */
#ifndef SPOOL_CLUSTER_FWD_SCAN_H
#define SPOOL_CLUSTER_FWD_SCAN_H

#include <stddef.h>
#include <stdint.h>

struct spool_fwd_slice {
    const uint8_t *buf;
    size_t len;
};

/* Fills out[0..k) with the k field-1 payloads of `buf` in order and returns k, or -1 when the
 * bytes are not such a sequence or it holds more than `max` payloads. */
long spool_fwd_scan(const uint8_t *buf, size_t len, struct spool_fwd_slice *out, size_t max);

#endif
