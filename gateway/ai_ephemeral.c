/*
 * Ephemeral messages and interrupts (see ai_ephemeral.h). The message becomes a Record that is
 * never stored (id "ephemeral" | "interrupt", name, data as JSON, client id, the sender's
 * connection id, timestamp): the event is built once and sent to each connection of this node
 * attached to the channel, except the sender, through its send buffer like any event; the node
 * sends the record to the storage nodes (spool_node_ephemeral), whose realtime servers get it
 * through spool_ai_ephemeral_arrived and do the same for their connections; gateway-only nodes
 * get it on their follow polls (cluster/conversation_ephemeral.c), and drop the ones that come
 * back to the node they were sent from (the sender's connection is one of its own).
 *
 * An interrupt is for the channel's turn holder only. Before sending it the node asks the shard
 * leader for the turn (spool_node_read with .turn: the state machine's holder, epoch, lease); no
 * live holder -> nack 40901 and nothing is sent. Otherwise the record carries the holder and
 * epoch (extras {"holder","epoch"}, turn_epoch) and every node delivers it only to connections
 * attached to the channel whose client id is the holder. Observers are not sent it: they see its
 * effect in the log (the responder ends its message, e.g. extras {"final":true,
 * "reason":"interrupted"}). The sender's ack says whom it went to.
 *
 * SSE streams (gateway/sse.h) attached to the channel on this loop get the same events, with the
 * same rules: every ephemeral, and an interrupt when the stream's client id (credentials, else
 * ?clientId=, spool_ai_query_client_id) is the holder. They are counted in the ack's "delivered".
 */
#include "gateway/ai_ephemeral.h"

#include <stdlib.h>
#include <string.h>

#include "gateway/auth.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/realtime_int.h"
#include "gateway/sse.h"

static bool attached(const struct rt_conn *c, const char *channel)
{
    for (const struct rt_att *t = c->atts; t != NULL; t = t->next)
        if (strcmp(t->channel, channel) == 0)
            return true;
    return false;
}

/* The event clients see for an ephemeral record (see the header); new reference or NULL. */
static json_t *event_of(const Spool__Record *rec)
{
    bool interrupt = rec->id != NULL && strcmp(rec->id, "interrupt") == 0;
    json_t *data = rec->data.len ? json_loadb((const char *)rec->data.data, rec->data.len,
                                              JSON_DECODE_ANY, NULL)
                                 : json_null();
    json_t *ev = json_pack("{s:s,s:s,s:o,s:I}", "type", interrupt ? "interrupt" : "ephemeral",
                           "channel", rec->channel, "data", data ? data : json_null(), "timestamp",
                           (json_int_t)rec->timestamp_ms);
    if (ev == NULL)
        return NULL;
    if (rec->name != NULL && rec->name[0] != '\0')
        json_object_set_new(ev, "name", json_string(rec->name));
    if (rec->client_id != NULL && rec->client_id[0] != '\0')
        json_object_set_new(ev, "clientId", json_string(rec->client_id));
    if (interrupt) {
        json_object_set_new(ev, "to", json_string("turn"));
        json_t *x = json_loadb((const char *)rec->extras.data, rec->extras.len, 0, NULL);
        json_t *h = json_object_get(x, "holder");
        if (json_is_string(h))
            json_object_set(ev, "holder", h);
        json_object_set_new(ev, "epoch", json_integer((json_int_t)rec->turn_epoch));
        json_decref(x);
    }
    return ev;
}

/* The holder an interrupt is for (extras {"holder"}); a new string or NULL (not an interrupt). */
static char *target_of(const Spool__Record *rec)
{
    if (rec->id == NULL || strcmp(rec->id, "interrupt") != 0)
        return NULL;
    json_t *x = json_loadb((const char *)rec->extras.data, rec->extras.len, 0, NULL);
    const char *h = json_string_value(json_object_get(x, "holder"));
    char *t = strdup(h != NULL ? h : "");
    json_decref(x);
    return t;
}

/* Sends the event to every connection of this node attached to the channel but `except` (an
 * interrupt: only to the holder's connections), and to this loop's SSE streams on the channel
 * (the same JSON object as `event: ephemeral|interrupt`, no id: line; see gateway/sse.h).
 * Returns how many connections and streams it was queued on. */
static size_t fanout(struct spool_realtime *rt, const Spool__Record *rec, const struct rt_conn *except)
{
    json_t *ev = event_of(rec);
    char *target = target_of(rec);
    size_t n = 0;
    for (struct rt_conn *o = rt->conns; ev != NULL && o != NULL; o = o->next) {
        if (o == except || !o->open || !attached(o, rec->channel))
            continue;
        if (target != NULL && (target[0] == '\0' || strcmp(o->principal.client_id, target) != 0))
            continue;
        spool_rt_send_json(o, json_incref(ev));
        n++;
    }
    if (ev != NULL && rt->sse != NULL && spool_sse_has_streams(rt->sse, rec->channel)) {
        size_t len = 0;
        char *json = spool_json_dump(ev, &len);
        if (json != NULL)
            n += spool_sse_ephemeral(rt->sse, rec->channel, target != NULL ? "interrupt" : "ephemeral",
                                     target, json, len);
        free(json);
    }
    free(target);
    json_decref(ev);
    return n;
}

int spool_ai_query_client_id(const struct spool_http_req *req, struct spool_principal *p)
{
    if (p->client_id[0] != '\0')
        return 0;
    char qcid[SPOOL_CLIENT_ID_MAX + 1];
    long qn = spool_http_query_get(req->query, "clientId", qcid, sizeof qcid);
    if (qn == -2 || qn == 0)
        return -1;
    if (qn > 0)
        memcpy(p->client_id, qcid, (size_t)qn + 1);
    return 0;
}

void spool_ai_ephemeral_arrived(void *arg, const Spool__Record *rec)
{
    struct spool_realtime *rt = arg;
    if (rt->closing)
        return;
    /* Back at the node it was sent from (a gateway-only node's follow poll brings its own
     * ephemerals too): its connections already have it. */
    if (rec->connection_id != NULL && rec->connection_id[0] != '\0')
        for (const struct rt_conn *o = rt->conns; o != NULL; o = o->next)
            if (strcmp(o->id, rec->connection_id) == 0)
                return;
    fanout(rt, rec, NULL);
}

/* An interrupt waiting for the turn lookup. */
struct intr {
    struct rt_conn *c;
    json_int_t msg_serial;
    Spool__Record rec; /* strings owned below */
    char *channel, *name, *client_id;
    uint8_t *data;
};

static void intr_free(struct intr *x)
{
    free(x->channel);
    free(x->name);
    free(x->client_id);
    free(x->data);
    free(x->rec.extras.data);
    free(x);
}

static void send_ephemeral(struct rt_conn *c, json_int_t msg_serial, Spool__Record *rec,
                           const char *holder)
{
    size_t n = fanout(c->rt, rec, c);
    int rv = spool_node_ephemeral(c->rt->node, rec); /* the other nodes' connections */
    if (msg_serial < 0)
        return;
    if (rv != 0) {
        spool_rt_nack(c, msg_serial, spool_rt_code_of(rv), "ephemeral message not sent to the cluster");
        return;
    }
    json_t *ack = json_pack("{s:s,s:I,s:[],s:I}", "type", "ack", "msgSerial", msg_serial, "serials",
                            "delivered", (json_int_t)n);
    if (ack != NULL && holder != NULL) {
        json_object_set_new(ack, "holder", json_string(holder));
        json_object_set_new(ack, "epoch", json_integer((json_int_t)rec->turn_epoch));
    }
    spool_rt_send_json(c, ack);
}

static void on_turn(void *arg, int status, const struct spool_err *err,
                    const Spool__Record *const *recs, size_t n, uint64_t first_seq, uint64_t last_seq)
{
    struct intr *x = arg;
    struct rt_conn *c = x->c;
    (void)first_seq, (void)last_seq;
    if (c->open && !c->rt->closing) {
        if (status != 0) {
            if (x->msg_serial >= 0)
                spool_rt_nack(c, x->msg_serial, spool_rt_code_of(status),
                              err != NULL && err->msg[0] ? err->msg : "the turn could not be read");
            else
                spool_rt_send_error(c, spool_rt_code_of(status), "the turn could not be read",
                                    json_pack("{s:s}", "channel", x->channel));
        } else if (n == 0 || recs[0]->client_id == NULL || recs[0]->client_id[0] == '\0') {
            if (x->msg_serial >= 0)
                spool_rt_nack(c, x->msg_serial, SPOOL_RT_ENO_TURN,
                              "nobody holds the turn: nothing to interrupt");
            else
                spool_rt_send_error(c, SPOOL_RT_ENO_TURN, "nobody holds the turn: nothing to interrupt",
                                    json_pack("{s:s}", "channel", x->channel));
        } else {
            json_t *ex = json_pack("{s:s,s:I}", "holder", recs[0]->client_id, "epoch",
                                   (json_int_t)recs[0]->turn_epoch);
            size_t len = 0;
            char *bytes = ex != NULL ? spool_json_dump(ex, &len) : NULL;
            json_decref(ex);
            if (bytes == NULL) {
                spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
            } else {
                x->rec.extras.data = (uint8_t *)bytes;
                x->rec.extras.len = len;
                x->rec.turn_epoch = recs[0]->turn_epoch;
                send_ephemeral(c, x->msg_serial, &x->rec, recs[0]->client_id);
            }
        }
    }
    intr_free(x);
    spool_rt_conn_unref(c);
}

/* Looks the turn holder up at the shard leader, then sends (on_turn). */
static void interrupt_start(struct rt_conn *c, json_int_t msg_serial, const Spool__Record *rec)
{
    struct intr *x = calloc(1, sizeof *x);
    if (x != NULL) {
        x->c = c;
        x->msg_serial = msg_serial;
        x->rec = *rec;
        x->rec.extras.data = NULL;
        x->rec.extras.len = 0;
        x->channel = strdup(rec->channel);
        x->name = strdup(rec->name);
        x->client_id = strdup(rec->client_id);
        x->data = malloc(rec->data.len ? rec->data.len : 1);
    }
    if (x == NULL || x->channel == NULL || x->name == NULL || x->client_id == NULL || x->data == NULL) {
        if (x != NULL)
            intr_free(x);
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    memcpy(x->data, rec->data.data, rec->data.len);
    x->rec.channel = x->channel;
    x->rec.name = x->name;
    x->rec.client_id = x->client_id;
    x->rec.data.data = rec->data.len ? x->data : NULL;
    struct spool_read_req rr = {.channel = x->channel, .turn = true, .leader = true};
    c->refs++;
    int rv = spool_node_read(c->rt->node, &rr, on_turn, x);
    if (rv != 0) {
        c->refs--;
        intr_free(x);
        if (msg_serial >= 0)
            spool_rt_nack(c, msg_serial, spool_rt_code_of(rv), "the turn could not be read");
        else
            spool_rt_send_error(c, spool_rt_code_of(rv), "the turn could not be read", NULL);
    }
}

void spool_ai_ephemeral(struct rt_conn *c, json_t *msg, bool interrupt)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) ? json_integer_value(jserial) : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *why = "channel missing";
    if (channel == NULL || !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    json_t *name = json_object_get(msg, "name"), *data = json_object_get(msg, "data");
    json_t *cid = json_object_get(msg, "clientId");
    if ((name != NULL && (!json_is_string(name) || json_string_length(name) > c->rt->cfg.max_field_bytes)) ||
        (cid != NULL && (!json_is_string(cid) || json_string_length(cid) > SPOOL_CLIENT_ID_MAX))) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "name and clientId must be short strings",
                            json_pack("{s:s}", "channel", channel));
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PUBLISH, &err) != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, json_pack("{s:s}", "channel", channel));
        return;
    }
    if (!spool_rt_take_tokens(c, 1)) {
        spool_rt_send_error(c, SPOOL_RT_ERATE, "publish rate limit exceeded", json_pack("{s:s}", "channel", channel));
        return;
    }
    size_t len = 0;
    char *bytes = data != NULL ? spool_json_dump(data, &len) : NULL;
    if (data != NULL && bytes == NULL) {
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    if (len > c->rt->cfg.max_message_bytes) {
        free(bytes);
        spool_rt_send_error(c, SPOOL_RT_ETOO_LARGE, "data exceeds max-message-bytes", json_pack("{s:s}", "channel", channel));
        return;
    }
    Spool__Record rec = SPOOL__RECORD__INIT;
    rec.channel = (char *)channel;
    rec.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    rec.id = interrupt ? "interrupt" : "ephemeral";
    rec.name = name != NULL ? (char *)json_string_value(name) : "";
    rec.client_id = c->principal.client_id[0] != '\0' ? c->principal.client_id
                    : cid != NULL                      ? (char *)json_string_value(cid)
                                                       : "";
    rec.data.data = (uint8_t *)bytes;
    rec.data.len = len;
    rec.content_type = "application/json";
    rec.connection_id = c->id;
    rec.timestamp_ms = spool_auth_now_ms();
    if (interrupt)
        interrupt_start(c, msg_serial, &rec);
    else
        send_ephemeral(c, msg_serial, &rec, NULL);
    free(bytes);
}
