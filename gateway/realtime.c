/*
 * The realtime protocol server; see realtime.h for the design and docs/protocol.md for the
 * messages. Sections: record encoding (shared with SSE), the encode-once frame cache,
 * connections (life cycle and reference count), attachments, publishing, resume, the message
 * dispatcher, and the HTTP upgrade handler.
 */
#include "gateway/realtime.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/metrics.h"
#include "gateway/presence.h"
#include "gateway/jwt.h"
#include "gateway/websocket.h"

#define RT_CHANNEL_MAX 256
#define RT_FRAME_CACHE 8
#define RT_QUERY_MAX 8192

/* ---- record encoding ------------------------------------------------------------------------ */

static const char *action_name(int action)
{
    switch (action) {
    case SPOOL__ACTION__ACTION_MESSAGE_CREATE: return "message.create";
    case SPOOL__ACTION__ACTION_MESSAGE_APPEND: return "message.append";
    case SPOOL__ACTION__ACTION_MESSAGE_UPDATE: return "message.update";
    case SPOOL__ACTION__ACTION_MESSAGE_DELETE: return "message.delete";
    case SPOOL__ACTION__ACTION_PRESENCE: return "presence";
    case SPOOL__ACTION__ACTION_OBJECT_OP: return "object";
    case SPOOL__ACTION__ACTION_CHANNEL_META: return "meta";
    default: return "message.create";
    }
}

/* The stored data as a JSON value: JSON content as itself, text as a string, anything else
 * base64 (and *encoding set to "base64"). */
static json_t *data_json(const Spool__Record *rec, const char **encoding)
{
    const char *ct = rec->content_type != NULL ? rec->content_type : "";
    const char *p = (const char *)rec->data.data;
    size_t n = rec->data.len;
    *encoding = NULL;
    if (n == 0)
        return ct[0] == '\0' ? json_null() : json_string("");
    if (ct[0] == '\0' || strstr(ct, "json") != NULL) {
        json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (v != NULL)
            return v;
    }
    if (spool_utf8_valid(rec->data.data, n) && memchr(p, '\0', n) == NULL)
        return json_stringn(p, n);
    size_t size = spool_base64_encoded_size(n);
    char *b = malloc(size);
    if (b == NULL)
        return NULL;
    spool_base64_encode(p, n, b, size);
    json_t *v = json_string(b);
    free(b);
    *encoding = "base64";
    return v;
}

json_t *spool_rt_record_json(const Spool__Record *rec)
{
    const char *encoding;
    json_t *data = data_json(rec, &encoding);
    json_t *o = json_object();
    if (o == NULL || data == NULL) {
        json_decref(o);
        json_decref(data);
        return NULL;
    }
    bool presence = rec->action == SPOOL__ACTION__ACTION_PRESENCE;
    json_object_set_new(o, "type", json_string(presence ? "presence" : "message"));
    json_object_set_new(o, "channel", json_string(rec->channel));
    json_object_set_new(o, "serial", json_integer((json_int_t)rec->seq));
    if (rec->id != NULL && rec->id[0] != '\0')
        json_object_set_new(o, "id", json_string(rec->id));
    if (!presence && rec->name != NULL && rec->name[0] != '\0')
        json_object_set_new(o, "name", json_string(rec->name));
    json_object_set_new(o, "data", data);
    if (encoding != NULL)
        json_object_set_new(o, "encoding", json_string(encoding));
    if (rec->client_id != NULL && rec->client_id[0] != '\0')
        json_object_set_new(o, "clientId", json_string(rec->client_id));
    if (rec->connection_id != NULL && rec->connection_id[0] != '\0')
        json_object_set_new(o, "connectionId", json_string(rec->connection_id));
    json_object_set_new(o, "timestamp", json_integer((json_int_t)rec->timestamp_ms));
    json_object_set_new(o, "action", json_string(presence && rec->name != NULL && rec->name[0]
                                                     ? rec->name
                                                     : action_name(rec->action)));
    if (rec->ref_seq != 0)
        json_object_set_new(o, "refSerial", json_integer((json_int_t)rec->ref_seq));
    if (rec->version > 1)
        json_object_set_new(o, "version", json_integer(rec->version));
    if (rec->extras.len > 0) {
        json_t *x = json_loadb((const char *)rec->extras.data, rec->extras.len, 0, NULL);
        if (x != NULL)
            json_object_set_new(o, "extras", x);
    }
    return o;
}

int spool_rt_parse_from(const json_t *v, struct spool_from *out)
{
    if (v == NULL || json_is_null(v) || (json_is_string(v) && strcmp(json_string_value(v), "live") == 0)) {
        *out = (struct spool_from){SPOOL_FROM_LIVE, 0};
        return 0;
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "start") == 0) {
        *out = (struct spool_from){SPOOL_FROM_START, 0};
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (struct spool_from){SPOOL_FROM_SERIAL, (uint64_t)json_integer_value(v)};
        return 0;
    }
    json_t *last = json_is_object(v) ? json_object_get(v, "last") : NULL;
    if (last != NULL && json_is_integer(last) && json_integer_value(last) >= 0 &&
        json_object_size(v) == 1) {
        *out = (struct spool_from){SPOOL_FROM_LAST, (uint64_t)json_integer_value(last)};
        return 0;
    }
    return -1;
}

/* ---- the realtime object and its frame cache ------------------------------------------------ */

struct rt_conn;

struct rt_cached {
    char *channel;
    uint64_t seq;
    struct spool_wsframe *frame;
};

struct spool_realtime {
    uv_loop_t *loop;
    struct spool_node *node;
    const struct spool_keyring *keys;
    struct spool_realtime_config cfg;
    uint8_t secret[SPOOL_RESUME_SECRET_BYTES];
    struct rt_conn *conns; /* doubly linked */
    struct rt_leave *leaves; /* dropped connections' members, waiting for a resume */
    size_t n_conns;
    uv_timer_t refresh;    /* resume key refresh cadence */
    struct rt_cached cache[RT_FRAME_CACHE];
    unsigned cache_next;
    bool closing;
    struct spool_realtime_counters counters;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* The shared frame for `rec`, encoded on first use; a borrowed reference (the cache keeps one). */
static struct spool_wsframe *rt_frame_for(struct spool_realtime *rt, const Spool__Record *rec)
{
    for (unsigned i = 0; i < RT_FRAME_CACHE; i++) {
        struct rt_cached *c = &rt->cache[i];
        if (c->frame != NULL && c->seq == rec->seq && strcmp(c->channel, rec->channel) == 0)
            return c->frame;
    }
    json_t *o = spool_rt_record_json(rec);
    size_t len;
    char *s = o != NULL ? spool_json_dump(o, &len) : NULL;
    json_decref(o);
    if (s == NULL)
        return NULL;
    struct spool_wsframe *f = spool_wsframe_new(1, s, len);
    free(s);
    char *channel = strdup(rec->channel);
    if (f == NULL || channel == NULL) {
        spool_wsframe_unref(f);
        free(channel);
        return NULL;
    }
    struct rt_cached *c = &rt->cache[rt->cache_next++ % RT_FRAME_CACHE];
    spool_wsframe_unref(c->frame);
    free(c->channel);
    *c = (struct rt_cached){channel, rec->seq, f};
    return f;
}

static void rt_cache_clear(struct spool_realtime *rt)
{
    for (unsigned i = 0; i < RT_FRAME_CACHE; i++) {
        spool_wsframe_unref(rt->cache[i].frame);
        free(rt->cache[i].channel);
        rt->cache[i] = (struct rt_cached){0};
    }
}

/* ---- connections ----------------------------------------------------------------------------- */

struct rt_att {
    struct rt_att *next;
    struct rt_conn *c;
    struct spool_attach *a;
    char *channel;
};

/* A presence member this connection entered (optimistically, at send time). */
struct rt_entered {
    struct rt_entered *next;
    char *channel;
    char *client_id;
    uint64_t serial; /* of its last acknowledged presence record, 0 until acked */
};

/* A presence.get in flight. */
struct rt_sync {
    struct rt_sync *next;
    struct rt_conn *c;
    struct spool_presence_sync *sync;
    char *channel;
};

/* The members of a connection that dropped, waiting presence_timeout_ms for a resume. */
struct rt_leave {
    uv_timer_t timer;
    struct spool_realtime *rt;
    struct rt_leave *next;
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    int64_t died_at_ms;
    struct rt_entered *entered;
};

struct rt_conn {
    struct spool_ws ws;
    struct spool_realtime *rt;
    struct rt_conn *prev, *next;
    uv_tcp_t *tcp;
    unsigned refs; /* 1 for the open WebSocket + 1 per publish in flight */
    bool open;
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    struct spool_principal principal;
    struct rt_att *atts;
    size_t n_atts;
    double tokens;     /* publish rate bucket */
    uint64_t tokens_at; /* uv_now of the last refill */
    bool resumable;    /* no message yet: a "resume" message is still allowed */
    bool key_dirty;    /* attachments changed since the last resumeKey */
    struct rt_entered *entered;
    struct rt_sync *syncs;
};

static void entered_free(struct rt_entered *e)
{
    while (e != NULL) {
        struct rt_entered *next = e->next;
        free(e->channel);
        free(e->client_id);
        free(e);
        e = next;
    }
}

static void rt_conn_unref(struct rt_conn *c)
{
    if (--c->refs > 0)
        return;
    entered_free(c->entered);
    spool_principal_close(&c->principal);
    free(c->tcp);
    free(c);
}

static void rt_send_json(struct rt_conn *c, json_t *o)
{
    if (o == NULL)
        return;
    size_t len;
    char *s = c->open ? spool_json_dump(o, &len) : NULL;
    json_decref(o);
    if (s == NULL)
        return;
    spool_ws_send_text(&c->ws, s, len);
    free(s);
}

static void rt_send_error(struct rt_conn *c, int code, const char *message, json_t *extra)
{
    json_t *e = json_pack("{s:i,s:s}", "code", code, "message", message);
    json_t *o = json_pack("{s:s,s:o}", "type", "error", "error", e);
    if (extra != NULL && o != NULL)
        json_object_update_new(o, extra);
    else
        json_decref(extra);
    rt_send_json(c, o);
}

static int rt_code_of(int spool_code)
{
    int status, code;
    spool_json_status_of(spool_code, &status, &code);
    return code;
}

static struct rt_att *rt_att_find(struct rt_conn *c, const char *channel)
{
    for (struct rt_att *t = c->atts; t != NULL; t = t->next)
        if (strcmp(t->channel, channel) == 0)
            return t;
    return NULL;
}

static void rt_att_remove(struct rt_conn *c, struct rt_att *t)
{
    for (struct rt_att **p = &c->atts; *p != NULL; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    c->n_atts--;
    c->key_dirty = true;
    spool_attach_close(t->a);
    free(t->channel);
    free(t);
}

/* A fresh resume key for the connection's current attachments. */
static void rt_send_resume_key(struct rt_conn *c)
{
    struct spool_resume_state s;
    spool_resume_state_init(&s);
    int64_t now = spool_auth_now_ms();
    int rv = spool_resume_state_set(&s, c->id, c->principal.client_id, c->principal.key_name, now,
                                    now + (int64_t)c->rt->cfg.resume_window_ms);
    for (struct rt_att *t = c->atts; t != NULL && rv == 0; t = t->next)
        rv = spool_resume_state_add(&s, t->channel, spool_attach_serial(t->a));
    size_t len;
    char *key = rv == 0 ? spool_resume_encode(c->rt->secret, &s, &len) : NULL;
    spool_resume_state_close(&s);
    if (key == NULL)
        return;
    c->key_dirty = false;
    rt_send_json(c, json_pack("{s:s,s:s,s:I}", "type", "resumeKey", "resumeKey", key, "expiresAt",
                              (json_int_t)(now + (int64_t)c->rt->cfg.resume_window_ms)));
    free(key);
}

static void rt_maybe_finish_close(struct spool_realtime *rt);

/* ---- presence bookkeeping -------------------------------------------------------------------- */

#define RT_PRESENCE_SCAN_MAX 100000 /* records read to compute members or check a leave */

static struct rt_entered **entered_find(struct rt_entered **list, const char *channel,
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
    struct rt_entered **p = entered_find(&c->entered, channel, client_id);
    if (leave) {
        if (*p != NULL) {
            struct rt_entered *e = *p;
            *p = e->next;
            e->next = NULL;
            entered_free(e);
        }
        return;
    }
    if (*p != NULL)
        return;
    struct rt_entered *e = calloc(1, sizeof *e);
    if (e == NULL || (e->channel = strdup(channel)) == NULL ||
        (e->client_id = strdup(client_id)) == NULL) {
        entered_free(e);
        return;
    }
    *p = e;
}

/* Publishes (after checking) the leave of every member in `entered`; frees the list. */
static void rt_leave_all(struct spool_realtime *rt, const char *conn_id, struct rt_entered *entered,
                         int64_t died_at_ms)
{
    for (struct rt_entered *e = entered; e != NULL; e = e->next)
        if (spool_presence_leave(rt->node, e->channel, e->client_id, conn_id, e->serial,
                                 died_at_ms, RT_PRESENCE_SCAN_MAX) != 0)
            SPOOL_WARN("presence.leave_failed", "channel=%s err=nomem", e->channel);
    entered_free(entered);
}

static void on_leave_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void rt_leave_unlink(struct spool_realtime *rt, struct rt_leave *l)
{
    for (struct rt_leave **p = &rt->leaves; *p != NULL; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    uv_close((uv_handle_t *)&l->timer, on_leave_timer_closed);
}

static void on_leave_timeout(uv_timer_t *t)
{
    struct rt_leave *l = t->data;
    struct spool_realtime *rt = l->rt;
    rt_leave_all(rt, l->id, l->entered, l->died_at_ms);
    l->entered = NULL;
    rt_leave_unlink(rt, l);
}

/* A connection with members ended: leave now (the client said goodbye with a close frame, or the
 * server is stopping) or after presence_timeout_ms unless it is resumed on this node first. */
static void rt_schedule_leave(struct rt_conn *c)
{
    struct spool_realtime *rt = c->rt;
    struct rt_entered *entered = c->entered;
    c->entered = NULL;
    if (entered == NULL)
        return;
    int64_t now = spool_auth_now_ms();
    struct rt_leave *l = NULL;
    if (!spool_ws_peer_closed(&c->ws) && !rt->closing && rt->cfg.presence_timeout_ms > 0)
        l = calloc(1, sizeof *l);
    if (l == NULL) {
        rt_leave_all(rt, c->id, entered, now);
        return;
    }
    l->rt = rt;
    memcpy(l->id, c->id, sizeof l->id);
    l->died_at_ms = now;
    l->entered = entered;
    uv_timer_init(rt->loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, on_leave_timeout, rt->cfg.presence_timeout_ms, 0);
    l->next = rt->leaves;
    rt->leaves = l;
}

/* A resume on this node takes the dropped connection's members back (no leave, no re-enter). */
static void rt_adopt_leave(struct rt_conn *c)
{
    for (struct rt_leave *l = c->rt->leaves; l != NULL; l = l->next) {
        if (strcmp(l->id, c->id) == 0) {
            entered_free(c->entered);
            c->entered = l->entered;
            l->entered = NULL;
            uv_timer_stop(&l->timer);
            rt_leave_unlink(c->rt, l);
            return;
        }
    }
}

static void on_ws_close(struct spool_ws *ws, uint16_t code)
{
    struct rt_conn *c = ws->data;
    struct spool_realtime *rt = c->rt;
    c->open = false;
    while (c->atts != NULL)
        rt_att_remove(c, c->atts);
    for (struct rt_sync *y = c->syncs; y != NULL;) {
        struct rt_sync *next = y->next;
        spool_presence_sync_cancel(y->sync);
        free(y->channel);
        free(y);
        y = next;
    }
    c->syncs = NULL;
    /* A connection replaced by its own resume (4000) hands its members over; others leave. */
    if (code == 4000) {
        entered_free(c->entered);
        c->entered = NULL;
    } else {
        rt_schedule_leave(c);
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        rt->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    rt->n_conns--;
    SPOOL_DEBUG("rt.closed", "conn=%s code=%u", c->id, code);
    rt_conn_unref(c);
    rt_maybe_finish_close(rt);
}

static void on_ws_drain(struct spool_ws *ws)
{
    struct rt_conn *c = ws->data;
    /* Attachments reading history paused on a full buffer: let them go on. Continue may close
     * an attachment (error), so walk with care. */
    struct rt_att *t = c->atts;
    while (t != NULL) {
        struct rt_att *next = t->next;
        spool_attach_continue(t->a);
        t = next;
    }
}

static void on_ws_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len);

static const struct spool_ws_events rt_ws_events = {on_ws_message, on_ws_drain, on_ws_close};

/* ---- attachments ----------------------------------------------------------------------------- */

static void on_att_attached(void *arg, uint64_t serial)
{
    struct rt_att *t = arg;
    rt_send_json(t->c, json_pack("{s:s,s:s,s:I}", "type", "attached", "channel", t->channel,
                                 "serial", (json_int_t)serial));
}

static void on_att_record(void *arg, const Spool__Record *rec)
{
    struct rt_att *t = arg;
    struct rt_conn *c = t->c;
    if (!c->open)
        return;
    struct spool_wsframe *f = rt_frame_for(c->rt, rec);
    if (f == NULL) {
        spool_ws_close(&c->ws, 1011, "out of memory");
        return;
    }
    /* Over the send buffer the connection closes (1008) and the client resumes. */
    if (spool_ws_send_frame(&c->ws, f) == 0 && c->rt->counters.ws_out != NULL)
        spool_counter_inc(c->rt->counters.ws_out);
}

static void on_att_error(void *arg, const struct spool_err *err)
{
    struct rt_att *t = arg;
    struct rt_conn *c = t->c;
    json_t *extra = json_pack("{s:s,s:I}", "channel", t->channel, "serial",
                              (json_int_t)spool_attach_serial(t->a));
    rt_send_error(c, rt_code_of(err->code), err->msg, extra);
    rt_send_json(c, json_pack("{s:s,s:s}", "type", "detached", "channel", t->channel));
    rt_att_remove(c, t);
}

static bool on_att_can_send(void *arg)
{
    struct rt_att *t = arg;
    return spool_ws_buffered(&t->c->ws) <= t->c->rt->cfg.send_buffer_bytes / 2;
}

static const struct spool_attach_events rt_att_events = {on_att_attached, on_att_record,
                                                         on_att_error, on_att_can_send};

/* Attaches (or re-attaches) `channel` from `from`; reports problems to the client. */
static int rt_attach(struct rt_conn *c, const char *channel, struct spool_from from)
{
    const char *why = NULL;
    if (!spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why ? why : "invalid channel name",
                      json_pack("{s:s}", "channel", channel));
        return -1;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_SUBSCRIBE, &err) != SPOOL_AUTH_OK) {
        rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, json_pack("{s:s}", "channel", channel));
        return -1;
    }
    struct rt_att *old = rt_att_find(c, channel);
    if (old != NULL)
        rt_att_remove(c, old); /* attach again = start over from the new point */
    if (c->n_atts >= c->rt->cfg.max_channels) {
        rt_send_error(c, SPOOL_RT_ETOO_MANY_CHANNELS, "too many channels on this connection",
                      json_pack("{s:s,s:I}", "channel", channel, "max",
                                (json_int_t)c->rt->cfg.max_channels));
        return -1;
    }
    struct rt_att *t = calloc(1, sizeof *t);
    if (t == NULL || (t->channel = strdup(channel)) == NULL) {
        free(t);
        rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return -1;
    }
    t->c = c;
    struct spool_attach_config acfg = {.max_buffer_bytes = c->rt->cfg.send_buffer_bytes};
    if (spool_attach_start(&t->a, c->rt->node, channel, from, &acfg, &rt_att_events, t, &err) != 0) {
        rt_send_error(c, rt_code_of(err.code), err.msg, json_pack("{s:s}", "channel", channel));
        free(t->channel);
        free(t);
        return -1;
    }
    t->next = c->atts;
    c->atts = t;
    c->n_atts++;
    c->key_dirty = true;
    return 0;
}

/* ---- publishing ------------------------------------------------------------------------------ */

struct rt_pub {
    struct rt_conn *c;
    json_int_t msg_serial; /* -1: presence without msgSerial (no ack; errors as "error") */
    uint64_t bytes;        /* data bytes published, for the metrics */
    char *channel;         /* presence: the member this publish enters/updates */
    char *client_id;
};

static void on_published(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                         const bool *duplicate, size_t n)
{
    struct rt_pub *p = arg;
    struct rt_conn *c = p->c;
    if (status == 0 && c->open) {
        /* c->rt outlives every open connection */
        if (c->rt->counters.messages_in != NULL)
            spool_counter_add(c->rt->counters.messages_in, (double)n);
        if (c->rt->counters.bytes_in != NULL)
            spool_counter_add(c->rt->counters.bytes_in, (double)p->bytes);
    }
    if (c->open && status == 0 && p->channel != NULL && n == 1) {
        struct rt_entered *e = *entered_find(&c->entered, p->channel, p->client_id);
        if (e != NULL && seqs[0] > e->serial)
            e->serial = seqs[0];
    }
    if (c->open && p->msg_serial < 0) {
        if (status != 0)
            rt_send_error(c, rt_code_of(status),
                          err != NULL && err->msg[0] ? err->msg : spool_err_name(status),
                          json_pack("{s:s}", "channel", p->channel ? p->channel : ""));
    } else if (c->open) {
        if (status == 0) {
            json_t *serials = json_array(), *dups = json_array();
            bool any_dup = false;
            for (size_t i = 0; i < n; i++) {
                json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
                json_array_append_new(dups, json_boolean(duplicate[i]));
                any_dup = any_dup || duplicate[i];
            }
            json_t *o = json_pack("{s:s,s:I,s:o}", "type", "ack", "msgSerial", p->msg_serial,
                                  "serials", serials);
            if (any_dup && o != NULL)
                json_object_set_new(o, "duplicates", dups);
            else
                json_decref(dups);
            rt_send_json(c, o);
        } else {
            const char *msg = err != NULL && err->msg[0] ? err->msg : spool_err_name(status);
            rt_send_json(c, json_pack("{s:s,s:I,s:{s:i,s:s}}", "type", "nack", "msgSerial",
                                      p->msg_serial, "error", "code", rt_code_of(status),
                                      "message", msg));
        }
    }
    free(p->channel);
    free(p->client_id);
    free(p);
    rt_conn_unref(c);
}

static void rt_nack(struct rt_conn *c, json_int_t msg_serial, int code, const char *message)
{
    rt_send_json(c, json_pack("{s:s,s:I,s:{s:i,s:s}}", "type", "nack", "msgSerial", msg_serial,
                              "error", "code", code, "message", message));
}

static bool rt_take_tokens(struct rt_conn *c, size_t n)
{
    uint64_t rate = c->rt->cfg.rate_per_second;
    if (rate == 0)
        return true;
    uint64_t now = uv_now(c->rt->loop);
    c->tokens += (double)(now - c->tokens_at) * (double)rate / 1000.0;
    if (c->tokens > (double)rate)
        c->tokens = (double)rate;
    c->tokens_at = now;
    if (c->tokens < (double)n)
        return false;
    c->tokens -= (double)n;
    return true;
}

/* One message object into `rec`, with the same storage rules as the REST API (gateway/
 * http_api.c): a JSON string is stored as its UTF-8 bytes (text/plain), any other JSON value as
 * its compact serialisation (application/json), no data as nothing; extras is a JSON object.
 * Buffers to free go to owned[0..1]. Returns NULL, or a message with *code set. */
static const char *rt_message_from_json(struct rt_conn *c, json_t *m, Spool__Record *rec,
                                        char **owned, int *code)
{
    const struct spool_realtime_config *cfg = &c->rt->cfg;
    *code = SPOOL_RT_EBAD_MESSAGE;
    if (!json_is_object(m))
        return "each message must be a JSON object";
    spool__record__init(rec);
    rec->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    rec->version = 1;
    rec->connection_id = c->id;
    json_t *v;
    if ((v = json_object_get(m, "id")) != NULL) {
        if (!json_is_string(v) || json_string_length(v) > cfg->max_field_bytes)
            return "id must be a string of at most max-field-bytes";
        rec->id = (char *)json_string_value(v);
    }
    if ((v = json_object_get(m, "name")) != NULL) {
        if (!json_is_string(v) || json_string_length(v) > cfg->max_field_bytes)
            return "name must be a string of at most max-field-bytes";
        rec->name = (char *)json_string_value(v);
    }
    if ((v = json_object_get(m, "clientId")) != NULL) {
        if (!json_is_string(v) || json_string_length(v) > SPOOL_CLIENT_ID_MAX)
            return "clientId must be a string";
        if (c->principal.client_id[0] != '\0' &&
            strcmp(c->principal.client_id, json_string_value(v)) != 0) {
            *code = SPOOL_RT_EFORBIDDEN;
            return "clientId does not match the credentials' client id";
        }
        rec->client_id = (char *)json_string_value(v);
    } else {
        rec->client_id = c->principal.client_id;
    }
    if ((v = json_object_get(m, "data")) != NULL) {
        if (json_is_string(v)) {
            rec->data.data = (uint8_t *)json_string_value(v);
            rec->data.len = json_string_length(v);
            rec->content_type = "text/plain";
        } else {
            size_t len = 0;
            if ((owned[0] = spool_json_dump(v, &len)) == NULL) {
                *code = SPOOL_RT_EINTERNAL;
                return "out of memory";
            }
            rec->data.data = (uint8_t *)owned[0];
            rec->data.len = len;
            rec->content_type = "application/json";
        }
    }
    if ((v = json_object_get(m, "extras")) != NULL) {
        size_t len = 0;
        if (!json_is_object(v))
            return "extras must be a JSON object";
        if ((owned[1] = spool_json_dump(v, &len)) == NULL) {
            *code = SPOOL_RT_EINTERNAL;
            return "out of memory";
        }
        rec->extras.data = (uint8_t *)owned[1];
        rec->extras.len = len;
    }
    if (rec->data.len + rec->extras.len > cfg->max_message_bytes) {
        *code = SPOOL_RT_ETOO_LARGE;
        return "message data and extras exceed max-message-bytes";
    }
    return NULL;
}

static void rt_publish(struct rt_conn *c, json_t *msg)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) ? json_integer_value(jserial) : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    json_t *messages = json_object_get(msg, "messages");
    if (msg_serial < 0) {
        rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "publish needs an integer msgSerial >= 0", NULL);
        return;
    }
    const char *why = "channel missing";
    if (channel == NULL || !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        rt_nack(c, msg_serial, SPOOL_RT_EBAD_CHANNEL, why);
        return;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        rt_nack(c, msg_serial, SPOOL_RT_EBAD_MESSAGE, "messages must be a non-empty array");
        return;
    }
    size_t n = json_array_size(messages);
    if (n > c->rt->cfg.max_batch) {
        rt_nack(c, msg_serial, SPOOL_RT_ETOO_LARGE + 2, "too many messages in one publish");
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PUBLISH, &err) != SPOOL_AUTH_OK) {
        rt_nack(c, msg_serial, SPOOL_RT_EFORBIDDEN, err.msg);
        return;
    }
    if (!rt_take_tokens(c, n)) {
        rt_nack(c, msg_serial, SPOOL_RT_ERATE, "publish rate limit exceeded");
        return;
    }
    Spool__Record *recs = calloc(n, sizeof *recs);
    const Spool__Record **ptrs = calloc(n, sizeof *ptrs);
    char **owned = calloc(2 * n, sizeof *owned);
    struct rt_pub *p = malloc(sizeof *p);
    int code = 0;
    const char *message = NULL;
    if (recs == NULL || ptrs == NULL || owned == NULL || p == NULL) {
        code = SPOOL_RT_EINTERNAL;
        message = "out of memory";
    }
    for (size_t i = 0; i < n && code == 0; i++) {
        message = rt_message_from_json(c, json_array_get(messages, i), &recs[i], &owned[2 * i], &code);
        if (message == NULL)
            code = 0;
        else if (code == 0)
            code = SPOOL_RT_EBAD_MESSAGE;
        ptrs[i] = &recs[i];
    }
    if (code == 0) {
        p->c = c;
        p->msg_serial = msg_serial;
        p->channel = p->client_id = NULL;
        p->bytes = 0;
        for (size_t i = 0; i < n; i++)
            p->bytes += recs[i].data.len;
        c->refs++;
        int rv = spool_node_publish(c->rt->node, channel, (const Spool__Record *const *)ptrs, n,
                                    on_published, p);
        if (rv != 0) {
            c->refs--;
            code = rt_code_of(rv);
            message = "publish could not start";
        } else {
            p = NULL; /* owned by the completion */
        }
    }
    if (code != 0)
        rt_nack(c, msg_serial, code, message);
    for (size_t i = 0; owned != NULL && i < 2 * n; i++)
        free(owned[i]);
    free(owned);
    free(ptrs);
    free(recs);
    free(p);
}

/* ---- presence -------------------------------------------------------------------------------- */

/* {"type":"presence","channel","action":"enter"|"update"|"leave","data"?,"clientId"?,
 *  "msgSerial"?}: one presence record, published like a message (same data rules). */
static void rt_presence(struct rt_conn *c, json_t *msg)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) && json_integer_value(jserial) >= 0
                                ? json_integer_value(jserial)
                                : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *action = json_string_value(json_object_get(msg, "action"));
    const char *why = "channel missing";
    if (channel == NULL || !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    json_t *jch = json_pack("{s:s}", "channel", channel);
    if (!spool_presence_action_valid(action)) {
        rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "action must be enter, update or leave", jch);
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PRESENCE, &err) != SPOOL_AUTH_OK) {
        rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, jch);
        return;
    }
    Spool__Record rec;
    char *owned[2] = {NULL, NULL};
    int code = 0;
    const char *problem = rt_message_from_json(c, msg, &rec, owned, &code);
    if (problem == NULL && (rec.client_id == NULL || rec.client_id[0] == '\0')) {
        problem = "presence needs a clientId (from the credentials or the message)";
        code = SPOOL_RT_EBAD_MESSAGE;
    }
    if (problem == NULL && !rt_take_tokens(c, 1)) {
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
        rec.id = "";
        p->c = c;
        p->msg_serial = msg_serial;
        p->bytes = rec.data.len;
        entered_note(c, channel, rec.client_id, strcmp(action, "leave") == 0);
        const Spool__Record *recs[1] = {&rec};
        c->refs++;
        int rv = spool_node_publish(c->rt->node, channel, recs, 1, on_published, p);
        if (rv == 0) {
            p = NULL;
        } else {
            c->refs--;
            problem = "presence could not be published";
            code = rt_code_of(rv);
        }
    }
    if (problem != NULL) {
        if (msg_serial >= 0) {
            rt_nack(c, msg_serial, code, problem);
            json_decref(jch);
        } else {
            rt_send_error(c, code, problem, jch);
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
        rt_send_json(c, json_pack("{s:s,s:s,s:I,s:o}", "type", "presence.members", "channel",
                                  y->channel, "serial", (json_int_t)set->serial, "members",
                                  spool_presence_set_json(set)));
    else
        rt_send_error(c, rt_code_of(status), err->msg, json_pack("{s:s}", "channel", y->channel));
    free(y->channel);
    free(y);
}

/* {"type":"presence.get","channel"}: the members, valid at a serial (see gateway/presence.h). */
static void rt_presence_get(struct rt_conn *c, json_t *msg)
{
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *why = "channel missing";
    if (channel == NULL || !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_SUBSCRIBE, &err) != SPOOL_AUTH_OK) {
        rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, json_pack("{s:s}", "channel", channel));
        return;
    }
    struct rt_sync *y = calloc(1, sizeof *y);
    if (y == NULL || (y->channel = strdup(channel)) == NULL) {
        free(y);
        rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    y->c = c;
    if (spool_presence_sync(&y->sync, c->rt->node, channel, RT_PRESENCE_SCAN_MAX,
                            on_presence_synced, y, &err) != 0) {
        rt_send_error(c, rt_code_of(err.code), err.msg, json_pack("{s:s}", "channel", channel));
        free(y->channel);
        free(y);
        return;
    }
    y->next = c->syncs;
    c->syncs = y;
}

/* ---- resume ---------------------------------------------------------------------------------- */

/* Resumes from `key`; `serials` (may be NULL) maps channel -> last serial the client processed. */
static void rt_resume(struct rt_conn *c, const char *key, json_t *serials)
{
    struct spool_realtime *rt = c->rt;
    struct spool_resume_state s;
    spool_resume_state_init(&s);
    struct spool_err err;
    int rv = spool_resume_decode(rt->secret, key, strlen(key), spool_auth_now_ms(), &s, &err);
    if (rv == SPOOL_ETIMEOUT) {
        json_t *chs = json_object();
        for (size_t i = 0; i < s.n; i++)
            json_object_set_new(chs, s.atts[i].channel, json_integer((json_int_t)s.atts[i].serial));
        rt_send_error(c, SPOOL_RT_ERESUME_EXPIRED,
                      "resume window passed: attach again from your last serials",
                      json_pack("{s:o}", "channels", chs));
        goto out;
    }
    if (rv != 0) {
        rt_send_error(c, SPOOL_RT_EBAD_RESUME, err.msg, NULL);
        goto out;
    }
    if (strcmp(s.key_name, c->principal.key_name) != 0 ||
        strcmp(s.client_id, c->principal.client_id) != 0) {
        rt_send_error(c, SPOOL_RT_ERESUME_IDENTITY, "resume key belongs to another identity", NULL);
        goto out;
    }
    /* The old connection may still be open here (a half-open TCP): it is replaced, and its
     * presence members carry over; or it already dropped and its members wait for us. */
    memcpy(c->id, s.connection_id, sizeof c->id);
    bool replaced = false;
    for (struct rt_conn *o = rt->conns; o != NULL; o = o->next) {
        if (o != c && o->open && strcmp(o->id, s.connection_id) == 0) {
            entered_free(c->entered);
            c->entered = o->entered;
            o->entered = NULL;
            spool_ws_close(&o->ws, 4000, "resumed by another connection");
            replaced = true;
            break;
        }
    }
    if (!replaced)
        rt_adopt_leave(c);
    json_t *from = json_object();
    for (size_t i = 0; i < s.n; i++) {
        json_t *js = serials != NULL ? json_object_get(serials, s.atts[i].channel) : NULL;
        uint64_t serial = json_is_integer(js) && json_integer_value(js) >= 0
                              ? (uint64_t)json_integer_value(js)
                              : s.atts[i].serial;
        json_object_set_new(from, s.atts[i].channel, json_integer((json_int_t)serial));
    }
    rt_send_json(c, json_pack("{s:s,s:s,s:O}", "type", "resumed", "connectionId", c->id,
                              "channels", from));
    if (rt->counters.resumes != NULL)
        spool_counter_inc(rt->counters.resumes);
    const char *ch;
    json_t *v;
    json_object_foreach(from, ch, v)
    {
        struct spool_from f = {SPOOL_FROM_SERIAL, (uint64_t)json_integer_value(v)};
        rt_attach(c, ch, f);
    }
    json_decref(from);
    rt_send_resume_key(c);
out:
    spool_resume_state_close(&s);
}

/* ---- messages -------------------------------------------------------------------------------- */

static void on_ws_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct rt_conn *c = ws->data;
    bool first = c->resumable;
    c->resumable = false;
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)data, len, 0, &jerr);
    if (msg == NULL || !json_is_object(msg)) {
        rt_send_error(c, SPOOL_RT_EBAD_JSON, msg == NULL ? jerr.text : "expected a JSON object",
                      NULL);
        json_decref(msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (type == NULL) {
        rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "type missing", NULL);
    } else if (strcmp(type, "attach") == 0) {
        const char *channel = json_string_value(json_object_get(msg, "channel"));
        struct spool_from from;
        if (channel == NULL)
            rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, "channel missing", NULL);
        else if (spool_rt_parse_from(json_object_get(msg, "from"), &from) != 0)
            rt_send_error(c, SPOOL_RT_EBAD_MESSAGE,
                          "from must be \"live\", \"start\", a serial or {\"last\":N}",
                          json_pack("{s:s}", "channel", channel));
        else if (rt_attach(c, channel, from) == 0)
            rt_send_resume_key(c);
    } else if (strcmp(type, "detach") == 0) {
        const char *channel = json_string_value(json_object_get(msg, "channel"));
        struct rt_att *t = channel != NULL ? rt_att_find(c, channel) : NULL;
        if (t == NULL) {
            rt_send_error(c, SPOOL_RT_ENOT_ATTACHED, "not attached",
                          channel ? json_pack("{s:s}", "channel", channel) : NULL);
        } else {
            rt_att_remove(c, t);
            rt_send_json(c, json_pack("{s:s,s:s}", "type", "detached", "channel", channel));
            rt_send_resume_key(c);
        }
    } else if (strcmp(type, "publish") == 0) {
        rt_publish(c, msg);
    } else if (strcmp(type, "resume") == 0) {
        const char *key = json_string_value(json_object_get(msg, "resumeKey"));
        json_t *serials = json_object_get(msg, "serials");
        if (!first || c->n_atts > 0)
            rt_send_error(c, SPOOL_RT_EBAD_RESUME, "resume must be the first message", NULL);
        else if (key == NULL || (serials != NULL && !json_is_object(serials)))
            rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "resume needs resumeKey and an optional serials object", NULL);
        else
            rt_resume(c, key, serials);
    } else if (strcmp(type, "presence") == 0) {
        rt_presence(c, msg);
    } else if (strcmp(type, "presence.get") == 0) {
        rt_presence_get(c, msg);
    } else if (strcmp(type, "ping") == 0) {
        rt_send_json(c, json_pack("{s:s}", "type", "pong"));
    } else {
        rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "unknown message type",
                      json_pack("{s:s}", "received", type));
    }
    json_decref(msg);
}

/* ---- refresh, shutdown ----------------------------------------------------------------------- */

/* On the refresh cadence: connections whose JWT has expired are closed (the client reconnects
 * with a fresh token and resumes); the others get a fresh resume key. */
static void on_refresh(uv_timer_t *t)
{
    struct spool_realtime *rt = t->data;
    int64_t now = spool_auth_now_ms();
    for (struct rt_conn *c = rt->conns; c != NULL; c = c->next) {
        if (!c->open || spool_ws_is_closing(&c->ws))
            continue;
        if (c->principal.expires_at_ms != 0 && now >= c->principal.expires_at_ms) {
            rt_send_resume_key(c); /* so the client can resume once it has a new token */
            rt_send_error(c, SPOOL_AUTH_EXPIRED, spool_auth_message(SPOOL_AUTH_EXPIRED), NULL);
            spool_ws_close(&c->ws, 1008, "token expired");
            continue;
        }
        rt_send_resume_key(c);
    }
}

int spool_realtime_init(struct spool_realtime **out, uv_loop_t *loop, struct spool_node *node,
                        const struct spool_keyring *keys, const struct spool_realtime_config *cfg,
                        const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], struct spool_err *err)
{
    struct spool_realtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "realtime: out of memory");
    rt->loop = loop;
    rt->node = node;
    rt->keys = keys;
    rt->cfg = *cfg;
    memcpy(rt->secret, secret, SPOOL_RESUME_SECRET_BYTES);
    uv_timer_init(loop, &rt->refresh);
    rt->refresh.data = rt;
    uint64_t every = cfg->resume_window_ms / 4;
    if (cfg->heartbeat_ms != 0 && cfg->heartbeat_ms < every)
        every = cfg->heartbeat_ms;
    if (every > 0)
        uv_timer_start(&rt->refresh, on_refresh, every, every);
    uv_unref((uv_handle_t *)&rt->refresh);
    *out = rt;
    return 0;
}

size_t spool_realtime_connections(const struct spool_realtime *rt)
{
    return rt->n_conns;
}

static void on_refresh_closed(uv_handle_t *h)
{
    struct spool_realtime *rt = h->data;
    rt_cache_clear(rt);
    void (*cb)(void *) = rt->close_cb;
    void *arg = rt->close_arg;
    free(rt);
    if (cb != NULL)
        cb(arg);
}

static void rt_maybe_finish_close(struct spool_realtime *rt)
{
    if (rt->closing && rt->n_conns == 0 && !uv_is_closing((uv_handle_t *)&rt->refresh))
        uv_close((uv_handle_t *)&rt->refresh, on_refresh_closed);
}

void spool_realtime_close(struct spool_realtime *rt, void (*cb)(void *arg), void *arg)
{
    rt->closing = true;
    rt->close_cb = cb;
    rt->close_arg = arg;
    /* Members of dropped connections leave now: no resume will come to this node any more. */
    while (rt->leaves != NULL) {
        struct rt_leave *l = rt->leaves;
        uv_timer_stop(&l->timer);
        rt_leave_all(rt, l->id, l->entered, l->died_at_ms);
        l->entered = NULL;
        rt_leave_unlink(rt, l);
    }
    for (struct rt_conn *c = rt->conns; c != NULL; c = c->next)
        spool_ws_close(&c->ws, 1001, "server shutting down");
    rt_maybe_finish_close(rt);
}

/* ---- the upgrade ----------------------------------------------------------------------------- */

static void on_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static void on_handshake_written(uv_write_t *req, int status)
{
    free(req);
}

int spool_rt_authenticate(const struct spool_keyring *keys, struct spool_http_req *req,
                          struct spool_principal *p, struct spool_err *err)
{
    char cred[4096];
    long n = spool_http_query_get(req->query, "key", cred, sizeof cred);
    if (n == -1)
        n = spool_http_query_get(req->query, "token", cred, sizeof cred);
    if (n == -2) {
        spool_err_set(err, SPOOL_EDENIED, "credential in the query does not decode");
        return SPOOL_AUTH_MALFORMED;
    }
    int64_t now = spool_auth_now_ms();
    if (n >= 0)
        return spool_auth_credential(keys, cred, now, p, err);
    return spool_auth_header(keys, spool_http_req_header(req, "Authorization"), now, p, err);
}

static void rt_conn_id(char out[SPOOL_CONNECTION_ID_MAX + 1])
{
    uint8_t raw[12];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        static uint64_t counter;
        uint64_t v = uv_hrtime() ^ ++counter;
        memcpy(raw, &v, 8);
        memset(raw + 8, 0, 4);
    }
    spool_base64url_encode(raw, sizeof raw, out, SPOOL_CONNECTION_ID_MAX + 1);
}

void spool_realtime_handle(void *arg, struct spool_http_req *req)
{
    struct spool_realtime *rt = arg;
    const char *upgrade = spool_http_req_header(req, "Upgrade");
    const char *key = spool_http_req_header(req, "Sec-WebSocket-Key");
    const char *version = spool_http_req_header(req, "Sec-WebSocket-Version");
    if (!req->upgrade || upgrade == NULL || strcasecmp(upgrade, "websocket") != 0 || key == NULL) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_REQUEST,
                                 "GET /v1/realtime needs a WebSocket upgrade");
        return;
    }
    if (version == NULL || strcmp(version, "13") != 0) {
        static const struct spool_http_header h[] = {{"Sec-WebSocket-Version", "13"}};
        spool_http_respond(req, 426, h, 1, "", 0);
        return;
    }
    char response[256];
    int rlen = spool_ws_handshake_response(key, strlen(key), response, sizeof response);
    if (rlen < 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_REQUEST, "bad Sec-WebSocket-Key");
        return;
    }
    if (rt->closing || (rt->cfg.max_connections != 0 && rt->n_conns >= rt->cfg.max_connections)) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE, "too many realtime connections");
        return;
    }
    struct rt_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    spool_principal_init(&c->principal);
    struct spool_err err;
    int auth = spool_rt_authenticate(rt->keys, req, &c->principal, &err);
    if (auth != SPOOL_AUTH_OK) {
        spool_principal_close(&c->principal);
        free(c);
        spool_http_respond_error(req, spool_auth_status(auth), auth, "%s", spool_auth_message(auth));
        return;
    }
    char resume_key[RT_QUERY_MAX], serials_text[RT_QUERY_MAX];
    long rk = spool_http_query_get(req->query, "resume", resume_key, sizeof resume_key);
    long sl = spool_http_query_get(req->query, "serials", serials_text, sizeof serials_text);
    json_t *serials = sl >= 0 ? json_loads(serials_text, 0, NULL) : NULL;
    if (rk == -2 || sl == -2 || (sl >= 0 && !json_is_object(serials))) {
        json_decref(serials);
        spool_principal_close(&c->principal);
        free(c);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "resume must be a key and serials a JSON object");
        return;
    }
    char *leftover = NULL;
    size_t leftover_len = 0;
    if (spool_http_upgrade(req, &c->tcp, &leftover, &leftover_len, &err) != 0) {
        json_decref(serials);
        spool_principal_close(&c->principal);
        free(c);
        return;
    }
    uv_write_t *w = malloc(sizeof *w + (size_t)rlen);
    uv_buf_t buf = uv_buf_init((char *)(w + 1), (unsigned)rlen);
    if (w != NULL) {
        memcpy(w + 1, response, (size_t)rlen);
        if (uv_write(w, (uv_stream_t *)c->tcp, &buf, 1, on_handshake_written) != 0)
            free(w);
    }
    c->rt = rt;
    c->refs = 1;
    c->open = true;
    c->resumable = true;
    c->tokens = (double)rt->cfg.rate_per_second;
    c->tokens_at = uv_now(rt->loop);
    rt_conn_id(c->id);
    c->ws.data = c;
    struct spool_ws_config wcfg = {
        .max_frame_bytes = rt->cfg.max_frame_bytes,
        .max_message_bytes = rt->cfg.max_frame_bytes,
        .send_buffer_bytes = rt->cfg.send_buffer_bytes,
        .heartbeat_ms = rt->cfg.heartbeat_ms,
    };
    /* Linked first: leftover frames are parsed inside spool_ws_start. */
    c->next = rt->conns;
    if (rt->conns != NULL)
        rt->conns->prev = c;
    rt->conns = c;
    rt->n_conns++;
    json_t *hello = json_pack(
        "{s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I,s:I}}", "type", "connected", "connectionId", c->id,
        "clientId", c->principal.client_id, "limits", "maxMessageBytes",
        (json_int_t)rt->cfg.max_message_bytes, "maxFrameBytes", (json_int_t)rt->cfg.max_frame_bytes,
        "maxChannels", (json_int_t)rt->cfg.max_channels, "resumeWindowMs",
        (json_int_t)rt->cfg.resume_window_ms, "heartbeatMs", (json_int_t)rt->cfg.heartbeat_ms);
    /* The WebSocket needs to be started to send; buffered frames wait in `leftover`. */
    if (spool_ws_start(&c->ws, (uv_stream_t *)c->tcp, NULL, 0, &wcfg, &rt_ws_events, &err) != 0) {
        SPOOL_WARN("rt.start_failed", "err=%s", err.msg);
        json_decref(hello);
        json_decref(serials);
        free(leftover);
        c->open = false;
        rt->conns = c->next;
        if (c->next != NULL)
            c->next->prev = NULL;
        rt->n_conns--;
        uv_close((uv_handle_t *)c->tcp, on_tcp_closed);
        c->tcp = NULL;
        rt_conn_unref(c);
        return;
    }
    if (rk >= 0) {
        /* Connected with ?resume=: "connected" then the outcome of the resume. */
        c->resumable = false;
        rt_send_json(c, hello);
        rt_resume(c, resume_key, serials);
    } else {
        rt_send_json(c, hello);
        rt_send_resume_key(c);
    }
    json_decref(serials);
    SPOOL_DEBUG("rt.connected", "conn=%s", c->id);
    if (leftover_len > 0)
        spool_ws_feed(&c->ws, (const uint8_t *)leftover, leftover_len);
    free(leftover);
}

/* ---- wiring ---------------------------------------------------------------------------------- */

int spool_realtime_mount(struct spool_realtime_mount *m, uv_loop_t *loop,
                         const struct spool_options *o, struct spool_node *node,
                         const struct spool_keyring *keys, struct spool_http_router *router,
                         struct spool_err *err)
{
    memset(m, 0, sizeof *m);
    uint8_t secret[SPOOL_RESUME_SECRET_BYTES];
    int rv = spool_resume_secret(NULL, o->data, secret, err);
    if (rv != 0)
        return rv;
    struct spool_realtime_config cfg = {
        .max_message_bytes = o->max_message_bytes,
        .max_frame_bytes = o->max_frame_bytes,
        .max_channels = o->max_channels_per_connection,
        .send_buffer_bytes = o->send_buffer_bytes,
        .heartbeat_ms = o->heartbeat_interval_ms,
        .resume_window_ms = o->resume_window_ms,
        .rate_per_second = o->rate_per_connection,
        .max_connections = o->max_connections,
        .max_batch = o->max_publish_batch,
        .max_field_bytes = o->max_field_bytes,
        .presence_timeout_ms = o->presence_timeout_ms,
    };
    if ((rv = spool_realtime_init(&m->rt, loop, node, keys, &cfg, secret, err)) != 0)
        return rv;
    struct spool_sse_config scfg = {
        .heartbeat_ms = o->heartbeat_interval_ms,
        .retry_ms = 1000,
        .send_buffer_bytes = o->send_buffer_bytes,
    };
    spool_sse_init(&m->sse, loop, node, keys, &scfg);
    if ((rv = spool_http_router_add(router, "GET", "/v1/realtime", spool_realtime_handle, m->rt,
                                    err)) != 0 ||
        (rv = spool_http_router_add(router, "GET", "/v1/channels/{channel}/events",
                                    spool_sse_handle, &m->sse, err)) != 0)
        return rv;
    return 0;
}

void spool_realtime_set_counters(struct spool_realtime_mount *m,
                                 const struct spool_realtime_counters *c)
{
    if (m->rt != NULL)
        m->rt->counters = *c;
    m->sse.messages_out = c->sse_out;
}

void spool_realtime_unmount(struct spool_realtime_mount *m, void (*cb)(void *arg), void *arg)
{
    struct spool_realtime *rt = m->rt;
    m->rt = NULL;
    if (rt != NULL)
        spool_realtime_close(rt, cb, arg);
    else if (cb != NULL)
        cb(arg);
}
