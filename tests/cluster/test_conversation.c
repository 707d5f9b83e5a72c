/* AI conversation rules in the shard state machine (cluster/conversation.h), driven directly
 * with encoded entries over a real store: appends, finals, edits, deletes, authorship, atomic
 * refusal, state rebuilt from the store, and turn fencing by epoch. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "proto/entry.pb-c.h"
#include "scratch_dir.h"

static char dir[64];
static struct spool_store *store;
static struct spool_fsm fsm;
static uint64_t next_index = 1;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/spool-conv-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct spool_store_config cfg = {.dir = dir};
    spool_store_config_defaults(&cfg);
    struct spool_err err;
    cr_assert_eq(spool_store_open(&store, &cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_fsm_init(&fsm, store, 60000, &err), 0, "%s", err.msg);
    next_index = 1;
}

static void teardown(void)
{
    spool_fsm_close(&fsm);
    spool_store_close(store);
    scratch_dir_remove(dir);
}

TestSuite(conversation, .init = setup, .fini = teardown);

static Spool__Record msg(int action, uint64_t ref, const char *client, const char *data,
                         const char *extras)
{
    Spool__Record r = SPOOL__RECORD__INIT;
    r.action = (Spool__Action)action;
    r.ref_seq = ref;
    r.client_id = (char *)client;
    r.data.data = (uint8_t *)data;
    r.data.len = strlen(data);
    if (extras != NULL) {
        r.extras.data = (uint8_t *)extras;
        r.extras.len = strlen(extras);
    }
    return r;
}

#define CREATE SPOOL__ACTION__ACTION_MESSAGE_CREATE
#define APPEND SPOOL__ACTION__ACTION_MESSAGE_APPEND
#define UPDATE SPOOL__ACTION__ACTION_MESSAGE_UPDATE
#define DELETE SPOOL__ACTION__ACTION_MESSAGE_DELETE

/* Applies one entry holding one publish of recs[0..n) to "chat"; returns the result. */
static struct spool_fsm_result *apply(int64_t ts, Spool__Record *recs, size_t n)
{
    Spool__Entry e = SPOOL__ENTRY__INIT;
    Spool__PublishRequest req = SPOOL__PUBLISH_REQUEST__INIT, *rp = &req;
    Spool__Record *ptrs[8];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &recs[i];
    req.channel = "chat";
    req.messages = ptrs;
    req.n_messages = n;
    e.timestamp_ms = ts;
    e.publishes = &rp;
    e.n_publishes = 1;
    void *buf;
    size_t len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf, &len), 0);
    struct spool_fsm_result *r;
    struct spool_err err;
    cr_assert_eq(spool_fsm_apply_entry(&fsm, next_index++, buf, len, &r, &err), 0, "%s", err.msg);
    raft_free(buf);
    cr_assert_not_null(r);
    return r;
}

/* Publishes one record; returns its seq (0 when refused: *status and reason filled). */
static uint64_t pub(int64_t ts, Spool__Record rec, int *status, char *reason)
{
    struct spool_fsm_result *r = apply(ts, &rec, 1);
    *status = r->publishes[0].status;
    if (reason != NULL)
        snprintf(reason, SPOOL_CONV_REASON_MAX, "%s", r->publishes[0].reason);
    uint64_t seq = *status == 0 ? r->publishes[0].seqs[0] : 0;
    spool_fsm_result_free(r);
    return seq;
}

struct seen {
    uint64_t seq;
    uint32_t version;
    uint64_t epoch;
    int64_t expires;
    char data[512];
};

static int last_cb(void *arg, const Spool__Record *rec)
{
    struct seen *s = arg;
    s->seq = rec->seq;
    s->version = rec->version;
    s->epoch = rec->turn_epoch;
    s->expires = rec->expires_ms;
    snprintf(s->data, sizeof s->data, "%.*s", (int)rec->data.len, (const char *)rec->data.data);
    return 1;
}

static struct seen last_record(void)
{
    struct seen s = {0};
    struct spool_err err;
    spool_store_read_backward(store, "chat", 0, 1, last_cb, &s, &err);
    return s;
}

Test(conversation, appends_until_final_then_refused)
{
    int st;
    char why[SPOOL_CONV_REASON_MAX];
    uint64_t m = pub(1000, msg(CREATE, 0, "agent", "Hel", NULL), &st, NULL);
    cr_assert_eq(st, 0);
    cr_assert_eq(pub(1001, msg(APPEND, 99, "agent", "x", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_ENOENT);
    cr_assert(strstr(why, "message 99 does not exist") != NULL, "%s", why);
    cr_assert_gt(pub(1002, msg(APPEND, m, "agent", "lo", NULL), &st, NULL), m);
    cr_assert_eq(pub(1003, msg(APPEND, m, "user", "!", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_EDENIED, "an append by another client: %s", why);
    cr_assert_gt(pub(1004, msg(APPEND, m, "agent", ".", "{\"final\": true}"), &st, NULL), 0);
    cr_assert_eq(pub(1005, msg(APPEND, m, "agent", "more", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert(strstr(why, "is final") != NULL, "%s", why);
    /* A non-message serial cannot be appended to either. */
    uint64_t ap = last_record().seq;
    cr_assert_eq(pub(1006, msg(APPEND, ap, "agent", "x", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_ENOENT, "%s", why);
}

Test(conversation, update_bumps_version_delete_tombstones_author_only)
{
    int st;
    char why[SPOOL_CONV_REASON_MAX];
    uint64_t m = pub(1000, msg(CREATE, 0, "alice", "v1", NULL), &st, NULL);
    cr_assert_gt(pub(1001, msg(UPDATE, m, "alice", "v2", NULL), &st, NULL), 0);
    cr_assert_eq(last_record().version, 2);
    cr_assert_eq(pub(1002, msg(UPDATE, m, "bob", "hijack", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_EDENIED);
    cr_assert(strstr(why, "edit-any") != NULL, "%s", why);
    Spool__Record op = msg(UPDATE, m, "operator", "moderated", NULL);
    op.flags = SPOOL_CONV_FLAG_EDIT_ANY;
    cr_assert_gt(pub(1003, op, &st, NULL), 0);
    cr_assert_eq(last_record().version, 3);
    cr_assert_eq(pub(1004, msg(DELETE, m, "bob", "", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_EDENIED);
    Spool__Record del = msg(DELETE, m, "operator", "", NULL);
    del.flags = SPOOL_CONV_FLAG_DELETE_ANY;
    cr_assert_gt(pub(1005, del, &st, NULL), 0);
    cr_assert_eq(last_record().version, 4);
    cr_assert_eq(pub(1006, msg(UPDATE, m, "alice", "back", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_ENOENT);
    cr_assert(strstr(why, "deleted") != NULL, "%s", why);
}

Test(conversation, refused_publish_stores_nothing)
{
    int st;
    uint64_t m = pub(1000, msg(CREATE, 0, "agent", "a", NULL), &st, NULL);
    uint64_t before = spool_store_last_seq(store, "chat");
    Spool__Record two[2] = {msg(APPEND, m, "agent", "b", NULL), msg(APPEND, 77, "agent", "c", NULL)};
    struct spool_fsm_result *r = apply(1001, two, 2);
    cr_assert_eq(r->publishes[0].status, SPOOL_ENOENT);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_store_last_seq(store, "chat"), before);
    /* Two appends in one publish, the second final: both stored, then the stream is closed. */
    Spool__Record ok[2] = {msg(APPEND, m, "agent", "b", NULL),
                           msg(APPEND, m, "agent", "c", "{\"final\":true}")};
    r = apply(1002, ok, 2);
    cr_assert_eq(r->publishes[0].status, 0);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_store_last_seq(store, "chat"), before + 2);
    cr_assert_eq(pub(1003, msg(APPEND, m, "agent", "d", NULL), &st, NULL), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
}

Test(conversation, state_rebuilt_from_the_store)
{
    int st;
    uint64_t m = pub(1000, msg(CREATE, 0, "agent", "a", NULL), &st, NULL);
    pub(1001, msg(APPEND, m, "agent", "b", "{\"final\":true}"), &st, NULL);
    cr_assert_eq(st, 0);
    /* A fresh state machine over the same store knows nothing cached. */
    spool_fsm_close(&fsm);
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&fsm, store, 60000, &err), 0, "%s", err.msg);
    cr_assert_eq(pub(1002, msg(APPEND, m, "agent", "c", NULL), &st, NULL), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT, "final survives a rebuild");
    cr_assert_gt(pub(1003, msg(UPDATE, m, "agent", "ab!", NULL), &st, NULL), 0);
    cr_assert_eq(last_record().version, 2);
}

static Spool__Record turn(const char *op, const char *client, int64_t ttl, uint32_t flags)
{
    Spool__Record r = msg(SPOOL__ACTION__ACTION_CHANNEL_META, 0, client, op, NULL);
    r.name = SPOOL_CONV_TURN;
    r.expires_ms = ttl;
    r.flags = flags;
    return r;
}

Test(conversation, turn_epochs_fence_the_responder)
{
    int st;
    char why[SPOOL_CONV_REASON_MAX];
    cr_assert_gt(pub(1000, turn("claim", "agent", 5000, 0), &st, why), 0, "%s", why);
    struct seen s = last_record();
    cr_assert_eq(s.epoch, 1);
    cr_assert_eq(s.expires, 6000);
    cr_assert(strstr(s.data, "\"op\":\"claim\"") && strstr(s.data, "\"holder\":\"agent\""), "%s",
              s.data);
    /* Someone else cannot claim a live lease; the holder renews without a new epoch. */
    cr_assert_eq(pub(1001, turn("claim", "user", 5000, 0), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert(strstr(why, "held by \"agent\"") != NULL, "%s", why);
    cr_assert_gt(pub(1002, turn("claim", "agent", 5000, 0), &st, NULL), 0);
    cr_assert_eq(last_record().epoch, 1);
    Spool__Record m = msg(CREATE, 0, "agent", "answer", NULL);
    m.turn_epoch = 1;
    uint64_t mseq = pub(1003, m, &st, why);
    cr_assert_gt(mseq, 0, "%s", why);
    /* The operator takes over: epoch 2; the agent's epoch-1 append is refused. */
    cr_assert_gt(pub(1004, turn("claim", "operator", 5000, SPOOL_CONV_FLAG_TAKEOVER), &st, NULL), 0);
    s = last_record();
    cr_assert_eq(s.epoch, 4, "the epoch is the serial of the claim that started the lease");
    cr_assert(strstr(s.data, "\"op\":\"takeover\"") && strstr(s.data, "\"previousHolder\":\"agent\""),
              "%s", s.data);
    Spool__Record a = msg(APPEND, mseq, "agent", " more", NULL);
    a.turn_epoch = 1;
    cr_assert_eq(pub(1005, a, &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert(strstr(why, "stale turn epoch 1") != NULL, "%s", why);
    /* Release by a non-holder is refused; by the holder it ends the lease. */
    cr_assert_eq(pub(1006, turn("release", "agent", 0, 0), &st, NULL), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert_gt(pub(1007, turn("release", "operator", 0, 0), &st, NULL), 0);
    cr_assert_eq(last_record().expires, 0);
    Spool__Record o = msg(CREATE, 0, "operator", "hi", NULL);
    o.turn_epoch = 4;
    cr_assert_eq(pub(1008, o, &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT, "released: %s", why);
    /* Expiry: a lease that ran out lets anyone claim, and the epoch only grows. */
    cr_assert_gt(pub(1009, turn("claim", "agent", 100, 0), &st, NULL), 0);
    cr_assert_eq(last_record().epoch, 6);
    cr_assert_gt(pub(5000, turn("claim", "user", 100, 0), &st, NULL), 0);
    s = last_record();
    cr_assert_eq(s.epoch, 7);
    cr_assert(strstr(s.data, "\"previousExpired\":true") != NULL, "%s", s.data);
    cr_assert_eq(pub(5001, turn("claim", "x", 0, 0), &st, NULL), 0);
    cr_assert_eq(st, SPOOL_EINVAL, "a claim needs a lease");
    /* The turn is rebuilt from the store after the cache is gone. */
    spool_fsm_close(&fsm);
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&fsm, store, 60000, &err), 0, "%s", err.msg);
    cr_assert_eq(pub(5002, turn("claim", "agent", 100, 0), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT, "%s", why);
}

Test(conversation, bounded_cache_evicts_and_rebuilds)
{
    struct spool_err err;
    struct spool_conv_config cfg = {.max_entries = 2};
    cr_assert_eq(spool_fsm_set_conv_limits(&fsm, &cfg, &err), 0, "%s", err.msg);
    int st;
    uint64_t m[4];
    for (int i = 0; i < 4; i++)
        m[i] = pub(1000 + i, msg(CREATE, 0, "agent", "x", NULL), &st, NULL);
    cr_assert_gt(pub(1010, msg(APPEND, m[0], "agent", "y", "{\"final\":true}"), &st, NULL), 0);
    for (int i = 1; i < 4; i++) /* three more states: m[0]'s is evicted */
        cr_assert_gt(pub(1010 + i, msg(APPEND, m[i], "agent", "z", NULL), &st, NULL), 0);
    cr_assert_eq(pub(1020, msg(APPEND, m[0], "agent", "late", NULL), &st, NULL), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT, "final is rebuilt from the store after eviction");
}

Test(conversation, states_out_of_reach_are_the_same_on_every_path)
{
    struct spool_err err;
    struct spool_conv_config cfg = {.scan_max = 5};
    cr_assert_eq(spool_fsm_set_conv_limits(&fsm, &cfg, &err), 0, "%s", err.msg);
    int st;
    char why[SPOOL_CONV_REASON_MAX];
    uint64_t m = pub(1000, msg(CREATE, 0, "agent", "x", NULL), &st, NULL);
    cr_assert_gt(pub(1001, turn("claim", "agent", 100000, 0), &st, NULL), 0);
    for (int i = 0; i < 6; i++)
        pub(1002 + i, msg(CREATE, 0, "user", "chatter", NULL), &st, NULL);
    cr_assert_eq(pub(1010, msg(APPEND, m, "agent", "y", NULL), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert(strstr(why, "too old") != NULL, "%s", why);
    /* The lease is still running by the clock, but its record is out of reach: cached or not,
     * the turn is free, and a new claim gets a higher epoch. */
    cr_assert_gt(pub(1011, turn("claim", "user", 1000, 0), &st, why), 0, "%s", why);
    struct seen s = last_record();
    cr_assert_gt(s.epoch, 2);
    /* The stored outcome is what a rebuild finds (no previous holder), cached or not. */
    cr_assert(strstr(s.data, "\"previousHolder\":\"\"") && strstr(s.data, "\"previousExpired\":false"),
              "%s", s.data);
}

struct due {
    size_t n;
    char channel[32], holder[32];
    uint64_t epoch;
};

static void due_cb(void *arg, const char *channel, uint64_t epoch, const char *holder)
{
    struct due *d = arg;
    d->n++;
    snprintf(d->channel, sizeof d->channel, "%s", channel);
    snprintf(d->holder, sizeof d->holder, "%s", holder);
    d->epoch = epoch;
}

static Spool__Record expire(uint64_t epoch)
{
    Spool__Record r = turn("expire", "", 0, 0);
    r.turn_epoch = epoch;
    return r;
}

/* Lease expiry is an event of the log: the leader sees the lease end (spool_conv_due) and
 * proposes "expire"; the state machine decides it by the entry's time, once per lease. */
Test(conversation, lease_expiry_is_written_once_by_entry_time)
{
    int st;
    char why[SPOOL_CONV_REASON_MAX];
    uint64_t e = pub(1000, turn("claim", "agent", 100, 0), &st, why);
    cr_assert_gt(e, 0, "%s", why);
    struct due d = {0};
    cr_assert_eq(spool_conv_due(fsm.conv, 1099, 1000, due_cb, &d), 0, "not ended yet");
    cr_assert_eq(spool_conv_due(fsm.conv, 1100, 1000, due_cb, &d), 1);
    cr_assert_str_eq(d.channel, "chat");
    cr_assert_str_eq(d.holder, "agent");
    cr_assert_eq(d.epoch, e);
    cr_assert_eq(spool_conv_due(fsm.conv, 1200, 1000, due_cb, &d), 0, "reported once per retry");
    /* An expire decided at an entry time before the lease end is refused (nothing stored), whatever
     * the proposer's clock said; so is one for another epoch. */
    cr_assert_eq(pub(1099, expire(e), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert(strstr(why, "nothing to expire") != NULL, "%s", why);
    cr_assert_eq(pub(1150, expire(e + 5), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    uint64_t x = pub(1150, expire(e), &st, why);
    cr_assert_gt(x, 0, "%s", why);
    struct seen s = last_record();
    cr_assert_eq(s.seq, x);
    cr_assert_eq(s.epoch, e);
    cr_assert_eq(s.expires, 0);
    cr_assert(strstr(s.data, "\"op\":\"expire\"") && strstr(s.data, "\"previousHolder\":\"agent\"") &&
              strstr(s.data, "\"expiredAt\":1100"), "%s", s.data);
    /* Exactly once: a second proposal (another leader, a retry) is refused. */
    cr_assert_eq(pub(1160, expire(e), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT);
    cr_assert_eq(spool_conv_due(fsm.conv, 5000, 0, due_cb, &d), 0, "nothing due after it");
    /* A fenced publish names the expiry; the holder cannot release it. */
    Spool__Record m = msg(CREATE, 0, "agent", "late", NULL);
    m.turn_epoch = e;
    cr_assert_eq(pub(1170, m, &st, why), 0);
    cr_assert(strstr(why, "expired") != NULL, "%s", why);
    cr_assert_eq(pub(1171, turn("release", "agent", 0, 0), &st, NULL), 0);
    /* The next claim starts a new epoch and says the previous lease expired, on the cached path
     * and after a rebuild from the store alike. */
    spool_fsm_close(&fsm);
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&fsm, store, 60000, &err), 0, "%s", err.msg);
    cr_assert_eq(pub(1180, expire(e), &st, why), 0, "still once after a rebuild");
    uint64_t c = pub(1190, turn("claim", "user", 100, 0), &st, why);
    cr_assert_gt(c, x, "%s", why);
    s = last_record();
    cr_assert(strstr(s.data, "\"previousHolder\":\"agent\"") && strstr(s.data, "\"previousExpired\":true"),
              "%s", s.data);
    /* A renewal before the end moves the end: an expire proposed for the old end is refused. */
    cr_assert_gt(pub(1250, turn("claim", "user", 100, 0), &st, NULL), 0);
    cr_assert_eq(pub(1295, expire(c), &st, why), 0);
    cr_assert_eq(st, SPOOL_ECONFLICT, "renewed: %s", why);
    cr_assert_gt(pub(1350, expire(c), &st, why), 0, "%s", why);
}
