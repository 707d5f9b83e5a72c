/*
 * A shard replica (see shard.h). Owns, in init order: the store, the state machine, the mux
 * transport, the raft_uv io, the raft instance and the batch; close releases them in reverse
 * once libraft's close callback says it is done with the io and the transport.
 */
#include "cluster/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/dirs.h"
#include "cluster/raft_aio.h"
#include "cluster/raft_prezero.h"
#include "common/log.h"

static void raft_closed_cb(struct raft *r);
static void timer_closed_cb(uv_handle_t *h);

/* Retention is applied through the log so every replica trims the same records. */
static void retention_tick_cb(uv_timer_t *t)
{
    struct spool_shard *s = t->data;
    if (!s->closing && raft_state(&s->raft) == RAFT_LEADER)
        spool_batch_retention(&s->batch);
}

int spool_shard_init(struct spool_shard **out, uv_loop_t *loop, struct spool_mux *mux,
                     const struct spool_shard_config *cfg, struct spool_err *err)
{
    char raft_dir[1024], store_dir[1024];
    *out = NULL;
    struct spool_shard *s = calloc(1, sizeof *s);
    if (s == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "shard %u", cfg->id);
    s->id = cfg->id;
    s->node_id = cfg->node_id;
    snprintf(raft_dir, sizeof raft_dir, "%s/shard-%u/raft", cfg->data_dir, cfg->id);
    snprintf(store_dir, sizeof store_dir, "%s/shard-%u/store", cfg->data_dir, cfg->id);
    int rc = spool_mkdir_p(raft_dir, err);
    if (rc == 0)
        rc = spool_mkdir_p(store_dir, err);
    if (rc != 0) {
        free(s);
        return rc;
    }

    struct spool_store_config sc = cfg->store;
    sc.dir = store_dir;
    rc = spool_store_open(&s->store, &sc, err);
    if (rc != 0) {
        free(s);
        return spool_err_wrap(err, "shard %u store", cfg->id);
    }
    rc = spool_fsm_init(&s->fsm, s->store, cfg->dedup_window_ms, err);
    if (rc != 0)
        goto err_store;
    if ((rc = spool_fsm_set_conv_limits(&s->fsm, &cfg->conv, err)) != 0) {
        spool_fsm_close(&s->fsm);
        goto err_store;
    }
    s->fsm.raft = &s->raft;
    s->fsm.on_records = cfg->on_records;
    s->fsm.on_restored = cfg->on_restored;
    s->fsm.cb_arg = cfg->cb_arg;

    if (spool_mux_transport_init(mux, cfg->id, &s->transport) != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "shard %u: transport init failed", cfg->id);
        goto err_fsm;
    }
    /* Log segments prepared as written zeros: libraft's NOWAIT log writes then complete from the
     * loop instead of a thread-pool hand-over per new 4 KiB block (raft_prezero.c). */
    spool_raft_prezero_enable(true);
    /* A closed segment's AIO context destroyed off the loop: io_destroy waits for an RCU grace
     * period, tens of ms with the whole node's loop stopped (raft_aio.c). */
    spool_raft_aio_enable(true);
    int rv = raft_uv_init(&s->io, loop, raft_dir, &s->transport);
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "shard %u: raft_uv_init: %s", cfg->id, s->io.errmsg);
        goto err_transport;
    }
    rv = raft_init(&s->raft, &s->io, &s->fsm.raft_fsm, cfg->node_id, cfg->node_address);
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "shard %u: raft_init: %s", cfg->id,
                           raft_errmsg(&s->raft));
        goto err_io;
    }
    s->raft.data = s;
    raft_set_election_timeout(&s->raft, (unsigned)cfg->election_timeout_ms);
    raft_set_heartbeat_timeout(&s->raft, (unsigned)cfg->heartbeat_ms);
    uint64_t threshold = cfg->snapshot_threshold < 64 ? 64 : cfg->snapshot_threshold;
    uint64_t trailing = cfg->snapshot_trailing < 64 ? 64 : cfg->snapshot_trailing;
    raft_set_snapshot_threshold(&s->raft, (unsigned)threshold);
    raft_set_snapshot_trailing(&s->raft, (unsigned)trailing);
    raft_set_pre_vote(&s->raft, true);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rv = 0;
    for (size_t i = 0; i < cfg->n_voters && rv == 0; i++)
        rv = raft_configuration_add(&conf, cfg->voters[i].id, cfg->voters[i].address, RAFT_VOTER);
    /* No voters: a replica added by a membership change. It must not bootstrap (an entry 1
     * holding an empty configuration would pass for the leader's entry 1); it starts empty and
     * the leader fills it. */
    if (rv == 0 && cfg->n_voters > 0) {
        rv = raft_bootstrap(&s->raft, &conf);
        if (rv == 0)
            SPOOL_INFO("shard.bootstrap", "shard=%u voters=%zu", cfg->id, cfg->n_voters);
        else if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0;
    }
    raft_configuration_close(&conf);
    if (rv == 0)
        rv = raft_start(&s->raft);
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "shard %u: start: %s", cfg->id, raft_errmsg(&s->raft));
        goto err_raft;
    }
    s->election_timeout_ms = cfg->election_timeout_ms;
    uv_timer_init(loop, &s->transfer_timer);
    s->transfer_timer.data = s;
    uv_timer_init(loop, &s->retention_timer);
    s->retention_timer.data = s;
    rc = spool_batch_init(&s->batch, loop, &s->raft);
    s->fsm.take_result = spool_batch_take_result;
    s->fsm.take_arg = &s->batch;
    if (rc != 0) {
        spool_err_set(err, rc, "shard %u: batch timer", cfg->id);
        s->closing = true;
        s->raft_closing = true;
        s->pending_close = 3;
        s->close_cb = NULL;
        uv_close((uv_handle_t *)&s->transfer_timer, timer_closed_cb);
        uv_close((uv_handle_t *)&s->retention_timer, timer_closed_cb);
        raft_close(&s->raft, raft_closed_cb);
        return rc;
    }
    uv_timer_start(&s->retention_timer, retention_tick_cb, SPOOL_RETENTION_TICK_MS,
                   SPOOL_RETENTION_TICK_MS);
    SPOOL_INFO("shard.started", "shard=%u applied=%llu", cfg->id,
               (unsigned long long)spool_store_applied_index(s->store));
    *out = s;
    return 0;

err_raft:
    /* raft_close is asynchronous: the loop releases (and frees) the rest afterwards. */
    s->closing = true;
    s->raft_closing = true;
    s->pending_close = 1;
    s->close_cb = NULL;
    raft_close(&s->raft, raft_closed_cb);
    return rc;
err_io:
    raft_uv_close(&s->io);
err_transport:
    spool_mux_transport_close(&s->transport);
err_fsm:
    spool_fsm_close(&s->fsm);
err_store:
    spool_store_close(s->store);
    free(s);
    return rc;
}

static void shard_release(struct spool_shard *s)
{
    raft_uv_close(&s->io);
    spool_mux_transport_close(&s->transport);
    spool_fsm_close(&s->fsm);
    struct spool_err err;
    if (spool_store_sync(s->store, &err) != 0)
        SPOOL_ERROR("shard.sync_failed", "shard=%u msg=\"%s\"", s->id, err.msg);
    spool_store_close(s->store);
    s->store = NULL;
    SPOOL_INFO("shard.closed", "shard=%u", s->id);
    if (s->close_cb)
        s->close_cb(s);
    free(s);
}

static void part_closed(struct spool_shard *s)
{
    if (--s->pending_close == 0)
        shard_release(s);
}

static void raft_closed_cb(struct raft *r)
{
    part_closed(r->data);
}

static void batch_closed_cb(struct spool_batch *b)
{
    part_closed((struct spool_shard *)((char *)b - offsetof(struct spool_shard, batch)));
}

static void timer_closed_cb(uv_handle_t *h)
{
    part_closed(h->data);
}

static void close_raft(struct spool_shard *s)
{
    if (s->raft_closing)
        return;
    s->raft_closing = true;
    s->pending_close = 4;
    uv_close((uv_handle_t *)&s->transfer_timer, timer_closed_cb);
    uv_close((uv_handle_t *)&s->retention_timer, timer_closed_cb);
    spool_batch_close(&s->batch, batch_closed_cb);
    raft_close(&s->raft, raft_closed_cb); /* fires a still pending transfer's callback */
}

static void transfer_timeout_cb(uv_timer_t *t)
{
    struct spool_shard *s = t->data;
    SPOOL_WARN("shard.transfer_timeout", "shard=%u", s->id);
    close_raft(s);
}

static void transfer_done_cb(struct raft_transfer *req)
{
    struct spool_shard *s = req->data;
    if (s->raft_closing)
        return;
    raft_id leader;
    const char *addr;
    raft_leader(&s->raft, &leader, &addr);
    SPOOL_INFO("shard.transferred", "shard=%u leader=%llu", s->id, (unsigned long long)leader);
    close_raft(s);
}

void spool_shard_close(struct spool_shard *s, void (*cb)(struct spool_shard *s))
{
    s->closing = true;
    s->close_cb = cb;
    if (raft_state(&s->raft) == RAFT_LEADER) {
        s->transfer.data = s;
        if (raft_transfer(&s->raft, &s->transfer, 0, transfer_done_cb) == 0) {
            uv_timer_start(&s->transfer_timer, transfer_timeout_cb, 2 * s->election_timeout_ms, 0);
            return;
        }
    }
    close_raft(s);
}

static void move_done_cb(struct raft_transfer *req)
{
    struct spool_shard *s = req->data;
    s->moving = false;
    if (!s->raft_closing)
        SPOOL_INFO("shard.moved", "shard=%u leader=%llu", s->id,
                   (unsigned long long)spool_shard_leader(s));
}

int spool_shard_transfer(struct spool_shard *s, uint64_t to)
{
    if (s->moving || raft_transferee(&s->raft) != 0)
        return SPOOL_EBUSY;
    if (!spool_shard_is_leader(s))
        return SPOOL_ENOTLEADER;
    s->move.data = s;
    int rv = raft_transfer(&s->raft, &s->move, to, move_done_cb);
    if (rv != 0) {
        SPOOL_WARN("shard.move_refused", "shard=%u to=%llu msg=\"%s\"", s->id,
                   (unsigned long long)to, raft_strerror(rv));
        return SPOOL_EINVAL;
    }
    s->moving = true;
    return 0;
}

bool spool_shard_is_leader(struct spool_shard *s)
{
    return !s->closing && raft_state(&s->raft) == RAFT_LEADER;
}

static void read_barrier_cb(struct raft_barrier *req, int status)
{
    struct spool_shard *s = req->data;
    s->read_barrier_pending = false;
    if (status == 0)
        s->reads_ready_term = s->read_barrier_term;
}

bool spool_shard_leader_reads_ready(struct spool_shard *s)
{
    if (!spool_shard_is_leader(s))
        return false;
    raft_term term = raft_current_term(&s->raft);
    if (s->reads_ready_term == term)
        return true;
    if (!s->read_barrier_pending) {
        s->read_barrier.data = s;
        s->read_barrier_term = term;
        int rv = raft_barrier(&s->raft, &s->read_barrier, read_barrier_cb);
        if (rv == 0)
            s->read_barrier_pending = true;
        else
            SPOOL_DEBUG("shard.read_barrier_refused", "shard=%u msg=\"%s\"", s->id,
                        raft_strerror(rv));
    }
    return false;
}

uint64_t spool_shard_leader(struct spool_shard *s)
{
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&s->raft, &id, &addr);
    return id;
}

/* --- membership changes ------------------------------------------------------------------- */

static void change_done_cb(struct raft_change *req, int status)
{
    struct spool_shard *s = req->data;
    s->changing = false;
    void (*cb)(void *, int) = s->change_cb;
    s->change_cb = NULL;
    if (status != 0)
        SPOOL_WARN("shard.reconfigure_failed", "shard=%u msg=\"%s\"", s->id,
                   raft_strerror(status));
    if (cb)
        cb(s->change_arg, status == 0 ? 0 : SPOOL_EBUSY);
}

static const struct raft_server *config_find(const struct raft_configuration *c, uint64_t id)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id)
            return &c->servers[i];
    return NULL;
}

int spool_shard_reconfigure(struct spool_shard *s, const struct spool_peer *voters, size_t n,
                            bool *done, void (*cb)(void *arg, int status), void *arg)
{
    *done = false;
    if (!spool_shard_is_leader(s))
        return SPOOL_ENOTLEADER;
    if (s->changing || s->moving || raft_transferee(&s->raft) != 0 ||
        s->raft.configuration_uncommitted_index != 0)
        return SPOOL_EBUSY;
    const struct raft_configuration *c = &s->raft.configuration;
    s->change.data = s;
    const char *op = NULL;
    uint64_t who = 0;
    int rv = 0;
    for (size_t i = 0; i < n && op == NULL; i++) {
        const struct raft_server *srv = config_find(c, voters[i].id);
        who = voters[i].id;
        if (srv == NULL) {
            op = "add";
            rv = raft_add(&s->raft, &s->change, who, voters[i].address, change_done_cb);
        } else if (srv->role != RAFT_VOTER) {
            op = "promote";
            rv = raft_assign(&s->raft, &s->change, who, RAFT_VOTER, change_done_cb);
        }
    }
    for (unsigned j = 0; j < c->n && op == NULL; j++) {
        who = c->servers[j].id;
        bool keep = false;
        for (size_t i = 0; i < n; i++)
            keep |= voters[i].id == who;
        if (keep)
            continue;
        if (who == s->node_id) {
            /* This replica leaves: a remaining voter leads first, then removes it. */
            uint64_t to = 0;
            for (size_t i = 0; i < n && to == 0; i++) {
                const struct raft_server *srv = config_find(c, voters[i].id);
                if (srv != NULL && srv->role == RAFT_VOTER)
                    to = voters[i].id;
            }
            if (to != 0 && spool_shard_transfer(s, to) == 0)
                SPOOL_INFO("shard.reconfigure", "shard=%u op=transfer to=%llu", s->id,
                           (unsigned long long)to);
            return SPOOL_ENOTLEADER;
        }
        op = "remove";
        rv = raft_remove(&s->raft, &s->change, who, change_done_cb);
    }
    if (op == NULL) {
        *done = true;
        return 0;
    }
    if (rv != 0) {
        SPOOL_WARN("shard.reconfigure_refused", "shard=%u op=%s node=%llu msg=\"%s\"", s->id, op,
                   (unsigned long long)who, raft_strerror(rv));
        return rv == RAFT_NOTLEADER ? SPOOL_ENOTLEADER : SPOOL_EBUSY;
    }
    s->changing = true;
    s->change_cb = cb;
    s->change_arg = arg;
    SPOOL_INFO("shard.reconfigure", "shard=%u op=%s node=%llu", s->id, op,
               (unsigned long long)who);
    return 0;
}

/* --- resharding control entries ----------------------------------------------------------- */

struct control_op {
    struct spool_batch_item item; /* first: done() gets it back */
    spool_shard_control_cb cb;
    void *arg;
    uint8_t fields[];
};

static void control_done(struct spool_batch_item *item, int status, const struct spool_err *err,
                         const struct spool_fsm_publish_result *res)
{
    (void)res;
    struct control_op *op = (struct control_op *)item;
    if (status != 0 && status != SPOOL_ECLOSED && status != SPOOL_ELIMIT) {
        SPOOL_DEBUG("shard.control_failed", "code=%s msg=\"%s\"", spool_err_name(status),
                    err != NULL ? err->msg : "");
        status = SPOOL_ENOTLEADER;
    }
    spool_shard_control_cb cb = op->cb;
    void *arg = op->arg;
    free(op);
    cb(arg, status);
}

int spool_shard_propose_control(struct spool_shard *sh, const uint8_t *fields, size_t len,
                                spool_shard_control_cb cb, void *arg, struct spool_err *err)
{
    if (sh->closing || sh->batch.closing)
        return spool_err_set(err, SPOOL_ECLOSED, "shard %u closing", sh->id);
    struct control_op *op = malloc(sizeof *op + (len ? len : 1));
    if (op == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "shard %u: control entry of %zu bytes", sh->id, len);
    if (len > 0)
        memcpy(op->fields, fields, len);
    op->item = (struct spool_batch_item){
        .req = op->fields, .req_len = len, .done = control_done, .control = true};
    op->cb = cb;
    op->arg = arg;
    /* Not leading: the queue's proposal fails with RAFT_NOTLEADER on the next loop turn, which
     * completes it as SPOOL_ENOTLEADER (never from inside this call). */
    spool_batch_submit(&sh->batch, &op->item);
    return 0;
}
