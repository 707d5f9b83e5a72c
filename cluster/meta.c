/*
 * The metadata group (see meta.h): a Raft group whose state machine is the cluster map.
 *
 * One owner per async operation: the raft instance closes through raft_close (its callback
 * releases the io and the transport), the duty timer through uv_close; the meta is freed when
 * both have reported. At most one proposal is in flight (`proposing`), completed by its apply
 * callback, whatever the status; at most one voter change (`changing`), completed by libraft's
 * change callback (raft_close fires it too).
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
    bool join;
    struct spool_slot_map map;     /* applied state */
    struct spool_slot_map initial; /* from configuration, proposed as epoch 1 */
    struct raft_fsm fsm;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    uv_timer_t duty_timer;
    struct raft_apply apply;
    struct raft_change change;     /* voters following the map */
    struct raft_transfer transfer; /* leaving the group: hand the leadership over first */
    bool proposing, changing, transferring, closing;
    spool_meta_propose_cb propose_cb;
    void *propose_arg;
    int pending_close;
    spool_meta_map_cb on_map;
    void *cb_arg;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* --- cluster map <-> proto ----------------------------------------------------------------- */

struct map_proto {
    Spool__SlotMap sm; /* first: the pointer handed out */
    uint8_t bytes[2 * SPOOL_SLOTS];
    uint8_t target_bytes[2 * SPOOL_SLOTS];
    uint8_t move_bytes[SPOOL_SLOT_BITMAP_BYTES];
    Spool__Member members[SPOOL_MAX_NODES];
    Spool__Member *member_ptrs[SPOOL_MAX_NODES];
    Spool__ShardReplicas shards[SPOOL_MAX_SHARDS];
    Spool__ShardReplicas *shard_ptrs[SPOOL_MAX_SHARDS];
};

Spool__SlotMap *spool_slot_map_proto_new(const struct spool_slot_map *m)
{
    struct map_proto *mp = malloc(sizeof *mp);
    if (mp == NULL)
        return NULL;
    const struct spool_placement *p = &m->p;
    spool__slot_map__init(&mp->sm);
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        mp->bytes[2 * i] = (uint8_t)(p->slot_shard[i] & 0xff);
        mp->bytes[2 * i + 1] = (uint8_t)(p->slot_shard[i] >> 8);
    }
    mp->sm.epoch = m->epoch;
    mp->sm.shards = p->shards;
    mp->sm.slot_shard.data = mp->bytes;
    mp->sm.slot_shard.len = 2 * SPOOL_SLOTS;
    mp->sm.replicas_wanted = p->wanted;
    mp->sm.change = m->change;
    mp->sm.change_node = m->change_node;
    if (m->change == SPOOL_CHANGE_SHARDS) {
        for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
            mp->target_bytes[2 * i] = (uint8_t)(m->slot_target[i] & 0xff);
            mp->target_bytes[2 * i + 1] = (uint8_t)(m->slot_target[i] >> 8);
        }
        mp->sm.slot_target.data = mp->target_bytes;
        mp->sm.slot_target.len = 2 * SPOOL_SLOTS;
        mp->sm.shards_before = m->shards_before;
        mp->sm.move_phase = m->move_phase;
        mp->sm.move_from = m->move_from;
        mp->sm.move_to = m->move_to;
        if (m->move_phase != SPOOL_MOVE_NONE) {
            memcpy(mp->move_bytes, m->move_slots, sizeof mp->move_bytes);
            mp->sm.move_slots.data = mp->move_bytes;
            mp->sm.move_slots.len = SPOOL_SLOT_BITMAP_BYTES;
        }
    }
    for (size_t i = 0; i < p->n_nodes; i++) {
        spool__member__init(&mp->members[i]);
        mp->members[i].id = p->nodes[i].id;
        mp->members[i].address = (char *)p->nodes[i].address;
        mp->member_ptrs[i] = &mp->members[i];
    }
    mp->sm.n_nodes = p->n_nodes;
    mp->sm.nodes = mp->member_ptrs;
    if (p->n_nodes > 0) {
        for (uint32_t s = 0; s < p->shards; s++) {
            spool__shard_replicas__init(&mp->shards[s]);
            mp->shards[s].n_ids = p->n_replicas[s];
            mp->shards[s].ids = (uint64_t *)p->replica[s];
            if (m->change == SPOOL_CHANGE_ADD || m->change == SPOOL_CHANGE_REMOVE) {
                mp->shards[s].n_target = m->n_target[s];
                mp->shards[s].target = (uint64_t *)m->target[s];
            }
            mp->shard_ptrs[s] = &mp->shards[s];
        }
        mp->sm.n_replicas = p->shards;
        mp->sm.replicas = mp->shard_ptrs;
    }
    return &mp->sm;
}

void spool_slot_map_proto_free(Spool__SlotMap *p)
{
    free(p); /* the map_proto it is the first member of */
}

static int peer_cmp(const void *a, const void *b)
{
    const struct spool_peer *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id ? 1 : 0;
}

static bool ids_valid(const struct spool_placement *p, const uint64_t *ids, size_t n)
{
    if (n > SPOOL_MAX_REPLICAS)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (spool_placement_node_index(p, ids[i]) < 0)
            return false;
        for (size_t j = 0; j < i; j++)
            if (ids[j] == ids[i])
                return false;
    }
    return true;
}

int spool_slot_map_from_proto(const Spool__SlotMap *p, struct spool_slot_map *m)
{
    if (p->slot_shard.len != 2 * SPOOL_SLOTS || p->shards == 0 || p->shards > SPOOL_MAX_SHARDS ||
        p->n_nodes > SPOOL_MAX_NODES)
        return -1;
    memset(m, 0, sizeof *m);
    struct spool_placement *pl = &m->p;
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        uint16_t s = (uint16_t)(p->slot_shard.data[2 * i] | (p->slot_shard.data[2 * i + 1] << 8));
        if (s >= p->shards)
            return -1;
        pl->slot_shard[i] = s;
    }
    m->epoch = p->epoch;
    pl->shards = p->shards;
    if (p->n_nodes == 0)
        return 0; /* an old map: membership from configuration */
    for (size_t i = 0; i < p->n_nodes; i++) {
        const Spool__Member *mb = p->nodes[i];
        if (mb->id == 0 || mb->address == NULL || mb->address[0] == '\0' ||
            strlen(mb->address) >= SPOOL_ADDRESS_MAX)
            return -1;
        pl->nodes[i].id = mb->id;
        snprintf(pl->nodes[i].address, SPOOL_ADDRESS_MAX, "%s", mb->address);
    }
    pl->n_nodes = p->n_nodes;
    qsort(pl->nodes, pl->n_nodes, sizeof pl->nodes[0], peer_cmp);
    for (size_t i = 1; i < pl->n_nodes; i++)
        if (pl->nodes[i].id == pl->nodes[i - 1].id)
            return -1;
    pl->wanted = p->replicas_wanted;
    spool_placement_set_replicas(pl);
    if (p->n_replicas != p->shards || p->change > SPOOL_CHANGE_SHARDS)
        return -1;
    m->change = p->change;
    m->change_node = p->change_node;
    if (m->change == SPOOL_CHANGE_SHARDS) {
        if (p->slot_target.len != 2 * SPOOL_SLOTS || p->shards_before == 0 ||
            p->shards_before > p->shards || p->move_phase > SPOOL_MOVE_DROP ||
            (p->move_phase != SPOOL_MOVE_NONE &&
             (p->move_slots.len != SPOOL_SLOT_BITMAP_BYTES || p->move_from >= p->shards ||
              p->move_to >= p->shards)))
            return -1;
        for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
            uint16_t s = (uint16_t)(p->slot_target.data[2 * i] |
                                    (p->slot_target.data[2 * i + 1] << 8));
            if (s >= p->shards)
                return -1;
            m->slot_target[i] = s;
        }
        m->shards_before = p->shards_before;
        m->move_phase = p->move_phase;
        m->move_from = p->move_from;
        m->move_to = p->move_to;
        if (p->move_phase != SPOOL_MOVE_NONE)
            memcpy(m->move_slots, p->move_slots.data, SPOOL_SLOT_BITMAP_BYTES);
    }
    for (uint32_t s = 0; s < p->shards; s++) {
        const Spool__ShardReplicas *r = p->replicas[s];
        if (r->n_ids == 0 || !ids_valid(pl, r->ids, r->n_ids))
            return -1;
        pl->n_replicas[s] = (uint8_t)r->n_ids;
        memcpy(pl->replica[s], r->ids, r->n_ids * sizeof r->ids[0]);
        if (m->change != SPOOL_CHANGE_ADD && m->change != SPOOL_CHANGE_REMOVE)
            continue;
        if (r->n_target > 0 && !ids_valid(pl, r->target, r->n_target))
            return -1; /* no target: nothing (more) to do for this shard */
        m->n_target[s] = (uint8_t)r->n_target;
        if (r->n_target > 0)
            memcpy(m->target[s], r->target, r->n_target * sizeof r->target[0]);
    }
    return 0;
}

static int encode_map(const struct spool_slot_map *map, void **buf, size_t *len)
{
    Spool__SlotMap *sm = spool_slot_map_proto_new(map);
    if (sm == NULL)
        return SPOOL_ENOMEM;
    Spool__MetaEntry e = SPOOL__META_ENTRY__INIT;
    e.set_slot_map = sm;
    int rc = spool_entry_frame(&e.base, buf, len);
    spool_slot_map_proto_free(sm);
    return rc;
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
    struct spool_slot_map *next = NULL;
    if (e == NULL || e->set_slot_map == NULL) {
        SPOOL_ERROR("meta.bad_entry", "len=%zu", len);
    } else if (e->set_slot_map->epoch > m->map.epoch) {
        next = malloc(sizeof *next);
        if (next != NULL && spool_slot_map_from_proto(e->set_slot_map, next) == 0) {
            if (next->p.n_nodes == 0) { /* written before membership changes: configuration's */
                struct spool_placement p = m->initial.p;
                memcpy(p.slot_shard, next->p.slot_shard, sizeof p.slot_shard);
                p.shards = next->p.shards;
                next->p = p;
            }
            m->map = *next;
            changed = true;
            SPOOL_INFO("meta.slot_map", "epoch=%llu shards=%u nodes=%zu change=%u change_node=%llu "
                       "move_phase=%u move_from=%u move_to=%u",
                       (unsigned long long)next->epoch, next->p.shards, next->p.n_nodes,
                       next->change, (unsigned long long)next->change_node, next->move_phase,
                       next->move_from, next->move_to);
        } else {
            SPOOL_ERROR("meta.bad_slot_map", "epoch=%llu",
                        (unsigned long long)e->set_slot_map->epoch);
        }
    }
    free(next);
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

/* --- leader duties: the initial map, proposals, voters following the map ------------------ */

static void proposal_applied_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct spool_meta *m = req->data;
    m->proposing = false;
    if (status != 0)
        SPOOL_WARN("meta.propose_failed", "msg=\"%s\"", raft_strerror(status));
    spool_meta_propose_cb cb = m->propose_cb;
    void *arg = m->propose_arg;
    m->propose_cb = NULL;
    if (cb)
        cb(arg, status == 0 ? 0 : status == RAFT_LEADERSHIPLOST || status == RAFT_NOTLEADER
                                       ? SPOOL_ENOTLEADER
                                       : SPOOL_EIO);
}

static int propose(struct spool_meta *m, const struct spool_slot_map *map)
{
    if (m->closing || raft_state(&m->raft) != RAFT_LEADER)
        return SPOOL_ENOTLEADER;
    if (m->proposing)
        return SPOOL_EBUSY;
    struct raft_buffer buf;
    if (encode_map(map, &buf.base, &buf.len) != 0)
        return SPOOL_ENOMEM;
    m->apply.data = m;
    int rv = raft_apply(&m->raft, &m->apply, &buf, 1, proposal_applied_cb);
    if (rv != 0) {
        if (rv == RAFT_NOTLEADER)
            raft_free(buf.base); /* refused before libraft took the buffer */
        SPOOL_WARN("meta.propose_refused", "msg=\"%s\"", raft_strerror(rv));
        return rv == RAFT_NOTLEADER ? SPOOL_ENOTLEADER : SPOOL_EBUSY;
    }
    m->proposing = true;
    return 0;
}

int spool_meta_propose(struct spool_meta *m, const struct spool_slot_map *next,
                       spool_meta_propose_cb cb, void *arg)
{
    struct spool_slot_map *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return SPOOL_ENOMEM;
    *copy = *next;
    copy->epoch = m->map.epoch + 1;
    int rc = propose(m, copy);
    free(copy);
    if (rc == 0) {
        m->propose_cb = cb;
        m->propose_arg = arg;
    }
    return rc;
}

static void change_done_cb(struct raft_change *req, int status)
{
    struct spool_meta *m = req->data;
    m->changing = false;
    if (status != 0 && !m->closing)
        SPOOL_WARN("meta.voters_change_failed", "msg=\"%s\"", raft_strerror(status));
}

static void transfer_done_cb(struct raft_transfer *req)
{
    struct spool_meta *m = req->data;
    m->transferring = false;
}

/* One step towards "the group's voters are the map's nodes" (leader only). */
static void sync_voters(struct spool_meta *m)
{
    const struct spool_placement *p = &m->map.p;
    if (m->changing || m->transferring || p->n_nodes == 0 ||
        raft_transferee(&m->raft) != 0 ||
        m->raft.configuration_uncommitted_index != 0)
        return;
    const struct raft_configuration *c = &m->raft.configuration;
    int rv = 0;
    const char *what = NULL;
    bool transferring = false; /* a transfer is not a configuration change */
    uint64_t who = 0;
    m->change.data = m;
    for (size_t i = 0; i < p->n_nodes && what == NULL; i++) {
        const struct raft_server *srv = NULL;
        for (unsigned j = 0; j < c->n; j++)
            if (c->servers[j].id == p->nodes[i].id)
                srv = &c->servers[j];
        who = p->nodes[i].id;
        if (srv == NULL) {
            what = "add";
            rv = raft_add(&m->raft, &m->change, who, p->nodes[i].address, change_done_cb);
        } else if (srv->role != RAFT_VOTER) {
            what = "promote";
            rv = raft_assign(&m->raft, &m->change, who, RAFT_VOTER, change_done_cb);
        }
    }
    for (unsigned j = 0; j < c->n && what == NULL; j++) {
        who = c->servers[j].id;
        if (spool_placement_node_index(p, who) >= 0)
            continue;
        if (who == m->node_id) {
            /* Leaving: let a listed voter lead, which then removes this node. */
            uint64_t to = 0;
            for (unsigned k = 0; k < c->n && to == 0; k++)
                if (c->servers[k].role == RAFT_VOTER && c->servers[k].id != who &&
                    spool_placement_node_index(p, c->servers[k].id) >= 0)
                    to = c->servers[k].id;
            if (to == 0)
                return;
            what = "transfer";
            transferring = true;
            m->transfer.data = m;
            rv = raft_transfer(&m->raft, &m->transfer, to, transfer_done_cb);
            if (rv == 0)
                m->transferring = true;
            who = to;
        } else {
            what = "remove";
            rv = raft_remove(&m->raft, &m->change, who, change_done_cb);
        }
    }
    if (what == NULL)
        return;
    if (rv != 0) {
        SPOOL_DEBUG("meta.voters_refused", "op=%s node=%llu msg=\"%s\"", what,
                    (unsigned long long)who, raft_strerror(rv));
        return;
    }
    if (!transferring)
        m->changing = true;
    SPOOL_INFO("meta.voters", "op=%s node=%llu", what, (unsigned long long)who);
}

static void duty_timer_cb(uv_timer_t *t)
{
    struct spool_meta *m = t->data;
    if (m->closing || raft_state(&m->raft) != RAFT_LEADER)
        return;
    if (m->map.epoch == 0) {
        if (!m->proposing && !m->join)
            propose(m, &m->initial);
        return;
    }
    sync_voters(m);
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
    m->join = cfg->join;
    m->initial.epoch = 1;
    m->initial.p = *p;
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
    for (size_t i = 0; i < p->n_nodes && rv == 0 && !cfg->join; i++)
        rv = raft_configuration_add(&conf, p->nodes[i].id, p->nodes[i].address, RAFT_VOTER);
    if (rv == 0 && !cfg->join) {
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

bool spool_meta_is_leader(struct spool_meta *m)
{
    return !m->closing && raft_state(&m->raft) == RAFT_LEADER;
}

bool spool_meta_is_voter(struct spool_meta *m, uint64_t id)
{
    const struct raft_configuration *c = &m->raft.configuration_committed;
    if (m->raft.configuration_committed.n == 0)
        c = &m->raft.configuration;
    for (unsigned j = 0; j < c->n; j++)
        if (c->servers[j].id == id)
            return c->servers[j].role == RAFT_VOTER;
    return false;
}
