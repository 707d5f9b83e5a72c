/*
 * A small Prometheus registry rendered in text exposition format 0.0.4.
 *
 * A registry holds metric families (name, help, type, label names). A family's children are its
 * label-value combinations, created on first use and kept until the registry closes, so callers
 * look a child up once (spool_counter_of(family, (const char *[]){"ws"})) and keep the pointer
 * for hot paths. Families without labels have exactly one child: spool_counter_of(family, NULL).
 *
 * Values are updated with C11 atomics: counters, gauges and histogram buckets may be bumped from
 * any thread without a lock. Doubles are kept as their bit patterns in an atomic 64-bit word and
 * added with a compare-and-swap loop. Child creation and rendering take a per-registry mutex.
 *
 * Histograms take their upper bounds at registration; "+Inf" is implicit. An observation lands in
 * the first bucket whose bound is >= the value (Prometheus' `le`); buckets are stored per bucket
 * and made cumulative when rendering, and _count is the total of all buckets so a scrape is
 * always self-consistent. NaN observations are ignored.
 *
 * Collectors are families whose samples are produced at scrape time by a callback — for values
 * owned elsewhere (per-shard raft term and commit index, store statistics). The callback gets a
 * writer and emits one sample per label-value combination. It runs on the scraping thread
 * without the registry mutex held, so it may take its own layer's locks (whose holders may be
 * creating children) and may even create children itself.
 *
 * Output order: families in registration order, children in creation order, which keeps scrapes
 * stable and tests exact. Names are validated ([a-zA-Z_:][a-zA-Z0-9_:]*; labels without ':' and
 * not starting "__"; "le" is reserved for histograms); counter names should end in _total.
 */
#ifndef SPOOL_GATEWAY_METRICS_H
#define SPOOL_GATEWAY_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SPOOL_METRICS_MAX_LABELS 8
#define SPOOL_METRICS_MAX_BUCKETS 32 /* not counting +Inf */

enum spool_metric_type {
    SPOOL_METRIC_COUNTER,
    SPOOL_METRIC_GAUGE,
    SPOOL_METRIC_HISTOGRAM,
};

struct spool_metric_family; /* opaque */
struct spool_counter;       /* opaque children */
struct spool_gauge;
struct spool_histogram;
struct spool_metric_writer;

struct spool_metrics {
    pthread_mutex_t lock;
    struct spool_metric_family **families;
    size_t n;
    size_t cap;
    bool shared;                   /* a root with views: collectors read across threads */
    struct spool_metrics *root;    /* set on a view */
    const char *const *per_loop;   /* a view's per-loop collector families */
    size_t n_per_loop;
    /* fresh samples on demand (spool_metrics_set_waker); under the root's lock */
    pthread_t owner;               /* the thread that created it */
    void (*wake)(void *arg);
    void *wake_arg;
    uint64_t requested, served;    /* refresh tickets */
    pthread_cond_t refreshed;      /* root: a registry finished a refresh */
    struct spool_metrics **views;  /* root: its open views */
    size_t n_views, cap_views;
};

int spool_metrics_init(struct spool_metrics *m);
/* Closes a root (after all its views), or a view: its collect callbacks leave the root. */
void spool_metrics_close(struct spool_metrics *m);

/* Shared registries, for one process serving clients on several event loops (gateway/workers.h).
 * A view is what one more loop registers its metrics in: every registration goes to `root`.
 * A counter, gauge or histogram family the root already has is shared, so each loop bumps the
 * same atomics and a scrape shows the process total. A collector family the root already has
 * takes the view's callback as one more source only when its name is listed in `per_loop`
 * (strings that outlive the view; e.g. open connections, which each loop counts for itself);
 * other collectors (process-wide figures the first loop already reports) are not duplicated.
 *
 * Collect callbacks read their loop's state, so in a shared registry (one with views) a scrape
 * runs only the callbacks of the thread it runs on; every other source contributes the samples
 * its own thread last stored with spool_metrics_refresh(), which each loop calls on a short
 * timer. Samples with the same label values from several sources are summed. Render, names and
 * exports through a view act on the root. */
int spool_metrics_view_init(struct spool_metrics *view, struct spool_metrics *root,
                            const char *const *per_loop, size_t n_per_loop);
/* Runs the collect callbacks registered through `m` (a root or a view) on the calling thread
 * and keeps their samples for scrapes on other threads. */
void spool_metrics_refresh(struct spool_metrics *m);
/* How a scrape on another thread asks m's thread for fresh samples: `wake(arg)` (called from any
 * thread, under the registry lock: it must only signal, e.g. uv_async_send) must make m's thread
 * call spool_metrics_refresh(m) soon. A scrape then waits for those refreshes, up to
 * SPOOL_METRICS_FRESH_WAIT_MS, and otherwise uses the last samples (each loop also refreshes on
 * a timer). NULL stops it (before the signalled handle goes away). */
#define SPOOL_METRICS_FRESH_WAIT_MS 200
void spool_metrics_set_waker(struct spool_metrics *m, void (*wake)(void *arg), void *arg);

/* Register a family. `labels` has `n_labels` names (0 and NULL for none). Returns NULL with `err`
 * set (SPOOL_EINVAL bad/duplicate name, SPOOL_ENOMEM). The family lives until the registry closes. */
struct spool_metric_family *spool_metrics_counter(struct spool_metrics *m, const char *name,
                                                  const char *help, const char *const *labels,
                                                  size_t n_labels, struct spool_err *err);
struct spool_metric_family *spool_metrics_gauge(struct spool_metrics *m, const char *name,
                                                const char *help, const char *const *labels,
                                                size_t n_labels, struct spool_err *err);
/* `bounds`: n_bounds finite, strictly increasing upper bounds (a trailing +Inf is allowed and
 * dropped). */
struct spool_metric_family *spool_metrics_histogram(struct spool_metrics *m, const char *name,
                                                    const char *help, const char *const *labels,
                                                    size_t n_labels, const double *bounds,
                                                    size_t n_bounds, struct spool_err *err);

/* A collector: `type` is SPOOL_METRIC_COUNTER or SPOOL_METRIC_GAUGE. */
typedef void (*spool_metric_collect_fn)(struct spool_metric_writer *w, void *arg);
struct spool_metric_family *spool_metrics_collector(struct spool_metrics *m, const char *name,
                                                    const char *help, enum spool_metric_type type,
                                                    const char *const *labels, size_t n_labels,
                                                    spool_metric_collect_fn fn, void *arg,
                                                    struct spool_err *err);
/* Emit one sample from a collect callback; `values` has the family's label count. */
void spool_metric_write(struct spool_metric_writer *w, const char *const *values, double v);

/* Children: `values` has the family's label count (NULL when it has none). NULL if the family is
 * of another type, or on out of memory. Label values may be any UTF-8 text (escaped on output). */
struct spool_counter *spool_counter_of(struct spool_metric_family *f, const char *const *values);
struct spool_gauge *spool_gauge_of(struct spool_metric_family *f, const char *const *values);
struct spool_histogram *spool_histogram_of(struct spool_metric_family *f,
                                           const char *const *values);

void spool_counter_inc(struct spool_counter *c);
void spool_counter_add(struct spool_counter *c, double v); /* v < 0 or NaN is ignored */
double spool_counter_value(const struct spool_counter *c);

void spool_gauge_set(struct spool_gauge *g, double v);
void spool_gauge_add(struct spool_gauge *g, double v);
void spool_gauge_inc(struct spool_gauge *g);
void spool_gauge_dec(struct spool_gauge *g);
double spool_gauge_value(const struct spool_gauge *g);

void spool_histogram_observe(struct spool_histogram *h, double v);
uint64_t spool_histogram_count(const struct spool_histogram *h);
double spool_histogram_sum(const struct spool_histogram *h);

/* The whole registry as exposition text: a malloc'd NUL-terminated buffer in *out (free()),
 * its length in *len. Returns 0 or SPOOL_ENOMEM. Content type: text/plain; version=0.0.4 */
#define SPOOL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
int spool_metrics_render(struct spool_metrics *m, char **out, size_t *len, struct spool_err *err);

/* Family names in registration order: fills up to `max` pointers (valid until close) and returns
 * the total number of families. */
size_t spool_metrics_names(struct spool_metrics *m, const char **names, size_t max);
/* True when `series` is a name a scrape can contain: a family name, or a histogram's
 * name_bucket / name_sum / name_count. For checking alert rules and dashboards. */
bool spool_metrics_exports(struct spool_metrics *m, const char *series);

#endif
