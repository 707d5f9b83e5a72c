/*
 * Presence member sets and their sync from history; see presence.h. The sync is one owner (the
 * struct spool_presence_sync) with one completion path (on_page): it reads pages forward until a
 * short page, folding, then reports once; a cancel while a read is in flight only marks it.
 */
#include "gateway/presence.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/realtime.h"

#define PRESENCE_PAGE 512

void spool_presence_set_init(struct spool_presence_set *s)
{
    memset(s, 0, sizeof *s);
}

static void member_free(struct spool_presence_member *m)
{
    free(m->client_id);
    free(m->connection_id);
    json_decref(m->data);
}

void spool_presence_set_close(struct spool_presence_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        member_free(&s->members[i]);
    free(s->members);
    spool_presence_set_init(s);
}

int spool_presence_action_valid(const char *action)
{
    return action != NULL && (strcmp(action, "enter") == 0 || strcmp(action, "update") == 0 ||
                              strcmp(action, "leave") == 0);
}

static const char *str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

int spool_presence_set_apply(struct spool_presence_set *s, const Spool__Record *rec)
{
    if (rec->seq > s->serial)
        s->serial = rec->seq;
    if (rec->action != SPOOL__ACTION__ACTION_PRESENCE || !spool_presence_action_valid(rec->name))
        return 0;
    const char *client = str_or_empty(rec->client_id), *conn = str_or_empty(rec->connection_id);
    size_t i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->members[i].client_id, client) == 0 &&
            strcmp(s->members[i].connection_id, conn) == 0)
            break;
    if (strcmp(rec->name, "leave") == 0) {
        if (i < s->n) {
            member_free(&s->members[i]);
            s->members[i] = s->members[--s->n];
        }
        return 0;
    }
    json_t *o = spool_rt_record_json(rec);
    json_t *data = o != NULL ? json_incref(json_object_get(o, "data")) : NULL;
    json_decref(o);
    if (data == NULL)
        return SPOOL_ENOMEM;
    if (i == s->n) {
        if (s->n == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 8;
            struct spool_presence_member *m = realloc(s->members, cap * sizeof *m);
            if (m == NULL) {
                json_decref(data);
                return SPOOL_ENOMEM;
            }
            s->members = m;
            s->cap = cap;
        }
        struct spool_presence_member *m = &s->members[s->n];
        m->client_id = strdup(client);
        m->connection_id = strdup(conn);
        m->data = NULL;
        if (m->client_id == NULL || m->connection_id == NULL) {
            free(m->client_id);
            free(m->connection_id);
            json_decref(data);
            return SPOOL_ENOMEM;
        }
        s->n++;
    }
    struct spool_presence_member *m = &s->members[i];
    json_decref(m->data);
    m->data = data;
    m->serial = rec->seq;
    m->timestamp_ms = rec->timestamp_ms;
    snprintf(m->role, sizeof m->role, "%s", str_or_empty(rec->role));
    return 0;
}

json_t *spool_presence_set_json(const struct spool_presence_set *s)
{
    return spool_presence_set_json_of(s, NULL);
}

json_t *spool_presence_set_json_of(const struct spool_presence_set *s, const char *client_id)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < s->n; i++) {
        const struct spool_presence_member *m = &s->members[i];
        if (client_id != NULL && strcmp(m->client_id, client_id) != 0)
            continue;
        json_t *o = json_pack("{s:s,s:s,s:O,s:I,s:I}", "clientId", m->client_id,
                              "connectionId", m->connection_id, "data", m->data, "serial",
                              (json_int_t)m->serial, "timestamp", (json_int_t)m->timestamp_ms);
        if (o != NULL && m->role[0] != '\0') /* docs/ai-semantics.md */
            json_object_set_new(o, "role", json_string(m->role));
        json_array_append_new(a, o);
    }
    return a;
}

/* ---- sync ------------------------------------------------------------------------------------ */

struct spool_presence_sync {
    struct spool_node *node;
    char *channel;
    uint64_t max_records;
    uint64_t read;
    spool_presence_sync_cb cb;
    void *arg;
    bool cancelled;
    struct spool_presence_set set;
};

static void sync_free(struct spool_presence_sync *s)
{
    spool_presence_set_close(&s->set);
    free(s->channel);
    free(s);
}

static void sync_done(struct spool_presence_sync *s, int status, const char *msg)
{
    struct spool_err err;
    spool_err_clear(&err);
    if (status != 0)
        spool_err_set(&err, status, "%s", msg);
    s->cb(s->arg, status, &err, &s->set);
    sync_free(s);
}

static int sync_read(struct spool_presence_sync *s);

static void on_page(void *arg, int status, const struct spool_err *err,
                    const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                    uint64_t last_seq)
{
    struct spool_presence_sync *s = arg;
    if (s->cancelled) {
        sync_free(s);
        return;
    }
    if (status != 0) {
        sync_done(s, status,
                  err != NULL && err->msg[0] ? err->msg : "presence: history read failed");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (recs[i]->seq <= s->set.serial)
            continue;
        if (spool_presence_set_apply(&s->set, recs[i]) != 0) {
            sync_done(s, SPOOL_ENOMEM, "presence: out of memory");
            return;
        }
    }
    s->read += n;
    if (n < PRESENCE_PAGE && s->set.serial >= last_seq) {
        sync_done(s, 0, NULL);
        return;
    }
    if (s->read >= s->max_records) {
        sync_done(s, SPOOL_ELIMIT, "presence: channel history too long to compute members");
        return;
    }
    if (n == 0 && s->set.serial < last_seq)
        s->set.serial = last_seq; /* nothing retained in between */
    int rv = sync_read(s);
    if (rv != 0)
        sync_done(s, rv, "presence: history read could not start");
}

static int sync_read(struct spool_presence_sync *s)
{
    /* At the shard's leader: a local follower replica may not have applied a record the
     * client's attachment already delivered (live delivery follows the leader). */
    struct spool_read_req req = {.channel = s->channel, .after_seq = s->set.serial,
                                 .limit = PRESENCE_PAGE, .leader = true};
    return spool_node_read(s->node, &req, on_page, s);
}

int spool_presence_sync(struct spool_presence_sync **out, struct spool_node *node,
                        const char *channel, uint64_t max_records, spool_presence_sync_cb cb,
                        void *arg, struct spool_err *err)
{
    struct spool_presence_sync *s = calloc(1, sizeof *s);
    if (s == NULL || (s->channel = strdup(channel)) == NULL) {
        free(s);
        return spool_err_set(err, SPOOL_ENOMEM, "presence: out of memory");
    }
    s->node = node;
    s->max_records = max_records;
    s->cb = cb;
    s->arg = arg;
    spool_presence_set_init(&s->set);
    int rv = sync_read(s);
    if (rv != 0) {
        sync_free(s);
        return spool_err_set(err, rv, "presence: history read could not start");
    }
    *out = s;
    return 0;
}

void spool_presence_sync_cancel(struct spool_presence_sync *s)
{
    s->cancelled = true;
}

/* ---- leave on connection death ------------------------------------------------------------- */

struct presence_leave {
    struct spool_node *node;
    char *channel, *client_id, *connection_id;
    uint64_t after;
    int64_t died_at_ms;
    uint64_t budget; /* records still allowed to be read */
    uint64_t ref;    /* the member's newest presence record seen (0 = none) */
    bool left;       /* ... and it is a leave (e.g. the reaper's while this node was cut off) */
};

static void leave_free(struct presence_leave *l)
{
    free(l->channel);
    free(l->client_id);
    free(l->connection_id);
    free(l);
}

static void on_leave_published(void *arg, int status, const struct spool_err *err,
                               const uint64_t *seqs, const bool *duplicate, size_t n)
{
    struct presence_leave *l = arg;
    if (status != 0)
        SPOOL_WARN("presence.leave_failed", "channel=%s err=%s", l->channel,
                   spool_err_name(status));
    leave_free(l);
}

/* `complete`: every record up to the channel's end was read, so l->ref is the member's newest
 * presence record and the leave can be conditional on it (cluster/presence_index.h): if the shard
 * leader's reaper already left the member, or the member entered again meanwhile, it is not
 * stored. Otherwise (read failed, budget spent) it is unconditional, as it always was. */
static void leave_publish(struct presence_leave *l, bool complete)
{
    Spool__Record rec;
    spool__record__init(&rec);
    rec.action = SPOOL__ACTION__ACTION_PRESENCE;
    rec.name = "leave";
    rec.client_id = l->client_id;
    rec.connection_id = l->connection_id;
    rec.ref_seq = complete ? l->ref : 0;
    const Spool__Record *recs[1] = {&rec};
    if (spool_node_publish(l->node, l->channel, recs, 1, on_leave_published, l) != 0) {
        SPOOL_WARN("presence.leave_failed", "channel=%s err=start", l->channel);
        leave_free(l);
    }
}

static int leave_read(struct presence_leave *l);

static void on_leave_page(void *arg, int status, const struct spool_err *err,
                          const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                          uint64_t last_seq)
{
    struct presence_leave *l = arg;
    if (status != 0) {
        leave_publish(l, false); /* cannot tell: a spurious leave beats a member that never leaves */
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Spool__Record *r = recs[i];
        if (r->seq > l->after)
            l->after = r->seq;
        if (r->action == SPOOL__ACTION__ACTION_PRESENCE &&
            strcmp(str_or_empty(r->client_id), l->client_id) == 0 &&
            strcmp(str_or_empty(r->connection_id), l->connection_id) == 0) {
            if (r->timestamp_ms > l->died_at_ms) {
                leave_free(l); /* the member came back (or left) after the death */
                return;
            }
            l->ref = r->seq;
            l->left = r->name != NULL && strcmp(r->name, "leave") == 0;
        }
    }
    l->budget = l->budget > n ? l->budget - n : 0;
    if (n < PRESENCE_PAGE || l->after >= last_seq) {
        if (l->left)
            leave_free(l); /* already gone: no second leave */
        else
            leave_publish(l, true);
        return;
    }
    if (l->budget == 0 || leave_read(l) != 0)
        leave_publish(l, false);
}

static int leave_read(struct presence_leave *l)
{
    struct spool_read_req req = {
        .channel = l->channel, .after_seq = l->after, .limit = PRESENCE_PAGE, .leader = true};
    return spool_node_read(l->node, &req, on_leave_page, l);
}

int spool_presence_leave(struct spool_node *node, const char *channel, const char *client_id,
                         const char *connection_id, uint64_t after_serial, int64_t died_at_ms,
                         uint64_t max_records)
{
    struct presence_leave *l = calloc(1, sizeof *l);
    if (l == NULL)
        return SPOOL_ENOMEM;
    l->node = node;
    l->channel = strdup(channel);
    l->client_id = strdup(client_id);
    l->connection_id = strdup(connection_id);
    l->after = after_serial;
    l->ref = after_serial;
    l->died_at_ms = died_at_ms;
    l->budget = max_records;
    if (l->channel == NULL || l->client_id == NULL || l->connection_id == NULL) {
        leave_free(l);
        return SPOOL_ENOMEM;
    }
    if (leave_read(l) != 0)
        leave_publish(l, false);
    return 0;
}
