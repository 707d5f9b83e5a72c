/* Shared fixtures for the storage tests: a scratch directory, record builders and a collector
 * visitor. Header-only so each test program stays one file. */
#ifndef SPOOL_TESTS_STORE_HELPERS_H
#define SPOOL_TESTS_STORE_HELPERS_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scratch_dir.h"
#include "storage/store.h"

/* An assertion that reports only when it fails: loops that check thousands of things must not
 * flood criterion's --full-stats channel with passing assertions. */
#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) cr_assert_fail(__VA_ARGS__);                                                 \
    } while (0)

__attribute__((unused)) static void rm_rf(const char *path)
{
    scratch_dir_remove(path);
}

__attribute__((unused)) static char *scratch_dir(void)
{
    char *d = strdup("/tmp/spool-store-test-XXXXXX");
    CHECK(mkdtemp(d) != NULL, "mkdtemp");
    return d;
}

/* A record of channel `ch` with payload "<ch>#<seq>" padded to `size` bytes. */
struct rec {
    Spool__Record r;
    char data[4096];
};

__attribute__((unused)) static void make_rec(struct rec *x, const char *ch, uint64_t seq, int64_t ts, size_t size)
{
    spool__record__init(&x->r);
    x->r.channel = (char *)ch;
    x->r.seq = seq;
    x->r.timestamp_ms = ts;
    x->r.action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    int n = snprintf(x->data, sizeof x->data, "%s#%llu", ch, (unsigned long long)seq);
    if (size > sizeof x->data) size = sizeof x->data;
    for (size_t i = (size_t)n; i < size; i++) x->data[i] = (char)('a' + (seq + i) % 26);
    x->r.data.data = (uint8_t *)x->data;
    x->r.data.len = size > (size_t)n ? size : (size_t)n;
}

/* Appends records seq from..to of `ch` as one batch at `raft_index`. */
__attribute__((unused)) static int append_range(struct spool_store *s, uint64_t raft_index, const char *ch, uint64_t from,
                        uint64_t to, int64_t ts, size_t size, struct spool_err *err)
{
    size_t n = (size_t)(to - from + 1);
    struct rec *recs = calloc(n, sizeof *recs);
    const Spool__Record **ptrs = calloc(n, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        make_rec(&recs[i], ch, from + i, ts, size);
        ptrs[i] = &recs[i].r;
    }
    int rv = spool_store_append_batch(s, raft_index, ptrs, n, err);
    free(recs);
    free(ptrs);
    return rv;
}

struct collect {
    uint64_t seqs[4096];
    size_t n;
    size_t stop_after; /* 0 = never */
    int bad;           /* payload did not match its seq */
};

__attribute__((unused)) static int collect_cb(void *arg, const Spool__Record *r)
{
    struct collect *c = arg;
    char want[128];
    int n = snprintf(want, sizeof want, "%s#%llu", r->channel, (unsigned long long)r->seq);
    if (r->data.len < (size_t)n || memcmp(r->data.data, want, (size_t)n) != 0) c->bad++;
    if (c->n < 4096) c->seqs[c->n] = r->seq;
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

__attribute__((unused)) static struct spool_store *open_store(const char *dir, uint64_t segment_bytes, uint32_t block_bytes)
{
    struct spool_store_config cfg = {.dir = dir, .segment_bytes = segment_bytes, .block_bytes = block_bytes};
    struct spool_store *s = NULL;
    struct spool_err err = {0};
    int rv = spool_store_open(&s, &cfg, &err);
    CHECK(rv == 0, "open: %s", err.msg);
    return s;
}

/* The fixture of a suite over one store in a scratch directory: defines `dir`, `s`, `err` and
 * setup/teardown (for TestSuite(name, .init = setup, .fini = teardown)) that open the store with
 * these segment and block sizes (0 = the defaults) and remove it again. */
#define STORE_FIXTURE(segment_bytes, block_bytes)                                                 \
    static char *dir;                                                                             \
    static struct spool_store *s;                                                                 \
    __attribute__((unused)) static struct spool_err err;                                          \
    static void setup(void)                                                                       \
    {                                                                                             \
        dir = scratch_dir();                                                                      \
        s = open_store(dir, segment_bytes, block_bytes);                                          \
    }                                                                                             \
    static void teardown(void)                                                                    \
    {                                                                                             \
        spool_store_close(s);                                                                     \
        rm_rf(dir);                                                                               \
        free(dir);                                                                                \
    }

/* Path of the store's newest segment file with `suffix` (".log"), or "" if none. */
__attribute__((unused)) static void newest_segment(const char *dir, const char *suffix, char *out, size_t size)
{
    char gen[4096];
    out[0] = '\0';
    snprintf(gen, sizeof gen, "%s/CURRENT", dir);
    FILE *f = fopen(gen, "r");
    cr_assert_not_null(f);
    char name[64] = {0};
    cr_assert_not_null(fgets(name, sizeof name, f));
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    snprintf(gen, sizeof gen, "%s/%s", dir, name);
    DIR *d = opendir(gen);
    cr_assert_not_null(d);
    struct dirent *de;
    char best[256] = "";
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name), k = strlen(suffix);
        if (n > k && strcmp(de->d_name + n - k, suffix) == 0 && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", de->d_name);
    }
    closedir(d);
    if (best[0] != '\0') {
        int w = snprintf(out, size, "%s/%s", gen, best);
        cr_assert(w > 0 && (size_t)w < size, "segment path too long");
    }
}

#endif
