/* spool_store_import (resharding) and the store's shard state: what they store, what they skip,
 * how a channel with nothing retained restarts at an import's base (lowering a remembered
 * last_seq), and that all of it survives reopening, checkpoints and snapshot -> restore. */
#include "store_helpers.h"

STORE_FIXTURE(0, 0)
TestSuite(store_import, .init = setup, .fini = teardown, .timeout = 60);

/* Records from..to of `ch` at ts (from + seq), with an id and a client id. */
struct run {
    struct rec r[64];
    const Spool__Record *p[64];
    char ids[64][16];
    size_t n;
};

static void make_run(struct run *x, const char *ch, uint64_t from, uint64_t to)
{
    x->n = (size_t)(to - from + 1);
    cr_assert_leq(x->n, 64);
    for (size_t i = 0; i < x->n; i++) {
        make_rec(&x->r[i], ch, from + i, 1000 + (int64_t)(from + i), 20);
        snprintf(x->ids[i], sizeof x->ids[i], "id-%llu", (unsigned long long)(from + i));
        x->r[i].r.id = x->ids[i];
        x->r[i].r.client_id = "cl";
        x->r[i].r.name = "tok";
        x->p[i] = &x->r[i].r;
    }
}

static uint64_t index_ = 0;

static size_t import1(struct spool_store *st, const char *ch, uint64_t last, const struct run *x,
                      const struct spool_retention *ret)
{
    struct spool_store_import im = {.channel = ch, .last_seq = last, .recs = x ? x->p : NULL,
                                    .n = x ? x->n : 0, .has_retention = ret != NULL};
    if (ret != NULL) im.retention = *ret;
    const Spool__Record *stored[64];
    size_t n = 99;
    index_ = spool_store_applied_index(st) + 1;
    int rv = spool_store_import(st, index_, &im, 1, stored, &n, &err);
    cr_assert_eq(rv, 0, "%s", err.msg);
    cr_assert_eq(spool_store_applied_index(st), index_);
    return n;
}

/* Seqs and ids readable in `ch`, compared with from..to. */
static void expect_range(struct spool_store *st, const char *ch, uint64_t from, uint64_t to)
{
    struct collect c = {0};
    cr_assert_eq(spool_store_read(st, ch, 0, 0, collect_cb, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.n, to >= from ? to - from + 1 : 0, "%s: %zu records, want %llu..%llu", ch, c.n,
                 (unsigned long long)from, (unsigned long long)to);
    for (size_t i = 0; i < c.n; i++) cr_assert_eq(c.seqs[i], from + i);
    cr_assert_eq(spool_store_first_seq(st, ch), to >= from ? from : to + 1);
    cr_assert_eq(spool_store_last_seq(st, ch), to >= from ? to : from - 1);
}

static int check_fields_cb(void *arg, const Spool__Record *r)
{
    (void)arg;
    char id[16];
    snprintf(id, sizeof id, "id-%llu", (unsigned long long)r->seq);
    CHECK(r->timestamp_ms == 1000 + (int64_t)r->seq, "seq %llu ts %lld", (unsigned long long)r->seq,
          (long long)r->timestamp_ms);
    CHECK(strcmp(r->id, id) == 0 && strcmp(r->client_id, "cl") == 0 && strcmp(r->name, "tok") == 0,
          "fields of seq %llu", (unsigned long long)r->seq);
    return 0;
}

static void reopen(void)
{
    spool_store_close(s);
    s = open_store(dir, 0, 0);
}

Test(store_import, stores_records_as_given_and_skips_what_it_has)
{
    struct run a;
    make_run(&a, "ch", 1, 10);
    struct spool_retention ret = {.max_count = 500};
    cr_assert_eq(import1(s, "ch", 10, &a, &ret), 10);
    expect_range(s, "ch", 1, 10);
    cr_assert_eq(spool_store_read(s, "ch", 0, 0, check_fields_cb, NULL, &err), 0);
    struct spool_retention got;
    cr_assert(spool_store_retention(s, "ch", &got));
    cr_assert_eq(got.max_count, 500);
    /* The same part again (a copy restarted by a new leader): nothing stored twice. */
    cr_assert_eq(import1(s, "ch", 10, &a, &ret), 0);
    expect_range(s, "ch", 1, 10);
    /* A later part overlapping the first. */
    struct run b;
    make_run(&b, "ch", 6, 15);
    cr_assert_eq(import1(s, "ch", 15, &b, NULL), 5);
    expect_range(s, "ch", 1, 15);
    cr_assert(!spool_store_retention(s, "ch", &got), "the import without override clears it");
    reopen();
    expect_range(s, "ch", 1, 15);
    cr_assert_eq(spool_store_read(s, "ch", 0, 0, check_fields_cb, NULL, &err), 0);
    cr_assert(!spool_store_retention(s, "ch", &got));
    /* Appends continue after the imported seqs. */
    cr_assert_eq(append_range(s, spool_store_applied_index(s) + 1, "ch", 16, 16, 5000, 20, &err), 0);
    cr_assert_eq(spool_store_last_seq(s, "ch"), 16);
}

Test(store_import, trimmed_start_and_deleted_channel)
{
    struct run a;
    make_run(&a, "trim", 5, 9); /* retention trimmed 1..4 at the source */
    cr_assert_eq(import1(s, "trim", 9, &a, NULL), 5);
    expect_range(s, "trim", 5, 9);
    cr_assert_eq(import1(s, "gone", 7, NULL, NULL), 0); /* deleted at the source: last_seq only */
    cr_assert_eq(spool_store_last_seq(s, "gone"), 7);
    cr_assert_eq(spool_store_first_seq(s, "gone"), 8);
    reopen();
    expect_range(s, "trim", 5, 9);
    cr_assert_eq(spool_store_last_seq(s, "gone"), 7);
    cr_assert_eq(spool_store_first_seq(s, "gone"), 8);
}

Test(store_import, channel_coming_back_restarts_at_the_import_base)
{
    /* The channel lived here (1..10), its slot left (dropped: deleted, last_seq 10 kept). */
    cr_assert_eq(append_range(s, 1, "back", 1, 10, 100, 20, &err), 0);
    cr_assert_eq(spool_store_delete_channel(s, "back", &err), 0);
    cr_assert_eq(spool_store_last_seq(s, "back"), 10);
    /* It comes back with its whole history 1..14 from the other shard: the base goes down. */
    struct run a;
    make_run(&a, "back", 1, 14);
    cr_assert_eq(import1(s, "back", 14, &a, NULL), 14);
    expect_range(s, "back", 1, 14);
    cr_assert_eq(spool_store_read(s, "back", 0, 0, check_fields_cb, NULL, &err), 0);
    reopen(); /* recovery replays the reset META over the earlier records and META */
    expect_range(s, "back", 1, 14);
    cr_assert_eq(spool_store_read(s, "back", 0, 0, check_fields_cb, NULL, &err), 0);
    /* And a copy starting above the old last_seq raises it (retention trimmed the start). */
    cr_assert_eq(spool_store_delete_channel(s, "back", &err), 0);
    struct run b;
    make_run(&b, "back", 20, 25);
    cr_assert_eq(import1(s, "back", 25, &b, NULL), 6);
    expect_range(s, "back", 20, 25);
    reopen();
    expect_range(s, "back", 20, 25);
}

Test(store_import, gap_discards_what_is_retained_here)
{
    struct run a, b;
    make_run(&a, "g", 1, 5);
    cr_assert_eq(import1(s, "g", 5, &a, NULL), 5);
    make_run(&b, "g", 8, 10); /* 6..7 trimmed at the source between two parts */
    cr_assert_eq(import1(s, "g", 10, &b, NULL), 3);
    expect_range(s, "g", 8, 10);
    reopen();
    expect_range(s, "g", 8, 10);
    /* An import without records whose last_seq is beyond: deleted at the source. */
    cr_assert_eq(import1(s, "g", 12, NULL, NULL), 0);
    expect_range(s, "g", 13, 12);
}

Test(store_import, several_imports_of_one_channel_in_one_batch)
{
    struct run a, b;
    make_run(&a, "m", 1, 4);
    make_run(&b, "m", 3, 9);
    struct spool_store_import im[2] = {{.channel = "m", .last_seq = 9, .recs = a.p, .n = a.n},
                                       {.channel = "m", .last_seq = 9, .recs = b.p, .n = b.n}};
    const Spool__Record *stored[64];
    size_t n;
    cr_assert_eq(spool_store_import(s, 1, im, 2, stored, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 9);
    expect_range(s, "m", 1, 9);
    cr_assert_eq(spool_store_import(s, 1, im, 2, stored, &n, &err), SPOOL_EINVAL, "index reused");
}

static int write_cb(void *arg, const void *buf, size_t len)
{
    struct { uint8_t *p; size_t n; } *o = arg;
    o->p = realloc(o->p, o->n + len);
    memcpy(o->p + o->n, buf, len);
    o->n += len;
    return 0;
}

Test(store_import, shard_state_survives_reopen_snapshot_and_checkpoints)
{
    size_t len;
    cr_assert_null(spool_store_shard_state(s, &len));
    cr_assert_eq(len, 0);
    uint8_t st[600];
    for (size_t i = 0; i < sizeof st; i++) st[i] = (uint8_t)(i * 7);
    cr_assert_eq(spool_store_set_shard_state(s, st, sizeof st, &err), 0);
    cr_assert_eq(spool_store_mark_applied(s, 1, &err), 0);
    reopen();
    const uint8_t *got = spool_store_shard_state(s, &len);
    cr_assert_eq(len, sizeof st);
    cr_assert_arr_eq(got, st, sizeof st);
    /* A newer state wins at reopen. */
    st[0] = 0xee;
    cr_assert_eq(spool_store_set_shard_state(s, st, sizeof st, &err), 0);
    reopen();
    got = spool_store_shard_state(s, &len);
    cr_assert_eq(got[0], 0xee);
    /* Snapshot -> restore into another store. */
    struct { uint8_t *p; size_t n; } snap = {0};
    cr_assert_eq(spool_store_snapshot(s, write_cb, &snap, &err), 0, "%s", err.msg);
    char *d2 = scratch_dir();
    struct spool_store *s2 = open_store(d2, 0, 0);
    cr_assert_eq(spool_store_restore(s2, snap.p, snap.n, &err), 0, "%s", err.msg);
    got = spool_store_shard_state(s2, &len);
    cr_assert_eq(len, sizeof st);
    cr_assert_arr_eq(got, st, sizeof st);
    spool_store_close(s2);
    s2 = open_store(d2, 0, 0); /* the restored generation keeps it on disk too */
    got = spool_store_shard_state(s2, &len);
    cr_assert_eq(len, sizeof st);
    cr_assert_arr_eq(got, st, sizeof st);
    spool_store_close(s2);
    rm_rf(d2);
    free(d2);
    free(snap.p);
}

Test(store_import, shard_state_outlives_the_segment_it_was_written_in)
{
    spool_store_close(s);
    s = open_store(dir, 4096, 1024); /* small segments: retention deletes whole ones */
    uint8_t st[32] = {1, 2, 3};
    cr_assert_eq(spool_store_set_shard_state(s, st, sizeof st, &err), 0);
    struct spool_retention keep = {.max_count = 5};
    cr_assert_eq(spool_store_set_retention(s, "big", &keep, &err), 0);
    uint64_t idx = spool_store_applied_index(s);
    for (uint64_t q = 1; q <= 200; q++)
        cr_assert_eq(append_range(s, ++idx, "big", q, q, 10, 200, &err), 0, "%s", err.msg);
    struct spool_store_stats before, after;
    spool_store_stats(s, &before);
    cr_assert_eq(spool_store_enforce_retention(s, 20, &err), 0, "%s", err.msg);
    spool_store_stats(s, &after);
    /* Sealed segments went, the first one (holding the STATE frame) with them; the checkpoint
     * repeated the state. */
    cr_assert_lt(after.segments, before.segments);
    spool_store_close(s);
    s = open_store(dir, 4096, 1024);
    size_t len;
    const uint8_t *got = spool_store_shard_state(s, &len);
    cr_assert_eq(len, sizeof st);
    cr_assert_arr_eq(got, st, sizeof st);
    expect_range(s, "big", 196, 200);
}

/* A crash after an import's META frames but before its batch (the file ends there): the applied
 * index falls back, and replaying the same import decides the same (the reset is not redone
 * from a different state, nothing is skipped). */
Test(store_import, crash_between_meta_and_batch_replays_the_same)
{
    cr_assert_eq(append_range(s, 1, "back", 1, 10, 100, 20, &err), 0);
    cr_assert_eq(spool_store_delete_channel(s, "back", &err), 0);
    struct run a;
    make_run(&a, "back", 1, 6);
    cr_assert_eq(import1(s, "back", 6, &a, NULL), 6);
    /* The batch is the file's tail: its RECORD frames and the COMMIT. */
    size_t batch = 8 + 12;
    for (size_t i = 0; i < a.n; i++) batch += 8 + spool__record__get_packed_size(a.p[i]);
    char seg[4096];
    newest_segment(dir, ".log", seg, sizeof seg);
    struct stat st;
    cr_assert_eq(stat(seg, &st), 0);
    spool_store_close(s);
    cr_assert_eq(truncate(seg, st.st_size - (off_t)batch), 0);
    s = open_store(dir, 0, 0);
    cr_assert_eq(spool_store_applied_index(s), 1, "the import's batch is gone");
    cr_assert_eq(spool_store_last_seq(s, "back"), 0, "its reset META survived");
    cr_assert_eq(spool_store_first_seq(s, "back"), 1);
    /* Raft replays the entry: same index, same outcome. */
    struct spool_store_import im = {.channel = "back", .last_seq = 6, .recs = a.p, .n = a.n};
    const Spool__Record *stored[64];
    size_t n;
    cr_assert_eq(spool_store_import(s, 2, &im, 1, stored, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 6);
    expect_range(s, "back", 1, 6);
    reopen();
    expect_range(s, "back", 1, 6);
}
