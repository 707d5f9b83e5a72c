/* The metric registry shared by spoold's event loops (gateway/metrics.h, views): families
 * registered again through a view are the root's (one set of atomics), per-loop collectors from
 * another thread are summed in from their last refresh, other collectors of a view are not
 * duplicated, a different shape is refused, and closing a view removes its sources. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"

static struct spool_metrics root;
static const char *const per_loop[] = {"conns"};

static void setup(void) { cr_assert_eq(spool_metrics_init(&root), 0); }
static void teardown(void) { spool_metrics_close(&root); }
TestSuite(workers_metrics, .init = setup, .fini = teardown);

static char *render(void)
{
    char *out = NULL;
    size_t len = 0;
    struct spool_err err;
    cr_assert_eq(spool_metrics_render(&root, &out, &len, &err), 0, "%s", err.msg);
    return out;
}

struct loop_figs {
    double ws, http, disk;
    int calls;
};

static void collect_conns(struct spool_metric_writer *w, void *arg)
{
    struct loop_figs *f = arg;
    f->calls++;
    spool_metric_write(w, (const char *[]){"ws"}, f->ws);
    spool_metric_write(w, (const char *[]){"http"}, f->http);
}

static void collect_disk(struct spool_metric_writer *w, void *arg)
{
    struct loop_figs *f = arg;
    spool_metric_write(w, NULL, f->disk);
}

static int register_loop(struct spool_metrics *m, struct loop_figs *f, struct spool_err *err)
{
    struct spool_metric_family *c = spool_metrics_counter(m, "reqs_total", "requests", (const char *[]){"loop"}, 1, err);
    if (c == NULL ||
        spool_metrics_collector(m, "conns", "open", SPOOL_METRIC_GAUGE, (const char *[]){"transport"}, 1,
                                collect_conns, f, err) == NULL ||
        spool_metrics_collector(m, "disk", "free", SPOOL_METRIC_GAUGE, NULL, 0, collect_disk, f, err) == NULL)
        return -1;
    spool_counter_add(spool_counter_of(c, (const char *[]){"all"}), 2);
    return 0;
}

struct worker {
    struct spool_metrics view;
    struct loop_figs figs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int step;        /* 1: registered and refreshed; 2: asked to close; 3: closed */
    int failed;
    bool use_waker, woken;
    int refreshes;
};

/* The waker: runs on the scraping thread, only signals the worker. */
static void wake(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->lock);
    w->woken = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void worker_wait(struct worker *w, int step)
{
    pthread_mutex_lock(&w->lock);
    while (w->step < step) pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void worker_set(struct worker *w, int step)
{
    pthread_mutex_lock(&w->lock);
    w->step = step;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct spool_err err;
    spool_metrics_view_init(&w->view, &root, per_loop, 1);
    w->failed = register_loop(&w->view, &w->figs, &err);
    /* another shape under a shared name is refused */
    if (w->failed == 0 && spool_metrics_gauge(&w->view, "reqs_total", "", NULL, 0, &err) != NULL) w->failed = 2;
    spool_metrics_refresh(&w->view);
    if (w->use_waker) spool_metrics_set_waker(&w->view, wake, w);
    worker_set(w, 1);
    /* the worker's "loop": refresh when woken, until asked to close */
    pthread_mutex_lock(&w->lock);
    while (w->step < 2) {
        if (w->woken) {
            w->woken = false;
            pthread_mutex_unlock(&w->lock);
            spool_metrics_refresh(&w->view);
            pthread_mutex_lock(&w->lock);
            w->refreshes++;
            continue;
        }
        pthread_cond_wait(&w->cond, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    spool_metrics_set_waker(&w->view, NULL, NULL);
    spool_metrics_close(&w->view);
    worker_set(w, 3);
    return NULL;
}

Test(workers_metrics, a_view_shares_counters_and_sums_per_loop_collectors)
{
    struct spool_err err;
    struct loop_figs main_figs = {.ws = 1, .http = 10, .disk = 500};
    cr_assert_eq(register_loop(&root, &main_figs, &err), 0, "%s", err.msg);
    struct worker w = {.figs = {.ws = 2, .http = 20, .disk = 500}};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, worker_main, &w), 0);
    worker_wait(&w, 1);
    cr_assert_eq(w.failed, 0, "worker registration: %d", w.failed);
    int worker_calls = w.figs.calls;
    char *out = render();
    cr_expect_str_eq(out, "# HELP reqs_total requests\n"
                          "# TYPE reqs_total counter\n"
                          "reqs_total{loop=\"all\"} 4\n"
                          "# HELP conns open\n"
                          "# TYPE conns gauge\n"
                          "conns{transport=\"ws\"} 3\n"
                          "conns{transport=\"http\"} 30\n"
                          "# HELP disk free\n"
                          "# TYPE disk gauge\n"
                          "disk 500\n");
    free(out);
    cr_expect_eq(w.figs.calls, worker_calls, "a scrape on another thread never calls the worker's collector");
    worker_set(&w, 2);
    worker_wait(&w, 3);
    pthread_join(t, NULL);
    out = render();
    cr_expect(strstr(out, "conns{transport=\"ws\"} 1\n") != NULL, "after the view closed: %s", out);
    cr_expect(strstr(out, "reqs_total{loop=\"all\"} 4\n") != NULL, "counts stay: %s", out);
    free(out);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
}

Test(workers_metrics, a_single_registry_renders_as_before)
{
    struct spool_err err;
    struct loop_figs f = {.ws = 4, .http = 5, .disk = 6};
    cr_assert_eq(register_loop(&root, &f, &err), 0, "%s", err.msg);
    char *out = render();
    cr_expect(strstr(out, "conns{transport=\"ws\"} 4\nconns{transport=\"http\"} 5\n") != NULL, "%s", out);
    cr_expect_eq(f.calls, 1);
    free(out);
    cr_expect_null(spool_metrics_counter(&root, "reqs_total", "", (const char *[]){"loop"}, 1, &err),
                   "registering twice in a root is still refused");
}

Test(workers_metrics, a_scrape_asks_other_threads_for_fresh_samples)
{
    struct spool_err err;
    struct loop_figs main_figs = {.ws = 1};
    cr_assert_eq(register_loop(&root, &main_figs, &err), 0, "%s", err.msg);
    struct worker w = {.figs = {.ws = 2}, .use_waker = true};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, worker_main, &w), 0);
    worker_wait(&w, 1);
    pthread_mutex_lock(&w.lock);
    w.figs.ws = 40; /* changed on the worker's side after its last refresh */
    pthread_mutex_unlock(&w.lock);
    char *out = render();
    cr_expect(strstr(out, "conns{transport=\"ws\"} 41\n") != NULL, "the scrape waited for a fresh refresh: %s", out);
    free(out);
    worker_set(&w, 2);
    worker_wait(&w, 3);
    pthread_join(t, NULL);
    cr_expect_geq(w.refreshes, 1);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
}
