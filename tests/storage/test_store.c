/* The store's core contract: batches, seqs, reads, recovery of torn tails, tail cache. */
#include "store_helpers.h"

#include "storage/crc32c.h"

STORE_FIXTURE(0, 0)

TestSuite(store, .init = setup, .fini = teardown);

Test(store, empty_store)
{
    cr_expect_eq(spool_store_applied_index(s), 0);
    cr_expect_eq(spool_store_last_seq(s, "a"), 0);
    cr_expect_eq(spool_store_first_seq(s, "a"), 1);
    struct collect c = {0};
    cr_expect_eq(spool_store_read(s, "a", 0, 0, collect_cb, &c, &err), 0);
    cr_expect_eq(c.n, 0);
    cr_expect_eq(spool_store_seq_at_time(s, "a", 5), 1);
}

Test(store, append_and_read)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 3, 100, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 2, "b", 1, 2, 100, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 3, "a", 4, 5, 200, 10, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_applied_index(s), 3);
    cr_expect_eq(spool_store_last_seq(s, "a"), 5);
    cr_expect_eq(spool_store_first_seq(s, "a"), 1);
    cr_expect_eq(spool_store_last_seq(s, "b"), 2);

    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, "a", 2, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.n, 3);
    cr_expect_eq(c.seqs[0], 3);
    cr_expect_eq(c.seqs[2], 5);
    cr_expect_eq(c.bad, 0);

    struct collect lim = {0};
    cr_assert_eq(spool_store_read(s, "a", 0, 2, collect_cb, &lim, &err), 0);
    cr_expect_eq(lim.n, 2);

    struct collect stop = {.stop_after = 1};
    cr_assert_eq(spool_store_read(s, "a", 0, 0, collect_cb, &stop, &err), 0);
    cr_expect_eq(stop.n, 1);

    struct collect back = {0};
    cr_assert_eq(spool_store_read_backward(s, "a", 0, 2, collect_cb, &back, &err), 0);
    cr_assert_eq(back.n, 2);
    cr_expect_eq(back.seqs[0], 5);
    cr_expect_eq(back.seqs[1], 4);

    struct collect before = {0};
    cr_assert_eq(spool_store_read_backward(s, "a", 3, 0, collect_cb, &before, &err), 0);
    cr_assert_eq(before.n, 2);
    cr_expect_eq(before.seqs[0], 2);
    cr_expect_eq(before.seqs[1], 1);

    cr_expect_eq(spool_store_seq_at_time(s, "a", 150), 4);
    cr_expect_eq(spool_store_seq_at_time(s, "a", 100), 1);
    cr_expect_eq(spool_store_seq_at_time(s, "a", 201), 6);
}

Test(store, same_channel_twice_in_one_batch)
{
    struct rec r[3];
    make_rec(&r[0], "a", 1, 1, 0);
    make_rec(&r[1], "b", 1, 1, 0);
    make_rec(&r[2], "a", 2, 1, 0);
    const Spool__Record *p[3] = {&r[0].r, &r[1].r, &r[2].r};
    cr_assert_eq(spool_store_append_batch(s, 1, p, 3, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_last_seq(s, "a"), 2);
    cr_expect_eq(spool_store_last_seq(s, "b"), 1);
}

Test(store, rejected_batch_writes_nothing)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 2, 1, 0, &err), 0);
    struct rec r[2];
    make_rec(&r[0], "a", 3, 1, 0);
    make_rec(&r[1], "a", 5, 1, 0); /* gap */
    const Spool__Record *p[2] = {&r[0].r, &r[1].r};
    cr_expect_eq(spool_store_append_batch(s, 2, p, 2, &err), SPOOL_ECONFLICT);
    cr_expect_eq(spool_store_last_seq(s, "a"), 2);
    cr_expect_eq(spool_store_applied_index(s), 1);
    /* An index at or below the applied one is refused; so is a record without a channel. */
    cr_expect_eq(append_range(s, 1, "a", 3, 3, 1, 0, &err), SPOOL_EINVAL);
    struct rec bad;
    make_rec(&bad, "", 1, 1, 0);
    const Spool__Record *pb[1] = {&bad.r};
    cr_expect_eq(spool_store_append_batch(s, 5, pb, 1, &err), SPOOL_EINVAL);
    /* A new channel that only a rejected batch named is not listed. */
    make_rec(&r[0], "ghost", 2, 1, 0);
    cr_expect_eq(spool_store_append_batch(s, 6, p, 1, &err), SPOOL_ECONFLICT);
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_expect_eq(st.channels, 1);
    /* The store still works and the index continues. */
    cr_expect_eq(append_range(s, 7, "a", 3, 3, 1, 0, &err), 0, "%s", err.msg);
}

Test(store, mark_applied_survives_reopen)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 1, 1, 0, &err), 0);
    cr_assert_eq(spool_store_mark_applied(s, 9, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_applied_index(s), 9);
    cr_expect_eq(spool_store_mark_applied(s, 3, &err), SPOOL_EINVAL);
    spool_store_close(s);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_applied_index(s), 9);
    cr_expect_eq(spool_store_last_seq(s, "a"), 1);
}

static int count_channel(void *arg, const char *ch)
{
    (void)ch;
    (*(int *)arg)++;
    return 0;
}

Test(store, reopen_rebuilds_index)
{
    for (uint64_t i = 0; i < 50; i++) {
        const char *ch = i % 2 ? "odd" : "even";
        uint64_t seq = i / 2 + 1;
        cr_assert_eq(append_range(s, i + 1, ch, seq, seq, (int64_t)i, 30, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(spool_store_sync(s, &err), 0);
    spool_store_close(s);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_applied_index(s), 50);
    cr_expect_eq(spool_store_last_seq(s, "odd"), 25);
    cr_expect_eq(spool_store_last_seq(s, "even"), 25);
    int n = 0;
    spool_store_channels(s, count_channel, &n);
    cr_expect_eq(n, 2);
    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, "odd", 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c.n, 25);
    cr_expect_eq(c.bad, 0);
    /* After a reopen the cache is cold: the reads came from disk. */
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_expect_geq(st.disk_reads, 25);
    cr_expect_eq(st.records, 50);
    cr_expect_eq(spool_store_seq_at_time(s, "odd", 10), 6); /* odd seq k has ts 2k-1 */
}

Test(store, torn_batch_is_dropped_whole)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 3, 1, 20, &err), 0);
    cr_assert_eq(append_range(s, 2, "a", 4, 8, 1, 20, &err), 0);
    spool_store_close(s);
    char seg[4096];
    newest_segment(dir, ".log", seg, sizeof seg);
    struct stat st;
    cr_assert_eq(stat(seg, &st), 0);
    /* Cut inside the second batch's COMMIT frame. */
    cr_assert_eq(truncate(seg, st.st_size - 3), 0);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_applied_index(s), 1);
    cr_expect_eq(spool_store_last_seq(s, "a"), 3);
    /* Raft replays entry 2 and it applies cleanly. */
    cr_assert_eq(append_range(s, 2, "a", 4, 8, 1, 20, &err), 0, "%s", err.msg);
    spool_store_close(s);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_last_seq(s, "a"), 8);
    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, "a", 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c.n, 8);
    cr_expect_eq(c.bad, 0);
}

Test(store, tail_reads_touch_no_disk)
{
    spool_store_close(s);
    struct spool_store_config cfg = {.dir = dir, .tail_cache_entries = 16};
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0);
    cr_assert_eq(append_range(s, 1, "a", 1, 40, 1, 50, &err), 0, "%s", err.msg);
    struct spool_store_stats st0, st1, st2;
    spool_store_stats(s, &st0);
    cr_expect_gt(st0.tail_cache_bytes, 0);
    struct collect c = {0};
    cr_assert_eq(spool_store_read_backward(s, "a", 0, 16, collect_cb, &c, &err), 0);
    cr_expect_eq(c.n, 16);
    spool_store_stats(s, &st1);
    cr_expect_eq(st1.disk_reads, st0.disk_reads, "the newest 16 came from memory");
    cr_expect_eq(st1.tail_cache_hits, st0.tail_cache_hits + 16);
    struct collect old = {0};
    cr_assert_eq(spool_store_read(s, "a", 0, 10, collect_cb, &old, &err), 0);
    spool_store_stats(s, &st2);
    cr_expect_eq(st2.disk_reads, st1.disk_reads + 10, "older records come from the segment");
    cr_expect_eq(old.bad + c.bad, 0);
}

Test(store, tail_cache_bytes_bounded)
{
    spool_store_close(s);
    struct spool_store_config cfg = {.dir = dir, .tail_cache_bytes = 64 << 10};
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0);
    char name[32];
    for (int ch = 0; ch < 100; ch++) {
        snprintf(name, sizeof name, "c%d", ch);
        cr_assert_eq(append_range(s, (uint64_t)ch + 1, name, 1, 20, 1, 200, &err), 0, "%s", err.msg);
        struct spool_store_stats st;
        spool_store_stats(s, &st);
        cr_assert_leq(st.tail_cache_bytes, 64 << 10);
    }
    /* Evicted channels still read correctly from disk. */
    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, "c0", 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c.n, 20);
    cr_expect_eq(c.bad, 0);
}

Test(store, sync_counts_fsyncs)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 1, 1, 0, &err), 0);
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    uint64_t before = st.fsyncs;
    cr_assert_eq(spool_store_sync(s, &err), 0, "%s", err.msg);
    spool_store_stats(s, &st);
    cr_expect_gt(st.fsyncs, before);
}

/* A visitor that reads the same channel again while holding its record (the state machine's
 * dedup rebuild reads from inside a channels() callback). */
struct nested {
    struct spool_store *s;
    int bad, inner;
};

static int inner_cb(void *arg, const Spool__Record *r)
{
    struct nested *n = arg;
    n->inner++;
    if (r->seq != 1 && r->seq != 2) n->bad++;
    return 0;
}

static int outer_cb(void *arg, const Spool__Record *r)
{
    struct nested *n = arg;
    char want[64];
    uint64_t seq = r->seq;
    snprintf(want, sizeof want, "%s#%llu", r->channel, (unsigned long long)seq);
    struct spool_err e = {0};
    /* Two inner decodes: the second reuses whatever the first released. */
    if (spool_store_read(n->s, r->channel, 0, 2, inner_cb, n, &e) != 0) n->bad++;
    if (r->seq != seq) n->bad++;
    /* The outer record must still be intact after the nested decode. */
    if (r->data.len < strlen(want) || memcmp(r->data.data, want, strlen(want)) != 0) n->bad++;
    return 0;
}

static int channel_reader(void *arg, const char *ch)
{
    struct nested *n = arg;
    struct spool_err e = {0};
    if (spool_store_read_backward(n->s, ch, 0, 0, outer_cb, n, &e) != 0) n->bad++;
    return 0;
}

Test(store, nested_reads_from_callbacks)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 30, 1, 300, &err), 0);
    cr_assert_eq(append_range(s, 2, "b", 1, 30, 1, 3000, &err), 0);
    spool_store_close(s);
    s = open_store(dir, 0, 0); /* cold: decode from disk, arena overflow paths for 3000 B */
    struct nested n = {.s = s};
    spool_store_channels(s, channel_reader, &n);
    cr_expect_eq(n.bad, 0);
    cr_expect_eq(n.inner, 120);
}

Test(store, second_open_of_the_same_dir_is_refused)
{
    struct spool_store_config cfg = {.dir = dir};
    struct spool_store *other = NULL;
    cr_expect_eq(spool_store_open(&other, &cfg, &err), SPOOL_EBUSY);
    cr_expect_null(other);
    spool_store_close(s);
    s = NULL;
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0, "%s", err.msg);
}

Test(store, newer_format_is_refused_not_repaired)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 3, 1, 20, &err), 0);
    spool_store_close(s);
    s = NULL;
    char seg[4096];
    newest_segment(dir, ".log", seg, sizeof seg);
    /* Rewrite the header as an intact one of version 2 (checksum recomputed). */
    FILE *f = fopen(seg, "r+b");
    uint8_t hdr[16];
    cr_assert_eq(fread(hdr, 1, 16, f), 16);
    hdr[4] = 2;
    uint32_t crc = spool_crc32c(0, hdr, 12);
    for (int i = 0; i < 4; i++) hdr[12 + i] = (uint8_t)(crc >> (8 * i));
    fseek(f, 0, SEEK_SET);
    fwrite(hdr, 1, 16, f);
    fclose(f);
    struct stat before;
    cr_assert_eq(stat(seg, &before), 0);
    struct spool_store_config cfg = {.dir = dir};
    cr_expect_eq(spool_store_open(&s, &cfg, &err), SPOOL_EINVAL);
    cr_expect_null(s);
    struct stat after;
    cr_assert_eq(stat(seg, &after), 0);
    cr_expect_eq(after.st_size, before.st_size, "the file was left alone");
}

static void write_bytes(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

Test(store, garbage_files_neither_crash_nor_serve)
{
    spool_store_close(s);
    s = NULL;
    uint8_t junk[3000];
    uint64_t x = 99;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        junk[i] = (uint8_t)(x >> 56);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/gen-1/0000000000000001.lz4", dir);
    write_bytes(path, junk, sizeof junk);
    snprintf(path, sizeof path, "%s/gen-1/0000000000000002.log", dir);
    write_bytes(path, junk + 100, 2000);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_applied_index(s), 0);
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    cr_expect_eq(st.channels, 0);
    cr_expect_eq(append_range(s, 1, "a", 1, 2, 1, 10, &err), 0, "%s", err.msg);
    spool_store_close(s);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_last_seq(s, "a"), 2);
    spool_store_close(s);
    s = NULL;
    /* A CURRENT that names nothing sensible is an error, not a crash or a fresh store. */
    snprintf(path, sizeof path, "%s/CURRENT", dir);
    write_bytes(path, junk, 40);
    struct spool_store_config cfg = {.dir = dir};
    cr_expect_eq(spool_store_open(&s, &cfg, &err), SPOOL_ECORRUPT);
    cr_expect_null(s);
}

static int newest_read_cb(void *arg, const Spool__Record *rec)
{
    *(int64_t *)arg = rec->timestamp_ms;
    return 1;
}

/* What spool_store_newest_ts must equal: the newest retained record read back (the state
 * machine's old way of finding it). */
static int64_t newest_read(const char *ch)
{
    int64_t ts = INT64_MIN;
    cr_assert_eq(spool_store_read_backward(s, ch, 0, 1, newest_read_cb, &ts, &err), 0, "%s", err.msg);
    return ts;
}

Test(store, newest_ts_is_the_newest_retained_record)
{
    uint64_t last = 99;
    cr_expect_eq(spool_store_newest_ts(s, "a", &last), INT64_MIN, "unknown channel");
    cr_expect_eq(last, 0);
    cr_assert_eq(append_range(s, 1, "a", 1, 3, 100, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 2, "b", 1, 1, 500, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 3, "a", 4, 4, 250, 10, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_newest_ts(s, "a", &last), 250);
    cr_expect_eq(last, 4);
    cr_expect_eq(spool_store_newest_ts(s, "a", NULL), newest_read("a"));
    cr_expect_eq(spool_store_newest_ts(s, "b", NULL), 500);

    /* Rebuilt by a reopen (from the segment files). */
    cr_assert_eq(spool_store_sync(s, &err), 0);
    spool_store_close(s);
    s = open_store(dir, 0, 0);
    cr_expect_eq(spool_store_newest_ts(s, "a", &last), 250);
    cr_expect_eq(last, 4);
    cr_expect_eq(spool_store_newest_ts(s, "a", NULL), newest_read("a"));

    /* Retention that trims some records keeps the newest; one that trims all forgets it (the
     * channel keeps its last_seq). */
    struct spool_retention keep2 = {.max_count = 2};
    cr_assert_eq(spool_store_set_retention(s, "a", &keep2, &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 1000, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_first_seq(s, "a"), 3);
    cr_expect_eq(spool_store_newest_ts(s, "a", NULL), 250);
    struct spool_retention young = {.max_age_ms = 10};
    cr_assert_eq(spool_store_set_retention(s, "b", &young, &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 1000, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_first_seq(s, "b"), 2);
    cr_expect_eq(spool_store_newest_ts(s, "b", &last), INT64_MIN);
    cr_expect_eq(last, 1);
    cr_expect_eq(newest_read("b"), INT64_MIN);

    /* Delete forgets it; the next record brings it back. */
    cr_assert_eq(spool_store_delete_channel(s, "a", &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_newest_ts(s, "a", &last), INT64_MIN);
    cr_expect_eq(last, 4);
    cr_assert_eq(append_range(s, 10, "a", 5, 5, 90, 10, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_newest_ts(s, "a", NULL), 90);
    cr_expect_eq(spool_store_newest_ts(s, "a", NULL), newest_read("a"));
}

/* The batched lookup answers exactly as one lookup per channel: known, unknown, emptied by
 * retention, and more channels than one chunk (32) of the batch. */
Test(store, newest_ts_many_matches_newest_ts)
{
    char names[80][16];
    const char *ptrs[80];
    for (int i = 0; i < 80; i++) {
        snprintf(names[i], sizeof names[i], "ch%d", i);
        ptrs[i] = names[i];
        if (i % 3 != 0) /* every third channel stays unknown */
            cr_assert_eq(append_range(s, (uint64_t)i + 1, names[i], 1, (uint64_t)(i % 4) + 1,
                                      1000 + i * 7, 10, &err), 0, "%s", err.msg);
    }
    struct spool_retention none = {.max_count = 1};
    cr_assert_eq(spool_store_set_retention(s, "ch5", &none, &err), 0);
    cr_assert_eq(spool_store_delete_channel(s, "ch7", &err), 0, "%s", err.msg);
    cr_assert_eq(spool_store_enforce_retention(s, 5000, &err), 0, "%s", err.msg);
    int64_t ts[80];
    uint64_t last[80];
    spool_store_newest_ts_many(s, ptrs, 80, ts, last);
    for (int i = 0; i < 80; i++) {
        uint64_t l1 = 12345;
        cr_expect_eq(ts[i], spool_store_newest_ts(s, names[i], &l1), "%s", names[i]);
        cr_expect_eq(last[i], l1, "%s", names[i]);
    }
    cr_expect_eq(ts[0], INT64_MIN);
    cr_expect_eq(last[0], 0);
    cr_expect_eq(ts[7], INT64_MIN, "deleted");
    cr_expect_eq(last[4], 1);
    cr_expect_eq(ts[4], 1000 + 4 * 7);
    spool_store_newest_ts_many(s, ptrs, 0, ts, last); /* nothing asked: nothing touched */
}

/* Small batches around a big one (40 KiB) come back complete and in order, before and after
 * reopening (a buffered variant of the append path once wrote the big batch before the small
 * ones pending ahead of it). */
Test(store, a_big_batch_between_small_ones_keeps_the_order)
{
    cr_assert_eq(append_range(s, 1, "a", 1, 3, 100, 50, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(s, 2, "a", 4, 13, 100, 4096, &err), 0, "%s", err.msg); /* 40 KiB */
    cr_assert_eq(append_range(s, 3, "a", 14, 15, 100, 50, &err), 0, "%s", err.msg);
    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, "a", 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c.n, 15);
    cr_expect_eq(c.bad, 0);
    spool_store_close(s);
    struct spool_store_config cfg = {.dir = dir};
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_applied_index(s), 3, "recovery cut the segment short");
    struct collect c2 = {0};
    cr_assert_eq(spool_store_read(s, "a", 0, 0, collect_cb, &c2, &err), 0, "%s", err.msg);
    cr_expect_eq(c2.n, 15);
    cr_expect_eq(c2.bad, 0);
}
