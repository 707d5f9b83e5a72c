/* The dedup table against a plain model of its contract (a FIFO scanned newest first), over
 * random inserts and lookups: duplicate keys, non-monotonic timestamps, long keys, small and
 * large bounds. Any difference in a lookup's answer or in the entry count fails. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/dedup.h"

struct model_ent {
    char key[600];
    uint64_t seq;
    int64_t ts;
};

struct model {
    struct model_ent *v;
    size_t head, n; /* live: v[head .. n) */
    uint64_t window;
    size_t max;
};

static void mkey(char *out, const char *ch, const char *id)
{
    snprintf(out, 600, "%s|%s", ch, id);
}

static bool model_find(const struct model *m, const char *ch, const char *id, int64_t now,
                       uint64_t *seq)
{
    if (id[0] == '\0')
        return false;
    char k[600];
    mkey(k, ch, id);
    for (size_t i = m->n; i > m->head; i--) {
        const struct model_ent *e = &m->v[i - 1];
        if (strcmp(e->key, k) == 0) {
            if (now - e->ts > (int64_t)m->window)
                return false;
            *seq = e->seq;
            return true;
        }
    }
    return false;
}

static void model_insert(struct model *m, const char *ch, const char *id, uint64_t seq, int64_t ts)
{
    if (id[0] == '\0')
        return;
    struct model_ent *e = &m->v[m->n++];
    mkey(e->key, ch, id);
    e->seq = seq;
    e->ts = ts;
    while (m->head < m->n &&
           (m->n - m->head > m->max || ts - m->v[m->head].ts > (int64_t)m->window))
        m->head++;
}

static void random_id(char *id, unsigned r, unsigned nkeys)
{
    unsigned k = r % nkeys;
    if (k % 7 == 3) /* some long ids: keys past one 8-byte word and past the first key buffer */
        snprintf(id, 520, "long-%0*u", 300 + (int)(k % 200), k);
    else
        snprintf(id, 520, "m%u", k);
}

static void run(uint64_t window, size_t max, unsigned nkeys, unsigned ops, unsigned seed)
{
    struct model m = {.v = calloc(ops + 1, sizeof *m.v), .window = window, .max = max};
    cr_assert_not_null(m.v);
    struct spool_dedup d;
    spool_dedup_init(&d, window, max);
    srand(seed);
    int64_t now = 1000;
    char ch[16], id[520];
    for (unsigned i = 0; i < ops; i++) {
        unsigned r = (unsigned)rand();
        now += r % 5 == 0 ? -(int64_t)(r % 7) : (int64_t)(r % 3); /* clocks may step back */
        snprintf(ch, sizeof ch, "c%u", (r >> 8) % 3);
        random_id(id, (unsigned)rand(), nkeys);
        if ((r >> 4) % 3 == 0)
            id[0] = '\0';
        uint64_t s1 = 0, s2 = 0;
        bool f1 = spool_dedup_find(&d, ch, id, now, &s1);
        bool f2 = model_find(&m, ch, id, now, &s2);
        /* Plain checks: a criterion assertion per op would dominate the run time. */
        if (f1 != f2 || (f1 && s1 != s2))
            cr_assert_fail("op %u: find %s/%.20s at %lld: table %d seq %llu, model %d seq %llu", i,
                           ch, id, (long long)now, f1, (unsigned long long)s1, f2,
                           (unsigned long long)s2);
        if (!f1) {
            if (spool_dedup_insert(&d, ch, id, i + 1, now) != 0)
                cr_assert_fail("op %u: insert failed", i);
            model_insert(&m, ch, id, i + 1, now);
        }
        if (d.count != m.n - m.head)
            cr_assert_fail("op %u: count %zu, model %zu", i, d.count, m.n - m.head);
    }
    spool_dedup_close(&d);
    free(m.v);
}

Test(dedup, matches_model_small_bound)
{
    run(50, 8, 40, 40000, 1);
}

Test(dedup, matches_model_window_bound)
{
    run(30, 100000, 300, 40000, 2);
}

Test(dedup, matches_model_count_bound_with_growth)
{
    run(1000000, 700, 2000, 30000, 3);
}

Test(dedup, reset_then_reuse)
{
    struct spool_dedup d;
    spool_dedup_init(&d, 100, 10);
    uint64_t seq = 0;
    cr_assert_eq(spool_dedup_insert(&d, "c", "a", 1, 1000), 0);
    spool_dedup_reset(&d);
    cr_assert_not(spool_dedup_find(&d, "c", "a", 1000, &seq));
    cr_assert_eq(spool_dedup_insert(&d, "c", "a", 2, 1000), 0);
    cr_assert(spool_dedup_find(&d, "c", "a", 1000, &seq));
    cr_assert_eq(seq, 2);
    struct spool_dedup_key k;
    cr_assert(spool_dedup_key_init(&k, "c", "a"));
    cr_assert(spool_dedup_find_key(&d, &k, 1050, &seq));
    cr_assert_not(spool_dedup_key_init(&k, "c", ""));
    spool_dedup_close(&d);
}
