/* The token-stream rollup filter (gateway/ai_rollup.h): runs fold into one record carrying the
 * last serial, interleaving splits runs exactly, updates/deletes end as the latest state, the
 * size bound splits a run, pending_from, history pages both ways, and where a live reader starts. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "gateway/ai_rollup.h"

#define CREATE SPOOL__ACTION__ACTION_MESSAGE_CREATE
#define APPEND SPOOL__ACTION__ACTION_MESSAGE_APPEND
#define UPDATE SPOOL__ACTION__ACTION_MESSAGE_UPDATE
#define DELETE SPOOL__ACTION__ACTION_MESSAGE_DELETE
#define PRESENCE SPOOL__ACTION__ACTION_PRESENCE

struct out {
    uint64_t seq[32], ref[32];
    int action[32];
    bool rolled[32];
    char data[32][256], extras[32][256];
    size_t n;
};

static void emit(void *arg, const Spool__Record *r)
{
    struct out *o = arg;
    cr_assert_lt(o->n, 32);
    o->seq[o->n] = r->seq;
    o->ref[o->n] = r->ref_seq;
    o->action[o->n] = r->action;
    o->rolled[o->n] = spool_ai_rollup_is_rolled(r);
    snprintf(o->data[o->n], 256, "%.*s", (int)r->data.len, (const char *)r->data.data);
    snprintf(o->extras[o->n], 256, "%.*s", (int)r->extras.len, (const char *)r->extras.data);
    o->n++;
}

static Spool__Record rec(uint64_t seq, int action, uint64_t ref, const char *data, const char *extras)
{
    Spool__Record r = SPOOL__RECORD__INIT;
    r.channel = "c";
    r.seq = seq;
    r.action = (Spool__Action)action;
    r.ref_seq = ref;
    r.version = 1;
    r.data.data = (uint8_t *)data;
    r.data.len = strlen(data);
    r.content_type = "text/plain";
    if (extras != NULL) {
        r.extras.data = (uint8_t *)extras;
        r.extras.len = strlen(extras);
    }
    return r;
}

static void feed(struct spool_ai_rollup *r, struct out *o, Spool__Record *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(spool_ai_rollup_push(r, &v[i], emit, o), 0);
}

Test(rollup, create_and_appends_become_one_record_at_the_last_serial)
{
    struct spool_ai_rollup *r = spool_ai_rollup_new(0);
    struct out o = {0};
    Spool__Record v[] = {rec(5, CREATE, 0, "He", "{\"model\":\"x\"}"), rec(6, APPEND, 5, "llo", NULL),
                         rec(7, APPEND, 5, "!", "{\"final\":true}")};
    feed(r, &o, v, 3);
    cr_assert_eq(o.n, 0, "held until the run ends");
    cr_assert_eq(spool_ai_rollup_pending_from(r), 5);
    spool_ai_rollup_flush(r, emit, &o);
    cr_assert_eq(o.n, 1);
    cr_assert_eq(o.seq[0], 7);
    cr_assert_eq(o.ref[0], 5);
    cr_assert_eq(o.action[0], CREATE);
    cr_assert(o.rolled[0]);
    cr_assert_str_eq(o.data[0], "Hello!");
    cr_assert(strstr(o.extras[0], "\"model\"") && strstr(o.extras[0], "\"final\""), "%s", o.extras[0]);
    cr_assert_eq(spool_ai_rollup_pending_from(r), 0);
    spool_ai_rollup_free(r);
}

Test(rollup, other_records_split_runs_exactly)
{
    struct spool_ai_rollup *r = spool_ai_rollup_new(0);
    struct out o = {0};
    Spool__Record v[] = {rec(1, CREATE, 0, "a", NULL), rec(2, APPEND, 1, "b", NULL), rec(3, PRESENCE, 0, "{}", NULL),
                         rec(4, APPEND, 1, "c", NULL), rec(5, APPEND, 1, "d", NULL), rec(6, CREATE, 0, "x", NULL),
                         rec(7, APPEND, 1, "e", NULL)};
    feed(r, &o, v, 7);
    spool_ai_rollup_flush(r, emit, &o);
    cr_assert_eq(o.n, 5);
    uint64_t seqs[] = {2, 3, 5, 6, 7};
    const char *data[] = {"ab", "{}", "cd", "x", "e"};
    for (size_t i = 0; i < o.n; i++) {
        cr_assert_eq(o.seq[i], seqs[i], "event %zu", i);
        cr_assert_str_eq(o.data[i], data[i]);
    }
    cr_assert_eq(o.action[2], APPEND);
    cr_assert(o.rolled[2]);
    cr_assert_not(o.rolled[3], "a run of one record is the record itself");
    cr_assert_not(o.rolled[4]);
    spool_ai_rollup_free(r);
}

Test(rollup, updates_and_deletes_end_as_the_latest_state)
{
    struct spool_ai_rollup *r = spool_ai_rollup_new(0);
    struct out o = {0};
    Spool__Record v[] = {rec(1, CREATE, 0, "draft", NULL), rec(2, UPDATE, 1, "final text", NULL),
                         rec(3, APPEND, 1, "!", NULL), rec(4, PRESENCE, 0, "{}", NULL),
                         rec(5, APPEND, 1, "?", NULL), rec(6, UPDATE, 1, "v3", NULL), rec(7, PRESENCE, 0, "{}", NULL),
                         rec(8, APPEND, 1, "z", NULL), rec(9, DELETE, 1, "", NULL), rec(10, APPEND, 1, "late", NULL)};
    v[1].version = 2;
    v[5].version = 3;
    feed(r, &o, v, 10);
    spool_ai_rollup_flush(r, emit, &o);
    cr_assert_eq(o.n, 6);
    cr_assert_eq(o.action[0], CREATE);
    cr_assert_str_eq(o.data[0], "final text!");
    cr_assert_eq(o.action[2], UPDATE, "appends then an update: the full latest data");
    cr_assert_str_eq(o.data[2], "v3");
    cr_assert_eq(o.seq[2], 6);
    cr_assert_eq(o.action[4], DELETE);
    cr_assert_eq(o.seq[4], 9);
    cr_assert_eq(o.seq[5], 10, "nothing joins a tombstone");
    spool_ai_rollup_free(r);
}

Test(rollup, size_bound_splits_a_run)
{
    struct spool_ai_rollup *r = spool_ai_rollup_new(4);
    struct out o = {0};
    Spool__Record v[] = {rec(1, CREATE, 0, "ab", NULL), rec(2, APPEND, 1, "cd", NULL), rec(3, APPEND, 1, "ef", NULL)};
    feed(r, &o, v, 3);
    spool_ai_rollup_flush(r, emit, &o);
    cr_assert_eq(o.n, 2);
    cr_assert_str_eq(o.data[0], "abcd");
    cr_assert_eq(o.seq[0], 2);
    cr_assert_str_eq(o.data[1], "ef");
    cr_assert_eq(o.seq[1], 3);
    spool_ai_rollup_free(r);
}

Test(rollup, pages_both_directions)
{
    Spool__Record v[] = {rec(1, CREATE, 0, "a", NULL), rec(2, APPEND, 1, "b", NULL), rec(3, CREATE, 0, "q", NULL)};
    const Spool__Record *asc[] = {&v[0], &v[1], &v[2]}, *desc[] = {&v[2], &v[1], &v[0]};
    struct out o = {0}, d = {0};
    cr_assert_eq(spool_ai_rollup_page(asc, 3, false, 0, emit, &o), 0);
    cr_assert_eq(spool_ai_rollup_page(desc, 3, true, 0, emit, &d), 0);
    cr_assert_eq(o.n, 2);
    cr_assert_eq(d.n, 2);
    cr_assert_str_eq(o.data[0], "ab");
    cr_assert_str_eq(d.data[0], "ab", "a descending page is rolled oldest first");
}

Test(rollup, live_reader_starts_at_a_streaming_create)
{
    Spool__Record t = rec(40, APPEND, 17, "tok", NULL);
    cr_assert_eq(spool_ai_attach_start(&t, 40), 16);
    cr_assert_eq(spool_ai_attach_start(&t, 30), 16);
    cr_assert_eq(spool_ai_attach_start(&t, 10), 10, "the create is after the starting point");
    Spool__Record f = rec(40, APPEND, 17, "tok", "{\"final\": true}");
    cr_assert_eq(spool_ai_attach_start(&f, 40), 40, "a finished response is not re-sent");
    Spool__Record c = rec(40, CREATE, 0, "x", NULL);
    cr_assert_eq(spool_ai_attach_start(&c, 40), 40);
}

Test(rollup, a_history_page_shows_each_message_once_in_its_latest_state)
{
    Spool__Record v[] = {rec(1, CREATE, 0, "a", NULL), rec(2, PRESENCE, 0, "{}", NULL), rec(3, APPEND, 1, "b", NULL),
                         rec(4, CREATE, 0, "q", NULL), rec(5, UPDATE, 1, "edited", NULL), rec(6, DELETE, 4, "", NULL)};
    v[4].version = 2;
    v[5].version = 2;
    const Spool__Record *p[] = {&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]};
    struct out o = {0};
    cr_assert_eq(spool_ai_rollup_page(p, 6, false, 0, emit, &o), 0);
    cr_assert_eq(o.n, 3);
    cr_assert_eq(o.action[0], CREATE);
    cr_assert_str_eq(o.data[0], "edited");
    cr_assert_eq(o.seq[0], 5, "the item covers up to its last record");
    cr_assert_eq(o.ref[0], 1);
    cr_assert_eq(o.action[1], PRESENCE);
    cr_assert_eq(o.action[2], DELETE, "a deleted message is its tombstone");
    cr_assert_eq(o.seq[2], 6);
}
