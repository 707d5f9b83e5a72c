/*
 * Crash safety of the active segment: a store is written (once as a single segment, once with
 * small segments so sealed ones precede the active one), then for ~200 sampled byte offsets
 * its segment is cut at that byte (a torn write) or has one bit flipped there (a bad sector),
 * and a copy is reopened. Every batch that ends before the damage must come back intact, the
 * batch holding the damaged byte and everything after it must be gone whole (Raft replays
 * them), applied_index must be that of the last surviving batch, nothing corrupt may be
 * served, and appending must work afterwards.
 */
#include <dirent.h>
#include <fcntl.h>

#include "store_helpers.h"

#define CHANS 3
#define UNITS 48
static const char *names[CHANS] = {"a", "bb", "ccc"};

struct unit {
    char seg[64]; /* name of the newest .log when this unit was written */
    uint64_t end; /* its size after this unit was written */
    uint64_t applied;
    uint64_t last[CHANS];
};

static struct unit units[UNITS];
static uint8_t *orig;
static size_t orig_len;
static char *ref_dir;
static uint64_t seg_bytes;  /* 0: one segment; else small segments, so sealed ones come first */
static char damaged[64];    /* the newest .log of the reference, the one the tests damage */

static void write_file(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, p, n) == (ssize_t)n, "write %s", path);
    close(fd);
}

/* Writes the reference store: batches of 1..9 records of varying sizes, with a META frame
 * (retention override) and a record-less COMMIT (mark_applied) among them. */
static void build_reference(void)
{
    ref_dir = scratch_dir();
    struct spool_store *s = open_store(ref_dir, seg_bytes, 512);
    struct spool_err err = {0};
    uint64_t last[CHANS] = {0}, idx = 0;
    char seg[4096];
    for (int u = 0; u < UNITS; u++) {
        if (u == 10) {
            struct spool_retention r = {.max_count = 1000};
            cr_assert_eq(spool_store_set_retention(s, "a", &r, &err), 0);
        } else if (u == 20) {
            cr_assert_eq(spool_store_mark_applied(s, idx += 2, &err), 0);
        } else {
            int c = u % CHANS;
            uint64_t n = (uint64_t)(u % 9) + 1;
            cr_assert_eq(append_range(s, ++idx, names[c], last[c] + 1, last[c] + n, u, (size_t)(u * 37 % 300), &err),
                         0, "%s", err.msg);
            last[c] += n;
        }
        newest_segment(ref_dir, ".log", seg, sizeof seg);
        struct stat st;
        cr_assert_eq(stat(seg, &st), 0);
        snprintf(units[u].seg, sizeof units[u].seg, "%s", strrchr(seg, '/') + 1);
        units[u].end = (uint64_t)st.st_size;
        units[u].applied = idx;
        memcpy(units[u].last, last, sizeof last);
    }
    spool_store_close(s);
    snprintf(damaged, sizeof damaged, "%s", units[UNITS - 1].seg);
    FILE *f = fopen(seg, "rb");
    orig_len = (size_t)units[UNITS - 1].end;
    orig = malloc(orig_len);
    cr_assert_eq(fread(orig, 1, orig_len, f), orig_len);
    fclose(f);
}

static void build_single(void)
{
    seg_bytes = 0;
    build_reference();
}

static void build_multi(void)
{
    seg_bytes = 4096;
    build_reference();
}

/* Copies every file of the reference's generation but the damaged one into `dir`. */
static void copy_reference(const char *dir)
{
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s/gen-1", ref_dir);
    DIR *d = opendir(from);
    CHECK(d != NULL, "opendir");
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, damaged) == 0) continue;
        snprintf(from, sizeof from, "%s/gen-1/%s", ref_dir, de->d_name);
        snprintf(to, sizeof to, "%s/gen-1/%s", dir, de->d_name);
        FILE *f = fopen(from, "rb");
        CHECK(f != NULL, "open %s", from);
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        write_file(to, buf, n);
    }
    closedir(d);
}

/* Opens a store whose only segment holds `p`, checks it recovered exactly the units that end
 * at or before `damage_at`, then appends one more batch. */
static void check_recovery(const uint8_t *p, size_t n, uint64_t damage_at, const char *what)
{
    char *d = scratch_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/gen-1", d);
    CHECK(mkdir(path, 0755) == 0, "mkdir");
    snprintf(path, sizeof path, "%s/CURRENT", d);
    write_file(path, (const uint8_t *)"gen-1\n", 6);
    copy_reference(d);
    snprintf(path, sizeof path, "%s/gen-1/%s", d, damaged);
    write_file(path, p, n);

    /* Units written before the damaged segment existed all survive; in it, those ending before
     * the damaged byte. */
    struct unit want = {0};
    for (int u = 0; u < UNITS && (strcmp(units[u].seg, damaged) != 0 || units[u].end <= damage_at); u++)
        want = units[u];

    struct spool_store *s = open_store(d, seg_bytes, 512);
    struct spool_err err = {0};
    unsigned long long at = (unsigned long long)damage_at;
    CHECK(spool_store_applied_index(s) == want.applied, "%s at %llu: applied index", what, at);
    for (int c = 0; c < CHANS; c++) {
        CHECK(spool_store_last_seq(s, names[c]) == want.last[c], "%s at %llu: last_seq of %s", what, at,
              names[c]);
        struct collect col = {0};
        CHECK(spool_store_read(s, names[c], 0, 0, collect_cb, &col, &err) == 0, "%s", err.msg);
        size_t dense = 0; /* counted in plain C: one assertion, not one per record */
        while (dense < col.n && dense < 4096 && col.seqs[dense] == dense + 1) dense++;
        CHECK(col.n == want.last[c] && col.bad == 0 && dense == col.n,
              "%s at %llu: channel %s read %zu records (%d bad), want %llu", what, at, names[c], col.n,
              col.bad, (unsigned long long)want.last[c]);
    }
    /* Raft replays the next entry; it must apply and read back, also after a reopen. */
    CHECK(append_range(s, want.applied + 1, "a", want.last[0] + 1, want.last[0] + 2, 99, 50, &err) == 0,
          "%s at %llu: append after recovery: %s", what, at, err.msg);
    spool_store_close(s);
    s = open_store(d, seg_bytes, 512);
    struct collect col = {0};
    CHECK(spool_store_read(s, "a", 0, 0, collect_cb, &col, &err) == 0, "%s", err.msg);
    CHECK(spool_store_last_seq(s, "a") == want.last[0] + 2 && col.n == want.last[0] + 2 && col.bad == 0,
          "%s at %llu: after the replayed append", what, at);
    spool_store_close(s);
    rm_rf(d);
    free(d);
}

static void cleanup(void)
{
    free(orig);
    rm_rf(ref_dir);
    free(ref_dir);
}

TestSuite(crash, .init = build_single, .fini = cleanup);
TestSuite(crash_multi, .init = build_multi, .fini = cleanup);

/* ~200 offsets: every unit boundary in the damaged segment and its neighbours, plus an even
 * spread. */
static size_t sample_offsets(uint64_t *out, size_t max)
{
    size_t n = 0;
    for (int u = 0; u < UNITS && n + 3 <= max; u++) {
        if (strcmp(units[u].seg, damaged) != 0) continue;
        uint64_t e = units[u].end;
        out[n++] = e - 1;
        out[n++] = e;
        if (e + 1 < orig_len) out[n++] = e + 1;
    }
    for (uint64_t i = 0; i < 16 && n < max; i++) out[n++] = i; /* inside the header */
    uint64_t step = orig_len / (max - n) + 1;
    for (uint64_t at = 7; at < orig_len && n < max; at += step) out[n++] = at;
    return n;
}

static void torn_tail(size_t samples)
{
    uint64_t at[220];
    size_t n = sample_offsets(at, samples);
    cr_assert_gt(n, samples / 2);
    for (size_t i = 0; i < n; i++)
        if (at[i] <= orig_len) check_recovery(orig, (size_t)at[i], at[i], "cut");
}

static void bit_flip(size_t samples)
{
    uint64_t at[220];
    size_t n = sample_offsets(at, samples);
    uint8_t *copy = malloc(orig_len);
    for (size_t i = 0; i < n; i++) {
        if (at[i] >= orig_len) continue;
        memcpy(copy, orig, orig_len);
        copy[at[i]] ^= (uint8_t)(1u << (i % 8));
        check_recovery(copy, orig_len, at[i], "flip");
    }
    free(copy);
}

Test(crash, torn_tail_at_sampled_offsets) { torn_tail(220); }
Test(crash, bit_flip_at_sampled_offsets) { bit_flip(220); }

/* The same with sealed segments (and possibly a full .log still being sealed) before the
 * damaged active one. */
Test(crash_multi, torn_tail_at_sampled_offsets)
{
    cr_assert_gt(strcmp(damaged, "0000000000000001.log"), 0, "the reference rolled");
    torn_tail(120);
}
Test(crash_multi, bit_flip_at_sampled_offsets) { bit_flip(120); }
