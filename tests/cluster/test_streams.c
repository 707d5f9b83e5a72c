/* Durable Streams commands applied by the shard state machine (cluster/streams.h): the checks
 * happen at apply time against the state stored in the channel, so fencing, dedup and closure
 * commit atomically with the data, hold across commands of one entry, and survive a restart. */
#include <criterion/criterion.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "cluster/streams.h"
#include "proto/entry.pb-c.h"
#include "proto/streams.pb-c.h"
#include "scratch_dir.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/spool-streams-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    scratch_dir_remove(dir);
}

static struct spool_store *open_store(void)
{
    struct spool_store_config cfg = {.dir = dir};
    spool_store_config_defaults(&cfg);
    struct spool_store *s;
    struct spool_err err;
    cr_assert_eq(spool_store_open(&s, &cfg, &err), 0, "%s", err.msg);
    return s;
}

/* One command as the gateway sends it. */
struct cmd {
    Spool__StreamOp op;
    const char *producer; /* NULL = none */
    uint64_t epoch, seq;
    bool close;
    const char *stream_seq;
    const char *data; /* NULL = no data record */
    const char *fork_name;
};

/* Applies the commands (all on channel "s") as one entry; results into res[]. */
static void apply(struct spool_fsm *f, uint64_t index, const struct cmd *c, size_t n,
                  struct spool_stream_result *res)
{
    Spool__Entry e = SPOOL__ENTRY__INIT;
    Spool__PublishRequest reqs[4], *rp[4];
    Spool__Record recs[4][5], *recp[4][5];
    Spool__StreamCommand cmds[4];
    Spool__StreamProducer prods[4];
    Spool__StreamState create;
    uint8_t bufs[4][256];
    spool__stream_state__init(&create);
    create.content_type = "text/plain";
    e.timestamp_ms = 1000;
    e.n_publishes = n;
    e.publishes = rp;
    for (size_t i = 0; i < n; i++) {
        spool__stream_command__init(&cmds[i]);
        cmds[i].op = c[i].op;
        cmds[i].create = c[i].op == SPOOL__STREAM_OP__STREAM_OP_CREATE ? &create : NULL;
        cmds[i].content_type = "text/plain";
        cmds[i].close = c[i].close;
        cmds[i].fork_name = (char *)(c[i].fork_name ? c[i].fork_name : "");
        if (c[i].producer) {
            spool__stream_producer__init(&prods[i]);
            prods[i].id = (char *)c[i].producer;
            prods[i].epoch = c[i].epoch;
            prods[i].seq = c[i].seq;
            cmds[i].has_producer = true;
            cmds[i].producer = &prods[i];
        }
        if (c[i].stream_seq) {
            cmds[i].has_stream_seq = true;
            cmds[i].stream_seq.data = (uint8_t *)c[i].stream_seq;
            cmds[i].stream_seq.len = strlen(c[i].stream_seq);
        }
        size_t len = spool__stream_command__pack(&cmds[i], bufs[i]);
        spool__publish_request__init(&reqs[i]);
        rp[i] = &reqs[i];
        reqs[i].channel = "s";
        reqs[i].messages = recp[i];
        reqs[i].n_messages = SPOOL_STREAMS_SLOTS + (c[i].data != NULL);
        for (size_t j = 0; j < reqs[i].n_messages; j++) {
            spool__record__init(&recs[i][j]);
            recp[i][j] = &recs[i][j];
            recs[i][j].action = SPOOL__ACTION__ACTION_CHANNEL_META;
            recs[i][j].name = j == 0 ? SPOOL_STREAMS_CMD : SPOOL_STREAMS_PAD;
        }
        recs[i][0].data.data = bufs[i];
        recs[i][0].data.len = len;
        if (c[i].data) {
            Spool__Record *d = &recs[i][SPOOL_STREAMS_SLOTS];
            d->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
            d->name = "";
            d->data.data = (uint8_t *)c[i].data;
            d->data.len = strlen(c[i].data);
        }
    }
    void *buf;
    size_t len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &buf, &len), 0);
    struct spool_fsm_result *r;
    struct spool_err err;
    cr_assert_eq(spool_fsm_apply_entry(f, index, buf, len, &r, &err), 0, "%s", err.msg);
    raft_free(buf);
    cr_assert_not_null(r);
    for (size_t i = 0; i < n; i++)
        spool_streams_result(r->publishes[i].seqs, r->publishes[i].n, &res[i]);
    spool_fsm_result_free(r);
}

static struct spool_stream_result apply1(struct spool_fsm *f, uint64_t index, struct cmd c)
{
    struct spool_stream_result res;
    apply(f, index, &c, 1, &res);
    return res;
}

#define CREATE ((struct cmd){.op = SPOOL__STREAM_OP__STREAM_OP_CREATE})
#define APPEND(...) ((struct cmd){.op = SPOOL__STREAM_OP__STREAM_OP_APPEND, __VA_ARGS__})

TestSuite(streams, .init = setup, .fini = teardown);

Test(streams, producer_fencing_at_apply_time)
{
    struct spool_store *st = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, st, 60000, &err), 0);
    uint64_t i = 1;
    cr_assert_eq(apply1(&f, i++, APPEND(.data = "x")).status, 404);
    cr_assert_eq(apply1(&f, i++, CREATE).status, 201);
    cr_assert_eq(apply1(&f, i++, CREATE).status, 200, "same config: idempotent");

    struct spool_stream_result r = apply1(&f, i++, APPEND(.producer = "p", .seq = 0, .data = "a"));
    cr_assert_eq(r.status, 200);
    uint64_t tail = r.tail, last = spool_store_last_seq(st, "s");

    r = apply1(&f, i++, APPEND(.producer = "p", .seq = 0, .data = "a"));
    cr_assert_eq(r.status, 204, "duplicate");
    cr_assert_eq(r.extra, 0, "highest accepted seq");
    r = apply1(&f, i++, APPEND(.producer = "p", .seq = 2, .data = "c"));
    cr_assert_eq(r.status, 409, "gap");
    cr_assert_eq(r.extra, 1, "expected seq");
    cr_assert_eq(spool_store_last_seq(st, "s"), last, "rejections store nothing");
    cr_assert_eq(r.tail, tail);

    cr_assert_eq(apply1(&f, i++, APPEND(.producer = "p", .epoch = 1, .seq = 1, .data = "b")).status,
                 400, "a new epoch starts at 0");
    cr_assert_eq(apply1(&f, i++, APPEND(.producer = "p", .epoch = 1, .seq = 0, .data = "b")).status,
                 200);
    r = apply1(&f, i++, APPEND(.producer = "p", .epoch = 0, .seq = 1, .data = "zombie"));
    cr_assert_eq(r.status, 403);
    cr_assert_eq(r.extra, 1, "current epoch");
    r = apply1(&f, i++, APPEND(.data = "plain"));
    cr_assert_eq(r.status, 204);
    cr_assert_gt(r.tail, tail, "offsets grow");
    spool_fsm_close(&f);
    spool_store_close(st);
}

Test(streams, commands_of_one_entry_see_each_other)
{
    struct spool_store *st = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, st, 60000, &err), 0);
    struct cmd c[3] = {CREATE, APPEND(.producer = "p", .seq = 0, .data = "a"),
                       APPEND(.producer = "p", .seq = 0, .data = "a")};
    struct spool_stream_result r[3];
    apply(&f, 1, c, 3, r);
    cr_assert_eq(r[0].status, 201);
    cr_assert_eq(r[1].status, 200);
    cr_assert_eq(r[2].status, 204, "the retry in the same entry is a duplicate");
    spool_fsm_close(&f);
    spool_store_close(st);
}

Test(streams, closure_and_stream_seq_survive_a_restart)
{
    struct spool_store *st = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, st, 60000, &err), 0);
    cr_assert_eq(apply1(&f, 1, CREATE).status, 201);
    cr_assert_eq(apply1(&f, 2, APPEND(.stream_seq = "2", .data = "a")).status, 204);
    cr_assert_eq(apply1(&f, 3, APPEND(.stream_seq = "10", .data = "b")).status, 409,
                 "Stream-Seq compares bytes: \"10\" < \"2\"");
    struct spool_stream_result r =
        apply1(&f, 4, APPEND(.producer = "p", .seq = 0, .close = true, .data = "end"));
    cr_assert_eq(r.status, 200);
    cr_assert(r.closed);
    uint64_t tail = r.tail;
    spool_fsm_close(&f);
    spool_store_close(st);

    st = open_store(); /* the state is in the channel's records */
    cr_assert_eq(spool_fsm_init(&f, st, 60000, &err), 0);
    r = apply1(&f, 5, APPEND(.data = "late"));
    cr_assert_eq(r.status, 409);
    cr_assert(r.closed);
    cr_assert_eq(r.tail, tail, "409 carries the final tail");
    r = apply1(&f, 6, APPEND(.producer = "p", .seq = 0, .close = true, .data = "other body"));
    cr_assert_eq(r.status, 204, "the closing tuple retried is a duplicate");
    cr_assert_eq(apply1(&f, 7, APPEND(.close = true)).status, 204, "closing again");
    cr_assert_eq(apply1(&f, 8, APPEND(.producer = "q", .seq = 0, .close = true)).status, 409);
    spool_fsm_close(&f);
    spool_store_close(st);
}

Test(streams, fork_references_soft_delete_and_release)
{
    struct spool_store *st = open_store();
    struct spool_fsm f;
    struct spool_err err;
    cr_assert_eq(spool_fsm_init(&f, st, 60000, &err), 0);
    struct cmd acquire = {.op = SPOOL__STREAM_OP__STREAM_OP_FORK_ACQUIRE, .fork_name = "f"};
    struct cmd release = {.op = SPOOL__STREAM_OP__STREAM_OP_FORK_RELEASE, .fork_name = "f"};
    struct cmd del = {.op = SPOOL__STREAM_OP__STREAM_OP_DELETE};
    cr_assert_eq(apply1(&f, 1, acquire).status, 404);
    cr_assert_eq(apply1(&f, 2, CREATE).status, 201);
    cr_assert_eq(apply1(&f, 3, acquire).status, 200);
    cr_assert_eq(apply1(&f, 4, acquire).status, 200, "a set: acquiring twice is one reference");
    cr_assert_eq(apply1(&f, 5, del).status, 204, "soft delete");
    cr_assert_eq(apply1(&f, 6, APPEND(.data = "x")).status, 410);
    cr_assert_eq(apply1(&f, 7, CREATE).status, 409, "no re-creation while soft-deleted");
    cr_assert_eq(apply1(&f, 8, acquire).status, 409, "no fork of a soft-deleted source");
    cr_assert_eq(apply1(&f, 9, release).status, 200);
    cr_assert_eq(apply1(&f, 10, APPEND(.data = "x")).status, 404, "last release: gone");
    cr_assert_eq(apply1(&f, 11, CREATE).status, 201, "and the path is free again");
    spool_fsm_close(&f);
    spool_store_close(st);
}
