/*
 * Presence over the realtime protocol (gateway/presence.h has the model): the presence and
 * presence.get messages, the members each connection entered, and the leaves of connections
 * that dropped: immediately when the client closed, else after presence_timeout_ms unless a
 * resume on this node adopts them first. Enters and updates are stamped with this node and its
 * incarnation, so that if this node dies its members leave all the same: the shard leaders do
 * that (cluster/presence_reaper.h).
 *
 * Parked members. A dropped connection's members wait for a resume in a registry of the
 * process, not of its loop: with --workers (gateway/workers.h) the resume of a connection cut on
 * loop A may land on any loop, since all share the client port. The registry (`parked`, under
 * one mutex) holds, per dropped connection, its member list and the rt_leave that owns the
 * timer; the timer stays on loop A. Whoever takes the list first owns it: the resume (on any
 * loop; the resumed connection keeps the id, so the members' key (clientId, connectionId) is
 * unchanged and nothing is republished), or loop A's timeout or close, which publish the leaves.
 * A timer that finds its list taken just frees its rt_leave. The members keep the host stamp of
 * loop A's node, which lives as long as the process (every loop closes together), so the
 * dead-node reaper has no reason to remove them.
 *
 * Claims. A resume often arrives before loop A has noticed the old connection's end (the client
 * saw the cut first): nothing is parked yet. So a resumed connection also registers a claim
 * (`claims`, same mutex): when a connection with the same id but another rt_conn ends later, on
 * any loop, it deposits its members in the claim instead of parking them. Only the claimer's
 * loop moves a deposit into its connection's list (claim_collect: before a presence message is
 * noted, and when the connection ends, which also removes the claim); a member already in the
 * list (the client entered again) keeps the newer entry. A resume on another *process* reaches
 * neither registry: there the client sends `enter` again (docs/protocol.md).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/presence_reaper.h"
#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/json_body.h"
#include "gateway/metrics.h"
#include "gateway/realtime_int.h"

void spool_rt_entered_free(struct rt_entered *e)
{
    while (e != NULL) {
        struct rt_entered *next = e->next;
        free(e->channel);
        free(e->client_id);
        free(e);
        e = next;
    }
}

struct rt_entered **spool_rt_entered_find(struct rt_entered **list, const char *channel,
                                        const char *client_id)
{
    for (; *list != NULL; list = &(*list)->next)
        if (strcmp((*list)->channel, channel) == 0 && strcmp((*list)->client_id, client_id) == 0)
            return list;
    return list;
}

/* Records an enter/update (upsert) or leave (remove) this connection is sending. */
static void entered_note(struct rt_conn *c, const char *channel, const char *client_id, bool leave)
{
    struct rt_entered **p = spool_rt_entered_find(&c->entered, channel, client_id);
    if (leave) {
        if (*p != NULL) {
            struct rt_entered *e = *p;
            *p = e->next;
            e->next = NULL;
            spool_rt_entered_free(e);
        }
        return;
    }
    if (*p != NULL)
        return;
    struct rt_entered *e = calloc(1, sizeof *e);
    if (e == NULL || (e->channel = strdup(channel)) == NULL ||
        (e->client_id = strdup(client_id)) == NULL) {
        spool_rt_entered_free(e);
        return;
    }
    *p = e;
}

/* Publishes (after checking) the leave of every member in `entered`; frees the list. */
void spool_rt_leave_all(struct spool_realtime *rt, const char *conn_id, struct rt_entered *entered,
                         int64_t died_at_ms)
{
    for (struct rt_entered *e = entered; e != NULL; e = e->next)
        if (spool_presence_leave(rt->node, e->channel, e->client_id, conn_id, e->serial,
                                 died_at_ms, RT_PRESENCE_SCAN_MAX) != 0)
            SPOOL_WARN("presence.leave_failed", "channel=%s err=nomem", e->channel);
    spool_rt_entered_free(entered);
}

/* ---- the process's parked members (see the top of the file) ---- */

struct parked {
    struct parked *next;
    const struct rt_leave *owner; /* compared, never dereferenced by another loop */
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    struct rt_entered *entered;
};

static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct parked *parked_list;

/* Takes the members parked for connection `id` (by `owner` only, when not NULL); NULL if none. */
static struct rt_entered *parked_take(const char *id, const struct rt_leave *owner)
{
    struct rt_entered *entered = NULL;
    struct parked *found = NULL;
    pthread_mutex_lock(&parked_lock);
    for (struct parked **p = &parked_list; *p != NULL; p = &(*p)->next) {
        if ((owner == NULL || (*p)->owner == owner) && strcmp((*p)->id, id) == 0) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&parked_lock);
    if (found != NULL) {
        entered = found->entered;
        free(found);
    }
    return entered;
}

/* ---- claims of resumed connections (see the top of the file) ---- */

struct rt_claim {
    struct rt_claim *prev, *next;
    const struct rt_conn *conn; /* the claimer (conn->claim is this); removed before it is freed */
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    struct rt_entered *deposit; /* members left by earlier incarnations, for conn's loop */
};

static struct rt_claim *claim_list; /* under parked_lock */

/* Moves `from` into *to; a member (channel, clientId) already in *to keeps that entry. */
static void entered_merge(struct rt_entered **to, struct rt_entered *from)
{
    while (from != NULL) {
        struct rt_entered *next = from->next;
        from->next = NULL;
        struct rt_entered **p = spool_rt_entered_find(to, from->channel, from->client_id);
        if (*p == NULL)
            *p = from;
        else
            spool_rt_entered_free(from);
        from = next;
    }
}

/* On c's loop: what was deposited for c joins c->entered; `end` also removes c's claim. Only
 * c's loop sets or clears c->claim, so a connection without one costs no lock. */
static void claim_collect(struct rt_conn *c, bool end)
{
    struct rt_claim *k = c->claim;
    if (k == NULL)
        return;
    pthread_mutex_lock(&parked_lock);
    struct rt_entered *deposit = k->deposit;
    k->deposit = NULL;
    if (end) {
        if (k->prev != NULL)
            k->prev->next = k->next;
        else
            claim_list = k->next;
        if (k->next != NULL)
            k->next->prev = k->prev;
    }
    pthread_mutex_unlock(&parked_lock);
    if (end) {
        c->claim = NULL;
        free(k);
    }
    entered_merge(&c->entered, deposit);
}

void spool_rt_claim_end(struct rt_conn *c)
{
    claim_collect(c, true);
}

/* A resumed connection claims the members its earlier incarnation leaves behind later. Without
 * memory there is no claim: those members leave after the timeout, as without a resume. */
static void claim_start(struct rt_conn *c)
{
    if (c->claim != NULL) { /* a second resume on this connection */
        pthread_mutex_lock(&parked_lock);
        memcpy(c->claim->id, c->id, sizeof c->claim->id);
        pthread_mutex_unlock(&parked_lock);
        return;
    }
    struct rt_claim *k = calloc(1, sizeof *k);
    if (k == NULL)
        return;
    k->conn = c;
    memcpy(k->id, c->id, sizeof k->id);
    pthread_mutex_lock(&parked_lock);
    k->next = claim_list;
    if (claim_list != NULL)
        claim_list->prev = k;
    claim_list = k;
    pthread_mutex_unlock(&parked_lock);
    c->claim = k;
}

/* Hands `entered` (of c, ending) to a claim on c's id by another connection; false if none. */
static bool claim_deposit(const struct rt_conn *c, struct rt_entered *entered)
{
    bool taken = false;
    pthread_mutex_lock(&parked_lock);
    for (struct rt_claim *k = claim_list; k != NULL; k = k->next) {
        if (k->conn != c && strcmp(k->id, c->id) == 0) {
            struct rt_entered *tail = entered;
            while (tail->next != NULL)
                tail = tail->next;
            tail->next = k->deposit;
            k->deposit = entered;
            taken = true;
            break;
        }
    }
    pthread_mutex_unlock(&parked_lock);
    return taken;
}

static void on_leave_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Ends `l` (its timer stopped or fired): members still parked under it leave now. */
void spool_rt_leave_unlink(struct spool_realtime *rt, struct rt_leave *l)
{
    for (struct rt_leave **p = &rt->leaves; *p != NULL; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    struct rt_entered *entered = parked_take(l->id, l);
    if (entered != NULL)
        spool_rt_leave_all(rt, l->id, entered, l->died_at_ms);
    uv_close((uv_handle_t *)&l->timer, on_leave_timer_closed);
}

static void on_leave_timeout(uv_timer_t *t)
{
    struct rt_leave *l = t->data;
    struct spool_realtime *rt = l->rt;
    spool_rt_leave_all(rt, l->id, parked_take(l->id, l), l->died_at_ms);
    spool_rt_leave_unlink(rt, l);
}

/* A connection with members ended: leave now (the client said goodbye with a close frame, or the
 * server is stopping) or after presence_timeout_ms unless it is resumed on this node first. */
void spool_rt_schedule_leave(struct rt_conn *c)
{
    struct spool_realtime *rt = c->rt;
    claim_collect(c, true);
    struct rt_entered *entered = c->entered;
    c->entered = NULL;
    if (entered == NULL)
        return;
    if (claim_deposit(c, entered)) { /* resumed elsewhere already: the members carry over */
        SPOOL_DEBUG("presence.handed_over", "conn=%s", c->id);
        return;
    }
    int64_t now = spool_auth_now_ms();
    struct rt_leave *l = NULL;
    struct parked *pk = NULL;
    if (!spool_ws_peer_closed(&c->ws) && !rt->closing && rt->cfg.presence_timeout_ms > 0) {
        l = calloc(1, sizeof *l);
        pk = calloc(1, sizeof *pk);
    }
    if (l == NULL || pk == NULL) {
        free(l);
        free(pk);
        spool_rt_leave_all(rt, c->id, entered, now);
        return;
    }
    l->rt = rt;
    memcpy(l->id, c->id, sizeof l->id);
    l->died_at_ms = now;
    l->entered = NULL; /* parked: whoever takes them first owns them */
    pk->owner = l;
    memcpy(pk->id, c->id, sizeof pk->id);
    pk->entered = entered;
    pthread_mutex_lock(&parked_lock);
    pk->next = parked_list;
    parked_list = pk;
    pthread_mutex_unlock(&parked_lock);
    uv_timer_init(rt->loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, on_leave_timeout, rt->cfg.presence_timeout_ms, 0);
    l->next = rt->leaves;
    rt->leaves = l;
}

/* A resume on any loop of this process takes the dropped connection's members back (no leave,
 * no re-enter), now if they are parked, else by a claim when the old connection ends. A timer
 * of this loop for it ends here; one on another loop finds nothing. */
void spool_rt_adopt_leave(struct rt_conn *c)
{
    entered_merge(&c->entered, parked_take(c->id, NULL));
    claim_start(c);
    for (struct rt_leave *l = c->rt->leaves; l != NULL; l = l->next) {
        if (strcmp(l->id, c->id) == 0) {
            uv_timer_stop(&l->timer);
            spool_rt_leave_unlink(c->rt, l);
            return;
        }
    }
}

/* {"type":"presence","channel","action":"enter"|"update"|"leave","data"?,"clientId"?,
 *  "msgSerial"?}: one presence record, published like a message (same data rules). */
void spool_rt_presence(struct rt_conn *c, json_t *msg)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) && json_integer_value(jserial) >= 0
                                ? json_integer_value(jserial)
                                : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *action = json_string_value(json_object_get(msg, "action"));
    const char *why = "channel missing";
    if (channel == NULL ||
        !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    json_t *jch = json_pack("{s:s}", "channel", channel);
    if (!spool_presence_action_valid(action)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "action must be enter, update or leave", jch);
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PRESENCE, &err) != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, jch);
        return;
    }
    Spool__Record rec;
    char *owned[2] = {NULL, NULL};
    int code = 0;
    const char *problem = spool_rt_message_from_json(c, msg, &rec, owned, &code);
    if (problem == NULL && (rec.client_id == NULL || rec.client_id[0] == '\0')) {
        problem = "presence needs a clientId (from the credentials or the message)";
        code = SPOOL_RT_EBAD_MESSAGE;
    }
    if (problem == NULL && !spool_rt_take_tokens(c, 1)) {
        problem = "publish rate limit exceeded";
        code = SPOOL_RT_ERATE;
    }
    struct rt_pub *p = problem == NULL ? calloc(1, sizeof *p) : NULL;
    if (problem == NULL && (p == NULL || (p->channel = strdup(channel)) == NULL ||
                            (p->client_id = strdup(rec.client_id)) == NULL)) {
        problem = "out of memory";
        code = SPOOL_RT_EINTERNAL;
    }
    if (problem == NULL) {
        rec.action = SPOOL__ACTION__ACTION_PRESENCE;
        rec.name = (char *)action;
        rec.role = (char *)spool_role_name(c->principal.role); /* from the token */
        rec.id = "";
        rec.ref_seq = 0; /* a client's leave is unconditional (cluster/presence_index.h) */
        if (strcmp(action, "leave") != 0) /* the member's host, for the reaper */
            spool_node_presence_stamp(c->rt->node, &rec);
        p->c = c;
        p->msg_serial = msg_serial;
        p->bytes = rec.data.len;
        claim_collect(c, false);
        entered_note(c, channel, rec.client_id, strcmp(action, "leave") == 0);
        const Spool__Record *recs[1] = {&rec};
        c->refs++;
        int rv = spool_node_publish(c->rt->node, channel, recs, 1, spool_rt_on_published, p);
        if (rv == 0) {
            p = NULL;
        } else {
            c->refs--;
            problem = "presence could not be published";
            code = spool_rt_code_of(rv);
        }
    }
    if (problem != NULL) {
        if (msg_serial >= 0) {
            spool_rt_nack(c, msg_serial, code, problem);
            json_decref(jch);
        } else {
            spool_rt_send_error(c, code, problem, jch);
        }
    } else {
        json_decref(jch);
    }
    if (p != NULL) {
        free(p->channel);
        free(p->client_id);
        free(p);
    }
    free(owned[0]);
    free(owned[1]);
}

static void on_presence_synced(void *arg, int status, const struct spool_err *err,
                               const struct spool_presence_set *set)
{
    struct rt_sync *y = arg;
    struct rt_conn *c = y->c;
    for (struct rt_sync **p = &c->syncs; *p != NULL; p = &(*p)->next) {
        if (*p == y) {
            *p = y->next;
            break;
        }
    }
    if (status == 0)
        spool_rt_send_json(c, json_pack("{s:s,s:s,s:I,s:o}", "type", "presence.members", "channel",
                                  y->channel, "serial", (json_int_t)set->serial, "members",
                                  spool_presence_set_json(set)));
    else
        spool_rt_send_error(c, spool_rt_code_of(status), err->msg,
                            json_pack("{s:s}", "channel", y->channel));
    free(y->channel);
    free(y);
}

/* {"type":"presence.get","channel"}: the members, valid at a serial (see gateway/presence.h). */
void spool_rt_presence_get(struct rt_conn *c, json_t *msg)
{
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *why = "channel missing";
    if (channel == NULL ||
        !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_SUBSCRIBE, &err) != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg,
                            json_pack("{s:s}", "channel", channel));
        return;
    }
    struct rt_sync *y = calloc(1, sizeof *y);
    if (y == NULL || (y->channel = strdup(channel)) == NULL) {
        free(y);
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    y->c = c;
    if (spool_presence_sync(&y->sync, c->rt->node, channel, RT_PRESENCE_SCAN_MAX,
                            on_presence_synced, y, &err) != 0) {
        spool_rt_send_error(c, spool_rt_code_of(err.code), err.msg,
                            json_pack("{s:s}", "channel", channel));
        free(y->channel);
        free(y);
        return;
    }
    y->next = c->syncs;
    c->syncs = y;
}
