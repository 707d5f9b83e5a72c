/* Retention by count, age and bytes; deleting channels; reclaiming segments; all persisted. */
#include "store_helpers.h"

STORE_FIXTURE(4096, 512)

TestSuite(retention, .init = setup, .fini = teardown);

static uint64_t idx;

/* Appends `n` records to `ch`, one batch each, timestamps = seq. */
static void put(const char *ch, uint64_t n, size_t size)
{
    uint64_t last = spool_store_last_seq(s, ch);
    for (uint64_t q = last + 1; q <= last + n; q++)
        cr_assert_eq(append_range(s, ++idx, ch, q, q, (int64_t)q, size, &err), 0, "%s", err.msg);
}

static size_t count(const char *ch, uint64_t *first_read)
{
    struct collect c = {0};
    cr_assert_eq(spool_store_read(s, ch, 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.bad, 0);
    if (first_read != NULL) *first_read = c.n ? c.seqs[0] : 0;
    return c.n;
}

Test(retention, by_count_default_and_persisted)
{
    idx = 0;
    spool_store_close(s);
    struct spool_store_config cfg = {.dir = dir, .segment_bytes = 4096, .retention = {.max_count = 10}};
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0);
    put("a", 30, 20);
    cr_assert_eq(spool_store_enforce_retention(s, 1000, &err), 0, "%s", err.msg);
    uint64_t first;
    cr_expect_eq(count("a", &first), 10);
    cr_expect_eq(first, 21);
    cr_expect_eq(spool_store_first_seq(s, "a"), 21);
    cr_expect_eq(spool_store_last_seq(s, "a"), 30);
    spool_store_close(s);
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0);
    cr_expect_eq(spool_store_first_seq(s, "a"), 21);
    cr_expect_eq(count("a", NULL), 10);
}

Test(retention, by_age_override)
{
    idx = 0;
    put("a", 100, 20);
    put("b", 100, 20);
    struct spool_retention r = {.max_age_ms = 50};
    cr_assert_eq(spool_store_set_retention(s, "a", &r, &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 100, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_first_seq(s, "a"), 50, "ts >= 100 - 50 kept");
    cr_expect_eq(spool_store_first_seq(s, "b"), 1, "no default limit");
    /* The override survives a reopen; NULL puts the channel back on the default. */
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    cr_assert_eq(spool_store_enforce_retention(s, 120, &err), 0);
    cr_expect_eq(spool_store_first_seq(s, "a"), 70);
    cr_assert_eq(spool_store_set_retention(s, "a", NULL, &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 200, &err), 0);
    cr_expect_eq(spool_store_first_seq(s, "a"), 70);
}

Test(retention, by_bytes)
{
    idx = 0;
    put("a", 50, 100);
    struct spool_retention r = {.max_bytes = 1000};
    cr_assert_eq(spool_store_set_retention(s, "a", &r, &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 1, &err), 0);
    size_t n = count("a", NULL);
    cr_expect_gt(n, 5);
    cr_expect_lt(n, 10);
    cr_expect_eq(spool_store_first_seq(s, "a"), 51 - n);
}

Test(retention, delete_keeps_last_seq_and_reclaims)
{
    idx = 0;
    put("a", 200, 100);
    put("b", 5, 10);
    struct spool_store_stats before, after;
    spool_store_stats(s, &before);
    cr_assert_eq(spool_store_delete_channel(s, "a", &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_last_seq(s, "a"), 200);
    cr_expect_eq(spool_store_first_seq(s, "a"), 201);
    cr_expect_eq(count("a", NULL), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 1, &err), 0, "%s", err.msg);
    spool_store_stats(s, &after);
    cr_expect_lt(after.bytes_on_disk * 2, before.bytes_on_disk, "segments of a were deleted");
    cr_expect_lt(after.segments, before.segments);
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    cr_expect_eq(spool_store_last_seq(s, "a"), 200, "last_seq survives the deleted segments");
    cr_expect_eq(spool_store_first_seq(s, "a"), 201);
    cr_expect_eq(spool_store_applied_index(s), 205);
    cr_expect_eq(count("b", NULL), 5);
    /* seqs are never reused */
    cr_expect_eq(append_range(s, 206, "a", 1, 1, 1, 10, &err), SPOOL_ECONFLICT);
    cr_expect_eq(append_range(s, 206, "a", 201, 201, 1, 10, &err), 0, "%s", err.msg);
}

Test(retention, compacts_mostly_dead_segments)
{
    idx = 0;
    /* Interleave a big dead channel with a small live one in the same segments. */
    for (int i = 0; i < 60; i++) {
        put("dead", 3, 100);
        put("live", 1, 20);
    }
    struct spool_store_stats before, after;
    spool_store_stats(s, &before);
    cr_assert_eq(spool_store_delete_channel(s, "dead", &err), 0);
    cr_assert_eq(spool_store_enforce_retention(s, 1, &err), 0, "%s", err.msg);
    spool_store_stats(s, &after);
    cr_expect_lt(after.raw_bytes_sealed * 2, before.raw_bytes_sealed);
    cr_expect_eq(count("live", NULL), 60);
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    cr_expect_eq(count("live", NULL), 60);
    cr_expect_eq(count("dead", NULL), 0);
    cr_expect_eq(spool_store_last_seq(s, "dead"), 180);
    cr_expect_eq(spool_store_applied_index(s), 240);
}

Test(retention, checkpoint_spanning_several_segments)
{
    idx = 0;
    char name[32];
    for (int c = 0; c < 300; c++) {
        snprintf(name, sizeof name, "chan-%03d", c);
        put(name, 1, 200);
    }
    for (int c = 0; c < 200; c++) {
        snprintf(name, sizeof name, "chan-%03d", c);
        cr_assert_eq(spool_store_delete_channel(s, name, &err), 0);
    }
    /* The first round's checkpoint (300 META frames) fills and seals segments of its own; the
     * second round may delete those, covered by its own checkpoint. */
    struct spool_store_stats st0, st1, st2;
    spool_store_stats(s, &st0);
    cr_assert_eq(spool_store_enforce_retention(s, 1, &err), 0, "%s", err.msg);
    spool_store_stats(s, &st1);
    cr_assert_lt(st1.segments, st0.segments, "segments of deleted channels went");
    cr_assert_eq(spool_store_enforce_retention(s, 2, &err), 0, "%s", err.msg);
    spool_store_stats(s, &st2);
    cr_assert_leq(st2.segments, st1.segments, "checkpoint-only segments do not pile up");
    spool_store_close(s);
    s = open_store(dir, 4096, 512);
    int wrong = 0;
    for (int c = 0; c < 300; c++) {
        snprintf(name, sizeof name, "chan-%03d", c);
        uint64_t want_first = c < 200 ? 2 : 1;
        if (spool_store_last_seq(s, name) != 1 || spool_store_first_seq(s, name) != want_first) wrong++;
    }
    cr_expect_eq(wrong, 0);
    cr_expect_eq(spool_store_applied_index(s), 300);
}
