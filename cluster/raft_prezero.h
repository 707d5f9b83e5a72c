/*
 * Raft segments prepared as written zeros (see raft_prezero.c).
 *
 * libraft prepares each open log segment with posix_fallocate(); on ext4 (and xfs) that leaves
 * unwritten extents, and every O_DIRECT + RWF_NOWAIT log write that touches one fails with
 * EAGAIN and is redone in the libuv thread pool. This file's posix_fallocate() (it replaces
 * libc's in this program) writes zeros past the end of the file instead, so those writes
 * complete from the loop. File contents are the same either way.
 */
#ifndef SPOOL_CLUSTER_RAFT_PREZERO_H
#define SPOOL_CLUSTER_RAFT_PREZERO_H

#include <stdbool.h>
#include <stdint.h>

/* On by default. Also the reference that links raft_prezero.o into the program (shard.c calls it
 * before raft_uv_init). Thread-safe. */
void spool_raft_prezero_enable(bool on);

/* Bytes written as zeros so far (all threads). */
uint64_t spool_raft_prezero_bytes(void);

#endif
