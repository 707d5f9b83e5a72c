/*
 * The metadata group (see meta.h): a Raft group whose state machine is the slot map.
 *
 * One owner per async operation: the raft instance closes through raft_close (its callback
 * releases the io and the transport), the duty timer through uv_close; the meta is freed when
 * both have reported. At most one proposal is in flight (`proposing`), completed by its apply
 * callback, whatever the status.
 */
#include "cluster/meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/dirs.h"
#include "cluster/entry_frame.h"
#include "common/log.h"

struct spool_meta {
    uint64_t node_id;
    struct spool_slot_map map;     /* applied state */
    struct spool_slot_map initial; /* from configuration, proposed as epoch 1 */
    struct raft_fsm fsm;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    uv_timer_t duty_timer;
    struct raft_apply apply;
    bool proposing, closing;
    int pending_close;
    spool_meta_map_cb on_map;
    void *cb_arg;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* --- slot map <-> proto ------------------------------------------------------------------- */

void spool_slot_map_to_proto(const struct spool_slot_map *m, Spool__SlotMap *p, uint8_t *bytes)
{
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        bytes[2 * i] = (uint8_t)(m->slot_shard[i] & 0xff);
        bytes[2 * i + 1] = (uint8_t)(m->slot_shard[i] >> 8);
    }
    p->epoch = m->epoch;
    p->shards = m->shards;
    p->slot_shard.data = bytes;
    p->slot_shard.len = 2 * SPOOL_SLOTS;
}

int spool_slot_map_from_proto(const Spool__SlotMap *p, struct spool_slot_map *m)
{
    if (p->slot_shard.len != 2 * SPOOL_SLOTS || p->shards == 0 || p->shards > SPOOL_MAX_SHARDS)
        return -1;
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        uint16_t s = (uint16_t)(p->slot_shard.data[2 * i] | (p->slot_shard.data[2 * i + 1] << 8));
        if (s >= p->shards)
            return -1;
        m->slot_shard[i] = s;
    }
    m->epoch = p->epoch;
    m->shards = p->shards;
    return 0;
}

static int encode_map(const struct spool_slot_map *map, void **buf, size_t *len)
{
    uint8_t bytes[2 * SPOOL_SLOTS];
    Spool__SlotMap sm = SPOOL__SLOT_MAP__INIT;
    Spool__MetaEntry e = SPOOL__META_ENTRY__INIT;
    spool_slot_map_to_proto(map, &sm, bytes);
    e.set_slot_map = &sm;
    return spool_entry_frame(&e.base, buf, len);
}

/* Applies a framed MetaEntry to the state; true if the map changed. */
static bool apply_payload(struct spool_meta *m, const void *buf, size_t len)
{
    const uint8_t *payload;
    size_t n;
    if (spool_entry_unframe(buf, len, &payload, &n) != 0) {
        SPOOL_ERROR("meta.bad_entry", "len=%zu", len);
        return false;
    }
    Spool__MetaEntry *e = spool__meta_entry__unpack(NULL, n, payload);
    bool changed = false;
    if (e == NULL || e->set_slot_map == NULL) {
        SPOOL_ERROR("meta.bad_entry", "len=%zu", len);
    } else if (e->set_slot_map->epoch > m->map.epoch) {
        struct spool_slot_map next;
        if (spool_slot_map_from_proto(e->set_slot_map, &next) == 0) {
            m->map = next;
            changed = true;
            SPOOL_INFO("meta.slot_map", "epoch=%llu shards=%u", (unsigned long long)next.epoch,
                       next.shards);
        } else {
            SPOOL_ERROR("meta.bad_slot_map", "epoch=%llu",
                        (unsigned long long)e->set_slot_map->epoch);
        }
    }
    if (e)
        spool__meta_entry__free_unpacked(e, NULL);
    return changed;
}

/* --- raft_fsm ----------------------------------------------------------------------------- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct spool_meta *m = fsm->data;
    *result = NULL;
    if (apply_payload(m, buf->base, buf->len) && m->on_map)
        m->on_map(m->cb_arg, &m->map);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct spool_meta *m = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL)
        return RAFT_NOMEM;
    if (encode_map(&m->map, &(*bufs)[0].base, &(*bufs)[0].len) != 0) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct spool_meta *m = fsm->data;
    if (apply_payload(m, buf->base, buf->len) && m->on_map)
        m->on_map(m->cb_arg, &m->map);
    raft_free(buf->base);
    return 0;
}

/* --- leader duty: the initial map ---------------------------------------------------------- */

static void proposal_applied_cb(struct raft_apply *req, int status, void *result)
{
    struct spool_meta *m = req->data;
    m->proposing = false;
    if (status != 0)
        SPOOL_WARN("meta.propose_failed", "msg=\"%s\"", raft_strerror(status));
}

static void duty_timer_cb(uv_timer_t *t)
{
    struct spool_meta *m = t->data;
    if (m->closing || m->proposing || m->map.epoch != 0 || raft_state(&m->raft) != RAFT_LEADER)
        return;
    struct raft_buffer buf;
    if (encode_map(&m->initial, &buf.base, &buf.len) != 0)
        return;
    m->apply.data = m;
    int rv = raft_apply(&m->raft, &m->apply, &buf, 1, proposal_applied_cb);
    if (rv != 0) {
        if (rv == RAFT_NOTLEADER)
            raft_free(buf.base); /* refused before libraft took the buffer */
        SPOOL_WARN("meta.propose_refused", "msg=\"%s\"", raft_strerror(rv));
        return;
    }
    m->proposing = true;
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static void part_closed(struct spool_meta *m)
{
    if (--m->pending_close > 0)
        return;
    raft_uv_close(&m->io);
    spool_mux_transport_close(&m->transport);
    void (*cb)(void *) = m->close_cb;
    void *arg = m->close_arg;
    free(m);
    if (cb)
        cb(arg);
}

static void raft_closed_cb(struct raft *r)
{
    part_closed(r->data);
}

static void timer_closed_cb(uv_handle_t *h)
{
    part_closed(h->data);
}

int spool_meta_init(struct spool_meta **out, uv_loop_t *loop, struct spool_mux *mux,
                    const struct spool_meta_config *cfg, struct spool_err *err)
{
    *out = NULL;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/meta/raft", cfg->data_dir);
    int rc = spool_mkdir_p(dir, err);
    if (rc != 0)
        return rc;
    struct spool_meta *m = calloc(1, sizeof *m);
    if (m == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "meta");
    const struct spool_placement *p = cfg->placement;
    m->node_id = cfg->node_id;
    m->on_map = cfg->on_map;
    m->cb_arg = cfg->cb_arg;
    m->initial.epoch = 1;
    m->initial.shards = p->shards;
    memcpy(m->initial.slot_shard, p->slot_shard, sizeof m->initial.slot_shard);
    m->fsm.version = 3;
    m->fsm.data = m;
    m->fsm.apply = fsm_apply;
    m->fsm.snapshot = fsm_snapshot;
    m->fsm.restore = fsm_restore;

    if (spool_mux_transport_init(mux, SPOOL_META_GROUP, &m->transport) != 0) {
        free(m);
        return spool_err_set(err, SPOOL_EIO, "meta: transport init failed");
    }
    int rv = raft_uv_init(&m->io, loop, dir, &m->transport);
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "meta: raft_uv_init: %s", m->io.errmsg);
        spool_mux_transport_close(&m->transport);
        free(m);
        return rc;
    }
    rv = raft_init(&m->raft, &m->io, &m->fsm, cfg->node_id, cfg->node_address);
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "meta: raft_init: %s", raft_errmsg(&m->raft));
        raft_uv_close(&m->io);
        spool_mux_transport_close(&m->transport);
        free(m);
        return rc;
    }
    m->raft.data = m;
    raft_set_election_timeout(&m->raft, (unsigned)cfg->election_timeout_ms);
    raft_set_heartbeat_timeout(&m->raft, (unsigned)cfg->heartbeat_ms);
    raft_set_pre_vote(&m->raft, true);
    raft_set_snapshot_threshold(&m->raft, 64);
    raft_set_snapshot_trailing(&m->raft, 64);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rv = 0;
    for (size_t i = 0; i < p->n_nodes && rv == 0; i++)
        rv = raft_configuration_add(&conf, p->nodes[i].id, p->nodes[i].address, RAFT_VOTER);
    if (rv == 0) {
        rv = raft_bootstrap(&m->raft, &conf);
        if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0;
    }
    raft_configuration_close(&conf);
    if (rv == 0)
        rv = raft_start(&m->raft);
    uv_timer_init(loop, &m->duty_timer);
    m->duty_timer.data = m;
    if (rv != 0) {
        rc = spool_err_set(err, SPOOL_EIO, "meta: start: %s", raft_errmsg(&m->raft));
        spool_meta_close(m, NULL, NULL); /* released by the loop */
        return rc;
    }
    uint64_t every = cfg->heartbeat_ms ? cfg->heartbeat_ms : 100;
    uv_timer_start(&m->duty_timer, duty_timer_cb, every, every);
    *out = m;
    return 0;
}

void spool_meta_close(struct spool_meta *m, void (*cb)(void *arg), void *arg)
{
    m->closing = true;
    m->close_cb = cb;
    m->close_arg = arg;
    m->pending_close = 2;
    uv_close((uv_handle_t *)&m->duty_timer, timer_closed_cb);
    raft_close(&m->raft, raft_closed_cb);
}

const struct spool_slot_map *spool_meta_map(const struct spool_meta *m)
{
    return &m->map;
}

uint64_t spool_meta_leader(struct spool_meta *m)
{
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&m->raft, &id, &addr);
    return id;
}
