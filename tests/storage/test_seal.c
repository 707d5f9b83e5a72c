/* Rolling and sealing: lz4 blocks, reads from sealed segments, leftovers of interrupted seals,
 * corrupt sealed blocks. */
#include "store_helpers.h"

STORE_FIXTURE(4096, 512)

TestSuite(seal, .init = setup, .fini = teardown);

static const char *chans[3] = {"x", "y", "z"};

/* 150 batches of 3 records, one per channel; seq of each = batch number. */
static void fill(void)
{
    for (uint64_t b = 1; b <= 150; b++)
        for (int c = 0; c < 3; c++)
            cr_assert_eq(append_range(s, b * 3 + (uint64_t)c, chans[c], b, b, (int64_t)b, 60, &err), 0,
                         "%s", err.msg);
}

static void check_all(void)
{
    for (int c = 0; c < 3; c++) {
        struct collect col = {0};
        cr_assert_eq(spool_store_read(s, chans[c], 0, 0, collect_cb, &col, &err), 0, "%s", err.msg);
        cr_assert_eq(col.n, 150, "channel %s", chans[c]);
        cr_assert_eq(col.bad, 0);
        size_t dense = 0;
        while (dense < col.n && col.seqs[dense] == dense + 1) dense++;
        cr_assert_eq(dense, col.n);
    }
}

Test(seal, rolls_and_compresses)
{
    fill();
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_expect_gt(st.sealed_segments, 3);
    cr_expect_eq(st.segments, st.sealed_segments + 1);
    uint64_t sealed_file_bytes = st.bytes_on_disk; /* includes the small active one */
    cr_expect_lt(sealed_file_bytes, st.raw_bytes_sealed, "repetitive payloads compress");
    check_all();
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    cr_expect_eq(spool_store_applied_index(s), 150 * 3 + 2);
    check_all();
}

Test(seal, sealed_read_decompresses_one_block)
{
    fill();
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    struct spool_store_stats a, b;
    spool_store_stats(s, &a);
    struct collect col = {0};
    cr_assert_eq(spool_store_read(s, "x", 10, 1, collect_cb, &col, &err), 0, "%s", err.msg);
    spool_store_stats(s, &b);
    cr_expect_eq(b.disk_reads - a.disk_reads, 1, "one block for one record");
    /* A run of neighbours mostly hits the decompressed block again. */
    struct collect run = {0};
    cr_assert_eq(spool_store_read(s, "x", 10, 20, collect_cb, &run, &err), 0);
    spool_store_stats(s, &a);
    cr_expect_lt(a.disk_reads - b.disk_reads, 20);
}

Test(seal, leftovers_of_interrupted_seal_are_cleaned)
{
    fill();
    spool_store_close(s);
    char lz4[4096], junk[4200];
    newest_segment(dir, ".lz4", lz4, sizeof lz4);
    cr_assert_neq(lz4[0], '\0');
    /* A .log beside its .lz4 (crash before the unlink) and an unfinished .tmp. */
    snprintf(junk, sizeof junk, "%.*s.log", (int)(strlen(lz4) - 4), lz4);
    FILE *f = fopen(junk, "w");
    fputs("garbage", f);
    fclose(f);
    snprintf(junk, sizeof junk, "%s.tmp", lz4);
    f = fopen(junk, "w");
    fputs("garbage", f);
    fclose(f);
    s = open_store(dir, 4096, 512);
    check_all();
    cr_expect_neq(access(junk, F_OK), 0);
}

Test(seal, corrupt_block_is_never_served)
{
    fill();
    spool_store_close(s);
    char lz4[4096];
    newest_segment(dir, ".lz4", lz4, sizeof lz4);
    /* Flip a byte in the first block (just after the 16-byte header). */
    FILE *f = fopen(lz4, "r+b");
    cr_assert_not_null(f);
    fseek(f, 40, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 40, SEEK_SET);
    fputc(ch ^ 0x5a, f);
    fclose(f);
    s = open_store(dir, 4096, 512);
    for (int c = 0; c < 3; c++) {
        cr_expect_eq(spool_store_last_seq(s, chans[c]), 150);
        /* Every record served is intact; a lost one is an error, never data. */
        uint64_t served = 0;
        for (uint64_t q = 0; q < 150; q++) {
            struct collect col = {0};
            int rv = spool_store_read(s, chans[c], q, 1, collect_cb, &col, &err);
            cr_assert(rv == 0 || rv == SPOOL_ECORRUPT);
            cr_assert_eq(col.bad, 0);
            served += col.n;
        }
        cr_expect_gt(served, 100);
    }
    /* The store keeps accepting appends. */
    cr_expect_eq(append_range(s, 10000, "x", 151, 151, 1, 10, &err), 0, "%s", err.msg);
}

Test(seal, records_bigger_than_blocks_and_segments)
{
    /* 3000-byte records: bigger than a block (512), batches bigger than a segment (4096). */
    for (uint64_t b = 0; b < 6; b++)
        cr_assert_eq(append_range(s, b + 1, "big", b * 2 + 1, b * 2 + 2, 1, 3000, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 7, "small", 1, 1, 1, 10, &err), 0);
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_expect_geq(st.sealed_segments, 5);
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    struct collect col = {0};
    cr_assert_eq(spool_store_read(s, "big", 0, 0, collect_cb, &col, &err), 0, "%s", err.msg);
    cr_expect_eq(col.n, 12);
    cr_expect_eq(col.bad, 0);
}

/* Ends of the COMMIT frames in a .log file (frame layout from storage/format.h). */
static size_t commit_ends(const char *path, uint64_t *ends, size_t max)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    uint64_t pos = 16;
    size_t n = 0;
    uint8_t hdr[8];
    fseek(f, 16, SEEK_SET);
    while (n < max && fread(hdr, 1, 8, f) == 8) {
        uint32_t word = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        uint32_t len = word & ((1u << 28) - 1);
        pos += 8 + len;
        if (word >> 28 == 2) ends[n++] = pos;
        fseek(f, (long)pos, SEEK_SET);
    }
    fclose(f);
    return n;
}

/* A full segment is sealed a slice at a time after it stops taking appends, so it may still be
 * an unsynced .log while the next one has batches. If a crash then loses whole batches at its
 * end (the file simply ends early, at a batch boundary), the next segment must not be believed. */
Test(seal, lost_batches_at_the_end_of_a_full_log_are_detected)
{
    spool_store_close(s);
    s = open_store(dir, 256 << 10, 4096);
    uint64_t idx = 0;
    /* ~300 one-record batches of ~1 KB: the first segment fills, then a few batches go to the
     * second while the first is still being sealed; closing abandons that seal. */
    while (idx < 300) {
        cr_assert_eq(append_range(s, idx + 1, "c", idx + 1, idx + 1, 1, 1000, &err), 0, "%s", err.msg);
        idx++;
        struct spool_store_stats st;
        spool_store_stats(s, &st);
        if (st.segments == 2 && st.sealed_segments == 0) break;
    }
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_assert_eq(st.segments, 2);
    cr_assert_eq(st.sealed_segments, 0, "the first segment's seal is still in progress");
    spool_store_close(s);
    char first[4096];
    snprintf(first, sizeof first, "%s/gen-1/0000000000000001.log", dir);
    uint64_t ends[400];
    size_t n = commit_ends(first, ends, 400);
    cr_assert_gt(n, 100);
    cr_assert_eq(truncate(first, (off_t)ends[n - 3]), 0); /* the last two batches vanish cleanly */
    s = open_store(dir, 256 << 10, 4096);
    cr_expect_eq(spool_store_applied_index(s), n - 2);
    cr_expect_eq(spool_store_last_seq(s, "c"), n - 2, "the second segment's batches were dropped");
    struct collect col = {0};
    cr_assert_eq(spool_store_read(s, "c", 0, 0, collect_cb, &col, &err), 0, "%s", err.msg);
    cr_expect_eq(col.n, n - 2);
    cr_expect_eq(col.bad, 0);
    cr_expect_eq(append_range(s, n - 1, "c", n - 1, n - 1, 1, 10, &err), 0, "%s", err.msg);
}
