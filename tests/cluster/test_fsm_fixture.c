/*
 * The shard state machine under Raft, deterministically: libraft's raft_fixture (an in-memory,
 * simulated-time cluster with a network and disks the test controls) runs three servers whose
 * FSM is Spool's real one (cluster/fsm.h), each over its own real store in a temporary directory.
 *
 * Entries are framed exactly like the shard's (spool_fsm_encode_entry: one Entry with its
 * publish requests, cluster/entry_frame.h) and go through raft_apply on the fixture's leader.
 * What is checked, after every scenario, once the servers have converged:
 *   - every server's store holds the same records (channel, seq, id, data) in the same order,
 *     with dense seqs per channel starting at 1;
 *   - every message of an entry the fixture acknowledged (apply callback status 0) is stored
 *     exactly once, and no message id is stored twice, even when a "client" retried it on
 *     another leader after a failure (the FSM's dedup window does that);
 *   - messages of entries that provably never reached a majority (proposed to a leader cut off
 *     from both others, never retried) are not stored at all.
 *
 * Scenarios: plain replication; the leader killed with entries in flight and revived later; the
 * leader deposed with entries in flight, then a partition that isolates the next leader; a
 * server that falls behind while the leader snapshots (low threshold) and catches up through
 * InstallSnapshot, whose restored store must equal the others' and whose dedup table, rebuilt
 * from the snapshot, must still recognise earlier ids once it leads.
 *
 * Everything is driven by raft_fixture_step*: no threads, no wall-clock waits, the same
 * sequence of events on every run. Every wait is bounded in fixture (simulated) milliseconds.
 *
 * Placement (the metadata group's slot-map FSM, cluster/meta.c) is not driven here: meta.c is
 * being reworked for membership changes, so a fixture test of it would pin an API in flux.
 */
#include <criterion/criterion.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "proto/entry.pb-c.h"
#include "scratch_dir.h"

#define N 3
#define MAX_PROPS 256
#define MAX_MSGS 4
#define DUMP_MAX (64 * 1024)

struct server {
    struct spool_store *store;
    struct spool_fsm fsm;
    unsigned restored; /* on_restored calls: the store was replaced by a snapshot */
};

/* One raft_apply: the entry's channel and message ids, and what the fixture answered. */
struct prop {
    struct raft_apply req;
    unsigned server; /* proposed to */
    char channel[32];
    char ids[MAX_MSGS][32];
    size_t n;
    bool done;
    int status;
};

static char dir[64];
static struct raft_fixture fx;
static struct server srv[N];
static struct prop props[MAX_PROPS];
static size_t n_props;

/* What each server's FSM answered for each proposal (by the entry's proposal nonce = index in
 * props + 1): the seqs and duplicate flags of its one publish request. */
struct answer {
    bool set;
    uint64_t seqs[MAX_MSGS];
    bool dup[MAX_MSGS];
};
static struct answer answers[N][MAX_PROPS + 1];

/* Results never travel through libraft (see fsm.h); like the shard's batch, the test takes them
 * here, on every server (followers too), keeps a copy and lets the FSM free them. */
static bool take_result(void *arg, uint64_t index, struct spool_fsm_result *r)
{
    unsigned i = (unsigned)((struct server *)arg - srv);
    cr_assert_leq(r->proposal, MAX_PROPS);
    cr_assert_eq(r->n, 1);
    struct answer *a = &answers[i][r->proposal];
    cr_assert(!a->set, "server %u applied proposal %llu twice", i, (unsigned long long)r->proposal);
    a->set = true;
    for (size_t j = 0; j < r->publishes[0].n && j < MAX_MSGS; j++) {
        a->seqs[j] = r->publishes[0].seqs[j];
        a->dup[j] = r->publishes[0].duplicate[j];
    }
    return false;
}

/* The fixture prints every Raft diagnostic; SPOOL_FIXTURE_TRACE=1 keeps that, else it is off. */
static void quiet_emit(struct raft_tracer *t, int type, const void *info)
{
}
static struct raft_tracer quiet = {.version = 2, .emit = quiet_emit};

static void restored_cb(void *arg)
{
    ((struct server *)arg)->restored++;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/spool-fsmfx-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    n_props = 0;
    memset(answers, 0, sizeof answers);
    cr_assert_eq(raft_fixture_init(&fx), 0);
    for (unsigned i = 0; i < N; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/s%u", dir, i);
        struct spool_store_config cfg = {.dir = path};
        spool_store_config_defaults(&cfg);
        struct spool_err err;
        cr_assert_eq(spool_store_open(&srv[i].store, &cfg, &err), 0, "%s", err.msg);
        cr_assert_eq(spool_fsm_init(&srv[i].fsm, srv[i].store, 600000, &err), 0, "%s", err.msg);
        srv[i].fsm.take_result = take_result;
        srv[i].fsm.take_arg = &srv[i];
        srv[i].fsm.on_restored = restored_cb;
        srv[i].fsm.cb_arg = &srv[i];
        srv[i].restored = 0;
        cr_assert_eq(raft_fixture_grow(&fx, &srv[i].fsm.raft_fsm), 0);
        srv[i].fsm.raft = raft_fixture_get(&fx, i); /* the applied index comes from here */
        if (getenv("SPOOL_FIXTURE_TRACE") == NULL)
            raft_fixture_get(&fx, i)->tracer = &quiet;
    }
    struct raft_configuration conf;
    cr_assert_eq(raft_fixture_configuration(&fx, N, &conf), 0);
    cr_assert_eq(raft_fixture_bootstrap(&fx, &conf), 0);
    raft_configuration_close(&conf);
    cr_assert_eq(raft_fixture_start(&fx), 0);
}

static void teardown(void)
{
    raft_fixture_close(&fx);
    for (unsigned i = 0; i < N; i++) {
        spool_fsm_close(&srv[i].fsm);
        spool_store_close(srv[i].store);
    }
    scratch_dir_remove(dir);
}

TestSuite(fsm_fixture, .init = setup, .fini = teardown, .timeout = 120);

/* --- proposing ---------------------------------------------------------------------------- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct prop *p = req->data;
    p->done = true;
    p->status = status;
}

/* Proposes one entry (one publish request of n messages on `channel`) to server i, as the
 * shard's batch does. Returns the proposal (status set at once when raft_apply refuses it). */
static struct prop *propose(unsigned i, const char *channel, const char *const *ids, size_t n)
{
    cr_assert_lt(n_props, MAX_PROPS);
    cr_assert_leq(n, MAX_MSGS);
    struct prop *p = &props[n_props++];
    memset(p, 0, sizeof *p);
    p->server = i;
    snprintf(p->channel, sizeof p->channel, "%s", channel);
    p->n = n;
    Spool__Record recs[MAX_MSGS], *recp[MAX_MSGS];
    for (size_t j = 0; j < n; j++) {
        snprintf(p->ids[j], sizeof p->ids[j], "%s", ids[j]);
        spool__record__init(&recs[j]);
        recs[j].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
        recs[j].id = p->ids[j];
        recs[j].data.data = (uint8_t *)p->ids[j];
        recs[j].data.len = strlen(p->ids[j]);
        recp[j] = &recs[j];
    }
    Spool__PublishRequest req = SPOOL__PUBLISH_REQUEST__INIT, *reqp = &req;
    req.channel = p->channel;
    req.n_messages = n;
    req.messages = recp;
    Spool__Entry e = SPOOL__ENTRY__INIT;
    e.timestamp_ms = 1700000000000LL + (int64_t)raft_fixture_time(&fx);
    e.n_publishes = 1;
    e.publishes = &reqp;
    e.proposal = n_props;
    struct raft_buffer buf;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf.base, &buf.len), 0);
    p->req.data = p;
    int rv = raft_apply(raft_fixture_get(&fx, i), &p->req, &buf, 1, apply_cb);
    if (rv != 0) {
        raft_free(buf.base);
        p->done = true;
        p->status = rv;
    }
    return p;
}

/* Proposes entry k of a numbered series: channel c<k%3>, 1..3 messages "<prefix>-k-j". */
static struct prop *propose_nth(unsigned i, const char *prefix, unsigned k)
{
    char chan[16], idbuf[MAX_MSGS][32];
    const char *ids[MAX_MSGS];
    size_t n = 1 + k % 3;
    snprintf(chan, sizeof chan, "c%u", k % 3);
    for (size_t j = 0; j < n; j++) {
        snprintf(idbuf[j], sizeof idbuf[j], "%s-%u-%zu", prefix, k, j);
        ids[j] = idbuf[j];
    }
    return propose(i, chan, ids, n);
}

/* The same messages again (a client's blind retry with the same ids), to server i. */
static struct prop *repropose(unsigned i, const struct prop *p)
{
    const char *ids[MAX_MSGS];
    for (size_t j = 0; j < p->n; j++)
        ids[j] = p->ids[j];
    return propose(i, p->channel, ids, p->n);
}

/* --- stepping ----------------------------------------------------------------------------- */

static unsigned leader_index(void)
{
    return fx.leader_id == 0 ? N : (unsigned)fx.leader_id - 1;
}

/* A leader exists, has committed its whole log, and every live server connected to it has
 * applied all of it (and so has every proposal made to it completed). */
static bool converged(struct raft_fixture *f, void *arg)
{
    unsigned l = leader_index();
    if (l == N)
        return false;
    struct raft *lr = raft_fixture_get(f, l);
    raft_index last = raft_last_index(lr);
    if (raft_commit_index(lr) < last)
        return false;
    for (unsigned i = 0; i < N; i++)
        if (raft_fixture_alive(f, i) && raft_last_applied(raft_fixture_get(f, i)) < last)
            return false;
    return true;
}

static void step_until_converged(void)
{
    cr_assert(raft_fixture_step_until(&fx, converged, NULL, 20000),
              "servers did not converge within 20 s of fixture time");
}

static bool has_leader_in(struct raft_fixture *f, void *arg)
{
    const bool *allowed = arg;
    unsigned l = leader_index();
    return l < N && allowed[l];
}

/* Steps until one of the allowed servers leads (as the fixture sees it: live, highest term). */
static unsigned step_until_leader_in(bool a0, bool a1, bool a2)
{
    bool allowed[N] = {a0, a1, a2};
    cr_assert(raft_fixture_step_until(&fx, has_leader_in, allowed, 20000),
              "no new leader within 20 s of fixture time");
    return leader_index();
}

/* A network partition: every message between server i and the others is dropped, both ways
 * (the fixture's "saturated" links, which its leader-stability check knows to ignore). */
static void cut(unsigned i)
{
    for (unsigned j = 0; j < N; j++)
        if (j != i) {
            raft_fixture_saturate(&fx, i, j);
            raft_fixture_saturate(&fx, j, i);
        }
}

static void heal(unsigned i)
{
    for (unsigned j = 0; j < N; j++)
        if (j != i) {
            raft_fixture_desaturate(&fx, i, j);
            raft_fixture_desaturate(&fx, j, i);
        }
}

/* --- checking ----------------------------------------------------------------------------- */

struct dump {
    char *text;
    size_t len;
    const char *channel;
    uint64_t expect_seq; /* the next seq the channel must have */
    bool dense;
};

static void dump_put(struct dump *d, const char *s)
{
    size_t n = strlen(s);
    cr_assert_lt(d->len + n, DUMP_MAX, "store dump too large");
    memcpy(d->text + d->len, s, n + 1);
    d->len += n;
}

static int dump_record_cb(void *arg, const Spool__Record *rec)
{
    struct dump *d = arg;
    char line[160];
    if (rec->seq != d->expect_seq)
        d->dense = false;
    d->expect_seq = rec->seq + 1;
    snprintf(line, sizeof line, "%s %llu %s %.*s\n", d->channel, (unsigned long long)rec->seq,
             rec->id, (int)rec->data.len, (const char *)rec->data.data);
    dump_put(d, line);
    return 0;
}

/* Channels are listed in sorted order below, so dumps of equal stores are equal strings. */
static int collect_channel_cb(void *arg, const char *channel)
{
    char ***names = arg;
    size_t n = 0;
    while ((*names)[n] != NULL)
        n++;
    cr_assert_lt(n, 63);
    (*names)[n] = strdup(channel);
    (*names)[n + 1] = NULL;
    return 0;
}

static int strcmp_cb(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every record of server i's store as text; asserts seqs are dense from 1 per channel. */
static char *dump_store(unsigned i)
{
    struct dump d = {.text = calloc(1, DUMP_MAX)};
    cr_assert_not_null(d.text);
    char *names_buf[64] = {NULL}, **names = names_buf;
    spool_store_channels(srv[i].store, collect_channel_cb, &names);
    size_t n = 0;
    while (names[n] != NULL)
        n++;
    qsort(names, n, sizeof *names, strcmp_cb);
    for (size_t c = 0; c < n; c++) {
        struct spool_err err;
        d.channel = names[c];
        d.expect_seq = 1;
        d.dense = true;
        cr_assert_eq(spool_store_read(srv[i].store, names[c], 0, 0, dump_record_cb, &d, &err), 0,
                     "%s", err.msg);
        cr_assert(d.dense, "server %u: seqs of %s are not dense from 1", i, names[c]);
        cr_assert_eq(d.expect_seq - 1, spool_store_last_seq(srv[i].store, names[c]));
        free(names[c]);
    }
    return d.text;
}

/* How many times message `id` is stored in server i's dump (as " <id> <id>\n"). */
static unsigned count_id(const char *text, const char *id)
{
    char needle[80];
    snprintf(needle, sizeof needle, " %s %s\n", id, id);
    unsigned n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* All live servers hold identical stores; returns server 0's... the first live one's dump. */
static char *check_identical(void)
{
    char *ref = NULL;
    unsigned ref_i = 0;
    for (unsigned i = 0; i < N; i++) {
        if (!raft_fixture_alive(&fx, i))
            continue;
        char *d = dump_store(i);
        if (ref == NULL) {
            ref = d;
            ref_i = i;
            continue;
        }
        cr_assert_str_eq(d, ref, "server %u's store differs from server %u's", i, ref_i);
        free(d);
    }
    cr_assert_not_null(ref);
    return ref;
}

/* The seq message `id` is stored with (0 = not stored). */
static uint64_t stored_seq(const char *text, const char *id)
{
    char needle[80];
    snprintf(needle, sizeof needle, " %s %s\n", id, id);
    const char *p = strstr(text, needle);
    if (p == NULL)
        return 0;
    const char *line = p;
    while (line > text && line[-1] != '\n')
        line--;
    unsigned long long seq = 0;
    cr_assert_eq(sscanf(line, "%*s %llu", &seq), 1);
    return seq;
}

/* Every message of every acknowledged proposal is stored exactly once, with the seq its
 * leader's FSM answered; every id is stored at most once; every server that applied a
 * proposal answered the same seqs and duplicate flags (the FSM is deterministic). */
static size_t check_acked_once(const char *text)
{
    size_t acked = 0;
    for (size_t k = 0; k < n_props; k++) {
        const struct prop *p = &props[k];
        const struct answer *ref = NULL;
        for (unsigned i = 0; i < N; i++) {
            const struct answer *a = &answers[i][k + 1];
            if (!a->set)
                continue;
            if (ref == NULL)
                ref = a;
            for (size_t j = 0; j < p->n; j++)
                cr_assert(a->seqs[j] == ref->seqs[j] && a->dup[j] == ref->dup[j],
                          "proposal %zu message %zu: servers answered different seqs", k, j);
        }
        for (size_t j = 0; j < p->n; j++) {
            unsigned c = count_id(text, p->ids[j]);
            cr_assert_leq(c, 1, "%s stored %u times", p->ids[j], c);
            if (p->done && p->status == 0) {
                cr_assert_eq(c, 1, "acknowledged %s stored %u times", p->ids[j], c);
                const struct answer *a = &answers[p->server][k + 1];
                cr_assert(a->set, "acknowledged proposal %zu has no answer from its leader", k);
                cr_assert_eq(a->seqs[j], stored_seq(text, p->ids[j]),
                             "%s: acknowledged as seq %llu, stored as %llu", p->ids[j],
                             (unsigned long long)a->seqs[j],
                             (unsigned long long)stored_seq(text, p->ids[j]));
                acked++;
            }
        }
    }
    return acked;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* --- scenarios ---------------------------------------------------------------------------- */

Test(fsm_fixture, replicas_store_the_same_records)
{
    raft_fixture_elect(&fx, 0);
    size_t msgs = 0;
    for (unsigned k = 0; k < 30; k++) {
        propose_nth(0, "a", k);
        msgs += 1 + k % 3;
        if (k % 7 == 0)
            raft_fixture_step_n(&fx, 3); /* some entries go out alone, some in batches */
    }
    step_until_converged();
    for (size_t k = 0; k < n_props; k++)
        cr_assert(props[k].done && props[k].status == 0, "proposal %zu: done %d status %d", k,
                  props[k].done, props[k].status);
    char *text = check_identical();
    cr_assert_eq(count_lines(text), msgs);
    cr_assert_eq(check_acked_once(text), msgs);
    /* Retrying acknowledged messages stores nothing new on any replica. */
    for (unsigned k = 0; k < 5; k++)
        repropose(0, &props[k]);
    step_until_converged();
    char *again = check_identical();
    cr_assert_str_eq(again, text);
    check_acked_once(again);
    for (unsigned k = 0; k < 5; k++)
        for (size_t j = 0; j < props[30 + k].n; j++)
            cr_assert(answers[0][30 + k + 1].dup[j], "retry %u/%zu not reported as duplicate", k, j);
    free(again);
    free(text);
}

Test(fsm_fixture, leader_killed_with_entries_in_flight)
{
    raft_fixture_elect(&fx, 0);
    for (unsigned k = 0; k < 10; k++)
        propose_nth(0, "b", k);
    step_until_converged();
    /* Five more reach the leader, which dies before they are acknowledged. */
    size_t first_lost = n_props;
    for (unsigned k = 10; k < 15; k++)
        propose_nth(0, "b", k);
    raft_fixture_step_n(&fx, 2);
    raft_fixture_kill(&fx, 0);
    unsigned l = step_until_leader_in(false, true, true);
    /* The client retries whatever was not acknowledged, then goes on. */
    size_t last_lost = n_props;
    for (size_t k = first_lost; k < last_lost; k++)
        if (!props[k].done || props[k].status != 0)
            repropose(l, &props[k]);
    for (unsigned k = 15; k < 25; k++)
        propose_nth(l, "b", k);
    step_until_converged();
    raft_fixture_revive(&fx, 0);
    step_until_converged();
    propose_nth(leader_index(), "b", 25); /* one more with all three back */
    step_until_converged();
    char *text = check_identical();
    size_t acked = check_acked_once(text);
    /* Every message, retried or not, is there exactly once: 26 entries of 1..3 messages. */
    size_t want = 0;
    for (unsigned k = 0; k < 26; k++)
        want += 1 + k % 3;
    cr_assert_eq(count_lines(text), want);
    cr_assert_geq(acked, want);
    free(text);
}

Test(fsm_fixture, deposed_leader_then_isolated_leader)
{
    raft_fixture_elect(&fx, 1);
    for (unsigned k = 0; k < 10; k++)
        propose_nth(1, "c", k);
    step_until_converged();
    /* Three entries in flight while the leader is deposed (it stops hearing acknowledgements). */
    size_t first = n_props;
    for (unsigned k = 10; k < 13; k++)
        propose_nth(1, "c", k);
    raft_fixture_depose(&fx);
    raft_fixture_elect(&fx, 2);
    for (size_t k = first; k < first + 3; k++)
        if (!props[k].done || props[k].status != 0)
            repropose(2, &props[k]);
    for (unsigned k = 13; k < 18; k++)
        propose_nth(2, "c", k);
    step_until_converged();

    /* Partition: the leader (2) alone on one side. What it takes now never reaches a majority. */
    cut(2);
    size_t lost = n_props;
    for (unsigned k = 0; k < 4; k++)
        propose_nth(2, "lost", k);
    unsigned l = step_until_leader_in(true, true, false);
    repropose(l, &props[lost]); /* a client retries two of them on the majority's side */
    repropose(l, &props[lost + 1]);
    for (unsigned k = 18; k < 24; k++)
        propose_nth(l, "c", k);
    heal(2);
    step_until_converged();
    char *text = check_identical();
    check_acked_once(text);
    for (size_t k = lost; k < lost + 4; k++) {
        cr_assert(props[k].done && props[k].status != 0,
                  "the isolated leader's proposal %zu was acknowledged", k);
        unsigned want = k < lost + 2 ? 1 : 0; /* retried elsewhere: once; else never stored */
        for (size_t j = 0; j < props[k].n; j++)
            cr_assert_eq(count_id(text, props[k].ids[j]), want, "%s stored %u times, want %u",
                         props[k].ids[j], count_id(text, props[k].ids[j]), want);
    }
    size_t want = 0;
    for (unsigned k = 0; k < 24; k++)
        want += 1 + k % 3;
    want += 1 + 2; /* lost-0 (1 message) and lost-1 (2 messages), retried */
    cr_assert_eq(count_lines(text), want);
    free(text);
}

Test(fsm_fixture, lagging_server_catches_up_by_snapshot)
{
    for (unsigned i = 0; i < N; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&fx, i), 8);
        raft_set_snapshot_trailing(raft_fixture_get(&fx, i), 2);
    }
    raft_fixture_elect(&fx, 0);
    for (unsigned k = 0; k < 5; k++)
        propose_nth(0, "d", k);
    step_until_converged();
    raft_fixture_kill(&fx, 2);
    for (unsigned k = 5; k < 45; k++) {
        propose_nth(0, "d", k);
        raft_fixture_step_n(&fx, 4);
    }
    step_until_converged();
    cr_assert_eq(srv[2].restored, 0);
    uint64_t behind = spool_store_applied_index(srv[2].store);
    raft_fixture_revive(&fx, 2);
    step_until_converged();
    cr_assert_geq(srv[2].restored, 1, "server 2 caught up without a snapshot (applied %llu)",
                  (unsigned long long)behind);
    cr_assert_eq(spool_store_applied_index(srv[2].store), spool_store_applied_index(srv[0].store));
    char *text = check_identical();
    size_t want = 0;
    for (unsigned k = 0; k < 45; k++)
        want += 1 + k % 3;
    cr_assert_eq(count_lines(text), want);
    cr_assert_eq(check_acked_once(text), want);

    /* The restored server leads: its dedup table, rebuilt from the snapshot, still knows the
     * ids stored before it fell behind, and it keeps assigning the next seqs. */
    raft_fixture_depose(&fx);
    raft_fixture_elect(&fx, 2);
    repropose(2, &props[3]);
    repropose(2, &props[30]);
    propose_nth(2, "d", 45);
    step_until_converged();
    char *after = check_identical();
    cr_assert_eq(count_lines(after), want + 1);
    check_acked_once(after);
    free(after);
    free(text);
}
