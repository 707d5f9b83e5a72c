/*
 * Raft segments prepared as written zeros (cluster/raft_prezero.h). posix_fallocate() in this
 * program is raft_prezero.c's: past the end of the file it writes zeros, so a direct write with
 * RWF_NOWAIT (what libraft submits from the loop) into the prepared range completes instead of
 * failing with EAGAIN, as it does on ext4's unwritten extents after a plain fallocate(). The file
 * reads as a fallocate()d one: the size asked for, zeros past the old end, data before it kept.
 * Checks that need O_DIRECT and RWF_NOWAIT skip themselves where the filesystem has neither.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cluster/raft_prezero.h"

#define SEG (1024 * 1024)

static char dir[256];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/spool-prezero-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(dir));
    spool_raft_prezero_enable(true);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)system(cmd);
    spool_raft_prezero_enable(true);
}

/* A fresh file prepared like a libraft segment (O_EXCL, then posix_fallocate of SEG bytes). */
static void prepare(const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(posix_fallocate(fd, 0, SEG), 0);
    close(fd);
}

/* One 4 KiB direct write with RWF_NOWAIT | RWF_DSYNC at off. Returns bytes written, -errno on
 * failure, or 1 when the filesystem cannot say (no O_DIRECT, or no RWF_NOWAIT). */
static ssize_t nowait_write(const char *path, off_t off)
{
    int fd = open(path, O_WRONLY | O_DIRECT);
    if (fd < 0)
        return 1;
    void *buf;
    cr_assert_eq(posix_memalign(&buf, 4096, 4096), 0);
    memset(buf, 'x', 4096);
    struct iovec iov = {buf, 4096};
    ssize_t n = pwritev2(fd, &iov, 1, off, RWF_NOWAIT | RWF_DSYNC);
    int e = errno;
    free(buf);
    close(fd);
    if (n < 0 && (e == EOPNOTSUPP || e == EINVAL))
        return 1;
    return n < 0 ? -e : n;
}

/* Index of the first byte that is not zero, or n (one assertion per buffer, not per byte). */
static size_t first_nonzero(const char *b, size_t n)
{
    size_t i = 0;
    while (i < n && b[i] == 0)
        i++;
    return i;
}

/* Extents of the file: how many, and how many unwritten. false where FIEMAP is not supported. */
static bool extents(const char *path, unsigned *n, unsigned *unwritten)
{
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    size_t cap = 256;
    struct fiemap *fm = calloc(1, sizeof *fm + cap * sizeof fm->fm_extents[0]);
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = (uint32_t)cap;
    int rv = ioctl(fd, FS_IOC_FIEMAP, fm);
    close(fd);
    if (rv != 0) {
        free(fm);
        return false;
    }
    *n = fm->fm_mapped_extents;
    *unwritten = 0;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++)
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            (*unwritten)++;
    free(fm);
    return true;
}

TestSuite(raft_prezero, .init = setup, .fini = teardown, .timeout = 30);

Test(raft_prezero, prepared_range_reads_as_zeros_of_the_asked_size)
{
    char path[512];
    uint64_t before = spool_raft_prezero_bytes();
    prepare("open-1", path, sizeof path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, SEG);
    cr_assert_geq((long long)st.st_blocks * 512, SEG, "the whole range is allocated");
    cr_assert_eq(spool_raft_prezero_bytes() - before, SEG);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static char got[SEG];
    cr_assert_eq(fread(got, 1, SEG, f), (size_t)SEG);
    fclose(f);
    cr_assert_eq(first_nonzero(got, SEG), SEG, "a byte that is not zero");
    /* What libraft's NOWAIT writes need: allocated and written, no unwritten extent left. */
    unsigned n, unwritten;
    if (extents(path, &n, &unwritten)) {
        cr_assert_gt(n, 0);
        cr_assert_eq(unwritten, 0, "%u of %u extents unwritten", unwritten, n);
    }
}

Test(raft_prezero, data_before_the_end_of_the_file_is_kept)
{
    char path[512];
    snprintf(path, sizeof path, "%s/partial", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(pwrite(fd, "hello", 5, 0), 5);
    uint64_t before = spool_raft_prezero_bytes();
    cr_assert_eq(posix_fallocate(fd, 0, 65536), 0);
    cr_assert_eq(spool_raft_prezero_bytes() - before, 65536 - 5, "only past the old end");
    char got[65536];
    cr_assert_eq(pread(fd, got, sizeof got, 0), (ssize_t)sizeof got);
    cr_assert_eq(memcmp(got, "hello", 5), 0);
    cr_assert_eq(first_nonzero(got + 5, sizeof got - 5), sizeof got - 5, "a byte that is not zero");
    /* A range wholly inside the file only reserves: nothing written, data kept. */
    before = spool_raft_prezero_bytes();
    cr_assert_eq(posix_fallocate(fd, 0, 4096), 0);
    cr_assert_eq(spool_raft_prezero_bytes(), before);
    cr_assert_eq(pread(fd, got, 5, 0), 5);
    cr_assert_eq(memcmp(got, "hello", 5), 0);
    cr_assert_eq(posix_fallocate(fd, -1, 10), EINVAL);
    cr_assert_eq(posix_fallocate(fd, 0, 0), EINVAL);
    close(fd);
    cr_assert_eq(posix_fallocate(-1, 0, 10), EBADF);
}

Test(raft_prezero, nowait_direct_writes_into_a_prepared_segment_complete)
{
    char path[512];
    prepare("open-2", path, sizeof path);
    /* The first write into several fresh blocks, spread over the segment, as libraft's are. */
    for (off_t off = 0; off < SEG; off += 256 * 1024) {
        ssize_t n = nowait_write(path, off);
        if (n == 1)
            cr_skip_test("no O_DIRECT or RWF_NOWAIT on %s", dir);
        cr_assert_eq(n, 4096, "NOWAIT write at %lld: %s", (long long)off,
                     n < 0 ? strerror((int)-n) : "short");
    }
}

/* What the previous test guards against: with plain fallocate (the feature off) a NOWAIT direct
 * write into a fresh block is refused on filesystems with unwritten extents (ext4, xfs). Where
 * it is not refused the filesystem has nothing to fix and this only checks the feature's off. */
Test(raft_prezero, off_leaves_fallocate_as_it_was)
{
    char path[512];
    spool_raft_prezero_enable(false);
    uint64_t before = spool_raft_prezero_bytes();
    prepare("open-3", path, sizeof path);
    cr_assert_eq(spool_raft_prezero_bytes(), before, "nothing written with the feature off");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, SEG);
    unsigned ext, unwritten;
    if (extents(path, &ext, &unwritten))
        cr_log_info("plain fallocate: %u extents, %u unwritten", ext, unwritten);
    ssize_t n = nowait_write(path, 0);
    if (n == 1)
        cr_skip_test("no O_DIRECT or RWF_NOWAIT on %s", dir);
    cr_log_info("plain fallocate, NOWAIT direct write: %zd (%s)", n,
                n < 0 ? strerror((int)-n) : "ok");
    cr_assert(n == 4096 || n == -EAGAIN);
}
