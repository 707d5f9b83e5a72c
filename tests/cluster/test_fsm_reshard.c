/*
 * Resharding in the shard state machine (cluster/fsm.h, cluster/slot_move.h), driven directly
 * with encoded entries over real stores: fences refuse publishes of their slots only, drops
 * delete and are reported, the marks survive reopen and snapshot -> restore, an export imported
 * into another state machine gives identical channels (split parts, trimmed starts, deleted
 * channels, retention overrides), re-importing stores nothing twice, publishes and dedup
 * continue on the new shard, a slot can come back to a shard that dropped it; and
 * spool_shard_propose_control completes through the batch queue on a one-node raft_fixture.
 */
#include <criterion/criterion.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cluster/entry_pack.h"
#include "cluster/fsm.h"
#include "cluster/placement.h"
#include "cluster/shard.h"
#include "cluster/slot_move.h"
#include "proto/entry.pb-c.h"
#include "scratch_dir.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/spool-fsmrs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    scratch_dir_remove(dir);
}

TestSuite(fsm_reshard, .init = setup, .fini = teardown, .timeout = 60);

#define WINDOW_MS 600000

/* One replica: a store and its state machine; `index` is the last Raft index given to it. */
struct node {
    char name[16];
    struct spool_store *store;
    struct spool_fsm fsm;
    uint64_t index;
};

static void node_open(struct node *n, const char *name)
{
    char path[128];
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct spool_store_config cfg = {.dir = path};
    spool_store_config_defaults(&cfg);
    struct spool_err err;
    cr_assert_eq(spool_store_open(&n->store, &cfg, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_fsm_init(&n->fsm, n->store, WINDOW_MS, &err), 0, "%s", err.msg);
    n->index = spool_store_applied_index(n->store);
}

static void node_close(struct node *n)
{
    spool_fsm_close(&n->fsm);
    spool_store_close(n->store);
}

static void node_reopen(struct node *n)
{
    char name[16];
    snprintf(name, sizeof name, "%s", n->name);
    node_close(n);
    node_open(n, name);
}

static struct spool_fsm_result *apply_buf(struct node *n, void *buf, size_t len)
{
    struct spool_fsm_result *r = NULL;
    struct spool_err err;
    cr_assert_eq(spool_fsm_apply_entry(&n->fsm, ++n->index, buf, len, &r, &err), 0, "%s", err.msg);
    raft_free(buf);
    cr_assert_not_null(r);
    return r;
}

/* One entry of publishes: channels[i] gets one message with ids[i] ("" = none). */
static struct spool_fsm_result *publish_many(struct node *n, int64_t ts, size_t k,
                                             const char *const *channels, const char *const *ids)
{
    Spool__PublishRequest reqs[8], *rp[8];
    Spool__Record recs[8], *recp[8];
    cr_assert_leq(k, 8);
    for (size_t i = 0; i < k; i++) {
        spool__publish_request__init(&reqs[i]);
        spool__record__init(&recs[i]);
        recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
        recs[i].id = (char *)ids[i];
        recs[i].client_id = "client-7";
        recs[i].name = "token";
        recs[i].content_type = "text/plain";
        recs[i].extras.data = (uint8_t *)"{\"x\":1}";
        recs[i].extras.len = 7;
        recs[i].data.data = (uint8_t *)channels[i];
        recs[i].data.len = strlen(channels[i]);
        recp[i] = &recs[i];
        reqs[i].channel = (char *)channels[i];
        reqs[i].n_messages = 1;
        reqs[i].messages = &recp[i];
        rp[i] = &reqs[i];
    }
    Spool__Entry e = SPOOL__ENTRY__INIT;
    e.timestamp_ms = ts;
    e.n_publishes = k;
    e.publishes = rp;
    void *buf;
    size_t len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf, &len), 0);
    return apply_buf(n, buf, len);
}

/* Publishes one message; returns its status, *seq its seq (or original seq when *dup). */
static int publish(struct node *n, int64_t ts, const char *channel, const char *id, uint64_t *seq,
                   bool *dup)
{
    struct spool_fsm_result *r = publish_many(n, ts, 1, &channel, &id);
    int status = r->publishes[0].status;
    if (seq != NULL)
        *seq = r->publishes[0].seqs[0];
    if (dup != NULL)
        *dup = r->publishes[0].duplicate[0];
    spool_fsm_result_free(r);
    return status;
}

/* Applies a control entry made of `fields` (as spool_shard_propose_control would propose it). */
static void control(struct node *n, int64_t ts, const uint8_t *fields, size_t len)
{
    void *buf;
    size_t blen;
    cr_assert_eq(spool_entry_pack_fields(ts, fields, len, 0, &buf, &blen), 0);
    struct spool_fsm_result *r = apply_buf(n, buf, blen);
    cr_assert_eq(r->n, 0);
    spool_fsm_result_free(r);
}

static void fence(struct node *n, const uint8_t *bm, bool fenced, bool drop)
{
    uint8_t *f;
    size_t len;
    struct spool_err err;
    cr_assert_eq(spool_slot_fence_pack(bm, fenced, drop, &f, &len, &err), 0);
    control(n, 5000, f, len);
    free(f);
}

static uint32_t slot(const char *ch)
{
    return spool_slot_of(ch, strlen(ch));
}

/* A channel name "<prefix><k>" whose slot is not in `avoid` (k counts up from *k). */
static void name_outside(char *out, size_t size, const char *prefix, const uint8_t *avoid, int *k)
{
    do
        snprintf(out, size, "%s%d", prefix, (*k)++);
    while (spool_slot_bit(avoid, slot(out)));
}

Test(fsm_reshard, fence_refuses_publishes_of_its_slots_only)
{
    struct node n;
    node_open(&n, "n");
    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(bm, slot("a"));
    char b[32];
    int k = 0;
    name_outside(b, sizeof b, "b", bm, &k);
    uint64_t seq;
    cr_assert_eq(publish(&n, 1000, "a", "", &seq, NULL), 0);
    cr_assert_eq(seq, 1);
    fence(&n, bm, true, false);
    cr_assert(spool_fsm_slot_fenced(&n.fsm, slot("a")));
    cr_assert(!spool_fsm_slot_dropped(&n.fsm, slot("a")));
    cr_assert(!spool_fsm_slot_fenced(&n.fsm, slot(b)));
    /* One entry with both: a refused (nothing stored), b applies. */
    const char *chans[2] = {"a", b}, *ids[2] = {"x1", "x2"};
    struct spool_fsm_result *r = publish_many(&n, 2000, 2, chans, ids);
    cr_assert_eq(r->publishes[0].status, SPOOL_EMOVED);
    cr_assert_str_eq(r->publishes[0].reason, "channel's slot is moving to another shard");
    cr_assert_eq(r->publishes[1].status, 0);
    cr_assert_eq(r->publishes[1].seqs[0], 1);
    spool_fsm_result_free(r);
    cr_assert_eq(spool_store_last_seq(n.store, "a"), 1);
    /* Unfenced: accepted again, and the refused message id was never recorded. */
    fence(&n, bm, false, false);
    cr_assert(!spool_fsm_slot_fenced(&n.fsm, slot("a")));
    bool dup;
    cr_assert_eq(publish(&n, 3000, "a", "x1", &seq, &dup), 0);
    cr_assert_eq(seq, 2);
    cr_assert(!dup);
    node_close(&n);
}

Test(fsm_reshard, drop_deletes_the_slots_channels_and_reads_as_dropped)
{
    struct node n;
    node_open(&n, "n");
    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(bm, slot("a"));
    char b[32];
    int k = 0;
    name_outside(b, sizeof b, "b", bm, &k);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(publish(&n, 1000, "a", "", NULL, NULL), 0);
        cr_assert_eq(publish(&n, 1000, b, "", NULL, NULL), 0);
    }
    fence(&n, bm, true, false);
    fence(&n, bm, true, true);
    cr_assert(spool_fsm_slot_dropped(&n.fsm, slot("a")));
    cr_assert(spool_fsm_channel_dropped(&n.fsm, "a"));
    cr_assert(!spool_fsm_channel_dropped(&n.fsm, b));
    cr_assert_eq(spool_store_last_seq(n.store, "a"), 3, "last_seq stays");
    cr_assert_eq(spool_store_first_seq(n.store, "a"), 4, "nothing retained");
    cr_assert_eq(spool_store_first_seq(n.store, b), 1);
    cr_assert_eq(spool_store_last_seq(n.store, b), 3);
    cr_assert_eq(spool_store_applied_index(n.store), n.index);
    node_close(&n);
}

/* raft_fsm snapshot of `from` restored into `to` through the raft_fsm callbacks. */
static void snapshot_into(struct node *from, struct node *to)
{
    struct raft_buffer *bufs;
    unsigned nb;
    cr_assert_eq(from->fsm.raft_fsm.snapshot(&from->fsm.raft_fsm, &bufs, &nb), 0);
    cr_assert_eq(nb, 1);
    cr_assert_eq(to->fsm.raft_fsm.restore(&to->fsm.raft_fsm, &bufs[0]), 0);
    raft_free(bufs);
    to->index = spool_store_applied_index(to->store);
}

Test(fsm_reshard, marks_survive_reopen_and_snapshot_restore)
{
    struct node n;
    node_open(&n, "n");
    uint8_t fa[SPOOL_SLOT_BITMAP_BYTES] = {0}, db[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(fa, slot("a"));
    char b[32];
    int k = 0;
    name_outside(b, sizeof b, "b", fa, &k);
    spool_slot_bit_set(db, slot(b));
    cr_assert_eq(publish(&n, 1000, b, "", NULL, NULL), 0);
    fence(&n, fa, true, false);
    fence(&n, db, true, true);
    cr_assert_eq(publish(&n, 1000, "zz-other", "", NULL, NULL), 0); /* entries after the marks */
    node_reopen(&n);
    cr_assert(spool_fsm_slot_fenced(&n.fsm, slot("a")));
    cr_assert(!spool_fsm_slot_dropped(&n.fsm, slot("a")));
    cr_assert(spool_fsm_slot_fenced(&n.fsm, slot(b)));
    cr_assert(spool_fsm_slot_dropped(&n.fsm, slot(b)));
    cr_assert_eq(publish(&n, 2000, "a", "", NULL, NULL), SPOOL_EMOVED, "refused after reopen");

    struct node m;
    node_open(&m, "m");
    snapshot_into(&n, &m);
    cr_assert(spool_fsm_slot_fenced(&m.fsm, slot("a")));
    cr_assert(spool_fsm_slot_dropped(&m.fsm, slot(b)));
    cr_assert_eq(publish(&m, 2000, "a", "", NULL, NULL), SPOOL_EMOVED, "refused after restore");
    node_reopen(&m); /* and the restored store keeps them */
    cr_assert(spool_fsm_slot_fenced(&m.fsm, slot("a")));
    cr_assert(spool_fsm_slot_dropped(&m.fsm, slot(b)));

    /* Unfenced on n, a snapshot of that clears them on a replica that had them. */
    fence(&n, fa, false, false);
    fence(&n, db, false, false);
    snapshot_into(&n, &m);
    cr_assert(!spool_fsm_slot_fenced(&m.fsm, slot("a")));
    cr_assert(!spool_fsm_slot_dropped(&m.fsm, slot(b)));
    uint64_t seq;
    cr_assert_eq(publish(&m, 3000, "a", "", &seq, NULL), 0);
    cr_assert_eq(seq, 1);
    node_close(&m);
    node_close(&n);
}

/* --- export / import ---------------------------------------------------------------------- */

struct part {
    uint8_t *buf;
    size_t len;
};

/* Exports `bm` out of n's store in parts of at most max_bytes (checked). */
static size_t export_all(struct node *n, const uint8_t *bm, size_t max_bytes, struct part *parts,
                         size_t cap)
{
    struct spool_slot_export *x;
    struct spool_err err;
    cr_assert_eq(spool_slot_export_new(&x, n->store, bm, &err), 0, "%s", err.msg);
    size_t np = 0;
    bool done = false;
    while (!done) {
        cr_assert_lt(np, cap);
        cr_assert_eq(spool_slot_export_next(x, max_bytes, &parts[np].buf, &parts[np].len, &done, &err), 0,
                     "%s", err.msg);
        if (parts[np].len > max_bytes) { /* only a record that is alone larger */
            void *b;
            size_t bl;
            cr_assert_eq(spool_entry_pack_fields(0, parts[np].buf, parts[np].len, 0, &b, &bl), 0);
            Spool__Entry *e = spool__entry__unpack(NULL, parts[np].len, parts[np].buf);
            cr_assert_not_null(e);
            cr_assert(e->n_imports == 1 && e->imports[0]->n_records == 1, "part %zu: %zu bytes", np,
                      parts[np].len);
            spool__entry__free_unpacked(e, NULL);
            raft_free(b);
        }
        np++;
    }
    spool_slot_export_free(x);
    return np;
}

static void import_all(struct node *n, struct part *parts, size_t np)
{
    for (size_t i = 0; i < np; i++)
        if (parts[i].len > 0)
            control(n, 90000, parts[i].buf, parts[i].len);
}

static void parts_free(struct part *parts, size_t np)
{
    for (size_t i = 0; i < np; i++)
        free(parts[i].buf);
}

struct packed {
    uint8_t *v[256];
    size_t len[256];
    uint64_t seq[256];
    size_t n;
};

static int pack_cb(void *arg, const Spool__Record *r)
{
    struct packed *p = arg;
    cr_assert_lt(p->n, 256);
    p->len[p->n] = spool__record__get_packed_size(r);
    p->v[p->n] = malloc(p->len[p->n]);
    spool__record__pack(r, p->v[p->n]);
    p->seq[p->n++] = r->seq;
    return 0;
}

/* Both stores hold the same channel: same first/last seq, retention, and byte-identical
 * records (every field). */
static void same_channel(struct node *a, struct node *b, const char *ch)
{
    cr_assert_eq(spool_store_last_seq(a->store, ch), spool_store_last_seq(b->store, ch), "%s", ch);
    cr_assert_eq(spool_store_first_seq(a->store, ch), spool_store_first_seq(b->store, ch), "%s", ch);
    struct spool_retention ra, rb;
    bool ha = spool_store_retention(a->store, ch, &ra), hb = spool_store_retention(b->store, ch, &rb);
    cr_assert_eq(ha, hb, "%s: retention override", ch);
    if (ha)
        cr_assert(ra.max_count == rb.max_count && ra.max_age_ms == rb.max_age_ms &&
                  ra.max_bytes == rb.max_bytes);
    static struct packed pa, pb;
    struct spool_err err;
    pa.n = pb.n = 0;
    cr_assert_eq(spool_store_read(a->store, ch, 0, 0, pack_cb, &pa, &err), 0);
    cr_assert_eq(spool_store_read(b->store, ch, 0, 0, pack_cb, &pb, &err), 0);
    cr_assert_eq(pa.n, pb.n, "%s: %zu vs %zu records", ch, pa.n, pb.n);
    for (size_t i = 0; i < pa.n; i++) {
        cr_assert_eq(pa.seq[i], pb.seq[i]);
        cr_assert(pa.len[i] == pb.len[i] && memcmp(pa.v[i], pb.v[i], pa.len[i]) == 0,
                  "%s seq %llu differs", ch, (unsigned long long)pa.seq[i]);
    }
    for (size_t i = 0; i < pa.n; i++)
        free(pa.v[i]);
    for (size_t i = 0; i < pb.n; i++)
        free(pb.v[i]);
}

#define NCH 30

Test(fsm_reshard, export_import_round_trip)
{
    struct node src, dst;
    node_open(&src, "src");
    node_open(&dst, "dst");
    char names[NCH][16];
    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    for (int i = 0; i < NCH; i++) {
        snprintf(names[i], sizeof names[i], "chat-%d", i);
        spool_slot_bit_set(bm, slot(names[i]));
    }
    char outside[32];
    int k = 0;
    name_outside(outside, sizeof outside, "out-", bm, &k);
    int64_t ts = 10000;
    char id[32];
    /* chat-i gets i % 7 + 1 messages; chat-0 gets 60 (split over parts). */
    for (int i = 0; i < NCH; i++) {
        int m = i == 0 ? 60 : i % 7 + 1;
        for (int j = 0; j < m; j++) {
            snprintf(id, sizeof id, "m-%d-%d", i, j);
            cr_assert_eq(publish(&src, ts++, names[i], id, NULL, NULL), 0);
        }
    }
    cr_assert_eq(publish(&src, ts++, outside, "o1", NULL, NULL), 0);
    /* chat-1: a retention override that trimmed its start; chat-2: deleted (last_seq only). */
    struct spool_err err;
    struct spool_retention keep = {.max_count = 1};
    cr_assert_eq(spool_store_set_retention(src.store, "chat-1", &keep, &err), 0);
    cr_assert_eq(spool_store_delete_channel(src.store, "chat-2", &err), 0);
    {
        Spool__Entry e = SPOOL__ENTRY__INIT;
        Spool__RetentionTick tick = SPOOL__RETENTION_TICK__INIT;
        tick.now_ms = ts;
        e.timestamp_ms = ts;
        e.retention = &tick;
        void *buf;
        size_t len;
        cr_assert_eq(spool_fsm_encode_entry(&e, &buf, &len), 0);
        spool_fsm_result_free(apply_buf(&src, buf, len));
    }
    cr_assert_eq(spool_store_first_seq(src.store, "chat-1"), 2);
    cr_assert_eq(spool_store_last_seq(src.store, "chat-2"), 3);
    fence(&src, bm, true, false); /* the cut */
    fence(&dst, bm, false, false);

    static struct part parts[256];
    size_t np = export_all(&src, bm, 1500, parts, 256);
    cr_assert_gt(np, 3, "small parts: %zu", np);
    import_all(&dst, parts, np);
    for (int i = 0; i < NCH; i++)
        same_channel(&src, &dst, names[i]);
    cr_assert_eq(spool_store_last_seq(dst.store, outside), 0, "not in the slot set");
    struct spool_store_stats st1, st2;
    spool_store_stats(dst.store, &st1);
    /* The whole copy again (a new source leader restarting it): nothing stored twice. */
    import_all(&dst, parts, np);
    spool_store_stats(dst.store, &st2);
    cr_assert_eq(st1.records, st2.records);
    for (int i = 0; i < NCH; i++)
        same_channel(&src, &dst, names[i]);
    parts_free(parts, np);
    /* An export of a slot set without channels: one call, nothing, done. */
    uint8_t none[SPOOL_SLOT_BITMAP_BYTES] = {0};
    struct part p0[2];
    cr_assert_eq(export_all(&src, none, 1500, p0, 2), 1);
    cr_assert_eq(p0[0].len, 0);

    /* The new shard goes on: seqs continue, an imported id is still a duplicate, with its seq. */
    uint64_t seq;
    bool dup;
    cr_assert_eq(publish(&dst, ts + 100, "chat-0", "m-0-59", &seq, &dup), 0);
    cr_assert(dup, "a re-sent id within the window");
    cr_assert_eq(seq, 60);
    cr_assert_eq(publish(&dst, ts + 100, "chat-0", "new", &seq, &dup), 0);
    cr_assert(!dup);
    cr_assert_eq(seq, 61);
    cr_assert_eq(publish(&dst, ts + 100, "chat-2", "", &seq, NULL), 0);
    cr_assert_eq(seq, 4, "a deleted channel's seqs are not reused");
    /* And after a restart (dedup rebuilt from the store). */
    node_reopen(&dst);
    cr_assert_eq(publish(&dst, ts + 200, "chat-3", "m-3-2", &seq, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(seq, 3);
    node_close(&dst);
    node_close(&src);
}

Test(fsm_reshard, a_slot_comes_back_to_a_shard_that_dropped_it)
{
    struct node a, b;
    node_open(&a, "a");
    node_open(&b, "b");
    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(bm, slot("x"));
    char id[16];
    for (int j = 1; j <= 5; j++) {
        snprintf(id, sizeof id, "x%d", j);
        cr_assert_eq(publish(&a, 1000 + j, "x", id, NULL, NULL), 0);
    }
    /* x moves a -> b. */
    static struct part parts[64];
    fence(&b, bm, false, false);
    fence(&a, bm, true, false);
    size_t np = export_all(&a, bm, 1 << 20, parts, 64);
    import_all(&b, parts, np);
    parts_free(parts, np);
    fence(&a, bm, true, true);
    cr_assert_eq(spool_store_last_seq(a.store, "x"), 5);
    cr_assert_eq(spool_store_first_seq(a.store, "x"), 6);
    for (int j = 6; j <= 9; j++) {
        snprintf(id, sizeof id, "x%d", j);
        uint64_t seq;
        cr_assert_eq(publish(&b, 2000 + j, "x", id, &seq, NULL), 0);
        cr_assert_eq(seq, (uint64_t)j);
    }
    /* And back b -> a: a remembers last_seq 5 with nothing retained; the copy brings 1..9. */
    fence(&a, bm, false, false);
    cr_assert(!spool_fsm_slot_dropped(&a.fsm, slot("x")));
    fence(&b, bm, true, false);
    np = export_all(&b, bm, 300, parts, 64);
    import_all(&a, parts, np);
    parts_free(parts, np);
    same_channel(&a, &b, "x");
    fence(&b, bm, true, true);
    cr_assert_eq(spool_store_first_seq(a.store, "x"), 1);
    cr_assert_eq(spool_store_last_seq(a.store, "x"), 9);
    uint64_t seq;
    bool dup;
    cr_assert_eq(publish(&a, 3000, "x", "x8", &seq, &dup), 0);
    cr_assert(dup);
    cr_assert_eq(seq, 8);
    cr_assert_eq(publish(&a, 3000, "x", "x10", &seq, &dup), 0);
    cr_assert_eq(seq, 10);
    node_reopen(&a);
    cr_assert_eq(spool_store_first_seq(a.store, "x"), 1);
    cr_assert_eq(spool_store_last_seq(a.store, "x"), 10);
    node_close(&b);
    node_close(&a);
}

/* One presence enter of (client, connection) hosted by node 5, as a publish entry. */
static void presence_enter(struct node *n, const char *channel, const char *client)
{
    Spool__Record rec = SPOOL__RECORD__INIT, *recp = &rec;
    rec.action = SPOOL__ACTION__ACTION_PRESENCE;
    rec.name = "enter";
    rec.client_id = (char *)client;
    rec.connection_id = "conn-1";
    rec.presence_node = 5;
    rec.presence_boot = 77;
    Spool__PublishRequest req = SPOOL__PUBLISH_REQUEST__INIT, *reqp = &req;
    req.channel = (char *)channel;
    req.n_messages = 1;
    req.messages = &recp;
    Spool__Entry e = SPOOL__ENTRY__INIT;
    e.timestamp_ms = 1000;
    e.n_publishes = 1;
    e.publishes = &reqp;
    void *buf;
    size_t len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf, &len), 0);
    struct spool_fsm_result *r = apply_buf(n, buf, len);
    cr_assert_eq(r->publishes[0].status, 0);
    spool_fsm_result_free(r);
}

Test(fsm_reshard, presence_members_move_with_their_slot)
{
    struct node a, b;
    node_open(&a, "a");
    node_open(&b, "b");
    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(bm, slot("room"));
    char other[32];
    int k = 0;
    name_outside(other, sizeof other, "other", bm, &k);
    presence_enter(&a, "room", "alice");
    presence_enter(&a, other, "bob");
    cr_assert_eq(spool_pindex_size(a.fsm.presence), 2);
    static struct part parts[8];
    fence(&b, bm, false, false);
    fence(&a, bm, true, false);
    size_t np = export_all(&a, bm, 1 << 20, parts, 8);
    import_all(&b, parts, np);
    parts_free(parts, np);
    fence(&a, bm, true, true);
    /* The new shard's leader reaps alice if node 5 dies; the old one no longer does. */
    cr_assert_not_null(spool_pindex_find(b.fsm.presence, "room", "alice", "conn-1"));
    cr_assert_null(spool_pindex_find(a.fsm.presence, "room", "alice", "conn-1"));
    cr_assert_not_null(spool_pindex_find(a.fsm.presence, other, "bob", "conn-1"));
    cr_assert_eq(spool_pindex_size(a.fsm.presence), 1);
    node_close(&b);
    node_close(&a);
}

/* --- spool_shard_propose_control through the batch queue ------------------------------------ */

static void quiet_emit(struct raft_tracer *t, int type, const void *info)
{
    (void)t;
    (void)type;
    (void)info;
}
static struct raft_tracer quiet = {.version = 2, .emit = quiet_emit};

static void control_cb(void *arg, int status)
{
    int *s = arg;
    cr_assert_eq(*s, -1, "control callback ran twice");
    *s = status;
}

struct pub_item {
    struct spool_batch_item item; /* first */
    int status;
    uint64_t seq;
};

static void pub_done(struct spool_batch_item *item, int status, const struct spool_err *err,
                     const struct spool_fsm_publish_result *res)
{
    (void)err;
    struct pub_item *p = (struct pub_item *)item;
    cr_assert_eq(p->status, -1, "publish completed twice");
    p->status = status;
    if (status == 0)
        p->seq = res->seqs[0];
}

static void batch_closed(struct spool_batch *b)
{
    (void)b;
}

Test(fsm_reshard, propose_control_completes_once_applied)
{
    struct raft_fixture fx;
    cr_assert_eq(raft_fixture_init(&fx), 0);
    struct node n;
    node_open(&n, "n");
    cr_assert_eq(raft_fixture_grow(&fx, &n.fsm.raft_fsm), 0);
    n.fsm.raft = raft_fixture_get(&fx, 0);
    raft_fixture_get(&fx, 0)->tracer = &quiet;
    struct raft_configuration conf;
    cr_assert_eq(raft_fixture_configuration(&fx, 1, &conf), 0);
    cr_assert_eq(raft_fixture_bootstrap(&fx, &conf), 0);
    raft_configuration_close(&conf);
    cr_assert_eq(raft_fixture_start(&fx), 0);
    cr_assert(raft_fixture_step_until_has_leader(&fx, 10000));

    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    /* The parts of a shard spool_shard_propose_control uses: its batch over the group. */
    struct spool_shard *sh = calloc(1, sizeof *sh);
    cr_assert_eq(spool_batch_init(&sh->batch, &loop, raft_fixture_get(&fx, 0)), 0);
    n.fsm.take_result = spool_batch_take_result;
    n.fsm.take_arg = &sh->batch;

    uint8_t bm[SPOOL_SLOT_BITMAP_BYTES] = {0};
    spool_slot_bit_set(bm, slot("a"));
    uint8_t *f;
    size_t len;
    struct spool_err err;
    cr_assert_eq(spool_slot_fence_pack(bm, true, false, &f, &len, &err), 0);
    int status = -1;
    cr_assert_eq(spool_shard_propose_control(sh, f, len, control_cb, &status, &err), 0, "%s", err.msg);
    free(f); /* the shard copied it */
    cr_assert_eq(status, -1, "not from inside the call");
    /* A publish queued in the same turn goes in an entry of its own, after the fence. */
    Spool__Record rec = SPOOL__RECORD__INIT, *recp = &rec;
    rec.data.data = (uint8_t *)"hi";
    rec.data.len = 2;
    Spool__PublishRequest req = SPOOL__PUBLISH_REQUEST__INIT;
    req.channel = "a";
    req.n_messages = 1;
    req.messages = &recp;
    uint8_t packed[128];
    size_t plen = spool__publish_request__pack(&req, packed);
    struct pub_item pub = {.item = {.req = packed, .req_len = plen, .done = pub_done}, .status = -1};
    spool_batch_submit(&sh->batch, &pub.item);
    for (int i = 0; i < 10000 && (status == -1 || pub.status == -1); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        raft_fixture_step(&fx);
    }
    cr_assert_eq(status, 0);
    cr_assert(spool_fsm_slot_fenced(&n.fsm, slot("a")));
    cr_assert_eq(pub.status, SPOOL_EMOVED, "the publish applied after the fence");
    cr_assert_eq(sh->batch.entries, 2);

    /* Over the control entry cap: refused with SPOOL_ELIMIT through the callback, nothing proposed. */
    size_t big_len = SPOOL_BATCH_MAX_CONTROL_BYTES + 1;
    uint8_t *big = calloc(1, big_len);
    cr_assert_not_null(big);
    int big_status = -1;
    cr_assert_eq(spool_shard_propose_control(sh, big, big_len, control_cb, &big_status, &err), 0,
                 "%s", err.msg);
    free(big);
    for (int i = 0; i < 1000 && big_status == -1; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        raft_fixture_step(&fx);
    }
    cr_assert_eq(big_status, SPOOL_ELIMIT);
    cr_assert_eq(sh->batch.entries, 2, "nothing proposed for it");

    spool_batch_close(&sh->batch, batch_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    free(sh);
    raft_fixture_close(&fx);
    node_close(&n);
}
