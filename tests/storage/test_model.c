/*
 * Model-based test: a seeded random sequence of every store operation (batches over several
 * channels, mark_applied, retention overrides, enforce_retention, delete, reopen, snapshot +
 * restore into a fresh store), with small segments and blocks so rolling, sealing, compaction
 * and segment deletion all happen, checked after every step against a plain in-memory model of
 * what each channel must hold. Bounded: a fixed number of steps per seed.
 */
#include "store_helpers.h"

#define NCH 6
#define MAXSEQ 4096
#define STEPS 400

static const char *names[NCH] = {"m0", "m1", "m2", "m3", "m4", "m5"};

struct mchan {
    uint64_t first, last;
    int64_t ts[MAXSEQ + 1];
};

static struct mchan model[NCH];
static uint64_t applied;
static int64_t clock_ms;
static uint64_t rng;

static uint64_t rnd(uint64_t n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (rng >> 33) % n;
}

static struct spool_store *reopen(struct spool_store *s, const char *dir)
{
    spool_store_close(s);
    return open_store(dir, 8192, 512);
}

/* The model's retention rule, the same the store documents. */
static void model_enforce(struct mchan *m, const struct spool_retention *r, int64_t now)
{
    if (m->first > m->last) return;
    uint64_t first = m->first;
    if (r->max_count != 0 && m->last - first + 1 > r->max_count) first = m->last - r->max_count + 1;
    if (r->max_age_ms != 0 && (uint64_t)now > r->max_age_ms)
        while (first <= m->last && m->ts[first] < now - (int64_t)r->max_age_ms) first++;
    m->first = first;
}

static void check(struct spool_store *s, int step)
{
    struct spool_err err = {0};
    CHECK(spool_store_applied_index(s) == applied, "step %d: applied %llu, want %llu", step,
          (unsigned long long)spool_store_applied_index(s), (unsigned long long)applied);
    for (int c = 0; c < NCH; c++) {
        struct mchan *m = &model[c];
        CHECK(spool_store_last_seq(s, names[c]) == m->last && spool_store_first_seq(s, names[c]) == m->first,
              "step %d: %s first/last %llu/%llu, want %llu/%llu", step, names[c],
              (unsigned long long)spool_store_first_seq(s, names[c]),
              (unsigned long long)spool_store_last_seq(s, names[c]), (unsigned long long)m->first,
              (unsigned long long)m->last);
        struct collect col = {0};
        CHECK(spool_store_read(s, names[c], 0, 0, collect_cb, &col, &err) == 0, "step %d: %s", step, err.msg);
        size_t dense = 0;
        while (dense < col.n && dense < 4096 && col.seqs[dense] == m->first + dense) dense++;
        CHECK(col.n == m->last + 1 - m->first && dense == col.n && col.bad == 0,
              "step %d: %s read %zu records, want %llu", step, names[c], col.n,
              (unsigned long long)(m->last + 1 - m->first));
        if (m->last >= m->first) {
            uint64_t before = m->first + rnd(m->last - m->first + 1) + 1;
            struct collect back = {0};
            CHECK(spool_store_read_backward(s, names[c], before, 3, collect_cb, &back, &err) == 0, "%s", err.msg);
            uint64_t want = before - m->first < 3 ? before - m->first : 3;
            CHECK(back.n == want && (back.n == 0 || back.seqs[0] == before - 1) && back.bad == 0,
                  "step %d: %s backward from %llu", step, names[c], (unsigned long long)before);
        }
    }
}

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static int buf_write(void *arg, const void *p, size_t n)
{
    struct buf *b = arg;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static void run(uint64_t seed)
{
    rng = seed;
    memset(model, 0, sizeof model);
    for (int c = 0; c < NCH; c++) model[c].first = 1;
    applied = 0;
    clock_ms = 1000;
    struct spool_retention ret[NCH] = {{0}};
    char *dir = scratch_dir();
    struct spool_store *s = open_store(dir, 8192, 512);
    struct spool_err err = {0};
    for (int step = 0; step < STEPS; step++) {
        clock_ms += (int64_t)rnd(5);
        uint64_t op = rnd(100);
        if (op < 55) { /* a batch over one or two channels */
            struct rec recs[10];
            const Spool__Record *ptrs[10];
            size_t n = 0;
            int c1 = (int)rnd(NCH), c2 = (int)rnd(NCH);
            uint64_t k1 = rnd(5) + 1, k2 = rnd(3);
            for (uint64_t i = 0; i < k1 + k2; i++) {
                int c = i < k1 ? c1 : c2;
                struct mchan *m = &model[c];
                if (m->last >= MAXSEQ) continue;
                m->last++;
                if (m->first == m->last) { /* was empty: first follows */
                }
                m->ts[m->last] = clock_ms;
                make_rec(&recs[n], names[c], m->last, clock_ms, rnd(300));
                ptrs[n] = &recs[n].r;
                n++;
            }
            CHECK(spool_store_append_batch(s, ++applied, ptrs, n, &err) == 0, "step %d: %s", step, err.msg);
        } else if (op < 60) {
            applied += rnd(3) + 1;
            CHECK(spool_store_mark_applied(s, applied, &err) == 0, "%s", err.msg);
        } else if (op < 68) {
            int c = (int)rnd(NCH);
            ret[c] = (struct spool_retention){.max_count = rnd(3) ? rnd(40) : 0, .max_age_ms = rnd(2) ? rnd(200) : 0};
            CHECK(spool_store_set_retention(s, names[c], &ret[c], &err) == 0, "%s", err.msg);
        } else if (op < 80) {
            for (int c = 0; c < NCH; c++) model_enforce(&model[c], &ret[c], clock_ms);
            CHECK(spool_store_enforce_retention(s, clock_ms, &err) == 0, "step %d: %s", step, err.msg);
        } else if (op < 85) {
            int c = (int)rnd(NCH);
            model[c].first = model[c].last + 1;
            CHECK(spool_store_delete_channel(s, names[c], &err) == 0, "%s", err.msg);
        } else if (op < 95) {
            s = reopen(s, dir);
        } else {
            struct buf b = {0};
            CHECK(spool_store_snapshot(s, buf_write, &b, &err) == 0, "step %d: %s", step, err.msg);
            char *fresh = scratch_dir();
            struct spool_store *t = open_store(fresh, 8192, 512);
            CHECK(spool_store_restore(t, b.p, b.len, &err) == 0, "step %d: restore: %s", step, err.msg);
            free(b.p);
            spool_store_close(s);
            rm_rf(dir);
            free(dir);
            dir = fresh;
            s = t;
        }
        /* An emptied channel's first is last + 1 (the store's rule too). */
        for (int c = 0; c < NCH; c++)
            if (model[c].first > model[c].last + 1) model[c].first = model[c].last + 1;
        check(s, step);
    }
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    CHECK(st.sealed_segments > 0, "seed %llu: the run sealed nothing", (unsigned long long)seed);
    spool_store_close(s);
    rm_rf(dir);
    free(dir);
}

Test(model, random_operations_seed_1) { run(1); }
Test(model, random_operations_seed_2) { run(2); }
Test(model, random_operations_seed_3) { run(3); }
