/*
 * The admin REST API (docs/admin.md), capability `admin`:
 *   GET  /v1/admin/cluster          nodes (reachable: probed over the cluster RPC), shards (this
 *                                   node's view, plus the leader's view of every replica when
 *                                   this node leads the shard), leader counts, slot-map epoch
 *   POST /v1/admin/rebalance        a leader-spreading pass here, and asks every storage node to
 *                                   run one (cluster/admin.h); answers with the local transfers
 *   GET  /v1/admin/channels/{name}  shard, slot, leader, first/last serial, the latest records
 *   POST   /v1/admin/nodes           {"id":N,"address":"host:port"}: add a storage node (it runs
 *                                   with --join); 202 once the metadata leader accepted it
 *   DELETE /v1/admin/nodes/{id}      remove a storage node (its replicas move first); 202
 *   POST   /v1/admin/shards          {"shards":N}: add shards (resharding, cluster/reshard.c); 202
 *                                   with the plan once the metadata leader accepted it
 * Membership changes and resharding run in the background (cluster/membership.c,
 * cluster/reshard.c): GET /v1/admin/cluster shows their progress under "membership" and
 * "resharding" (and every shard's slot count).
 * Cluster-wide endpoints need `admin` on every channel: the capability is checked against the
 * channel name "*", which only the pattern "*" matches. The channel endpoint needs `admin` on
 * that channel.
 */
#include <jansson.h>
#include <raft.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/admin.h"
#include "gateway/http_api_int.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/realtime.h"

#define ADMIN_PROBE_TIMEOUT_MS 500
#define ADMIN_LATEST_DEFAULT 5
#define ADMIN_LATEST_MAX 100

/* Node present and the caller holds `admin` cluster-wide; false after answering. */
static bool admit_cluster(struct spool_http_api *api, struct spool_http_req *req)
{
    if (api->node == NULL) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "no node");
        return false;
    }
    struct spool_principal p;
    spool_principal_init(&p);
    bool ok = spool_http_api_authorize(api, req, "*", SPOOL_CAP_ADMIN, &p) == 0;
    spool_principal_close(&p);
    return ok;
}

static const char *state_name(int state)
{
    switch (state) {
    case RAFT_LEADER: return "leader";
    case RAFT_FOLLOWER: return "follower";
    case RAFT_CANDIDATE: return "candidate";
    default: return "none";
    }
}

/* ---- GET /v1/admin/cluster ---- */

struct cluster_op {
    struct spool_http_api *api;
    struct spool_http_req *req;
};

/* One replica's progress: the leader's view (match index) when this node leads, this node's own
 * replica from its applied index, otherwise unknown (null). Lag is in Raft entries. */
static json_t *replica_json(struct spool_node *node, const struct spool_shard_status *st,
                            uint64_t id, uint64_t self)
{
    uint64_t match;
    if (spool_node_replica_match(node, st->shard, id, &match) && id != self)
        return json_pack("{s:I,s:I,s:I,s:s}", "id", (json_int_t)id, "matchIndex",
                         (json_int_t)match, "lag",
                         (json_int_t)(st->last_index > match ? st->last_index - match : 0),
                         "source", "leader");
    if (id == self && st->local_replica)
        return json_pack("{s:I,s:I,s:I,s:s}", "id", (json_int_t)id, "appliedIndex",
                         (json_int_t)st->applied_index, "lag",
                         (json_int_t)(st->commit_index > st->applied_index
                                          ? st->commit_index - st->applied_index : 0),
                         "source", "local");
    return json_pack("{s:I,s:n,s:s}", "id", (json_int_t)id, "lag", "source", "unknown");
}

static void on_members(void *arg, const struct spool_members *m)
{
    struct cluster_op *op = arg;
    struct spool_node *node = op->api->node;
    uint64_t self = op->api->opts->id;
    uint32_t shards = spool_node_shard_count(node), replicas = spool_node_replicas(node);
    struct spool_membership_status ms;
    spool_node_membership_status(node, &ms);
    unsigned leads[SPOOL_MAX_NODES] = {0};
    json_t *jshards = json_array();
    for (uint32_t s = 0; s < shards; s++) {
        struct spool_shard_status st;
        spool_node_shard_status(node, s, &st);
        json_t *ids = json_array(), *progress = json_array();
        for (uint32_t i = 0; i < spool_node_replica_count(node, s); i++) {
            uint64_t id = spool_node_replica(node, s, i);
            json_array_append_new(ids, json_integer((json_int_t)id));
            json_array_append_new(progress, replica_json(node, &st, id, self));
        }
        for (size_t i = 0; i < m->n; i++)
            leads[i] += st.leader_id == m->nodes[i].id;
        json_t *o = json_pack("{s:I,s:o,s:I,s:o,s:o,s:I}", "id", (json_int_t)s, "replicas", ids,
                              "home", (json_int_t)spool_node_replica(node, s, 0), "leader",
                              st.leader_id ? json_integer((json_int_t)st.leader_id) : json_null(),
                              "progress", progress, "slots",
                              (json_int_t)spool_node_shard_slots(node, s));
        uint64_t target[SPOOL_MAX_REPLICAS];
        size_t nt = spool_node_shard_target(node, s, target, SPOOL_MAX_REPLICAS);
        if (nt > 0) { /* a membership change is moving this shard's replicas */
            json_t *t = json_array();
            for (size_t i = 0; i < nt; i++)
                json_array_append_new(t, json_integer((json_int_t)target[i]));
            json_object_set_new(o, "movingTo", t);
        }
        if (st.local_replica) {
            json_object_set_new(o, "term", json_integer((json_int_t)st.term));
            json_object_set_new(o, "commitIndex", json_integer((json_int_t)st.commit_index));
            json_object_set_new(o, "lastIndex", json_integer((json_int_t)st.last_index));
            json_object_set_new(o, "localState", json_string(state_name(st.raft_state)));
        }
        json_array_append_new(jshards, o);
    }
    json_t *nodes = json_array();
    for (size_t i = 0; i < m->n; i++)
        json_array_append_new(nodes, json_pack("{s:I,s:s,s:s,s:b,s:b,s:I}", "id",
                                               (json_int_t)m->nodes[i].id, "address",
                                               m->nodes[i].address, "role", "storage", "self",
                                               m->nodes[i].self, "reachable",
                                               m->nodes[i].reachable, "leads",
                                               (json_int_t)leads[i]));
    uint64_t fair = m->n > 0 ? (shards + m->n - 1) / m->n : shards;
    const char *state = ms.change == SPOOL_CHANGE_ADD      ? "adding"
                        : ms.change == SPOOL_CHANGE_REMOVE ? "removing"
                        : ms.change == SPOOL_CHANGE_SHARDS ? "resharding"
                                                           : "idle";
    struct spool_reshard_status rs;
    spool_node_reshard_status(node, &rs);
    json_t *move = json_null();
    if (rs.running && rs.move_phase != SPOOL_MOVE_NONE)
        move = json_pack("{s:I,s:I,s:I,s:s}", "from", (json_int_t)rs.move_from, "to",
                         (json_int_t)rs.move_to, "slots", (json_int_t)rs.move_slots, "phase",
                         rs.move_phase == SPOOL_MOVE_COPY ? "copy" : "drop");
    json_t *resharding = json_pack("{s:s,s:I,s:o,s:I,s:o}", "state",
                                   rs.running ? "moving" : "idle", "shards",
                                   (json_int_t)rs.shards, "shardsBefore",
                                   rs.running ? json_integer((json_int_t)rs.shards_before)
                                              : json_null(),
                                   "slotsLeft", (json_int_t)rs.slots_left, "move", move);
    json_t *membership = json_pack("{s:s,s:o,s:I,s:o}", "state", state, "node",
                                   ms.change ? json_integer((json_int_t)ms.node) : json_null(),
                                   "shardsLeft", (json_int_t)ms.shards_left, "metaLeader",
                                   ms.meta_leader ? json_integer((json_int_t)ms.meta_leader)
                                                  : json_null());
    json_t *v = json_pack("{s:I,s:s,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "node", (json_int_t)self,
                          "role", op->api->opts->role, "slotMapEpoch",
                          (json_int_t)spool_node_slot_map_epoch(node), "replicasPerShard",
                          (json_int_t)replicas, "fairShare", (json_int_t)fair, "membership",
                          membership, "resharding", resharding, "nodes", nodes, "shards",
                          jshards);
    spool_http_respond_json(op->req, 200, v);
    free(op);
}

static void handle_cluster(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (!admit_cluster(api, req)) return;
    struct cluster_op *op = malloc(sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    *op = (struct cluster_op){api, req};
    int rv = spool_node_probe_members(api->node, ADMIN_PROBE_TIMEOUT_MS, on_members, op);
    if (rv != 0) {
        free(op);
        spool_http_api_respond_err(req, rv, "cluster probe refused");
    }
}

/* ---- POST /v1/admin/rebalance ---- */

static void handle_rebalance(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (!admit_cluster(api, req)) return;
    struct spool_leader_move moves[SPOOL_MAX_SHARDS];
    size_t n = spool_node_rebalance(api->node, true, moves, SPOOL_MAX_SHARDS);
    json_t *started = json_array();
    for (size_t i = 0; i < n && i < SPOOL_MAX_SHARDS; i++)
        json_array_append_new(started, json_pack("{s:I,s:I,s:I}", "shard",
                                                 (json_int_t)moves[i].shard, "from",
                                                 (json_int_t)api->opts->id, "to",
                                                 (json_int_t)moves[i].to));
    spool_http_respond_json(req, 202, json_pack("{s:I,s:o,s:b}", "node", (json_int_t)api->opts->id,
                                                "transfers", started, "peersAsked", 1));
}

/* ---- POST /v1/admin/nodes, DELETE /v1/admin/nodes/{id} ---- */

static void on_membership(void *arg, int status, const struct spool_err *err, uint64_t epoch)
{
    struct cluster_op *op = arg;
    if (status != 0)
        spool_http_api_respond_err(op->req, status, err && err->msg[0] ? err->msg : "refused");
    else
        spool_http_respond_json(op->req, 202, json_pack("{s:I,s:b}", "epoch", (json_int_t)epoch,
                                                        "accepted", 1));
    free(op);
}

static void membership_start(struct spool_http_api *api, struct spool_http_req *req,
                             uint32_t kind, uint64_t id, const char *address)
{
    struct cluster_op *op = malloc(sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    *op = (struct cluster_op){api, req};
    int rv = spool_node_membership_change(api->node, kind, id, address, on_membership, op);
    if (rv != 0) {
        free(op);
        spool_http_api_respond_err(req, rv, "membership change refused");
    }
}

static void handle_node_add(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (!admit_cluster(api, req)) return;
    json_error_t jerr;
    json_t *v = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    json_t *jid = json_object_get(v, "id"), *jaddr = json_object_get(v, "address");
    if (!json_is_object(v) || !json_is_integer(jid) || json_integer_value(jid) <= 0 ||
        !json_is_string(jaddr) || json_string_length(jaddr) == 0 ||
        json_string_length(jaddr) >= SPOOL_ADDRESS_MAX ||
        strchr(json_string_value(jaddr), ':') == NULL) {
        json_decref(v);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON,
                                 "want {\"id\": N > 0, \"address\": \"host:port\"} (the new "
                                 "node's id and --cluster-listen)");
        return;
    }
    char address[SPOOL_ADDRESS_MAX];
    snprintf(address, sizeof address, "%s", json_string_value(jaddr));
    uint64_t id = (uint64_t)json_integer_value(jid);
    json_decref(v);
    membership_start(api, req, SPOOL_CHANGE_ADD, id, address);
}

static void handle_node_remove(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (!admit_cluster(api, req)) return;
    const char *s = req->n_params > 0 ? req->params[0] : "";
    char *end = NULL;
    unsigned long long id = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || id == 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM, "node id must be an integer > 0");
        return;
    }
    membership_start(api, req, SPOOL_CHANGE_REMOVE, (uint64_t)id, NULL);
}

/* ---- POST /v1/admin/shards ---- */

struct reshard_op {
    struct spool_http_api *api;
    struct spool_http_req *req;
    json_t *plan; /* the answer's body, completed with the epoch */
};

static void on_reshard(void *arg, int status, const struct spool_err *err, uint64_t epoch)
{
    struct reshard_op *op = arg;
    if (status != 0) {
        json_decref(op->plan);
        spool_http_api_respond_err(op->req, status, err && err->msg[0] ? err->msg : "refused");
    } else {
        json_object_set_new(op->plan, "epoch", json_integer((json_int_t)epoch));
        spool_http_respond_json(op->req, 202, op->plan);
    }
    free(op);
}

static void handle_shards_add(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    if (!admit_cluster(api, req)) return;
    json_error_t jerr;
    json_t *v = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    json_t *js = json_object_get(v, "shards");
    if (!json_is_object(v) || !json_is_integer(js) || json_integer_value(js) <= 0 ||
        json_integer_value(js) > SPOOL_MAX_SHARDS) {
        json_decref(v);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON,
                                 "want {\"shards\": N} (the new shard count, 1..%d)",
                                 SPOOL_MAX_SHARDS);
        return;
    }
    uint32_t shards = (uint32_t)json_integer_value(js);
    json_decref(v);
    uint32_t before = spool_node_shard_count(api->node);
    struct spool_membership_status ms;
    spool_node_membership_status(api->node, &ms);
    if (ms.change != SPOOL_CHANGE_NONE) { /* the metadata leader would say so too */
        spool_http_respond_error(req, 409, SPOOL_HTTP_ECONFLICT, "%s",
                                 ms.change == SPOOL_CHANGE_SHARDS
                                     ? "shards are being added (resharding in progress)"
                                     : "a membership change is in progress");
        return;
    }
    struct spool_placement *plan = malloc(sizeof *plan);
    struct reshard_op *op = malloc(sizeof *op);
    if (plan == NULL || op == NULL) {
        free(plan);
        free(op);
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    /* The plan the metadata leader makes from the same map (this node's view of it). */
    struct spool_err err;
    long moved = spool_node_plan_shards(api->node, shards, plan, &err);
    if (moved < 0) {
        free(plan);
        free(op);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_REQUEST, "%s", err.msg);
        return;
    }
    json_t *added = json_array();
    for (uint32_t s = before; s < shards; s++) {
        json_t *ids = json_array();
        for (uint32_t i = 0; i < plan->n_replicas[s]; i++)
            json_array_append_new(ids, json_integer((json_int_t)plan->replica[s][i]));
        json_array_append_new(added, json_pack("{s:I,s:o}", "id", (json_int_t)s, "replicas", ids));
    }
    free(plan);
    *op = (struct reshard_op){api, req, NULL};
    op->plan = json_pack("{s:b,s:I,s:I,s:I,s:I,s:o}", "accepted", 1, "shards",
                         (json_int_t)shards, "shardsBefore", (json_int_t)before, "slotsToMove",
                         (json_int_t)moved, "slotsPerShard", (json_int_t)(SPOOL_SLOTS / shards),
                         "newShards", added);
    int rv = spool_node_membership_change(api->node, SPOOL_CHANGE_SHARDS, shards, NULL,
                                          on_reshard, op);
    if (rv != 0) {
        json_decref(op->plan);
        free(op);
        spool_http_api_respond_err(req, rv, "resharding refused");
    }
}

/* ---- GET /v1/admin/channels/{channel} ---- */

static void on_channel_read(void *arg, int status, const struct spool_err *err,
                            const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                            uint64_t last_seq)
{
    struct spool_api_op *op = arg;
    if (status != 0) {
        spool_http_api_respond_err(op->req, status, err != NULL ? err->msg : "read failed");
        free(op);
        return;
    }
    struct spool_node *node = op->api->node;
    uint32_t shard = spool_node_shard_of(node, op->channel);
    struct spool_shard_status st;
    spool_node_shard_status(node, shard, &st);
    json_t *latest = json_array();
    for (size_t i = n < op->limit ? n : op->limit; i > 0; i--) /* read newest first: list oldest first */
        json_array_append_new(latest, spool_rt_record_json(recs[i - 1]));
    uint64_t first = last_seq == 0 ? 0 : first_seq;
    json_t *v = json_pack("{s:s,s:I,s:I,s:o,s:I,s:I,s:I,s:n,s:o}", "channel", op->channel,
                          "shard", (json_int_t)shard, "slot",
                          (json_int_t)spool_node_slot_of(node, op->channel), "leader",
                          st.leader_id ? json_integer((json_int_t)st.leader_id) : json_null(),
                          "firstSerial", (json_int_t)first, "lastSerial", (json_int_t)last_seq,
                          "records", (json_int_t)(last_seq == 0 ? 0 : last_seq - first + 1),
                          "bytes", "latest", latest);
    spool_http_respond_json(op->req, 200, v);
    free(op);
}

static void handle_channel(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    struct spool_api_op *op = NULL;
    if (!spool_http_api_admit(api, req, SPOOL_CAP_ADMIN, &channel, &p)) goto out;
    char buf[24];
    long len = spool_http_query_get(req->query, "latest", buf, sizeof buf);
    char *end = NULL;
    unsigned long latest = len < 0 ? ADMIN_LATEST_DEFAULT : strtoul(buf, &end, 10);
    if (len == -2 || (len >= 0 && (len == 0 || *end != '\0' || latest > ADMIN_LATEST_MAX))) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "latest must be an integer from 0 to %d", ADMIN_LATEST_MAX);
        goto out;
    }
    if ((op = calloc(1, sizeof *op)) == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->api = api, op->req = req, op->channel = channel;
    op->read.channel = channel;
    op->read.backward = true;
    op->limit = latest;
    op->read.limit = latest > 0 ? latest : 1;
    int rv = spool_node_read(api->node, &op->read, on_channel_read, op);
    if (rv != 0) {
        spool_http_api_respond_err(req, rv, "read refused");
        goto out;
    }
    op = NULL;
out:
    free(op);
    spool_principal_close(&p);
}

int spool_http_admin_routes(struct spool_http_api *api, struct spool_http_router *r,
                            struct spool_err *err)
{
    int rv;
    if ((rv = spool_http_router_add(r, "GET", "/v1/admin/cluster", handle_cluster, api, err)) ||
        (rv = spool_http_router_add(r, "POST", "/v1/admin/rebalance", handle_rebalance, api, err)) ||
        (rv = spool_http_router_add(r, "GET", "/v1/admin/channels/{channel}", handle_channel, api, err)) ||
        (rv = spool_http_router_add(r, "POST", "/v1/admin/nodes", handle_node_add, api, err)) ||
        (rv = spool_http_router_add(r, "POST", "/v1/admin/shards", handle_shards_add, api, err)) ||
        (rv = spool_http_router_add(r, "DELETE", "/v1/admin/nodes/{id}", handle_node_remove, api,
                                    err)))
        return rv;
    return 0;
}
