/*
 * The group-commit Raft entry built from already-packed publish requests (batch.c).
 *
 * An Entry (proto/entry.proto) is on the wire just its fields in order: timestamp_ms (field 1,
 * varint, absent when 0), each publish as field 2 (tag, length, the PublishRequest's bytes),
 * retention (field 3, a RetentionTick holding now_ms) and proposal (field 4, varint, absent when
 * 0). The publish path keeps every request as the bytes protobuf-c packed once (at the origin
 * node, router.c), so the entry is their concatenation behind the few header bytes: no
 * get_packed_size walk of every record, no second pack. The result is byte-identical to
 * protobuf-c packing the same Entry (tests/cluster/test_entry_pack.c checks it) inside the usual
 * frame (entry_frame.h), so the log format and spool_fsm's decoding are unchanged.
 */
#ifndef SPOOL_CLUSTER_ENTRY_PACK_H
#define SPOOL_CLUSTER_ENTRY_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes field `len` takes as a length-delimited field with a one-byte tag. */
size_t spool_pb_len_field_size(size_t len);
/* Writes a one-byte `tag`, varint `len`; returns the bytes written (at most 11). */
size_t spool_pb_put_len_header(uint8_t *out, uint8_t tag, size_t len);

struct spool_entry_part {
    const uint8_t *buf; /* a packed PublishRequest */
    size_t len;
};

/* Frames Entry{timestamp_ms, publishes = parts, retention{now_ms} if `retention`, proposal} into
 * a raft_malloc'd buffer for raft_apply. SPOOL_ENOMEM or 0. */
int spool_entry_pack(int64_t timestamp_ms, const struct spool_entry_part *parts, size_t n,
                     bool retention, int64_t retention_now_ms, uint64_t proposal, void **buf,
                     size_t *len);

/* Frames Entry{timestamp_ms, `fields` (already packed Entry fields, e.g. slot_fence / imports:
 * cluster/slot_move.h), proposal} the same way (a resharding control entry, batch.c). */
int spool_entry_pack_fields(int64_t timestamp_ms, const uint8_t *fields, size_t fields_len,
                            uint64_t proposal, void **buf, size_t *len);

#endif
