/*
 * Resharding: adding shards to a running cluster, moving slots (and the channels in them) from
 * the existing shards to the new ones (docs/resharding.md; the shard side -- fences, export,
 * import, drop -- is cluster/slot_move.h and the state machine, cluster/fsm.h).
 *
 * Like membership changes (cluster/membership.c), everything is driven by the metadata group's
 * leader from the cluster map (cluster/meta.h), one step in flight, every step idempotent, so a
 * new leader resumes where the old one stopped:
 *
 *   accept   spool_node_membership_change(kind SPOOL_CHANGE_SHARDS, id = the new count), the
 *            same request path as node changes (one change at a time: 409 otherwise). The
 *            leader plans (spool_placement_plan_shards: the new shards' replica sets and each
 *            slot's target shard) and proposes a map with shards = N', the new replica sets,
 *            slot_target, shards_before = N and change = 3. Every node adopts the larger shard
 *            count; the new shards' replicas open and bootstrap their groups with the map's
 *            replica set (cluster/replicas.c: only while this change runs, only a pristine
 *            directory).
 *   move     while some slot's shard is not its target, one move at a time, each tick of the
 *            200 ms timer doing at most one step:
 *              pick   A = the shard of the lowest such slot, B its target, S = up to
 *                     SPOOL_RESHARD_MOVE_SLOTS slots going from A to B: a map with move_from /
 *                     move_to / move_slots and move_phase = COPY;
 *              copy   SPOOL_METHOD_SLOT_EXPORT to A's leader every tick until it answers done.
 *                     A's leader runs an export job (below) and answers at once: EBUSY while it
 *                     runs (the RECONFIGURE pattern: polled, never awaited);
 *              flip   a map with slot_shard[S] = B and move_phase = DROP: from here every router
 *                     sends S to B;
 *              drop   SPOOL_METHOD_SLOT_IMPORT to A's leader with fence(S, fenced, drop): A
 *                     deletes the channels of S; then a map with the move cleared.
 *   finish   every slot at its target: a map without the change.
 *
 * The export job, on A's leader (one per node; a poll for another move replaces a finished or
 * failed one): (1) propose fence(S, fenced) on A and wait until it applied here: from then on A
 * refuses publishes to S (SPOOL_EMOVED, routers wait for the flip) and S's content on A no longer
 * changes; (2) fence(S, unfenced) on B (B may have given these slots away before); (3) copy: the
 * channels of S out of A's store (spool_slot_export_next, parts of SPOOL_RESHARD_PART_BYTES),
 * each part one SPOOL_METHOD_SLOT_IMPORT to B's leader, which proposes it and answers once it
 * applied; one part in flight. Any failure (a leader change on A or B, a timeout) ends the job
 * as failed; the driver's next poll starts it again from (1), at whichever node leads A then:
 * fencing twice is harmless and imports skip records already there, so a restarted copy stores
 * nothing twice.
 *
 * One owner per async operation: the driver's step (`busy`) completes through its one callback;
 * a job has at most one callback outstanding (`waiting`) and is freed by it when it was
 * abandoned meanwhile. Close stops the timer, frees the export handles (before the shards close
 * their stores) and counts in pending_close until the last callback came back.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/admin.h"
#include "cluster/node_int.h"
#include "cluster/op.h"
#include "cluster/slot_move.h"
#include "common/log.h"

#define TICK_MS 200
#define STALL_LOG_MS 5000
#define EXPORT_CALL_TIMEOUT_MS 3000   /* answered at once: the job is polled */
#define IMPORT_CALL_TIMEOUT_MS 15000  /* a part is proposed and applied before the answer */
#define SPOOL_RESHARD_MOVE_SLOTS 512  /* slots per move */
#define SPOOL_RESHARD_PART_BYTES (256u << 10)

enum job_state { JOB_FENCE, JOB_UNFENCE, JOB_COPY, JOB_DONE, JOB_FAILED };

struct export_job {
    struct spool_reshard *r;
    uint32_t from, to;
    uint8_t slots[SPOOL_SLOT_BITMAP_BYTES];
    enum job_state state;
    bool waiting;    /* a callback is outstanding (proposal or RPC) */
    bool abandoned;  /* replaced or closing: the outstanding callback frees it */
    bool last_part;  /* the part in flight is the last one */
    struct spool_slot_export *x;
    unsigned attempt;
    uint64_t parts, bytes;
};

struct spool_reshard {
    struct spool_node *node;
    uv_timer_t timer;
    bool busy;         /* a driver step is in flight */
    bool closing;
    unsigned inflight; /* callbacks still to come: driver steps, jobs, served imports, timer */
    unsigned attempt;
    struct export_job *job;
    uint64_t progress_epoch, progress_ms;
    int last_status;
};

static void maybe_free(struct spool_reshard *r);

/* ---- a control entry on any shard: local leader, else SPOOL_METHOD_SLOT_IMPORT ---- */

typedef void (*control_cb)(void *arg, int status);

struct control_call {
    struct spool_node *node;
    uint32_t shard;
    control_cb cb;
    void *arg;
};

static void control_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                             size_t len)
{
    (void)err;
    struct control_call *c = arg;
    struct spool_node *n = c->node;
    if (status == 0) {
        Spool__SlotReply *r = spool__slot_reply__unpack(NULL, len, body);
        if (r == NULL || r->status == NULL) {
            status = SPOOL_ECORRUPT;
        } else {
            status = r->status->code;
            if (r->status->leader_hint != 0 && !n->closing)
                n->leader_hint[c->shard] = r->status->leader_hint;
        }
        if (r)
            spool__slot_reply__free_unpacked(r, NULL);
    } else if (!n->closing && status != SPOOL_ECLOSED) {
        n->leader_hint[c->shard] = 0; /* did not answer: ask another replica next time */
    }
    control_cb cb = c->cb;
    void *cb_arg = c->arg;
    free(c);
    cb(cb_arg, status);
}

static void control_local_cb(void *arg, int status)
{
    struct control_call *c = arg;
    control_cb cb = c->cb;
    void *cb_arg = c->arg;
    free(c);
    cb(cb_arg, status);
}

/* Proposes `fields` on `shard` (at its leader); cb runs once, never inside the call. 0 or an
 * error without cb. */
static int control_call(struct spool_node *n, uint32_t shard, const uint8_t *fields, size_t len,
                        unsigned attempt, control_cb cb, void *arg)
{
    struct control_call *c = malloc(sizeof *c);
    if (c == NULL)
        return SPOOL_ENOMEM;
    *c = (struct control_call){n, shard, cb, arg};
    struct spool_shard *sh = spool_node_local_shard(n, shard);
    if (sh != NULL && spool_shard_is_leader(sh)) {
        struct spool_err err;
        int rc = spool_shard_propose_control(sh, fields, len, control_local_cb, c, &err);
        if (rc != 0)
            free(c);
        return rc;
    }
    uint64_t target = spool_node_route_target(n, shard, attempt);
    Spool__SlotImportRequest q = SPOOL__SLOT_IMPORT_REQUEST__INIT;
    q.shard = shard;
    q.fields.data = (uint8_t *)fields;
    q.fields.len = len;
    size_t plen = spool__slot_import_request__get_packed_size(&q);
    uint8_t *buf = malloc(plen ? plen : 1);
    int rc = buf == NULL ? SPOOL_ENOMEM : target == 0 || n->rpc == NULL ? SPOOL_ENOTLEADER : 0;
    if (rc == 0) {
        spool__slot_import_request__pack(&q, buf);
        rc = spool_rpc_call(n->rpc, target, SPOOL_METHOD_SLOT_IMPORT, buf, plen,
                            IMPORT_CALL_TIMEOUT_MS, control_reply_cb, c);
    }
    free(buf);
    if (rc != 0)
        free(c);
    return rc;
}

static int fence_call(struct spool_node *n, uint32_t shard, const uint8_t *slots, bool fenced,
                      bool drop, unsigned attempt, control_cb cb, void *arg)
{
    uint8_t *fields = NULL;
    size_t len = 0;
    struct spool_err err;
    int rc = spool_slot_fence_pack(slots, fenced, drop, &fields, &len, &err);
    if (rc == 0)
        rc = control_call(n, shard, fields, len, attempt, cb, arg);
    free(fields);
    return rc;
}

/* ---- the export job (on the source shard's leader) ---- */

static void job_free(struct export_job *j)
{
    if (j->x != NULL)
        spool_slot_export_free(j->x);
    free(j);
}

static void job_step_cb(void *arg, int status);

static void job_fail(struct export_job *j, int status, const char *what)
{
    j->state = JOB_FAILED;
    if (j->x != NULL) {
        spool_slot_export_free(j->x);
        j->x = NULL;
    }
    SPOOL_INFO("reshard.job_failed", "from=%u to=%u step=%s code=%s", j->from, j->to, what,
               spool_err_name(status));
}

/* Sends the next part of the copy (or finishes it). */
static void job_next_part(struct export_job *j)
{
    struct spool_node *n = j->r->node;
    struct spool_shard *sh = spool_node_local_shard(n, j->from);
    if (sh == NULL || !spool_shard_is_leader(sh)) {
        job_fail(j, SPOOL_ENOTLEADER, "copy");
        return;
    }
    struct spool_err err;
    if (j->x == NULL) {
        int rc = spool_slot_export_new(&j->x, sh->store, j->slots, &err);
        if (rc != 0) {
            j->x = NULL;
            job_fail(j, rc, "export_new");
            return;
        }
    }
    uint8_t *part = NULL;
    size_t len = 0;
    bool done = false;
    int rc = spool_slot_export_next(j->x, SPOOL_RESHARD_PART_BYTES, &part, &len, &done, &err);
    if (rc != 0) {
        free(part);
        job_fail(j, rc, "export_next");
        return;
    }
    if (len == 0 && done) {
        free(part);
        j->state = JOB_DONE;
        spool_slot_export_free(j->x);
        j->x = NULL;
        SPOOL_INFO("reshard.copied", "from=%u to=%u slots=%u parts=%llu bytes=%llu", j->from,
                   j->to, spool_slot_count(j->slots), (unsigned long long)j->parts,
                   (unsigned long long)j->bytes);
        return;
    }
    j->last_part = done;
    j->parts++;
    j->bytes += len;
    rc = control_call(n, j->to, part, len, j->attempt++, job_step_cb, j);
    free(part);
    if (rc != 0) {
        job_fail(j, rc, "import");
        return;
    }
    j->waiting = true;
    j->r->inflight++;
}

static void job_step_cb(void *arg, int status)
{
    struct export_job *j = arg;
    struct spool_reshard *r = j->r;
    j->waiting = false;
    r->inflight--;
    if (j->abandoned || r->closing || r->node->closing) {
        if (r->job == j)
            r->job = NULL;
        job_free(j);
        maybe_free(r);
        return;
    }
    if (status != 0) {
        job_fail(j, status, j->state == JOB_FENCE     ? "fence"
                            : j->state == JOB_UNFENCE ? "unfence"
                                                      : "import");
        return;
    }
    struct spool_node *n = r->node;
    switch (j->state) {
    case JOB_FENCE: /* applied here: A's content of the slots is final */
        j->state = JOB_UNFENCE;
        if (fence_call(n, j->to, j->slots, false, false, j->attempt++, job_step_cb, j) != 0) {
            job_fail(j, SPOOL_ENOTLEADER, "unfence");
            return;
        }
        j->waiting = true;
        r->inflight++;
        return;
    case JOB_UNFENCE:
        j->state = JOB_COPY;
        job_next_part(j);
        return;
    case JOB_COPY:
        if (j->last_part) {
            j->state = JOB_DONE;
            spool_slot_export_free(j->x);
            j->x = NULL;
            SPOOL_INFO("reshard.copied", "from=%u to=%u slots=%u parts=%llu bytes=%llu", j->from,
                       j->to, spool_slot_count(j->slots), (unsigned long long)j->parts,
                       (unsigned long long)j->bytes);
            return;
        }
        job_next_part(j);
        return;
    default:
        return;
    }
}

/* Starts (or restarts) the job from its fence. */
static void job_start(struct export_job *j, struct spool_shard *sh)
{
    struct spool_reshard *r = j->r;
    if (j->x != NULL) {
        spool_slot_export_free(j->x);
        j->x = NULL;
    }
    j->state = JOB_FENCE;
    j->last_part = false;
    j->parts = j->bytes = 0;
    /* Fenced here already (an earlier run of this job, on this leader or a former one): the
     * fence entry applied on this replica, so did everything before it -- the content of the
     * slots is final and need not be fenced again (restarts while the destination elects its
     * leader would otherwise add an entry per poll). */
    bool all = true;
    for (uint32_t i = 0; i < SPOOL_SLOTS && all; i++)
        all = !spool_slot_bit(j->slots, i) || spool_fsm_slot_fenced(&sh->fsm, i);
    if (all) {
        SPOOL_DEBUG("reshard.job_restarted", "from=%u to=%u", j->from, j->to);
        j->waiting = true;
        r->inflight++;
        job_step_cb(j, 0); /* on to the destination's unfence */
        return;
    }
    uint8_t *fields = NULL;
    size_t len = 0;
    struct spool_err err;
    int rc = spool_slot_fence_pack(j->slots, true, false, &fields, &len, &err);
    if (rc == 0)
        rc = spool_shard_propose_control(sh, fields, len, job_step_cb, j, &err);
    free(fields);
    if (rc != 0) {
        job_fail(j, rc, "fence");
        return;
    }
    SPOOL_INFO("reshard.job_started", "from=%u to=%u slots=%u", j->from, j->to,
               spool_slot_count(j->slots));
    j->waiting = true;
    r->inflight++;
}

/* A SLOT_EXPORT poll, here (served or the driver's own): starts, restarts or reports the job.
 * Returns 0 with *done, or SPOOL_EBUSY (running), SPOOL_ENOTLEADER, SPOOL_ECLOSED, ENOMEM. */
static int export_poll(struct spool_node *n, uint32_t from, uint32_t to, const uint8_t *slots,
                       bool *done)
{
    *done = false;
    struct spool_reshard *r = n->reshard;
    if (r == NULL || r->closing || n->closing)
        return SPOOL_ECLOSED;
    struct spool_shard *sh = spool_node_local_shard(n, from);
    if (sh == NULL || !spool_shard_is_leader(sh) || to >= n->placement.shards)
        return SPOOL_ENOTLEADER;
    struct export_job *j = r->job;
    if (j != NULL && j->from == from && j->to == to && memcmp(j->slots, slots, sizeof j->slots) == 0) {
        if (j->state == JOB_DONE) {
            *done = true;
            return 0;
        }
        if (j->state != JOB_FAILED || j->waiting)
            return SPOOL_EBUSY;
        job_start(j, sh);
        return SPOOL_EBUSY;
    }
    if (j != NULL) { /* another move's job: replace it */
        r->job = NULL;
        if (j->waiting)
            j->abandoned = true; /* its callback frees it */
        else
            job_free(j);
    }
    j = calloc(1, sizeof *j);
    if (j == NULL)
        return SPOOL_ENOMEM;
    j->r = r;
    j->from = from;
    j->to = to;
    memcpy(j->slots, slots, sizeof j->slots);
    r->job = j;
    job_start(j, sh);
    return SPOOL_EBUSY;
}

/* ---- the RPC side ---- */

static void respond_slot(struct spool_rpc_reply *reply, int code, const char *msg, uint64_t hint,
                         bool done)
{
    Spool__ReplyStatus st = SPOOL__REPLY_STATUS__INIT;
    spool_op_pack_status(&st, code, msg, hint);
    Spool__SlotReply r = SPOOL__SLOT_REPLY__INIT;
    r.status = &st;
    r.done = done;
    uint8_t buf[512];
    size_t len = spool__slot_reply__get_packed_size(&r);
    if (len > sizeof buf) {
        spool_rpc_respond(reply, code, msg, NULL, 0);
        return;
    }
    spool__slot_reply__pack(&r, buf);
    spool_rpc_respond(reply, 0, NULL, buf, len);
}

static void serve_export(struct spool_node *n, const void *body, size_t len,
                         struct spool_rpc_reply *reply)
{
    Spool__SlotExportRequest *q = spool__slot_export_request__unpack(NULL, len, body);
    if (q == NULL || q->slots.len != SPOOL_SLOT_BITMAP_BYTES || q->from >= SPOOL_MAX_SHARDS ||
        q->to >= SPOOL_MAX_SHARDS) {
        if (q)
            spool__slot_export_request__free_unpacked(q, NULL);
        respond_slot(reply, SPOOL_EINVAL, "bad slot export request", 0, false);
        return;
    }
    bool done = false;
    uint32_t from = q->from;
    int rc = export_poll(n, q->from, q->to, q->slots.data, &done);
    spool__slot_export_request__free_unpacked(q, NULL);
    respond_slot(reply, rc, rc == 0 ? "" : spool_err_name(rc),
                 from < n->placement.shards ? spool_op_local_leader(n, from) : 0, done);
}

struct served_import {
    struct spool_node *node;
    struct spool_rpc_reply *reply;
    uint32_t shard;
};

static void served_import_cb(void *arg, int status)
{
    struct served_import *s = arg;
    struct spool_node *n = s->node;
    respond_slot(s->reply, status, status == 0 ? "" : spool_err_name(status),
                 n->closing ? 0 : spool_op_local_leader(n, s->shard), false);
    struct spool_reshard *r = n->reshard;
    free(s);
    if (r != NULL) {
        r->inflight--;
        maybe_free(r);
    }
}

static void serve_import(struct spool_node *n, const void *body, size_t len,
                         struct spool_rpc_reply *reply)
{
    Spool__SlotImportRequest *q = spool__slot_import_request__unpack(NULL, len, body);
    if (q == NULL || q->shard >= SPOOL_MAX_SHARDS) {
        if (q)
            spool__slot_import_request__free_unpacked(q, NULL);
        respond_slot(reply, SPOOL_EINVAL, "bad slot import request", 0, false);
        return;
    }
    uint32_t shard = q->shard;
    struct spool_shard *sh = n->closing ? NULL : spool_node_local_shard(n, shard);
    struct spool_reshard *r = n->reshard;
    if (sh == NULL || !spool_shard_is_leader(sh) || r == NULL || r->closing) {
        spool__slot_import_request__free_unpacked(q, NULL);
        respond_slot(reply, SPOOL_ENOTLEADER, "not the shard's leader",
                     shard < n->placement.shards ? spool_op_local_leader(n, shard) : 0, false);
        return;
    }
    struct served_import *s = malloc(sizeof *s);
    int rc = SPOOL_ENOMEM;
    struct spool_err err;
    if (s != NULL) {
        *s = (struct served_import){n, reply, shard};
        rc = spool_shard_propose_control(sh, q->fields.data, q->fields.len, served_import_cb, s,
                                         &err);
    }
    spool__slot_import_request__free_unpacked(q, NULL);
    if (rc != 0) {
        free(s);
        respond_slot(reply, rc, spool_err_name(rc), spool_op_local_leader(n, shard), false);
        return;
    }
    r->inflight++;
}

void spool_reshard_serve(struct spool_node *n, uint32_t method, const void *body, size_t len,
                         struct spool_rpc_reply *reply)
{
    if (method == SPOOL_METHOD_SLOT_EXPORT)
        serve_export(n, body, len, reply);
    else
        serve_import(n, body, len, reply);
}

/* ---- the driver (on the metadata leader) ---- */

static struct spool_slot_map *map_copy(const struct spool_slot_map *map)
{
    struct spool_slot_map *c = malloc(sizeof *c);
    if (c != NULL)
        *c = *map;
    return c;
}

static void step_proposed_cb(void *arg, int status)
{
    struct spool_reshard *r = arg;
    r->busy = false;
    r->inflight--;
    if (status != 0 && !r->closing)
        SPOOL_WARN("reshard.propose_failed", "code=%s", spool_err_name(status));
    maybe_free(r);
}

static void propose_step(struct spool_reshard *r, const struct spool_slot_map *next,
                         const char *what)
{
    struct spool_node *n = r->node;
    r->busy = true;
    r->inflight++;
    int rc = spool_meta_propose(n->meta, next, step_proposed_cb, r);
    if (rc != 0) {
        r->busy = false;
        r->inflight--;
        return;
    }
    SPOOL_INFO("reshard.step", "step=%s from=%u to=%u slots=%u epoch=%llu", what, next->move_from,
               next->move_to, next->move_phase ? spool_slot_count(next->move_slots) : 0,
               (unsigned long long)spool_meta_map(n->meta)->epoch + 1);
}

struct step_call {
    struct spool_reshard *r;
    uint64_t epoch; /* of the map the step was made for */
};

/* The copy is done (or the drop applied): the next map, if the map did not change meanwhile. */
static void step_result(struct step_call *c, int status, bool done)
{
    struct spool_reshard *r = c->r;
    struct spool_node *n = r->node;
    r->busy = false;
    r->inflight--;
    r->last_status = status;
    if (status == 0 && done && !r->closing && n->meta != NULL &&
        spool_meta_is_leader(n->meta) && spool_meta_map(n->meta)->epoch == c->epoch) {
        const struct spool_slot_map *map = spool_meta_map(n->meta);
        struct spool_slot_map *next = map_copy(map);
        if (next != NULL) {
            if (map->move_phase == SPOOL_MOVE_COPY) {
                for (uint32_t i = 0; i < SPOOL_SLOTS; i++)
                    if (spool_slot_bit(map->move_slots, i))
                        next->p.slot_shard[i] = (uint16_t)map->move_to;
                next->move_phase = SPOOL_MOVE_DROP;
                propose_step(r, next, "flip");
            } else {
                next->move_phase = SPOOL_MOVE_NONE;
                next->move_from = next->move_to = 0;
                memset(next->move_slots, 0, sizeof next->move_slots);
                propose_step(r, next, "dropped");
            }
            free(next);
        }
    }
    free(c);
    maybe_free(r);
}

static void export_reply_cb(void *arg, int status, const struct spool_err *err, const void *body,
                            size_t len)
{
    (void)err;
    struct step_call *c = arg;
    struct spool_node *n = c->r->node;
    const struct spool_slot_map *map = n->meta ? spool_meta_map(n->meta) : NULL;
    bool done = false;
    if (status == 0) {
        Spool__SlotReply *r = spool__slot_reply__unpack(NULL, len, body);
        if (r == NULL || r->status == NULL) {
            status = SPOOL_ECORRUPT;
        } else {
            status = r->status->code;
            done = r->done;
            if (r->status->leader_hint != 0 && map != NULL && !n->closing &&
                map->move_from < SPOOL_MAX_SHARDS)
                n->leader_hint[map->move_from] = r->status->leader_hint;
        }
        if (r)
            spool__slot_reply__free_unpacked(r, NULL);
    } else if (map != NULL && !n->closing && status != SPOOL_ECLOSED) {
        n->leader_hint[map->move_from] = 0;
    }
    step_result(c, status, done);
}

static void drop_done_cb(void *arg, int status)
{
    step_result(arg, status, true);
}

/* A step in flight: `busy` until its one callback (step_result) or step_abort. */
static struct step_call *step_start(struct spool_reshard *r, const struct spool_slot_map *map)
{
    struct step_call *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    *c = (struct step_call){r, map->epoch};
    r->busy = true;
    r->inflight++;
    return c;
}

/* The step could not be sent: nothing will call back. */
static void step_abort(struct step_call *c)
{
    c->r->busy = false;
    c->r->inflight--;
    free(c);
}

static void copy_step(struct spool_reshard *r, const struct spool_slot_map *map)
{
    struct spool_node *n = r->node;
    struct step_call *c = step_start(r, map);
    if (c == NULL)
        return;
    struct spool_shard *sh = spool_node_local_shard(n, map->move_from);
    if (sh != NULL && spool_shard_is_leader(sh)) {
        bool done = false;
        int rc = export_poll(n, map->move_from, map->move_to, map->move_slots, &done);
        step_result(c, rc, done);
        return;
    }
    Spool__SlotExportRequest q = SPOOL__SLOT_EXPORT_REQUEST__INIT;
    q.from = map->move_from;
    q.to = map->move_to;
    q.slots.data = (uint8_t *)map->move_slots;
    q.slots.len = SPOOL_SLOT_BITMAP_BYTES;
    uint8_t buf[SPOOL_SLOT_BITMAP_BYTES + 32];
    size_t len = spool__slot_export_request__pack(&q, buf);
    uint64_t target = spool_node_route_target(n, map->move_from, r->attempt++);
    if (target == 0 || n->rpc == NULL ||
        spool_rpc_call(n->rpc, target, SPOOL_METHOD_SLOT_EXPORT, buf, len,
                       EXPORT_CALL_TIMEOUT_MS, export_reply_cb, c) != 0) {
        step_abort(c);
    }
}

static void drop_step(struct spool_reshard *r, const struct spool_slot_map *map)
{
    struct spool_node *n = r->node;
    struct step_call *c = step_start(r, map);
    if (c == NULL)
        return;
    if (fence_call(n, map->move_from, map->move_slots, true, true, r->attempt++, drop_done_cb,
                   c) != 0) {
        step_abort(c);
    }
}

static uint32_t slots_left(const struct spool_slot_map *map)
{
    if (map->change != SPOOL_CHANGE_SHARDS)
        return 0;
    uint32_t left = 0;
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++)
        left += map->p.slot_shard[i] != map->slot_target[i];
    return left;
}

static void tick_cb(uv_timer_t *t)
{
    struct spool_reshard *r = t->data;
    struct spool_node *n = r->node;
    if (r->busy || r->closing || n->closing || n->meta == NULL || !spool_meta_is_leader(n->meta))
        return;
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    if (map->epoch == 0 || map->change != SPOOL_CHANGE_SHARDS)
        return;
    uint64_t now = uv_now(n->loop);
    if (map->epoch != r->progress_epoch) {
        r->progress_epoch = map->epoch;
        r->progress_ms = now;
    } else if (now - r->progress_ms >= STALL_LOG_MS) {
        r->progress_ms = now;
        SPOOL_WARN("reshard.waiting", "epoch=%llu phase=%u from=%u to=%u slots_left=%u last=%s",
                   (unsigned long long)map->epoch, map->move_phase, map->move_from, map->move_to,
                   slots_left(map), spool_err_name(r->last_status));
    }
    if (map->move_phase == SPOOL_MOVE_COPY) {
        copy_step(r, map);
        return;
    }
    if (map->move_phase == SPOOL_MOVE_DROP) {
        drop_step(r, map);
        return;
    }
    struct spool_slot_map *next = map_copy(map);
    if (next == NULL)
        return;
    uint32_t first = SPOOL_SLOTS;
    for (uint32_t i = 0; i < SPOOL_SLOTS && first == SPOOL_SLOTS; i++)
        if (map->p.slot_shard[i] != map->slot_target[i])
            first = i;
    if (first == SPOOL_SLOTS) {
        SPOOL_INFO("reshard.done", "shards=%u was=%u", map->p.shards, map->shards_before);
        next->change = SPOOL_CHANGE_NONE;
        next->shards_before = 0;
        memset(next->slot_target, 0, sizeof next->slot_target);
        propose_step(r, next, "finish");
        free(next);
        return;
    }
    uint32_t a = map->p.slot_shard[first], b = map->slot_target[first];
    /* The new shard's group must have a leader before slots move to it (as far as this node
     * can tell: its local replica; otherwise the copy's import calls wait for one). */
    struct spool_shard *bsh = n->shards[b];
    if (bsh != NULL && !bsh->closing && spool_shard_leader(bsh) == 0) {
        free(next);
        return;
    }
    memset(next->move_slots, 0, sizeof next->move_slots);
    uint32_t count = 0;
    for (uint32_t i = first; i < SPOOL_SLOTS && count < SPOOL_RESHARD_MOVE_SLOTS; i++)
        if (map->p.slot_shard[i] == a && map->slot_target[i] == b) {
            spool_slot_bit_set(next->move_slots, i);
            count++;
        }
    next->move_from = a;
    next->move_to = b;
    next->move_phase = SPOOL_MOVE_COPY;
    propose_step(r, next, "move");
    free(next);
}

/* ---- planning, status ---- */

int spool_reshard_plan_map(struct spool_slot_map *next, uint32_t shards, long *moved,
                           struct spool_err *err)
{
    uint32_t before = next->p.shards;
    long m = spool_placement_plan_shards(&next->p, shards, next->slot_target, err);
    if (m < 0)
        return err->code ? err->code : SPOOL_EINVAL;
    next->shards_before = before;
    next->change = SPOOL_CHANGE_SHARDS;
    next->change_node = 0;
    next->move_phase = SPOOL_MOVE_NONE;
    next->move_from = next->move_to = 0;
    memset(next->move_slots, 0, sizeof next->move_slots);
    memset(next->n_target, 0, sizeof next->n_target);
    if (moved)
        *moved = m;
    return 0;
}

long spool_node_plan_shards(const struct spool_node *n, uint32_t shards, struct spool_placement *out,
                            struct spool_err *err)
{
    *out = n->placement;
    uint16_t *target = malloc(SPOOL_SLOTS * sizeof *target);
    if (target == NULL) {
        spool_err_set(err, SPOOL_ENOMEM, "out of memory");
        return -1;
    }
    long moved = spool_placement_plan_shards(out, shards, target, err);
    free(target);
    return moved;
}

void spool_reshard_view_update(struct spool_node *n, const struct spool_slot_map *map)
{
    struct spool_reshard_view *v = &n->reshard_view;
    memset(v, 0, sizeof *v);
    if (map->change != SPOOL_CHANGE_SHARDS)
        return;
    v->running = true;
    v->shards_before = map->shards_before;
    v->slots_left = slots_left(map);
    v->move_phase = map->move_phase;
    v->move_from = map->move_from;
    v->move_to = map->move_to;
    v->move_count = map->move_phase ? spool_slot_count(map->move_slots) : 0;
}

void spool_node_reshard_status(const struct spool_node *n, struct spool_reshard_status *out)
{
    const struct spool_reshard_view *v = &n->reshard_view;
    memset(out, 0, sizeof *out);
    out->running = v->running;
    out->shards = n->placement.shards;
    out->shards_before = v->shards_before;
    out->slots_left = v->slots_left;
    out->move_phase = v->move_phase;
    out->move_from = v->move_from;
    out->move_to = v->move_to;
    out->move_slots = v->move_count;
}

uint32_t spool_node_shard_slots(const struct spool_node *n, uint32_t shard)
{
    uint32_t c = 0;
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++)
        c += n->placement.slot_shard[i] == shard;
    return c;
}

void spool_reshard_map_stale(struct spool_node *n)
{
    if (n->cfg.gateway_only)
        n->view.map_now = true;
}

/* ---- lifecycle ---- */

static void maybe_free(struct spool_reshard *r)
{
    if (!r->closing || r->inflight > 0)
        return;
    struct spool_node *n = r->node;
    n->reshard = NULL;
    free(r);
    n->pending_close--;
    spool_node_finish_close(n);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct spool_reshard *r = h->data;
    r->inflight--;
    maybe_free(r);
}

int spool_reshard_start(struct spool_node *n, struct spool_err *err)
{
    if (n->cfg.gateway_only)
        return 0;
    struct spool_reshard *r = calloc(1, sizeof *r);
    if (r == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "reshard");
    r->node = n;
    if (uv_timer_init(n->loop, &r->timer) != 0) {
        free(r);
        return spool_err_set(err, SPOOL_EIO, "reshard timer");
    }
    r->timer.data = r;
    uv_timer_start(&r->timer, tick_cb, TICK_MS, TICK_MS);
    n->reshard = r;
    return 0;
}

void spool_reshard_close(struct spool_node *n)
{
    struct spool_reshard *r = n->reshard;
    if (r == NULL || r->closing)
        return;
    r->closing = true;
    struct export_job *j = r->job;
    if (j != NULL) {
        r->job = NULL;
        /* The export reads the source store, which the shards close next: release it now. */
        if (j->x != NULL) {
            spool_slot_export_free(j->x);
            j->x = NULL;
        }
        if (j->waiting)
            j->abandoned = true;
        else
            job_free(j);
    }
    r->inflight++; /* the timer */
    n->pending_close++;
    uv_close((uv_handle_t *)&r->timer, timer_closed_cb);
}
