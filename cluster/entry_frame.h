/*
 * The framing of every Raft command payload Spool writes (shard groups and the metadata group):
 *
 *     u64 little-endian length of the packed protobuf message | the message | zero padding
 *
 * padded to a multiple of 8 bytes, because raft_uv refuses entry buffers whose length is not
 * ("entry buffers must be 8-byte aligned"), and protobuf cannot skip trailing zeros itself.
 */
#ifndef SPOOL_CLUSTER_ENTRY_FRAME_H
#define SPOOL_CLUSTER_ENTRY_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* A raft_malloc'd frame for a payload of `payload` bytes: the length prefix written and the
 * padding zeroed; returns where the payload goes (NULL when out of memory), the buffer and its
 * framed length in *buf / *len. Callers that write the payload themselves use this. */
uint8_t *spool_entry_frame_alloc(size_t payload, void **buf, size_t *len);
/* Packs `m` framed into a raft_malloc'd buffer (what raft_apply takes). SPOOL_ENOMEM or 0. */
int spool_entry_frame(const ProtobufCMessage *m, void **buf, size_t *len);
/* The packed message inside a framed buffer; -1 if the frame is malformed. */
int spool_entry_unframe(const void *buf, size_t len, const uint8_t **payload, size_t *payload_len);

#endif
