/*
 * libraft's kernel AIO calls, with io_destroy() taken off the calling thread (see raft_aio.c).
 *
 * libraft (statically linked) destroys the AIO context of each log segment writer from the loop
 * thread when the segment is closed; io_destroy() waits for an RCU grace period, 26-40 ms per
 * call on the bench machine, about once a second per node at 1 KiB payloads: the whole node's
 * loop stood still meanwhile. This file's io_destroy() hands the context to one background
 * thread instead.
 */
#ifndef SPOOL_CLUSTER_RAFT_AIO_H
#define SPOOL_CLUSTER_RAFT_AIO_H

#include <stdbool.h>
#include <stdint.h>

/* On by default. Also the reference that links raft_aio.o into the program, so that its
 * io_setup/io_destroy/io_submit/io_getevents are used instead of libraft's syscall.o (shard.c
 * calls it before raft_uv_init). Thread-safe. */
void spool_raft_aio_enable(bool on);

/* Contexts destroyed by the background thread so far. */
uint64_t spool_raft_aio_deferred(void);

#endif
