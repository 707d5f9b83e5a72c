/*
 * Raft log segments prepared with written zeros instead of unwritten extents.
 *
 * Why. libraft (0.22, statically linked) probes the data directory and, on ext4, writes its log
 * with O_DIRECT and io_submit(RWF_NOWAIT | RWF_DSYNC) from the loop thread. It prepares each open
 * segment (8 MiB) ahead of time in the thread pool with posix_fallocate(), which on ext4 (and
 * xfs) allocates *unwritten* extents. The kernel refuses a NOWAIT direct write that touches an
 * unwritten block (converting the extent needs a journal transaction), so the write fails with
 * EAGAIN and libraft redoes it in the libuv thread pool: a futex hand-over to a pool thread, a
 * blocking io_submit + io_getevents there, and an async wake-up back to the loop, for the first
 * write into every 4 KiB block. In the 3-node publish bench (64 in flight, 100 B) that was every
 * second log write on every node (~3,500 futex calls per node in 5 s against ~2,600 log
 * writes), and at 1 KiB payloads nearly every write. Under CPU contention each of those
 * hand-overs waits for a pool thread to be scheduled, on the leader and on each follower before
 * it can answer, which is commit latency.
 *
 * What. This file defines posix_fallocate(), which replaces libc's for the whole program (libraft
 * is the only caller: UvOsFallocate, for fresh O_EXCL segment files and its 4 KiB probe file).
 * The part of the range past the file's current end is written with zeros (O_DIRECT through a
 * second descriptor when 4 KiB aligned, as libraft's always is; else buffered, and the pages then
 * dropped from the page cache, since a direct NOWAIT write over cached pages fails with EAGAIN
 * too) and fdatasync'ed, so its extents are allocated and written; the part inside the file
 * (none, for libraft) is fallocate()d as before. The file then reads exactly as a fallocate()d
 * one (zeros), so the on-disk format, libraft's recovery and open-segment scanning are unchanged;
 * only the extents' state differs. After it, libraft's log writes are overwrites of written
 * blocks and complete from the loop (measured: futex calls ~3,500 -> 8-25 per node in 5 s,
 * io_getevents no longer blocks).
 *
 * Cost. Writing 8 MiB of zeros and syncing them takes ~25 ms of a pool thread on the bench
 * machine (~365 MB/s), once per segment (libraft keeps two prepared per group), never on the
 * loop thread. Disk space is the same as with fallocate.
 *
 * Errors follow posix_fallocate(): the error number is returned, errno is not the interface.
 * EOPNOTSUPP from fallocate() for a range inside the file is returned as is (libraft then
 * emulates it with its own one-byte writes); past the end of the file no fallocate() is needed.
 * spool_raft_prezero_enable(false) restores plain fallocate() for every range (tests).
 */
#include "cluster/raft_prezero.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_bool enabled = true;
static atomic_uint_fast64_t zeroed;

void spool_raft_prezero_enable(bool on) { atomic_store(&enabled, on); }

uint64_t spool_raft_prezero_bytes(void) { return atomic_load(&zeroed); }

#define ZERO_CHUNK (256 * 1024)

static char *zero_chunk; /* ZERO_CHUNK zeros, 4 KiB aligned for O_DIRECT; NULL if out of memory */
static pthread_once_t zero_chunk_once = PTHREAD_ONCE_INIT;

static void zero_chunk_init(void)
{
    void *p;
    if (posix_memalign(&p, 4096, ZERO_CHUNK) == 0) {
        memset(p, 0, ZERO_CHUNK);
        zero_chunk = p;
    }
}

/* Writes zeros over [from, end) of fd. Returns 0 or an error number. */
static int pwrite_zeros(int fd, off_t from, off_t end)
{
    while (from < end) {
        size_t n = end - from < ZERO_CHUNK ? (size_t)(end - from) : ZERO_CHUNK;
        ssize_t w = pwrite(fd, zero_chunk, n, from);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        from += w;
        atomic_fetch_add(&zeroed, (uint64_t)w);
    }
    return 0;
}

/* Writes zeros over [from, end) of fd and syncs them. Direct writes through a second descriptor
 * when the range is 4 KiB aligned (libraft's always is): no page-cache copy, no writeback, no
 * cached pages left behind. Otherwise (or if the filesystem refuses O_DIRECT) buffered writes,
 * whose pages are then dropped. Returns 0 or an error number. */
static int write_zeros(int fd, off_t from, off_t end)
{
    pthread_once(&zero_chunk_once, zero_chunk_init);
    if (zero_chunk == NULL)
        return ENOMEM;
    int rc = EINVAL;
    if (from % 4096 == 0 && end % 4096 == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int dfd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
        if (dfd >= 0) {
            rc = pwrite_zeros(dfd, from, end);
            close(dfd);
        }
    }
    bool buffered = rc == EINVAL; /* no direct descriptor, or a direct write refused */
    if (buffered)
        rc = pwrite_zeros(fd, from, end);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = errno;
    /* Clean cached pages over a range make a NOWAIT direct write fail with EAGAIN as well (the
     * kernel would have to invalidate them): drop them. Advice only, so its failure is not. */
    if (rc == 0 && buffered)
        (void)posix_fadvise(fd, from, end - from, POSIX_FADV_DONTNEED);
    return rc;
}

int posix_fallocate(int fd, off_t offset, off_t len)
{
    if (offset < 0 || len <= 0)
        return EINVAL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode))
        return S_ISFIFO(st.st_mode) ? ESPIPE : ENODEV;
    off_t end = offset + len;
    if (end < offset)
        return EFBIG;
    /* [offset, from) keeps its data and is only reserved; [from, end) is past the end: zeros. */
    off_t from = end;
    if (atomic_load(&enabled) && end > st.st_size)
        from = offset > st.st_size ? offset : st.st_size;
    if (from > offset) {
        int rv;
        do
            rv = fallocate(fd, 0, offset, from - offset);
        while (rv != 0 && errno == EINTR);
        if (rv != 0)
            return errno;
    }
    return from < end ? write_zeros(fd, from, end) : 0;
}
