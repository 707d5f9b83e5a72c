/* Prometheus registry (gateway/metrics.h): exact exposition text for each metric type, label
 * escaping, histogram bucket edges, collectors, name listing and concurrent updates. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"

static struct spool_metrics reg;

static void setup(void) { cr_assert_eq(spool_metrics_init(&reg), 0); }
static void teardown(void) { spool_metrics_close(&reg); }
TestSuite(metrics, .init = setup, .fini = teardown);

static void expect_render(const char *want)
{
    char *out = NULL;
    size_t len = 0;
    struct spool_err err;
    cr_assert_eq(spool_metrics_render(&reg, &out, &len, &err), 0, "%s", err.msg);
    cr_expect_eq(len, strlen(out));
    cr_expect_str_eq(out, want);
    free(out);
}

Test(metrics, empty_registry_renders_empty_text) { expect_render(""); }

Test(metrics, counters_and_gauges_with_labels)
{
    struct spool_err err;
    struct spool_metric_family *msgs =
        spool_metrics_counter(&reg, "spool_messages_total", "Messages published.",
                              (const char *[]){"transport", "shard"}, 2, &err);
    cr_assert_not_null(msgs, "%s", err.msg);
    struct spool_metric_family *conns = spool_metrics_gauge(
        &reg, "spool_connections", "Open client connections.", (const char *[]){"transport"}, 1,
        &err);
    cr_assert_not_null(conns, "%s", err.msg);
    struct spool_metric_family *up =
        spool_metrics_gauge(&reg, "spool_up", "1 when serving.", NULL, 0, &err);
    cr_assert_not_null(up);

    struct spool_counter *ws1 = spool_counter_of(msgs, (const char *[]){"ws", "1"});
    struct spool_counter *sse = spool_counter_of(msgs, (const char *[]){"sse", "0"});
    cr_assert(ws1 && sse);
    cr_expect_eq(spool_counter_of(msgs, (const char *[]){"ws", "1"}), ws1, "same child");
    spool_counter_inc(ws1);
    spool_counter_add(ws1, 2);
    spool_counter_add(ws1, -5); /* counters never go down */
    spool_counter_add(sse, 0.25);
    cr_expect_eq(spool_counter_value(ws1), 3.0);

    struct spool_gauge *g = spool_gauge_of(conns, (const char *[]){"ws"});
    spool_gauge_set(g, 10);
    spool_gauge_dec(g);
    spool_gauge_add(g, -0.5);
    spool_gauge_inc(spool_gauge_of(conns, (const char *[]){"http"}));
    cr_expect_null(spool_counter_of(conns, (const char *[]){"ws"}), "wrong type");
    cr_expect_null(spool_counter_of(msgs, NULL), "missing label values");

    expect_render("# HELP spool_messages_total Messages published.\n"
                  "# TYPE spool_messages_total counter\n"
                  "spool_messages_total{transport=\"ws\",shard=\"1\"} 3\n"
                  "spool_messages_total{transport=\"sse\",shard=\"0\"} 0.25\n"
                  "# HELP spool_connections Open client connections.\n"
                  "# TYPE spool_connections gauge\n"
                  "spool_connections{transport=\"ws\"} 8.5\n"
                  "spool_connections{transport=\"http\"} 1\n"
                  "# HELP spool_up 1 when serving.\n"
                  "# TYPE spool_up gauge\n"
                  "spool_up 0\n");
}

Test(metrics, label_values_and_help_are_escaped)
{
    struct spool_err err;
    struct spool_metric_family *f = spool_metrics_counter(
        &reg, "x_total", "Help with \\ and\nnewline and \"quotes\".", (const char *[]){"ch"}, 1,
        &err);
    cr_assert_not_null(f);
    spool_counter_inc(spool_counter_of(f, (const char *[]){"a\"b\\c\nd"}));
    spool_counter_inc(spool_counter_of(f, (const char *[]){"ünïcode {}=,"}));
    expect_render("# HELP x_total Help with \\\\ and\\nnewline and \"quotes\".\n"
                  "# TYPE x_total counter\n"
                  "x_total{ch=\"a\\\"b\\\\c\\nd\"} 1\n"
                  "x_total{ch=\"ünïcode {}=,\"} 1\n");
}

Test(metrics, histogram_buckets_are_cumulative_with_inclusive_bounds)
{
    struct spool_err err;
    const double bounds[] = {0.005, 0.1, 1};
    struct spool_metric_family *f =
        spool_metrics_histogram(&reg, "spool_publish_seconds", "Publish latency.",
                                (const char *[]){"op"}, 1, bounds, 3, &err);
    cr_assert_not_null(f, "%s", err.msg);
    struct spool_histogram *h = spool_histogram_of(f, (const char *[]){"append"});
    cr_assert_not_null(h);
    spool_histogram_observe(h, 0.005); /* on the bound: counts in le="0.005" */
    spool_histogram_observe(h, 0);
    spool_histogram_observe(h, 0.0625);
    spool_histogram_observe(h, 1);
    spool_histogram_observe(h, 7.5);  /* only +Inf */
    spool_histogram_observe(h, 0.0 / 0.0); /* NaN is ignored */
    cr_expect_eq(spool_histogram_count(h), 5);
    expect_render("# HELP spool_publish_seconds Publish latency.\n"
                  "# TYPE spool_publish_seconds histogram\n"
                  "spool_publish_seconds_bucket{op=\"append\",le=\"0.005\"} 2\n"
                  "spool_publish_seconds_bucket{op=\"append\",le=\"0.1\"} 3\n"
                  "spool_publish_seconds_bucket{op=\"append\",le=\"1\"} 4\n"
                  "spool_publish_seconds_bucket{op=\"append\",le=\"+Inf\"} 5\n"
                  /* the float sum, shortest round-trip form (as Python's repr) */
                  "spool_publish_seconds_sum{op=\"append\"} 8.567499999999999\n"
                  "spool_publish_seconds_count{op=\"append\"} 5\n");
}

Test(metrics, histogram_without_labels_and_bad_bounds)
{
    struct spool_err err;
    const double inf_last[] = {1, 2, 1.0 / 0.0};
    struct spool_metric_family *f =
        spool_metrics_histogram(&reg, "h", "", NULL, 0, inf_last, 3, &err);
    cr_assert_not_null(f, "%s", err.msg);
    spool_histogram_observe(spool_histogram_of(f, NULL), 2);
    expect_render("# HELP h \n# TYPE h histogram\n"
                  "h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                  "h_sum 2\nh_count 1\n");
    const double unsorted[] = {1, 1};
    cr_expect_null(spool_metrics_histogram(&reg, "h2", "", NULL, 0, unsorted, 2, &err));
    cr_expect_eq(err.code, SPOOL_EINVAL);
    const double nan[] = {0.0 / 0.0};
    cr_expect_null(spool_metrics_histogram(&reg, "h3", "", NULL, 0, nan, 1, &err));
    cr_expect_null(spool_metrics_histogram(&reg, "h4", "", NULL, 0, unsorted, 0, &err));
    cr_expect_null(spool_metrics_histogram(&reg, "h5", "", (const char *[]){"le"}, 1, inf_last, 2,
                                           &err),
                   "le is reserved in histograms");
}

Test(metrics, invalid_and_duplicate_names_are_refused)
{
    struct spool_err err;
    cr_expect_not_null(spool_metrics_counter(&reg, "ok:name_1", "", NULL, 0, &err));
    cr_expect_null(spool_metrics_counter(&reg, "ok:name_1", "", NULL, 0, &err));
    cr_expect(strstr(err.msg, "twice") != NULL, "%s", err.msg);
    cr_expect_null(spool_metrics_counter(&reg, "1abc", "", NULL, 0, &err));
    cr_expect_null(spool_metrics_counter(&reg, "a-b", "", NULL, 0, &err));
    cr_expect_null(spool_metrics_counter(&reg, "", "", NULL, 0, &err));
    cr_expect_null(spool_metrics_gauge(&reg, "g", "", (const char *[]){"a:b"}, 1, &err));
    cr_expect_null(spool_metrics_gauge(&reg, "g", "", (const char *[]){"__x"}, 1, &err));
    cr_expect_null(spool_metrics_gauge(&reg, "g", "", (const char *[]){"a", "a"}, 2, &err));
    const char *names[4];
    cr_expect_eq(spool_metrics_names(&reg, names, 4), 1, "failed registrations leave nothing");
}

struct shard_stats {
    int calls;
    struct spool_metric_family *other;
};

static void collect_shards(struct spool_metric_writer *w, void *arg)
{
    struct shard_stats *s = arg;
    s->calls++;
    /* Would deadlock if callbacks ran under the registry lock. */
    spool_counter_inc(spool_counter_of(s->other, (const char *[]){"from-callback"}));
    spool_metric_write(w, (const char *[]){"0"}, 7);
    spool_metric_write(w, (const char *[]){"1"}, 12);
    spool_metric_write(w, NULL, 99); /* wrong label count: dropped, not a crash */
}

Test(metrics, collector_fills_values_at_scrape_time)
{
    struct spool_err err;
    struct shard_stats stats = {0, NULL};
    cr_assert_not_null(spool_metrics_collector(&reg, "spool_raft_term", "Current raft term.",
                                               SPOOL_METRIC_GAUGE, (const char *[]){"shard"}, 1,
                                               collect_shards, &stats, &err),
                       "%s", err.msg);
    cr_expect_null(spool_metrics_collector(&reg, "c2", "", SPOOL_METRIC_HISTOGRAM, NULL, 0,
                                           collect_shards, &stats, &err));
    stats.other = spool_metrics_counter(&reg, "scrapes_total", "", (const char *[]){"by"}, 1, &err);
    cr_assert_not_null(stats.other);
    cr_expect_eq(stats.calls, 0, "nothing is collected before a scrape");
    expect_render("# HELP spool_raft_term Current raft term.\n"
                  "# TYPE spool_raft_term gauge\n"
                  "spool_raft_term{shard=\"0\"} 7\n"
                  "spool_raft_term{shard=\"1\"} 12\n"
                  "# HELP scrapes_total \n"
                  "# TYPE scrapes_total counter\n"
                  "scrapes_total{by=\"from-callback\"} 1\n");
    cr_expect_eq(stats.calls, 1);
}

Test(metrics, names_and_exports)
{
    struct spool_err err;
    const double b[] = {1};
    spool_metrics_counter(&reg, "a_total", "", NULL, 0, &err);
    spool_metrics_histogram(&reg, "lat_seconds", "", NULL, 0, b, 1, &err);
    spool_metrics_gauge(&reg, "g", "", NULL, 0, &err);
    const char *names[2];
    cr_assert_eq(spool_metrics_names(&reg, names, 2), 3, "total even when max is smaller");
    cr_expect_str_eq(names[0], "a_total");
    cr_expect_str_eq(names[1], "lat_seconds");
    cr_expect(spool_metrics_exports(&reg, "a_total"));
    cr_expect(spool_metrics_exports(&reg, "lat_seconds_bucket"));
    cr_expect(spool_metrics_exports(&reg, "lat_seconds_count"));
    cr_expect(spool_metrics_exports(&reg, "g"));
    cr_expect_not(spool_metrics_exports(&reg, "g_count"), "only histograms have suffixes");
    cr_expect_not(spool_metrics_exports(&reg, "a_tota"));
    cr_expect_not(spool_metrics_exports(&reg, "lat_seconds_max"));
}

Test(metrics, numbers_use_the_shortest_exact_form)
{
    struct spool_err err;
    struct spool_metric_family *f =
        spool_metrics_gauge(&reg, "v", "", (const char *[]){"k"}, 1, &err);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"a"}), 0.1);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"b"}), -3);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"c"}), 1e20);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"d"}), 1.0 / 0.0);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"e"}), 0.0 / 0.0);
    spool_gauge_set(spool_gauge_of(f, (const char *[]){"f"}), 1.0 / 3.0);
    expect_render("# HELP v \n# TYPE v gauge\n"
                  "v{k=\"a\"} 0.1\nv{k=\"b\"} -3\nv{k=\"c\"} 1e+20\nv{k=\"d\"} +Inf\n"
                  "v{k=\"e\"} NaN\nv{k=\"f\"} 0.3333333333333333\n");
}

#define THREADS 4
#define BUMPS 20000

struct bump_arg {
    struct spool_counter *c;
    struct spool_gauge *g;
    struct spool_histogram *h;
};

static void *bump(void *p)
{
    struct bump_arg *a = p;
    for (int i = 0; i < BUMPS; i++) {
        spool_counter_inc(a->c);
        spool_gauge_add(a->g, 0.5);
        spool_histogram_observe(a->h, 1);
    }
    return NULL;
}

Test(metrics, concurrent_updates_are_not_lost)
{
    struct spool_err err;
    const double b[] = {1};
    struct bump_arg a = {
        spool_counter_of(spool_metrics_counter(&reg, "c_total", "", NULL, 0, &err), NULL),
        spool_gauge_of(spool_metrics_gauge(&reg, "g", "", NULL, 0, &err), NULL),
        spool_histogram_of(spool_metrics_histogram(&reg, "h", "", NULL, 0, b, 1, &err), NULL),
    };
    cr_assert(a.c && a.g && a.h);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) cr_assert_eq(pthread_create(&t[i], NULL, bump, &a), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    cr_expect_eq(spool_counter_value(a.c), THREADS * BUMPS);
    cr_expect_eq(spool_gauge_value(a.g), THREADS * BUMPS * 0.5);
    cr_expect_eq(spool_histogram_count(a.h), THREADS * BUMPS);
    cr_expect_eq(spool_histogram_sum(a.h), THREADS * BUMPS);
}
