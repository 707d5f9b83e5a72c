/* Snapshot streams: round trip into another store, validation of damaged streams, atomic
 * replacement. */
#include "store_helpers.h"

#include "storage/crc32c.h"

static char *dir_a, *dir_b;
static struct spool_store *a, *b;
static struct spool_err err;

static void setup(void)
{
    dir_a = scratch_dir();
    dir_b = scratch_dir();
    a = open_store(dir_a, 4096, 512);
    b = open_store(dir_b, 4096, 512);
}

static void teardown(void)
{
    spool_store_close(a);
    spool_store_close(b);
    rm_rf(dir_a);
    rm_rf(dir_b);
    free(dir_a);
    free(dir_b);
}

TestSuite(snapshot, .init = setup, .fini = teardown);

struct buf {
    uint8_t *p;
    size_t len, cap;
    size_t fail_after; /* abort the write once this many bytes went through (0 = never) */
};

static int buf_write(void *arg, const void *p, size_t n)
{
    struct buf *bf = arg;
    if (bf->fail_after != 0 && bf->len + n > bf->fail_after) return -1;
    if (bf->len + n > bf->cap) {
        bf->cap = (bf->len + n) * 2;
        bf->p = realloc(bf->p, bf->cap);
    }
    memcpy(bf->p + bf->len, p, n);
    bf->len += n;
    return 0;
}

static int digest_cb(void *arg, const Spool__Record *r)
{
    uint32_t *h = arg;
    *h = spool_crc32c(*h, &r->seq, sizeof r->seq);
    *h = spool_crc32c(*h, r->data.data, r->data.len);
    *h = spool_crc32c(*h, r->channel, strlen(r->channel));
    return 0;
}

struct dig {
    struct spool_store *s;
    uint32_t h;
    int n;
};

static int digest_channel(void *arg, const char *ch)
{
    struct dig *d = arg;
    uint64_t v[2] = {spool_store_first_seq(d->s, ch), spool_store_last_seq(d->s, ch)};
    uint32_t h = spool_crc32c(0, ch, strlen(ch));
    h = spool_crc32c(h, v, sizeof v);
    struct spool_err e = {0};
    cr_assert_eq(spool_store_read(d->s, ch, 0, 0, digest_cb, &h, &e), 0, "%s", e.msg);
    d->h ^= h; /* channel order is unspecified */
    d->n++;
    return 0;
}

static uint32_t digest(struct spool_store *s, int *nchan)
{
    struct dig d = {.s = s};
    spool_store_channels(s, digest_channel, &d);
    if (nchan != NULL) *nchan = d.n;
    return d.h ^ (uint32_t)spool_store_applied_index(s);
}

static void fill_a(void)
{
    uint64_t idx = 0;
    for (int round = 0; round < 40; round++) {
        cr_assert_eq(append_range(a, ++idx, "chat", (uint64_t)round * 3 + 1, (uint64_t)round * 3 + 3, round, 40, &err), 0,
                     "%s", err.msg);
        cr_assert_eq(append_range(a, ++idx, "gone", (uint64_t)round + 1, (uint64_t)round + 1, round, 40, &err), 0);
        cr_assert_eq(append_range(a, ++idx, "short", (uint64_t)round + 1, (uint64_t)round + 1, round, 40, &err), 0);
    }
    struct spool_retention r = {.max_count = 5};
    cr_assert_eq(spool_store_set_retention(a, "short", &r, &err), 0);
    cr_assert_eq(spool_store_delete_channel(a, "gone", &err), 0);
    cr_assert_eq(spool_store_enforce_retention(a, 1000, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_store_mark_applied(a, 500, &err), 0);
}

Test(snapshot, round_trip)
{
    fill_a();
    cr_assert_eq(append_range(b, 1, "other", 1, 3, 1, 10, &err), 0);
    struct buf bf = {0};
    cr_assert_eq(spool_store_snapshot(a, buf_write, &bf, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_snapshot_applied_index(bf.p, bf.len, &err), 500);
    cr_assert_eq(spool_store_restore(b, bf.p, bf.len, &err), 0, "%s", err.msg);
    int na, nb;
    uint32_t da = digest(a, &na);
    cr_expect_eq(digest(b, &nb), da);
    cr_expect_eq(na, 3);
    cr_expect_eq(nb, 3, "'other' is gone");
    cr_expect_eq(spool_store_last_seq(b, "other"), 0);
    cr_expect_eq(spool_store_first_seq(b, "short"), 36);
    cr_expect_eq(spool_store_last_seq(b, "gone"), 40);
    cr_expect_eq(spool_store_first_seq(b, "gone"), 41);
    /* Retention override travelled: appending then enforcing trims "short" to 5 again. */
    cr_assert_eq(append_range(b, 501, "short", 41, 43, 2000, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_store_enforce_retention(b, 3000, &err), 0);
    cr_expect_eq(spool_store_first_seq(b, "short"), 39);
    /* Survives a reopen. */
    uint32_t db = digest(b, NULL);
    spool_store_close(b);
    b = open_store(dir_b, 4096, 512);
    cr_expect_eq(digest(b, NULL), db);
    cr_expect_eq(spool_store_applied_index(b), 501);
    /* A snapshot of the restored store restores to the same content again. */
    struct buf bf2 = {0};
    cr_assert_eq(spool_store_snapshot(b, buf_write, &bf2, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_store_restore(a, bf2.p, bf2.len, &err), 0, "%s", err.msg);
    cr_expect_eq(digest(a, NULL), db);
    free(bf.p);
    free(bf2.p);
}

Test(snapshot, empty_store)
{
    struct buf bf = {0};
    cr_assert_eq(spool_store_snapshot(a, buf_write, &bf, &err), 0, "%s", err.msg);
    cr_assert_eq(append_range(b, 4, "x", 1, 1, 1, 10, &err), 0);
    cr_assert_eq(spool_store_restore(b, bf.p, bf.len, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_applied_index(b), 0);
    cr_expect_eq(spool_store_last_seq(b, "x"), 0);
    free(bf.p);
}

Test(snapshot, damaged_streams_are_refused_and_change_nothing)
{
    fill_a();
    cr_assert_eq(append_range(b, 7, "keep", 1, 4, 1, 10, &err), 0);
    uint32_t before = digest(b, NULL);
    struct buf bf = {0};
    cr_assert_eq(spool_store_snapshot(a, buf_write, &bf, &err), 0, "%s", err.msg);
    uint8_t *copy = malloc(bf.len);
    /* ~60 sampled bit flips and truncations, spread over the stream. */
    size_t step = bf.len / 60 + 1;
    for (size_t at = 0; at < bf.len; at += step) {
        memcpy(copy, bf.p, bf.len);
        copy[at] ^= (uint8_t)(1u << (at % 8));
        cr_assert_eq(spool_store_restore(b, copy, bf.len, &err), SPOOL_ECORRUPT, "flip at %zu", at);
        cr_expect_eq(spool_store_snapshot_applied_index(copy, bf.len, &err), 0);
        cr_assert_eq(spool_store_restore(b, bf.p, at, &err), SPOOL_ECORRUPT, "cut at %zu", at);
    }
    cr_expect_eq(digest(b, NULL), before);
    spool_store_close(b);
    b = open_store(dir_b, 4096, 512);
    cr_expect_eq(digest(b, NULL), before);
    free(copy);
    free(bf.p);
}

Test(snapshot, writer_abort_is_an_error)
{
    fill_a();
    struct buf bf = {.fail_after = 100};
    cr_expect_neq(spool_store_snapshot(a, buf_write, &bf, &err), 0);
    free(bf.p);
}

/* Damage found while snapshotting fails that snapshot; the next one leaves the damaged records
 * out and restores fine. */
Test(snapshot, damage_found_while_snapshotting)
{
    fill_a();
    spool_store_close(a);
    a = open_store(dir_a, 4096, 512); /* block index loaded, no block cached */
    char lz4[4096];
    newest_segment(dir_a, ".lz4", lz4, sizeof lz4);
    cr_assert_neq(lz4[0], '\0');
    FILE *f = fopen(lz4, "r+b");
    fseek(f, 20, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 20, SEEK_SET);
    fputc(ch ^ 0xff, f);
    fclose(f);
    struct buf bf = {0};
    int rv = spool_store_snapshot(a, buf_write, &bf, &err);
    /* The newest sealed segment may hold only trimmed records, which a snapshot never reads. */
    if (rv != 0) {
        cr_expect_eq(rv, SPOOL_ECORRUPT, "%s", err.msg);
        bf.len = 0;
        cr_assert_eq(spool_store_snapshot(a, buf_write, &bf, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(spool_store_restore(b, bf.p, bf.len, &err), 0, "%s", err.msg);
    cr_expect_eq(spool_store_applied_index(b), 500);
    cr_expect_eq(spool_store_last_seq(b, "chat"), 120);
    free(bf.p);
}
