/*
 * Prometheus registry and text exposition (interface and rules in metrics.h).
 *
 * Values are doubles held as bit patterns in _Atomic uint64_t words: an update is a relaxed
 * compare-and-swap loop (a set is a plain store), so a gauge bumped by several gateway threads
 * needs no lock and costs one uncontended CAS in the common case. Relaxed ordering is enough
 * because no other memory is published through a metric; a scrape only needs each word to be
 * read whole. A CAS loop retries only while another thread is updating the same word, so it ends
 * as soon as contention does.
 *
 * Histograms keep one non-cumulative atomic count per bucket, so observe() touches a single
 * bucket word plus the sum; rendering walks the buckets once to produce Prometheus' cumulative
 * `le` series and derives _count from the same walk, so a scrape can never show _count below the
 * +Inf bucket even while observations race with it.
 *
 * Children (label-value combinations) are found by a linear scan under the registry mutex. That
 * is fine because callers look a child up once and keep the pointer; the scan is on the setup
 * path, not the hot path. Children are never freed before the registry, which is what makes the
 * kept pointers safe.
 *
 * Numbers are written in the shortest form that reads back to the same double (integers without
 * exponent or fraction), which keeps bucket bounds like 0.005 readable and output stable.
 */
#include "gateway/metrics.h"

#include <math.h> /* classification macros only: the gateway does not link libm */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct spool_counter {
    _Atomic uint64_t bits;
};

struct spool_gauge {
    _Atomic uint64_t bits;
};

struct spool_histogram {
    const struct spool_metric_family *family;
    _Atomic uint64_t sum_bits;
    _Atomic uint64_t buckets[]; /* n_bounds + 1, the last for +Inf */
};

struct child {
    char **values;
    union {
        struct spool_counter counter;
        struct spool_gauge gauge;
    } u;
    struct spool_histogram *hist;
};

/* One collect callback of a collector family, with the thread it belongs to and, in a shared
 * registry, the samples its last refresh produced (read by scrapes on other threads). */
struct sample {
    char **values;
    double v;
};

struct samples {
    struct sample *s;
    size_t n, cap;
    size_t n_labels;
    bool oom;
};

struct source {
    spool_metric_collect_fn fn;
    void *arg;
    const struct spool_metrics *owner; /* the registry (root or view) that registered it */
    pthread_t thread;
    struct samples cache;
};

struct spool_metric_family {
    struct spool_metrics *registry;
    char *name;
    char *help;
    enum spool_metric_type type;
    char *labels[SPOOL_METRICS_MAX_LABELS];
    size_t n_labels;
    double bounds[SPOOL_METRICS_MAX_BUCKETS];
    size_t n_bounds;
    bool collector;          /* samples come from `sources`, not children */
    struct source *sources;
    size_t n_sources;
    struct child **children;
    size_t n;
    size_t cap;
};

/* ---- atomic doubles ---- */

static double from_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add(_Atomic uint64_t *word, double v)
{
    uint64_t old = atomic_load_explicit(word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(word, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

static double atomic_get(const _Atomic uint64_t *word)
{
    return from_bits(atomic_load_explicit((_Atomic uint64_t *)word, memory_order_relaxed));
}

void spool_counter_inc(struct spool_counter *c) { atomic_add(&c->bits, 1.0); }

void spool_counter_add(struct spool_counter *c, double v)
{
    if (v > 0) atomic_add(&c->bits, v); /* also false for NaN */
}

double spool_counter_value(const struct spool_counter *c) { return atomic_get(&c->bits); }

void spool_gauge_set(struct spool_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, to_bits(v), memory_order_relaxed);
}

void spool_gauge_add(struct spool_gauge *g, double v) { atomic_add(&g->bits, v); }
void spool_gauge_inc(struct spool_gauge *g) { atomic_add(&g->bits, 1.0); }
void spool_gauge_dec(struct spool_gauge *g) { atomic_add(&g->bits, -1.0); }
double spool_gauge_value(const struct spool_gauge *g) { return atomic_get(&g->bits); }

void spool_histogram_observe(struct spool_histogram *h, double v)
{
    if (isnan(v)) return;
    const struct spool_metric_family *f = h->family;
    size_t i = 0;
    while (i < f->n_bounds && v > f->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_add(&h->sum_bits, v);
}

uint64_t spool_histogram_count(const struct spool_histogram *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->family->n_bounds; i++)
        n += atomic_load_explicit((_Atomic uint64_t *)&h->buckets[i], memory_order_relaxed);
    return n;
}

double spool_histogram_sum(const struct spool_histogram *h) { return atomic_get(&h->sum_bits); }

/* ---- registry ---- */

int spool_metrics_init(struct spool_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->owner = pthread_self();
    if (pthread_mutex_init(&m->lock, NULL) != 0) return SPOOL_ENOMEM;
    if (pthread_cond_init(&m->refreshed, NULL) != 0) {
        pthread_mutex_destroy(&m->lock);
        return SPOOL_ENOMEM;
    }
    return 0;
}

int spool_metrics_view_init(struct spool_metrics *view, struct spool_metrics *root,
                            const char *const *per_loop, size_t n_per_loop)
{
    memset(view, 0, sizeof *view);
    view->root = root;
    view->per_loop = per_loop;
    view->n_per_loop = n_per_loop;
    view->owner = pthread_self();
    int rv = 0;
    pthread_mutex_lock(&root->lock);
    root->shared = true;
    if (root->n_views == root->cap_views) {
        size_t cap = root->cap_views ? root->cap_views * 2 : 8;
        struct spool_metrics **vs = realloc(root->views, cap * sizeof *vs);
        if (vs == NULL) rv = SPOOL_ENOMEM;
        else root->views = vs, root->cap_views = cap;
    }
    if (rv == 0) root->views[root->n_views++] = view;
    pthread_mutex_unlock(&root->lock);
    return rv;
}

void spool_metrics_set_waker(struct spool_metrics *m, void (*wake)(void *arg), void *arg)
{
    struct spool_metrics *root = m->root != NULL ? m->root : m;
    pthread_mutex_lock(&root->lock);
    m->wake = wake;
    m->wake_arg = arg;
    pthread_cond_broadcast(&root->refreshed); /* a scrape waiting on it stops waiting */
    pthread_mutex_unlock(&root->lock);
}

/* In a shared registry, before a scrape reads other threads' samples: asks every other
 * registry with a waker for a refresh and waits (bounded) until each has done one that started
 * after the request. Root lock held on entry and exit. */
static void fresh_samples(struct spool_metrics *root)
{
    size_t n = root->n_views + 1, k = 0;
    struct want {
        struct spool_metrics *o;
        uint64_t ticket;
    } *want = calloc(n, sizeof *want);
    if (want == NULL) return;
    for (size_t i = 0; i < n; i++) {
        struct spool_metrics *o = i == 0 ? root : root->views[i - 1];
        if (o->wake == NULL || pthread_equal(o->owner, pthread_self())) continue;
        want[k++] = (struct want){o, ++o->requested};
        o->wake(o->wake_arg);
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += (long)SPOOL_METRICS_FRESH_WAIT_MS * 1000000L;
    deadline.tv_sec += deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
    for (;;) {
        bool waiting = false;
        for (size_t i = 0; i < k && !waiting; i++) {
            bool open = want[i].o == root; /* a view may have closed meanwhile */
            for (size_t j = 0; j < root->n_views && !open; j++) open = root->views[j] == want[i].o;
            waiting = open && want[i].o->wake != NULL && want[i].o->served < want[i].ticket;
        }
        if (!waiting || pthread_cond_timedwait(&root->refreshed, &root->lock, &deadline) != 0) break;
    }
    free(want);
}

/* Appends a collect callback owned by `owner` (the calling thread's registry). Lock held. */
static int source_add(struct spool_metric_family *f, spool_metric_collect_fn fn, void *arg,
                      const struct spool_metrics *owner)
{
    struct source *p = realloc(f->sources, (f->n_sources + 1) * sizeof *p);
    if (p == NULL) return SPOOL_ENOMEM;
    f->sources = p;
    p[f->n_sources++] = (struct source){.fn = fn, .arg = arg, .owner = owner,
                                        .thread = pthread_self(),
                                        .cache = {.n_labels = f->n_labels}};
    return 0;
}

static void child_free(struct child *c, size_t n_labels)
{
    if (c == NULL) return;
    for (size_t i = 0; c->values != NULL && i < n_labels; i++) free(c->values[i]);
    free(c->values);
    free(c->hist);
    free(c);
}

static void samples_clear(struct samples *ss)
{
    for (size_t i = 0; i < ss->n; i++) {
        for (size_t j = 0; ss->s[i].values != NULL && j < ss->n_labels; j++) free(ss->s[i].values[j]);
        free(ss->s[i].values);
    }
    free(ss->s);
    ss->s = NULL;
    ss->n = ss->cap = 0;
    ss->oom = false;
}

/* Adds `v` to the sample with these label values, or appends a new one (creation order). */
static void samples_add(struct samples *ss, const char *const *values, double v)
{
    for (size_t i = 0; i < ss->n; i++) {
        bool same = true;
        for (size_t j = 0; j < ss->n_labels && same; j++) same = strcmp(ss->s[i].values[j], values[j]) == 0;
        if (same) {
            ss->s[i].v += v;
            return;
        }
    }
    if (ss->oom) return;
    if (ss->n == ss->cap) {
        size_t cap = ss->cap ? ss->cap * 2 : 8;
        struct sample *p = realloc(ss->s, cap * sizeof *p);
        if (p == NULL) goto oom;
        ss->s = p;
        ss->cap = cap;
    }
    struct sample *x = &ss->s[ss->n];
    x->v = v;
    x->values = NULL;
    if (ss->n_labels > 0) {
        if ((x->values = calloc(ss->n_labels, sizeof *x->values)) == NULL) goto oom;
        for (size_t j = 0; j < ss->n_labels; j++) {
            if ((x->values[j] = strdup(values[j])) == NULL) {
                for (size_t k = 0; k < j; k++) free(x->values[k]);
                free(x->values);
                goto oom;
            }
        }
    }
    ss->n++;
    return;
oom:
    ss->oom = true;
}

static void samples_merge(struct samples *into, const struct samples *from)
{
    for (size_t i = 0; i < from->n; i++)
        samples_add(into, (const char *const *)from->s[i].values, from->s[i].v);
    into->oom = into->oom || from->oom;
}

static void family_free(struct spool_metric_family *f)
{
    if (f == NULL) return;
    for (size_t i = 0; i < f->n_sources; i++) samples_clear(&f->sources[i].cache);
    free(f->sources);
    for (size_t i = 0; i < f->n; i++) child_free(f->children[i], f->n_labels);
    for (size_t i = 0; i < f->n_labels; i++) free(f->labels[i]);
    free(f->children);
    free(f->name);
    free(f->help);
    free(f);
}

void spool_metrics_close(struct spool_metrics *m)
{
    if (m->root != NULL) { /* a view: its collect callbacks leave the root's families */
        struct spool_metrics *root = m->root;
        pthread_mutex_lock(&root->lock);
        for (size_t i = 0; i < root->n; i++) {
            struct spool_metric_family *f = root->families[i];
            size_t k = 0;
            for (size_t j = 0; j < f->n_sources; j++) {
                if (f->sources[j].owner == m) samples_clear(&f->sources[j].cache);
                else f->sources[k++] = f->sources[j];
            }
            f->n_sources = k;
        }
        for (size_t i = 0; i < root->n_views; i++) {
            if (root->views[i] == m) {
                root->views[i] = root->views[--root->n_views];
                break;
            }
        }
        pthread_cond_broadcast(&root->refreshed);
        pthread_mutex_unlock(&root->lock);
        memset(m, 0, sizeof *m);
        return;
    }
    for (size_t i = 0; i < m->n; i++) family_free(m->families[i]);
    free(m->views);
    pthread_cond_destroy(&m->refreshed);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    memset(m, 0, sizeof *m);
}

static bool valid_name(const char *s, bool colon)
{
    if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9')) return false;
    for (; *s != '\0'; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (colon && c == ':')))
            return false;
    }
    return true;
}

static struct spool_metric_family *find_family(struct spool_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->families[i]->name, name) == 0) return m->families[i];
    return NULL;
}

/* Creates a child with `values` (n_labels of them) and appends it. Registry lock held. */
static struct child *child_new(struct spool_metric_family *f, const char *const *values)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        struct child **cs = realloc(f->children, cap * sizeof *cs);
        if (cs == NULL) return NULL;
        f->children = cs;
        f->cap = cap;
    }
    struct child *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    if (f->n_labels > 0) {
        c->values = calloc(f->n_labels, sizeof *c->values);
        for (size_t i = 0; c->values != NULL && i < f->n_labels; i++) {
            c->values[i] = strdup(values[i]);
            if (c->values[i] == NULL) goto fail;
        }
        if (c->values == NULL) goto fail;
    }
    if (f->type == SPOOL_METRIC_HISTOGRAM) {
        c->hist = calloc(1, sizeof *c->hist + (f->n_bounds + 1) * sizeof c->hist->buckets[0]);
        if (c->hist == NULL) goto fail;
        c->hist->family = f;
    }
    f->children[f->n++] = c;
    return c;
fail:
    child_free(c, f->n_labels);
    return NULL;
}

static struct spool_metric_family *family_add(struct spool_metrics *m, const char *name,
                                              const char *help, enum spool_metric_type type,
                                              const char *const *labels, size_t n_labels,
                                              struct spool_err *err)
{
    if (!valid_name(name, true)) {
        spool_err_set(err, SPOOL_EINVAL, "metric name \"%.64s\" is not [a-zA-Z_:][a-zA-Z0-9_:]*",
                      name ? name : "");
        return NULL;
    }
    if (n_labels > SPOOL_METRICS_MAX_LABELS || (n_labels > 0 && labels == NULL)) {
        spool_err_set(err, SPOOL_EINVAL, "metric %s: more than %d labels", name,
                      SPOOL_METRICS_MAX_LABELS);
        return NULL;
    }
    for (size_t i = 0; i < n_labels; i++) {
        bool dup = false;
        for (size_t j = 0; j < i; j++) dup = dup || strcmp(labels[i], labels[j]) == 0;
        if (!valid_name(labels[i], false) || strncmp(labels[i], "__", 2) == 0 || dup ||
            (type == SPOOL_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
            spool_err_set(err, SPOOL_EINVAL, "metric %s: label name \"%.64s\" is invalid, "
                          "reserved or repeated", name, labels[i] ? labels[i] : "");
            return NULL;
        }
    }
    if (find_family(m, name) != NULL) {
        spool_err_set(err, SPOOL_EINVAL, "metric %s is registered twice", name);
        return NULL;
    }
    struct spool_metric_family *f = calloc(1, sizeof *f);
    if (f == NULL) goto oom;
    f->registry = m;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (f->name == NULL || f->help == NULL) goto oom;
    for (; f->n_labels < n_labels; f->n_labels++) {
        f->labels[f->n_labels] = strdup(labels[f->n_labels]);
        if (f->labels[f->n_labels] == NULL) goto oom;
    }
    return f;
oom:
    family_free(f);
    spool_err_set(err, SPOOL_ENOMEM, "metric %s: out of memory", name);
    return NULL;
}

/* Appends a built family (and its only child when it has no labels). Registry lock held. */
static struct spool_metric_family *family_commit(struct spool_metrics *m,
                                                 struct spool_metric_family *f,
                                                 struct spool_err *err)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct spool_metric_family **fs = realloc(m->families, cap * sizeof *fs);
        if (fs == NULL) goto oom;
        m->families = fs;
        m->cap = cap;
    }
    /* A family without labels exists from the start so it scrapes as 0, not as absent. */
    if (!f->collector && f->n_labels == 0 && child_new(f, NULL) == NULL) goto oom;
    m->families[m->n++] = f;
    return f;
oom:
    spool_err_set(err, SPOOL_ENOMEM, "metric %s: out of memory", f->name);
    family_free(f);
    return NULL;
}

/* Same name, type, label names and bucket bounds: what a view may share. */
static bool family_matches(const struct spool_metric_family *f, enum spool_metric_type type,
                           const char *const *labels, size_t n_labels, const double *bounds,
                           size_t n_bounds, bool collector)
{
    if (f->type != type || f->collector != collector || f->n_labels != n_labels ||
        f->n_bounds != n_bounds)
        return false;
    for (size_t i = 0; i < n_labels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0) return false;
    for (size_t i = 0; i < n_bounds; i++)
        if (f->bounds[i] != bounds[i]) return false;
    return true;
}

static bool view_per_loop(const struct spool_metrics *view, const char *name)
{
    for (size_t i = 0; i < view->n_per_loop; i++)
        if (strcmp(view->per_loop[i], name) == 0) return true;
    return false;
}

static struct spool_metric_family *register_family(struct spool_metrics *m, const char *name,
                                                   const char *help, enum spool_metric_type type,
                                                   const char *const *labels, size_t n_labels,
                                                   const double *bounds, size_t n_bounds,
                                                   spool_metric_collect_fn fn, void *arg,
                                                   struct spool_err *err)
{
    struct spool_metrics *owner = m;
    struct spool_metric_family *f;
    if (m->root != NULL) {
        /* A view: a family the root already has is shared (one set of children), and a collect
         * callback joins it only for the per-loop families. */
        m = m->root;
        pthread_mutex_lock(&m->lock);
        if (name != NULL && (f = find_family(m, name)) != NULL) {
            if (!family_matches(f, type, labels, n_labels, bounds, n_bounds, fn != NULL)) {
                spool_err_set(err, SPOOL_EINVAL, "metric %s is registered twice with another "
                              "type, labels or buckets", name);
                f = NULL;
            } else if (fn != NULL && view_per_loop(owner, name) &&
                       source_add(f, fn, arg, owner) != 0) {
                spool_err_set(err, SPOOL_ENOMEM, "metric %s: out of memory", name);
                f = NULL;
            }
            pthread_mutex_unlock(&m->lock);
            return f;
        }
    } else {
        pthread_mutex_lock(&m->lock);
    }
    f = family_add(m, name, help, type, labels, n_labels, err);
    if (f != NULL) {
        f->collector = fn != NULL;
        if (fn != NULL && source_add(f, fn, arg, owner) != 0) {
            spool_err_set(err, SPOOL_ENOMEM, "metric %s: out of memory", name);
            family_free(f);
            f = NULL;
        }
    }
    if (f != NULL) {
        if (n_bounds > 0) memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
        f->n_bounds = n_bounds;
        f = family_commit(m, f, err);
    }
    pthread_mutex_unlock(&m->lock);
    return f;
}

struct spool_metric_family *spool_metrics_counter(struct spool_metrics *m, const char *name,
                                                  const char *help, const char *const *labels,
                                                  size_t n_labels, struct spool_err *err)
{
    return register_family(m, name, help, SPOOL_METRIC_COUNTER, labels, n_labels, NULL, 0, NULL,
                           NULL, err);
}

struct spool_metric_family *spool_metrics_gauge(struct spool_metrics *m, const char *name,
                                                const char *help, const char *const *labels,
                                                size_t n_labels, struct spool_err *err)
{
    return register_family(m, name, help, SPOOL_METRIC_GAUGE, labels, n_labels, NULL, 0, NULL,
                           NULL, err);
}

struct spool_metric_family *spool_metrics_histogram(struct spool_metrics *m, const char *name,
                                                    const char *help, const char *const *labels,
                                                    size_t n_labels, const double *bounds,
                                                    size_t n_bounds, struct spool_err *err)
{
    if (n_bounds > 0 && bounds != NULL && isinf(bounds[n_bounds - 1]) && bounds[n_bounds - 1] > 0)
        n_bounds--; /* a trailing +Inf is implicit */
    if (n_bounds == 0 || n_bounds > SPOOL_METRICS_MAX_BUCKETS || bounds == NULL) {
        spool_err_set(err, SPOOL_EINVAL, "histogram %s: needs 1 to %d bucket bounds",
                      name ? name : "", SPOOL_METRICS_MAX_BUCKETS);
        return NULL;
    }
    for (size_t i = 0; i < n_bounds; i++) {
        double b = bounds[i];
        if (!isfinite(b) || (i > 0 && !(b > bounds[i - 1]))) {
            spool_err_set(err, SPOOL_EINVAL,
                          "histogram %s: bounds must be finite and strictly increasing",
                          name ? name : "");
            return NULL;
        }
    }
    return register_family(m, name, help, SPOOL_METRIC_HISTOGRAM, labels, n_labels, bounds,
                           n_bounds, NULL, NULL, err);
}

struct spool_metric_family *spool_metrics_collector(struct spool_metrics *m, const char *name,
                                                    const char *help, enum spool_metric_type type,
                                                    const char *const *labels, size_t n_labels,
                                                    spool_metric_collect_fn fn, void *arg,
                                                    struct spool_err *err)
{
    if (fn == NULL || (type != SPOOL_METRIC_COUNTER && type != SPOOL_METRIC_GAUGE)) {
        spool_err_set(err, SPOOL_EINVAL, "collector %s: needs a callback and counter or gauge type",
                      name ? name : "");
        return NULL;
    }
    return register_family(m, name, help, type, labels, n_labels, NULL, 0, fn, arg, err);
}

static struct child *child_of(struct spool_metric_family *f, enum spool_metric_type type,
                              const char *const *values)
{
    if (f == NULL || f->type != type || f->collector || (f->n_labels > 0 && values == NULL))
        return NULL;
    for (size_t i = 0; i < f->n_labels; i++)
        if (values[i] == NULL) return NULL;
    pthread_mutex_lock(&f->registry->lock);
    struct child *found = NULL;
    for (size_t i = 0; i < f->n && found == NULL; i++) {
        bool same = true;
        for (size_t j = 0; j < f->n_labels && same; j++)
            same = strcmp(f->children[i]->values[j], values[j]) == 0;
        if (same) found = f->children[i];
    }
    if (found == NULL) found = child_new(f, values);
    pthread_mutex_unlock(&f->registry->lock);
    return found;
}

struct spool_counter *spool_counter_of(struct spool_metric_family *f, const char *const *values)
{
    struct child *c = child_of(f, SPOOL_METRIC_COUNTER, values);
    return c ? &c->u.counter : NULL;
}

struct spool_gauge *spool_gauge_of(struct spool_metric_family *f, const char *const *values)
{
    struct child *c = child_of(f, SPOOL_METRIC_GAUGE, values);
    return c ? &c->u.gauge : NULL;
}

struct spool_histogram *spool_histogram_of(struct spool_metric_family *f,
                                           const char *const *values)
{
    struct child *c = child_of(f, SPOOL_METRIC_HISTOGRAM, values);
    return c ? c->hist : NULL;
}

/* ---- rendering ---- */

struct buf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* `s` with '\\' and '\n' escaped, plus '"' when `quote` (label values; HELP leaves quotes). */
static void buf_escaped(struct buf *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : quote && *s == '"' ? "\\\"" : NULL;
        if (esc == NULL) continue;
        buf_put(b, run, (size_t)(s - run));
        buf_str(b, esc);
        run = s + 1;
    }
    buf_put(b, run, (size_t)(s - run));
}

/* Shortest text that reads back as `v`; integers plainly; NaN, +Inf, -Inf as Prometheus does. */
static void format_number(char out[32], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && v == (double)(int64_t)v) {
        snprintf(out, 32, "%lld", (long long)v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v) break;
        }
    }
}

static void buf_number(struct buf *b, double v)
{
    char num[32];
    format_number(num, v);
    buf_str(b, num);
}

/* One sample line: name[suffix]{labels[,le="..."]} value */
static void sample(struct buf *b, const struct spool_metric_family *f, const char *suffix,
                   const char *const *values, const char *le, double v)
{
    buf_str(b, f->name);
    buf_str(b, suffix);
    if (f->n_labels > 0 || le != NULL) {
        buf_str(b, "{");
        for (size_t i = 0; i < f->n_labels; i++) {
            if (i > 0) buf_str(b, ",");
            buf_str(b, f->labels[i]);
            buf_str(b, "=\"");
            buf_escaped(b, values[i], true);
            buf_str(b, "\"");
        }
        if (le != NULL) {
            buf_str(b, f->n_labels > 0 ? ",le=\"" : "le=\"");
            buf_str(b, le);
            buf_str(b, "\"");
        }
        buf_str(b, "}");
    }
    buf_str(b, " ");
    buf_number(b, v);
    buf_str(b, "\n");
}

static void render_histogram(struct buf *b, const struct spool_metric_family *f,
                             const struct child *c)
{
    const char *const *values = (const char *const *)c->values;
    uint64_t cumulative = 0;
    char le[32];
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cumulative += atomic_load_explicit(&c->hist->buckets[i], memory_order_relaxed);
        if (i < f->n_bounds) format_number(le, f->bounds[i]);
        else strcpy(le, "+Inf");
        sample(b, f, "_bucket", values, le, (double)cumulative);
    }
    sample(b, f, "_sum", values, NULL, atomic_get(&c->hist->sum_bits));
    sample(b, f, "_count", values, NULL, (double)cumulative);
}

struct spool_metric_writer {
    struct buf *buf;
    const struct spool_metric_family *family;
    struct samples *capture; /* shared registries: samples are gathered and summed, not written */
};

void spool_metric_write(struct spool_metric_writer *w, const char *const *values, double v)
{
    const struct spool_metric_family *f = w->family;
    if (f->n_labels > 0 && values == NULL) return;
    for (size_t i = 0; i < f->n_labels; i++)
        if (values[i] == NULL) return;
    if (w->capture != NULL) samples_add(w->capture, values, v);
    else sample(w->buf, f, "", values, NULL, v);
}

/* A collector family's samples. One loop (no views): its one callback, live. Shared: every
 * source in registration order, the calling thread's own live and the other threads' from their
 * last refresh, summed by label values. */
static void render_collector(struct buf *b, struct spool_metric_family *f)
{
    struct spool_metrics *m = f->registry;
    pthread_mutex_lock(&m->lock);
    if (!m->shared) {
        struct source src = f->n_sources > 0 ? f->sources[0] : (struct source){0};
        pthread_mutex_unlock(&m->lock);
        if (src.fn != NULL) {
            struct spool_metric_writer w = {b, f, NULL};
            src.fn(&w, src.arg);
        }
        return;
    }
    size_t n = f->n_sources;
    struct source *srcs = n ? calloc(n, sizeof *srcs) : NULL;
    if (n > 0 && srcs == NULL) {
        pthread_mutex_unlock(&m->lock);
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        srcs[i] = f->sources[i];
        srcs[i].cache = (struct samples){.n_labels = f->n_labels};
        if (!pthread_equal(srcs[i].thread, pthread_self())) samples_merge(&srcs[i].cache, &f->sources[i].cache);
    }
    pthread_mutex_unlock(&m->lock);
    struct samples all = {.n_labels = f->n_labels};
    for (size_t i = 0; i < n; i++) {
        if (pthread_equal(srcs[i].thread, pthread_self())) {
            struct spool_metric_writer w = {b, f, &all};
            srcs[i].fn(&w, srcs[i].arg);
        } else {
            samples_merge(&all, &srcs[i].cache);
        }
        samples_clear(&srcs[i].cache);
    }
    free(srcs);
    for (size_t i = 0; i < all.n; i++) sample(b, f, "", (const char *const *)all.s[i].values, NULL, all.s[i].v);
    if (all.oom) b->oom = true;
    samples_clear(&all);
}

void spool_metrics_refresh(struct spool_metrics *m)
{
    struct spool_metrics *root = m->root != NULL ? m->root : m;
    struct job {
        struct spool_metric_family *f;
        struct source src;
    } *jobs = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&root->lock);
    uint64_t ticket = m->requested; /* every request made before now is served by this refresh */
    for (size_t i = 0; i < root->n; i++) {
        struct spool_metric_family *f = root->families[i];
        for (size_t j = 0; j < f->n_sources; j++) {
            if (f->sources[j].owner != m) continue;
            if (n == cap) {
                size_t c = cap ? cap * 2 : 16;
                struct job *p = realloc(jobs, c * sizeof *p);
                if (p == NULL) break;
                jobs = p;
                cap = c;
            }
            jobs[n++] = (struct job){f, f->sources[j]};
        }
    }
    pthread_mutex_unlock(&root->lock);
    for (size_t i = 0; i < n; i++) {
        struct spool_metric_family *f = jobs[i].f;
        struct samples got = {.n_labels = f->n_labels};
        struct spool_metric_writer w = {NULL, f, &got};
        jobs[i].src.fn(&w, jobs[i].src.arg);
        pthread_mutex_lock(&root->lock);
        for (size_t j = 0; j < f->n_sources; j++) {
            struct source *s = &f->sources[j];
            if (s->owner == m && s->fn == jobs[i].src.fn && s->arg == jobs[i].src.arg) {
                struct samples old = s->cache;
                s->cache = got;
                got = old;
                break;
            }
        }
        pthread_mutex_unlock(&root->lock);
        samples_clear(&got);
    }
    free(jobs);
    pthread_mutex_lock(&root->lock);
    if (ticket > m->served) m->served = ticket;
    pthread_cond_broadcast(&root->refreshed);
    pthread_mutex_unlock(&root->lock);
}

static const char *type_name(enum spool_metric_type t)
{
    return t == SPOOL_METRIC_COUNTER ? "counter" : t == SPOOL_METRIC_GAUGE ? "gauge" : "histogram";
}

static void render_family(struct buf *b, struct spool_metric_family *f)
{
    buf_str(b, "# HELP ");
    buf_str(b, f->name);
    buf_str(b, " ");
    buf_escaped(b, f->help, false);
    buf_str(b, "\n# TYPE ");
    buf_str(b, f->name);
    buf_str(b, " ");
    buf_str(b, type_name(f->type));
    buf_str(b, "\n");
    if (f->collector) {
        render_collector(b, f);
        return;
    }
    pthread_mutex_lock(&f->registry->lock); /* children may be appended concurrently */
    for (size_t j = 0; j < f->n; j++) {
        struct child *c = f->children[j];
        const char *const *values = (const char *const *)c->values;
        if (f->type == SPOOL_METRIC_HISTOGRAM) render_histogram(b, f, c);
        else if (f->type == SPOOL_METRIC_GAUGE)
            sample(b, f, "", values, NULL, spool_gauge_value(&c->u.gauge));
        else sample(b, f, "", values, NULL, spool_counter_value(&c->u.counter));
    }
    pthread_mutex_unlock(&f->registry->lock);
}

/* Collect callbacks run without the registry lock, so a callback may take locks of its own
 * layer even if code holding those locks creates metric children. Families are never removed
 * and their name/help/type never change, so a snapshot of the family pointers is enough. */
int spool_metrics_render(struct spool_metrics *m, char **out, size_t *len, struct spool_err *err)
{
    if (m->root != NULL) m = m->root;
    struct buf b = {0};
    buf_put(&b, "", 0); /* an empty registry still yields "" rather than NULL */
    pthread_mutex_lock(&m->lock);
    if (m->shared) fresh_samples(m);
    size_t n = m->n;
    struct spool_metric_family **fs = n ? malloc(n * sizeof *fs) : NULL;
    if (fs != NULL) memcpy(fs, m->families, n * sizeof *fs);
    pthread_mutex_unlock(&m->lock);
    if (n > 0 && fs == NULL) b.oom = true;
    for (size_t i = 0; i < n && !b.oom; i++) render_family(&b, fs[i]);
    free(fs);
    if (b.oom) {
        free(b.p);
        *out = NULL;
        *len = 0;
        return spool_err_set(err, SPOOL_ENOMEM, "metrics: out of memory while rendering");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

size_t spool_metrics_names(struct spool_metrics *m, const char **names, size_t max)
{
    if (m->root != NULL) m = m->root;
    pthread_mutex_lock(&m->lock);
    size_t n = m->n;
    for (size_t i = 0; i < n && i < max; i++) names[i] = m->families[i]->name;
    pthread_mutex_unlock(&m->lock);
    return n;
}

bool spool_metrics_exports(struct spool_metrics *m, const char *series)
{
    static const char *suffixes[] = {"_bucket", "_sum", "_count"};
    bool found = false;
    if (m->root != NULL) m = m->root;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && !found; i++) {
        const struct spool_metric_family *f = m->families[i];
        size_t n = strlen(f->name);
        if (strcmp(series, f->name) == 0) found = true;
        for (size_t s = 0; s < 3 && !found && f->type == SPOOL_METRIC_HISTOGRAM; s++)
            found = strncmp(series, f->name, n) == 0 && strcmp(series + n, suffixes[s]) == 0;
    }
    pthread_mutex_unlock(&m->lock);
    return found;
}
